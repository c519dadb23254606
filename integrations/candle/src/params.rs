//! What [`Lion`](crate::Lion) is built with: [`ParamsLion`] (its `candle_nn::Optimizer::Config`)
//! and the parameter groups chosen by var name ([`GroupRule`], [`is_bias_or_norm`]).

use std::fmt;
use std::sync::Arc;

use candle_core::{DType, Result, bail};
use lion_optim::{Hyperparams, MomentumDtype, StepOptions};

use crate::core_dtype;

/// Whether `name` looks like a bias or a normalization layer's parameter, which usually get no
/// weight decay: its last `.`-separated segment is `bias` or ends with `_bias`, or any segment
/// contains `norm` (`layer_norm`, `rms_norm`, `norm1`, `LayerNorm`, `bn`-free), or is `ln` or
/// starts with `ln_` or `ln` and a digit (`ln_f`, `ln_1`, `ln2`) — case-insensitively.
///
/// ```
/// use lion_optim_candle::is_bias_or_norm;
///
/// for name in ["fc1.bias", "h.0.ln_1.weight", "model.norm.weight", "encoder.LayerNorm.weight", "ln2.weight"] {
///     assert!(is_bias_or_norm(name), "{name}");
/// }
/// for name in ["fc1.weight", "lnx.weight", "wte.weight", "h.0.attn.c_proj.weight"] {
///     assert!(!is_bias_or_norm(name), "{name}");
/// }
/// ```
pub fn is_bias_or_norm(name: &str) -> bool {
    let lower = name.to_ascii_lowercase();
    let last = lower.rsplit('.').next().unwrap_or("");
    if last == "bias" || last.ends_with("_bias") {
        return true;
    }
    lower.split('.').any(|part| {
        part.contains("norm")
            || part == "ln"
            || part.starts_with("ln_")
            || part
                .strip_prefix("ln")
                .and_then(|rest| rest.chars().next())
                .is_some_and(|c| c.is_ascii_digit())
    })
}

/// A parameter group chosen by var name: the vars whose name the predicate accepts get these
/// settings (each one given overrides the optimizer's; the rest are inherited). The first rule
/// that matches a var decides its group; vars no rule matches are in the default group.
///
/// ```
/// use lion_optim_candle::{GroupRule, ParamsLion};
///
/// let params = ParamsLion { lr: 3e-4, weight_decay: 0.1, ..Default::default() }
///     .with_group(GroupRule::new("embeddings", |name| name.starts_with("wte")).lr_mult(0.1))
///     .no_decay_for_biases_and_norms();
/// assert!(params.groups[0].matches("wte.weight") && params.groups[1].matches("fc.bias"));
/// assert_eq!(params.groups[1].weight_decay, Some(0.0));
/// ```
#[derive(Clone)]
pub struct GroupRule {
    /// A label for messages and `Debug`.
    pub label: String,
    matches: Arc<dyn Fn(&str) -> bool + Send + Sync>,
    /// The group's learning rate as a multiple of the optimizer's (default 1): every
    /// [`set_learning_rate`](candle_nn::Optimizer::set_learning_rate)`(lr)` gives the group
    /// `lr * lr_mult` (computed in f64).
    pub lr_mult: f64,
    /// The group's weight decay, if not the optimizer's.
    pub weight_decay: Option<f64>,
    /// The group's `(beta1, beta2)`, if not the optimizer's.
    pub betas: Option<(f64, f64)>,
    /// The momentum dtype of the group's vars (F32, BF16 or F16), if not the optimizer's. A
    /// group that sets it gets float momentum of this dtype even if the optimizer keeps 8-bit
    /// momentum ([`ParamsLion::momentum_q8`]).
    pub momentum: Option<DType>,
    /// Whether the group's vars keep 8-bit momentum, if not the optimizer's choice
    /// ([`ParamsLion::momentum_q8`]): `Some(true)`: 8-bit (then [`momentum`](field@Self::momentum)
    /// must be `None`); `Some(false)`: float momentum of [`momentum`](field@Self::momentum), or else of
    /// the optimizer's [`ParamsLion::momentum`]. Set by [`momentum_q8()`](method@Self::momentum_q8).
    pub momentum_q8: Option<bool>,
    /// The group's step options (stochastic rounding, cautious, ...), if not the optimizer's.
    pub options: Option<StepOptions>,
}

impl GroupRule {
    /// A rule for the vars whose name `matches` accepts, with the optimizer's settings until
    /// changed (see the type's example).
    pub fn new(
        label: impl Into<String>,
        matches: impl Fn(&str) -> bool + Send + Sync + 'static,
    ) -> Self {
        Self {
            label: label.into(),
            matches: Arc::new(matches),
            lr_mult: 1.0,
            weight_decay: None,
            betas: None,
            momentum: None,
            momentum_q8: None,
            options: None,
        }
    }

    /// No weight decay for the vars [`is_bias_or_norm`] accepts.
    ///
    /// ```
    /// let rule = lion_optim_candle::GroupRule::biases_and_norms();
    /// assert!(rule.matches("ln_f.weight") && !rule.matches("lm_head.weight"));
    /// ```
    pub fn biases_and_norms() -> Self {
        Self::new("biases and norms (no weight decay)", is_bias_or_norm).weight_decay(0.0)
    }

    /// Whether the rule applies to the var `name`.
    pub fn matches(&self, name: &str) -> bool {
        (self.matches)(name)
    }

    /// Sets [`lr_mult`](Self::lr_mult).
    pub fn lr_mult(self, lr_mult: f64) -> Self {
        Self { lr_mult, ..self }
    }

    /// Sets [`weight_decay`](Self::weight_decay).
    pub fn weight_decay(self, weight_decay: f64) -> Self {
        Self {
            weight_decay: Some(weight_decay),
            ..self
        }
    }

    /// Sets [`betas`](Self::betas).
    pub fn betas(self, beta1: f64, beta2: f64) -> Self {
        Self {
            betas: Some((beta1, beta2)),
            ..self
        }
    }

    /// Sets [`momentum`](field@Self::momentum): float momentum of this dtype for the group's vars,
    /// whatever the optimizer's (this clears [`momentum_q8`](field@Self::momentum_q8)).
    pub fn momentum(self, dtype: DType) -> Self {
        Self {
            momentum: Some(dtype),
            momentum_q8: None,
            ..self
        }
    }

    /// 8-bit momentum for the group's vars (sets [`momentum_q8`](field@Self::momentum_q8) to
    /// `Some(true)` and clears [`momentum`](field@Self::momentum)): see [`ParamsLion::momentum_q8`].
    ///
    /// ```
    /// use candle_core::DType;
    /// use lion_optim_candle::{GroupRule, ParamsLion};
    ///
    /// // f32 momentum, but 8-bit for the embeddings (the largest tensors).
    /// let params = ParamsLion::default()
    ///     .with_group(GroupRule::new("embeddings", |name| name.starts_with("wte")).momentum_q8());
    /// assert_eq!(params.groups[0].momentum_q8, Some(true));
    /// // The last builder call wins: `momentum(dtype)` makes it float again.
    /// let rule = GroupRule::new("g", |_| true).momentum_q8().momentum(DType::BF16);
    /// assert_eq!((rule.momentum, rule.momentum_q8), (Some(DType::BF16), None));
    /// ```
    pub fn momentum_q8(self) -> Self {
        Self {
            momentum: None,
            momentum_q8: Some(true),
            ..self
        }
    }

    /// Sets [`options`](Self::options).
    pub fn options(self, options: StepOptions) -> Self {
        Self {
            options: Some(options),
            ..self
        }
    }
}

impl fmt::Debug for GroupRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GroupRule")
            .field("label", &self.label)
            .field("lr_mult", &self.lr_mult)
            .field("weight_decay", &self.weight_decay)
            .field("betas", &self.betas)
            .field("momentum", &self.momentum)
            .field("momentum_q8", &self.momentum_q8)
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

/// The settings of [`Lion`](crate::Lion) (its `candle_nn::Optimizer::Config`), like candle's
/// `ParamsAdamW`.
///
/// The default is the reference's: `lr = 1e-4`, `betas = (0.9, 0.99)`, `weight_decay = 0`,
/// f32 momentum (not 8-bit), default step options, no groups.
///
/// ```
/// let p = lion_optim_candle::ParamsLion::default();
/// assert_eq!((p.lr, p.beta1, p.beta2, p.weight_decay), (1e-4, 0.9, 0.99, 0.0));
/// assert_eq!((p.momentum, p.momentum_q8), (candle_core::DType::F32, false));
/// ```
#[derive(Clone, Debug)]
pub struct ParamsLion {
    /// Learning rate: each step moves a parameter by `lr` (after decay).
    pub lr: f64,
    /// Interpolation between momentum and gradient for the update's sign.
    pub beta1: f64,
    /// Momentum decay.
    pub beta2: f64,
    /// Decoupled weight decay (parameters are multiplied by `1 - lr * weight_decay`).
    pub weight_decay: f64,
    /// The momentum dtype: F32 (default), BF16 or F16. (With
    /// [`momentum_q8`](Self::momentum_q8), the dtype of the groups that opt out of 8 bits with
    /// `GroupRule::momentum_q8 = Some(false)`.)
    pub momentum: DType,
    /// Keep the momentum in 8 bits (default `false`): bitsandbytes' blockwise format (as its
    /// `Lion8bit`), one `u8` code per element and one f32 scale (`absmax`) per block of 256
    /// elements, about 1.016 bytes per parameter instead of 4 (f32) or 2 (bf16). The core steps
    /// it in the same single pass (decode, Lion step in f32, re-encode per block), bit-identical
    /// to [`lion_optim::reference::step_q8_with`]; state files hold it as
    /// `"{name}.exp_avg.codes"` (U8) and `"{name}.exp_avg.absmax"` (F32).
    ///
    /// It applies to every var, whatever its size (bitsandbytes' `min_8bit_size` policy is not
    /// applied): give small vars, e.g. biases and norms, float momentum with a group
    /// ([`GroupRule::momentum`]); a group can also choose 8 bits alone
    /// ([`GroupRule::momentum_q8`]).
    ///
    /// ```
    /// use candle_core::DType;
    /// use lion_optim_candle::{GroupRule, ParamsLion};
    ///
    /// let params = ParamsLion { lr: 3e-4, weight_decay: 0.1, momentum_q8: true, ..Default::default() }
    ///     .with_group(GroupRule::biases_and_norms().momentum(DType::F32)); // no decay, f32 momentum
    /// # assert!(params.momentum_q8 && params.groups[0].momentum == Some(DType::F32));
    /// ```
    pub momentum_q8: bool,
    /// Step options of the default group (see [`lion_optim::StepOptions`]).
    pub options: StepOptions,
    /// Parameter groups by var name (first match wins; they need names: see
    /// [`Lion::from_varmap`](crate::Lion::from_varmap)).
    pub groups: Vec<GroupRule>,
}

impl Default for ParamsLion {
    fn default() -> Self {
        let hp = Hyperparams::default();
        Self {
            lr: hp.lr,
            beta1: hp.beta1,
            beta2: hp.beta2,
            weight_decay: hp.weight_decay,
            momentum: DType::F32,
            momentum_q8: false,
            options: StepOptions::default(),
            groups: Vec::new(),
        }
    }
}

impl ParamsLion {
    /// These settings with one more group rule (after the existing ones).
    pub fn with_group(mut self, rule: GroupRule) -> Self {
        self.groups.push(rule);
        self
    }

    /// These settings with a group without weight decay for biases and normalization weights
    /// ([`GroupRule::biases_and_norms`]).
    pub fn no_decay_for_biases_and_norms(self) -> Self {
        self.with_group(GroupRule::biases_and_norms())
    }

    pub(crate) fn hyperparams(&self) -> Hyperparams {
        Hyperparams {
            lr: self.lr,
            beta1: self.beta1,
            beta2: self.beta2,
            weight_decay: self.weight_decay,
        }
    }

    /// The float momentum dtype ([`momentum`](Self::momentum)), checked.
    pub(crate) fn float_momentum(&self) -> Result<MomentumDtype> {
        match core_dtype(self.momentum) {
            Some(d) => Ok(d.into()),
            None => bail!(
                "lion-optim-candle: momentum dtype {:?}: must be F32, BF16 or F16 (for 8-bit \
                 momentum set momentum_q8)",
                self.momentum
            ),
        }
    }

    /// The momentum format of the vars no group rule matches.
    pub(crate) fn momentum_format(&self) -> Result<MomentumDtype> {
        let float = self.float_momentum()?;
        Ok(if self.momentum_q8 {
            MomentumDtype::Q8
        } else {
            float
        })
    }
}

impl GroupRule {
    /// The momentum format of the group's vars (`params`: the optimizer's settings).
    pub(crate) fn momentum_format(&self, params: &ParamsLion) -> Result<MomentumDtype> {
        let float = match self.momentum {
            None => None,
            Some(dtype) => match core_dtype(dtype) {
                Some(d) => Some(MomentumDtype::from(d)),
                None => bail!(
                    "lion-optim-candle: group {:?}: momentum dtype {dtype:?}: must be F32, BF16 \
                     or F16 (for 8-bit momentum use GroupRule::momentum_q8)",
                    self.label
                ),
            },
        };
        match (self.momentum_q8, float) {
            (Some(true), Some(float)) => bail!(
                "lion-optim-candle: group {:?}: both a float momentum ({float}) and 8-bit \
                 momentum (momentum_q8) are set: choose one (the builders GroupRule::momentum \
                 and GroupRule::momentum_q8 each clear the other)",
                self.label
            ),
            (Some(true), None) => Ok(MomentumDtype::Q8),
            (_, Some(float)) => Ok(float),
            (Some(false), None) => params.float_momentum(),
            (None, None) => params.momentum_format(),
        }
    }
}
