//! One Lion step: five dtype combinations x every available `Backend` x sizes from L1-resident to
//! DRAM-bound, each beside three baselines that move the same data:
//!
//! * `roofline`: a plain loop with exactly Lion's memory traffic (read p, g, m; write p, m) and
//!   next to no arithmetic, compiled for the widest vectors this CPU has: the speed of light for
//!   this traffic on one core of this machine. It xors bits masked by a zero the compiler cannot
//!   see, so the data (shared with the other benchmarks) never changes. With `--features rayon`,
//!   `roofline-rayon` splits it across threads as `par_step_with` does: the ceiling of `rayon`.
//! * `naive`: a line-by-line port of the reference PyTorch code (`lion_pytorch.py`), one loop per
//!   tensor op, with the temporaries PyTorch allocates on every step: `exp_avg * beta1` (of the
//!   momentum's dtype), `grad * (1 - beta1)` (the gradient's), their sum `update` and
//!   `torch.sign(update)` (the promoted dtype: f32, unless momentum and gradient are the same
//!   16-bit type). Each op computes in f32 and rounds to its output's dtype, as PyTorch's CPU
//!   kernels do.
//! * `fused-loop`: the one loop a Rust user would write: f32 math (`1.0 - beta1` computed in
//!   f32, `if c > 0.0 { .. } else if c < 0.0 { .. }`), half's conversions for bf16/f16.
//!
//! The baselines are compiled like the rest of the bench, for the target of the build (baseline
//! x86-64 unless `RUSTFLAGS=-Ctarget-cpu=...`), except the roofline probe, which picks AVX-512 or
//! AVX2 at run time when the CPU has them.
//!
//! Throughput is the bytes a fused step must move, `2*size(P) + size(G) + 2*size(M)` per element,
//! for every function of a group (so the naive port's GB/s is "effective": it moves more).
//!
//! ```text
//! rm -rf target/criterion                           # (optional) no stale results in the chart
//! cargo bench --bench step                          # everything (about 7 minutes)
//! cargo bench --bench step --features rayon         # + `rayon` (par_step_with), `roofline-rayon`
//! cargo bench --bench step -- 'p=f32 g=f32 m=f32/'  # one group (criterion's regex filter)
//! cargo bench --bench step -- '/(avx2|roofline)/1M' # some functions at one size
//! LION_BENCH_SIZES=1M,64M cargo bench --bench step  # other sizes (K = 1024, M = 1024*1024)
//! python3 scripts/plot_bench.py                     # docs/bench.svg + markdown tables
//! ```
//!
//! 16M elements of f32 (192 MiB) leave the caches of most machines; where the last-level cache
//! is larger, add a bigger size with `LION_BENCH_SIZES`.
//!
//! Before measuring, every backend is checked bit for bit against `reference::step` and every
//! baseline for rough agreement, so a broken baseline cannot make a pretty chart.

use std::cmp::Ordering;
use std::hint::black_box;
use std::time::Duration;

use common::roofline::{self, Bits};
use common::{HP, label};
use criterion::{
    BenchmarkGroup, BenchmarkId, Criterion, SamplingMode, Throughput, criterion_group,
    criterion_main, measurement::WallTime,
};
use lion_optim::{Backend, Element, Hyperparams, StepOptions, bf16, f16, reference};
use support::Rng;

mod common;

/// Elements per step: L1 (4K f32 x 3 arrays = 48 KiB) to DRAM (16M: 192 MiB for f32).
const SIZES: &[usize] = &[4 << 10, 16 << 10, 64 << 10, 1 << 20, 16 << 20];

/// From this size on, fewer samples of one iteration each (one 16M naive step is ~0.1 s).
const LARGE: usize = 4 << 20;

fn benches(c: &mut Criterion) {
    let sizes = common::sizes(SIZES);
    // Each group is one dtype combination: <params, grads, momentum, promote(momentum, grads)>.
    group::<f32, f32, f32, f32>(c, &sizes);
    group::<bf16, bf16, bf16, bf16>(c, &sizes);
    group::<f16, f16, f16, f16>(c, &sizes);
    group::<bf16, bf16, f32, f32>(c, &sizes); // bf16 weights and grads, f32 momentum
    group::<f32, f32, bf16, f32>(c, &sizes); // f32 weights and grads, bf16 momentum
}

criterion_group! {
    name = step;
    config = common::config(Duration::from_millis(500), Duration::from_millis(1500), 30);
    targets = benches
}
criterion_main!(step);

/// One Lion step with no options on `backend`.
fn step_on<P: Element, G: Element, M: Element>(backend: Backend, d: &mut Data<P, G, M>) {
    let opts = StepOptions::default();
    backend
        .step_with(&mut d.p, &d.g, &mut d.m, &HP, &opts)
        .unwrap();
}

/// `par_step_with` with no options.
#[cfg(feature = "rayon")]
fn par_step<P: Element, G: Element, M: Element>(d: &mut Data<P, G, M>) {
    let opts = StepOptions::default();
    lion_optim::par_step_with(&mut d.p, &d.g, &mut d.m, &HP, &opts).unwrap();
}

/// One group: every backend and every baseline at every size, for one dtype combination; `T` is
/// PyTorch's promotion of `M` and `G`, the dtype of the naive port's `update`.
fn group<P: Bits, G: Bits, M: Bits, T: Element>(c: &mut Criterion, sizes: &[usize]) {
    let name = format!("p={} g={} m={}", P::DTYPE, G::DTYPE, M::DTYPE);
    self_check::<P, G, M, T>(&name);
    let backends: Vec<Backend> = Backend::ALL
        .iter()
        .copied()
        .filter(|b| b.is_available())
        .collect();
    let bytes_per_element = common::bytes_per_element::<P, G, M>();
    let mut group = c.benchmark_group(&name);
    for &n in sizes {
        group.throughput(Throughput::Bytes((n * bytes_per_element) as u64));
        if n >= LARGE {
            group.sample_size(10).sampling_mode(SamplingMode::Flat);
        }
        let size = label(n);
        // Allocated when the first benchmark of this size that passes the filter runs, shared by
        // all of them, freed before the next size.
        let mut data: Option<Data<P, G, M>> = None;
        let mut bench = |function: &str, f: Step<'_, P, G, M>| {
            bench_one(&mut group, function, &size, &mut data, n, f)
        };
        for &backend in &backends {
            bench(backend.name(), &|d| step_on(backend, d));
        }
        #[cfg(feature = "rayon")]
        bench("rayon", &par_step);
        bench("roofline", &|d| roofline::run(&mut d.p, &d.g, &mut d.m));
        #[cfg(feature = "rayon")]
        bench("roofline-rayon", &|d| {
            roofline::par_run(&mut d.p, &d.g, &mut d.m)
        });
        bench("naive", &|d| {
            naive::<P, G, M, T>(&mut d.p, &d.g, &mut d.m, &HP)
        });
        bench("fused-loop", &|d| fused_loop(&mut d.p, &d.g, &mut d.m, &HP));
    }
    group.finish();
}

fn bench_one<P: Element, G: Element, M: Element>(
    group: &mut BenchmarkGroup<'_, WallTime>,
    function: &str,
    size: &str,
    data: &mut Option<Data<P, G, M>>,
    n: usize,
    f: Step<'_, P, G, M>,
) {
    group.bench_function(BenchmarkId::new(function, size), |b| {
        let d = data.get_or_insert_with(|| Data::new(n, 0x1ea7 + n as u64));
        b.iter(|| {
            f(d);
            black_box(&mut *d);
        })
    });
}

/// Something that steps the slices of a [`Data`].
type Step<'a, P, G, M> = &'a dyn Fn(&mut Data<P, G, M>);

/// The three slices of a step.
struct Data<P, G, M> {
    p: Vec<P>,
    g: Vec<G>,
    m: Vec<M>,
}

impl<P: Element, G: Element, M: Element> Data<P, G, M> {
    /// Weights in [-0.5, 0.5), gradients and momentum in [-0.01, 0.01): every step moves every
    /// weight, and repeated steps stay in the normal range of every dtype.
    fn new(n: usize, seed: u64) -> Self {
        let mut rng = Rng(seed | 1); // raw: the data of every earlier measurement
        Data {
            p: (0..n)
                .map(|_| P::from_f32_rounded(rng.uniform() - 0.5))
                .collect(),
            g: (0..n)
                .map(|_| G::from_f32_rounded(0.02 * rng.uniform() - 0.01))
                .collect(),
            m: (0..n)
                .map(|_| M::from_f32_rounded(0.02 * rng.uniform() - 0.01))
                .collect(),
        }
    }
}

/// The reference PyTorch code ported op by op, allocating its temporaries as PyTorch does:
///
/// ```python
/// p.data.mul_(1 - lr * wd)
/// update = exp_avg * beta1 + grad * (1 - beta1)
/// p.add_(torch.sign(update), alpha=-lr)
/// exp_avg.mul_(beta2).add_(grad, alpha=1 - beta2)
/// ```
///
/// Python floats are doubles: each scalar is computed in f64 and rounded to f32 once, as the
/// crate does.
fn naive<P: Element, G: Element, M: Element, T: Element>(
    p: &mut [P],
    g: &[G],
    m: &mut [M],
    hp: &Hyperparams,
) {
    let decay = (1.0 - hp.lr * hp.weight_decay) as f32;
    let (b1, omb1) = (hp.beta1 as f32, (1.0 - hp.beta1) as f32);
    let (b2, omb2) = (hp.beta2 as f32, (1.0 - hp.beta2) as f32);
    let neg_lr = -hp.lr as f32;
    // p.data.mul_(1 - lr * wd)
    for x in p.iter_mut() {
        *x = P::from_f32_rounded(x.to_f32_exact() * decay);
    }
    // update = exp_avg * beta1 + grad * (1 - beta1): three new tensors.
    let a: Vec<M> = m
        .iter()
        .map(|x| M::from_f32_rounded(x.to_f32_exact() * b1))
        .collect();
    let b: Vec<G> = g
        .iter()
        .map(|x| G::from_f32_rounded(x.to_f32_exact() * omb1))
        .collect();
    let update: Vec<T> = a
        .iter()
        .zip(&b)
        .map(|(x, y)| T::from_f32_rounded(x.to_f32_exact() + y.to_f32_exact()))
        .collect();
    drop((a, b));
    // torch.sign(update): a fourth.
    let sign: Vec<T> = update
        .iter()
        .map(|u| {
            let u = u.to_f32_exact();
            T::from_f32_rounded(if u > 0.0 {
                1.0
            } else if u < 0.0 {
                -1.0
            } else {
                0.0
            })
        })
        .collect();
    drop(update);
    // p.add_(sign, alpha=-lr)
    for (x, s) in p.iter_mut().zip(&sign) {
        *x = P::from_f32_rounded(x.to_f32_exact() + neg_lr * s.to_f32_exact());
    }
    drop(sign);
    // exp_avg.mul_(beta2).add_(grad, alpha=1 - beta2)
    for x in m.iter_mut() {
        *x = M::from_f32_rounded(x.to_f32_exact() * b2);
    }
    for (x, y) in m.iter_mut().zip(g) {
        *x = M::from_f32_rounded(x.to_f32_exact() + omb2 * y.to_f32_exact());
    }
}

/// The fused loop as a user would write it: one pass, f32 hyperparameters, `if`s.
fn fused_loop<P: Element, G: Element, M: Element>(
    p: &mut [P],
    g: &[G],
    m: &mut [M],
    hp: &Hyperparams,
) {
    let (lr, wd) = (hp.lr as f32, hp.weight_decay as f32);
    let (beta1, beta2) = (hp.beta1 as f32, hp.beta2 as f32);
    for ((p, g), m) in p.iter_mut().zip(g).zip(m.iter_mut()) {
        let (mut w, g, v) = (p.to_f32_exact(), g.to_f32_exact(), m.to_f32_exact());
        let c = beta1 * v + (1.0 - beta1) * g;
        w *= 1.0 - lr * wd;
        if c > 0.0 {
            w -= lr;
        } else if c < 0.0 {
            w += lr;
        }
        *p = P::from_f32_rounded(w);
        *m = M::from_f32_rounded(beta2 * v + (1.0 - beta2) * g);
    }
}

/// Checks the functions of a group on a small input before measuring them: every backend bit for
/// bit against `reference::step`, the baselines for rough agreement (they round differently by
/// design), the roofline probe for leaving the data alone.
fn self_check<P: Bits, G: Bits, M: Bits, T: Element>(group: &str) {
    let n = 4099;
    let fresh = || Data::<P, G, M>::new(n, 7);
    let mut want = fresh();
    reference::step(&mut want.p, &want.g, &mut want.m, &HP).unwrap();
    let bits = |d: &Data<P, G, M>| {
        let p: &[u8] = bytemuck::cast_slice(&d.p);
        let m: &[u8] = bytemuck::cast_slice(&d.m);
        (p.to_vec(), m.to_vec())
    };
    let run = |f: Step<'_, P, G, M>| {
        let mut d = fresh();
        f(&mut d);
        d
    };
    for &backend in Backend::ALL.iter().filter(|b| b.is_available()) {
        let got = run(&|d| step_on(backend, d));
        assert!(
            bits(&got) == bits(&want),
            "{group}: {backend} differs from the reference"
        );
    }
    #[cfg(feature = "rayon")]
    {
        let got = run(&par_step);
        assert!(
            bits(&got) == bits(&want),
            "{group}: par_step_with differs from the reference"
        );
    }
    let got = run(&|d| roofline::run(&mut d.p, &d.g, &mut d.m));
    assert!(
        bits(&got) == bits(&fresh()),
        "{group}: roofline changed the data"
    );
    let baselines: [(&str, Step<'_, P, G, M>); 2] = [
        ("naive", &|d| {
            naive::<P, G, M, T>(&mut d.p, &d.g, &mut d.m, &HP)
        }),
        ("fused-loop", &|d| fused_loop(&mut d.p, &d.g, &mut d.m, &HP)),
    ];
    let start = fresh();
    let f32s = |v: &[M]| v.iter().map(|x| x.to_f32_exact()).collect::<Vec<f32>>();
    let (m0, m_want) = (f32s(&start.m), f32s(&want.m));
    // Which way each parameter moved.
    let moves = |d: &Data<P, G, M>| {
        let cmp = |(a, b): (&P, &P)| a.to_f32_exact().partial_cmp(&b.to_f32_exact());
        d.p.iter().zip(&start.p).map(cmp).collect::<Vec<_>>()
    };
    let want_moves = moves(&want);
    for (name, f) in baselines {
        let got = run(f);
        // Rounding twice (bf16 temporaries) may keep or move a parameter the reference moves
        // or keeps when `lr` is about half a spacing; it never moves one the other way.
        let (mut opposite, mut moved) = (0, 0);
        for (a, b) in moves(&got).into_iter().zip(&want_moves) {
            moved += usize::from(a != Some(Ordering::Equal));
            opposite += usize::from(
                a.is_some() && a == b.map(Ordering::reverse) && a != Some(Ordering::Equal),
            );
        }
        assert!(
            opposite <= n / 100 && moved >= n / 2,
            "{group}: {name}: {moved} of {n} parameters moved, {opposite} the wrong way"
        );
        // Within 1% of the larger of the old and the new momentum (bf16 temporaries round twice).
        let m_got = f32s(&got.m);
        let bad = (0..n)
            .find(|&i| (m_got[i] - m_want[i]).abs() > 1e-2 * m0[i].abs().max(m_want[i].abs()));
        assert!(
            bad.is_none(),
            "{group}: {name}: momentum {bad:?} far from the reference"
        );
    }
}
