//! Hyperparameters and step options: their validation (the only place either is checked) and
//! the f32 constants a step computes from them.

use crate::{Cautious, Error, StepOptions, WeightDecay};

/// The hyperparameters of one Lion step.
///
/// Frameworks and the Python reference pass hyperparameters as double-precision numbers; so does
/// this crate. Each step turns them into f32 constants, each **computed in f64 and rounded once**
/// (`f32(1 - lr*wd)`, `f32(1 - beta1)`, ...), exactly as the reference PyTorch code does.
///
/// The defaults are those of the paper's reference code: `lr = 1e-4`, `betas = (0.9, 0.99)`,
/// `weight_decay = 0`.
///
/// ```
/// use lion_optim::Hyperparams;
///
/// let hp = Hyperparams { lr: 3e-4, weight_decay: 0.1, ..Hyperparams::default() };
/// assert_eq!((hp.beta1, hp.beta2), (0.9, 0.99));
/// assert!(hp.validate().is_ok());
/// assert!(Hyperparams { beta2: 1.0, ..hp }.validate().is_err());
/// ```
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Hyperparams {
    /// Learning rate: each step moves a parameter by exactly `±lr` (after decay). Finite, `>= 0`,
    /// and small enough to be a finite f32.
    pub lr: f64,
    /// Interpolation factor between momentum and gradient that decides the update's sign.
    /// In `[0, 1)`.
    pub beta1: f64,
    /// Decay rate of the momentum. In `[0, 1)`.
    pub beta2: f64,
    /// Decoupled weight decay: parameters are multiplied by `1 - lr * weight_decay` before the
    /// update. Finite and `>= 0`, with `lr * weight_decay <= 1` (a larger product would flip
    /// the parameters' signs: an `Err`).
    pub weight_decay: f64,
}

impl Default for Hyperparams {
    /// `lr = 1e-4`, `beta1 = 0.9`, `beta2 = 0.99`, `weight_decay = 0` (the reference's defaults).
    fn default() -> Self {
        Self {
            lr: 1e-4,
            beta1: 0.9,
            beta2: 0.99,
            weight_decay: 0.0,
        }
    }
}

impl Hyperparams {
    /// Checks every field against its domain; the error names the first field that is wrong.
    ///
    /// ```
    /// use lion_optim::{Error, Hyperparams};
    ///
    /// let hp = Hyperparams { lr: -1e-3, ..Hyperparams::default() };
    /// assert!(matches!(hp.validate(), Err(Error::InvalidHyperparameter { name: "lr", .. })));
    /// ```
    pub fn validate(&self) -> Result<(), Error> {
        self.constants().map(|_| ())
    }

    /// Validates and computes the per-step f32 constants of a plain step.
    pub(crate) fn constants(&self) -> Result<Consts, Error> {
        self.constants_with(&StepOptions::default(), 0)
    }

    /// The constants of a cautious count over `grads` and `momentum` elements: the options
    /// validated as [`constants_with`](Self::constants_with) does, then the lengths.
    pub(crate) fn count_constants(
        &self,
        opts: &StepOptions,
        (grads, momentum): (usize, usize),
    ) -> Result<Consts, Error> {
        let k = self.constants_with(opts, grads)?;
        crate::error::check_lengths(grads, grads, momentum)?;
        Ok(k)
    }

    /// Validates hyperparameters and options (for slices of `len` elements) and computes the
    /// per-step f32 constants.
    #[inline(always)]
    pub(crate) fn constants_with(&self, opts: &StepOptions, len: usize) -> Result<Consts, Error> {
        let bad = |name, value, rule| Err(Error::InvalidHyperparameter { name, value, rule });
        let Self {
            lr,
            beta1,
            beta2,
            weight_decay: wd,
        } = *self;
        if !(lr.is_finite() && lr >= 0.0) {
            return bad("lr", lr, "must be finite and >= 0");
        }
        if !(lr as f32).is_finite() {
            return bad("lr", lr, "must be a finite f32 (<= 3.4e38)");
        }
        if !(0.0..1.0).contains(&beta1) {
            return bad("beta1", beta1, "must be in [0, 1)");
        }
        if !(0.0..1.0).contains(&beta2) {
            return bad("beta2", beta2, "must be in [0, 1)");
        }
        if !(wd.is_finite() && wd >= 0.0) {
            return bad("weight_decay", wd, "must be finite and >= 0");
        }
        let inv_scale = validate_options(opts, len)?;
        let decay = match opts.weight_decay {
            WeightDecay::Paper => 1.0 - lr * wd,
            WeightDecay::FullyDecoupled { max_lr } => 1.0 - wd * lr / max_lr,
        };
        // The decay factor multiplies the parameters: below 0 it would flip their signs
        // (`lr * weight_decay > 1`). It is at most 1 since lr, wd >= 0 (and max_lr > 0), and a
        // value in [0, 1] is a finite f32.
        if !(decay.is_finite() && decay >= 0.0) {
            let what = match opts.weight_decay {
                WeightDecay::Paper => {
                    "the decay factor 1 - lr * weight_decay must be in [0, 1] (lr * weight_decay <= 1)"
                }
                WeightDecay::FullyDecoupled { .. } => {
                    "the decay factor 1 - weight_decay * lr / max_lr must be in [0, 1]"
                }
            };
            return bad("weight_decay", wd, what);
        }
        Ok(Consts {
            decay: decay as f32,
            // +0, never -0 (which `lr >= 0` admits): `lr * sign(c)` is then exactly lr, -lr
            // or +0, which every path computes by selecting bits.
            lr: (lr as f32).abs(),
            beta1: beta1 as f32,
            one_minus_beta1: (1.0 - beta1) as f32,
            beta2: beta2 as f32,
            one_minus_beta2: (1.0 - beta2) as f32,
            inv_scale,
        })
    }
}

/// Validates the options for slices of `len` elements; returns the f32 inverse scale (1 without
/// unscaling).
#[inline(always)]
pub(crate) fn validate_options(opts: &StepOptions, len: usize) -> Result<f32, Error> {
    let bad = |name, value, rule| Err(Error::InvalidHyperparameter { name, value, rule });
    if let WeightDecay::FullyDecoupled { max_lr } = opts.weight_decay
        && !(max_lr.is_finite() && max_lr > 0.0)
    {
        return bad("max_lr", max_lr, "must be finite and > 0");
    }
    let inv_scale = match opts.grad_unscale {
        None => 1.0,
        Some(s) => {
            let s32 = s as f32;
            if !(s.is_finite() && s32.is_finite() && s32 > 0.0) {
                return bad("grad_unscale", s, "must be > 0 and finite in f32");
            }
            s32
        }
    };
    let Some(end) = opts.offset.checked_add(len as u64) else {
        return bad(
            "offset",
            opts.offset as f64,
            "offset + length overflows u64",
        );
    };
    if let Cautious::Shard { agreeing, numel } = opts.cautious {
        if agreeing > numel {
            return bad(
                "cautious.agreeing",
                agreeing as f64,
                "must be <= cautious.numel",
            );
        }
        if end > numel {
            return bad(
                "cautious.numel",
                numel as f64,
                "must be >= offset + the length of the slices",
            );
        }
    }
    Ok(inv_scale)
}

impl Consts {
    /// The constants of the step of a tensor of `numel` elements with the cautious variant
    /// `cautious` (see [`Cautious`]): for [`Cautious::Whole`], `count` gives the agreeing
    /// elements of the tensor; with `agreeing` of `numel` agreeing, the learning rate becomes
    /// `lr_c = f32(lr) * f32(numel / (agreeing + 1))`. The one place the rule is applied
    /// (besides its specification, `reference::step_with`).
    #[inline]
    pub(crate) fn caution(
        self,
        cautious: Cautious,
        numel: u64,
        count: impl FnOnce() -> u64,
    ) -> Self {
        let (agreeing, numel) = match cautious {
            Cautious::Off => return self,
            Cautious::Whole => (count(), numel),
            Cautious::Shard { agreeing, numel } => (agreeing, numel),
        };
        let lr = self.lr * crate::options::cautious_scale(agreeing, numel);
        Self { lr, ..self }
    }

    /// The inverse loss scale, if the options unscale (`grad_unscale`).
    #[inline]
    pub(crate) fn unscale(&self, options: &StepOptions) -> Option<f32> {
        options.grad_unscale.map(|_| self.inv_scale)
    }
}

/// The f32 constants of one step, each computed in f64 from [`Hyperparams`] and rounded once.
///
/// Aligned to 16 bytes (32 in all): a step copies it a few times on its way to the kernel, and
/// 28 unaligned bytes were copied as two overlapping 16-byte moves whose loads could not be
/// forwarded from the stores before them (a stall each, visible in a step of a small tensor).
#[derive(Clone, Copy, Debug, PartialEq)]
#[repr(align(16))]
pub(crate) struct Consts {
    /// `f32(1 - lr * weight_decay)` (or `f32(1 - weight_decay * lr / max_lr)`)
    pub decay: f32,
    /// `f32(lr)` (for a cautious step: `lr_c`, see `Consts::cautious`)
    pub lr: f32,
    /// `f32(beta1)`
    pub beta1: f32,
    /// `f32(1 - beta1)`
    pub one_minus_beta1: f32,
    /// `f32(beta2)`
    pub beta2: f32,
    /// `f32(1 - beta2)`
    pub one_minus_beta2: f32,
    /// `f32(grad_unscale)`, or 1 (unused) without unscaling.
    pub inv_scale: f32,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constants_are_rounded_once_from_f64() {
        let k = Hyperparams::default().constants().unwrap();
        // The reference's 1 - 0.9 computed in double precision, then rounded: 0x3dcccccd,
        // where 1.0f32 - 0.9f32 would give 0x3dccccd0.
        assert_eq!(k.one_minus_beta1.to_bits(), 0x3dcc_cccd);
        assert_eq!((1.0f32 - 0.9f32).to_bits(), 0x3dcc_ccd0);
        assert_eq!(k.decay, 1.0);
        assert_eq!(k.lr, 1e-4f64 as f32);
    }

    #[test]
    fn every_domain_edge() {
        let ok = Hyperparams::default();
        let cases: [(Hyperparams, &str); 13] = [
            (Hyperparams { lr: -1e-9, ..ok }, "lr"),
            (Hyperparams { lr: f64::NAN, ..ok }, "lr"),
            (
                Hyperparams {
                    lr: f64::INFINITY,
                    ..ok
                },
                "lr",
            ),
            (Hyperparams { lr: 1e39, ..ok }, "lr"),
            (Hyperparams { beta1: 1.0, ..ok }, "beta1"),
            (Hyperparams { beta1: -0.1, ..ok }, "beta1"),
            (
                Hyperparams {
                    beta1: f64::NAN,
                    ..ok
                },
                "beta1",
            ),
            (Hyperparams { beta2: 1.0, ..ok }, "beta2"),
            (
                Hyperparams {
                    beta2: f64::NAN,
                    ..ok
                },
                "beta2",
            ),
            (
                Hyperparams {
                    weight_decay: -1.0,
                    ..ok
                },
                "weight_decay",
            ),
            (
                Hyperparams {
                    weight_decay: f64::INFINITY,
                    ..ok
                },
                "weight_decay",
            ),
            (
                Hyperparams {
                    lr: 1e30,
                    weight_decay: 1e30,
                    ..ok
                },
                "weight_decay",
            ),
            (
                // lr * wd > 1 would flip the parameters' signs
                Hyperparams {
                    lr: 1.0,
                    weight_decay: 1.000_001,
                    ..ok
                },
                "weight_decay",
            ),
        ];
        for (hp, field) in cases {
            match hp.validate() {
                Err(Error::InvalidHyperparameter { name, .. }) => assert_eq!(name, field, "{hp:?}"),
                other => panic!("{hp:?} gave {other:?}"),
            }
        }
        let edges = [
            Hyperparams {
                lr: 0.0,
                beta1: 0.0,
                beta2: 0.0,
                weight_decay: 0.0,
            },
            Hyperparams {
                lr: 1.0,
                beta1: 0.999_999,
                beta2: 0.999_999,
                weight_decay: 1.0, // lr * wd = 1: decay factor 0
            },
            Hyperparams {
                lr: 1e-7,
                weight_decay: 1e6,
                ..ok
            },
        ];
        for hp in edges {
            assert!(hp.validate().is_ok(), "{hp:?}");
        }
    }
}
