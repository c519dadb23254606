// Checks that run on an emulated Cortex-M4F (qemu-system-arm -M mps2-an386), linked into the
// firmware of ci/mcu by ci/thumbv7em.sh, with lion-optim built with --no-default-features.
// Convention: `pub fn run()`; a failed check panics (panic-semihosting prints the message and
// exits qemu with status 1, which fails CI).
//
//  1. The hand-computed f32 / bf16 values of nostd_use.rs (the same file the no_std probe runs).
//  2. All 27 (params, grads, momentum) dtype combinations: every available path and
//     `lion_optim::step_with` against `reference::step_with`, bit for bit (a NaN matching a
//     NaN), over lengths around the 8- and 16-lane chunk sizes at misaligned offsets, with
//     special values (+-0, f32 and f16 subnormals, NaN, +-inf, f16 / bf16 rounding ties and
//     overflow edges), planted exact cancellations (c == 0), raw bit patterns, several
//     hyperparameter sets and every kind of option (maximize, gradient unscaling, fully
//     decoupled decay, stochastic rounding across an index multiple of 2^32). The elements
//     around the slice must stay untouched.
//  3. `all_finite` of every path against the scalar rule.
//
// Here `wide` has no SIMD (plain arrays), f32 arithmetic runs on the FPv4-SP unit and the f64
// hyperparameter arithmetic in software: all of it must give the reference's bits.

use cortex_m_semihosting::hprintln;
use lion_optim::{
    bf16, f16, reference, Cautious, Element, Hyperparams, Path, Rounding, StepOptions, WeightDecay,
};

#[path = "nostd_use.rs"]
mod known;

/// Buffer size: the longest length, the largest offset and padding after the slice.
const MAX: usize = 72;
const LENGTHS: [usize; 18] = [
    0, 1, 2, 7, 8, 9, 15, 16, 17, 23, 24, 25, 31, 32, 33, 63, 64, 65,
];
const OFFSETS: [usize; 3] = [0, 1, 3];

/// `$f::<P, G, M>` for P, G, M each of f32, f16, bf16.
macro_rules! combos {
    ($f:ident) => {
        combos!(@p $f, f32, f16, bf16)
    };
    (@p $f:ident, $($p:ty),*) => {
        [$(combos!(@g $f, $p, f32), combos!(@g $f, $p, f16), combos!(@g $f, $p, bf16)),*]
            .as_flattened()
    };
    (@g $f:ident, $p:ty, $g:ty) => {
        [$f::<$p, $g, f32> as fn(u64, &mut Totals), $f::<$p, $g, f16>, $f::<$p, $g, bf16>]
    };
}

pub fn run() {
    hprintln!(
        "mcu: detected path {}; portable path runs {}",
        Path::detect(),
        Path::Portable.instructions()
    );
    assert!(Path::detect().is_available() && Path::Portable.is_available());

    known::run();
    hprintln!("mcu: hand-computed f32 / bf16 values and bad-input refusals: ok");

    let mut t = Totals::default();
    for (i, check) in combos!(combo).iter().enumerate() {
        check(0x5eed + i as u64, &mut t);
    }
    assert!(t.combos == 27);
    hprintln!(
        "mcu: {} dtype combinations x {} hyperparameter sets x {} option sets: {} calls on {} \
         elements, all bit-identical to reference::step_with; all_finite agreed {} times",
        t.combos,
        hyperparams().len(),
        option_sets().len(),
        t.calls,
        t.elements,
        t.finite_checks
    );
}

#[derive(Default)]
struct Totals {
    combos: u32,
    calls: u32,
    elements: u32,
    finite_checks: u32,
}

/// Raw bit patterns of an element type (`Element` itself exposes none).
trait Bits: Element {
    fn from_raw(r: u32) -> Self;
    fn to_raw(self) -> u32;
}

impl Bits for f32 {
    fn from_raw(r: u32) -> Self {
        f32::from_bits(r)
    }
    fn to_raw(self) -> u32 {
        self.to_bits()
    }
}

impl Bits for f16 {
    fn from_raw(r: u32) -> Self {
        f16::from_bits(r as u16)
    }
    fn to_raw(self) -> u32 {
        u32::from(self.to_bits())
    }
}

impl Bits for bf16 {
    fn from_raw(r: u32) -> Self {
        bf16::from_bits(r as u16)
    }
    fn to_raw(self) -> u32 {
        u32::from(self.to_bits())
    }
}

/// xorshift64*: deterministic, so a failure is reproducible.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// Where things go wrong: signed zeros, f32 and f16 subnormals, NaNs (quiet, signalling, with
/// payloads), infinities, the largest values, the f16 / bf16 overflow edges, rounding ties.
const SPECIALS: [u32; 30] = [
    0x0000_0000, // 0
    0x8000_0000, // -0
    0x3f80_0000, // 1
    0xbf80_0000, // -1
    0x3f00_0000, // 0.5
    0x0080_0000, // smallest normal f32
    0x0000_0001, // smallest subnormal f32
    0x8000_0001,
    0x0040_0000, // a subnormal f32
    0x7f7f_ffff, // f32::MAX
    0xff7f_ffff,
    0x7f80_0000, // inf
    0xff80_0000, // -inf
    0x7fc0_0000, // NaN
    0xffc0_0000, // -NaN
    0x7f80_0001, // signalling NaN
    0xffc0_1234, // NaN with a payload
    0x477f_e000, // 65504, f16 max
    0x477f_f000, // 65520: rounds to f16 infinity
    0x477f_efff, // just below: rounds to f16 max
    0x3880_0000, // 2^-14, smallest normal f16
    0x3380_0000, // 2^-24, smallest subnormal f16
    0x3300_0000, // 2^-25: tie between 0 and the smallest f16 subnormal
    0x3f80_8000, // 1 + 2^-8: bf16 tie, to even (1.0)
    0x3f81_8000, // 1 + 3 * 2^-8: bf16 tie, to even (up)
    0x3f80_1000, // 1 + 2^-11: f16 tie
    0x7f7f_8000, // bf16 overflow edge
    0x38d1_b717, // 1e-4
    0x7149_f2ca, // 1e30
    0x8dcc_cccd, // about -1.26e-30
];

fn value<T: Bits>(rng: &mut Rng) -> T {
    match rng.below(5) {
        0 | 1 => {
            let x = f32::from_bits(SPECIALS[rng.below(SPECIALS.len())]);
            T::from_f32_rounded(if rng.below(2) == 0 { x } else { -x })
        }
        2 | 3 => T::from_f32_rounded((rng.next() >> 40) as f32 / (1u64 << 22) as f32 - 2.0),
        _ => T::from_raw(rng.next() as u32), // every class of the type, 16-bit ones included
    }
}

/// Sets some momenta so that `m * beta1 + g * (1 - beta1)` is exactly zero in f32.
fn plant_cancellations<G: Bits, M: Bits>(g: &[G], m: &mut [M], hp: &Hyperparams, rng: &mut Rng) {
    let (b1, omb1) = (hp.beta1 as f32, (1.0 - hp.beta1) as f32);
    if b1 == 0.0 {
        return;
    }
    for (gi, mi) in g.iter().zip(m.iter_mut()) {
        let t = gi.to_f32_exact() * omb1;
        if rng.below(4) != 0 || !t.is_finite() {
            continue;
        }
        let guess = M::from_f32_rounded(-t / b1).to_raw();
        for d in [0i32, 1, -1, 2, -2] {
            let cand = M::from_raw(guess.wrapping_add(d as u32));
            if cand.to_f32_exact() * b1 + t == 0.0 {
                *mi = cand;
                break;
            }
        }
    }
}

fn hyperparams() -> [Hyperparams; 5] {
    let d = Hyperparams::default();
    [
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
    ]
}

fn option_sets() -> [StepOptions; 4] {
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
        },
    ]
}

fn same<T: Element>(a: T, b: T) -> bool {
    let (a, b) = (a.to_f32_exact(), b.to_f32_exact());
    a.to_bits() == b.to_bits() || (a.is_nan() && b.is_nan())
}

/// Every available path but the reference itself, then `lion_optim::step_with` (`None`).
fn entries() -> impl Iterator<Item = Option<Path>> {
    Path::ALL
        .iter()
        .copied()
        .filter(|p| p.is_available() && *p != Path::Scalar)
        .map(Some)
        .chain([None])
}

fn combo<P: Bits, G: Bits, M: Bits>(seed: u64, t: &mut Totals) {
    let mut rng = Rng(seed | 1);
    for hp in &hyperparams() {
        for opts in &option_sets() {
            for len in LENGTHS {
                for off in OFFSETS {
                    let p0: [P; MAX] = core::array::from_fn(|_| value(&mut rng));
                    let g: [G; MAX] = core::array::from_fn(|_| value(&mut rng));
                    let mut m0: [M; MAX] = core::array::from_fn(|_| value(&mut rng));
                    plant_cancellations(&g, &mut m0, hp, &mut rng);
                    let r = off..off + len;
                    let (mut p_want, mut m_want) = (p0, m0);
                    reference::step_with(
                        &mut p_want[r.clone()],
                        &g[r.clone()],
                        &mut m_want[r.clone()],
                        hp,
                        opts,
                    )
                    .unwrap();
                    for entry in entries() {
                        let (mut p, mut m) = (p0, m0);
                        let (ps, gs, ms) = (&mut p[r.clone()], &g[r.clone()], &mut m[r.clone()]);
                        match entry {
                            Some(path) => path.step_with(ps, gs, ms, hp, opts),
                            None => lion_optim::step_with(ps, gs, ms, hp, opts),
                        }
                        .unwrap();
                        for i in 0..MAX {
                            assert!(
                                same(p[i], p_want[i]) && same(m[i], m_want[i]),
                                "{:?} P={:?} G={:?} M={:?} len {len} offset {off} {hp:?} \
                                 {opts:?}: element {i}: got ({:#x}, {:#x}), want ({:#x}, {:#x})",
                                entry,
                                P::DTYPE,
                                G::DTYPE,
                                M::DTYPE,
                                p[i].to_raw(),
                                m[i].to_raw(),
                                p_want[i].to_raw(),
                                m_want[i].to_raw()
                            );
                        }
                        t.calls += 1;
                        t.elements += len as u32;
                    }
                    // all_finite: the scalar rule, f32(g) * f32(unscale) finite for every g.
                    let gs = &g[r.clone()];
                    let scale = opts.grad_unscale.map(|s| s as f32);
                    let want = gs.iter().all(|x| {
                        let x = x.to_f32_exact();
                        scale.map_or(x, |s| x * s).is_finite()
                    });
                    for path in Path::ALL.iter().filter(|p| p.is_available()) {
                        assert!(path.all_finite(gs, opts) == want, "all_finite on {path}");
                        t.finite_checks += 1;
                    }
                }
            }
        }
    }
    t.combos += 1;
}
