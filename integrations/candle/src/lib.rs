//! The [Lion optimizer](https://arxiv.org/abs/2302.06675) for [candle](https://github.com/huggingface/candle):
//! a [`candle_nn::Optimizer`] that updates every [`Var`] **in place** with
//! [`lion_optim`]'s fused, bit-exact step.
//!
//! ```
//! use candle_core::{DType, Device, Tensor};
//! use candle_nn::{Module, Optimizer, VarBuilder, VarMap};
//! use lion_optim_candle::{Lion, ParamsLion};
//!
//! let (dev, varmap) = (Device::Cpu, VarMap::new());
//! let model = candle_nn::linear(4, 1, VarBuilder::from_varmap(&varmap, DType::F32, &dev).pp("fc"))?;
//! let params = ParamsLion { lr: 1e-3, weight_decay: 0.1, ..Default::default() }.no_decay_for_biases_and_norms();
//! let mut opt = Lion::from_varmap(&varmap, params)?;
//!
//! let x = Tensor::ones((8, 4), DType::F32, &dev)?;
//! let loss = model.forward(&x)?.sqr()?.mean_all()?;
//! opt.backward_step(&loss)?;
//! # Ok::<(), candle_core::Error>(())
//! ```
//!
//! # What it does, and does not
//!
//! * **Lion math**: none here. A step checks every var and gradient, views the buffers as
//!   slices and makes **one** [`lion_optim::Lion::step`] call over all of them, so the core's
//!   parallel many-tensor step (rayon) applies to the whole model. The result is bit-identical
//!   to [`lion_optim::reference::step_with`] on every var.
//! * **In place, zero-copy**: each var's storage is borrowed through candle's
//!   [`InplaceOp2`] (`cpu_fwd` gives `&mut CpuStorage`); no tensor is
//!   allocated and [`Var::set`] is never called. candle gives one var's storage per in-place op,
//!   so the ops are nested: the op of var 0 runs the op of var 1 inside its `cpu_fwd`, and so on;
//!   the innermost one holds every var's slice and calls the core (see `Optimizer::step` in
//!   [`Lion`]'s trait implementations).
//! * **Momentum** is owned by the optimizer (by the core `Lion`), f32 by default, bf16 or f16
//!   on request ([`ParamsLion::momentum`], [`GroupRule::momentum`]).
//! * **dtypes**: f32, bf16 and f16 vars (non-float vars are skipped, as candle's AdamW does; f64
//!   vars are refused); gradients of any of the three.
//! * **Groups** by var name ([`GroupRule`]; [`ParamsLion::no_decay_for_biases_and_norms`]).
//! * **State**: [`Lion::save`] / [`Lion::load`] write and read the core's safetensors file,
//!   the momentum of var `name` as `"{name}.exp_avg"` (readable by
//!   `candle_core::safetensors::load` and Python's `safetensors`).
//! * **Refused, with an error naming the var, before anything is written**: a var or gradient
//!   on another device than the CPU, a non-contiguous var, an f64 var, a gradient whose shape
//!   or dtype does not fit. A non-contiguous gradient (or one that shares storage with a var) is
//!   read-only, so it is copied into a contiguous tensor first: that is the only copy a step
//!   can make.
//!
//! `set_learning_rate` cannot return an error (the trait's signature): an invalid rate is kept,
//! and the next step returns the error without writing anything.

#![forbid(unsafe_code)]
#![deny(missing_docs)]

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::fmt;
use std::path::Path;
use std::sync::Arc;

use candle_core::backprop::GradStore;
use candle_core::{CpuStorage, DType, InplaceOp2, Layout, Result, Tensor, Var, bail};
use candle_nn::VarMap;
use lion_optim::{
    Buffer, Dtype, Group, GroupId, Hyperparams, SliceMut, SliceRef, StepOptions, TensorId,
    TensorSpec,
};

/// The optimizer state type of the core, as this crate uses it.
pub type Core = lion_optim::Lion<Vec<Buffer>>;

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
    /// The momentum dtype of the group's vars (F32, BF16 or F16), if not the optimizer's.
    pub momentum: Option<DType>,
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

    /// Sets [`momentum`](Self::momentum).
    pub fn momentum(self, dtype: DType) -> Self {
        Self {
            momentum: Some(dtype),
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
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

/// The settings of [`Lion`] (its `candle_nn::Optimizer::Config`), like candle's `ParamsAdamW`.
///
/// The default is the reference's: `lr = 1e-4`, `betas = (0.9, 0.99)`, `weight_decay = 0`,
/// f32 momentum, default step options, no groups.
///
/// ```
/// let p = lion_optim_candle::ParamsLion::default();
/// assert_eq!((p.lr, p.beta1, p.beta2, p.weight_decay), (1e-4, 0.9, 0.99, 0.0));
/// assert_eq!(p.momentum, candle_core::DType::F32);
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
    /// The momentum dtype: F32 (default), BF16 or F16.
    pub momentum: DType,
    /// Step options of the default group (see [`lion_optim::StepOptions`]).
    pub options: StepOptions,
    /// Parameter groups by var name (first match wins; they need names: see
    /// [`Lion::from_varmap`]).
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

    fn hyperparams(&self) -> Hyperparams {
        Hyperparams {
            lr: self.lr,
            beta1: self.beta1,
            beta2: self.beta2,
            weight_decay: self.weight_decay,
        }
    }
}

/// A `lion_optim::Error` as a candle error (with the tensor names the core knows).
fn core_error(core: &Core, what: &str, e: &lion_optim::Error) -> candle_core::Error {
    candle_core::Error::msg(format!("lion-optim: {what}: {}", core.describe(e)))
}

fn core_dtype(dtype: DType) -> Option<Dtype> {
    match dtype {
        DType::F32 => Some(Dtype::F32),
        DType::BF16 => Some(Dtype::Bf16),
        DType::F16 => Some(Dtype::F16),
        _ => None,
    }
}

/// A var the optimizer steps.
#[derive(Debug)]
struct Entry {
    var: Var,
    name: Option<String>,
    id: TensorId,
}

impl Entry {
    /// `var "name"` (or `var 3`) for messages, formatted only when one is written.
    fn label(&self) -> Label<'_> {
        Label(self)
    }
}

struct Label<'a>(&'a Entry);

impl fmt::Display for Label<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0.name {
            Some(name) => write!(f, "var {name:?}"),
            None => write!(f, "var {}", self.0.id.index()),
        }
    }
}

/// The Lion optimizer for candle: see the [crate docs](crate).
///
/// Build it like candle's `AdamW` (`Lion::new(varmap.all_vars(), params)`), or from a
/// [`VarMap`] to get var names — needed for groups and for state files keyed by name.
pub struct Lion {
    entries: Vec<Entry>,
    /// The storage keys of the vars, sorted (a var's storage never changes: `Var::set` copies
    /// into it).
    var_keys: Vec<usize>,
    core: Core,
    /// Per core group: its learning rate as a multiple of `lr`.
    lr_mults: Vec<f64>,
    lr: f64,
    /// An invalid learning rate given to `set_learning_rate`, reported by the next step.
    bad_lr: Option<String>,
}

impl fmt::Debug for Lion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Lion")
            .field("vars", &self.entries.len())
            .field("lr", &self.lr)
            .field("groups", &self.core.group_count())
            .field("steps", &self.core.steps())
            .finish_non_exhaustive()
    }
}

/// Checks a var's tensor: CPU, contiguous, f32/bf16/f16.
fn check_param(label: impl fmt::Display, t: &Tensor) -> Result<Dtype> {
    if !t.device().is_cpu() {
        bail!(
            "lion-optim-candle: {label} is on {:?}: only CPU vars are supported (the step runs on \
             the CPU, in place)",
            t.device().location()
        )
    }
    if !t.is_contiguous() {
        bail!("lion-optim-candle: {label} is not contiguous: it cannot be updated in place")
    }
    match core_dtype(t.dtype()) {
        Some(d) => Ok(d),
        None => bail!(
            "lion-optim-candle: {label} has dtype {:?}: only f32, bf16 and f16 vars are supported",
            t.dtype()
        ),
    }
}

/// A key that is equal for tensors sharing one storage (the address of the storage).
fn storage_key(t: &Tensor) -> usize {
    let (storage, _) = t.storage_and_layout();
    std::ptr::from_ref(&*storage).addr()
}

impl Lion {
    /// The optimizer over the vars of `varmap`, each named by its path in the map (sorted by
    /// name, so tensors are numbered the same way every run): groups match these names, and
    /// state files are keyed by them.
    pub fn from_varmap(varmap: &VarMap, params: ParamsLion) -> Result<Self> {
        let mut named: Vec<(String, Var)> = {
            let data = varmap.data().lock().map_err(|_| {
                candle_core::Error::msg("lion-optim-candle: the VarMap's lock is poisoned")
            })?;
            data.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
        };
        named.sort_by(|a, b| a.0.cmp(&b.0));
        Self::new_named(named, params)
    }

    /// The optimizer over named vars (in this order).
    pub fn new_named(
        vars: impl IntoIterator<Item = (String, Var)>,
        params: ParamsLion,
    ) -> Result<Self> {
        Self::build(
            vars.into_iter().map(|(n, v)| (Some(n), v)).collect(),
            params,
        )
    }

    fn build(vars: Vec<(Option<String>, Var)>, params: ParamsLion) -> Result<Self> {
        let mut core = Core::new(params.hyperparams()).map_err(|e| {
            candle_core::Error::msg(format!("lion-optim-candle: invalid settings: {e}"))
        })?;
        let default_momentum = match core_dtype(params.momentum) {
            Some(d) => d,
            None => bail!(
                "lion-optim-candle: momentum dtype {:?}: must be F32, BF16 or F16",
                params.momentum
            ),
        };
        core.set_options(params.options).map_err(|e| {
            candle_core::Error::msg(format!("lion-optim-candle: invalid options: {e}"))
        })?;
        let mut lr_mults = vec![1.0];
        let mut rule_groups = Vec::with_capacity(params.groups.len());
        for rule in &params.groups {
            let (beta1, beta2) = rule.betas.unwrap_or((params.beta1, params.beta2));
            let hp = Hyperparams {
                lr: params.lr * rule.lr_mult,
                beta1,
                beta2,
                weight_decay: rule.weight_decay.unwrap_or(params.weight_decay),
            };
            let group = Group {
                hp,
                options: rule.options.unwrap_or(params.options),
            };
            let momentum = match rule.momentum.map(core_dtype) {
                None => default_momentum,
                Some(Some(d)) => d,
                Some(None) => bail!(
                    "lion-optim-candle: group {:?}: momentum dtype {:?}: must be F32, BF16 or F16",
                    rule.label,
                    rule.momentum
                ),
            };
            if !(rule.lr_mult.is_finite() && rule.lr_mult >= 0.0) {
                bail!(
                    "lion-optim-candle: group {:?}: lr_mult {} must be finite and >= 0",
                    rule.label,
                    rule.lr_mult
                )
            }
            let id = core.add_group(group).map_err(|e| {
                candle_core::Error::msg(format!("lion-optim-candle: group {:?}: {e}", rule.label))
            })?;
            lr_mults.push(rule.lr_mult);
            rule_groups.push((id, momentum));
        }
        let mut entries: Vec<Entry> = Vec::with_capacity(vars.len());
        let mut keys: HashMap<usize, usize> = HashMap::with_capacity(vars.len());
        for (name, var) in vars {
            if !var.dtype().is_float() {
                continue; // as candle's AdamW and SGD: only float vars are trained
            }
            let label = match &name {
                Some(n) => format!("var {n:?}"),
                None => format!("var {}", entries.len()),
            };
            let params_dtype = check_param(&label, var.as_tensor())?;
            if name.is_none() && !params.groups.is_empty() {
                bail!(
                    "lion-optim-candle: group rules match var names, and {label} has none: build \
                     the optimizer with Lion::from_varmap or Lion::new_named"
                )
            }
            let key = storage_key(var.as_tensor());
            if let Some(&other) = keys.get(&key) {
                bail!(
                    "lion-optim-candle: {label} shares its storage with {} (a var passed twice?)",
                    entries[other].label()
                )
            }
            let rule = name
                .as_deref()
                .and_then(|n| params.groups.iter().position(|r| r.matches(n)));
            let (group, momentum) = match rule {
                Some(i) => rule_groups[i],
                None => (GroupId::DEFAULT, default_momentum),
            };
            let mut spec = TensorSpec::new(var.elem_count())
                .params(params_dtype)
                .momentum(momentum)
                .group(group);
            if let Some(n) = &name {
                spec = spec.name(n);
            }
            let id = core.add(spec).map_err(|e| {
                candle_core::Error::msg(format!(
                    "lion-optim-candle: {label}: {}",
                    core.describe(&e)
                ))
            })?;
            keys.insert(key, entries.len());
            entries.push(Entry { var, name, id });
        }
        Ok(Self {
            var_keys: {
                let mut k: Vec<usize> = keys.into_keys().collect();
                k.sort_unstable();
                k
            },
            entries,
            core,
            lr_mults,
            lr: params.lr,
            bad_lr: None,
        })
    }

    /// The vars the optimizer steps, with their names (if it was given names).
    pub fn vars(&self) -> impl Iterator<Item = (Option<&str>, &Var)> {
        self.entries.iter().map(|e| (e.name.as_deref(), &e.var))
    }

    /// The core optimizer: momentum ([`momentum`](lion_optim::Lion::momentum)), groups, step
    /// count, options.
    pub fn core(&self) -> &Core {
        &self.core
    }

    /// The core optimizer, mutably: e.g. to change a group's settings or to skip steps with
    /// non-finite gradients ([`set_skip_non_finite`](lion_optim::Lion::set_skip_non_finite)).
    /// (A group's learning rate is set again by the next
    /// [`set_learning_rate`](candle_nn::Optimizer::set_learning_rate).)
    pub fn core_mut(&mut self) -> &mut Core {
        &mut self.core
    }

    /// The group of the var `name` (or `None` if the optimizer has no var of that name).
    pub fn group_of(&self, name: &str) -> Option<GroupId> {
        let id = self.core.tensor_id(name)?;
        self.core.tensor_group(id).ok()
    }

    /// The momentum of every var, as a safetensors file (the core's format: the momentum of var
    /// `name` is the 1-D tensor `"{name}.exp_avg"`, unnamed vars by their index; step count and
    /// every group's settings as metadata).
    pub fn state_bytes(&self) -> Result<Vec<u8>> {
        self.core
            .save_safetensors()
            .map_err(|e| core_error(&self.core, "saving the state", &e))
    }

    /// Restores a state written by [`state_bytes`](Self::state_bytes) or [`save`](Self::save)
    /// for an optimizer with the same vars (by name) and groups; on any error nothing changes.
    /// The learning rate becomes the file's.
    pub fn load_state_bytes(&mut self, bytes: &[u8]) -> Result<()> {
        self.core
            .load_safetensors(bytes)
            .map_err(|e| core_error(&self.core, "loading the state", &e))?;
        self.lr = self.core.hyperparams().lr;
        self.bad_lr = None;
        Ok(())
    }

    /// Writes the state (see [`state_bytes`](Self::state_bytes)) to a safetensors file.
    pub fn save<P: AsRef<Path>>(&self, path: P) -> Result<()> {
        std::fs::write(path, self.state_bytes()?)?;
        Ok(())
    }

    /// Reads a state written by [`save`](Self::save) (see
    /// [`load_state_bytes`](Self::load_state_bytes)).
    pub fn load<P: AsRef<Path>>(&mut self, path: P) -> Result<()> {
        let bytes = std::fs::read(path)?;
        self.load_state_bytes(&bytes)
    }

    /// See `Optimizer::step` below.
    fn step_impl(&mut self, grads: &GradStore) -> Result<()> {
        if let Some(e) = &self.bad_lr {
            bail!("{e}")
        }
        let mut items = Vec::with_capacity(self.entries.len());
        for e in &self.entries {
            let Some(grad) = grads.get(e.var.as_tensor()) else {
                continue; // no gradient this step: the var is left alone
            };
            // The var itself was checked by `new`: a Var's device, dtype and layout never
            // change (the in-place op checks its layout again).
            let label = e.label();
            if !grad.device().is_cpu() {
                bail!(
                    "lion-optim-candle: the gradient of {label} is on {:?}: only the CPU is supported",
                    grad.device().location()
                )
            }
            if grad.dims() != e.var.dims() {
                bail!(
                    "lion-optim-candle: the gradient of {label} has shape {:?}, the var {:?}",
                    grad.dims(),
                    e.var.dims()
                )
            }
            if core_dtype(grad.dtype()).is_none() {
                bail!(
                    "lion-optim-candle: the gradient of {label} has dtype {:?}: it must be f32, \
                     bf16 or f16",
                    grad.dtype()
                )
            }
            // Gradients are read-only: a strided one, or one that shares storage with a var
            // (whose write lock the nested ops hold), is read from a contiguous copy.
            let grad = if !grad.is_contiguous() {
                grad.contiguous()?
            } else if self.var_keys.binary_search(&storage_key(grad)).is_ok() {
                grad.copy()?
            } else {
                grad.clone()
            };
            items.push(Item { entry: e, grad });
        }
        let core = &mut self.core;
        if items.len() <= NEST_ON_CALLER {
            return nest(&items, core);
        }
        // Each nested op takes about 1.5 KiB of stack: a model with many vars nests on a
        // thread of its own with a stack to fit (the caller's may be a 2 MiB thread's).
        let stack = (1 << 20) + items.len() * NEST_STACK_PER_VAR;
        std::thread::scope(|scope| {
            std::thread::Builder::new()
                .name("lion-optim-candle step".into())
                .stack_size(stack)
                .spawn_scoped(scope, || nest(&items, core))
                .map_err(|e| {
                    candle_core::Error::msg(format!(
                        "lion-optim-candle: cannot start the step's thread: {e}"
                    ))
                })?
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
        })
    }
}

/// Up to this many vars, the ops nest on the caller's stack (at most about 400 KiB).
const NEST_ON_CALLER: usize = 256;
/// Stack reserved per var when the ops nest on a thread of their own (measured: 1.0-1.5 KiB).
const NEST_STACK_PER_VAR: usize = 4 << 10;

/// The step over checked items: the nested in-place ops, then one core step.
fn nest(items: &[Item<'_>], core: &mut Core) -> Result<()> {
    let core = RefCell::new(core);
    descend(items, 0, Vec::with_capacity(items.len()), &core)
}

/// One var of a step and its (contiguous, distinct) gradient.
struct Item<'v> {
    entry: &'v Entry,
    grad: Tensor,
}

/// The in-place op of var `at`: adds its slices to those of the vars before it and runs the op
/// of the next var inside its own `cpu_fwd` (so that every var's storage stays borrowed), the
/// last one calling the core.
struct Link<'s, 'a, 'c> {
    items: &'s [Item<'s>],
    at: usize,
    views: Cell<Option<Vec<lion_optim::Tensor<'a>>>>,
    core: &'s RefCell<&'c mut Core>,
}

fn descend<'a>(
    items: &[Item<'_>],
    at: usize,
    mut views: Vec<lion_optim::Tensor<'a>>,
    core: &RefCell<&mut Core>,
) -> Result<()> {
    let Some(item) = items.get(at) else {
        let mut core = core.borrow_mut();
        return match core.step(&mut views) {
            Ok(_) => Ok(()),
            Err(e) => Err(core_error(&core, "step", &e)),
        };
    };
    let link = Link {
        items,
        at,
        views: Cell::new(Some(views)),
        core,
    };
    item.entry.var.inplace_op2(&item.grad, &link)
}

fn view_mut<'s>(s: &'s mut CpuStorage, l: &Layout, label: Label<'_>) -> Result<SliceMut<'s>> {
    let Some((start, end)) = l.contiguous_offsets() else {
        bail!("lion-optim-candle: {label} is not contiguous")
    };
    let range = start..end;
    let slice = match s {
        CpuStorage::F32(v) => v.get_mut(range).map(SliceMut::F32),
        CpuStorage::BF16(v) => v.get_mut(range).map(SliceMut::Bf16),
        CpuStorage::F16(v) => v.get_mut(range).map(SliceMut::F16),
        _ => bail!("lion-optim-candle: {label}: unsupported storage dtype"),
    };
    slice.ok_or_else(|| {
        candle_core::Error::msg(format!(
            "lion-optim-candle: {label}: layout outside its storage"
        ))
    })
}

fn view<'s>(s: &'s CpuStorage, l: &Layout, label: Label<'_>) -> Result<SliceRef<'s>> {
    let Some((start, end)) = l.contiguous_offsets() else {
        bail!("lion-optim-candle: the gradient of {label} is not contiguous")
    };
    let range = start..end;
    let slice = match s {
        CpuStorage::F32(v) => v.get(range).map(SliceRef::F32),
        CpuStorage::BF16(v) => v.get(range).map(SliceRef::Bf16),
        CpuStorage::F16(v) => v.get(range).map(SliceRef::F16),
        _ => bail!("lion-optim-candle: the gradient of {label}: unsupported storage dtype"),
    };
    slice.ok_or_else(|| {
        candle_core::Error::msg(format!(
            "lion-optim-candle: the gradient of {label}: layout outside its storage"
        ))
    })
}

impl InplaceOp2 for Link<'_, '_, '_> {
    fn name(&self) -> &'static str {
        "lion-optim"
    }

    fn cpu_fwd(
        &self,
        s1: &mut CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<()> {
        let item = &self.items[self.at];
        let Some(views) = self.views.take() else {
            bail!(
                "lion-optim-candle: the in-place op of {} ran twice",
                item.entry.label()
            )
        };
        let params = view_mut(s1, l1, item.entry.label())?;
        let grads = view(s2, l2, item.entry.label())?;
        // The views so far live longer than this var's borrow: shorten them (covariance).
        let mut views: Vec<lion_optim::Tensor<'_>> = views;
        views.push(lion_optim::Tensor::from_slices(params, grads).of(item.entry.id));
        descend(self.items, self.at + 1, views, self.core)
    }
}

impl candle_nn::Optimizer for Lion {
    type Config = ParamsLion;

    /// The optimizer over `vars` (unnamed: no group rules; state files key them by position).
    fn new(vars: Vec<Var>, config: ParamsLion) -> Result<Self> {
        Self::build(vars.into_iter().map(|v| (None, v)).collect(), config)
    }

    /// One step over the vars that have a gradient in `grads` (the others are left alone).
    ///
    /// First every gradient is checked (on the CPU, the var's shape, f32/bf16/f16; the vars
    /// themselves were checked when the optimizer was built: a `Var`'s device, dtype and layout
    /// never change); a non-contiguous gradient, or one sharing storage with a var, is copied.
    /// Then the in-place ops of the vars are nested (each var's write lock is held while the next
    /// op runs), and the innermost one calls [`lion_optim::Lion::step`] once with every var's
    /// slice. An error anywhere returns before anything is written. (The nesting takes about
    /// 1.5 KiB of stack per var: beyond 256 vars it runs on a thread of its own, with a stack
    /// to fit.)
    fn step(&mut self, grads: &GradStore) -> Result<()> {
        self.step_impl(grads)
    }

    fn learning_rate(&self) -> f64 {
        self.lr
    }

    /// Sets the learning rate (each group's: `lr * lr_mult`). An invalid one (negative, NaN,
    /// beyond f32) is kept and refused by the next step.
    fn set_learning_rate(&mut self, lr: f64) {
        self.lr = lr;
        self.bad_lr = None;
        for (i, mult) in self.lr_mults.iter().enumerate() {
            if let Err(e) = self.core.set_group_lr(GroupId::new(i), lr * mult) {
                self.bad_lr = Some(format!("lion-optim-candle: learning rate {lr}: {e}"));
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    /// A `Var` is always contiguous (candle creates variables with a contiguous layout, and
    /// `Var::from_tensor` copies a non-variable view), so the check of a var's layout cannot be
    /// reached through a `Var`: it is tested on the tensor it checks.
    #[test]
    fn the_var_check_refuses_strided_and_unsupported_tensors() -> Result<()> {
        let t = Tensor::zeros((2, 3), DType::F32, &Device::Cpu)?;
        assert_eq!(check_param("var \"w\"", &t)?, Dtype::F32);
        let e = check_param("var \"w\"", &t.t()?).unwrap_err().to_string();
        assert!(e.contains("var \"w\" is not contiguous"), "{e}");
        let e = check_param("var \"w\"", &t.to_dtype(DType::F64)?)
            .unwrap_err()
            .to_string();
        assert!(e.contains("dtype F64"), "{e}");
        assert_eq!(check_param("v", &t.to_dtype(DType::BF16)?)?, Dtype::Bf16);
        assert_eq!(check_param("v", &t.to_dtype(DType::F16)?)?, Dtype::F16);
        Ok(())
    }
}
