//! The shared test fixtures of lion-optim, in one place: a deterministic random generator
//! ([`Rng`]), the special values where floating point goes wrong ([`SPECIAL_F32`]), the
//! hyperparameter and option sets every harness runs ([`hyperparams`], [`option_sets`]), values
//! and bit-level comparisons of any element type ([`value`], [`bits`], [`same`]), planted exact
//! cancellations ([`plant_cancellations`]) and the 27 dtype combinations ([`all_combos!`]).
//!
//! `no_std` and allocation-free, so that the microcontroller firmware uses the very fixtures the
//! host tests use. Used by the tests, benchmarks, examples and fuzz targets of the crate and by
//! the integrations' tests; not published.
#![no_std]
#![deny(missing_docs)]

use lion_optim::{Cautious, Element, Hyperparams, Rounding, StepOptions, WeightDecay};

/// A small deterministic generator (xorshift64*), so that failures are reproducible.
///
/// ```
/// let (mut a, mut b) = (lion_optim_test_support::Rng::new(7), lion_optim_test_support::Rng::new(7));
/// assert_eq!(a.next_u64(), b.next_u64());
/// ```
#[derive(Clone, Debug)]
pub struct Rng(pub u64);

impl Rng {
    /// A generator from any seed (mixed, so that nearby seeds give unrelated streams; never
    /// the all-zero state).
    pub fn new(seed: u64) -> Self {
        Rng((seed ^ 0x9e37_79b9_7f4a_7c15).wrapping_mul(0xbf58_476d_1ce4_e5b9) | 1)
    }
    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    /// Uniform in `0..n` (`n > 0`).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }
    /// Uniform in `[0, 1)`, a multiple of 2^-24.
    pub fn uniform(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 / (1u64 << 24) as f32
    }
    /// Uniform in `[lo, hi)`.
    pub fn range(&mut self, lo: f32, hi: f32) -> f32 {
        lo + (hi - lo) * self.uniform()
    }
    /// Shuffles `v` in place (Fisher-Yates).
    pub fn shuffle<T>(&mut self, v: &mut [T]) {
        for i in (1..v.len()).rev() {
            v.swap(i, (self.next_u64() % (i as u64 + 1)) as usize);
        }
    }
}

/// The special f32 values where things go wrong, without their negations (see
/// [`SPECIAL_F32`]).
const SPECIAL_HALF: [f32; 33] = [
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
    f32::from_bits(0xffc0_0000), // -NaN
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

/// f32 values where things go wrong, and their negations: signed zeros, subnormals (of f32 and
/// of f16), NaNs of every kind (quiet, signalling, negative, with payloads), infinities, the
/// largest values, the f16 overflow edge, exact rounding ties of f16 and bf16.
pub const SPECIAL_F32: [f32; 66] = {
    let mut v = [0.0f32; 66];
    let mut i = 0;
    while i < 33 {
        v[i] = SPECIAL_HALF[i];
        v[33 + i] = -SPECIAL_HALF[i];
        i += 1;
    }
    v
};

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

/// `T`'s bits, as u64, for comparisons and messages.
pub fn bits<T: Element>(x: T) -> u64 {
    let mut b = [0u8; 8];
    b[..size_of::<T>()].copy_from_slice(bytemuck::bytes_of(&x));
    u64::from_le_bytes(b)
}

/// The element with these bits (the low `size_of::<T>()` bytes).
pub fn from_bits<T: Element>(bits: u64) -> T {
    bytemuck::pod_read_unaligned(&bits.to_le_bytes()[..size_of::<T>()])
}

/// Bit-identical, or both NaN.
pub fn same<T: Element>(a: T, b: T) -> bool {
    bits(a) == bits(b) || (a.to_f32_exact().is_nan() && b.to_f32_exact().is_nan())
}

/// Makes `m * beta1 + g * (1 - beta1)` exactly zero in f32 for about a quarter of the elements
/// (where a nearby `m` of `M`'s grid does it), so that every backend must see `c == 0` where
/// the reference does.
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
        let base = bits(M::from_f32_rounded(-t / b1)) as i64;
        for d in [0i64, 1, -1, 2, -2, 3, -3] {
            let cand: M = from_bits((base + d) as u64);
            if cand.to_f32_exact() * b1 + t == 0.0 {
                *mi = cand;
                break;
            }
        }
    }
}

/// The hyperparameter sets every harness runs: the defaults, weight decay, the edges of the
/// domain, and `beta1 = 0.5` (where `c` cancels to exactly zero for `m = -g`). Under Miri (which
/// interprets every instruction) one set.
pub fn hyperparams() -> &'static [Hyperparams] {
    const D: Hyperparams = Hyperparams {
        lr: 1e-4,
        beta1: 0.9,
        beta2: 0.99,
        weight_decay: 0.0,
    };
    const HALF: Hyperparams = Hyperparams {
        lr: 0.5,
        beta1: 0.5,
        beta2: 0.5,
        weight_decay: 0.25,
    };
    const ALL: [Hyperparams; 7] = [
        D,
        Hyperparams {
            lr: 3e-4,
            weight_decay: 0.1,
            ..D
        },
        HALF,
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
        Hyperparams {
            lr: 1e-2,
            beta1: 0.9,
            beta2: 0.99,
            weight_decay: 0.0,
        },
    ];
    if cfg!(miri) { &[HALF] } else { &ALL }
}

/// The option sets every harness runs: the plain step; the cautious variant with maximize and
/// gradient unscaling; stochastic rounding; and everything at once with the fully decoupled
/// decay and a cautious shard, at element indices that cross a multiple of 2^32 (where the
/// random stream's key changes).
pub fn option_sets() -> [StepOptions; 4] {
    let d = StepOptions::default();
    [
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
            skip_non_finite: false,
        },
    ]
}

/// The 27 instantiations `$f::<P, G, M>` for P, G, M each of `f32`, `f16`, `bf16` (in the order
/// of [`Dtype::ALL`](lion_optim::Dtype::ALL), P slowest), as an array of function pointers of
/// the type `$t`.
///
/// ```
/// use lion_optim::{Dtype, Element};
/// use lion_optim_test_support::all_combos;
///
/// fn dtypes<P: Element, G: Element, M: Element>() -> [Dtype; 3] {
///     [P::DTYPE, G::DTYPE, M::DTYPE]
/// }
/// let combos = all_combos!(dtypes, fn() -> [Dtype; 3]);
/// assert_eq!(combos.len(), 27);
/// assert_eq!(combos[5](), [Dtype::F32, Dtype::F16, Dtype::Bf16]);
/// for (i, combo) in combos.iter().enumerate() {
///     assert_eq!(combo(), [Dtype::ALL[i / 9], Dtype::ALL[i / 3 % 3], Dtype::ALL[i % 3]]);
/// }
/// ```
#[macro_export]
macro_rules! all_combos {
    ($f:ident, $t:ty) => {{
        let by_p_g_m: [[[$t; 3]; 3]; 3] = $crate::all_combos!(@next $f, $t;);
        ::core::array::from_fn::<$t, 27, _>(|i| by_p_g_m[i / 9][i / 3 % 3][i % 3])
    }};
    // P, G and M chosen: the instance.
    (@next $f:ident, $t:ty; $p:ty, $g:ty, $m:ty) => {
        $f::<$p, $g, $m> as $t
    };
    // The next of P, G, M: one entry for each dtype.
    (@next $f:ident, $t:ty; $($chosen:ty),*) => {
        [
            $crate::all_combos!(@next $f, $t; $($chosen,)* f32),
            $crate::all_combos!(@next $f, $t; $($chosen,)* ::lion_optim::f16),
            $crate::all_combos!(@next $f, $t; $($chosen,)* ::lion_optim::bf16),
        ]
    };
}

/// CRC-32C (Castagnoli, reflected; the checksum of lion-optim's state files) of `bytes`,
/// continuing from `crc` (0 to start): for tests that edit a state file on purpose and seal it
/// again, so that the loader's own checks (not the checksum) must refuse it.
///
/// ```
/// assert_eq!(lion_optim_test_support::crc32c(0, b"123456789"), 0xe306_9283);
/// ```
pub fn crc32c(crc: u32, bytes: &[u8]) -> u32 {
    let mut c = !crc;
    for &b in bytes {
        c ^= u32::from(b);
        for _ in 0..8 {
            c = if c & 1 != 0 {
                (c >> 1) ^ 0x82f6_3b78
            } else {
                c >> 1
            };
        }
    }
    !c
}

/// `sqrt(3)` rounded to f32 (what `3f32.sqrt()` gives; without `std`).
const SQRT_3_F32: f32 = 1.732_050_8;

impl Rng {
    /// Roughly normal: a sum of four [`uniform`](Self::uniform)s, centred and scaled to
    /// variance 1 (for initial weights and noise).
    ///
    /// ```
    /// let x = lion_optim_test_support::Rng(42).normal();
    /// assert!(x.abs() < 2.0 * 3f32.sqrt());
    /// ```
    pub fn normal(&mut self) -> f32 {
        ((0..4).map(|_| self.uniform()).sum::<f32>() - 2.0) * SQRT_3_F32
    }

    /// Uniform in `[-2, 2)` (a multiple of 2^-22), except that one time in eleven it is an exact
    /// zero, `+0.0` or `-0.0` (so that a step sees `c == 0`): values for gradients and
    /// parameters of the integrations' tests.
    ///
    /// ```
    /// let mut rng = lion_optim_test_support::Rng(3);
    /// assert!((0..100).map(|_| rng.value_with_zeros()).all(|x| (-2.0..2.0).contains(&x)));
    /// ```
    pub fn value_with_zeros(&mut self) -> f32 {
        let r = self.next_u64();
        if r.is_multiple_of(11) {
            return if r.is_multiple_of(2) { 0.0 } else { -0.0 };
        }
        ((r >> 40) as f32 / (1u64 << 24) as f32) * 4.0 - 2.0
    }
}

/// The parameter tensors of GPT-2 small (124,439,808 parameters in 148 tensors), in the order
/// of its state dict: `(layer, name, length)`, `layer` `None` for the embeddings and the final
/// layer norm (whose full name is `name`), else the full name is `h.{layer}.{name}`. The
/// whole-model benchmarks' shapes.
///
/// ```
/// let t: Vec<_> = lion_optim_test_support::gpt2_small().collect();
/// assert_eq!(t.len(), 148);
/// assert_eq!(t.iter().map(|t| t.2).sum::<usize>(), 124_439_808);
/// ```
pub fn gpt2_small() -> impl Iterator<Item = (Option<usize>, &'static str, usize)> {
    let (d, vocab, ctx, layers) = (768, 50257, 1024, 12);
    let layer = move |l: usize| {
        [
            ("ln_1.weight", d),
            ("ln_1.bias", d),
            ("attn.c_attn.weight", d * 3 * d),
            ("attn.c_attn.bias", 3 * d),
            ("attn.c_proj.weight", d * d),
            ("attn.c_proj.bias", d),
            ("ln_2.weight", d),
            ("ln_2.bias", d),
            ("mlp.c_fc.weight", d * 4 * d),
            ("mlp.c_fc.bias", 4 * d),
            ("mlp.c_proj.weight", 4 * d * d),
            ("mlp.c_proj.bias", d),
        ]
        .into_iter()
        .map(move |(name, len)| (Some(l), name, len))
    };
    [(None, "wte", vocab * d), (None, "wpe", ctx * d)]
        .into_iter()
        .chain((0..layers).flat_map(layer))
        .chain([(None, "ln_f.weight", d), (None, "ln_f.bias", d)])
}

#[cfg(feature = "std")]
extern crate std;

pub mod spirals;
