//! [`Lion`]: building it (every var checked and registered with the core, the groups made from
//! the rules), its state files and its `candle_nn::Optimizer` implementation. The step itself
//! is in `step.rs`.

use std::collections::HashMap;
use std::fmt;
use std::path::Path;

use candle_core::backprop::GradStore;
use candle_core::{DType, Result, Tensor, Var, bail};
use candle_nn::VarMap;
use lion_optim::{Dtype, Group, GroupId, Hyperparams, MomentumDtype, TensorId, TensorSpec};

use crate::{Core, ParamsLion, core_dtype, core_error};

/// A var the optimizer steps.
#[derive(Debug)]
pub(crate) struct Entry {
    pub(crate) var: Var,
    pub(crate) name: Option<String>,
    pub(crate) id: TensorId,
}

impl Entry {
    /// `var "name"` (or `var 3`) for messages, formatted only when one is written.
    pub(crate) fn label(&self) -> Label<'_> {
        Label(self)
    }
}

pub(crate) struct Label<'a>(&'a Entry);

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
    pub(crate) entries: Vec<Entry>,
    /// The storage keys of the vars, sorted (a var's storage never changes: `Var::set` copies
    /// into it).
    pub(crate) var_keys: Vec<usize>,
    pub(crate) core: Core,
    /// Per core group: its learning rate as a multiple of `lr`.
    lr_mults: Vec<f64>,
    lr: f64,
    /// An invalid learning rate given to `set_learning_rate`, reported by the next step.
    pub(crate) bad_lr: Option<String>,
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

/// A momentum format for messages (`files`: with the file tensors it is stored as, `key` being
/// the var's name in the file).
fn momentum_text(m: MomentumDtype, key: &str, files: bool) -> String {
    match (m, files) {
        (MomentumDtype::Q8, true) => {
            format!("8-bit momentum (\"{key}.exp_avg.codes\" and \"{key}.exp_avg.absmax\")")
        }
        (MomentumDtype::Q8, false) => "8-bit momentum".to_string(),
        (float, true) => format!("{float} momentum (\"{key}.exp_avg\")"),
        (float, false) => format!("{float} momentum"),
    }
}

/// A key that is equal for tensors sharing one storage (the address of the storage).
pub(crate) fn storage_key(t: &Tensor) -> usize {
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
        let default_momentum = params.momentum_format()?;
        core.update_groups(|_, g| g.options = params.options)
            .map_err(|e| {
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
            let momentum = rule.momentum_format(&params)?;
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

    /// The core optimizer, mutably: e.g. to change a group's settings, or to skip steps with
    /// non-finite gradients (`core_mut().update_groups(|_, g| g.options.skip_non_finite = true)`,
    /// see [`update_groups`](lion_optim::Lion::update_groups)). (A group's learning rate is set
    /// again by the next [`set_learning_rate`](candle_nn::Optimizer::set_learning_rate).)
    pub fn core_mut(&mut self) -> &mut Core {
        &mut self.core
    }

    /// The group of the var `name` (or `None` if the optimizer has no var of that name).
    pub fn group_of(&self, name: &str) -> Option<GroupId> {
        let id = self.core.tensor_id(name)?;
        self.core.tensor(id).ok().map(|t| t.group)
    }

    /// The momentum of every var, as a safetensors file (the core's format: the momentum of var
    /// `name` is the 1-D tensor `"{name}.exp_avg"`, unnamed vars by their index; 8-bit momentum
    /// is the two 1-D tensors `"{name}.exp_avg.codes"` (U8, one code per element) and
    /// `"{name}.exp_avg.absmax"` (F32, one scale per block of 256 elements); step count and
    /// every group's settings as metadata).
    pub fn state_bytes(&self) -> Result<Vec<u8>> {
        self.core
            .save_safetensors()
            .map_err(|e| core_error(&self.core, "saving the state", &e))
    }

    /// Restores a state written by [`state_bytes`](Self::state_bytes) or [`save`](Self::save)
    /// for an optimizer with the same vars (by name), groups and momentum formats; on any error
    /// nothing changes. The learning rate becomes the file's.
    ///
    /// A file whose momentum has another format than this optimizer's for a var — 8-bit in the
    /// file and float here, or the other way round, or another float dtype — is refused with
    /// an error that names the var and both formats: build the optimizer with the momentum
    /// settings the state was saved with ([`ParamsLion::momentum`],
    /// [`ParamsLion::momentum_q8`], [`GroupRule::momentum`](crate::GroupRule::momentum),
    /// [`GroupRule::momentum_q8`](crate::GroupRule::momentum_q8)).
    ///
    /// ```
    /// use candle_core::{DType, Device, Var};
    /// use lion_optim_candle::{Lion, ParamsLion};
    ///
    /// let w = || Var::zeros(1000, DType::F32, &Device::Cpu);
    /// let q8 = ParamsLion { momentum_q8: true, ..Default::default() };
    /// let state = Lion::new_named([("w".to_string(), w()?)], q8.clone())?.state_bytes()?;
    ///
    /// let mut f32_momentum = Lion::new_named([("w".to_string(), w()?)], ParamsLion::default())?;
    /// let e = f32_momentum.load_state_bytes(&state).unwrap_err().to_string();
    /// assert!(e.contains("var \"w\" has 8-bit momentum (") && e.contains("f32 momentum in this optimizer"));
    /// Lion::new_named([("w".to_string(), w()?)], q8)?.load_state_bytes(&state)?;
    /// # Ok::<(), candle_core::Error>(())
    /// ```
    pub fn load_state_bytes(&mut self, bytes: &[u8]) -> Result<()> {
        if let Err(e) = self.core.load_safetensors(bytes) {
            // A momentum format that does not fit shows in the core's error as a tensor count
            // (8-bit momentum is two file tensors) or a missing or mis-shaped tensor: name it.
            let damaged = matches!(
                e,
                lion_optim::Error::Checkpoint(lion_optim::CheckpointError::Checksum)
            );
            let mismatch = if damaged {
                None
            } else {
                self.momentum_mismatch(bytes)
            };
            if let Some(m) = mismatch {
                bail!(
                    "lion-optim-candle: loading the state: {m}: build the optimizer with the \
                     momentum settings the state was saved with (ParamsLion::momentum, \
                     ParamsLion::momentum_q8, GroupRule::momentum, GroupRule::momentum_q8) \
                     (lion-optim: {})",
                    self.core.describe(&e)
                )
            }
            return Err(core_error(&self.core, "loading the state", &e));
        }
        if let Ok(group) = self.core.group(GroupId::DEFAULT) {
            self.lr = group.hp.lr; // (group 0 always exists)
        }
        self.bad_lr = None;
        Ok(())
    }

    /// The first var (and how many more) whose momentum in the safetensors file `bytes` has
    /// another format than this optimizer's: `None` if there is none, or if the file does not
    /// tell (not safetensors, no momentum for the var, another element type).
    fn momentum_mismatch(&self, bytes: &[u8]) -> Option<String> {
        let file = candle_core::safetensors::SliceSafetensors::new(bytes).ok()?;
        let mut found = self.entries.iter().filter_map(|e| {
            // The core's file names: the var's name, or its index.
            let key = e.name.clone().unwrap_or_else(|| e.id.index().to_string());
            let mine = self.core.momentum(e.id).ok()?.dtype();
            let theirs = if file.get(&format!("{key}.exp_avg.codes")).is_ok() {
                MomentumDtype::Q8
            } else {
                let view = file.get(&format!("{key}.exp_avg")).ok()?;
                core_dtype(DType::try_from(view.dtype()).ok()?)?.into()
            };
            (theirs != mine).then_some((e, key, mine, theirs))
        });
        let (e, key, mine, theirs) = found.next()?;
        let more = match found.count() {
            0 => String::new(),
            1 => " (and 1 more var)".to_string(),
            n => format!(" (and {n} more vars)"),
        };
        Some(format!(
            "{} has {} in the file, {} in this optimizer{more}",
            e.label(),
            momentum_text(theirs, &key, true),
            momentum_text(mine, &key, false)
        ))
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
        let mults = &self.lr_mults;
        let set = self
            .core
            .update_groups(|id, g| g.hp.lr = lr * mults[id.index()]);
        if let Err(e) = set {
            self.bad_lr = Some(format!("lion-optim-candle: learning rate {lr}: {e}"));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device};

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
