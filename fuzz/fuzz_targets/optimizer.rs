//! `Lion` (run-time dtypes, options, per-group skipping of non-finite steps) against
//! `reference::step_with`, and its state files (twin states, damaged ones): see
//! tests/oracle/optimizer.rs.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| lion_optim_fuzz::optimizer::check(data));
