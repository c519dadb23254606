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

use crate::element::Element;
use crate::error::check_lengths;
use crate::hyper::Consts;
use crate::{Cautious, Error, Hyperparams, Rounding, StepOptions};

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
    step_with(params, grads, momentum, hp, &StepOptions::default())
}

/// One Lion step with per-call options, computed the plain scalar way. Same contract as
/// [`crate::step_with`].
///
/// ```text
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
) -> Result<(), Error> {
    let mut k = hp.constants_with(options, params.len())?;
    check_lengths(params.len(), grads.len(), momentum.len())?;
    match options.cautious {
        Cautious::Off => {}
        Cautious::Whole => {
            let agreeing = count(grads, momentum, &k, options);
            k = k.cautious(agreeing, params.len() as u64);
        }
        Cautious::Shard { agreeing, numel } => k = k.cautious(agreeing, numel),
    }
    lion(params, grads, momentum, &k, options);
    Ok(())
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
    let k = hp.constants_with(options, grads.len())?;
    check_lengths(grads.len(), grads.len(), momentum.len())?;
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
        let (param, mom) = (p.to_f32_exact(), m.to_f32_exact());
        let grad = unscaled(*g, k, options);
        let decayed = param * k.decay;
        let c = interpolation(mom, grad, k);
        let direction = if options.maximize { sign(-c) } else { sign(c) };
        let update = match options.cautious {
            Cautious::Off => k.lr * direction,
            // `k.lr` is the cautious `lr_c` here (see `Consts::cautious`).
            _ if agrees(c, grad) => k.lr * direction,
            _ => 0.0,
        };
        let new_param = decayed - update;
        let new_mom = mom * k.beta2 + grad * k.one_minus_beta2;
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
