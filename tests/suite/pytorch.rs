//! Against the real thing: the reference PyTorch Lion (`lion_pytorch.py`, run by
//! `scripts/pytorch_golden.py` with torch on f32 CPU tensors) recorded in `tests/data`.
//!
//! One step's parameters must be bit-identical (NaN matching NaN). The momentum may differ by
//! the one rounding that PyTorch's `exp_avg.mul_(b2).add_(grad, alpha=1 - b2)` saves when its CPU
//! kernel fuses the multiply-add; we round the product and the sum separately on every ISA.

use crate::common::fixture;
use lion_optim::{Backend, Hyperparams, StepOptions, reference};
use support::same;

struct Case {
    hp: Hyperparams,
    p: Vec<f32>,
    g: Vec<f32>,
    m: Vec<f32>,
    p_after: Vec<f32>,
    m_after: Vec<f32>,
}

/// The cases of `tests/data/pytorch_lion.bin`, or `None` in the published package (which
/// leaves the 123 KB file out: see `common::fixture`).
fn cases() -> Option<(String, Vec<Case>)> {
    let file = fixture(
        "tests/data/pytorch_lion.bin",
        "pytorch::one_step_matches_the_reference_pytorch_code",
    )?;
    let bytes = &std::fs::read(file).unwrap()[..];
    assert_eq!(&bytes[..8], b"LIONPT01");
    let mut at = 8;
    let mut take = |n: usize| {
        let s = &bytes[at..at + n];
        at += n;
        s
    };
    let u32_ = |b: &[u8]| u32::from_le_bytes(b.try_into().unwrap()) as usize;
    let count = u32_(take(4));
    let vlen = u32_(take(4));
    let version = String::from_utf8(take(vlen).to_vec()).unwrap();
    let mut out = Vec::new();
    for _ in 0..count {
        let mut f = [0.0f64; 4];
        for x in &mut f {
            *x = f64::from_le_bytes(take(8).try_into().unwrap());
        }
        let n = u32_(take(4));
        let mut arr = || -> Vec<f32> {
            take(4 * n)
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
                .collect()
        };
        let (p, g, m, p_after, m_after) = (arr(), arr(), arr(), arr(), arr());
        let hp = Hyperparams {
            lr: f[0],
            beta1: f[1],
            beta2: f[2],
            weight_decay: f[3],
        };
        out.push(Case {
            hp,
            p,
            g,
            m,
            p_after,
            m_after,
        });
    }
    assert_eq!(at, bytes.len());
    Some((version, out))
}

#[test]
fn one_step_matches_the_reference_pytorch_code() {
    let Some((version, cases)) = cases() else {
        return;
    };
    let (mut exact_momentum, mut one_rounding, mut total) = (0, 0, 0);
    for (i, c) in cases.iter().enumerate() {
        let (mut p, mut m) = (c.p.clone(), c.m.clone());
        reference::step(&mut p, &c.g, &mut m, &c.hp).unwrap();
        for j in 0..p.len() {
            assert!(
                same(p[j], c.p_after[j]),
                "torch {version}, case {i} {:?}, element {j}: p {:e} g {:e} m {:e}: ours {:e}, torch {:e}",
                c.hp,
                c.p[j],
                c.g[j],
                c.m[j],
                p[j],
                c.p_after[j]
            );
            total += 1;
            if same(m[j], c.m_after[j]) {
                exact_momentum += 1;
                continue;
            }
            // Fused: torch computes fma(1 - b2, g, round(m * b2)), one rounding instead of two.
            // The difference is at most half an ulp of the rounded product g * (1 - b2).
            let product = c.g[j] * (1.0 - c.hp.beta2) as f32;
            let ulp = f32::from_bits(product.abs().to_bits() + 1) - product.abs();
            let diff = (f64::from(m[j]) - f64::from(c.m_after[j])).abs();
            assert!(
                diff <= f64::from(ulp) / 2.0
                    + f64::from(f32::from_bits(m[j].abs().to_bits() + 1) - m[j].abs()),
                "torch {version}, case {i}, element {j}: momentum {:e} vs torch {:e}",
                m[j],
                c.m_after[j]
            );
            one_rounding += 1;
        }
        // Every backend gives the reference's bits, so every backend matches PyTorch the same
        // way.
        for backend in Backend::ALL.iter().filter(|b| b.is_available()) {
            let (mut pp, mut mm) = (c.p.clone(), c.m.clone());
            let d = StepOptions::default();
            backend
                .step_with(&mut pp, &c.g, &mut mm, &c.hp, &d)
                .unwrap();
            assert!(pp.iter().zip(&p).all(|(a, b)| same(*a, *b)), "{backend}");
            assert!(mm.iter().zip(&m).all(|(a, b)| same(*a, *b)), "{backend}");
        }
    }
    eprintln!(
        "torch {version}: {total} elements, parameters all bit-identical; momentum identical in \
         {exact_momentum}, one rounding apart in {one_rounding}"
    );
    assert!(exact_momentum > total / 2);
}
