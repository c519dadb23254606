//! The optimizer step alone, on fixed gradients: `lion_optim_burn::Lion` against burn's own
//! Lion on the same backend (Flex).
//!
//! ```text
//! cargo bench -p lion-optim-burn --features burn/simd,burn/rayon            # all
//! cargo bench -p lion-optim-burn --features burn/simd,burn/rayon -- quick   # fewer samples
//! ```
//!
//! The crate does not turn on Flex's `simd` and `rayon` features (it does not need them; a
//! user's `burn` with its default features has them): `--features burn/simd,burn/rayon` times
//! burn's Lion at its fastest, as a user's build would run it.
//!
//! Two tables: `Optimizer::step` on one tensor (f32 and bf16, 4K to 4M elements, the state
//! carried from step to step), and `ModuleOptimizer::step` on whole models (the example's MLP
//! and 4 Linear layers of 1024 x 1024). Figures are medians over samples of the time per step;
//! the machine may be shared, so compare the ratios within one run.

use std::time::Instant;

use burn::module::Module;
use burn::nn::{Linear, LinearConfig};
use burn::optim::{GradientsParams, LionState, ModuleOptimizer, Optimizer};
use burn::tensor::{DType, Device, Distribution, Tensor};

/// The median time per step in microseconds: `samples` samples of `iters` steps each (after a
/// warm-up that also makes the state).
fn median_us(mut step: impl FnMut(), samples: usize, iters: usize) -> f64 {
    for _ in 0..iters.max(3) {
        step();
    }
    let mut times: Vec<f64> = (0..samples)
        .map(|_| {
            let t0 = Instant::now();
            for _ in 0..iters {
                step();
            }
            t0.elapsed().as_secs_f64() * 1e6 / iters as f64
        })
        .collect();
    times.sort_by(f64::total_cmp);
    times[times.len() / 2]
}

/// `Optimizer::step` on one tensor of `n` elements, the state carried along.
fn one_tensor<O: Optimizer<State<1> = LionState<1>>>(
    optim: &O,
    n: usize,
    dtype: DType,
    samples: usize,
) -> f64 {
    let dev = Device::flex();
    let g = Tensor::<1>::random([n], Distribution::Normal(0.0, 1e-2), &dev).cast(dtype);
    let mut slot = Some((
        Tensor::<1>::random([n], Distribution::Normal(0.0, 1.0), &dev).cast(dtype),
        None,
    ));
    let iters = (4_000_000 / n).clamp(4, 2000);
    median_us(
        || {
            let (t, s) = slot.take().expect("state");
            slot = Some(optim.step(1e-4, t, g.clone(), s));
        },
        samples,
        iters,
    )
}

#[derive(Module, Debug)]
struct Layers {
    layers: Vec<Linear>,
}

impl Layers {
    fn new(sizes: &[(usize, usize)], dev: &Device) -> Self {
        Self {
            layers: sizes
                .iter()
                .map(|&(i, o)| LinearConfig::new(i, o).init(dev))
                .collect(),
        }
    }

    /// A gradient for every parameter (fixed random values), registered anew for each step.
    fn grads(&self) -> Vec<(burn::module::ParamId, GradTensor)> {
        let dev = Device::flex();
        let noise = Distribution::Normal(0.0, 1e-2);
        let mut out = Vec::new();
        for l in &self.layers {
            let w = &l.weight;
            let g = Tensor::random(w.val().shape(), noise, &dev);
            out.push((w.id, GradTensor::Two(g)));
            if let Some(b) = &l.bias {
                let g = Tensor::random(b.val().shape(), noise, &dev);
                out.push((b.id, GradTensor::One(g)));
            }
        }
        out
    }
}

#[derive(Clone)]
enum GradTensor {
    One(Tensor<1>),
    Two(Tensor<2>),
}

fn params_of(grads: &[(burn::module::ParamId, GradTensor)]) -> GradientsParams {
    let mut g = GradientsParams::new();
    for (id, t) in grads {
        match t {
            GradTensor::One(t) => g.register(*id, t.clone()),
            GradTensor::Two(t) => g.register(*id, t.clone()),
        }
    }
    g
}

/// `ModuleOptimizer::step` on a model of these Linear layers.
fn model_step(
    make: impl Fn() -> ModuleOptimizer,
    sizes: &[(usize, usize)],
    samples: usize,
    iters: usize,
) -> f64 {
    let dev = Device::flex().autodiff();
    let mut model = Some(Layers::new(sizes, &dev));
    let grads = model.as_ref().expect("model").grads();
    let mut optim = make();
    median_us(
        || {
            let m = model.take().expect("model");
            model = Some(optim.step(1e-4, m, params_of(&grads)));
        },
        samples,
        iters,
    )
}

fn main() {
    if std::env::args().any(|a| a == "--test") {
        return;
    }
    let quick = std::env::args().any(|a| a == "quick");
    let samples = if quick { 7 } else { 21 };
    let ours = lion_optim_burn::LionConfig::new()
        .with_weight_decay(0.1)
        .build();
    let burns = burn::optim::LionConfig::new()
        .with_weight_decay(0.1)
        .build();
    println!("quick: {quick}\n");
    println!("`Optimizer::step`, one tensor:\n");
    println!("| dtype | elements | lion-optim-burn | burn's Lion | speed-up |");
    println!("|---|---:|---:|---:|---:|");
    for dtype in [DType::F32, DType::BF16] {
        for n in [4096, 65536, 1 << 20, 4 << 20] {
            let a = one_tensor(&ours, n, dtype, samples);
            let b = one_tensor(&burns, n, dtype, samples);
            println!(
                "| {dtype:?} | {n} | {a:.1} µs | {b:.1} µs | {:.1}x |",
                b / a
            );
        }
    }
    let stats = ours.stats();
    println!("\n(paths taken by lion-optim-burn: {stats:?})");

    println!("\n`ModuleOptimizer::step`, whole model (f32, weight decay 0.1):\n");
    println!("| model | lion-optim-burn | burn's Lion | speed-up |");
    println!("|---|---:|---:|---:|");
    let mlp = [(2, 64), (64, 64), (64, 3)];
    let big = [(1024, 1024); 4];
    for (name, sizes, iters) in [
        ("example MLP (2-64-64-3)", &mlp[..], 200),
        ("4 x Linear 1024x1024", &big[..], 5),
    ] {
        let a = model_step(
            || {
                lion_optim_burn::LionConfig::new()
                    .with_weight_decay(0.1)
                    .init()
            },
            sizes,
            samples,
            iters,
        );
        let b = model_step(
            || burn::optim::LionConfig::new().with_weight_decay(0.1).init(),
            sizes,
            samples,
            iters,
        );
        println!("| {name} | {a:.1} µs | {b:.1} µs | {:.1}x |", b / a);
    }
}
