//! The fuzz targets' oracles (tests/oracle/), run by the test suite: so they also run on every
//! target CI tests (wasm32, aarch64 under qemu, Miri on x86_64 and big-endian s390x), not only
//! where libFuzzer runs.
//!
//! * every input in the committed seed corpus (fuzz/seeds/<target>/), which ci/fuzz.sh also
//!   starts the fuzzers from;
//! * deterministic pseudo-random inputs;
//! * every input that once made a fuzz target fail (fuzz/regressions/<target>/), kept as a
//!   regression test. None has so far: the directories hold only a README.

use std::path::Path;

use crate::common::fixture;
use crate::oracle;

type Oracle = fn(&[u8]);

const TARGETS: [(&str, Oracle); 3] = [
    ("step", oracle::step::check),
    ("optimizer", oracle::optimizer::check),
    ("q8", oracle::q8::check),
];

/// Runs `check` on every file of `fuzz/<dir>/<target>/`; returns how many there were.
fn replay_dir(dir: &str, target: &str, check: Oracle) -> usize {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz")
        .join(dir)
        .join(target);
    let Ok(entries) = std::fs::read_dir(&path) else {
        return 0;
    };
    let mut files: Vec<_> = entries
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_none_or(|e| e != "md"))
        .collect();
    files.sort();
    for file in &files {
        let data = std::fs::read(file).unwrap();
        let outcome = std::panic::catch_unwind(|| check(&data));
        assert!(outcome.is_ok(), "{target} failed on {}", file.display());
    }
    files.len()
}

#[test]
#[cfg_attr(miri, ignore = "reads files; Miri runs the random inputs instead")]
fn seed_corpus_and_regressions() {
    // fuzz/ is not in the published package (the oracles are: tests/oracle/).
    if fixture(
        "fuzz/seeds",
        "fuzz_regressions::seed_corpus_and_regressions",
    )
    .is_none()
    {
        return;
    }
    for (target, check) in TARGETS {
        let seeds = replay_dir("seeds", target, check);
        let regressions = replay_dir("regressions", target, check);
        eprintln!("{target}: {seeds} seeds, {regressions} regression inputs passed");
        assert!(
            seeds > 0,
            "no seed corpus for {target} in fuzz/seeds/{target}"
        );
    }
}

#[test]
fn random_inputs() {
    let count = if cfg!(miri) { 6 } else { 2000 };
    let mut rng = support::Rng(0x2545_f491_4f6c_dd1d);
    let mut next = move || rng.next_u64();
    for (target, check) in TARGETS {
        for _ in 0..count {
            let len = (next() % 600) as usize;
            let data: Vec<u8> = (0..len).map(|_| next() as u8).collect();
            check(&data);
        }
        eprintln!("{target}: {count} random inputs passed");
    }
}
