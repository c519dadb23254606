//! Three interleaved 2-D spirals generated from a fixed seed: the data set of the training
//! examples. The recipe ([`fill`]) is `no_std` (the firmware example generates its data on the
//! device with it, with `libm`'s sine and cosine); with `std` (the feature of that name) come
//! what the framework integrations' training examples share (`integrations/candle` and
//! `integrations/burn`, `examples/train.rs`): the data set as vectors ([`dataset`]), the MLP's
//! initial weights ([`initial_weights`]), the run sizes ([`Settings`]), the cosine
//! learning-rate schedule ([`cosine_lr`]) and the report of a run ([`Report`], [`table`]).

#[cfg(feature = "std")]
use std::format;
#[cfg(feature = "std")]
use std::string::String;
#[cfg(feature = "std")]
use std::time::Duration;
#[cfg(feature = "std")]
use std::vec::Vec;

use crate::Rng;

/// One point of the spirals and its class (0, 1 or 2).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Sample {
    /// The point.
    pub point: [f32; 2],
    /// Which spiral it is on.
    pub class: u8,
}

/// Fills `samples` (three spirals of `samples.len() / 3` points each) with the noisy spirals,
/// shuffled; the first 80% are the training set, the rest the test set. The same every time
/// for the same `sin_cos` (`|t| (t.sin(), t.cos())` with std; `libm`'s `sinf`/`cosf` without).
///
/// ```
/// use lion_optim_test_support::spirals::{Sample, fill};
///
/// let mut samples = [Sample::default(); 30];
/// fill(&mut samples, |t| (libm_free_sin(t), libm_free_cos(t)));
/// assert_eq!(samples.iter().filter(|s| s.class == 2).count(), 10);
/// # fn libm_free_sin(t: f32) -> f32 { t - t * t * t / 6.0 }
/// # fn libm_free_cos(t: f32) -> f32 { 1.0 - t * t / 2.0 }
/// ```
pub fn fill(samples: &mut [Sample], sin_cos: impl Fn(f32) -> (f32, f32)) {
    let points = samples.len() / 3;
    let mut rng = Rng(0x5eed_1234);
    for class in 0..3u8 {
        for i in 0..points {
            let r = i as f32 / points as f32;
            let t =
                7.0 * r + f32::from(class) * 2.0 * core::f32::consts::PI / 3.0 + 0.2 * rng.normal();
            let (sin, cos) = sin_cos(t);
            samples[usize::from(class) * points + i] = Sample {
                point: [r * sin, r * cos],
                class,
            };
        }
    }
    rng.shuffle(&mut samples[..3 * points]);
}

/// Three spirals of `points` points each, with noise, shuffled and split 80/20:
/// `(training set, test set)`. The same every time.
#[cfg(feature = "std")]
pub fn dataset(points: usize) -> (Vec<Sample>, Vec<Sample>) {
    let mut samples = std::vec![Sample::default(); 3 * points];
    fill(&mut samples, |t| (t.sin(), t.cos()));
    let test = samples.split_off(samples.len() * 4 / 5);
    (samples, test)
}

/// The MLP's layers, `(fan_in, fan_out)`: 2 -> 64 -> 64 -> 3.
pub const LAYERS: [(usize, usize); 3] = [(2, 64), (64, 64), (64, 3)];

/// The mini-batch size.
pub const BATCH: usize = 64;

/// The initial weights of each of [`LAYERS`]: `fan_in * fan_out` values, normal with variance
/// `1 / fan_in`, the same every time (the biases start at zero).
#[cfg(feature = "std")]
pub fn initial_weights() -> Vec<Vec<f32>> {
    let mut rng = Rng(0xfeed_beef);
    LAYERS
        .iter()
        .map(|&(fan_in, fan_out)| {
            let scale = (1.0 / fan_in as f32).sqrt();
            (0..fan_in * fan_out)
                .map(|_| scale * rng.normal())
                .collect()
        })
        .collect()
}

/// The size of a run.
#[derive(Clone, Copy, Debug)]
#[cfg(feature = "std")]
pub struct Settings {
    /// Points per class.
    pub points: usize,
    /// Epochs (passes over the training set).
    pub epochs: usize,
}

#[cfg(feature = "std")]
impl Settings {
    /// The example's run.
    pub const FULL: Settings = Settings {
        points: 1000,
        epochs: 60,
    };
    /// The tests' run.
    pub const QUICK: Settings = Settings {
        points: 300,
        epochs: 40,
    };

    /// The number of steps of a run over `n` training samples.
    pub fn total_steps(&self, n: usize) -> usize {
        self.epochs * n.div_ceil(BATCH)
    }

    /// Whether the table has a row after `epoch` (1-based): epochs 1, 2, 5, every tenth and
    /// the last.
    pub fn row_after(&self, epoch: usize) -> bool {
        [1, 2, 5].contains(&epoch) || epoch.is_multiple_of(10) || epoch == self.epochs
    }
}

/// The learning rate of step `step` (0-based) of `total`: a cosine from `base_lr` down to 5%
/// of it.
#[cfg(feature = "std")]
pub fn cosine_lr(base_lr: f64, step: usize, total: usize) -> f64 {
    let progress = step as f64 / total as f64;
    base_lr * (0.05 + 0.95 * 0.5 * (1.0 + (core::f64::consts::PI * progress).cos()))
}

/// One optimizer's run.
#[derive(Clone, Debug)]
#[cfg(feature = "std")]
pub struct Report {
    /// The optimizer's name.
    pub name: &'static str,
    /// `(epoch, mean training loss of the epoch, test accuracy after it)`.
    pub rows: Vec<(usize, f32, f32)>,
    /// The training loss before any step.
    pub initial_loss: f32,
    /// The test accuracy after the last epoch.
    pub test_accuracy: f32,
    /// Time spent in the optimizer's step.
    pub step_time: Duration,
    /// Number of steps.
    pub steps: usize,
    /// The final parameters, to compare runs (empty if the example does not compare them).
    pub params: Vec<Vec<f32>>,
}

#[cfg(feature = "std")]
impl Report {
    /// Panics unless the run learned: the last epoch's loss under half the initial one, and a
    /// test accuracy over 80%.
    pub fn assert_learned(&self) {
        let last = self.rows.last().expect("rows");
        assert!(
            last.1 < 0.5 * self.initial_loss,
            "{}: loss {} -> {}",
            self.name,
            self.initial_loss,
            last.1
        );
        assert!(
            self.test_accuracy > 0.8,
            "{}: test accuracy {}",
            self.name,
            self.test_accuracy
        );
    }
}

/// The reports of a run side by side (markdown): loss and test accuracy per epoch, then the
/// time in the optimizer's step (`step` names it in the header).
#[cfg(feature = "std")]
pub fn table(reports: &[Report], step: &str) -> String {
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
    out +=
        &format!("\n\n| optimizer | steps | time in `{step}` | per step |\n|---|---:|---:|---:|");
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

#[cfg(test)]
#[cfg(feature = "std")]
mod tests {
    use super::*;

    /// `Rng::normal`'s constant is `sqrt(3)` rounded to f32, as `3f32.sqrt()` computes it.
    #[test]
    fn the_normal_scale_is_sqrt_3() {
        assert_eq!(crate::SQRT_3_F32.to_bits(), 3f32.sqrt().to_bits());
    }

    #[test]
    fn the_dataset_is_fixed_and_split_80_20() {
        let (train, test) = dataset(10);
        assert_eq!((train.len(), test.len()), (24, 6));
        assert_eq!(dataset(10), (train, test));
        let weights = initial_weights();
        assert_eq!(
            weights.iter().map(Vec::len).collect::<Vec<_>>(),
            [128, 4096, 192]
        );
    }
}
