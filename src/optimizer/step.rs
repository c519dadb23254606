//! [`Lion::step`]: every tensor matched to its state and checked, then one run of the executor
//! over all of them.

#[cfg(feature = "rayon")]
use alloc::vec::Vec;

use super::tensors::Key;
use super::{Lion, MomentumStore, Tensor, many::tensor_options};
use crate::arch::Isa;
use crate::exec::{Dyn, Job, Jobs, execute};
use crate::hyper::Consts;
use crate::{Error, Outcome, StepOptions};

/// A step's working space: which tensor each passed one is, which were seen (with `alloc`;
/// without, the step looks them up again).
#[cfg(feature = "alloc")]
#[derive(Clone, Debug, Default)]
pub(super) struct Scratch {
    resolved: alloc::vec::Vec<usize>,
    seen: alloc::vec::Vec<u64>,
}

#[cfg(not(feature = "alloc"))]
#[derive(Clone, Debug, Default)]
pub(super) struct Scratch {}

#[cfg(feature = "alloc")]
impl Scratch {
    fn start(&mut self, count: usize, passed: usize) {
        self.resolved.clear();
        self.resolved.reserve(passed);
        self.seen.clear();
        self.seen.resize(count.div_ceil(64), 0);
    }
    /// Marks `index` seen; whether it was already.
    fn seen(&mut self, index: usize, _slow: impl FnOnce() -> bool) -> bool {
        let (word, bit) = (index / 64, 1u64 << (index % 64));
        let was = self.seen[word] & bit != 0;
        self.seen[word] |= bit;
        was
    }
    fn resolved(&mut self, index: usize) {
        self.resolved.push(index);
    }
    fn index(&self, position: usize) -> Option<usize> {
        self.resolved.get(position).copied()
    }
}

#[cfg(not(feature = "alloc"))]
impl Scratch {
    fn start(&mut self, _count: usize, _passed: usize) {}
    /// Whether `index` was passed before (`slow` searches the earlier tensors).
    fn seen(&mut self, _index: usize, slow: impl FnOnce() -> bool) -> bool {
        slow()
    }
    fn resolved(&mut self, _index: usize) {}
    fn index(&self, _position: usize) -> Option<usize> {
        None
    }
}

impl<B: MomentumStore> Lion<B> {
    /// One Lion step over the tensors of the model.
    ///
    /// Either every tensor is keyed ([`Tensor::of`], [`Tensor::named`]): then they may come in
    /// any order, and the optimizer's tensors that are not passed (no gradient this step) are
    /// left alone (an empty list passes none); or none is: then `tensors[i]` is tensor `i`, and
    /// all must be passed. Either way the step count advances by one.
    ///
    /// Checks first that every tensor's parameters and gradient have its momentum's length and
    /// its declared parameter dtype, that no tensor is passed twice, and that every key names a
    /// tensor; on error nothing is written and the step count does not change. If a tensor
    /// whose group sets [`skip_non_finite`](StepOptions::skip_non_finite) has a non-finite
    /// gradient, the whole step is skipped the same way (and counted in
    /// [`skipped_steps`](Self::skipped_steps)). With the `rayon` feature the whole model is
    /// spread over rayon's current thread pool (see [`step_many`](crate::step_many)).
    ///
    /// Each tensor is stepped exactly as [`reference::step_with`](crate::reference::step_with)
    /// steps it with its group's hyperparameters (the learning rate times the
    /// [scale](Self::set_lr_scale)) and options, where the options' `step` is the number of
    /// steps applied before this one ([`steps`](Self::steps): 0 at the first step), `offset` is
    /// 0, and a stochastic-rounding seed is the group's seed mixed with the tensor's stream:
    /// `seed ^ stream.wrapping_mul(0x9e37_79b9_7f4a_7c15)`. A cautious group counts each tensor
    /// first. See the type's example.
    pub fn step(&mut self, tensors: &mut [Tensor<'_>]) -> Result<Outcome, Error> {
        // Reused across steps: no allocation per step.
        let mut scratch = core::mem::take(&mut self.scratch);
        let result = self.step_resolved(tensors, &mut scratch);
        self.scratch = scratch;
        result
    }

    fn step_resolved(
        &mut self,
        tensors: &mut [Tensor<'_>],
        scratch: &mut Scratch,
    ) -> Result<Outcome, Error> {
        let count = self.tensor_count();
        // An empty list is a keyed step that passes no tensor.
        let keyed = tensors.first().is_none_or(|t| t.key != Key::Position);
        if !keyed && tensors.len() != count {
            return Err(Error::TensorCount {
                expected: count,
                found: tensors.len(),
            });
        }
        scratch.start(count, tensors.len());
        for (position, t) in tensors.iter().enumerate() {
            let index = self.resolve(position, t.key, keyed)?;
            let duplicate = keyed
                && scratch.seen(index, || {
                    tensors[..position]
                        .iter()
                        .enumerate()
                        .any(|(p, u)| self.resolve(p, u.key, keyed) == Ok(index))
                });
            if duplicate {
                return Err(Error::DuplicateTensor { index });
            }
            self.check(index, t)?;
            scratch.resolved(index);
        }
        // Every tensor is valid: from here on nothing fails.
        let jobs = LionJobs {
            opt: self,
            tensors,
            scratch,
            keyed,
        };
        let outcome = execute(Isa::best(), jobs, true);
        match outcome {
            Outcome::Applied => self.steps += 1,
            Outcome::SkippedNonFinite => self.skipped += 1,
        }
        Ok(outcome)
    }

    /// Which of the optimizer's tensors `tensor` (at `position` in a step's list) is.
    fn resolve(&self, position: usize, key: Key<'_>, keyed: bool) -> Result<usize, Error> {
        let count = self.tensor_count();
        let index = match (key, keyed) {
            (Key::Position, false) => position,
            (Key::Id(id), true) => id.index(),
            (Key::Name(name), true) => self
                .tensor_id(name)
                .map(|id| id.index())
                .ok_or(Error::UnknownName { position })?,
            _ => return Err(Error::MixedKeys { position }),
        };
        if index >= count {
            return Err(Error::NoSuchTensor { index, count });
        }
        Ok(index)
    }

    /// Checks `tensor` against the state of tensor `index`.
    fn check(&self, index: usize, tensor: &Tensor<'_>) -> Result<(), Error> {
        let expected = self.momentum(index)?.len();
        let mismatch = |what, found| Error::TensorMismatch {
            index,
            what,
            expected,
            found,
        };
        if tensor.params.len() != expected {
            return Err(mismatch("params", tensor.params.len()));
        }
        if tensor.grads.len() != expected {
            return Err(mismatch("grads", tensor.grads.len()));
        }
        match self.meta_of(index).params {
            Some(expected) if expected != tensor.params.dtype() => Err(Error::TensorDtype {
                index,
                expected,
                found: tensor.params.dtype(),
            }),
            _ => Ok(()),
        }
    }

    /// The constants and options of tensor `index`'s step.
    fn settings(&self, index: usize) -> (Consts, StepOptions) {
        let meta = self.meta_of(index);
        // A tensor's group exists: groups are never removed.
        let g = &self.groups[meta.group.min(self.groups.len() - 1)];
        let options = tensor_options(&g.group.options, self.steps, 0, meta.stream);
        (g.k, options)
    }
}

/// The jobs of a validated [`Lion::step`]: job `i` is the tensor at position `i` with its
/// state.
struct LionJobs<'x, 'a, B> {
    opt: &'x mut Lion<B>,
    tensors: &'x mut [Tensor<'a>],
    scratch: &'x Scratch,
    keyed: bool,
}

impl<B: MomentumStore> LionJobs<'_, '_, B> {
    /// The optimizer's index of the tensor at `position` (validated: looked up again only
    /// where there is no scratch space, without `alloc`).
    fn index(&self, position: usize) -> usize {
        self.scratch.index(position).unwrap_or_else(|| {
            let key = self.tensors.get(position).map_or(Key::Position, |t| t.key);
            self.opt
                .resolve(position, key, self.keyed)
                .unwrap_or(position)
        })
    }

    /// Calls `f` with the job of the tensor at `position`.
    fn with_job<R>(
        &mut self,
        position: usize,
        f: impl FnOnce(&mut Job<Dyn<'_>>) -> R,
    ) -> Option<R> {
        let index = self.index(position);
        let (k, options) = self.opt.settings(index);
        let momentum = self.opt.buffers.momentum_mut(index)?;
        let t = self.tensors.get_mut(position)?;
        let slices = Dyn {
            p: t.params.reborrow(),
            g: t.grads,
            m: momentum,
        };
        Some(f(&mut Job::new(slices, k, options, position)))
    }
}

impl<'x, B: MomentumStore> Jobs for LionJobs<'x, '_, B> {
    #[cfg(feature = "rayon")]
    type Slices = Dyn<'x>;

    fn len(&self) -> usize {
        self.tensors.len()
    }

    #[cfg(feature = "rayon")]
    fn elements(&self) -> usize {
        self.tensors.iter().map(Tensor::len).sum()
    }

    fn skips_at(&mut self, isa: Isa, i: usize) -> bool {
        // Only a tensor whose group asks for the check can skip (most steps ask for none).
        let asks = self.opt.settings(self.index(i)).1.skip_non_finite;
        asks && self.with_job(i, |j| j.skips(isa)).unwrap_or(false)
    }

    fn run_at(&mut self, isa: Isa, i: usize) {
        self.with_job(i, |j| j.run(isa));
    }

    #[cfg(feature = "rayon")]
    fn into_jobs(self) -> Vec<Job<Dyn<'x>>> {
        let settings: Vec<_> = (0..self.tensors.len())
            .map(|position| {
                let index = self.index(position);
                (index, self.opt.settings(index))
            })
            .collect();
        let LionJobs { opt, tensors, .. } = self;
        let mut momenta: Vec<Option<crate::MomentumMut<'x>>> =
            opt.buffers.momentum_all_mut().map(Some).collect();
        let jobs = tensors.iter_mut().zip(settings).enumerate();
        jobs.filter_map(|(position, (t, (index, (k, options))))| {
            // (Validated: every index exists and is passed once.)
            let m = momenta.get_mut(index)?.take()?;
            let slices = Dyn {
                p: t.params.reborrow(),
                g: t.grads,
                m,
            };
            Some(Job::new(slices, k, options, position))
        })
        .collect()
    }
}
