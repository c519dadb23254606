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
use burn::tensor::{DType, Device, Tensor};
use lion_optim::{Group, Hyperparams, SliceMut, SliceRef, Update};

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
        let mut optim = ModuleOptimizer::from(self.build());
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
        state: Option<&LionState<D>>,
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
        let m = match state {
            Some(s) => Some(as_flex(&s.momentum)?),
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
        let counter = if p_own && m_own {
            &self.stats.in_place
        } else {
            &self.stats.copied
        };
        counter.fetch_add(1, Ordering::Relaxed);
        let momentum = Tensor::<D>::from_primitive::<Flex>(m);
        (Tensor::from_primitive::<Flex>(p), LionState::new(momentum))
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
        match self.plan(lr, &tensor, &grad, state.as_ref()) {
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
