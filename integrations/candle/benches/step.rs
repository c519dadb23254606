//! The optimizer step alone, on fixed gradients: `lion_optim_candle::Lion` against candle's
//! `AdamW` and against Lion written with candle tensor operations (what a candle user would
//! write without this crate), on two models.
//!
//! ```text
//! cargo bench -p lion-optim-candle            # all
//! cargo bench -p lion-optim-candle -- quick   # fewer samples
//! ```
//!
//! Each figure is the median over samples of the time per step (each sample averages several
//! steps). The machine may be shared: compare the ratios within one run.

use std::time::Instant;

use candle_core::backprop::GradStore;
use candle_core::{DType, Device, Result, Tensor, Var};
use candle_nn::{AdamW, Optimizer, ParamsAdamW};
use lion_optim_candle::{Lion, ParamsLion};

/// Lion written with candle tensor operations, as the reference PyTorch code does it: new
/// tensors for every intermediate, written back with `Var::set`.
struct TensorOpsLion {
    vars: Vec<(Var, Var)>,
    lr: f64,
    beta1: f64,
    beta2: f64,
    weight_decay: f64,
}

impl Optimizer for TensorOpsLion {
    type Config = ParamsLion;

    fn new(vars: Vec<Var>, p: ParamsLion) -> Result<Self> {
        let vars = vars
            .into_iter()
            .map(|v| {
                let m = Var::zeros(v.shape(), v.dtype(), v.device())?;
                Ok((v, m))
            })
            .collect::<Result<_>>()?;
        Ok(Self {
            vars,
            lr: p.lr,
            beta1: p.beta1,
            beta2: p.beta2,
            weight_decay: p.weight_decay,
        })
    }

    fn step(&mut self, grads: &GradStore) -> Result<()> {
        for (p, m) in &self.vars {
            let Some(g) = grads.get(p) else { continue };
            let c = (m.affine(self.beta1, 0.0)? + g.affine(1.0 - self.beta1, 0.0)?)?;
            let update = c.sign()?.affine(self.lr, 0.0)?;
            let decayed = p.affine(1.0 - self.lr * self.weight_decay, 0.0)?;
            p.set(&(decayed - update)?)?;
            m.set(&(m.affine(self.beta2, 0.0)? + g.affine(1.0 - self.beta2, 0.0)?)?)?;
        }
        Ok(())
    }

    fn learning_rate(&self) -> f64 {
        self.lr
    }

    fn set_learning_rate(&mut self, lr: f64) {
        self.lr = lr;
    }
}

/// A model: vars of these shapes (named for groups), and a gradient for each.
struct Model {
    name: &'static str,
    vars: Vec<(String, Var)>,
    grads: GradStore,
}

impl Model {
    fn new(name: &'static str, shapes: &[(&str, &[usize])], dtype: DType) -> Result<Self> {
        let dev = Device::Cpu;
        let mut vars = Vec::new();
        let mut grads = GradStore::default();
        for (i, (var_name, shape)) in shapes.iter().enumerate() {
            let v = Var::from_tensor(&Tensor::randn(0f32, 1.0, *shape, &dev)?.to_dtype(dtype)?)?;
            let g = Tensor::randn(0f32, 1e-2, *shape, &dev)?.to_dtype(dtype)?;
            grads.insert(v.as_tensor(), g);
            vars.push((format!("{var_name}.{i}"), v));
        }
        Ok(Self { name, vars, grads })
    }

    fn elements(&self) -> usize {
        self.vars.iter().map(|(_, v)| v.elem_count()).sum()
    }

    fn all_vars(&self) -> Vec<Var> {
        self.vars.iter().map(|(_, v)| v.clone()).collect()
    }
}

/// The median time per step in microseconds: `samples` samples of `iters` steps each.
fn median_us(mut step: impl FnMut() -> Result<()>, samples: usize, iters: usize) -> Result<f64> {
    for _ in 0..iters.max(3) {
        step()?; // warm-up (also allocates AdamW's and Lion's state)
    }
    let mut times = Vec::with_capacity(samples);
    for _ in 0..samples {
        let t0 = Instant::now();
        for _ in 0..iters {
            step()?;
        }
        times.push(t0.elapsed().as_secs_f64() * 1e6 / iters as f64);
    }
    times.sort_by(f64::total_cmp);
    Ok(times[times.len() / 2])
}

fn main() -> Result<()> {
    let quick = std::env::args().any(|a| a == "quick");
    // `cargo test --benches` runs bench targets with `--test`... nothing to test here.
    if std::env::args().any(|a| a == "--test") {
        return Ok(());
    }
    let mlp: &[(&str, &[usize])] = &[
        ("fc1.weight", &[64, 2]),
        ("fc1.bias", &[64]),
        ("fc2.weight", &[64, 64]),
        ("fc2.bias", &[64]),
        ("fc3.weight", &[3, 64]),
        ("fc3.bias", &[3]),
    ];
    let large: &[(&str, &[usize])] = &[
        ("h.0.attn.weight", &[1024, 1024]),
        ("h.0.attn.bias", &[1024]),
        ("h.0.mlp.weight", &[1024, 1024]),
        ("h.0.ln.weight", &[1024]),
        ("h.1.attn.weight", &[1024, 1024]),
        ("h.1.mlp.weight", &[1024, 1024]),
    ];
    let models = [
        (
            Model::new("example MLP (2-64-64-3, f32)", mlp, DType::F32)?,
            200,
        ),
        (Model::new("4 x 1M + 2 x 1K (f32)", large, DType::F32)?, 4),
        (Model::new("4 x 1M + 2 x 1K (bf16)", large, DType::BF16)?, 4),
    ];
    println!("threads: {} (rayon), quick: {quick}", rayon_threads());
    println!(
        "\n| model | elements | lion-optim-candle | candle AdamW | Lion in candle tensor ops | vs AdamW | vs tensor-op Lion |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|");
    for (model, iters) in &models {
        let samples = if quick { 7 } else { 25 };
        let params = || ParamsLion {
            lr: 1e-4,
            weight_decay: 0.1,
            ..Default::default()
        };
        let mut lion =
            Lion::new_named(model.vars.clone(), params().no_decay_for_biases_and_norms())?;
        let ours = median_us(|| lion.step(&model.grads), samples, *iters)?;
        let mut adamw = AdamW::new(
            model.all_vars(),
            ParamsAdamW {
                lr: 1e-4,
                weight_decay: 0.1,
                ..Default::default()
            },
        )?;
        let adam = median_us(|| adamw.step(&model.grads), samples, *iters)?;
        let mut ops = TensorOpsLion::new(model.all_vars(), params())?;
        let naive = median_us(|| ops.step(&model.grads), samples, *iters)?;
        println!(
            "| {} | {} | {:.1} µs | {:.1} µs | {:.1} µs | {:.1}x | {:.1}x |",
            model.name,
            model.elements(),
            ours,
            adam,
            naive,
            adam / ours,
            naive / ours
        );
    }
    Ok(())
}

fn rayon_threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}
