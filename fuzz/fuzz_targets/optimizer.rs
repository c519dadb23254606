//! `Lion` (run-time dtypes, options, the non-finite guard) against `reference::step_with`, and
//! its checkpoints against a parser of the documented format: see tests/oracle/optimizer.rs.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| lion_optim_fuzz::optimizer::check(data));
