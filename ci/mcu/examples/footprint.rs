//! The footprint of the optimizer on a microcontroller, measured by ci/footprint.sh: one program,
//! built in variants that differ only in what updates the parameters, on every target of this
//! crate (the runtime of src/rt.rs: entry, `println!` over semihosting, exit).
//!
//! Cargo features pick the variant (one of each; none given: `fp-none`, `fp-m-f32`):
//!  - the update: `fp-none` (the same loop over the same buffers with a plain `p -= lr * g`: the
//!    baseline of the flash figures), `fp-step` (`lion_optim::step_with` over `&mut [f32]`,
//!    `&[f32]` and the momentum slice, statically typed: one dtype combination) or `fp-lion`
//!    (`Lion::with_buffers` over one `MomentumMut`, `Lion::step` with a `Tensor`: kernels picked
//!    at run time, so every dtype combination is linked);
//!  - the momentum: `fp-m-f32`, `fp-m-bf16` or `fp-m-q8` (8-bit blockwise: codes and one f32
//!    absmax per 256; there is no statically typed 8-bit step, so only with `fp-none` or
//!    `fp-lion`). Parameters and gradients are f32.
//!
//! Every variant has the same buffers (`static`, in .bss: parameters, gradients, momentum of
//! 2·N elements), fills them with the same pseudo-random values and runs:
//!  1. Marked regions for counting executed instructions under QEMU (`footprint_mark(id)` is
//!     called between them; ci/footprint.sh counts the instructions executed between the calls):
//!     regions 2 and 3 run a hand-written loop of exactly 2·10 and 2·250 instructions in the
//!     same glue (the counter's calibration: region 3 − region 2 must be 480), region 4 runs K
//!     steps over N elements, region 5 K steps over 2·N elements whose second half repeats the
//!     values of the first (the buffers refilled before each; a `Lion` is made before its
//!     region, outside it): region 5 − region 4 is the cost of N elements, exactly.
//!  2. The stack one step needs: the free stack below the stack pointer is painted with a
//!     pattern, one step over N elements runs, and the deepest overwritten word gives the bytes
//!     used below the caller's stack pointer (the closure that makes the call included).
//!  3. The buffer sizes (the optimizer's state per parameter follows) and checksums of the
//!     parameters and momentum after one step (the same on every target: the crate's results
//!     are bit-identical across instruction sets).
//!
//! Output lines start with `fp: `.
#![no_std]
#![no_main]

#[macro_use]
#[path = "../src/rt.rs"]
mod rt;

use core::hint::black_box;

#[cfg(any(
    all(feature = "fp-none", feature = "fp-step"),
    all(feature = "fp-none", feature = "fp-lion"),
    all(feature = "fp-step", feature = "fp-lion"),
    all(feature = "fp-m-f32", feature = "fp-m-bf16"),
    all(feature = "fp-m-f32", feature = "fp-m-q8"),
    all(feature = "fp-m-bf16", feature = "fp-m-q8"),
))]
compile_error!(
    "footprint: pick one of fp-none/fp-step/fp-lion and one of fp-m-f32/fp-m-bf16/fp-m-q8"
);
#[cfg(all(feature = "fp-step", feature = "fp-m-q8"))]
compile_error!("footprint: no statically typed 8-bit step: fp-m-q8 goes with fp-lion (or fp-none)");

/// Elements of region 4 (region 5 has twice as many): large enough that the 8- and 16-lane
/// chunks' tails and the 256-element blocks of the 8-bit momentum do not dominate.
const N: usize = 4096;
/// Elements of the buffers.
const MAX: usize = 2 * N;
/// Steps per counted region.
const K: usize = 1;
/// Bytes of stack painted below the stack pointer (far more than a step needs; a result of
/// PAINT means it was not enough).
const PAINT: usize = 32 * 1024;
/// The paint: not a value the step stores (a NaN payload no arithmetic produces).
const PATTERN: u32 = 0x7fa5_c3e1;

const API: &str = if cfg!(feature = "fp-step") {
    "step"
} else if cfg!(feature = "fp-lion") {
    "lion"
} else {
    "none"
};

#[cfg(not(any(feature = "fp-m-bf16", feature = "fp-m-q8")))]
type Mom = f32;
#[cfg(feature = "fp-m-bf16")]
type Mom = lion_optim::bf16;
#[cfg(not(feature = "fp-m-q8"))]
const MOMENTUM: &str = if cfg!(feature = "fp-m-bf16") {
    "bf16"
} else {
    "f32"
};
#[cfg(feature = "fp-m-q8")]
const MOMENTUM: &str = "q8";

/// Parameters, gradients and momentum of `MAX` elements.
struct Bufs {
    p: [f32; MAX],
    g: [f32; MAX],
    #[cfg(not(feature = "fp-m-q8"))]
    m: [Mom; MAX],
    #[cfg(feature = "fp-m-q8")]
    codes: [u8; MAX],
    #[cfg(feature = "fp-m-q8")]
    absmax: [f32; MAX / lion_optim::Q8_BLOCK],
}

static mut BUFS: Bufs = Bufs {
    p: [0.0; MAX],
    g: [0.0; MAX],
    #[cfg(not(feature = "fp-m-q8"))]
    m: [Mom::from_bits(0); MAX],
    #[cfg(feature = "fp-m-q8")]
    codes: [0; MAX],
    #[cfg(feature = "fp-m-q8")]
    absmax: [0.0; MAX / lion_optim::Q8_BLOCK],
};

impl Bufs {
    /// Bytes of the momentum (the optimizer's state).
    fn momentum_bytes(&self) -> usize {
        #[cfg(not(feature = "fp-m-q8"))]
        return core::mem::size_of_val(&self.m);
        #[cfg(feature = "fp-m-q8")]
        return core::mem::size_of_val(&self.codes) + core::mem::size_of_val(&self.absmax);
    }

    /// The same pseudo-random values every time, N of them and again the same N (so that the
    /// second N elements of region 5 cost exactly what the N of region 4 cost: the difference
    /// of the regions is the cost of N elements, whatever the values do to the software
    /// floating point): parameters in [-1, 1), gradients and momentum in [-0.01, 0.01) (8-bit:
    /// random codes, absmax 0.01).
    fn fill(&mut self) {
        let mut x = 0x2545_f491u32;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x
        };
        let unit = |r: u32| (r >> 8) as f32 * (1.0 / 16_777_216.0) * 2.0 - 1.0; // [-1, 1)
        for i in 0..N {
            let (p, g) = (unit(next()), unit(next()) * 0.01);
            for j in [i, i + N] {
                self.p[j] = p;
                self.g[j] = g;
            }
            #[cfg(not(feature = "fp-m-q8"))]
            {
                let m = momentum_from_f32(unit(next()) * 0.01);
                self.m[i] = m;
                self.m[i + N] = m;
            }
            #[cfg(feature = "fp-m-q8")]
            {
                let code = next() as u8;
                self.codes[i] = code;
                self.codes[i + N] = code;
            }
        }
        #[cfg(feature = "fp-m-q8")]
        self.absmax.fill(0.01);
    }

    /// A hash of the parameters' and the momentum's bits.
    fn checksum(&self) -> (u32, u32) {
        let fnv = |h: u32, x: u32| (h ^ x).wrapping_mul(0x0100_0193);
        let p = self.p.iter().fold(0x811c_9dc5, |h, v| fnv(h, v.to_bits()));
        #[cfg(not(feature = "fp-m-q8"))]
        let m = self
            .m
            .iter()
            .fold(0x811c_9dc5, |h, &v| fnv(h, momentum_bits(v)));
        #[cfg(feature = "fp-m-q8")]
        let m = self.absmax.iter().fold(
            self.codes
                .iter()
                .fold(0x811c_9dc5, |h, &c| fnv(h, c as u32)),
            |h, v| fnv(h, v.to_bits()),
        );
        (p, m)
    }
}

#[cfg(not(any(feature = "fp-m-bf16", feature = "fp-m-q8")))]
fn momentum_from_f32(v: f32) -> Mom {
    v
}
#[cfg(not(any(feature = "fp-m-bf16", feature = "fp-m-q8")))]
fn momentum_bits(v: Mom) -> u32 {
    v.to_bits()
}
#[cfg(feature = "fp-m-bf16")]
fn momentum_from_f32(v: f32) -> Mom {
    lion_optim::bf16::from_f32(v)
}
#[cfg(feature = "fp-m-bf16")]
fn momentum_bits(v: Mom) -> u32 {
    v.to_bits().into()
}

/// The end of a counted region and the start of the next: ci/footprint.sh counts the executed
/// instructions between the executions of this function's first instruction.
#[inline(never)]
#[no_mangle]
pub extern "C" fn footprint_mark(id: u32) {
    black_box(id);
}

/// A failed step (it cannot fail here) without formatting an error: the same in every variant.
fn check(ok: bool) {
    if !ok {
        panic!("footprint: the step failed");
    }
}

#[cfg(any(feature = "fp-step", feature = "fp-lion"))]
fn hyperparams() -> lion_optim::Hyperparams {
    lion_optim::Hyperparams {
        lr: 1e-3,
        weight_decay: 0.1,
        ..lion_optim::Hyperparams::default()
    }
}

/// Runs `f` with a closure that does one step over the first `n` elements: the variant's update.
/// (A `Lion` is made here, before `f` runs.)
#[cfg(feature = "fp-none")]
fn with_step(b: &mut Bufs, n: usize, f: impl FnOnce(&mut dyn FnMut())) {
    let lr = black_box(1e-3f32);
    let (p, g) = (&mut b.p[..n], &b.g[..n]);
    f(&mut || {
        for (p, g) in p.iter_mut().zip(g) {
            *p -= lr * *g;
        }
        check(black_box(true));
    })
}

#[cfg(feature = "fp-step")]
fn with_step(b: &mut Bufs, n: usize, f: impl FnOnce(&mut dyn FnMut())) {
    let hp = hyperparams();
    let options = lion_optim::StepOptions::default();
    let (p, g, m) = (&mut b.p[..n], &b.g[..n], &mut b.m[..n]);
    f(&mut || check(lion_optim::step_with(p, g, m, &hp, &options).is_ok()))
}

#[cfg(feature = "fp-lion")]
fn with_step(b: &mut Bufs, n: usize, f: impl FnOnce(&mut dyn FnMut())) {
    use lion_optim::{Lion, MomentumMut, Tensor};
    #[cfg(not(feature = "fp-m-q8"))]
    let momentum = MomentumMut::from(&mut b.m[..n]);
    #[cfg(feature = "fp-m-q8")]
    let momentum = match lion_optim::Q8Mut::new(
        &mut b.codes[..n],
        &mut b.absmax[..n.div_ceil(lion_optim::Q8_BLOCK)],
    ) {
        Ok(q8) => MomentumMut::from(q8),
        Err(_) => panic!("footprint: bad 8-bit buffers"),
    };
    let mut opt = match Lion::with_buffers(hyperparams(), [momentum]) {
        Ok(opt) => opt,
        Err(_) => panic!("footprint: bad hyperparameters"),
    };
    let (p, g) = (&mut b.p[..n], &b.g[..n]);
    f(&mut || check(opt.step(&mut [Tensor::new(p, g)]).is_ok()))
}

/// The counter's calibration: for each `(iterations, id)`, a hand-written loop of exactly
/// 2·`iterations` instructions (`iterations` ≥ 1), then the marker `id`. The regions between the
/// markers run the same code (this loop's body; the slice's length is not known at compile time,
/// so the loop is not unrolled), except for the hand-written loop.
#[inline(never)]
fn calibrate(loops: &[(u32, u32)]) {
    for &(iterations, id) in loops {
        // SAFETY: counts a scratch register down to 0; touches no memory.
        #[cfg(target_arch = "arm")]
        unsafe {
            core::arch::asm!(
                "1:", "subs r0, #1", "bne 1b",
                inout("r0") iterations => _, options(nomem, nostack),
            )
        };
        // SAFETY: as above.
        #[cfg(target_arch = "riscv32")]
        unsafe {
            core::arch::asm!(
                "1:", "addi {0}, {0}, -1", "bnez {0}, 1b",
                inout(reg) iterations => _, options(nomem, nostack),
            )
        };
        footprint_mark(id);
    }
}

/// A counted region: K steps over the first `n` elements, between the markers 100 + `id` and
/// `id` (the same code for both regions: only `n` differs).
#[inline(never)]
fn region(b: &mut Bufs, n: usize, id: u32) {
    b.fill();
    with_step(b, n, |step| {
        footprint_mark(100 + id);
        for _ in 0..K {
            step();
        }
        footprint_mark(id);
    });
}

/// The stack bytes `f` uses below the caller's stack pointer: the `PAINT` bytes below it are
/// painted (volatile stores in this function's own loop: no call whose frame would be painted
/// over), `f` runs, and the deepest word that no longer holds the paint is found. Nothing else
/// runs meanwhile (no interrupt is enabled).
#[inline(never)]
fn stack_used(f: &mut dyn FnMut()) -> usize {
    let top = rt::stack_pointer();
    let bottom = top - PAINT;
    let mut a = bottom;
    while a < top {
        // SAFETY: free stack below the stack pointer (RAM: the stack region is MiBs).
        unsafe { (a as *mut u32).write_volatile(PATTERN) };
        a += 4;
    }
    f();
    let mut a = bottom;
    // SAFETY: as above.
    while a < top && unsafe { (a as *const u32).read_volatile() } == PATTERN {
        a += 4;
    }
    top - a
}

fn run() {
    // SAFETY: the only reference to the buffers (one thread, no interrupts).
    let b = unsafe { &mut *core::ptr::addr_of_mut!(BUFS) };
    println!("mcu: footprint");
    rt::print_core();
    println!(
        "fp: target={} api={API} momentum={MOMENTUM} n={N} k={K}",
        env!("MCU_TARGET")
    );
    println!(
        "fp: buffers elements={MAX} params_bytes={} grads_bytes={} momentum_bytes={}",
        core::mem::size_of_val(&b.p),
        core::mem::size_of_val(&b.g),
        b.momentum_bytes()
    );

    // 1. The counted regions, each from one marker to the next: 2 = glue + 2·10 and
    //    3 = glue + 2·250 (the calibration: 3 − 2 = 480), 4 = K steps over N elements,
    //    5 = K steps over 2·N elements (each after a marker 100 + id that ends its setup).
    calibrate(black_box(&[(1, 1), (10, 2), (250, 3)]));
    region(b, N, 4);
    region(b, MAX, 5);
    println!(
        "fp: markers 1 2 3 104 4 105 5: regions 2=loop(2*10) 3=loop(2*250) 4=steps(n) 5=steps(2n)"
    );

    // 2. The stack of one step; of a closure that does nothing, for comparison.
    b.fill();
    let mut stack = 0;
    with_step(b, N, |step| stack = stack_used(step));
    let noop = stack_used(&mut || black_box(()));
    println!("fp: stack step_bytes={stack} noop_bytes={noop} painted_bytes={PAINT}");

    // 3. The results of one step over all the elements.
    b.fill();
    with_step(b, MAX, |step| step());
    let (p, m) = b.checksum();
    println!("fp: checksum params={p:#010x} momentum={m:#010x}");
    println!("fp: done");
}
