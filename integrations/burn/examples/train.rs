//! A real burn training loop, trained twice from the same initial weights: once with
//! `lion_optim_burn`'s Lion, once with burn's own Lion, through the same `ModuleOptimizer` API.
//!
//! ```text
//! cargo run --release -p lion-optim-burn --example burn_train
//! ```
//!
//! The model is an MLP (2 -> 64 -> 64 -> 3, tanh, cross-entropy) of burn `Linear` modules on
//! the Flex CPU backend with autodiff, learning three interleaved 2-D spirals (generated here
//! from a fixed seed: 3000 points, 80/20 train/test split; nothing is downloaded). Mini-batches
//! of 64, a cosine learning-rate schedule passed to `ModuleOptimizer::step`, weight decay 0.1
//! for the weights and none for the biases (a second `ParamGroup`).
//!
//! With f32 parameters the two optimizers compute the same bits (see the crate docs), so the
//! two runs give the same table; what differs is the time in the optimizer step.
//! `cargo test -p lion-optim-burn` runs a shorter version (tests/example.rs) and checks that
//! both learn and agree.

use std::time::{Duration, Instant};

use burn::module::{Module, Param, ParamGroup};
use burn::nn::loss::CrossEntropyLossConfig;
use burn::nn::{Linear, LinearConfig};
use burn::optim::{GradientsParams, ModuleOptimizer};
use burn::tensor::{Device, Int, Tensor, TensorData};

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
    /// The test's run.
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
    /// Time spent in `ModuleOptimizer::step`.
    pub step_time: Duration,
    /// Number of steps.
    pub steps: usize,
    /// The final parameters (to compare runs).
    pub params: Vec<Vec<f32>>,
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

/// The spirals: `(x, class)` for the training and the test set.
#[allow(clippy::type_complexity)]
fn spirals(points: usize) -> (Vec<([f32; 2], i64)>, Vec<([f32; 2], i64)>) {
    let mut rng = Rng(0x5eed_1234);
    let mut samples = Vec::with_capacity(3 * points);
    for class in 0..3 {
        for i in 0..points {
            let r = i as f32 / points as f32;
            let t = 7.0 * r + class as f32 * 2.0 * std::f32::consts::PI / 3.0 + 0.2 * rng.normal();
            samples.push(([r * t.sin(), r * t.cos()], class));
        }
    }
    for i in (1..samples.len()).rev() {
        samples.swap(i, (rng.next() % (i as u64 + 1)) as usize);
    }
    let test = samples.split_off(samples.len() * 4 / 5);
    (samples, test)
}

fn tensors(s: &[([f32; 2], i64)], dev: &Device) -> (Tensor<2>, Tensor<1, Int>) {
    let x: Vec<f32> = s.iter().flat_map(|(p, _)| *p).collect();
    let y: Vec<i64> = s.iter().map(|(_, c)| *c).collect();
    (
        Tensor::from_data(TensorData::new(x, [s.len(), 2]), dev),
        Tensor::from_data(TensorData::new(y, [s.len()]), dev),
    )
}

/// The MLP.
#[derive(Module, Debug)]
pub struct Mlp {
    fc1: Linear,
    fc2: Linear,
    fc3: Linear,
}

impl Mlp {
    /// The same initial weights every time (scaled normal, zero biases).
    fn new(dev: &Device) -> Self {
        let mut rng = Rng(0xfeed_beef);
        let mut layer = |fan_in: usize, fan_out: usize| {
            let scale = (1.0 / fan_in as f32).sqrt();
            let w: Vec<f32> = (0..fan_in * fan_out)
                .map(|_| scale * rng.normal())
                .collect();
            let mut linear = LinearConfig::new(fan_in, fan_out).init(dev);
            linear.weight = Param::from_tensor(Tensor::from_data(
                TensorData::new(w, [fan_in, fan_out]),
                dev,
            ));
            linear.bias = Some(Param::from_tensor(Tensor::zeros([fan_out], dev)));
            linear
        };
        Self {
            fc1: layer(2, 64),
            fc2: layer(64, 64),
            fc3: layer(64, 3),
        }
    }

    fn forward(&self, x: Tensor<2>) -> Tensor<2> {
        let h = self.fc1.forward(x).tanh();
        let h = self.fc2.forward(h).tanh();
        self.fc3.forward(h)
    }

    fn params(&self) -> Vec<Vec<f32>> {
        let flat = |t: Tensor<2>| t.into_data().try_to_vec::<f32>().unwrap_or_default();
        let flat1 = |t: Tensor<1>| t.into_data().try_to_vec::<f32>().unwrap_or_default();
        let mut out = Vec::new();
        for l in [&self.fc1, &self.fc2, &self.fc3] {
            out.push(flat(l.weight.val()));
            out.push(flat1(l.bias.as_ref().map(|b| b.val()).expect("bias")));
        }
        out
    }
}

fn accuracy(logits: Tensor<2>, y: Tensor<1, Int>) -> f32 {
    let n = y.dims()[0];
    let predicted = logits.argmax(1).reshape([n]);
    predicted.equal(y).int().sum().into_scalar::<i64>() as f32 / n as f32
}

/// A training run with the optimizer `make` builds.
fn train(name: &'static str, optim: ModuleOptimizer, settings: Settings) -> Report {
    let dev = Device::flex().autodiff();
    let (train_set, test_set) = spirals(settings.points);
    let (test_x, test_y) = tensors(&test_set, &dev);
    let mut model = Mlp::new(&dev);
    let mut optim = optim;
    let loss_fn = CrossEntropyLossConfig::new().init(&dev);
    let (all_x, all_y) = tensors(&train_set, &dev);
    let initial_loss = loss_fn
        .forward(model.forward(all_x), all_y)
        .into_scalar::<f32>();
    let n = train_set.len();
    let batch = 64;
    let total_steps = settings.epochs * n.div_ceil(batch);
    let base_lr = 3e-3;
    let mut rng = Rng(42);
    let mut order: Vec<usize> = (0..n).collect();
    let (mut rows, mut step_time, mut steps) = (Vec::new(), Duration::ZERO, 0);
    for epoch in 1..=settings.epochs {
        for i in (1..n).rev() {
            order.swap(i, (rng.next() % (i as u64 + 1)) as usize);
        }
        let mut epoch_loss = 0.0;
        for chunk in order.chunks(batch) {
            let samples: Vec<_> = chunk.iter().map(|&i| train_set[i]).collect();
            let (x, y) = tensors(&samples, &dev);
            let loss = loss_fn.forward(model.forward(x), y);
            epoch_loss += loss.clone().into_scalar::<f32>() * chunk.len() as f32;
            let grads = GradientsParams::from_grads(loss.backward(), &model);
            // Cosine schedule from base_lr down to 5% of it.
            let progress = steps as f64 / total_steps as f64;
            let lr =
                base_lr * (0.05 + 0.95 * 0.5 * (1.0 + (std::f64::consts::PI * progress).cos()));
            let t0 = Instant::now();
            model = optim.step(lr, model, grads);
            step_time += t0.elapsed();
            steps += 1;
        }
        // A table row after epochs 1, 2, 5, every tenth and the last.
        if [1, 2, 5].contains(&epoch) || epoch % 10 == 0 || epoch == settings.epochs {
            let acc = accuracy(model.forward(test_x.clone()), test_y.clone());
            rows.push((epoch, epoch_loss / n as f32, acc));
        }
    }
    let test_accuracy = rows.last().map_or(0.0, |r| r.2);
    Report {
        name,
        rows,
        initial_loss,
        test_accuracy,
        step_time,
        steps,
        params: model.params(),
    }
}

/// Both runs: weight decay 0.1 for the weights, none for the biases (a second group).
pub fn run(settings: Settings) -> Vec<Report> {
    let ours = ModuleOptimizer::from(
        lion_optim_burn::LionConfig::new()
            .with_weight_decay(0.1)
            .build(),
    )
    .with_group(
        ParamGroup::from_predicate("bias"),
        lion_optim_burn::LionConfig::new().build(),
        None,
    );
    let burns = ModuleOptimizer::from(
        burn::optim::LionConfig::new()
            .with_weight_decay(0.1)
            .build(),
    )
    .with_group(
        ParamGroup::from_predicate("bias"),
        burn::optim::LionConfig::new().build(),
        None,
    );
    vec![
        train("lion-optim-burn Lion", ours, settings),
        train("burn's Lion", burns, settings),
    ]
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
    out += "\n\n| optimizer | steps | time in `ModuleOptimizer::step` | per step |\n|---|---:|---:|---:|";
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
fn main() {
    let t0 = Instant::now();
    let reports = run(Settings::FULL);
    println!("{}", table(&reports));
    let same = reports[0]
        .params
        .iter()
        .zip(&reports[1].params)
        .all(|(a, b)| {
            a.iter()
                .map(|x| x.to_bits())
                .eq(b.iter().map(|x| x.to_bits()))
        });
    println!("\nfinal parameters bit-identical between the two runs: {same}");
    println!(
        "(3-class spirals, MLP 2-64-64-3, {} s in all)",
        t0.elapsed().as_secs()
    );
}
