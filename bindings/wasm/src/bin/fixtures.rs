//! Writes the bit-identity fixtures of the Node tests (`test/reference.test.mjs`): for every
//! (params, grads, momentum) dtype combination, every hyperparameter set and every option set of
//! the shared fixtures (`lion-optim-test-support`), inputs with special values and planted
//! cancellations, and what `lion_optim::reference::step_with` — the specification — makes of
//! them. The JS tests step the same inputs through the package's API (both wasm builds) and
//! compare bit for bit (a NaN matches any NaN).
//!
//! Beside it, `fixtures-q8.bin`: the optimizer with 8-bit momentum (`test/api.test.mjs`), for
//! every (params, grads) dtype pair and a few option sets, three steps of `lion_optim::Lion`
//! (whose 8-bit step the crate's tests prove equal to `reference::step_q8_with`) from zero
//! momentum.
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
//!
//! `fixtures-q8.bin`: `LIONQ8F1`, case count (u32); per case: params and grads dtype tags (u8
//! each), step count (u8), a zero byte, the group block (96 bytes), length n (u32), the params'
//! bytes, each step's grads' bytes, then after the last step the params', the codes' (n) and the
//! block scales' (f32, `ceil(n / 256)`) bytes.

use std::error::Error;

use lion_optim::{
    Cautious, Element, Group, GroupId, Hyperparams, Lion, MomentumDtype, MomentumRef, Outcome,
    Rounding, StepOptions, Tensor, TensorSpec, bf16, f16, reference,
};
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

/// The steps of each 8-bit case.
const Q8_STEPS: usize = 3;

/// One 8-bit case of the pair `P, G`: `Q8_STEPS` steps of an optimizer with one tensor of 8-bit
/// momentum, appended to `out`.
fn case_q8<P: Element, G: Element>(
    out: &mut Vec<u8>,
    group: &Group,
    n: usize,
    seed: u64,
) -> Result<(), Box<dyn Error>> {
    let mut rng = Rng::new(seed);
    // Ordinary values (no NaN or infinity: those make a block's scale NaN, covered by the
    // crate's own tests), some of them zero.
    let ordinary = [0.0, -0.0, 1.0, -0.5, 3.0e-3, 2.5e-8];
    let mut p: Vec<P> = (0..n).map(|_| value(&mut rng, &ordinary)).collect();
    out.extend_from_slice(&[P::DTYPE as u8, G::DTYPE as u8, Q8_STEPS as u8, 0]);
    encode_group(group, out);
    out.extend_from_slice(&(n as u32).to_le_bytes());
    out.extend_from_slice(&bytes_of(&p));
    let mut opt = Lion::new(group.hp)?;
    opt.set_group(GroupId::DEFAULT, *group)?;
    let id = opt.add(TensorSpec::new(n).momentum(MomentumDtype::Q8))?;
    for _ in 0..Q8_STEPS {
        let g: Vec<G> = (0..n).map(|_| value(&mut rng, &ordinary)).collect();
        out.extend_from_slice(&bytes_of(&g));
        opt.step(&mut [Tensor::new(&mut p, &g).of(id)])?;
    }
    out.extend_from_slice(&bytes_of(&p));
    let MomentumRef::Q8(q) = opt.momentum(id)? else {
        return Err("not 8-bit momentum".into());
    };
    out.extend_from_slice(q.codes());
    out.extend_from_slice(&bytes_of(q.absmax()));
    Ok(())
}

/// The 8-bit fixtures (see the module docs), into `out`; returns the case count.
fn q8_cases(out: &mut Vec<u8>) -> Result<u32, Box<dyn Error>> {
    type Case = fn(&mut Vec<u8>, &Group, usize, u64) -> Result<(), Box<dyn Error>>;
    let pairs: [Case; 9] = [
        case_q8::<f32, f32>,
        case_q8::<f32, f16>,
        case_q8::<f32, bf16>,
        case_q8::<f16, f32>,
        case_q8::<f16, f16>,
        case_q8::<f16, bf16>,
        case_q8::<bf16, f32>,
        case_q8::<bf16, f16>,
        case_q8::<bf16, bf16>,
    ];
    let hp = Hyperparams {
        lr: 3e-3,
        weight_decay: 0.1,
        ..Hyperparams::default()
    };
    let groups = [
        Group::new(hp),
        Group::new(hp).with_options(StepOptions {
            rounding: Rounding::Stochastic { seed: 77 },
            ..StepOptions::default()
        }),
        Group::new(hp).with_options(StepOptions {
            cautious: Cautious::Whole,
            maximize: true,
            grad_unscale: Some(0.5),
            ..StepOptions::default()
        }),
    ];
    let mut count = 0u32;
    for (c, f) in pairs.iter().enumerate() {
        for (k, group) in groups.iter().enumerate() {
            let n = [0, 1, 300, 700, 256][(c + k) % 5];
            f(out, group, n, (c * 8 + k) as u64)?;
            count += 1;
        }
    }
    Ok(count)
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

    let mut body = Vec::new();
    let count = q8_cases(&mut body)?;
    let mut out = b"LIONQ8F1".to_vec();
    out.extend_from_slice(&count.to_le_bytes());
    out.extend_from_slice(&body);
    let q8 = std::path::Path::new(&path).with_file_name("fixtures-q8.bin");
    std::fs::write(&q8, &out)?;
    println!(
        "{count} 8-bit cases, {} bytes -> {}",
        out.len(),
        q8.display()
    );
    Ok(())
}
