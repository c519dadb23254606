//! Writes the bit-identity fixtures of the Node tests (`test/reference.test.mjs`): for every
//! (params, grads, momentum) dtype combination, every hyperparameter set and every option set of
//! the shared fixtures (`lion-optim-test-support`), inputs with special values and planted
//! cancellations, and what `lion_optim::reference::step_with` — the specification — makes of
//! them. The JS tests step the same inputs through the package's API (both wasm builds) and
//! compare bit for bit (a NaN matches any NaN).
//!
//! ```text
//! cargo run --release -p lion-optim-wasm --bin fixtures -- test/fixtures.bin
//! ```
//!
//! Format (little-endian): `LIONFIX1`, case count (u32); per case: params, grads, momentum dtype
//! tags (u8 each: 0 f32, 1 f16, 2 bf16), outcome (u8: 0 applied, 1 skipped), the group block of
//! the interface (96 bytes: hyperparameters and options, `lion_optim_wasm::encode_group`),
//! length n (u32), then the bytes of params, grads, momentum before the step and of params and
//! momentum after it.

use std::error::Error;

use lion_optim::{Element, Group, Hyperparams, Outcome, StepOptions, reference};
use lion_optim_wasm::encode_group;
use support::{Rng, SPECIAL_F32, all_combos, hyperparams, option_sets, plant_cancellations, value};

/// The lengths of the cases, in turn: empty, one element, shorter than a vector, longer than
/// several (with a tail).
const LENGTHS: [usize; 5] = [67, 0, 1, 7, 131];

/// One case of the combination `P, G, M`, appended to `out`.
fn case<P: Element, G: Element, M: Element>(
    out: &mut Vec<u8>,
    hp: &Hyperparams,
    options: &StepOptions,
    n: usize,
    seed: u64,
) {
    let mut rng = Rng::new(seed);
    let mut p: Vec<P> = (0..n).map(|_| value(&mut rng, &SPECIAL_F32)).collect();
    let g: Vec<G> = (0..n).map(|_| value(&mut rng, &SPECIAL_F32)).collect();
    let mut m: Vec<M> = (0..n).map(|_| value(&mut rng, &SPECIAL_F32)).collect();
    plant_cancellations(&g, &mut m, hp, &mut rng);
    let (p0, m0) = (p.clone(), m.clone());
    let outcome = reference::step_with(&mut p, &g, &mut m, hp, options)
        .expect("the fixtures' settings are valid");
    out.extend_from_slice(&[
        P::DTYPE as u8,
        G::DTYPE as u8,
        M::DTYPE as u8,
        u8::from(outcome == Outcome::SkippedNonFinite),
    ]);
    encode_group(&Group::new(*hp).with_options(*options), out);
    out.extend_from_slice(&(n as u32).to_le_bytes());
    for bytes in [
        bytes_of(&p0),
        bytes_of(&g),
        bytes_of(&m0),
        bytes_of(&p),
        bytes_of(&m),
    ] {
        out.extend_from_slice(&bytes);
    }
}

/// The little-endian bytes of a slice of elements.
fn bytes_of<T: Element>(v: &[T]) -> Vec<u8> {
    let mut out = Vec::with_capacity(size_of_val(v));
    for x in v {
        let bits = support::bits(*x).to_le_bytes();
        out.extend_from_slice(&bits[..size_of::<T>()]);
    }
    out
}

fn main() -> Result<(), Box<dyn Error>> {
    let path = std::env::args()
        .nth(1)
        .ok_or("usage: fixtures OUTPUT_FILE")?;
    type Case = fn(&mut Vec<u8>, &Hyperparams, &StepOptions, usize, u64);
    let combos = all_combos!(case, Case);
    // The option sets of every harness, and one that skips steps with non-finite gradients
    // (the special values put infinities and NaNs in most cases' gradients).
    let mut sets = option_sets().to_vec();
    sets.push(StepOptions {
        skip_non_finite: true,
        ..StepOptions::default()
    });
    let mut body = Vec::new();
    let mut count = 0u32;
    for (c, f) in combos.iter().enumerate() {
        for (h, hp) in hyperparams().iter().enumerate() {
            for (o, options) in sets.iter().enumerate() {
                let n = LENGTHS[(c + h + o) % LENGTHS.len()];
                let seed = ((c * 64 + h) * 8 + o) as u64;
                f(&mut body, hp, options, n, seed);
                count += 1;
            }
        }
    }
    let mut out = b"LIONFIX1".to_vec();
    out.extend_from_slice(&count.to_le_bytes());
    out.extend_from_slice(&body);
    std::fs::write(&path, &out)?;
    println!("{count} cases, {} bytes -> {path}", out.len());
    Ok(())
}
