//! The roofline probe of the benchmarks: a plain loop with exactly Lion's memory traffic (read
//! p, g, m; write p, m) and next to no arithmetic, compiled for the widest vectors this CPU has:
//! the speed of light for that traffic. It xors bits masked by a zero the compiler cannot see, so
//! the data never changes. Used by benches/step.rs and benches/model.rs.

use lion_optim::{Element, bf16, f16};

/// An integer of the width of an element.
pub trait Word: bytemuck::Pod + Send + Sync {
    fn widen(self) -> u32;
    fn mix(self, x: u32) -> Self;
}
/// `Word` for unsigned integers of at most 32 bits (a macro: `as` has no trait).
macro_rules! word {
    ($($t:ty),*) => {$(
        impl Word for $t {
            #[inline(always)]
            fn widen(self) -> u32 {
                u32::from(self)
            }
            #[inline(always)]
            fn mix(self, x: u32) -> Self {
                self ^ x as $t
            }
        }
    )*};
}
word!(u8, u16, u32);

/// The bits of an element type.
pub trait Bits: Element {
    type W: Word;
}
impl Bits for f32 {
    type W = u32;
}
impl Bits for f16 {
    type W = u16;
}
impl Bits for bf16 {
    type W = u16;
}

/// Reads `p`, `g`, `m`, writes `p` and `m`, and leaves every bit as it was.
pub fn run<P: Bits, G: Bits, M: Bits>(p: &mut [P], g: &[G], m: &mut [M]) {
    run_bits::<P::W, G::W, M::W>(
        bytemuck::cast_slice_mut(p),
        bytemuck::cast_slice(g),
        bytemuck::cast_slice_mut(m),
    )
}

/// [`run`] with 8-bit momentum: the codes read and written (the block scales, 1/256 of the
/// codes' bytes, are left out).
pub fn run_q8<P: Bits, G: Bits>(p: &mut [P], g: &[G], codes: &mut [u8]) {
    run_bits::<P::W, G::W, u8>(bytemuck::cast_slice_mut(p), bytemuck::cast_slice(g), codes)
}

/// [`run_q8`] split across rayon's threads (see [`par_run`]).
#[cfg(feature = "rayon")]
pub fn par_run_q8<P: Bits, G: Bits>(p: &mut [P], g: &[G], codes: &mut [u8]) {
    par_run_bits::<P::W, G::W, u8>(bytemuck::cast_slice_mut(p), bytemuck::cast_slice(g), codes)
}

/// [`run`] split across rayon's threads as `par_step_with` splits a step: the roofline of `rayon`.
#[cfg(feature = "rayon")]
pub fn par_run<P: Bits, G: Bits, M: Bits>(p: &mut [P], g: &[G], m: &mut [M]) {
    par_run_bits::<P::W, G::W, M::W>(
        bytemuck::cast_slice_mut(p),
        bytemuck::cast_slice(g),
        bytemuck::cast_slice_mut(m),
    )
}

/// [`run_bits`] over blocks of `PAR_BLOCK` elements on rayon's threads, from `PAR_THRESHOLD`
/// elements on (below it, on this thread).
#[cfg(feature = "rayon")]
fn par_run_bits<P: Word, G: Word, M: Word>(p: &mut [P], g: &[G], m: &mut [M]) {
    use rayon::prelude::*;
    if p.len() < lion_optim::PAR_THRESHOLD {
        return run_bits(p, g, m);
    }
    let block = lion_optim::PAR_BLOCK;
    p.par_chunks_mut(block)
        .zip(g.par_chunks(block))
        .zip(m.par_chunks_mut(block))
        .for_each(|((p, g), m)| run_bits(p, g, m));
}

fn run_bits<P: Word, G: Word, M: Word>(p: &mut [P], g: &[G], m: &mut [M]) {
    // Zero, but the compiler must load, mask and store every element.
    let k = std::hint::black_box(0u32);
    #[cfg(target_arch = "x86_64")]
    {
        if is_x86_feature_detected!("avx512f") && is_x86_feature_detected!("avx512bw") {
            // SAFETY: the CPU has the features the function is compiled for.
            return unsafe { x86::avx512(p, g, m, k) };
        }
        if is_x86_feature_detected!("avx2") {
            // SAFETY: as above.
            return unsafe { x86::avx2(p, g, m, k) };
        }
    }
    body(p, g, m, k)
}

#[inline(always)]
fn body<P: Word, G: Word, M: Word>(p: &mut [P], g: &[G], m: &mut [M], k: u32) {
    let n = p.len().min(g.len()).min(m.len());
    let (p, g, m) = (&mut p[..n], &g[..n], &mut m[..n]);
    for ((p, g), m) in p.iter_mut().zip(g).zip(m.iter_mut()) {
        let x = g.widen() & k;
        *p = p.mix(x);
        *m = m.mix(x);
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::{Word, body};

    #[target_feature(enable = "avx512f,avx512bw")]
    pub fn avx512<P: Word, G: Word, M: Word>(p: &mut [P], g: &[G], m: &mut [M], k: u32) {
        body(p, g, m, k)
    }

    #[target_feature(enable = "avx2")]
    pub fn avx2<P: Word, G: Word, M: Word>(p: &mut [P], g: &[G], m: &mut [M], k: u32) {
        body(p, g, m, k)
    }
}
