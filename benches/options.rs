//! What each per-call option costs against the plain step, at 16K (L2-resident) and 16M
//! (DRAM-bound) elements, on the path `step` takes (or `LION_BENCH_PATH=avx2` etc.).
//!
//! ```text
//! cargo bench --bench options                        # about 2 minutes
//! cargo bench --bench options -- 'p=bf16 g=bf16'     # one group
//! python3 scripts/plot_bench.py --options            # the cost table (percent over `plain`)
//! ```
//!
//! * `plain`: `step` with no options.
//! * `stochastic`: stochastic rounding of the f16/bf16 stores (f32 stores are never rounded).
//! * `unscale`: the gradient multiplied by an inverse loss scale inside the pass.
//! * `maximize`, `decoupled-wd`: folded into the step's constants, so they should cost nothing.
//! * `all`: every option at once.
//! * `all_finite`: the read-only check of the gradients alone; `guarded`: the check, then the
//!   step (what `step_guarded` and `Lion` with `set_skip_non_finite(true)` do).

use std::hint::black_box;
use std::time::Duration;

use criterion::{
    BenchmarkId, Criterion, SamplingMode, Throughput, criterion_group, criterion_main,
};
use lion_optim::{
    Cautious, Element, Hyperparams, Path, Rounding, StepOptions, WeightDecay, bf16, f16,
};

const HP: Hyperparams = Hyperparams {
    lr: 1e-3,
    beta1: 0.9,
    beta2: 0.99,
    weight_decay: 0.1,
};
const SIZES: [usize; 2] = [16 << 10, 16 << 20];

fn path() -> Path {
    let wanted = std::env::var("LION_BENCH_PATH").unwrap_or_default();
    let found = Path::ALL
        .iter()
        .copied()
        .find(|p| p.name() == wanted && p.is_available());
    found.unwrap_or_else(Path::detect)
}

fn options() -> Vec<(&'static str, StepOptions)> {
    let d = StepOptions::default();
    let sr = Rounding::Stochastic { seed: 7 };
    vec![
        ("plain", d),
        (
            "stochastic",
            StepOptions {
                rounding: sr,
                step: 3,
                ..d
            },
        ),
        (
            "unscale",
            StepOptions {
                grad_unscale: Some(1.0 / 1024.0),
                ..d
            },
        ),
        (
            "maximize",
            StepOptions {
                maximize: true,
                ..d
            },
        ),
        (
            "decoupled-wd",
            StepOptions {
                weight_decay: WeightDecay::FullyDecoupled { max_lr: 1e-2 },
                ..d
            },
        ),
        (
            "cautious",
            StepOptions {
                cautious: Cautious::Whole,
                ..d
            },
        ),
        (
            "all",
            StepOptions {
                maximize: true,
                grad_unscale: Some(1.0 / 1024.0),
                weight_decay: WeightDecay::FullyDecoupled { max_lr: 1e-2 },
                rounding: sr,
                step: 3,
                offset: 0,
                cautious: Cautious::Whole,
            },
        ),
    ]
}

fn group<P: Element, G: Element, M: Element>(c: &mut Criterion) {
    let path = path();
    let name = format!(
        "options {} p={} g={} m={}",
        path.name(),
        P::DTYPE,
        G::DTYPE,
        M::DTYPE
    );
    let mut group = c.benchmark_group(&name);
    for n in SIZES {
        let bytes = n * (2 * P::DTYPE.size() + G::DTYPE.size() + 2 * M::DTYPE.size());
        group.throughput(Throughput::Bytes(bytes as u64));
        if n >= 1 << 22 {
            group.sample_size(10).sampling_mode(SamplingMode::Flat);
        }
        let label = if n >= 1 << 20 {
            format!("{}M", n >> 20)
        } else {
            format!("{}K", n >> 10)
        };
        // Weights in [-0.5, 0.5), gradients and momentum small: every store really rounds.
        let mut x = 0x9e37_79b9_u32;
        let mut next = move |scale: f32| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            (x as f32 / u32::MAX as f32 - 0.5) * scale
        };
        let mut p: Vec<P> = (0..n).map(|_| P::from_f32_rounded(next(1.0))).collect();
        let g: Vec<G> = (0..n).map(|_| G::from_f32_rounded(next(0.02))).collect();
        let mut m: Vec<M> = (0..n).map(|_| M::from_f32_rounded(next(0.02))).collect();
        for (option, opts) in options() {
            group.bench_function(BenchmarkId::new(option, &label), |b| {
                b.iter(|| path.step_with(&mut p, &g, &mut m, &HP, &opts).unwrap())
            });
        }
        let d = StepOptions::default();
        group.bench_function(BenchmarkId::new("all_finite", &label), |b| {
            b.iter(|| assert!(black_box(path.all_finite(&g, &d))))
        });
        group.bench_function(BenchmarkId::new("guarded", &label), |b| {
            b.iter(|| path.step_guarded(&mut p, &g, &mut m, &HP, &d).unwrap())
        });
    }
    group.finish();
}

fn benches(c: &mut Criterion) {
    group::<bf16, bf16, bf16>(c);
    group::<bf16, f32, f32>(c);
    group::<f16, f16, f16>(c);
    group::<f32, f32, f32>(c);
}

criterion_group! {
    name = options_benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_millis(1000))
        .sample_size(20);
    targets = benches
}
criterion_main!(options_benches);
