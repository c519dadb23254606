//! The shared test harness: runs a path against `reference::step` over every length that
//! matters, misaligned sub-slices and special values, and compares results bit for bit.
#![allow(dead_code)]

use lion_optim::{
    Cautious, Element, Hyperparams, Path, Rounding, StepOptions, WeightDecay, reference,
};

/// Largest lane count any path uses (AVX-512 would be 16; unrolled loops up to 64).
pub const MAX_LANES: usize = 64;

/// Lengths: every length up to 3 chunks + 1 of the widest path, and +-1 around chunk multiples.
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

/// A small deterministic generator (xorshift64*), so failures are reproducible.
#[derive(Clone)]
pub struct Rng(pub u64);

impl Rng {
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }
    pub fn uniform(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 / (1u64 << 24) as f32
    }
}

/// f32 values where things go wrong: signed zeros, subnormals (of f32 and of f16), NaNs of
/// every kind, infinities, the largest values, the f16 overflow edge, exact rounding ties of
/// f16 and bf16.
pub fn special_f32() -> Vec<f32> {
    let mut v = vec![
        0.0,
        -0.0,
        1.0,
        -1.0,
        0.5,
        -2.0,
        f32::MIN_POSITIVE,
        -f32::MIN_POSITIVE,
        f32::from_bits(1),
        f32::from_bits(0x8000_0001),
        f32::from_bits(0x0040_0000),
        f32::MAX,
        f32::MIN,
        f32::INFINITY,
        f32::NEG_INFINITY,
        f32::NAN,
        -f32::NAN,
        f32::from_bits(0x7f80_0001), // signalling NaN
        f32::from_bits(0xffc0_1234),
        65504.0,            // f16 max
        65520.0,            // rounds to f16 infinity
        65519.996,          // rounds to f16 max
        6.103_515_6e-5,     // 2^-14, smallest normal f16
        5.960_464_5e-8,     // 2^-24, smallest subnormal f16
        2.980_232_2e-8,     // 2^-25: tie between 0 and the smallest f16 subnormal
        1.0 + 1.0 / 256.0,  // bf16 tie, rounds to even (1.0)
        1.0 + 3.0 / 256.0,  // bf16 tie, rounds to even (up)
        1.0 + 1.0 / 2048.0, // f16 tie
        3.389_531_4e38,     // bf16 overflow edge
        1e-4,
        -1e-4,
        1e30,
        -1e-30,
    ];
    v.extend(v.clone().iter().map(|x| -x));
    v
}

/// A value for a buffer of type `T`: a special value, a "normal" value in [-2, 2], or random
/// bits (which for 16-bit types reach every class: NaN, infinity, subnormal).
pub fn value<T: Element>(rng: &mut Rng, specials: &[f32]) -> T {
    match rng.below(4) {
        0 => T::from_f32_rounded(specials[rng.below(specials.len())]),
        1 | 2 => T::from_f32_rounded(rng.uniform() * 4.0 - 2.0),
        _ => {
            let bits = rng.next_u64().to_le_bytes();
            bytemuck::pod_read_unaligned(&bits[..size_of::<T>()])
        }
    }
}

/// `T` bits, as u64, for comparisons and messages.
pub fn bits<T: Element>(x: T) -> u64 {
    let mut b = [0u8; 8];
    b[..size_of::<T>()].copy_from_slice(bytemuck::bytes_of(&x));
    u64::from_le_bytes(b)
}

/// Bit-identical, or both NaN.
pub fn same<T: Element>(a: T, b: T) -> bool {
    bits(a) == bits(b) || (a.to_f32_exact().is_nan() && b.to_f32_exact().is_nan())
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

/// The hyperparameters the harness runs: defaults, weight decay, the edges of the domain, and
/// beta1 = 0.5 (where `c` cancels to exactly zero for m = -g).
pub fn hyperparams() -> Vec<Hyperparams> {
    let d = Hyperparams::default();
    if cfg!(miri) {
        return vec![Hyperparams {
            lr: 0.5,
            beta1: 0.5,
            beta2: 0.5,
            weight_decay: 0.25,
        }];
    }
    vec![
        d,
        Hyperparams {
            lr: 3e-4,
            weight_decay: 0.1,
            ..d
        },
        Hyperparams {
            lr: 0.5,
            beta1: 0.5,
            beta2: 0.5,
            weight_decay: 0.25,
        },
        Hyperparams {
            lr: 0.0,
            beta1: 0.0,
            beta2: 0.0,
            weight_decay: 0.0,
        },
        Hyperparams {
            lr: 1e30,
            beta1: 0.999_999,
            beta2: 0.999_999_9,
            weight_decay: 1e-31,
        },
        Hyperparams {
            lr: 1e-8,
            beta1: 0.95,
            beta2: 0.98,
            weight_decay: 1e4,
        },
    ]
}

/// Makes `m * beta1 + g * (1 - beta1)` exactly zero in f32 for some elements (when a nearby `m`
/// does it), so every path must see `c == 0` where the reference does.
pub fn plant_cancellations<G: Element, M: Element>(
    g: &[G],
    m: &mut [M],
    hp: &Hyperparams,
    rng: &mut Rng,
) {
    let (b1, omb1) = (hp.beta1 as f32, (1.0 - hp.beta1) as f32);
    if b1 == 0.0 {
        return;
    }
    for (gi, mi) in g.iter().zip(m.iter_mut()) {
        if rng.below(4) != 0 {
            continue;
        }
        let t = gi.to_f32_exact() * omb1;
        if !t.is_finite() {
            continue;
        }
        let guess = M::from_f32_rounded(-t / b1);
        // Search a few neighbours of the guess in M's own grid.
        let base = bits(guess) as i64;
        for d in [0i64, 1, -1, 2, -2, 3, -3] {
            let cand_bits = (base + d) as u64;
            let bytes = cand_bits.to_le_bytes();
            let cand: M = bytemuck::pod_read_unaligned(&bytes[..size_of::<M>()]);
            if cand.to_f32_exact() * b1 + t == 0.0 {
                *mi = cand;
                break;
            }
        }
    }
}

/// Option sets the harness runs: the plain step; the cautious variant with maximize and
/// gradient unscaling; stochastic rounding; and everything at once with the fully decoupled
/// decay and a cautious shard, at element indices that cross a multiple of 2^32 (where the
/// random stream's key changes).
pub fn option_sets() -> Vec<StepOptions> {
    let d = StepOptions::default();
    vec![
        d,
        StepOptions {
            maximize: true,
            grad_unscale: Some(1.0 / 1024.0),
            cautious: Cautious::Whole,
            ..d
        },
        StepOptions {
            rounding: Rounding::Stochastic { seed: 1 },
            step: 3,
            offset: 5,
            ..d
        },
        StepOptions {
            maximize: true,
            grad_unscale: Some(3.0),
            weight_decay: WeightDecay::FullyDecoupled { max_lr: 0.75 },
            rounding: Rounding::Stochastic { seed: u64::MAX },
            step: 1 << 40,
            offset: (1 << 32) - 37,
            cautious: Cautious::Shard {
                agreeing: 12_345,
                numel: 1 << 33,
            },
        },
    ]
}

/// Runs `path` and the reference on the same inputs (`len` elements at element offset `offset`
/// of padded buffers) and asserts identical outputs, padding included.
pub fn run_case<P: Element, G: Element, M: Element>(
    path: Path,
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
            "path {path}, P={:?} G={:?} M={:?}, len {len}, offset {offset}, {hp:?}, {opts:?}",
            P::DTYPE,
            G::DTYPE,
            M::DTYPE
        )
    };
    if opts.cautious != Cautious::Off {
        let got = path.cautious_count(&g[r.clone()], &m[r.clone()], hp, opts);
        let want = reference::cautious_count(&g[r.clone()], &m[r.clone()], hp, opts);
        assert_eq!(got.unwrap(), want.unwrap(), "cautious count, {}", ctx());
    }
    let (mut p_got, mut m_got) = (p.clone(), m.clone());
    path.step_with(
        &mut p_got[r.clone()],
        &g[r.clone()],
        &mut m_got[r.clone()],
        hp,
        opts,
    )
    .unwrap_or_else(|e| panic!("{path} failed: {e}"));
    let (mut p_want, mut m_want) = (p.clone(), m.clone());
    reference::step_with(
        &mut p_want[r.clone()],
        &g[r.clone()],
        &mut m_want[r],
        hp,
        opts,
    )
    .unwrap();
    assert_same(&p_got, &p_want, &|| format!("params, {}", ctx()));
    assert_same(&m_got, &m_want, &|| format!("momentum, {}", ctx()));
}

/// The whole harness for one dtype combination: every length with the plain step, and the
/// lengths up to three chunks of the widest path (plus one long one) with every option set.
pub fn check_combo<P: Element, G: Element, M: Element>(path: Path, seed: u64) {
    let specials = special_f32();
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
                    run_case::<P, G, M>(path, &hp, opts, len, offset, &mut rng, &specials);
                }
            }
        }
    }
}

/// The paths worth comparing with the reference (all available ones but the reference itself).
pub fn paths_under_test() -> Vec<Path> {
    available_paths()
        .into_iter()
        .filter(|p| *p != Path::Scalar)
        .collect()
}

/// The 27 instantiations `$f::<P, G, M>` for P, G, M each of f32, f16, bf16, as an array of
/// function pointers (all with the same signature).
macro_rules! all_combos {
    ($f:ident) => {
        [
            $f::<f32, f32, f32>,
            $f::<f32, f32, ::lion_optim::f16>,
            $f::<f32, f32, ::lion_optim::bf16>,
            $f::<f32, ::lion_optim::f16, f32>,
            $f::<f32, ::lion_optim::f16, ::lion_optim::f16>,
            $f::<f32, ::lion_optim::f16, ::lion_optim::bf16>,
            $f::<f32, ::lion_optim::bf16, f32>,
            $f::<f32, ::lion_optim::bf16, ::lion_optim::f16>,
            $f::<f32, ::lion_optim::bf16, ::lion_optim::bf16>,
            $f::<::lion_optim::f16, f32, f32>,
            $f::<::lion_optim::f16, f32, ::lion_optim::f16>,
            $f::<::lion_optim::f16, f32, ::lion_optim::bf16>,
            $f::<::lion_optim::f16, ::lion_optim::f16, f32>,
            $f::<::lion_optim::f16, ::lion_optim::f16, ::lion_optim::f16>,
            $f::<::lion_optim::f16, ::lion_optim::f16, ::lion_optim::bf16>,
            $f::<::lion_optim::f16, ::lion_optim::bf16, f32>,
            $f::<::lion_optim::f16, ::lion_optim::bf16, ::lion_optim::f16>,
            $f::<::lion_optim::f16, ::lion_optim::bf16, ::lion_optim::bf16>,
            $f::<::lion_optim::bf16, f32, f32>,
            $f::<::lion_optim::bf16, f32, ::lion_optim::f16>,
            $f::<::lion_optim::bf16, f32, ::lion_optim::bf16>,
            $f::<::lion_optim::bf16, ::lion_optim::f16, f32>,
            $f::<::lion_optim::bf16, ::lion_optim::f16, ::lion_optim::f16>,
            $f::<::lion_optim::bf16, ::lion_optim::f16, ::lion_optim::bf16>,
            $f::<::lion_optim::bf16, ::lion_optim::bf16, f32>,
            $f::<::lion_optim::bf16, ::lion_optim::bf16, ::lion_optim::f16>,
            $f::<::lion_optim::bf16, ::lion_optim::bf16, ::lion_optim::bf16>,
        ]
    };
}

/// Paths that can run here; the others are reported and skipped.
pub fn available_paths() -> Vec<Path> {
    Path::ALL
        .iter()
        .copied()
        .filter(|p| {
            let ok = p.is_available();
            if !ok {
                eprintln!("skipping path {p}: not available on this machine/build");
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
