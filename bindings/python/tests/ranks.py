"""Runs a test's checks in `WORLD` processes under torch.distributed (gloo over loopback, a
FileStore), shared by the distributed tests.

Each rank runs `checks(rank, tmp)` and reports in a file of `tmp`: its traceback, or that every
check passed. The parent judges the ranks by those files, not by their exit codes: gloo's
teardown can abort a process whose checks all passed (`terminate called without an active
exception`: its transport threads see the peer close first, or are destroyed during the
interpreter's finalization), which says nothing of this package. A rank that passed leaves with
`os._exit(0)` after `destroy_process_group`, skipping the finalization.
"""

from __future__ import annotations

import datetime
import os
import sys
import time
import traceback
import warnings
from pathlib import Path
from typing import Callable

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

WORLD = 2


def _rank(rank: int, checks: Callable[[int, str], None], tmp: str, collective_timeout_s: float) -> None:
    os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")
    torch.set_num_threads(1)
    try:
        dist.init_process_group(
            "gloo", init_method=f"file://{os.path.join(tmp, 'store')}", rank=rank, world_size=WORLD,
            timeout=datetime.timedelta(seconds=collective_timeout_s),
        )
        checks(rank, tmp)
        # Both ranks are done with every collective before either tears its group down.
        dist.barrier()
    except BaseException:
        with open(os.path.join(tmp, f"error-{rank}.txt"), "w") as f:
            f.write(traceback.format_exc())
        raise
    with open(os.path.join(tmp, f"ok-{rank}"), "w") as f:
        f.write("ok")
    dist.destroy_process_group()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def run_ranks(checks: Callable[[int, str], None], tmp_path: Path, timeout_s: float, collective_timeout_s: float = 60) -> None:
    """Runs `checks` (a module-level function: spawned processes import it) on every rank and
    fails with the ranks' tracebacks if any check failed, or if a rank did not finish in
    `timeout_s`."""
    ctx = mp.get_context("spawn")
    procs = [
        ctx.Process(target=_rank, args=(rank, checks, str(tmp_path), collective_timeout_s))
        for rank in range(WORLD)
    ]
    for p in procs:
        p.start()
    deadline = time.monotonic() + timeout_s
    for p in procs:
        p.join(timeout=max(0.0, deadline - time.monotonic()))
    hung = [rank for rank, p in enumerate(procs) if p.is_alive()]
    for p in procs:
        if p.is_alive():
            p.kill()
            p.join()
    errors = [
        f"rank {rank}:\n{(tmp_path / f'error-{rank}.txt').read_text()}"
        for rank in range(WORLD)
        if (tmp_path / f"error-{rank}.txt").exists()
    ]
    assert not errors, "\n".join(errors)
    assert not hung, f"ranks {hung} did not finish in {timeout_s} s"
    for rank, p in enumerate(procs):
        assert (tmp_path / f"ok-{rank}").exists(), f"rank {rank} exited with {p.exitcode} before passing its checks"
        if p.exitcode != 0:
            warnings.warn(f"rank {rank} passed every check, then its gloo teardown exited with {p.exitcode}")
