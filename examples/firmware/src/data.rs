//! Three interleaved spirals, generated on the device from a fixed seed.
//!
//! The shared recipe (`lion_optim_test_support::spirals::fill`, the host examples' data set too)
//! into a fixed array, with `libm`'s `sinf`/`cosf`.

/// Points per spiral.
pub const POINTS: usize = 150;
/// All points: three spirals.
pub const ALL: usize = 3 * POINTS;
/// The training set: the first 80% after shuffling.
pub const TRAIN: usize = ALL * 4 / 5;
/// The test set: the rest.
pub const TEST: usize = ALL - TRAIN;

pub use lion_optim_test_support::spirals::Sample;

/// Fills `samples` with the three noisy spirals, shuffled: `samples[..TRAIN]` is the training
/// set, `samples[TRAIN..]` the test set. The same every time.
pub fn generate(samples: &mut [Sample; ALL]) {
    lion_optim_test_support::spirals::fill(samples, |t| (libm::sinf(t), libm::cosf(t)));
}
