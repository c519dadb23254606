//! The step with 8-bit momentum (every available backend's `step_many` and `Update::apply`)
//! against `reference::step_q8_with`, on arbitrary hyperparameters, options, dtypes, lengths,
//! offsets, values, codes and block scales: see tests/oracle/q8.rs.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| lion_optim_fuzz::q8::check(data));
