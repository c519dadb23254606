//! What the benchmarks share (each bench target compiles it as its own `mod common`; a target
//! may use only some of it): criterion's settings, the roofline probe and the labels of sizes.
#![allow(dead_code)]

pub mod roofline;

use std::time::Duration;

use criterion::Criterion;
use lion_optim::{Element, Hyperparams};

/// Typical Lion hyperparameters (lr 1e-3, weight decay 0.1, betas 0.9 / 0.99).
pub const HP: Hyperparams = Hyperparams {
    lr: 1e-3,
    beta1: 0.9,
    beta2: 0.99,
    weight_decay: 0.1,
};

/// Criterion with this warm-up time, measurement time and number of samples (the command-line
/// options --warm-up-time, --measurement-time and --sample-size override them).
pub fn config(warm_up: Duration, measurement: Duration, samples: usize) -> Criterion {
    Criterion::default()
        .warm_up_time(warm_up)
        .measurement_time(measurement)
        .sample_size(samples)
}

/// The bytes a fused step moves per element: read and write the parameters and the momentum,
/// read the gradient.
pub fn bytes_per_element<P: Element, G: Element, M: Element>() -> usize {
    2 * P::DTYPE.size() + G::DTYPE.size() + 2 * M::DTYPE.size()
}

/// `4096` -> `"4K"`, `16777216` -> `"16M"`: the parameter part of the benchmark ids.
pub fn label(n: usize) -> String {
    match n {
        _ if n >= 1 << 20 && n.is_multiple_of(1 << 20) => format!("{}M", n >> 20),
        _ if n >= 1 << 10 && n.is_multiple_of(1 << 10) => format!("{}K", n >> 10),
        _ => n.to_string(),
    }
}

/// The sizes to run: `defaults`, or `LION_BENCH_SIZES` (e.g. `4K,1M,64M` or `1000,5000`;
/// K = 1024, M = 1024*1024), sorted and without repeats.
pub fn sizes(defaults: &[usize]) -> Vec<usize> {
    let Ok(list) = std::env::var("LION_BENCH_SIZES") else {
        return defaults.to_vec();
    };
    let parse = |s: &str| {
        let s = s.trim();
        let (digits, unit) = match s.as_bytes().last() {
            Some(b'K' | b'k') => (&s[..s.len() - 1], 1 << 10),
            Some(b'M' | b'm') => (&s[..s.len() - 1], 1 << 20),
            _ => (s, 1),
        };
        let n: usize = digits
            .parse()
            .unwrap_or_else(|_| panic!("LION_BENCH_SIZES: cannot read {s:?}"));
        n * unit
    };
    let mut sizes: Vec<usize> = list.split(',').map(parse).collect();
    sizes.sort_unstable();
    sizes.dedup();
    sizes
}
