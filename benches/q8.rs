//! The 8-bit momentum step against the f32 and bf16 momentum steps, in one run: for f32 and
//! bf16 parameters (gradients of the same dtype), sizes from L1-resident to DRAM-bound, every
//! available `Backend` with 8-bit momentum beside the best backend with f32 and bf16 momentum.
//!
//! ```text
//! cargo bench --bench q8                                  # everything (about 3 minutes)
//! cargo bench --bench q8 -- 'q8 p=f32/'                   # one group
//! LION_BENCH_SIZES=1M,64M cargo bench --bench q8          # other sizes (K = 1024, M = 1024*1024)
//! ```
//!
//! Throughput is the bytes each function moves per element (the 8-bit state: one code and a
//! 256th of a scale), so GB/s compares with the roofline of `benches/step.rs`. Before measuring,
//! every backend is checked bit for bit against `reference::step_q8_with`.

use std::hint::black_box;
use std::time::Duration;

use common::{HP, label};
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use lion_optim::{Backend, Element, Group, Q8_BLOCK, Q8Mut, StepOptions, Update, bf16, reference};
use support::Rng;

mod common;

/// L1 (4K) to DRAM (16M).
const SIZES: &[usize] = &[4 << 10, 64 << 10, 1 << 20, 16 << 20];

fn benches(c: &mut Criterion) {
    let sizes = common::sizes(SIZES);
    group::<f32>(c, &sizes);
    group::<bf16>(c, &sizes);
}

/// Random parameters and gradients of `T`, a momentum in every format (the 8-bit one made by
/// a few warm-up steps, so that its blocks have realistic scales).
struct Data<T> {
    p: Vec<T>,
    g: Vec<T>,
    codes: Vec<u8>,
    absmax: Vec<f32>,
    m32: Vec<f32>,
    m16: Vec<bf16>,
}

impl<T: Element> Data<T> {
    fn new(n: usize) -> Self {
        let mut rng = Rng::new(n as u64);
        let mut x = || T::from_f32_rounded(rng.uniform() * 2.0 - 1.0);
        let p: Vec<T> = (0..n).map(|_| x()).collect();
        let g: Vec<T> = (0..n).map(|_| x()).collect();
        let mut d = Data {
            p,
            g,
            codes: vec![127; n],
            absmax: vec![0.0; n.div_ceil(Q8_BLOCK)],
            m32: vec![0.0; n],
            m16: vec![bf16::ZERO; n],
        };
        for _ in 0..3 {
            d.q8(Backend::detect());
        }
        d
    }

    fn q8(&mut self, backend: Backend) {
        let m = Q8Mut::new(&mut self.codes, &mut self.absmax).unwrap();
        let mut u = [Update::from_slices(
            (&mut self.p[..]).into(),
            (&self.g[..]).into(),
            m,
        )];
        backend.step_many(&mut u, &[Group::new(HP)]).unwrap();
    }
}

fn group<T: Element>(c: &mut Criterion, sizes: &[usize]) {
    let backends: Vec<Backend> = Backend::ALL
        .iter()
        .copied()
        .filter(|b| b.is_available())
        .collect();
    self_check::<T>(&backends);
    let name = format!("q8 p={} g={}", T::DTYPE, T::DTYPE);
    let mut group = c.benchmark_group(&name);
    let t = T::DTYPE.size();
    for &n in sizes {
        if n >= 4 << 20 {
            group.sample_size(10);
        }
        let mut d = Data::<T>::new(n);
        // Codes and scales, each read and written.
        let q8_bytes = 3 * t * n + 2 * n + 8 * n.div_ceil(Q8_BLOCK);
        for &b in &backends {
            group.throughput(Throughput::Bytes(q8_bytes as u64));
            group.bench_function(
                BenchmarkId::new(format!("q8-{}", b.name()), label(n)),
                |it| it.iter(|| d.q8(black_box(b))),
            );
        }
        let best = Backend::detect();
        let opts = StepOptions::default();
        group.throughput(Throughput::Bytes(((3 * t + 8) * n) as u64));
        group.bench_function(BenchmarkId::new("f32-momentum", label(n)), |it| {
            it.iter(|| {
                best.step_with(&mut d.p, &d.g, &mut d.m32, &HP, black_box(&opts))
                    .unwrap()
            })
        });
        group.throughput(Throughput::Bytes(((3 * t + 4) * n) as u64));
        group.bench_function(BenchmarkId::new("bf16-momentum", label(n)), |it| {
            it.iter(|| {
                best.step_with(&mut d.p, &d.g, &mut d.m16, &HP, black_box(&opts))
                    .unwrap()
            })
        });
    }
    group.finish();
}

/// Every backend gives the reference's bytes (on a size with a partial last block).
fn self_check<T: Element>(backends: &[Backend]) {
    let n = 3 * Q8_BLOCK + 77;
    let want = {
        let mut d = Data::<T>::new(n);
        let m = Q8Mut::new(&mut d.codes, &mut d.absmax).unwrap();
        reference::step_q8_with(&mut d.p, &d.g, m, &HP, &StepOptions::default()).unwrap();
        d
    };
    for &b in backends {
        let mut d = Data::<T>::new(n);
        d.q8(b);
        let same = d.codes == want.codes
            && d.absmax
                .iter()
                .map(|x| x.to_bits())
                .eq(want.absmax.iter().map(|x| x.to_bits()))
            && d.p
                .iter()
                .map(|x| x.to_f32_exact().to_bits())
                .eq(want.p.iter().map(|x| x.to_f32_exact().to_bits()));
        assert!(same, "q8 on {b} differs from the reference");
    }
}

criterion_group! {
    name = q8;
    config = common::config(Duration::from_millis(500), Duration::from_millis(1500), 30);
    targets = benches
}
criterion_main!(q8);
