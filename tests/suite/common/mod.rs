//! The suite's own harness: runs a backend against `reference::step_with` over every length
//! that matters, misaligned sub-slices and special values, and compares results bit for bit;
//! and finds the test data of the repository (`fixture`). The fixtures shared with the
//! benchmarks, examples, fuzz targets and firmware (the RNG, special values, hyperparameter and
//! option sets, the 27 combinations) are the `support` crate's (ci/test-support).
#![allow(dead_code)]

use lion_optim::{Backend, Cautious, Element, Hyperparams, StepOptions, reference};
use support::{Rng, SPECIAL_F32, bits, hyperparams, option_sets, plant_cancellations, same, value};

/// Largest lane count any backend uses (AVX-512 would be 16; unrolled loops up to 64).
pub const MAX_LANES: usize = 64;

/// Lengths: every length up to 3 chunks + 1 of the widest backend, and +-1 around chunk multiples.
/// Under Miri (which interprets every instruction) a reduced but still covering set is used.
pub fn lengths() -> Vec<usize> {
    if cfg!(miri) {
        return vec![0, 1, 7, 9, 16, 33];
    }
    let mut v: Vec<usize> = (0..=3 * MAX_LANES + 1).collect();
    for k in [256usize, 512, 1024, 4096, 16384] {
        v.extend([k - 1, k, k + 1]);
    }
    v
}

/// Asserts `got` and `want` are the same element for element (NaN matches NaN).
pub fn assert_same<T: Element>(got: &[T], want: &[T], ctx: &dyn Fn() -> String) {
    assert_eq!(got.len(), want.len());
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!(
            same(*g, *w),
            "{}: element {i} differs: got {g:?} ({:#x}), want {w:?} ({:#x})",
            ctx(),
            bits(*g),
            bits(*w)
        );
    }
}

/// Hyperparameters written as a test states them: the defaults (`lr = 1e-4`, betas 0.9 and
/// 0.99, no weight decay) with the fields it names set, `Hyperparams::default().lr(0.1)`. Each
/// method sets its field and nothing else: no validation (tests build invalid ones on purpose).
pub trait HyperparamsExt {
    /// With the learning rate `lr`.
    fn lr(self, lr: f64) -> Self;
    /// With `beta1`.
    fn beta1(self, beta1: f64) -> Self;
    /// With `beta2`.
    fn beta2(self, beta2: f64) -> Self;
    /// With the weight decay `weight_decay`.
    fn weight_decay(self, weight_decay: f64) -> Self;
}

impl HyperparamsExt for Hyperparams {
    fn lr(self, lr: f64) -> Self {
        Hyperparams { lr, ..self }
    }
    fn beta1(self, beta1: f64) -> Self {
        Hyperparams { beta1, ..self }
    }
    fn beta2(self, beta2: f64) -> Self {
        Hyperparams { beta2, ..self }
    }
    fn weight_decay(self, weight_decay: f64) -> Self {
        Hyperparams {
            weight_decay,
            ..self
        }
    }
}

/// Whether `a` and `b` are the same bits, element for element (and of one length).
pub fn same_bits<T: Element>(a: &[T], b: &[T]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| bits(*x) == bits(*y))
}

/// Runs `backend` and the reference on the same inputs (`len` elements at element offset
/// `offset` of padded buffers) and asserts identical outputs, padding included.
pub fn run_case<P: Element, G: Element, M: Element>(
    backend: Backend,
    hp: &Hyperparams,
    opts: &StepOptions,
    len: usize,
    offset: usize,
    rng: &mut Rng,
    specials: &[f32],
) {
    let total = len + offset + 3;
    let p: Vec<P> = (0..total).map(|_| value(rng, specials)).collect();
    let g: Vec<G> = (0..total).map(|_| value(rng, specials)).collect();
    let mut m: Vec<M> = (0..total).map(|_| value(rng, specials)).collect();
    plant_cancellations(&g, &mut m, hp, rng);
    let r = offset..offset + len;

    let ctx = || {
        format!(
            "backend {backend}, P={:?} G={:?} M={:?}, len {len}, offset {offset}, {hp:?}, {opts:?}",
            P::DTYPE,
            G::DTYPE,
            M::DTYPE
        )
    };
    if opts.cautious != Cautious::Off {
        let got = backend.cautious_count(&g[r.clone()], &m[r.clone()], hp, opts);
        let want = reference::cautious_count(&g[r.clone()], &m[r.clone()], hp, opts);
        assert_eq!(got.unwrap(), want.unwrap(), "cautious count, {}", ctx());
    }
    let (mut p_got, mut m_got) = (p.clone(), m.clone());
    let got = backend
        .step_with(
            &mut p_got[r.clone()],
            &g[r.clone()],
            &mut m_got[r.clone()],
            hp,
            opts,
        )
        .unwrap_or_else(|e| panic!("{backend} failed: {e}"));
    let (mut p_want, mut m_want) = (p.clone(), m.clone());
    let want = reference::step_with(
        &mut p_want[r.clone()],
        &g[r.clone()],
        &mut m_want[r],
        hp,
        opts,
    )
    .unwrap();
    assert_eq!(got, want, "outcome, {}", ctx());
    assert_same(&p_got, &p_want, &|| format!("params, {}", ctx()));
    assert_same(&m_got, &m_want, &|| format!("momentum, {}", ctx()));
}

/// The whole harness for one dtype combination: every length with the plain step, and the
/// lengths up to three chunks of the widest backend (plus one long one) with every option set.
pub fn check_combo<P: Element, G: Element, M: Element>(backend: Backend, seed: u64) {
    let mut rng = Rng(seed | 1);
    for (i, opts) in option_sets().iter().enumerate() {
        let lengths = lengths();
        let lengths = match i {
            0 => &lengths[..],
            // Under Miri, the options on one length with a full chunk and a tail.
            _ if cfg!(miri) => &[17][..],
            _ => &lengths[..lengths.len().min(3 * MAX_LANES + 5)],
        };
        for hp in hyperparams() {
            for &len in lengths {
                for offset in [0, 1, 3].into_iter().take(if cfg!(miri) { 2 } else { 3 }) {
                    run_case::<P, G, M>(backend, hp, opts, len, offset, &mut rng, &SPECIAL_F32);
                }
            }
        }
    }
}

/// The type of [`check_combo`]'s instances, for `support::all_combos!`.
pub type ComboCheck = fn(Backend, u64);

/// The backends worth comparing with the reference (all available ones but the scalar one,
/// which is the reference's loop).
pub fn backends_under_test() -> Vec<Backend> {
    available_backends()
        .into_iter()
        .filter(|b| *b != Backend::Scalar)
        .collect()
}

/// Backends that can run here; the others are reported and skipped.
pub fn available_backends() -> Vec<Backend> {
    Backend::ALL
        .iter()
        .copied()
        .filter(|b| {
            let ok = b.is_available();
            if !ok {
                eprintln!("skipping backend {b}: not available on this machine/build");
            }
            ok
        })
        .collect()
}

/// The path of a test's data file or directory, `rel` (relative to the crate root), or `None`
/// when the test must be skipped because the crate is the published package.
///
/// The package leaves test data out (`tests/data/`, `fuzz/`: see `include` in Cargo.toml), so
/// there a test that needs it says on stderr that it is skipped (written past the test
/// harness's output capture, so `cargo test` shows it) and passes; `ci/package.sh` checks that
/// exactly the expected tests skip. In the repository a missing fixture is a failure: the crate
/// is the package when cargo's `Cargo.toml.orig` is beside its Cargo.toml, and
/// `LION_REQUIRE_FIXTURES=1` makes a missing fixture fail even there.
pub fn fixture(rel: &str, test: &str) -> Option<std::path::PathBuf> {
    use std::io::Write;
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let path = root.join(rel);
    if path.exists() {
        return Some(path);
    }
    let packaged = root.join("Cargo.toml.orig").is_file();
    let required = std::env::var_os("LION_REQUIRE_FIXTURES").is_some_and(|v| v == "1");
    assert!(
        packaged && !required,
        "{test}: test data {} is missing (it is committed in the repository)",
        path.display()
    );
    let _ = writeln!(
        std::io::stderr(),
        "SKIPPED {test}: {rel} is not in the published package (run it in the repository)"
    );
    None
}
