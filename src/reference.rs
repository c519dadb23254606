//! The scalar specification of a Lion step: plain, obvious, one element at a time.
//!
//! This module is the oracle: every vectorized path of the crate, on every instruction set and for
//! every combination of element types, is tested to produce **bit-identical** results to
//! [`step`] here (a NaN must be matched by a NaN).
//!
//! It follows the reference PyTorch implementation (`lion_pytorch.py` of google/automl) operation
//! by operation, with every multiply and add rounded on its own:
//!
//! ```text
//! decay = f32(1 - lr*wd)    b1 = f32(beta1)    omb1 = f32(1 - beta1)     (f64 math,
//! lr    = f32(lr)           b2 = f32(beta2)    omb2 = f32(1 - beta2)      rounded once)
//!
//! for every element, in f32:
//!     p1 = p * decay                        decoupled weight decay, on the old parameter
//!     c  = m*b1 + g*omb1                    interpolation with the OLD momentum
//!     p  = p1 - lr * sign(c)                sign(+-0) = sign(NaN) = +0, as torch.sign
//!     m  = m*b2 + g*omb2                    momentum update
//! ```
//!
//! The [cautious variant](crate::Cautious) first counts the elements where `sign(c) * g > 0`
//! ([`cautious_count`]) and then moves only those, by `lr_c = f32(lr) * f32(numel / (count + 1))`.
//!
//! f16 and bf16 inputs are widened to f32 exactly; results are rounded once to the storage type,
//! to nearest with ties to even, by `half`'s own conversions — or, with
//! [`Rounding::Stochastic`](crate::Rounding), by [`Element::from_f32_stochastic`] with the bits of
//! [`random_bits`].

use crate::dtype::q8::{RECIP_GAPS, THRESHOLDS};
use crate::dtype::{Element, Q8_BLOCK, Q8_MAP, Q8Mut, Q8Ref};
use crate::error::check_lengths;
use crate::hyper::Consts;
use crate::options::cautious_scale;
use crate::{Cautious, Error, Hyperparams, Outcome, Rounding, StepOptions};

/// One Lion step, computed the plain scalar way. Same contract as [`crate::step`].
///
/// ```
/// use lion_optim::{Hyperparams, reference};
///
/// let hp = Hyperparams { lr: 0.5, beta1: 0.0, beta2: 0.0, weight_decay: 0.0 };
/// let mut p = [1.0f32, 1.0, 1.0];
/// let mut m = [0.0f32; 3];
/// reference::step(&mut p, &[2.0f32, -3.0, 0.0], &mut m, &hp)?;
/// assert_eq!(p, [0.5, 1.5, 1.0]); // moved by -lr*sign(g); a zero gradient does not move it
/// assert_eq!(m, [2.0, -3.0, 0.0]); // beta2 = 0: the momentum becomes the gradient
/// # Ok::<(), lion_optim::Error>(())
/// ```
pub fn step<P: Element, G: Element, M: Element>(
    params: &mut [P],
    grads: &[G],
    momentum: &mut [M],
    hp: &Hyperparams,
) -> Result<(), Error> {
    step_with(params, grads, momentum, hp, &StepOptions::default()).map(|_| ())
}

/// One Lion step with per-call options, computed the plain scalar way. Same contract as
/// [`crate::step_with`].
///
/// ```text
/// if skip_non_finite and some g (below) is infinite or NaN: nothing is written (SkippedNonFinite)
/// for element i:
///     g  = grad[i]                    (times f32(grad_unscale), if given)
///     p1 = p * decay                  (decay per `options.weight_decay`)
///     c  = m*b1 + g*omb1
///     d  = sign(c), or sign(-c) to maximize
///     u  = lr*d                       cautious: lr_c*d if sign(c)*g > 0, else 0
///     p  = store(p1 - u, low 16 bits of r)        r = random_bits(seed, step, offset + i)
///     m  = store(m*b2 + g*omb2, high 16 bits of r)    (r only for stochastic rounding)
/// ```
///
/// ```
/// use lion_optim::{Hyperparams, StepOptions, reference};
///
/// let hp = Hyperparams { lr: 0.5, ..Hyperparams::default() };
/// let (mut p, mut m) = ([1.0f32], [0.0f32]);
/// let opts = StepOptions { maximize: true, ..StepOptions::default() };
/// reference::step_with(&mut p, &[1.0f32], &mut m, &hp, &opts)?;
/// assert_eq!(p, [1.5]);
/// # Ok::<(), lion_optim::Error>(())
/// ```
pub fn step_with<P: Element, G: Element, M: Element>(
    params: &mut [P],
    grads: &[G],
    momentum: &mut [M],
    hp: &Hyperparams,
    options: &StepOptions,
) -> Result<Outcome, Error> {
    let lens = (params.len(), momentum.len());
    let agreeing = |k: &Consts| count(grads, momentum, k, options);
    let Some(k) = settle(hp, options, lens, grads, false, agreeing)? else {
        return Ok(Outcome::SkippedNonFinite);
    };
    lion(params, grads, momentum, &k, options);
    Ok(Outcome::Applied)
}

/// What a step settles before its loop, in this order: the constants (an invalid hyperparameter
/// or option is an [`Error`]), the lengths (`(params, momentum)` against the gradients'), for
/// 8-bit momentum the offset, then `None` if the step skips (`skip_non_finite` and a non-finite
/// unscaled gradient), else the constants with the cautious learning rate (`agreeing` counts
/// on demand).
fn settle<G: Element>(
    hp: &Hyperparams,
    options: &StepOptions,
    (params, momentum): (usize, usize),
    grads: &[G],
    q8: bool,
    agreeing: impl FnOnce(&Consts) -> u64,
) -> Result<Option<Consts>, Error> {
    let mut k = hp.constants_with(options, params)?;
    check_lengths(params, grads.len(), momentum)?;
    if q8 {
        check_q8_offset(options)?;
    }
    let finite = |g: &G| unscaled(*g, &k, options).is_finite();
    if options.skip_non_finite && !grads.iter().all(finite) {
        return Ok(None);
    }
    // lr_c = f32(lr) * f32(numel / (agreeing + 1))
    match options.cautious {
        Cautious::Off => {}
        Cautious::Whole => k.lr *= cautious_scale(agreeing(&k), params as u64),
        Cautious::Shard { agreeing, numel } => k.lr *= cautious_scale(agreeing, numel),
    }
    Ok(Some(k))
}

/// The number of elements of these slices where a cautious step would move the parameter:
/// where `sign(c) * g > 0`, with `c` and `g` as [`step_with`] computes them (the read-only
/// counting pass of the [cautious variant](crate::Cautious)). Same contract as
/// [`crate::cautious_count`].
///
/// ```
/// use lion_optim::{Hyperparams, StepOptions, reference};
///
/// let hp = Hyperparams { beta1: 0.5, ..Hyperparams::default() };
/// // c = 0.5*m + 0.5*g: agrees with g in elements 0 (both > 0) and 3 (both < 0).
/// let (g, m) = ([1.0f32, 1.0, 0.0, -1.0], [0.0f32, -3.0, 1.0, -1.0]);
/// assert_eq!(reference::cautious_count(&g, &m, &hp, &StepOptions::default())?, 2);
/// # Ok::<(), lion_optim::Error>(())
/// ```
pub fn cautious_count<G: Element, M: Element>(
    grads: &[G],
    momentum: &[M],
    hp: &Hyperparams,
    options: &StepOptions,
) -> Result<u64, Error> {
    let k = hp.count_constants(options, (grads.len(), momentum.len()))?;
    Ok(count(grads, momentum, &k, options))
}

/// The counting loop of [`cautious_count`], on validated input.
pub(crate) fn count<G: Element, M: Element>(
    grads: &[G],
    momentum: &[M],
    k: &Consts,
    options: &StepOptions,
) -> u64 {
    let agreeing = grads.iter().zip(momentum).filter(|(g, m)| {
        let grad = unscaled(**g, k, options);
        agrees(interpolation(m.to_f32_exact(), grad, k), grad)
    });
    agreeing.count() as u64
}

/// The gradient as a step uses it: times `f32(grad_unscale)` if given.
fn unscaled<G: Element>(g: G, k: &Consts, options: &StepOptions) -> f32 {
    match options.grad_unscale {
        Some(_) => g.to_f32_exact() * k.inv_scale,
        None => g.to_f32_exact(),
    }
}

/// `c = m*b1 + g*omb1`, each operation rounded on its own.
fn interpolation(mom: f32, grad: f32, k: &Consts) -> f32 {
    mom * k.beta1 + grad * k.one_minus_beta1
}

/// Whether `sign(c) * g > 0`: the cautious variant moves this element.
fn agrees(c: f32, grad: f32) -> bool {
    sign(c) * grad > 0.0
}

/// The element loop of [`step_with`], on validated input.
pub(crate) fn lion<P: Element, G: Element, M: Element>(
    params: &mut [P],
    grads: &[G],
    momentum: &mut [M],
    k: &Consts,
    options: &StepOptions,
) {
    let elements = params.iter_mut().zip(grads).zip(momentum.iter_mut());
    for (i, ((p, g), m)) in elements.enumerate() {
        let (new_param, new_mom) = update(*p, *g, m.to_f32_exact(), k, options);
        match options.rounding {
            Rounding::Nearest => {
                *p = P::from_f32_rounded(new_param);
                *m = M::from_f32_rounded(new_mom);
            }
            Rounding::Stochastic { seed } => {
                let r = random_bits(seed, options.step, options.offset + i as u64);
                *p = P::from_f32_stochastic(new_param, r as u16);
                *m = M::from_f32_stochastic(new_mom, (r >> 16) as u16);
            }
        }
    }
}

/// One element's new parameter and new momentum, unrounded, from the old parameter, its
/// gradient and its old momentum (widened): the arithmetic of [`step_with`].
fn update<P: Element, G: Element>(
    p: P,
    g: G,
    mom: f32,
    k: &Consts,
    options: &StepOptions,
) -> (f32, f32) {
    let grad = unscaled(g, k, options);
    let decayed = p.to_f32_exact() * k.decay;
    let c = interpolation(mom, grad, k);
    let direction = if options.maximize { sign(-c) } else { sign(c) };
    let step = match options.cautious {
        Cautious::Off => k.lr * direction,
        // `k.lr` is the cautious `lr_c` here (see `step_with`).
        _ if agrees(c, grad) => k.lr * direction,
        _ => 0.0,
    };
    (decayed - step, mom * k.beta2 + grad * k.one_minus_beta2)
}

/// One Lion step with 8-bit momentum (see [`Q8Mut`]), computed the plain scalar way: the
/// specification of the 8-bit step of [`step_many`](crate::step_many) and
/// [`Lion`](crate::Lion), which every backend follows bit for bit.
///
/// The slices hold a tensor's elements `offset..offset + len` (`options.offset`, a multiple of
/// 256: blocks are aligned to the whole tensor; the last block may be partial only at the
/// tensor's end). For each block of 256 elements (in f32):
///
/// ```text
/// m_i   = Q8_MAP[code_i] * absmax                          the old momentum (one rounding)
/// p_i', m_i'                                              exactly as step_with with m_i
/// A     = max_i |m_i'|                                     (a NaN if any m_i' is NaN)
/// A < 2^-126 (0 or subnormal):  absmax' = 0,   code_i' = 127 (zero)
/// A not finite (inf or NaN):    absmax' = NaN, code_i' = 127 (the block is NaN from now on)
/// otherwise:                    absmax' = A,   code_i' = q8_quantize(m_i' * f32(1 / A))
///                               (stochastic rounding: q8_quantize_stochastic with the high 16
///                               bits of random_bits(seed, step, offset + i))
/// ```
///
/// The parameters round as in [`step_with`] (with stochastic rounding, with the low 16 random
/// bits). A cautious step counts the agreeing elements with the decoded old momentum.
///
/// ```
/// use lion_optim::{Hyperparams, Q8Mut, StepOptions, Q8_MAP, reference};
///
/// let hp = Hyperparams { lr: 0.5, beta1: 0.0, beta2: 0.0, weight_decay: 0.0 };
/// let (mut codes, mut absmax) = ([127u8; 3], [0.0f32]);
/// let mut p = [1.0f32; 3];
/// let m = Q8Mut::new(&mut codes, &mut absmax)?;
/// reference::step_q8_with(&mut p, &[2.0f32, -1.0, 0.0], m, &hp, &StepOptions::default())?;
/// assert_eq!(p, [0.5, 1.5, 1.0]);
/// // beta2 = 0: the new momentum is the gradient: absmax 2, codes for 1, -0.5 and 0.
/// assert_eq!(absmax, [2.0]);
/// assert_eq!(codes[0], 255);
/// assert_eq!(codes[2], 127);
/// assert_eq!(Q8_MAP[usize::from(codes[1])] * 2.0, reference::q8_dequantize(codes[1], 2.0));
/// # Ok::<(), lion_optim::Error>(())
/// ```
pub fn step_q8_with<P: Element, G: Element>(
    params: &mut [P],
    grads: &[G],
    momentum: Q8Mut<'_>,
    hp: &Hyperparams,
    options: &StepOptions,
) -> Result<Outcome, Error> {
    let lens = (params.len(), momentum.len());
    let agreeing = |k: &Consts| count_q8(grads, momentum.as_ref(), k, options);
    let Some(k) = settle(hp, options, lens, grads, true, agreeing)? else {
        return Ok(Outcome::SkippedNonFinite);
    };
    q8_lion(params, grads, momentum, &k, options);
    Ok(Outcome::Applied)
}

/// The cautious count with 8-bit momentum (decoded), on validated input.
pub(crate) fn count_q8<G: Element>(
    grads: &[G],
    momentum: Q8Ref<'_>,
    k: &Consts,
    options: &StepOptions,
) -> u64 {
    let agreeing = grads.iter().enumerate().filter(|&(i, g)| {
        let old = momentum.get(i).unwrap_or(0.0);
        let grad = unscaled(*g, k, options);
        agrees(interpolation(old, grad, k), grad)
    });
    agreeing.count() as u64
}

/// Refuses an 8-bit step that does not start at a block boundary of the tensor.
pub(crate) fn check_q8_offset(options: &StepOptions) -> Result<(), Error> {
    if !options.offset.is_multiple_of(Q8_BLOCK as u64) {
        return Err(Error::InvalidHyperparameter {
            name: "offset",
            value: options.offset as f64,
            rule: "must be a multiple of 256 with 8-bit momentum (its blocks are aligned to the tensor)",
        });
    }
    Ok(())
}

/// The block loop of [`step_q8_with`], on validated input.
pub(crate) fn q8_lion<P: Element, G: Element>(
    params: &mut [P],
    grads: &[G],
    momentum: Q8Mut<'_>,
    k: &Consts,
    options: &StepOptions,
) {
    let Q8Mut { codes, absmax } = momentum;
    let blocks = params
        .chunks_mut(Q8_BLOCK)
        .zip(grads.chunks(Q8_BLOCK))
        .zip(codes.chunks_mut(Q8_BLOCK))
        .zip(absmax.iter_mut());
    for (b, (((p, g), c), a)) in blocks.enumerate() {
        let first = options.offset + (b * Q8_BLOCK) as u64;
        let random = |i: usize| match options.rounding {
            Rounding::Nearest => None,
            Rounding::Stochastic { seed } => {
                Some(random_bits(seed, options.step, first + i as u64))
            }
        };
        let mut new = [0.0f32; Q8_BLOCK];
        let mut largest = 0u32;
        for (i, (p, g)) in p.iter_mut().zip(g).enumerate() {
            let (new_param, new_mom) = update(*p, *g, q8_dequantize(c[i], *a), k, options);
            *p = match random(i) {
                None => P::from_f32_rounded(new_param),
                Some(r) => P::from_f32_stochastic(new_param, r as u16),
            };
            new[i] = new_mom;
            largest = largest.max(new_mom.to_bits() & 0x7fff_ffff);
        }
        let scale = f32::from_bits(largest);
        if largest < f32::MIN_POSITIVE.to_bits() || !scale.is_finite() {
            *a = if scale.is_finite() { 0.0 } else { f32::NAN };
            c.fill(127);
            continue;
        }
        let inv = 1.0 / scale;
        for (i, code) in c.iter_mut().enumerate() {
            let v = new[i] * inv;
            *code = match random(i) {
                None => q8_quantize(v),
                Some(r) => q8_quantize_stochastic(v, (r >> 16) as u16),
            };
        }
        *a = scale;
    }
}

/// The value of the 8-bit code `code` in a block of scale `absmax`: `Q8_MAP[code] * absmax`,
/// rounded once.
///
/// ```
/// assert_eq!(lion_optim::reference::q8_dequantize(255, 0.5), 0.5);
/// assert_eq!(lion_optim::reference::q8_dequantize(127, 0.5), 0.0);
/// ```
pub fn q8_dequantize(code: u8, absmax: f32) -> f32 {
    Q8_MAP[usize::from(code)] * absmax
}

/// The 8-bit code of a value `v` (the momentum divided by its block's scale, so in `[-1, 1]`)
/// rounded to the nearest code: `#{k : T[k] < v}`, with the decision thresholds at the f32
/// midpoints `T[k] = f32(0.5 * f32(Q8_MAP[k] + Q8_MAP[k+1]))`. A value exactly at a threshold
/// takes the lower code; `±0` takes code 127 (zero); values below `Q8_MAP[0]` code 0, above 1
/// code 255; a NaN code 0.
///
/// ```
/// use lion_optim::{Q8_MAP, reference::q8_quantize};
///
/// assert_eq!(q8_quantize(1.0), 255);
/// assert_eq!(q8_quantize(-0.0), 127);
/// assert_eq!(q8_quantize(-1.0), 0);
/// let c = usize::from(q8_quantize(0.3));
/// assert!((Q8_MAP[c] - 0.3).abs() <= (Q8_MAP[c + 1] - 0.3).abs());
/// assert!((Q8_MAP[c] - 0.3).abs() <= (Q8_MAP[c - 1] - 0.3).abs());
/// ```
pub fn q8_quantize(v: f32) -> u8 {
    // (The count, by binary search: the thresholds ascend.)
    THRESHOLDS.partition_point(|&t| t < v) as u8
}

/// The 8-bit code of `v` rounded stochastically between its two neighbouring codes with 16
/// random bits: with `Q8_MAP[k] <= v < Q8_MAP[k+1]`, the code is `k + 1` when
/// `f32(f32(v - Q8_MAP[k]) * f32(1 / f32(Q8_MAP[k+1] - Q8_MAP[k]))) * 65536 > random`, else
/// `k` — up with probability (distance to the lower code) / (their gap), so unbiased: a small
/// change of the momentum survives on average instead of being rounded away. `±0` takes code
/// 127; values below `Q8_MAP[0]` code 0; values from 1 code 255; a NaN code 0.
///
/// ```
/// use lion_optim::{Q8_MAP, reference::q8_quantize_stochastic};
///
/// let v = 0.75 * Q8_MAP[200] + 0.25 * Q8_MAP[201]; // a quarter of the way up
/// let ups = (0..=u16::MAX).filter(|&r| q8_quantize_stochastic(v, r) == 201).count();
/// assert!((ups as f64 / 65536.0 - 0.25).abs() < 1e-3);
/// assert_eq!(q8_quantize_stochastic(Q8_MAP[200], 0), 200);
/// ```
pub fn q8_quantize_stochastic(v: f32, random: u16) -> u8 {
    if v == 0.0 {
        return 127;
    }
    if v.is_nan() || v < Q8_MAP[0] {
        return 0; // below the lowest code, or NaN
    }
    // The largest code at most v (by binary search: the codes ascend).
    let k = Q8_MAP.partition_point(|&c| c <= v) - 1;
    if k == 255 {
        return 255;
    }
    let up = (v - Q8_MAP[k]) * RECIP_GAPS[k] * 65536.0 > f32::from(random);
    (k + usize::from(up)) as u8
}

/// The 32 random bits of element `index` in step `step` of stochastic rounding with `seed`:
/// the low 16 bits round the parameter, the high 16 bits the momentum.
///
/// A counter-based generator: a pure function of its arguments, so results do not depend on
/// the instruction set, the thread count or how a tensor is split. The per-element function is
/// Chris Wellons' `lowbias32`, a bijective 32-bit integer hash with very low bias, applied to
/// the low 32 bits of the index xored with a key mixed (by SplitMix64's finalizer) from the
/// seed, the step and the index's high 32 bits.
///
/// ```
/// use lion_optim::reference::random_bits;
///
/// assert_eq!(random_bits(1, 2, 3), random_bits(1, 2, 3));
/// assert_ne!(random_bits(1, 2, 3), random_bits(1, 2, 4));
/// assert_ne!(random_bits(1, 2, 3), random_bits(1, 3, 3));
/// ```
pub fn random_bits(seed: u64, step: u64, index: u64) -> u32 {
    lowbias32(index as u32 ^ stream_key(seed, step, (index >> 32) as u32))
}

/// The per-call key of [`random_bits`] for elements whose index has the high 32 bits `high`.
pub(crate) fn stream_key(seed: u64, step: u64, high: u32) -> u32 {
    let k = mix64(seed ^ mix64(step ^ mix64(u64::from(high) ^ 0x9e37_79b9_7f4a_7c15)));
    (k ^ (k >> 32)) as u32
}

/// SplitMix64's output function (Steele, Lea, Flood 2014).
const fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// `lowbias32` (Chris Wellons, "Prospecting for Hash Functions", 2018).
pub(crate) const fn lowbias32(mut x: u32) -> u32 {
    x ^= x >> 16;
    x = x.wrapping_mul(0x7feb_352d);
    x ^= x >> 15;
    x = x.wrapping_mul(0x846c_a68b);
    x ^= x >> 16;
    x
}
/// `torch.sign`: `1` if `x > 0`, `-1` if `x < 0`, and `+0` for `±0` **and for NaN**.
///
/// ```
/// use lion_optim::reference::sign;
///
/// assert_eq!(sign(2.5), 1.0);
/// assert_eq!(sign(-1e-45), -1.0);
/// assert_eq!(sign(-0.0).to_bits(), 0.0f32.to_bits());
/// assert_eq!(sign(f32::NAN).to_bits(), 0.0f32.to_bits());
/// ```
pub fn sign(x: f32) -> f32 {
    if x > 0.0 {
        1.0
    } else if x < 0.0 {
        -1.0
    } else {
        0.0
    }
}
