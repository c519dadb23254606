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
//! f16 and bf16 inputs are widened to f32 exactly; results are rounded once to the storage type,
//! to nearest with ties to even, by `half`'s own conversions.

use crate::element::Element;
use crate::error::check_lengths;
use crate::hyper::Consts;
use crate::{Error, Hyperparams};

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
    let k = hp.constants()?;
    check_lengths(params.len(), grads.len(), momentum.len())?;
    lion(params, grads, momentum, &k);
    Ok(())
}

/// The element loop of [`step`], on validated input.
pub(crate) fn lion<P: Element, G: Element, M: Element>(
    params: &mut [P],
    grads: &[G],
    momentum: &mut [M],
    k: &Consts,
) {
    for ((p, g), m) in params.iter_mut().zip(grads).zip(momentum.iter_mut()) {
        let (param, grad, mom) = (p.to_f32_exact(), g.to_f32_exact(), m.to_f32_exact());
        let decayed = param * k.decay;
        let c = mom * k.beta1 + grad * k.one_minus_beta1;
        let new_param = decayed - k.lr * sign(c);
        let new_mom = mom * k.beta2 + grad * k.one_minus_beta2;
        *p = P::from_f32_rounded(new_param);
        *m = M::from_f32_rounded(new_mom);
    }
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
