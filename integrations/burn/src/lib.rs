//! The [Lion optimizer](https://arxiv.org/abs/2302.06675) for [burn](https://burn.dev) 0.22,
//! stepped by [`lion_optim`]'s fused kernel: a drop-in for burn's own Lion.
//!
//! ```
//! use burn::module::Module;
//! use burn::nn::{Linear, LinearConfig};
//! use burn::optim::GradientsParams;
//! use burn::tensor::{Device, Tensor};
//!
//! let dev = Device::flex().autodiff();
//! let mut model: Linear = LinearConfig::new(4, 1).init(&dev);
//! let mut optim = lion_optim_burn::LionConfig::new().with_weight_decay(0.1).init();
//!
//! let loss = model.forward(Tensor::<2>::ones([8, 4], &dev)).powi_scalar(2).mean();
//! let grads = GradientsParams::from_grads(loss.backward(), &model);
//! model = optim.step(1e-3, model, grads);
//! ```
//!
//! burn needs its `flex` feature (`burn = { version = "0.22.1", features = ["flex"] }`), and the
//! model lives on `Device::flex().autodiff()`, as above.
//!
//! * [`Lion`] implements [`burn::optim::Optimizer`] (the per-tensor trait of burn 0.22) with
//!   **burn's own [`LionState`]** as its state, so everything [`ModuleOptimizer`] does keeps
//!   working: parameter groups ([`ModuleOptimizer::with_group`]), gradient clipping, learning
//!   rate schedulers, records — a record written with this optimizer loads into burn's Lion and
//!   the other way round.
//! * **Fast path** (Flex, burn's CPU backend; f32, bf16 or f16 parameters, gradients and
//!   momentum): the parameter and momentum buffers are updated **in place** when they are
//!   unique and contiguous (`FlexTensor::try_storage_mut`, no copy, no allocation after the
//!   first step), by one [`lion_optim::step_many`] call per tensor (large tensors spread over
//!   rayon's threads). The result is bit-identical to [`lion_optim::reference::step_with`]
//!   with the hyperparameters `lr`, `beta_1 as f64`, `beta_2 as f64`, `weight_decay as f64`.
//!   A parameter that is shared (the caller holds a clone of the model) or strided is copied
//!   once into a buffer of its own and stepped the same way: same bits, just not in place.
//! * **Elsewhere** — another backend (wgpu, cuda, ...), f64 tensors, hyperparameters the core
//!   refuses (e.g. `beta_1 = 1`) — the step is burn's own Lion, unchanged.
//! * [`Lion::stats`] counts which path each tensor step took.
//! * **8-bit momentum**: [`Lion8bit`] (from [`LionConfig::init_8bit`] or
//!   [`LionConfig::build_8bit`]) keeps the momentum of every fast-path tensor in bitsandbytes'
//!   blockwise format ([`Lion8bitState::Q8`]: one `u8` code per element and one f32 scale per
//!   256 elements, ~1.016 bytes per parameter instead of 4), stepped in place by the same one
//!   call, bit-identical to [`lion_optim::reference::step_q8_with`]. Off the fast path it is
//!   burn's Lion with full momentum ([`Lion8bitState::Full`]). Its records hold the codes and
//!   the scales as two tensors (`codes`, u8; `absmax`, f32).
//!
//! **Compared with burn's Lion.** burn takes `beta_1`, `beta_2` and `weight_decay` as f32 and
//! computes `1 - beta` in f32; this crate hands the core those same f32 values (widened
//! exactly), so the core's constants `f32(1 - beta)` are the same numbers (the f32 subtraction
//! is exact, Sterbenz). With f32 tensors the two are then bit-identical, except that burn's
//! first step stores `-0.0` momentum where the core stores `+0.0` (it computes `0*b2 + g*(1-b2)`).
//! With bf16 or f16 tensors they differ: burn rounds to bf16/f16 after each of its ten tensor
//! operations (`m*b1`, `g*(1-b1)`, their sum, ...), the core widens to f32, computes in f32 and
//! rounds once per store.

#![forbid(unsafe_code)]
#![deny(missing_docs)]

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use burn::backend::Flex;
use burn::backend::flex::FlexTensor;
use burn::config::Config;
use burn::grad_clipping::GradientClippingConfig;
use burn::optim::{LearningRate, LionState, ModuleOptimizer, Optimizer};
use burn::optim::{RecordState, StateSink, StateSource};
use burn::tensor::TensorData;
use burn::tensor::{DType, Device, Tensor};
use lion_optim::{Group, Hyperparams, Q8_BLOCK, Q8Mut, Q8Ref, SliceMut, SliceRef, Update};

/// Configuration of [`Lion`]: the same fields, defaults and builder methods as burn's
/// `LionConfig` (`new()`, `with_beta_1`, `with_beta_2`, `with_weight_decay`,
/// `with_grad_clipping`).
///
/// ```
/// let optim = lion_optim_burn::LionConfig::new().with_beta_2(0.98).build();
/// assert_eq!(optim.hyperparams(1e-3).beta2, 0.98f32 as f64);
/// ```
#[derive(Config, Debug)]
pub struct LionConfig {
    /// Interpolation factor used to compute the update direction.
    #[config(default = 0.9)]
    pub beta_1: f32,
    /// Decay factor for the momentum state.
    #[config(default = 0.99)]
    pub beta_2: f32,
    /// Decoupled weight decay factor.
    #[config(default = 0.0)]
    pub weight_decay: f32,
    /// [Gradient clipping](GradientClippingConfig) configuration.
    pub grad_clipping: Option<GradientClippingConfig>,
}

impl LionConfig {
    /// The bare optimizer (for [`ModuleOptimizer::with_group`]; like burn's `build`, it
    /// ignores `grad_clipping`).
    pub fn build(&self) -> Lion {
        Lion {
            beta_1: self.beta_1,
            beta_2: self.beta_2,
            weight_decay: self.weight_decay,
            fallback: burn::optim::LionConfig::new()
                .with_beta_1(self.beta_1)
                .with_beta_2(self.beta_2)
                .with_weight_decay(self.weight_decay)
                .build(),
            stats: Arc::default(),
        }
    }

    /// The optimizer for a whole module, with the configured gradient clipping.
    pub fn init(&self) -> ModuleOptimizer {
        self.clipped(ModuleOptimizer::from(self.build()))
    }

    /// The bare optimizer with 8-bit momentum (see [`Lion8bit`]; for
    /// [`ModuleOptimizer::with_group`]).
    ///
    /// ```
    /// let optim = lion_optim_burn::LionConfig::new().build_8bit();
    /// assert_eq!(optim.stats().in_place, 0);
    /// ```
    pub fn build_8bit(&self) -> Lion8bit {
        Lion8bit { lion: self.build() }
    }

    /// The optimizer with 8-bit momentum for a whole module (see [`Lion8bit`]), with the
    /// configured gradient clipping.
    ///
    /// ```
    /// let optim = lion_optim_burn::LionConfig::new().with_weight_decay(0.1).init_8bit();
    /// # let _ = optim;
    /// ```
    pub fn init_8bit(&self) -> ModuleOptimizer {
        self.clipped(ModuleOptimizer::from(self.build_8bit()))
    }

    fn clipped(&self, mut optim: ModuleOptimizer) -> ModuleOptimizer {
        if let Some(config) = &self.grad_clipping {
            optim = optim.with_grad_clipping(config.init());
        }
        optim
    }
}

/// Which path tensor steps took (see [`Lion::stats`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Steps that updated the parameter and its momentum in their own buffers.
    pub in_place: u64,
    /// Steps on the fast path that first copied the parameter or the momentum (shared with a
    /// clone, or strided).
    pub copied: u64,
    /// Steps done by burn's own Lion (another backend, an unsupported dtype or hyperparameter).
    pub fallback: u64,
}

#[derive(Debug, Default)]
struct Counters {
    in_place: AtomicU64,
    copied: AtomicU64,
    fallback: AtomicU64,
}

/// The Lion optimizer: see the [crate docs](crate). Make it with [`LionConfig`].
#[derive(Clone)]
pub struct Lion {
    beta_1: f32,
    beta_2: f32,
    weight_decay: f32,
    /// burn's own Lion with the same settings, for tensors off the fast path.
    fallback: burn::optim::Lion,
    /// Shared by clones (a `ModuleOptimizer` holds one).
    stats: Arc<Counters>,
}

impl std::fmt::Debug for Lion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lion")
            .field("beta_1", &self.beta_1)
            .field("beta_2", &self.beta_2)
            .field("weight_decay", &self.weight_decay)
            .field("stats", &self.stats())
            .finish()
    }
}

/// A float dtype the core steps.
fn supported(dtype: DType) -> bool {
    matches!(dtype, DType::F32 | DType::F16 | DType::BF16)
}

/// The tensor as a buffer of its own: itself if it is unique and contiguous (`true`), or a
/// contiguous copy (`false`).
fn owned(t: FlexTensor) -> (FlexTensor, bool) {
    if t.is_unique() && t.is_contiguous() {
        (t, true)
    } else {
        (FlexTensor::from_data(t.into_data()), false)
    }
}

/// A mutable view of a unique, contiguous tensor of a supported dtype.
fn view_mut(t: &mut FlexTensor) -> Option<SliceMut<'_>> {
    let (start, end) = t.layout().contiguous_offsets()?;
    Some(match t.dtype() {
        DType::F32 => SliceMut::F32(t.try_storage_mut::<f32>()?.get_mut(start..end)?),
        DType::F16 => SliceMut::F16(t.try_storage_mut()?.get_mut(start..end)?),
        DType::BF16 => SliceMut::Bf16(t.try_storage_mut()?.get_mut(start..end)?),
        _ => return None,
    })
}

/// A view of a contiguous tensor of a supported dtype.
fn view(t: &FlexTensor) -> Option<SliceRef<'_>> {
    Some(match t.dtype() {
        DType::F32 => SliceRef::F32(t.as_slice()?),
        DType::F16 => SliceRef::F16(t.as_slice()?),
        DType::BF16 => SliceRef::Bf16(t.as_slice()?),
        _ => return None,
    })
}

impl Lion {
    /// What the core is given for a step with learning rate `lr`: burn's f32 settings widened
    /// exactly to f64.
    pub fn hyperparams(&self, lr: LearningRate) -> Hyperparams {
        Hyperparams {
            lr,
            beta1: f64::from(self.beta_1),
            beta2: f64::from(self.beta_2),
            weight_decay: f64::from(self.weight_decay),
        }
    }

    /// How many tensor steps took each path so far (shared by the clones of this optimizer,
    /// e.g. the one inside a [`ModuleOptimizer`]).
    pub fn stats(&self) -> Stats {
        Stats {
            in_place: self.stats.in_place.load(Ordering::Relaxed),
            copied: self.stats.copied.load(Ordering::Relaxed),
            fallback: self.stats.fallback.load(Ordering::Relaxed),
        }
    }

    /// The checked inputs of a fast-path step (clones of the inputs' primitives), or `None`
    /// for burn's Lion.
    fn plan<const D: usize>(
        &self,
        lr: LearningRate,
        tensor: &Tensor<D>,
        grad: &Tensor<D>,
        momentum: Option<&Tensor<D>>,
    ) -> Option<Plan> {
        let group = Group::new(self.hyperparams(lr));
        group.validate().ok()?;
        // Clones (reference counts) are converted, so that the inputs stay usable until every
        // check has passed; then the caller drops them and the primitives are unique again.
        let as_flex = |t: &Tensor<D>| {
            t.clone()
                .try_into_primitive::<Flex>()
                .ok()
                .filter(|p| supported(p.dtype()))
        };
        let p = as_flex(tensor)?;
        let g = as_flex(grad)?;
        let m = match momentum {
            Some(m) => Some(as_flex(m)?),
            None => None,
        };
        let shape = p.layout().shape();
        if g.layout().shape() != shape || m.as_ref().is_some_and(|m| m.layout().shape() != shape) {
            return None;
        }
        Some(Plan { group, p, g, m })
    }

    /// The fast-path step of a plan whose inputs are gone (so its primitives may be unique).
    fn run<const D: usize>(&self, plan: Plan) -> (Tensor<D>, LionState<D>) {
        let Plan { group, p, g, m } = plan;
        let (mut p, p_own) = owned(p);
        let (mut m, m_own) = match m {
            Some(m) => owned(m),
            // burn's first step makes the momentum in the gradient's dtype; zeros give the same.
            None => (
                FlexTensor::zeros(p.layout().shape().clone(), g.dtype()),
                true,
            ),
        };
        let g = if g.is_contiguous() {
            g
        } else {
            g.to_contiguous()
        };
        {
            // Unique, contiguous and of supported dtypes (checked by `plan`, made by `owned`).
            let views = (view_mut(&mut p), view(&g), view_mut(&mut m));
            let (Some(pv), Some(gv), Some(mv)) = views else {
                panic!("lion-optim-burn: a checked tensor has no view");
            };
            let mut update = [Update::from_slices(pv, gv, mv)];
            // Cannot fail: the group was validated and the shapes are equal.
            if let Err(e) = lion_optim::step_many(&mut update, &[group]) {
                panic!("lion-optim-burn: {e}");
            }
        }
        self.count(p_own && m_own);
        let momentum = Tensor::<D>::from_primitive::<Flex>(m);
        (Tensor::from_primitive::<Flex>(p), LionState::new(momentum))
    }
}

impl Lion {
    /// Counts a fast-path step: in place, or after a copy.
    fn count(&self, in_place: bool) {
        let counter = if in_place {
            &self.stats.in_place
        } else {
            &self.stats.copied
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

/// A fast-path step's checked primitives and settings.
struct Plan {
    group: Group,
    p: FlexTensor,
    g: FlexTensor,
    m: Option<FlexTensor>,
}

impl Optimizer for Lion {
    type State<const D: usize> = LionState<D>;

    fn step<const D: usize>(
        &self,
        lr: LearningRate,
        tensor: Tensor<D>,
        grad: Tensor<D>,
        state: Option<Self::State<D>>,
    ) -> (Tensor<D>, Option<Self::State<D>>) {
        match self.plan(lr, &tensor, &grad, state.as_ref().map(|s| &s.momentum)) {
            Some(plan) => {
                drop((tensor, grad, state));
                let (tensor, state) = self.run::<D>(plan);
                (tensor, Some(state))
            }
            None => {
                self.stats.fallback.fetch_add(1, Ordering::Relaxed);
                self.fallback.step(lr, tensor, grad, state)
            }
        }
    }

    fn to_device<const D: usize>(mut state: Self::State<D>, device: &Device) -> Self::State<D> {
        state.momentum = state.momentum.to_device(device);
        state
    }
}

/// The state of a tensor stepped by [`Lion8bit`].
// burn's `LionState` unboxed (its tensor handle is 256 bytes): a state is moved once per step,
// and boxing would allocate on every fallback step.
#[allow(clippy::large_enum_variant)]
#[derive(Clone)]
pub enum Lion8bitState<const D: usize> {
    /// 8-bit blockwise momentum, in host memory: `codes[i]` (an index into
    /// [`lion_optim::Q8_MAP`]) times `absmax[i / 256]` is element `i` of the momentum, in the
    /// parameter's element order (C order); `absmax` has one scale per started block of 256.
    Q8 {
        /// One code per element.
        codes: Vec<u8>,
        /// One scale per block of 256 elements.
        absmax: Vec<f32>,
    },
    /// Full momentum, burn's own [`LionState`]: tensors off the fast path (another backend,
    /// f64).
    Full(LionState<D>),
}

impl<const D: usize> std::fmt::Debug for Lion8bitState<D> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Q8 { codes, absmax } => f
                .debug_struct("Q8")
                .field("elements", &codes.len())
                .field("blocks", &absmax.len())
                .finish(),
            Self::Full(s) => f.debug_tuple("Full").field(&s.momentum.dims()).finish(),
        }
    }
}

impl<const D: usize> Lion8bitState<D> {
    /// Zero 8-bit momentum for `n` elements (code 127 is 0.0, every scale 0.0).
    ///
    /// ```
    /// use lion_optim_burn::Lion8bitState;
    ///
    /// let Lion8bitState::<1>::Q8 { codes, absmax } = Lion8bitState::<1>::zeros(300) else {
    ///     unreachable!()
    /// };
    /// assert_eq!((codes.len(), absmax), (300, vec![0.0, 0.0]));
    /// ```
    pub fn zeros(n: usize) -> Self {
        Self::Q8 {
            codes: vec![127; n],
            absmax: vec![0.0; n.div_ceil(Q8_BLOCK)],
        }
    }
}

impl<const D: usize> RecordState for Lion8bitState<D> {
    fn state_flatten(&self, prefix: &str, out: &mut StateSink) {
        match self {
            Self::Q8 { codes, absmax } => {
                out.push_tensor(
                    prefix,
                    "codes",
                    TensorData::new(codes.clone(), [codes.len()]),
                );
                out.push_tensor(
                    prefix,
                    "absmax",
                    TensorData::new(absmax.clone(), [absmax.len()]),
                );
            }
            Self::Full(state) => state.state_flatten(prefix, out),
        }
    }

    /// 8-bit momentum if the record has `codes`: refused (`None`) unless they are u8, the
    /// scales f32, one per started block of 256 codes, each finite and non-negative.
    fn state_unflatten(prefix: &str, src: &mut StateSource, device: &Device) -> Option<Self> {
        let Some(codes) = src.take_tensor(prefix, "codes") else {
            return LionState::state_unflatten(prefix, src, device).map(Self::Full);
        };
        let absmax = src.take_tensor(prefix, "absmax")?;
        let codes = codes.as_slice::<u8>().ok()?.to_vec();
        let absmax = absmax.as_slice::<f32>().ok()?.to_vec();
        if absmax.len() != codes.len().div_ceil(Q8_BLOCK)
            || !absmax.iter().all(|a| a.is_finite() && *a >= 0.0)
        {
            return None;
        }
        Some(Self::Q8 { codes, absmax })
    }
}

/// Lion with 8-bit momentum (bitsandbytes' `Lion8bit` format): see the [crate docs](crate).
/// Make it with [`LionConfig::init_8bit`] or [`LionConfig::build_8bit`].
///
/// On the fast path (Flex; f32, bf16 or f16 parameters and gradients) the parameter is stepped
/// in place and the momentum is [`Lion8bitState::Q8`], bit-identical to
/// [`lion_optim::reference::step_q8_with`] with [`Lion::hyperparams`]. A tensor off the fast
/// path is stepped by burn's Lion with [`Lion8bitState::Full`] momentum (an 8-bit state is
/// dequantized for it first).
///
/// # Panics
/// burn's optimizer API has no error channel: an 8-bit state whose length is not the
/// parameter's (a record loaded into another model) panics with a message naming both, as a
/// burn optimizer does for a state of another shape.
///
/// ```
/// use burn::module::Module;
/// use burn::nn::{Linear, LinearConfig};
/// use burn::optim::GradientsParams;
/// use burn::tensor::{Device, Tensor};
///
/// let dev = Device::flex().autodiff();
/// let mut model: Linear = LinearConfig::new(4, 1).init(&dev);
/// let mut optim = lion_optim_burn::LionConfig::new().init_8bit();
/// let loss = model.forward(Tensor::<2>::ones([8, 4], &dev)).powi_scalar(2).mean();
/// let grads = GradientsParams::from_grads(loss.backward(), &model);
/// model = optim.step(1e-3, model, grads);
/// ```
#[derive(Clone, Debug)]
pub struct Lion8bit {
    lion: Lion,
}

impl Lion8bit {
    /// What the core is given for a step with learning rate `lr` (as [`Lion::hyperparams`]).
    ///
    /// ```
    /// let optim = lion_optim_burn::LionConfig::new().build_8bit();
    /// assert_eq!(optim.hyperparams(1e-3).beta1, 0.9f32 as f64);
    /// ```
    pub fn hyperparams(&self, lr: LearningRate) -> Hyperparams {
        self.lion.hyperparams(lr)
    }

    /// How many tensor steps took each path so far (as [`Lion::stats`]; `copied`: the
    /// parameter was copied first).
    ///
    /// ```
    /// let optim = lion_optim_burn::LionConfig::new().build_8bit();
    /// assert_eq!(optim.stats(), lion_optim_burn::Stats::default());
    /// ```
    pub fn stats(&self) -> Stats {
        self.lion.stats()
    }

    /// The fast-path step: the parameter in place (or a copy of it), the codes and scales in
    /// place.
    fn run<const D: usize>(
        &self,
        plan: Plan,
        q8: Option<(Vec<u8>, Vec<f32>)>,
    ) -> (Tensor<D>, Lion8bitState<D>) {
        let Plan { group, p, g, m: _ } = plan;
        let (mut p, p_own) = owned(p);
        let g = if g.is_contiguous() {
            g
        } else {
            g.to_contiguous()
        };
        let n = p.layout().shape().num_elements();
        let (mut codes, mut absmax) = match q8 {
            Some((codes, absmax)) => {
                check_q8(&codes, &absmax, n);
                (codes, absmax)
            }
            None => (vec![127; n], vec![0.0; n.div_ceil(Q8_BLOCK)]),
        };
        {
            let views = (
                view_mut(&mut p),
                view(&g),
                Q8Mut::new(&mut codes, &mut absmax),
            );
            let (Some(pv), Some(gv), Ok(mv)) = views else {
                panic!("lion-optim-burn: a checked tensor has no view");
            };
            let mut update = [Update::from_slices(pv, gv, mv)];
            // Cannot fail: the group was validated, the lengths are equal.
            if let Err(e) = lion_optim::step_many(&mut update, &[group]) {
                panic!("lion-optim-burn: {e}");
            }
        }
        self.lion.count(p_own);
        (
            Tensor::from_primitive::<Flex>(p),
            Lion8bitState::Q8 { codes, absmax },
        )
    }
}

/// Panics (see [`Lion8bit`]) unless an 8-bit state fits a parameter of `n` elements.
fn check_q8(codes: &[u8], absmax: &[f32], n: usize) {
    assert!(
        codes.len() == n && absmax.len() == n.div_ceil(Q8_BLOCK),
        "lion-optim-burn: an 8-bit momentum state of {} codes and {} scales for a parameter of \
         {n} elements (it needs {n} codes and {} scales): a record of another model?",
        codes.len(),
        absmax.len(),
        n.div_ceil(Q8_BLOCK)
    );
}

impl Optimizer for Lion8bit {
    type State<const D: usize> = Lion8bitState<D>;

    fn step<const D: usize>(
        &self,
        lr: LearningRate,
        tensor: Tensor<D>,
        grad: Tensor<D>,
        state: Option<Self::State<D>>,
    ) -> (Tensor<D>, Option<Self::State<D>>) {
        let q8 = match state {
            Some(Lion8bitState::Full(s)) => {
                let (t, s) = self.lion.step(lr, tensor, grad, Some(s));
                return (t, s.map(Lion8bitState::Full));
            }
            Some(Lion8bitState::Q8 { codes, absmax }) => Some((codes, absmax)),
            None => None,
        };
        match self.lion.plan(lr, &tensor, &grad, None) {
            Some(plan) => {
                drop((tensor, grad));
                let (tensor, state) = self.run::<D>(plan, q8);
                (tensor, Some(state))
            }
            None => {
                // burn's Lion, with the 8-bit momentum (if any) dequantized for it.
                let momentum = q8.map(|(codes, absmax)| {
                    check_q8(&codes, &absmax, tensor.shape().num_elements());
                    let values: Vec<f32> = match Q8Ref::new(&codes, &absmax) {
                        Ok(q) => (0..codes.len()).filter_map(|i| q.get(i)).collect(),
                        Err(e) => panic!("lion-optim-burn: {e}"),
                    };
                    let m = Tensor::<1>::from_data(
                        TensorData::new(values, [codes.len()]),
                        &grad.device(),
                    );
                    LionState::new(m.reshape(tensor.dims()).cast(grad.dtype()))
                });
                self.lion.stats.fallback.fetch_add(1, Ordering::Relaxed);
                let (t, s) = self.lion.fallback.step(lr, tensor, grad, momentum);
                (t, s.map(Lion8bitState::Full))
            }
        }
    }

    fn to_device<const D: usize>(state: Self::State<D>, device: &Device) -> Self::State<D> {
        match state {
            Lion8bitState::Full(s) => Lion8bitState::Full(Lion::to_device(s, device)),
            // Host memory: it stays where it is.
            q8 => q8,
        }
    }
}
