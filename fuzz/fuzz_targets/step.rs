//! Every available backend (`step_with`, with and without `skip_non_finite`, `step_many`,
//! `cautious_count`, `all_finite`), the run-time-typed checks and `lion_optim::step_with`
//! against `reference::step_with`, on arbitrary hyperparameters, options, dtypes, lengths,
//! offsets and values: see tests/oracle/step.rs.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| lion_optim_fuzz::step::check(data));
