//! The checks the firmware runs on every emulated core (lion-optim built with
//! --no-default-features): the Cortex-M4F (qemu-system-arm -M mps2-an386, ci/thumbv7em.sh), the
//! Cortex-M0 (qemu-system-arm -M microbit) and the RV32IMAC (qemu-system-riscv32 -M virt, both
//! ci/mcu-cores.sh). A failed check panics (the panic handler prints the message and exits qemu
//! with status 1, which fails CI); `println!` is main.rs's (semihosting).
//!
//!  1. The hand-computed f32 / bf16 values, bad input and skipped non-finite steps of the no_std
//!     probe's library (`lion_optim_nostd_probe::run`, the same checks ci/nostd.sh runs on x86_64).
//!  2. All 27 (params, grads, momentum) dtype combinations (`all_combos!` of the test-support
//!     crate): every available backend and `lion_optim::step_with` against
//!     `reference::step_with`, bit for bit (a NaN matching a NaN), outcome included, over lengths
//!     around the 8- and 16-lane chunk sizes at misaligned offsets, with the shared fixtures:
//!     special values (`SPECIAL_F32`: +-0, f32 and f16 subnormals, NaN, +-inf, f16 / bf16
//!     rounding ties and overflow edges), planted exact cancellations (c == 0), raw bit patterns,
//!     every hyperparameter set of `hyperparams()` and every option set of `option_sets()`
//!     (maximize, gradient unscaling, fully decoupled decay, stochastic rounding across an index
//!     multiple of 2^32, the cautious variant), each also with `skip_non_finite`. The elements
//!     around the slice must stay untouched.
//!  3. `all_finite` of every backend against the scalar rule.
//!
//! Here `wide` has no SIMD (plain arrays). The f64 hyperparameter arithmetic runs in software
//! everywhere, the f32 arithmetic on the Cortex-M4F's FPv4-SP unit and in software (compiler
//! builtins) on the Cortex-M0 and the RV32IMAC: all of it must give the reference's bits.

use lion_optim::{Backend, Element, Outcome, StepOptions};
use lion_optim_nostd_probe::Entry;
use lion_optim_test_support::{
    all_combos, bits, hyperparams, option_sets, plant_cancellations, same, value, Rng, SPECIAL_F32,
};

/// Buffer size: the longest length, the largest offset and padding after the slice.
const MAX: usize = 72;
const LENGTHS: [usize; 18] = [
    0, 1, 2, 7, 8, 9, 15, 16, 17, 23, 24, 25, 31, 32, 33, 63, 64, 65,
];
const OFFSETS: [usize; 3] = [0, 1, 3];

/// The option sets: each of `option_sets()` as it is and with `skip_non_finite`.
fn all_options() -> impl Iterator<Item = StepOptions> {
    option_sets().into_iter().flat_map(|o| {
        [
            o,
            StepOptions {
                skip_non_finite: true,
                ..o
            },
        ]
    })
}

pub fn run() {
    println!(
        "mcu: detected backend {}; portable backend runs {}",
        Backend::detect(),
        Backend::Portable.instructions()
    );
    assert!(Backend::detect().is_available() && Backend::Portable.is_available());

    lion_optim_nostd_probe::run();
    println!("mcu: the no_std probe's checks (hand-computed values, bad input, skipping): ok");

    let mut t = Totals::default();
    for (i, check) in all_combos!(combo, fn(u64, &mut Totals)).iter().enumerate() {
        check(0x5eed + i as u64, &mut t);
    }
    assert!(t.combos == 27);
    println!(
        "mcu: {} dtype combinations x {} hyperparameter sets x {} option sets: {} calls on {} \
         elements ({} steps skipped), all bit-identical to reference::step_with; all_finite \
         agreed {} times",
        t.combos,
        hyperparams().len(),
        all_options().count(),
        t.calls,
        t.elements,
        t.skipped,
        t.finite_checks
    );
}

#[derive(Default)]
struct Totals {
    combos: u32,
    calls: u32,
    elements: u32,
    skipped: u32,
    finite_checks: u32,
}

/// What is compared with `reference::step_with`: every available backend but the scalar one (the
/// reference itself), then `lion_optim::step_with`.
fn entries() -> impl Iterator<Item = Entry> {
    Entry::all().filter(|e| !matches!(e, Entry::Backend(Backend::Scalar) | Entry::Reference))
}

fn combo<P: Element, G: Element, M: Element>(seed: u64, t: &mut Totals) {
    let mut rng = Rng::new(seed);
    for hp in hyperparams() {
        for opts in all_options() {
            let opts = &opts;
            for len in LENGTHS {
                for off in OFFSETS {
                    let p0: [P; MAX] = core::array::from_fn(|_| value(&mut rng, &SPECIAL_F32));
                    let g: [G; MAX] = core::array::from_fn(|_| value(&mut rng, &SPECIAL_F32));
                    let mut m0: [M; MAX] = core::array::from_fn(|_| value(&mut rng, &SPECIAL_F32));
                    plant_cancellations(&g, &mut m0, hp, &mut rng);
                    let r = off..off + len;
                    // A step of `entry` over `r` of copies of the buffers: the outcome, the copies.
                    let run = |entry: Entry| {
                        let (mut p, mut m) = (p0, m0);
                        let (ps, gs, ms) = (&mut p[r.clone()], &g[r.clone()], &mut m[r.clone()]);
                        let outcome = entry.step_with(ps, gs, ms, hp, opts).unwrap();
                        (outcome, p, m)
                    };
                    let (want, p_want, m_want) = run(Entry::Reference);
                    for entry in entries() {
                        let (got, p, m) = run(entry);
                        assert!(
                            got == want,
                            "{entry:?} P={:?} G={:?} M={:?} len {len} offset {off} {hp:?} \
                             {opts:?}: {got:?}, the reference {want:?}",
                            P::DTYPE,
                            G::DTYPE,
                            M::DTYPE
                        );
                        for i in 0..MAX {
                            assert!(
                                same(p[i], p_want[i]) && same(m[i], m_want[i]),
                                "{:?} P={:?} G={:?} M={:?} len {len} offset {off} {hp:?} \
                                 {opts:?}: element {i}: got ({:#x}, {:#x}), want ({:#x}, {:#x})",
                                entry,
                                P::DTYPE,
                                G::DTYPE,
                                M::DTYPE,
                                bits(p[i]),
                                bits(m[i]),
                                bits(p_want[i]),
                                bits(m_want[i])
                            );
                        }
                        t.calls += 1;
                        t.elements += len as u32;
                    }
                    t.skipped += u32::from(want == Outcome::SkippedNonFinite);
                    // all_finite: the scalar rule, f32(g) * f32(unscale) finite for every g.
                    let gs = &g[r.clone()];
                    let scale = opts.grad_unscale.map(|s| s as f32);
                    let finite = gs.iter().all(|x| {
                        let x = x.to_f32_exact();
                        scale.map_or(x, |s| x * s).is_finite()
                    });
                    for backend in Backend::ALL.iter().filter(|b| b.is_available()) {
                        assert!(
                            backend.all_finite(gs, opts) == finite,
                            "all_finite on {backend}"
                        );
                        t.finite_checks += 1;
                    }
                }
            }
        }
    }
    t.combos += 1;
}
