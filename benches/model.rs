//! Whole-model steps: `Lion::step` over the parameter list of GPT-2 small (124M parameters in 148
//! tensors) and over 1000 tensors of 1024 elements (the per-tensor overhead), each beside
//!
//! * `roofline`: the bandwidth probe over one buffer set of the same total size and dtypes (the
//!   same bytes moved; see benches/common/roofline.rs), on the same threads;
//! * `roofline-per-tensor`: the same probe over the model's own buffers, tensor by tensor: the
//!   same memory, so `lion-step` minus this is what the step costs beyond moving the bytes (the
//!   per-tensor overhead);
//! * `per-tensor`: the plain loop a user would write, `lion_optim::step_with` tensor by tensor.
//!
//! Each function runs on one thread (a rayon pool of one) and, with `--features rayon`, on all of
//! them (`lion-step/all-threads`, `roofline/all-threads`: the whole model spread over the pool).
//! GPT-2 runs in five storage configurations: f32 everywhere; bf16 parameters and gradients
//! with f32 momentum; all-bf16; and 8-bit momentum with f32 and with bf16 parameters and
//! gradients (its roofline: the same probe over the parameters, gradients and one byte of codes
//! per element; the block scales, 1/256 of that, left out).
//!
//! ```text
//! cargo bench --bench model --features rayon        # about 3 minutes
//! python3 scripts/plot_bench.py --model             # the README's table
//! ```

use std::hint::black_box;
use std::time::Duration;

use common::roofline::{self, Bits};
use criterion::{
    BenchmarkId, Criterion, SamplingMode, Throughput, criterion_group, criterion_main,
};
use lion_optim::{
    Buffer, Element, Group, GroupId, Hyperparams, Lion, MomentumDtype, StepOptions, Tensor,
    TensorId, TensorSpec, bf16,
};
use support::Rng;

mod common;

/// The parameter tensors of GPT-2 small, by full name and length (the shared fixture).
fn gpt2_small() -> Vec<(String, usize)> {
    support::gpt2_small()
        .map(|(layer, name, len)| match layer {
            Some(l) => (format!("h.{l}.{name}"), len),
            None => (name.to_string(), len),
        })
        .collect()
}

/// 1000 tensors of 1024 elements.
fn small_tensors() -> Vec<(String, usize)> {
    (0..1000).map(|i| (format!("t.{i}"), 1024)).collect()
}

const HP: Hyperparams = Hyperparams {
    lr: 3e-4,
    beta1: 0.9,
    beta2: 0.99,
    weight_decay: 0.1,
};

/// A model's parameters and gradients, its optimizer, and a contiguous buffer set of the same
/// size for the roofline probe.
struct Model<P, G> {
    opt: Lion<Vec<Buffer>>,
    ids: Vec<TensorId>,
    params: Vec<Vec<P>>,
    grads: Vec<Vec<G>>,
}

/// `n` values uniform in [-0.5, 0.5).
fn filled<T: Element>(n: usize, seed: u64) -> Vec<T> {
    let mut rng = Rng::new(seed);
    (0..n)
        .map(|_| T::from_f32_rounded(rng.range(-0.5, 0.5)))
        .collect()
}

impl<P: Element, G: Element> Model<P, G> {
    /// As a framework sets it up: weight decay for matrices, none for biases and norms (group
    /// 1), every tensor by name.
    fn new<M: Element>(tensors: &[(String, usize)]) -> Self {
        Self::with_momentum(tensors, M::DTYPE.into())
    }

    fn with_momentum(tensors: &[(String, usize)], momentum: MomentumDtype) -> Self {
        let mut opt = Lion::new(HP).unwrap();
        let no_decay = opt
            .add_group(Group::new(Hyperparams {
                weight_decay: 0.0,
                ..HP
            }))
            .unwrap();
        let mut ids = Vec::new();
        let (mut params, mut grads) = (Vec::new(), Vec::new());
        for (i, (name, len)) in tensors.iter().enumerate() {
            let group = if name.contains("ln_") || name.ends_with("bias") {
                no_decay
            } else {
                GroupId::DEFAULT
            };
            let spec = TensorSpec::new(*len)
                .name(name)
                .params(P::DTYPE)
                .momentum(momentum)
                .group(group);
            ids.push(opt.add(spec).unwrap());
            params.push(filled(*len, 2 * i as u64));
            grads.push(filled(*len, 2 * i as u64 + 1));
        }
        Model {
            opt,
            ids,
            params,
            grads,
        }
    }

    fn step(&mut self) {
        let mut tensors: Vec<Tensor<'_>> = self
            .params
            .iter_mut()
            .zip(&self.grads)
            .zip(&self.ids)
            .map(|((p, g), &id)| Tensor::new(p, g).of(id))
            .collect();
        self.opt.step(&mut tensors).unwrap();
    }

    /// The loop a user would write without `Lion`: one `step_with` per tensor, each with its
    /// own momentum (taken from `momenta`).
    fn per_tensor<M: Element>(&mut self, momenta: &mut [Vec<M>], step: u64) {
        let options = StepOptions {
            step,
            ..StepOptions::default()
        };
        for ((p, g), m) in self.params.iter_mut().zip(&self.grads).zip(momenta) {
            lion_optim::step_with(p, g, m, &HP, &options).unwrap();
        }
    }
}

/// A pool of all threads.
fn pool(threads: usize) -> rayon::ThreadPool {
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .unwrap()
}

/// The one-thread pool: the benchmark's own thread (so that `install` runs the step inline, as
/// a caller without a pool would, instead of handing it to a worker and waiting). A thread
/// belongs to one pool for good: built once.
fn one_thread() -> &'static rayon::ThreadPool {
    static ONE: std::sync::OnceLock<rayon::ThreadPool> = std::sync::OnceLock::new();
    ONE.get_or_init(|| {
        rayon::ThreadPoolBuilder::new()
            .num_threads(1)
            .use_current_thread()
            .build()
            .unwrap()
    })
}

/// One group: `Lion::step`, the per-tensor loop and the roofline probe over `tensors`.
fn group<P: Bits, G: Bits, M: Bits>(c: &mut Criterion, model: &str, tensors: &[(String, usize)]) {
    let total: usize = tensors.iter().map(|t| t.1).sum();
    let bytes = total * common::bytes_per_element::<P, G, M>();
    let name = format!("{model} p={} g={} m={}", P::DTYPE, G::DTYPE, M::DTYPE);
    let mut group = c.benchmark_group(&name);
    group.throughput(Throughput::Bytes(bytes as u64));
    if total >= 1 << 24 {
        group.sample_size(10).sampling_mode(SamplingMode::Flat);
    }
    let one = one_thread();
    let all = pool(std::thread::available_parallelism().map_or(1, usize::from));
    let label = format!("{}x{}", tensors.len(), total);
    {
        let mut m = Model::<P, G>::new::<M>(tensors);
        group.bench_function(BenchmarkId::new("lion-step/1-thread", &label), |b| {
            b.iter(|| one.install(|| m.step()))
        });
        #[cfg(feature = "rayon")]
        group.bench_function(BenchmarkId::new("lion-step/all-threads", &label), |b| {
            b.iter(|| all.install(|| m.step()))
        });
        let mut momenta: Vec<Vec<M>> = tensors.iter().map(|t| vec![M::default(); t.1]).collect();
        group.bench_function(
            BenchmarkId::new("roofline-per-tensor/1-thread", &label),
            |b| {
                b.iter(|| {
                    for ((p, g), mo) in m.params.iter_mut().zip(&m.grads).zip(momenta.iter_mut()) {
                        roofline::run(p, g, mo);
                    }
                    black_box(&mut m.params);
                })
            },
        );
        let mut step = 0;
        group.bench_function(BenchmarkId::new("per-tensor/1-thread", &label), |b| {
            b.iter(|| {
                step += 1;
                m.per_tensor(&mut momenta, step)
            })
        });
    }
    {
        let (mut p, g, mut m): (Vec<P>, Vec<G>, Vec<M>) =
            (filled(total, 1), filled(total, 2), filled(total, 3));
        group.bench_function(BenchmarkId::new("roofline/1-thread", &label), |b| {
            b.iter(|| {
                roofline::run(&mut p, &g, &mut m);
                black_box(&mut p);
            })
        });
        #[cfg(feature = "rayon")]
        group.bench_function(BenchmarkId::new("roofline/all-threads", &label), |b| {
            b.iter(|| {
                all.install(|| roofline::par_run(&mut p, &g, &mut m));
                black_box(&mut p);
            })
        });
    }
    let _ = &all;
    group.finish();
}

/// 8-bit momentum: `Lion::step` and the roofline probe over `tensors`.
fn q8_group<P: Bits, G: Bits>(c: &mut Criterion, model: &str, tensors: &[(String, usize)]) {
    let total: usize = tensors.iter().map(|t| t.1).sum();
    let blocks: usize = tensors
        .iter()
        .map(|t| t.1.div_ceil(lion_optim::Q8_BLOCK))
        .sum();
    // Parameters read and written, gradients read, codes and scales read and written.
    let bytes = total * (2 * P::DTYPE.size() + G::DTYPE.size() + 2) + 8 * blocks;
    let name = format!("{model} p={} g={} m=q8", P::DTYPE, G::DTYPE);
    let mut group = c.benchmark_group(&name);
    group.throughput(Throughput::Bytes(bytes as u64));
    group.sample_size(10).sampling_mode(SamplingMode::Flat);
    let one = one_thread();
    let label = format!("{}x{}", tensors.len(), total);
    {
        let mut m = Model::<P, G>::with_momentum(tensors, MomentumDtype::Q8);
        group.bench_function(BenchmarkId::new("lion-step/1-thread", &label), |b| {
            b.iter(|| one.install(|| m.step()))
        });
        #[cfg(feature = "rayon")]
        {
            let all = pool(std::thread::available_parallelism().map_or(1, usize::from));
            group.bench_function(BenchmarkId::new("lion-step/all-threads", &label), |b| {
                b.iter(|| all.install(|| m.step()))
            });
        }
    }
    let (mut p, g, mut codes): (Vec<P>, Vec<G>, Vec<u8>) =
        (filled(total, 1), filled(total, 2), vec![127; total]);
    group.bench_function(BenchmarkId::new("roofline/1-thread", &label), |b| {
        b.iter(|| {
            roofline::run_q8(&mut p, &g, &mut codes);
            black_box(&mut p);
        })
    });
    #[cfg(feature = "rayon")]
    {
        let all = pool(std::thread::available_parallelism().map_or(1, usize::from));
        group.bench_function(BenchmarkId::new("roofline/all-threads", &label), |b| {
            b.iter(|| {
                all.install(|| roofline::par_run_q8(&mut p, &g, &mut codes));
                black_box(&mut p);
            })
        });
    }
    group.finish();
}

fn benches(c: &mut Criterion) {
    let gpt2 = gpt2_small();
    assert_eq!(gpt2.len(), 148);
    assert_eq!(gpt2.iter().map(|t| t.1).sum::<usize>(), 124_439_808);
    group::<f32, f32, f32>(c, "gpt2-small", &gpt2);
    group::<bf16, bf16, f32>(c, "gpt2-small", &gpt2);
    group::<bf16, bf16, bf16>(c, "gpt2-small", &gpt2);
    q8_group::<f32, f32>(c, "gpt2-small", &gpt2);
    q8_group::<bf16, bf16>(c, "gpt2-small", &gpt2);
    group::<f32, f32, f32>(c, "1000x1K", &small_tensors());
}

criterion_group! {
    name = model;
    config = common::config(Duration::from_millis(1000), Duration::from_secs(3), 20);
    targets = benches
}
criterion_main!(model);
