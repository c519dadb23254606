//! Every available path, `Path::step`, `step_guarded`, `all_finite` and `lion_optim::step_with`
//! against `reference::step_with`, on arbitrary hyperparameters, options, dtypes, lengths,
//! offsets and values: see tests/oracle/step.rs.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| lion_optim_fuzz::step::check(data));
