//! A real burn training loop, trained twice from the same initial weights: once with
//! `lion_optim_burn`'s Lion, once with burn's own Lion, through the same `ModuleOptimizer` API.
//!
//! ```text
//! cargo run --release -p lion-optim-burn --example burn_train --features burn/simd,burn/rayon
//! ```
//!
//! (`--features burn/simd,burn/rayon`: Flex with the speed-ups a user's `burn` has by default,
//! for a fair time of burn's Lion; the crate itself does not need them.)
//!
//! The model is an MLP (2 -> 64 -> 64 -> 3, tanh, cross-entropy) of burn `Linear` modules on
//! the Flex CPU backend with autodiff, learning three interleaved 2-D spirals (generated from a
//! fixed seed: 3000 points, 80/20 train/test split; nothing is downloaded). Mini-batches of 64,
//! a cosine learning-rate schedule passed to `ModuleOptimizer::step`, weight decay 0.1 for the
//! weights and none for the biases (a second `ParamGroup`). (The data set, the initial
//! weights, the schedule and the table are shared with the candle example:
//! `ci/test-support/src/spirals.rs`.)
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
use support::Rng;
use support::spirals::{BATCH, LAYERS, Report, Sample, Settings, cosine_lr};

/// Samples as tensors: points `[n, 2]` and classes `[n]`.
fn tensors(samples: &[Sample], dev: &Device) -> (Tensor<2>, Tensor<1, Int>) {
    let x: Vec<f32> = samples.iter().flat_map(|s| s.point).collect();
    let y: Vec<i64> = samples.iter().map(|s| i64::from(s.class)).collect();
    (
        Tensor::from_data(TensorData::new(x, [samples.len(), 2]), dev),
        Tensor::from_data(TensorData::new(y, [samples.len()]), dev),
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
        let mut weights = support::spirals::initial_weights().into_iter();
        let [fc1, fc2, fc3] = LAYERS.map(|(fan_in, fan_out)| {
            let w = weights.next().expect("a weight per layer");
            let mut linear = LinearConfig::new(fan_in, fan_out).init(dev);
            linear.weight = Param::from_tensor(Tensor::from_data(
                TensorData::new(w, [fan_in, fan_out]),
                dev,
            ));
            linear.bias = Some(Param::from_tensor(Tensor::zeros([fan_out], dev)));
            linear
        });
        Self { fc1, fc2, fc3 }
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

/// A training run with the optimizer `optim`.
fn train(name: &'static str, mut optim: ModuleOptimizer, settings: Settings) -> Report {
    let dev = Device::flex().autodiff();
    let (train_set, test_set) = support::spirals::dataset(settings.points);
    let (test_x, test_y) = tensors(&test_set, &dev);
    let mut model = Mlp::new(&dev);
    let loss_fn = CrossEntropyLossConfig::new().init(&dev);
    let (all_x, all_y) = tensors(&train_set, &dev);
    let initial_loss = loss_fn
        .forward(model.forward(all_x), all_y)
        .into_scalar::<f32>();
    let n = train_set.len();
    let total_steps = settings.total_steps(n);
    let base_lr = 3e-3;
    let mut rng = Rng(42);
    let mut order: Vec<usize> = (0..n).collect();
    let (mut rows, mut step_time, mut steps) = (Vec::new(), Duration::ZERO, 0);
    for epoch in 1..=settings.epochs {
        rng.shuffle(&mut order);
        let mut epoch_loss = 0.0;
        for chunk in order.chunks(BATCH) {
            let samples: Vec<_> = chunk.iter().map(|&i| train_set[i]).collect();
            let (x, y) = tensors(&samples, &dev);
            let loss = loss_fn.forward(model.forward(x), y);
            epoch_loss += loss.clone().into_scalar::<f32>() * chunk.len() as f32;
            let grads = GradientsParams::from_grads(loss.backward(), &model);
            let lr = cosine_lr(base_lr, steps, total_steps);
            let t0 = Instant::now();
            model = optim.step(lr, model, grads);
            step_time += t0.elapsed();
            steps += 1;
        }
        if settings.row_after(epoch) {
            let acc = accuracy(model.forward(test_x.clone()), test_y.clone());
            rows.push((epoch, epoch_loss / n as f32, acc));
        }
    }
    Report {
        name,
        test_accuracy: rows.last().map_or(0.0, |r| r.2),
        rows,
        initial_loss,
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
    support::spirals::table(reports, "ModuleOptimizer::step")
}

/// Whether two runs' final parameters have the same bits.
pub fn same_bits(a: &[Vec<f32>], b: &[Vec<f32>]) -> bool {
    let bits = |p: &[Vec<f32>]| -> Vec<Vec<u32>> {
        p.iter()
            .map(|v| v.iter().map(|x| x.to_bits()).collect())
            .collect()
    };
    bits(a) == bits(b)
}

#[allow(dead_code)] // tests/example.rs includes this file as a module
fn main() {
    let t0 = Instant::now();
    let reports = run(Settings::FULL);
    println!("{}", table(&reports));
    let same = same_bits(&reports[0].params, &reports[1].params);
    println!("\nfinal parameters bit-identical between the two runs: {same}");
    println!(
        "(3-class spirals, MLP 2-64-64-3, {} s in all)",
        t0.elapsed().as_secs()
    );
}
