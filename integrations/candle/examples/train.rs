//! A real candle training loop, trained twice from the same initial weights: once with
//! `lion_optim_candle::Lion`, once with candle's own `AdamW`.
//!
//! ```text
//! cargo run --release -p lion-optim-candle --example candle_train
//! ```
//!
//! The model is an MLP (2 -> 64 -> 64 -> 3, tanh, softmax cross-entropy) built from `Var`s in a
//! `VarMap`, learning to separate three interleaved 2-D spirals (generated here from a fixed
//! seed: 3000 points, 80/20 train/test split; nothing is downloaded). Mini-batches of 64, a
//! cosine learning-rate schedule through `Optimizer::set_learning_rate`, and for Lion two
//! parameter groups (no weight decay for the biases). The same generic loop (`train::<O:
//! Optimizer>`) runs both optimizers: the Lion is a drop-in `candle_nn::Optimizer`.
//!
//! `cargo test -p lion-optim-candle` runs a shorter version (tests/example.rs) and checks that
//! both runs learn.

use std::time::{Duration, Instant};

use candle_core::{D, DType, Device, Result, Tensor, Var};
use candle_nn::{AdamW, Optimizer, ParamsAdamW, VarMap};
use lion_optim_candle::{Lion, ParamsLion};

/// The size of a run.
#[derive(Clone, Copy, Debug)]
pub struct Settings {
    /// Points per class.
    pub points: usize,
    /// Epochs (passes over the training set).
    pub epochs: usize,
}

impl Settings {
    /// The example's run.
    pub const FULL: Settings = Settings {
        points: 1000,
        epochs: 60,
    };
    /// The test's run (under a second in release builds).
    pub const QUICK: Settings = Settings {
        points: 300,
        epochs: 40,
    };
}

/// One optimizer's run.
#[derive(Clone, Debug)]
pub struct Report {
    /// The optimizer's name.
    pub name: &'static str,
    /// `(epoch, mean training loss of the epoch, test accuracy after it)`.
    pub rows: Vec<(usize, f32, f32)>,
    /// The training loss before any step.
    pub initial_loss: f32,
    /// The test accuracy after the last epoch.
    pub test_accuracy: f32,
    /// Time spent in `Optimizer::step` (the backward pass excluded).
    pub step_time: Duration,
    /// Number of steps.
    pub steps: usize,
}

/// A small deterministic generator (xorshift64*).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn uniform(&mut self) -> f32 {
        (self.next() >> 40) as f32 / (1u64 << 24) as f32
    }
    /// Roughly normal (a sum of four uniforms, variance 1).
    fn normal(&mut self) -> f32 {
        ((0..4).map(|_| self.uniform()).sum::<f32>() - 2.0) * 3f32.sqrt()
    }
}

/// The spirals: `(train_x, train_y, test_x, test_y)`.
fn spirals(points: usize, dev: &Device) -> Result<(Tensor, Tensor, Tensor, Tensor)> {
    let mut rng = Rng(0x5eed_1234);
    let mut samples = Vec::with_capacity(3 * points);
    for class in 0..3u32 {
        for i in 0..points {
            let r = i as f32 / points as f32;
            let t = 7.0 * r + class as f32 * 2.0 * std::f32::consts::PI / 3.0 + 0.2 * rng.normal();
            samples.push(([r * t.sin(), r * t.cos()], class));
        }
    }
    for i in (1..samples.len()).rev() {
        samples.swap(i, (rng.next() % (i as u64 + 1)) as usize);
    }
    let split = samples.len() * 4 / 5;
    let to_tensors = |s: &[([f32; 2], u32)]| -> Result<(Tensor, Tensor)> {
        let x: Vec<f32> = s.iter().flat_map(|(p, _)| *p).collect();
        let y: Vec<u32> = s.iter().map(|(_, c)| *c).collect();
        Ok((
            Tensor::from_vec(x, (s.len(), 2), dev)?,
            Tensor::from_vec(y, s.len(), dev)?,
        ))
    };
    let (train_x, train_y) = to_tensors(&samples[..split])?;
    let (test_x, test_y) = to_tensors(&samples[split..])?;
    Ok((train_x, train_y, test_x, test_y))
}

/// The MLP's vars, in a VarMap (names as a candle model would have them).
struct Mlp {
    layers: Vec<(Var, Var)>,
}

impl Mlp {
    /// The same initial weights every time (scaled normal, zero biases).
    fn new(varmap: &VarMap, dev: &Device) -> Result<Self> {
        let mut rng = Rng(0xfeed_beef);
        let sizes = [(2, 64), (64, 64), (64, 3)];
        let mut layers = Vec::new();
        let mut data = varmap.data().lock().expect("VarMap lock");
        for (i, (fan_in, fan_out)) in sizes.into_iter().enumerate() {
            let scale = (1.0 / fan_in as f32).sqrt();
            let w: Vec<f32> = (0..fan_in * fan_out)
                .map(|_| scale * rng.normal())
                .collect();
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
    let (train_x, train_y, test_x, test_y) = spirals(settings.points, &dev)?;
    let varmap = VarMap::new();
    let model = Mlp::new(&varmap, &dev)?;
    let mut opt = make(&varmap)?;
    let initial_loss =
        candle_nn::loss::cross_entropy(&model.forward(&train_x)?, &train_y)?.to_scalar::<f32>()?;
    let n = train_x.dim(0)?;
    let batch = 64;
    let total_steps = settings.epochs * n.div_ceil(batch);
    let mut rng = Rng(42);
    let mut order: Vec<u32> = (0..n as u32).collect();
    let (mut rows, mut step_time, mut steps) = (Vec::new(), Duration::ZERO, 0);
    for epoch in 1..=settings.epochs {
        for i in (1..n).rev() {
            order.swap(i, (rng.next() % (i as u64 + 1)) as usize);
        }
        let mut epoch_loss = 0.0;
        for chunk in order.chunks(batch) {
            // Cosine schedule from base_lr down to 5% of it.
            let progress = steps as f64 / total_steps as f64;
            opt.set_learning_rate(
                base_lr * (0.05 + 0.95 * 0.5 * (1.0 + (std::f64::consts::PI * progress).cos())),
            );
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
        // A table row after epochs 1, 2, 5, every tenth and the last.
        if [1, 2, 5].contains(&epoch) || epoch % 10 == 0 || epoch == settings.epochs {
            let acc = accuracy(&model.forward(&test_x)?, &test_y)?;
            rows.push((epoch, epoch_loss / n as f32, acc));
        }
    }
    let test_accuracy = rows.last().map_or(0.0, |r| r.2);
    Ok(Report {
        name,
        rows,
        initial_loss,
        test_accuracy,
        step_time,
        steps,
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
            AdamW::new(
                varmap.all_vars(),
                ParamsAdamW {
                    lr: 1e-2,
                    weight_decay: 0.01,
                    ..Default::default()
                },
            )
        },
        1e-2,
        settings,
    )?;
    Ok(vec![lion, adamw])
}

/// The table of a run's reports (markdown).
pub fn table(reports: &[Report]) -> String {
    let mut out = String::from("| epoch |");
    for r in reports {
        out += &format!(" {} loss | {} test acc |", r.name, r.name);
    }
    out += "\n|---:|";
    out += &"---:|---:|".repeat(reports.len());
    out += "\n| 0 |";
    for r in reports {
        out += &format!(" {:.3} | - |", r.initial_loss);
    }
    for (i, (epoch, _, _)) in reports[0].rows.iter().enumerate() {
        out += &format!("\n| {epoch} |");
        for r in reports {
            let (_, loss, acc) = r.rows[i];
            out += &format!(" {loss:.3} | {:.1}% |", 100.0 * acc);
        }
    }
    out += "\n\n| optimizer | steps | time in `step` | per step |\n|---|---:|---:|---:|";
    for r in reports {
        out += &format!(
            "\n| {} | {} | {:.1} ms | {:.1} µs |",
            r.name,
            r.steps,
            r.step_time.as_secs_f64() * 1e3,
            r.step_time.as_secs_f64() * 1e6 / r.steps as f64
        );
    }
    out
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
