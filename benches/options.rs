//! What each per-call option costs against the plain step, at 16K (L2-resident) and 16M
//! (DRAM-bound) elements, on the backend `step` takes (or `LION_BENCH_BACKEND=avx2` etc.).
//!
//! ```text
//! cargo bench --bench options                        # about 2 minutes
//! cargo bench --bench options -- 'p=bf16 g=bf16'     # one group
//! python3 scripts/plot_bench.py --options            # the cost table (percent over `plain`)
//! ```
//!
//! * `plain`: `step_with` with no options.
//! * `stochastic`: stochastic rounding of the f16/bf16 stores (f32 stores are never rounded).
//! * `unscale`: the gradient multiplied by an inverse loss scale inside the pass.
//! * `maximize`, `decoupled-wd`: folded into the step's constants, so they should cost nothing.
//! * `cautious`: the cautious variant (`cautious_count` first, then the step).
//! * `all`: every option above at once.
//! * `all_finite`: the read-only check of the gradients alone; `skip_non_finite`: the check,
//!   then the step (what a `Lion` group with `skip_non_finite` does). (Before 0.2 this was
//!   `step_guarded`, measured as `guarded`.)

use std::hint::black_box;
use std::time::Duration;

use common::{HP, label};
use criterion::{
    BenchmarkId, Criterion, SamplingMode, Throughput, criterion_group, criterion_main,
};
use lion_optim::{Backend, Cautious, Element, Rounding, StepOptions, WeightDecay, bf16, f16};
use support::Rng;

mod common;

const SIZES: [usize; 2] = [16 << 10, 16 << 20];

/// `LION_BENCH_BACKEND` (or its former name `LION_BENCH_PATH`) if available, else the one
/// `step` takes.
fn backend() -> Backend {
    let wanted = std::env::var("LION_BENCH_BACKEND")
        .or_else(|_| std::env::var("LION_BENCH_PATH"))
        .unwrap_or_default();
    let found = Backend::ALL
        .iter()
        .copied()
        .find(|b| b.name() == wanted && b.is_available());
    found.unwrap_or_else(Backend::detect)
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
                // Measured on its own (`skip_non_finite` below): `all` stays what it was.
                skip_non_finite: false,
            },
        ),
        (
            "skip_non_finite",
            StepOptions {
                skip_non_finite: true,
                ..d
            },
        ),
    ]
}

fn group<P: Element, G: Element, M: Element>(c: &mut Criterion) {
    let backend = backend();
    let name = format!(
        "options {} p={} g={} m={}",
        backend.name(),
        P::DTYPE,
        G::DTYPE,
        M::DTYPE
    );
    let mut group = c.benchmark_group(&name);
    for n in SIZES {
        let bytes = n * common::bytes_per_element::<P, G, M>();
        group.throughput(Throughput::Bytes(bytes as u64));
        if n >= 1 << 22 {
            group.sample_size(10).sampling_mode(SamplingMode::Flat);
        }
        let label = label(n);
        // Weights in [-0.5, 0.5), gradients and momentum small: every store really rounds.
        let mut rng = Rng::new(0x9e37_79b9);
        let mut next = |scale: f32| rng.range(-0.5, 0.5) * scale;
        let mut p: Vec<P> = (0..n).map(|_| P::from_f32_rounded(next(1.0))).collect();
        let g: Vec<G> = (0..n).map(|_| G::from_f32_rounded(next(0.02))).collect();
        let mut m: Vec<M> = (0..n).map(|_| M::from_f32_rounded(next(0.02))).collect();
        for (option, opts) in options() {
            group.bench_function(BenchmarkId::new(option, &label), |b| {
                b.iter(|| backend.step_with(&mut p, &g, &mut m, &HP, &opts).unwrap())
            });
        }
        let d = StepOptions::default();
        group.bench_function(BenchmarkId::new("all_finite", &label), |b| {
            b.iter(|| assert!(black_box(backend.all_finite(&g, &d))))
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
    config = common::config(Duration::from_millis(300), Duration::from_millis(1000), 20);
    targets = benches
}
criterion_main!(options_benches);
