//! A real candle training loop, trained twice from the same initial weights: once with
//! `lion_optim_candle::Lion`, once with candle's own `AdamW`.
//!
//! ```text
//! cargo run --release -p lion-optim-candle --example candle_train
//! ```
//!
//! The model is an MLP (2 -> 64 -> 64 -> 3, tanh, softmax cross-entropy) built from `Var`s in a
//! `VarMap`, learning to separate three interleaved 2-D spirals (generated from a fixed seed:
//! 3000 points, 80/20 train/test split; nothing is downloaded). Mini-batches of 64, a cosine
//! learning-rate schedule through `Optimizer::set_learning_rate`, and for Lion two parameter
//! groups (no weight decay for the biases). The same generic loop (`train::<O: Optimizer>`)
//! runs both optimizers: the Lion is a drop-in `candle_nn::Optimizer`. (The data set, the
//! initial weights, the schedule and the table are shared with the burn example:
//! `ci/test-support/src/spirals.rs`.)
//!
//! `cargo test -p lion-optim-candle` runs a shorter version (tests/example.rs) and checks that
//! both runs learn.

use std::time::{Duration, Instant};

use candle_core::{D, DType, Device, Result, Tensor, Var};
use candle_nn::{AdamW, Optimizer, ParamsAdamW, VarMap};
use lion_optim_candle::{Lion, ParamsLion};
use support::Rng;
use support::spirals::{BATCH, LAYERS, Report, Sample, Settings, cosine_lr};

/// Samples as tensors: points `(n, 2)` and classes `(n)`.
fn tensors(samples: &[Sample], dev: &Device) -> Result<(Tensor, Tensor)> {
    let x: Vec<f32> = samples.iter().flat_map(|s| s.point).collect();
    let y: Vec<u32> = samples.iter().map(|s| u32::from(s.class)).collect();
    Ok((
        Tensor::from_vec(x, (samples.len(), 2), dev)?,
        Tensor::from_vec(y, samples.len(), dev)?,
    ))
}

/// The MLP's vars, in a VarMap (names as a candle model would have them).
struct Mlp {
    layers: Vec<(Var, Var)>,
}

impl Mlp {
    /// The same initial weights every time (scaled normal, zero biases).
    fn new(varmap: &VarMap, dev: &Device) -> Result<Self> {
        let mut layers = Vec::new();
        let mut data = varmap.data().lock().expect("VarMap lock");
        let weights = support::spirals::initial_weights();
        for (i, ((fan_in, fan_out), w)) in LAYERS.into_iter().zip(weights).enumerate() {
            let w = Var::from_vec(w, (fan_out, fan_in), dev)?;
            let b = Var::zeros(fan_out, DType::F32, dev)?;
            data.insert(format!("fc{}.weight", i + 1), w.clone());
            data.insert(format!("fc{}.bias", i + 1), b.clone());
            layers.push((w, b));
        }
        Ok(Self { layers })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let mut h = x.clone();
        for (i, (w, b)) in self.layers.iter().enumerate() {
            h = h.matmul(&w.t()?)?.broadcast_add(b)?;
            if i + 1 < self.layers.len() {
                h = h.tanh()?;
            }
        }
        Ok(h)
    }
}

fn accuracy(logits: &Tensor, y: &Tensor) -> Result<f32> {
    logits
        .argmax(D::Minus1)?
        .eq(y)?
        .to_dtype(DType::F32)?
        .mean_all()?
        .to_scalar::<f32>()
}

/// The generic training loop: any `candle_nn::Optimizer`.
fn train<O: Optimizer>(
    name: &'static str,
    make: impl FnOnce(&VarMap) -> Result<O>,
    base_lr: f64,
    settings: Settings,
) -> Result<Report> {
    let dev = Device::Cpu;
    let (train_set, test_set) = support::spirals::dataset(settings.points);
    let ((train_x, train_y), (test_x, test_y)) =
        (tensors(&train_set, &dev)?, tensors(&test_set, &dev)?);
    let varmap = VarMap::new();
    let model = Mlp::new(&varmap, &dev)?;
    let mut opt = make(&varmap)?;
    let initial_loss =
        candle_nn::loss::cross_entropy(&model.forward(&train_x)?, &train_y)?.to_scalar::<f32>()?;
    let n = train_set.len();
    let total_steps = settings.total_steps(n);
    let mut rng = Rng(42);
    let mut order: Vec<u32> = (0..n as u32).collect();
    let (mut rows, mut step_time, mut steps) = (Vec::new(), Duration::ZERO, 0);
    for epoch in 1..=settings.epochs {
        rng.shuffle(&mut order);
        let mut epoch_loss = 0.0;
        for chunk in order.chunks(BATCH) {
            opt.set_learning_rate(cosine_lr(base_lr, steps, total_steps));
            let idx = Tensor::from_slice(chunk, chunk.len(), &dev)?;
            let (x, y) = (
                train_x.index_select(&idx, 0)?,
                train_y.index_select(&idx, 0)?,
            );
            let loss = candle_nn::loss::cross_entropy(&model.forward(&x)?, &y)?;
            epoch_loss += loss.to_scalar::<f32>()? * chunk.len() as f32;
            let grads = loss.backward()?;
            let t0 = Instant::now();
            opt.step(&grads)?;
            step_time += t0.elapsed();
            steps += 1;
        }
        if settings.row_after(epoch) {
            let acc = accuracy(&model.forward(&test_x)?, &test_y)?;
            rows.push((epoch, epoch_loss / n as f32, acc));
        }
    }
    Ok(Report {
        name,
        test_accuracy: rows.last().map_or(0.0, |r| r.2),
        rows,
        initial_loss,
        step_time,
        steps,
        params: Vec::new(),
    })
}

/// Both runs: Lion (lr 3e-3, weight decay 0.1, none for biases) and AdamW (lr 1e-2, weight
/// decay 0.01: Lion's usual 3-10x smaller rate and larger decay).
pub fn run(settings: Settings) -> Result<Vec<Report>> {
    let lion = train(
        "lion-optim-candle Lion",
        |varmap| {
            let params = ParamsLion {
                lr: 3e-3,
                weight_decay: 0.1,
                ..Default::default()
            };
            Lion::from_varmap(varmap, params.no_decay_for_biases_and_norms())
        },
        3e-3,
        settings,
    )?;
    let adamw = train(
        "candle-nn AdamW",
        |varmap| {
            let params = ParamsAdamW {
                lr: 1e-2,
                weight_decay: 0.01,
                ..Default::default()
            };
            AdamW::new(varmap.all_vars(), params)
        },
        1e-2,
        settings,
    )?;
    Ok(vec![lion, adamw])
}

/// The table of a run's reports (markdown).
pub fn table(reports: &[Report]) -> String {
    support::spirals::table(reports, "step")
}

#[allow(dead_code)] // tests/example.rs includes this file as a module
fn main() -> Result<()> {
    let t0 = Instant::now();
    let reports = run(Settings::FULL)?;
    println!("{}", table(&reports));
    println!(
        "\n(3-class spirals, MLP 2-64-64-3, {} s in all)",
        t0.elapsed().as_secs()
    );
    Ok(())
}
