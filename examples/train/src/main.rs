//! A real training run with `lion_optim::Lion`: a two-layer MLP (2 -> 64 tanh -> 3, softmax
//! cross-entropy) learns to separate three interleaved 2-D spirals.
//!
//! ```text
//! cargo run --release -p train
//! ```
//!
//! Everything is in this file: the data set (generated from a fixed seed, 3 000 points, 80/20
//! train/test split), the forward and backward pass (written by hand), mini-batches and a
//! warm-up + cosine learning-rate schedule. The optimizer is set up as for a real model: two
//! parameter groups (weight decay for the weight matrices, none for the biases), every tensor
//! added by name, each step keyed by the tensors' handles. Each entry of [`RUNS`] trains the
//! same model from the same initial weights, only the storage or the variant changes:
//!
//! * `f32`: f32 parameters, f32 momentum.
//! * `bf16`: bf16 parameters **and bf16 momentum** (half the optimizer memory of the f32 run).
//!   The forward and backward passes use the bf16 weights (widened exactly to f32, as a bf16
//!   matmul with f32 accumulation does); gradients are computed and kept in f32.
//!
//! Gradients are always f32. The bf16 run rounds to nearest, and Lion moves every weight by
//! exactly `lr`: once `lr` is less than half the bf16 spacing at a weight, the step rounds back to
//! the old value and is lost (with `lr = 3e-3`: every `|w| > 1`, and more weights as the schedule
//! lowers `lr`; see docs/dtypes.md). So the bf16 run stalls well short of the f32 run (about 76%
//! against 100% test accuracy), and weight decay makes it worse: near the threshold the decay
//! makes the step toward zero slightly longer than the step away from it, so only the former
//! survives rounding and weights can only shrink. That is the problem stochastic rounding
//! solves:
//! * `bf16 + SR`: the same bf16 storage with `Rounding::Stochastic`: every update survives on
//!   average, and the run matches the f32 run.
//! * `f32 cautious`: the cautious variant (`Cautious::Whole`): only the elements whose update
//!   agrees in sign with the gradient move, rescaled by `numel / (agreeing + 1)`.
//! * `f32, 8-bit m`: f32 parameters with the momentum in 8 bits (`MomentumDtype::Q8`:
//!   bitsandbytes' blockwise format, about a quarter of the f32 run's optimizer memory).
//!
//! `cargo test -p train` trains a shorter run of every configuration and checks that the model
//! learns.

use std::error::Error;
use std::time::Instant;

use lion_optim::{
    Backend, Cautious, Dtype, Element, Group, Hyperparams, Lion, MomentumDtype, Rounding,
    StepOptions, Tensor, TensorSpec, bf16, f16,
};

/// One training configuration. Parameters are stored as `params`; gradients are f32.
#[derive(Clone, Copy, Debug)]
struct Run {
    name: &'static str,
    params: Dtype,
    momentum: MomentumDtype,
    rounding: Rounding,
    cautious: Cautious,
}

/// The dtype of the gradients in every run: the backward pass computes them in f32.
const GRADS: Dtype = Dtype::F32;

/// What the output says about the round-to-nearest bf16 run, which stalls by design.
const STALL_NOTE: &str = "the bf16 run (round to nearest) is meant to stall: Lion moves each \
     weight by lr, and a bf16 store rounds the move away when lr is under half the bf16 spacing \
     at the weight (about |w| * 2^-9: more weights as lr decays); bf16 + SR rounds \
     stochastically and keeps the moves on average.";

impl Run {
    /// Round-to-nearest f16/bf16 parameters: small updates are lost (see the module docs).
    fn stalls(&self) -> bool {
        self.params != Dtype::F32 && self.rounding == Rounding::Nearest
    }
}

/// The runs of `cargo run --release -p train` (and of its test): one line each.
#[rustfmt::skip]
const RUNS: &[Run] = &[
    Run { name: "f32",  params: Dtype::F32,  momentum: MomentumDtype::F32,  rounding: Rounding::Nearest, cautious: Cautious::Off },
    Run { name: "bf16", params: Dtype::Bf16, momentum: MomentumDtype::Bf16, rounding: Rounding::Nearest, cautious: Cautious::Off },
    Run { name: "bf16 + SR", params: Dtype::Bf16, momentum: MomentumDtype::Bf16, rounding: Rounding::Stochastic { seed: 1 }, cautious: Cautious::Off },
    Run { name: "f32 cautious", params: Dtype::F32, momentum: MomentumDtype::F32, rounding: Rounding::Nearest, cautious: Cautious::Whole },
    Run { name: "f32, 8-bit m", params: Dtype::F32, momentum: MomentumDtype::Q8, rounding: Rounding::Nearest, cautious: Cautious::Off },
];

/// The model, the data and the schedule.
#[derive(Clone, Copy, Debug)]
struct Config {
    /// Points per class (3 classes); 80% train, 20% test.
    points_per_class: usize,
    hidden: usize,
    epochs: usize,
    batch: usize,
    /// Peak learning rate (after warm-up); cosine decay to 0 over the run.
    lr: f64,
    weight_decay: f64,
    /// Fraction of the steps spent warming up linearly from 0.
    warmup: f64,
    /// Print the losses every `log_every` epochs (0: never).
    log_every: usize,
    seed: u64,
}

const CONFIG: Config = Config {
    points_per_class: 1000,
    hidden: 64,
    epochs: 120,
    batch: 32,
    // Lion's learning rate is 3-10x smaller than Adam's, its weight decay 3-10x larger.
    lr: 3e-3,
    weight_decay: 0.1,
    warmup: 0.05,
    log_every: 20,
    seed: 0x5eed,
};

const CLASSES: usize = 3;

fn main() -> Result<(), Box<dyn Error>> {
    let data = Data::spirals(CONFIG.points_per_class, CONFIG.seed);
    println!(
        "Three 2-D spirals: {} train / {} test points; MLP 2-{}-{} (tanh), batch {}, {} epochs, \
         Lion lr {} (warm-up + cosine), weight decay {}; Lion steps on the {} backend.",
        data.train.len(),
        data.test.len(),
        CONFIG.hidden,
        CLASSES,
        CONFIG.batch,
        CONFIG.epochs,
        CONFIG.lr,
        CONFIG.weight_decay,
        Backend::detect(),
    );
    let mut reports = Vec::new();
    for run in RUNS {
        println!(
            "\n[{}] params {}, grads {GRADS}, momentum {}{}",
            run.name,
            run.params,
            run.momentum,
            if run.stalls() {
                " (expected to stall: see the note under the table)"
            } else {
                ""
            }
        );
        reports.push(train_run(run, &CONFIG, &data)?);
    }
    println!("\n{}", header());
    for r in &reports {
        println!("{r}");
    }
    println!("\nNote: {STALL_NOTE}");
    Ok(())
}

/// The columns of the final table: the header and `Report`'s `Display` share the widths. Both
/// losses are on the training set: of the initial weights, and after the last epoch.
const COLUMNS: [&str; 10] = [
    "run",
    "params",
    "grads",
    "momentum",
    "rounding",
    "variant",
    "loss before training",
    "loss after",
    "train acc",
    "test acc",
];

/// The header of the final table.
fn header() -> String {
    let c = COLUMNS;
    format!(
        "{:<12} {:<6} {:<5} {:<8} {:<10} {:<8} {:>20} {:>10} {:>9} {:>8} {:>7}",
        c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7], c[8], c[9], "time"
    )
}

/// What a run achieved.
#[derive(Clone, Debug)]
struct Report {
    run: Run,
    /// Before training: the initial weights on the training set.
    initial: Eval,
    train: Eval,
    test: Eval,
    seconds: f64,
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let rounding = match self.run.rounding {
            Rounding::Nearest => "nearest",
            Rounding::Stochastic { .. } => "stochastic",
        };
        let variant = match self.run.cautious {
            Cautious::Off => "plain",
            _ => "cautious",
        };
        write!(
            f,
            "{:<12} {:<6} {:<5} {:<8} {:<10} {:<8} {:>20.3} {:>10.3} {:>8.1}% {:>7.1}% {:>5.2} s",
            self.run.name,
            self.run.params.name(),
            GRADS.name(),
            self.run.momentum.name(),
            rounding,
            variant,
            self.initial.loss,
            self.train.loss,
            100.0 * self.train.accuracy,
            100.0 * self.test.accuracy,
            self.seconds,
        )
    }
}

/// Picks the parameter type of a run.
fn train_run(run: &Run, config: &Config, data: &Data) -> Result<Report, lion_optim::Error> {
    match run.params {
        Dtype::F32 => train::<f32>(run, config, data),
        Dtype::F16 => train::<f16>(run, config, data),
        Dtype::Bf16 => train::<bf16>(run, config, data),
    }
}

/// Trains the model with parameters stored as `P` and returns the final losses and accuracies.
fn train<P: Element>(run: &Run, config: &Config, data: &Data) -> Result<Report, lion_optim::Error> {
    let start = Instant::now();
    let mut rng = Rng::new(config.seed ^ 0x1417);
    // The same initial weights for every run (rounded to P).
    let mut model = Mlp::<P>::new(&[2, config.hidden, CLASSES], &mut rng);
    let mut work = Workspace::new(&model);

    // Two groups, as for a real model: weight decay on the weight matrices (the default
    // group), none on the biases; both with this run's rounding and variant. The schedule
    // scales both (`set_lr_scale`).
    let hp = Hyperparams {
        lr: config.lr,
        weight_decay: config.weight_decay,
        ..Hyperparams::default()
    };
    let mut opt = Lion::new(hp)?;
    let no_decay = opt.add_group(Group::new(Hyperparams {
        weight_decay: 0.0,
        ..hp
    }))?;
    opt.update_groups(|_, group| {
        group.options = StepOptions {
            rounding: run.rounding,
            cautious: run.cautious,
            ..group.options
        }
    })?;
    let mut ids = Vec::new();
    for (i, p) in model.params.iter().enumerate() {
        let (layer, bias) = (i / 2, i % 2 == 1);
        let name = format!("layer{layer}.{}", if bias { "bias" } else { "weight" });
        let mut spec = TensorSpec::new(p.len())
            .name(&name)
            .params(P::DTYPE)
            .momentum(run.momentum);
        if bias {
            spec = spec.group(no_decay);
        }
        ids.push(opt.add(spec)?);
    }

    let initial = model.evaluate(&data.train, &mut work);
    let steps_per_epoch = data.train.len().div_ceil(config.batch);
    let total_steps = config.epochs * steps_per_epoch;
    let mut order: Vec<usize> = (0..data.train.len()).collect();
    let mut step = 0;
    for epoch in 1..=config.epochs {
        rng.shuffle(&mut order);
        for batch in order.chunks(config.batch) {
            opt.set_lr_scale(schedule(step, total_steps, config.warmup))?;
            model.gradients(
                batch.iter().map(|&i| &data.train[i]),
                batch.len(),
                &mut work,
            );
            let mut tensors: Vec<Tensor<'_>> = model
                .params
                .iter_mut()
                .zip(&work.grads)
                .zip(&ids)
                .map(|((p, g), &id)| Tensor::new(p, g).of(id))
                .collect();
            opt.step(&mut tensors)?;
            step += 1;
        }
        if config.log_every > 0 && (epoch % config.log_every == 0 || epoch == 1) {
            let (train, test) = (
                model.evaluate(&data.train, &mut work),
                model.evaluate(&data.test, &mut work),
            );
            println!(
                "  epoch {epoch:>4}  lr {:.2e}  train loss {:.4}  test loss {:.4}  test acc {:5.1}%",
                config.lr * opt.lr_scale(),
                train.loss,
                test.loss,
                100.0 * test.accuracy
            );
        }
    }
    Ok(Report {
        run: *run,
        initial,
        train: model.evaluate(&data.train, &mut work),
        test: model.evaluate(&data.test, &mut work),
        seconds: start.elapsed().as_secs_f64(),
    })
}

/// The learning-rate multiplier of step `step` of `total`: linear warm-up, then cosine to 0.
fn schedule(step: usize, total: usize, warmup: f64) -> f64 {
    let t = step as f64 / total as f64;
    if t < warmup {
        (t + 1.0 / total as f64) / warmup
    } else {
        0.5 * (1.0 + (std::f64::consts::PI * (t - warmup) / (1.0 - warmup)).cos())
    }
}

/// A labelled point.
#[derive(Clone, Copy, Debug)]
struct Sample {
    x: [f32; 2],
    label: usize,
}

/// The train and test sets.
struct Data {
    train: Vec<Sample>,
    test: Vec<Sample>,
}

impl Data {
    /// `CLASSES` spiral arms of `per_class` points each: radius 0..1, angle 4 radians along the
    /// arm plus normal noise (sd 0.2 rad); shuffled, then split 80/20.
    fn spirals(per_class: usize, seed: u64) -> Data {
        let mut rng = Rng::new(seed);
        let mut all = Vec::with_capacity(CLASSES * per_class);
        for label in 0..CLASSES {
            for i in 0..per_class {
                let r = (i as f32 + 0.5) / per_class as f32;
                let turn = std::f32::consts::TAU / CLASSES as f32;
                let theta = label as f32 * turn + 4.0 * r + 0.2 * rng.normal();
                all.push(Sample {
                    x: [r * theta.sin(), r * theta.cos()],
                    label,
                });
            }
        }
        rng.shuffle(&mut all);
        let test = all.split_off(all.len() * 4 / 5);
        Data { train: all, test }
    }
}

/// A multi-layer perceptron with tanh hidden layers and a softmax output; its parameters are
/// stored as `P`, one tensor per weight matrix and per bias: `[w0, b0, w1, b1, ...]`, where
/// `w_l` is `dims[l + 1] x dims[l]`, row-major.
struct Mlp<P> {
    dims: Vec<usize>,
    params: Vec<Vec<P>>,
}

/// Buffers reused across batches.
struct Workspace {
    /// The parameters widened to f32 (exactly): what the forward and backward passes read.
    weights: Vec<Vec<f32>>,
    /// f32 gradients, one per parameter tensor.
    grads: Vec<Vec<f32>>,
    /// The input and the output of every layer, for one sample.
    acts: Vec<Vec<f32>>,
    /// The loss gradient at the output of every layer, for one sample.
    deltas: Vec<Vec<f32>>,
}

/// Mean loss and accuracy over a data set.
#[derive(Clone, Copy, Debug)]
struct Eval {
    loss: f32,
    accuracy: f32,
}

impl<P: Element> Mlp<P> {
    /// Uniform Glorot initialization of the weights, zero biases.
    fn new(dims: &[usize], rng: &mut Rng) -> Self {
        let mut params = Vec::new();
        for l in 0..dims.len() - 1 {
            let (fan_in, fan_out) = (dims[l], dims[l + 1]);
            let limit = (6.0 / (fan_in + fan_out) as f32).sqrt();
            let w = (0..fan_in * fan_out)
                .map(|_| P::from_f32_rounded(limit * (2.0 * rng.uniform() - 1.0)))
                .collect();
            params.push(w);
            params.push(vec![P::from_f32_rounded(0.0); fan_out]);
        }
        Mlp {
            dims: dims.to_vec(),
            params,
        }
    }

    fn layers(&self) -> usize {
        self.dims.len() - 1
    }

    /// Widens the parameters to f32 for this batch's passes.
    fn load(&self, work: &mut Workspace) {
        for (dst, src) in work.weights.iter_mut().zip(&self.params) {
            for (d, s) in dst.iter_mut().zip(src) {
                *d = s.to_f32_exact();
            }
        }
    }

    /// Runs sample `x` forward into `work.acts` (the last layer's output is the logits).
    fn forward(&self, x: [f32; 2], work: &mut Workspace) {
        work.acts[0].copy_from_slice(&x);
        for l in 0..self.layers() {
            let (w, b) = (&work.weights[2 * l], &work.weights[2 * l + 1]);
            let (inputs, outputs) = work.acts.split_at_mut(l + 1);
            let (input, output) = (&inputs[l], &mut outputs[0]);
            let hidden = l + 1 < self.layers();
            for (j, out) in output.iter_mut().enumerate() {
                let row = &w[j * input.len()..(j + 1) * input.len()];
                let z = b[j] + row.iter().zip(input).map(|(w, x)| w * x).sum::<f32>();
                *out = if hidden { z.tanh() } else { z };
            }
        }
    }

    /// Softmax of the last layer's output, in place in `probs`; returns the cross-entropy loss.
    fn softmax(logits: &[f32], label: usize, probs: &mut [f32]) -> f32 {
        let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let mut sum = 0.0;
        for (p, &z) in probs.iter_mut().zip(logits) {
            *p = (z - max).exp();
            sum += *p;
        }
        for p in probs.iter_mut() {
            *p /= sum;
        }
        -probs[label].max(1e-30).ln()
    }

    /// The mean cross-entropy gradient over `batch` (of `n` samples) into `work.grads`.
    fn gradients<'a>(
        &self,
        batch: impl Iterator<Item = &'a Sample>,
        n: usize,
        work: &mut Workspace,
    ) {
        self.load(work);
        work.grads.iter_mut().for_each(|g| g.fill(0.0));
        let last = self.layers();
        let scale = 1.0 / n as f32;
        for sample in batch {
            self.forward(sample.x, work);
            // d loss / d logits = softmax - one_hot.
            Self::softmax(&work.acts[last], sample.label, &mut work.deltas[last]);
            work.deltas[last][sample.label] -= 1.0;
            work.deltas[last].iter_mut().for_each(|d| *d *= scale);
            for l in (0..last).rev() {
                let (input, delta) = (&work.acts[l], &work.deltas[l + 1]);
                let (gw, rest) = work.grads[2 * l..].split_at_mut(1);
                let (gw, gb) = (&mut gw[0], &mut rest[0]);
                for (j, &d) in delta.iter().enumerate() {
                    gb[j] += d;
                    let row = &mut gw[j * input.len()..(j + 1) * input.len()];
                    for (g, &x) in row.iter_mut().zip(input) {
                        *g += d * x;
                    }
                }
                if l > 0 {
                    // Back through the weights and the tanh of layer l - 1.
                    let w = &work.weights[2 * l];
                    let (deltas, upper) = work.deltas.split_at_mut(l + 1);
                    let (prev, delta) = (&mut deltas[l], &upper[0]);
                    prev.fill(0.0);
                    for (j, &d) in delta.iter().enumerate() {
                        let row = &w[j * input.len()..(j + 1) * input.len()];
                        for (p, &w) in prev.iter_mut().zip(row) {
                            *p += w * d;
                        }
                    }
                    for (p, &h) in prev.iter_mut().zip(input) {
                        *p *= 1.0 - h * h;
                    }
                }
            }
        }
    }

    /// Mean loss and accuracy over `samples`.
    fn evaluate(&self, samples: &[Sample], work: &mut Workspace) -> Eval {
        self.load(work);
        let last = self.layers();
        let (mut loss, mut correct) = (0.0f64, 0usize);
        for sample in samples {
            self.forward(sample.x, work);
            let logits = &work.acts[last];
            loss += f64::from(Self::softmax(logits, sample.label, &mut work.deltas[last]));
            let best = (0..logits.len()).fold(0, |b, k| if logits[k] > logits[b] { k } else { b });
            correct += usize::from(best == sample.label);
        }
        Eval {
            loss: (loss / samples.len() as f64) as f32,
            accuracy: correct as f32 / samples.len() as f32,
        }
    }
}

impl Workspace {
    fn new<P>(model: &Mlp<P>) -> Self {
        let zeros = |sizes: &mut dyn Iterator<Item = usize>| sizes.map(|n| vec![0.0; n]).collect();
        Workspace {
            weights: zeros(&mut model.params.iter().map(Vec::len)),
            grads: zeros(&mut model.params.iter().map(Vec::len)),
            acts: zeros(&mut model.dims.iter().copied()),
            deltas: zeros(&mut model.dims.iter().copied()),
        }
    }
}

/// xorshift64* with a Box-Muller normal: a small deterministic generator. (The repository's
/// tests share one in `ci/test-support`; this example keeps its own few lines, so that it
/// depends on nothing but lion-optim and can be copied out as it is.)
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        // Never zero; mix the seed so that nearby seeds give unrelated streams.
        Rng((seed ^ 0x9e37_79b9_7f4a_7c15).wrapping_mul(0xbf58_476d_1ce4_e5b9) | 1)
    }
    fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    /// Uniform in [0, 1).
    fn uniform(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 / (1u64 << 24) as f32
    }
    fn normal(&mut self) -> f32 {
        let (u1, u2) = (1.0 - self.uniform(), self.uniform());
        (-2.0 * u1.ln()).sqrt() * (std::f32::consts::TAU * u2).cos()
    }
    fn shuffle<T>(&mut self, v: &mut [T]) {
        for i in (1..v.len()).rev() {
            v.swap(i, (self.next_u64() % (i as u64 + 1)) as usize);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every configuration of `RUNS`, trained for half the epochs, must learn: the loss must
    /// fall to under half of its initial value (ln 3 = 1.10 at chance) and the accuracy must be far
    /// above chance (33%). Runs whose updates cannot be lost to rounding (f32 parameters, or
    /// stochastic rounding) must solve the task; round-to-nearest bf16 must stall (near 75%, see
    /// the module documentation), as the example's output says it does: that is the point of
    /// showing it.
    #[test]
    fn every_run_learns() {
        let config = Config {
            epochs: CONFIG.epochs / 2,
            log_every: 0,
            ..CONFIG
        };
        let data = Data::spirals(config.points_per_class, config.seed);
        let mut test_accuracy = Vec::new();
        for run in RUNS {
            let r = train_run(run, &config, &data).unwrap();
            println!("{r}");
            test_accuracy.push((run.name, run.momentum, r.test.accuracy));
            let name = run.name;
            let (start, end) = (r.initial.loss, r.train.loss);
            assert!(end < 0.5 * start, "{name}: loss {start} -> {end}");
            assert!(
                r.train.accuracy > 0.6,
                "{name}: train accuracy {}",
                r.train.accuracy
            );
            assert!(
                r.test.accuracy > 0.6,
                "{name}: test accuracy {}",
                r.test.accuracy
            );
            if run.stalls() {
                assert!(
                    r.test.accuracy < 0.9,
                    "{name}: test accuracy {}, but the output says this run stalls",
                    r.test.accuracy
                );
            } else {
                assert!(
                    r.test.accuracy > 0.95,
                    "{name}: test accuracy {}",
                    r.test.accuracy
                );
            }
        }
        // 8-bit momentum trains as well as f32 momentum (within 2 points).
        let f32_run = test_accuracy[0].2;
        for (name, momentum, accuracy) in test_accuracy {
            if momentum == MomentumDtype::Q8 {
                assert!(
                    accuracy > f32_run - 0.02,
                    "{name}: {accuracy} vs f32 {f32_run}"
                );
            }
        }
    }

    /// The data set is what the documentation says, and the same on every call.
    #[test]
    fn data_is_deterministic_and_balanced() {
        let (a, b) = (Data::spirals(100, 1), Data::spirals(100, 1));
        assert_eq!((a.train.len(), a.test.len()), (240, 60));
        assert!(
            a.train
                .iter()
                .zip(&b.train)
                .all(|(s, t)| s.x == t.x && s.label == t.label)
        );
        let per_class = |k| {
            a.train
                .iter()
                .chain(&a.test)
                .filter(|s| s.label == k)
                .count()
        };
        assert!((0..CLASSES).all(|k| per_class(k) == 100));
    }

    /// The hand-written backward pass agrees with finite differences of the loss.
    #[test]
    fn gradients_match_finite_differences() {
        let data = Data::spirals(4, 3);
        let batch = &data.train[..6];
        let mut model = Mlp::<f32>::new(&[2, 5, CLASSES], &mut Rng::new(9));
        let mut work = Workspace::new(&model);
        model.gradients(batch.iter(), batch.len(), &mut work);
        let grads = work.grads.clone();
        let loss = |m: &Mlp<f32>, w: &mut Workspace| f64::from(m.evaluate(batch, w).loss);
        for (t, tensor_grads) in grads.iter().enumerate() {
            for (i, &analytic) in tensor_grads.iter().enumerate() {
                let h = 1e-2;
                let x = model.params[t][i];
                model.params[t][i] = x + h;
                let up = loss(&model, &mut work);
                model.params[t][i] = x - h;
                let down = loss(&model, &mut work);
                model.params[t][i] = x;
                let numeric = (up - down) / (2.0 * f64::from(h));
                let analytic = f64::from(analytic);
                assert!(
                    (numeric - analytic).abs() < 2e-3,
                    "tensor {t}[{i}]: {analytic} vs {numeric}"
                );
            }
        }
    }
}
