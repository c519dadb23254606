//! The oracle of the `q8` fuzz target (fuzz/fuzz_targets/q8.rs), also replayed by
//! tests/suite/fuzz_regressions.rs: the step with 8-bit momentum.
//!
//! Arbitrary bytes become hyperparameters and step options (as the `step` oracle makes them;
//! offsets mostly whole blocks, sometimes not), one of the 9 parameter and gradient dtype
//! combinations, lengths (equal or not; several blocks, the last one partial or not), a number
//! of block scales (right or not), parameter and gradient values (special values, raw bit
//! patterns), arbitrary codes and arbitrary scales (zeros, subnormals, negatives, infinities,
//! NaNs: what a damaged checkpoint can hold). Then every available backend's `step_many` (one
//! update) and `Update::apply` give `reference::step_q8_with`'s result: on `Ok` the same outcome
//! and every parameter, code and scale bit for bit (a NaN matching a NaN), the padding around the
//! slices untouched; on `Err` an error and every buffer byte untouched.
//!
//! A failed check panics, with a message that says what differed.

use lion_optim::{
    Backend, Element, Error, Group, Hyperparams, Outcome, Q8_BLOCK, Q8Mut, Update, bf16, f16,
    reference,
};

use super::step::{Bytes, assert_same, bytes_equal, misalignments, options, padded, param, value};

/// Decodes `data` and checks every backend against the reference (see the module docs).
pub fn check(data: &[u8]) {
    let mut r = Bytes(data);
    let which = r.u8() % 9;
    macro_rules! by_grad {
        ($p:ty) => {
            match which % 3 {
                0 => combo::<$p, f32>,
                1 => combo::<$p, f16>,
                _ => combo::<$p, bf16>,
            }
        };
    }
    // One generic instantiation per combination, picked at run time.
    let run: fn(&mut Bytes) = match which / 3 {
        0 => by_grad!(f32),
        1 => by_grad!(f16),
        _ => by_grad!(bf16),
    };
    run(&mut r);
}

/// A block scale: ordinary ones mostly, and every kind of value a damaged state can hold.
fn scale(r: &mut Bytes) -> f32 {
    match r.u8() % 4 {
        0 => value::<f32>(r),
        1 => f32::from_bits(r.u32()),
        _ => f32::from(r.u8()) / 64.0,
    }
}

fn combo<P: Element, G: Element>(r: &mut Bytes) {
    let mut hp = Hyperparams {
        lr: param(r),
        beta1: param(r),
        beta2: param(r),
        weight_decay: param(r),
    };
    let mut o = options(r);
    let shape = r.u8();
    let ordinary = r.u8();
    if ordinary & 3 != 0 {
        // Ordinary hyperparameters and options most of the time, so that most inputs step.
        hp = Hyperparams {
            lr: [1e-4, 1e-3, 3e-2, 0.5][usize::from(ordinary >> 2) % 4],
            beta1: 0.9,
            beta2: 0.99,
            weight_decay: f64::from(ordinary >> 4) / 16.0,
        };
        o.weight_decay = lion_optim::WeightDecay::Paper;
        o.grad_unscale = o.grad_unscale.map(|_| 0.5);
        if let lion_optim::Cautious::Shard { .. } = o.cautious {
            o.cautious = lion_optim::Cautious::Whole;
        }
    }
    if shape & 0x03 != 0 {
        // Whole blocks (the valid offsets), most of the time.
        o.offset = o.offset / Q8_BLOCK as u64 * Q8_BLOCK as u64;
    }
    o.skip_non_finite = shape & 0x04 != 0;
    // Several blocks reach the vector loops' block bodies; Miri gets a block or two.
    let long = if cfg!(miri) { 300 } else { 1100 };
    let len = usize::from(r.u16()) % long;
    let mut lens = [len; 3];
    if shape & 0x70 == 0x70 {
        // Mismatched lengths, now and then.
        let which = 1 + usize::from(shape & 0x08 != 0);
        lens[which] = (len + usize::from(r.u8() % 5)).saturating_sub(2);
    }
    let mut blocks = lens[2].div_ceil(Q8_BLOCK);
    if shape & 0x80 != 0 && r.u8() & 3 == 0 {
        blocks = (blocks + usize::from(r.u8() % 3)).saturating_sub(1);
    }
    let starts: [usize; 4] = misalignments(r);
    let p0: Vec<P> = padded(r, starts[0] + lens[0], value);
    let g: Vec<G> = padded(r, starts[1] + lens[1], value);
    let c0: Vec<u8> = padded(r, starts[2] + lens[2], Bytes::u8);
    let a0: Vec<f32> = padded(r, starts[3] + blocks, scale);
    let rp = starts[0]..starts[0] + lens[0];
    let rg = starts[1]..starts[1] + lens[1];
    let rc = starts[2]..starts[2] + lens[2];
    let ra = starts[3]..starts[3] + blocks;
    let gs = &g[rg];
    let ctx = || {
        format!(
            "P={:?} G={:?} lens {lens:?} blocks {blocks} starts {starts:?} {hp:?} {o:?}",
            P::DTYPE,
            G::DTYPE
        )
    };

    let (mut p_want, mut c_want, mut a_want) = (p0.clone(), c0.clone(), a0.clone());
    let want: Result<Outcome, Error> = Q8Mut::new(&mut c_want[rc.clone()], &mut a_want[ra.clone()])
        .and_then(|m| reference::step_q8_with(&mut p_want[rp.clone()], gs, m, &hp, &o));
    let untouched = |p: &[P], c: &[u8], a: &[f32], who: &str| {
        let nothing_written = bytes_equal(p, &p0) && c == c0 && bytes_equal(a, &a0);
        assert!(nothing_written, "{who} wrote: {}", ctx());
    };
    let same_buffers = |p: &[P], c: &[u8], a: &[f32], who: &str| {
        assert_same(p, &p_want, who, "param", &ctx);
        for (i, (x, y)) in c.iter().zip(&c_want).enumerate() {
            assert_eq!(x, y, "{who}: code {i}: {}", ctx());
        }
        assert_same(a, &a_want, who, "absmax", &ctx);
    };
    match &want {
        Err(_) => untouched(
            &p_want,
            &c_want,
            &a_want,
            "a refused reference::step_q8_with",
        ),
        Ok(Outcome::SkippedNonFinite) => untouched(
            &p_want,
            &c_want,
            &a_want,
            "a skipped reference::step_q8_with",
        ),
        Ok(_) => {}
    }

    let group = Group { hp, options: o };
    let mut sides: Vec<(String, Backend)> = Backend::ALL
        .iter()
        .filter(|b| b.is_available())
        .map(|&b| (format!("{b}: step_many"), b))
        .collect();
    sides.push(("Update::apply".into(), Backend::detect()));
    for (k, (who, backend)) in sides.iter().enumerate() {
        let (mut p, mut c, mut a) = (p0.clone(), c0.clone(), a0.clone());
        let got = Q8Mut::new(&mut c[rc.clone()], &mut a[ra.clone()]).and_then(|m| {
            let update = Update::from_slices((&mut p[rp.clone()]).into(), gs.into(), m)
                .step(o.step)
                .offset(o.offset)
                .stream(0);
            if k + 1 == sides.len() {
                update.apply(&group)
            } else {
                backend.step_many(&mut [update], core::slice::from_ref(&group))
            }
        });
        match (&want, got) {
            (Ok(w), Ok(g)) if *w != g => panic!("{who}: {g:?}, the reference {w:?}: {}", ctx()),
            (Ok(Outcome::SkippedNonFinite), Ok(_)) => untouched(&p, &c, &a, who),
            (Ok(_), Ok(_)) => same_buffers(&p, &c, &a, who),
            (Err(_), Err(_)) => untouched(&p, &c, &a, who),
            (w, g) => panic!("{who} gave {g:?}, the reference {w:?}: {}", ctx()),
        }
    }
}
