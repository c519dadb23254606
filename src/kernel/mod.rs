//! The Lion step, written once: generic over the instruction set `S` (with `N` lanes), over the
//! element types of parameters `P`, gradients `G` and momentum `M`, and over the per-call
//! options that change the instruction stream (gradient unscaling, stochastic rounding).
//!
//! One pass over memory: each chunk of `N` elements is loaded (3 reads), updated in registers and
//! stored (2 writes). The tail (fewer than `N` elements) is copied into zero-padded chunks and
//! goes through the very same body, so there is no second copy of the math to get wrong. Where
//! an instruction set converts bf16 more cheaply two chunks at a time (AVX2), all-bf16 slices go
//! through pairs of chunks: the same arithmetic (`momentum_math`, `Lanes::param_math`), other loads and
//! stores.

mod pairs;
pub(crate) mod q8;
mod reduce;

pub(crate) use reduce::{all_finite, cautious_count};

use crate::arch::Op;
use crate::dtype::{Element, Q8Mut, Q8Ref};
use crate::hyper::Consts;
use crate::simd::{Simd, random_bits};
use crate::{Cautious, Rounding, StepOptions, reference};

/// The Lion step over equally long slices (checked by the caller) with validated constants and
/// options, whose first element has the global index `options.offset` (the low 32 bits index
/// the random bits; the caller splits calls so that the high bits are the same for every
/// element, and folds them into `key`); the scalar form is [`reference::step_with`]'s element
/// loop.
pub(crate) struct Step<'a, P, G, M> {
    pub(crate) params: &'a mut [P],
    pub(crate) grads: &'a [G],
    pub(crate) momentum: &'a mut [M],
    pub(crate) k: &'a Consts,
    pub(crate) options: &'a StepOptions,
    /// The key of the random bits (see [`Step`]).
    pub(crate) key: u32,
}

impl<P: Element, G: Element, M: Element> Op for Step<'_, P, G, M> {
    type Output = ();
    #[inline(always)]
    fn simd<S: Simd<N>, const N: usize>(self, s: S) {
        in_mode(self.options, Passes::<S, N, P, G, M> { s, step: self });
    }
    fn scalar(self) {
        reference::lion(self.params, self.grads, self.momentum, self.k, self.options)
    }
}

/// The cautious variant's count over equally long slices (see [`cautious_count`]).
pub(crate) struct Count<'a, G, M> {
    pub(crate) grads: &'a [G],
    pub(crate) momentum: &'a [M],
    pub(crate) k: &'a Consts,
    pub(crate) options: &'a StepOptions,
}

impl<G: Element, M: Element> Op for Count<'_, G, M> {
    type Output = u64;
    #[inline(always)]
    fn simd<S: Simd<N>, const N: usize>(self, s: S) -> u64 {
        cautious_count(s, self)
    }
    fn scalar(self) -> u64 {
        reference::count(self.grads, self.momentum, self.k, self.options)
    }
}

/// The Lion step with 8-bit momentum over equally long slices (checked by the caller), with
/// validated constants and options (the offset a multiple of 256, the key as in [`Step`]); the
/// scalar form is `reference::step_q8_with`'s block loop.
pub(crate) struct StepQ8<'a, P, G> {
    pub(crate) params: &'a mut [P],
    pub(crate) grads: &'a [G],
    pub(crate) momentum: Q8Mut<'a>,
    pub(crate) k: &'a Consts,
    pub(crate) options: &'a StepOptions,
    /// The key of the random bits (see [`Step`]).
    pub(crate) key: u32,
}

impl<P: Element, G: Element> Op for StepQ8<'_, P, G> {
    type Output = ();
    #[inline(always)]
    fn simd<S: Simd<N>, const N: usize>(self, s: S) {
        in_mode(self.options, q8::Passes::<S, N, P, G> { s, step: self });
    }
    fn scalar(self) {
        reference::q8_lion(self.params, self.grads, self.momentum, self.k, self.options)
    }
}

/// The cautious count with 8-bit momentum.
pub(crate) struct CountQ8<'a, G> {
    pub(crate) grads: &'a [G],
    pub(crate) momentum: Q8Ref<'a>,
    pub(crate) k: &'a Consts,
    pub(crate) options: &'a StepOptions,
}

impl<G: Element> Op for CountQ8<'_, G> {
    type Output = u64;
    #[inline(always)]
    fn simd<S: Simd<N>, const N: usize>(self, s: S) -> u64 {
        q8::cautious_count_q8(s, self)
    }
    fn scalar(self) -> u64 {
        reference::count_q8(self.grads, self.momentum, self.k, self.options)
    }
}

/// Whether every gradient, times `inv_scale` if given, is finite (see [`all_finite`]).
pub(crate) struct Finite<'a, G> {
    pub(crate) grads: &'a [G],
    pub(crate) inv_scale: Option<f32>,
}

impl<G: Element> Op for Finite<'_, G> {
    type Output = bool;
    #[inline(always)]
    fn simd<S: Simd<N>, const N: usize>(self, s: S) -> bool {
        all_finite(s, self.grads, self.inv_scale)
    }
    fn scalar(self) -> bool {
        self.grads.iter().all(|g| {
            let g = g.to_f32_exact();
            self.inv_scale.map_or(g, |s| g * s).is_finite()
        })
    }
}

/// The step's constants, splatted once per call.
pub(super) struct Lanes<F, U> {
    decay: F,
    lr: F,
    /// `±beta1` and `±(1 - beta1)`: negated to maximize, which makes `c` exactly `-c` (rounding
    /// to nearest is symmetric), so `sign` gives `sign(-c)` as the reference computes it.
    c_beta1: F,
    c_one_minus_beta1: F,
    beta2: F,
    one_minus_beta2: F,
    inv_scale: F,
    key: U,
    /// `1.0` and `0.0`, for the agreement test of the cautious variant.
    one: F,
    zero: F,
    /// The sign bit when maximizing (where `c` is negated), else 0: `sign(c) * dir` is the sign
    /// of the reference's `c`.
    direction_bit: U,
    /// All ones when the step is not cautious: the agreement mask then keeps every lane (for
    /// the instantiations that decide this at run time, see [`in_mode`]).
    not_cautious: U,
}

impl<F: Copy, U: Copy> Lanes<F, U> {
    #[inline(always)]
    fn new<S: Simd<N, F32 = F, U32 = U>, const N: usize>(
        s: S,
        k: &Consts,
        options: &StepOptions,
        key: u32,
    ) -> Self {
        let direction = if options.maximize { -1.0 } else { 1.0 };
        Self {
            decay: s.splat(k.decay),
            lr: s.splat(k.lr),
            c_beta1: s.splat(direction * k.beta1),
            c_one_minus_beta1: s.splat(direction * k.one_minus_beta1),
            beta2: s.splat(k.beta2),
            one_minus_beta2: s.splat(k.one_minus_beta2),
            inv_scale: s.splat(k.inv_scale),
            key: s.splat_u32(key),
            one: s.splat(1.0),
            zero: s.splat(0.0),
            direction_bit: s.splat_u32(if options.maximize { 1 << 31 } else { 0 }),
            not_cautious: s.splat_u32(if options.cautious == Cautious::Off {
                u32::MAX
            } else {
                0
            }),
        }
    }

    /// The gradient as the step uses it: times the inverse loss scale when `unscale` (a constant
    /// of the caller's instantiation: the test is compiled away).
    #[inline(always)]
    fn gradient<S: Simd<N, F32 = F, U32 = U>, const N: usize>(
        &self,
        s: S,
        grad: F,
        unscale: bool,
    ) -> F {
        if unscale {
            s.mul(grad, self.inv_scale)
        } else {
            grad
        }
    }

    /// `c = m*b1 + g*omb1` (negated to maximize, see `Lanes`).
    #[inline(always)]
    fn interpolation<S: Simd<N, F32 = F, U32 = U>, const N: usize>(
        &self,
        s: S,
        grad: F,
        mom: F,
    ) -> F {
        s.add(
            s.mul(mom, self.c_beta1),
            s.mul(grad, self.c_one_minus_beta1),
        )
    }

    /// The mask of lanes where `sign(c) * g > 0` for the reference's `c` (the kernel's `c` times
    /// the direction): exact, since `sign(c) * g` is `±g` or a zero (or NaN, which is not `> 0`).
    #[inline(always)]
    fn agreement<S: Simd<N, F32 = F, U32 = U>, const N: usize>(&self, s: S, c: F, grad: F) -> U {
        let sign = s.xor(s.to_bits(s.signed(self.one, c)), self.direction_bit);
        s.gt(s.mul(s.bits_to_f32(sign), grad), self.zero)
    }

    /// The parameter half of Lion's arithmetic, in exactly the order of operations of
    /// `reference::step_with`: the decayed parameter moved by `lr * sign(c)`, unrounded.
    #[inline(always)]
    fn param_math<S: Simd<N, F32 = F, U32 = U>, const N: usize>(&self, s: S, param: F, c: F) -> F {
        let decayed = s.mul(param, self.decay);
        s.sub(decayed, s.signed(self.lr, c)) // lr * sign(c)
    }
}

/// How far ahead of the current chunk to prefetch: one page. Chosen on DRAM-bound steps (the
/// `step` benchmark at 16M elements against its bandwidth probe): all-bf16 is the most
/// sensitive (shorter and longer distances both leave more of the gap to the probe); f32 is at
/// the probe's time from 512 B to 8 KiB. The README's performance section has the numbers.
const PREFETCH_BYTES: usize = 4096;

/// The address `PREFETCH_BYTES` past `chunk`, or the last byte of the slice (`last`) if that is
/// nearer: a small slice does not pull in lines it does not need. (Computed without pointer
/// arithmetic rules, as an address: it is only ever used as a prefetch hint.)
#[inline(always)]
fn ahead<T, const N: usize>(chunk: &[T; N], last: *const u8) -> *const u8 {
    let at = (chunk as *const [T; N]).cast::<u8>();
    let ahead = at.wrapping_add(PREFETCH_BYTES);
    if ahead.addr() < last.addr() {
        ahead
    } else {
        last
    }
}

/// The address of the last byte of a slice (its start if it is empty): the limit of `ahead`.
#[inline(always)]
fn last_byte<T>(s: &[T]) -> *const u8 {
    let start = s.as_ptr().cast::<u8>();
    start.wrapping_add(size_of_val(s).saturating_sub(1))
}

/// The options a pass is compiled for: each combination is an instantiation of the loops of
/// its own, so that an option a step does not use costs nothing in its inner loop.
pub(crate) trait Mode {
    /// Gradients are multiplied by the inverse loss scale.
    const UNSCALE: bool;
    /// Parameters and momentum are rounded stochastically.
    const STOCHASTIC: bool;
    /// The update is zeroed where it disagrees with the gradient (the cautious variant).
    const CAUTIOUS: bool;
}

/// The [`Mode`] of one combination of options.
pub(crate) struct Flags<const UNSCALE: bool, const STOCHASTIC: bool, const CAUTIOUS: bool>;

impl<const U: bool, const S: bool, const C: bool> Mode for Flags<U, S, C> {
    const UNSCALE: bool = U;
    const STOCHASTIC: bool = S;
    const CAUTIOUS: bool = C;
}

/// A pass over slices, to run in some [`Mode`].
pub(crate) trait Pass {
    /// Runs the pass compiled for mode `F`.
    fn run<F: Mode>(self);
}

/// Runs `pass` in the mode of `options`.
#[inline(always)]
pub(crate) fn in_mode(options: &StepOptions, pass: impl Pass) {
    let stochastic = matches!(options.rounding, Rounding::Stochastic { .. });
    // Bare-metal targets (microcontrollers, wasm without an OS), where code size counts more than
    // the last instructions per element: gradient unscaling and the cautious variant are decided
    // at run time (unscaling by 1 when there is none, which is exact: `g * 1 == g`; an
    // agreement mask of all ones when not cautious), so each kernel compiles two modes instead
    // of eight.
    #[cfg(target_os = "none")]
    match stochastic {
        false => pass.run::<Flags<true, false, true>>(),
        true => pass.run::<Flags<true, true, true>>(),
    }
    #[cfg(not(target_os = "none"))]
    let cautious = options.cautious != Cautious::Off;
    #[cfg(not(target_os = "none"))]
    match (options.grad_unscale.is_some(), stochastic, cautious) {
        (false, false, false) => pass.run::<Flags<false, false, false>>(),
        (true, false, false) => pass.run::<Flags<true, false, false>>(),
        (false, true, false) => pass.run::<Flags<false, true, false>>(),
        (true, true, false) => pass.run::<Flags<true, true, false>>(),
        (false, false, true) => pass.run::<Flags<false, false, true>>(),
        (true, false, true) => pass.run::<Flags<true, false, true>>(),
        (false, true, true) => pass.run::<Flags<false, true, true>>(),
        (true, true, true) => pass.run::<Flags<true, true, true>>(),
    }
}

/// The pass over all elements.
struct Passes<'a, S, const N: usize, P, G, M> {
    s: S,
    step: Step<'a, P, G, M>,
}

impl<S: Simd<N>, const N: usize, P: Element, G: Element, M: Element> Pass
    for Passes<'_, S, N, P, G, M>
{
    #[inline(always)]
    fn run<F: Mode>(self) {
        passes::<S, N, P, G, M, F>(self.s, self.step);
    }
}

/// The pass over all elements, in mode `F`.
#[inline(always)]
fn passes<S, const N: usize, P, G, M, F: Mode>(s: S, step: Step<'_, P, G, M>)
where
    S: Simd<N>,
    P: Element,
    G: Element,
    M: Element,
{
    let Step {
        params,
        grads,
        momentum,
        k,
        options,
        key,
    } = step;
    debug_assert!(params.len() == grads.len() && params.len() == momentum.len());
    let v = Lanes::new(s, k, options, key);
    // Lane i of `index` is the low 32 bits of its element's global index.
    let index = s.add_u32(s.splat_u32(options.offset as u32), s.lane_indices());
    // Two chunks at a time where the instruction set asks for it, for bf16 only (the pair
    // stores rely on every value coming from bf16: see `Simd::store_bf16_pair`). An inline
    // `const` condition, so that other instantiations do not even compile the pair code.
    let len = params.len();
    let (head, end) = if const { S::PAIRS && pairs::all_bf16::<P, G, M>() } {
        pairs::pairs::<S, N, P, G, M, F>(s, &v, params, grads, momentum, options.offset)
    } else {
        (len, len)
    };
    // The head and what the pairs left, through one copy of the single-chunk loop (inlined
    // once, not twice, into each of the 27 dtype combinations of every path).
    for range in [0..head, end..len] {
        let index = s.add_u32(index, s.splat_u32(range.start as u32));
        let (p, g) = (&mut params[range.clone()], &grads[range.clone()]);
        singles::<S, N, P, G, M, F>(s, &v, p, g, &mut momentum[range], index);
    }
}

/// Single chunks and a zero-padded tail over equally long slices; lane `i` of `index` is the
/// low 32 bits of the global index of element `i`.
#[inline(always)]
fn singles<S, const N: usize, P, G, M, F: Mode>(
    s: S,
    v: &Lanes<S::F32, S::U32>,
    params: &mut [P],
    grads: &[G],
    momentum: &mut [M],
    mut index: S::U32,
) where
    S: Simd<N>,
    P: Element,
    G: Element,
    M: Element,
{
    let stride = s.splat_u32(N as u32);
    let last = (last_byte(params), last_byte(grads), last_byte(momentum));
    let (p_chunks, p_tail) = params.as_chunks_mut::<N>();
    let (g_chunks, g_tail) = grads.as_chunks::<N>();
    let (m_chunks, m_tail) = momentum.as_chunks_mut::<N>();
    for ((p, g), m) in p_chunks.iter_mut().zip(g_chunks).zip(m_chunks.iter_mut()) {
        // Ask for the lines a few chunks ahead: more loads in flight than the out-of-order
        // window alone would issue, which is what a DRAM-bound step is limited by.
        s.prefetch(ahead(&*p, last.0));
        s.prefetch(ahead(g, last.1));
        s.prefetch(ahead(&*m, last.2));
        body::<S, N, P, G, M, F>(s, v, p, g, m, index);
        index = s.add_u32(index, stride);
    }
    let n = p_tail.len();
    if n > 0 {
        let (mut p, mut g, mut m) = ([P::default(); N], [G::default(); N], [M::default(); N]);
        p[..n].copy_from_slice(p_tail);
        g[..n].copy_from_slice(g_tail);
        m[..n].copy_from_slice(m_tail);
        body::<S, N, P, G, M, F>(s, v, &mut p, &g, &mut m, index);
        p_tail.copy_from_slice(&p[..n]);
        m_tail.copy_from_slice(&m[..n]);
    }
}

/// Lion on `N` elements, in exactly the order of operations of `reference::step_with`.
#[inline(always)]
fn body<S, const N: usize, P, G, M, F: Mode>(
    s: S,
    k: &Lanes<S::F32, S::U32>,
    p: &mut [P; N],
    g: &[G; N],
    m: &mut [M; N],
    index: S::U32,
) where
    S: Simd<N>,
    P: Element,
    G: Element,
    M: Element,
{
    let (c, new_mom) = momentum_math::<S, N, F>(s, k, G::load(s, g), M::load(s, m));
    let new_param = k.param_math(s, P::load(s, p), c);
    if F::STOCHASTIC {
        let random = random_bits(s, k.key, index);
        P::store_stochastic(s, new_param, random, p);
        M::store_stochastic(s, new_mom, s.shr::<16>(random), m);
    } else {
        P::store(s, new_param, p);
        M::store(s, new_mom, m);
    }
}

/// The momentum half of Lion's arithmetic on loaded lanes, in exactly the order of operations of
/// `reference::step_with`: returns the interpolation `c` (which gives the update's sign) and the
/// new momentum, unrounded. `F::CAUTIOUS`: `c` is zeroed where it does not agree with the gradient,
/// so that `Lanes::param_math` leaves those parameters at their decayed value.
#[inline(always)]
fn momentum_math<S: Simd<N>, const N: usize, F: Mode>(
    s: S,
    k: &Lanes<S::F32, S::U32>,
    grad: S::F32,
    mom: S::F32,
) -> (S::F32, S::F32) {
    let grad = k.gradient(s, grad, F::UNSCALE);
    let c = k.interpolation(s, grad, mom);
    let new_mom = s.add(s.mul(mom, k.beta2), s.mul(grad, k.one_minus_beta2));
    if F::CAUTIOUS {
        let keep = s.or(k.agreement(s, c, grad), k.not_cautious);
        return (s.bits_to_f32(s.and(keep, s.to_bits(c))), new_mom);
    }
    (c, new_mom)
}
