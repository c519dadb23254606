//! The stateless many-tensor step ([`step_many`]): every update validated, then one run of the
//! executor over all of them.

#[cfg(feature = "alloc")]
use alloc::vec::Vec;

use super::Group;
use crate::arch::Isa;
use crate::error::check_lengths;
use crate::exec::{Dyn, Job, Jobs, execute};
use crate::hyper::Consts;
#[cfg(feature = "alloc")]
use crate::hyper::validate_options;
use crate::{Element, Error, MomentumMut, Outcome, Rounding, SliceMut, SliceRef, StepOptions};

/// The seed of the stochastic-rounding stream `stream` of a step with `seed`: every tensor of a
/// many-tensor step draws its own random bits.
pub(crate) fn stream_seed(seed: u64, stream: u64) -> u64 {
    seed ^ stream.wrapping_mul(0x9e37_79b9_7f4a_7c15)
}

/// The options of one tensor's step: the group's, with the step number, the tensor's global
/// offset and its own random stream.
pub(crate) fn tensor_options(
    group: &StepOptions,
    step: u64,
    offset: u64,
    stream: u64,
) -> StepOptions {
    let rounding = match group.rounding {
        Rounding::Nearest => Rounding::Nearest,
        Rounding::Stochastic { seed } => Rounding::Stochastic {
            seed: stream_seed(seed, stream),
        },
    };
    StepOptions {
        step,
        offset,
        rounding,
        ..*group
    }
}

/// One tensor's part of a [`step_many`]: its parameters, gradients and momentum, the index of
/// its group's settings, and where its random bits come from.
///
/// ```
/// use lion_optim::{Update, bf16};
///
/// let (mut p, g, mut m) = (vec![bf16::ONE; 8], vec![0.5f32; 8], vec![0.0f32; 8]);
/// let u = Update::new(&mut p, &g, &mut m).group(1).step(7);
/// assert_eq!(u.len(), 8);
/// ```
#[derive(Debug)]
pub struct Update<'a> {
    params: SliceMut<'a>,
    grads: SliceRef<'a>,
    momentum: MomentumMut<'a>,
    group: usize,
    stream: Option<u64>,
    offset: u64,
    step: u64,
}

impl<'a> Update<'a> {
    /// Parameters, gradients and momentum of one tensor (lengths are checked by
    /// [`step_many`]): group 0, step 0, offset 0, its position as its random stream.
    pub fn new<P: Element, G: Element, M: Element>(
        params: &'a mut [P],
        grads: &'a [G],
        momentum: &'a mut [M],
    ) -> Self {
        Self::from_slices(params.into(), grads.into(), MomentumMut::from(momentum))
    }

    /// [`new`](Self::new) for runtime-typed slices.
    ///
    /// ```
    /// use lion_optim::{SliceMut, SliceRef, Update};
    ///
    /// let (mut p, g, mut m) = ([1.0f32; 4], [0.5f32; 4], [0.0f32; 4]);
    /// let u = Update::from_slices(SliceMut::F32(&mut p), SliceRef::F32(&g), SliceMut::F32(&mut m));
    /// assert!(!u.is_empty());
    /// ```
    #[inline]
    pub fn from_slices(
        params: SliceMut<'a>,
        grads: SliceRef<'a>,
        momentum: impl Into<MomentumMut<'a>>,
    ) -> Self {
        Self {
            params,
            grads,
            momentum: momentum.into(),
            group: 0,
            stream: None,
            offset: 0,
            step: 0,
        }
    }

    /// Uses the settings `groups[index]` of [`step_many`] (default 0).
    #[inline]
    pub fn group(self, index: usize) -> Self {
        Self {
            group: index,
            ..self
        }
    }

    /// The step number, which keys the random bits of stochastic rounding (default 0): advance
    /// it every step, or the bits repeat.
    #[inline]
    pub fn step(self, step: u64) -> Self {
        Self { step, ..self }
    }

    /// The index of these slices' first element in the whole tensor, for a piece of a larger
    /// tensor (see [`StepOptions::offset`]); default 0.
    #[inline]
    pub fn offset(self, offset: u64) -> Self {
        Self { offset, ..self }
    }

    /// The tensor's stochastic-rounding stream (default: the update's position in the list):
    /// the group's seed is mixed with it, so that tensors draw different bits. The pieces of one
    /// tensor share its stream (and differ in [`offset`](Self::offset)).
    ///
    /// ```
    /// use lion_optim::{Group, Rounding, StepOptions, Update, bf16};
    ///
    /// let group = Group::default().with_options(StepOptions {
    ///     rounding: Rounding::Stochastic { seed: 5 },
    ///     ..StepOptions::default()
    /// });
    /// let g = vec![0.5f32; 64];
    /// let (mut whole, mut m) = (vec![bf16::from_f32(7.0); 64], vec![0.0f32; 64]);
    /// lion_optim::step_many(&mut [Update::new(&mut whole, &g, &mut m).stream(9)], &[group])?;
    /// // The same tensor in two pieces, in one call: same stream, their offsets.
    /// let (mut pieces, mut m2) = (vec![bf16::from_f32(7.0); 64], vec![0.0f32; 64]);
    /// let (p1, p2) = pieces.split_at_mut(40);
    /// let (m1, m2) = m2.split_at_mut(40);
    /// lion_optim::step_many(&mut [
    ///     Update::new(p1, &g[..40], m1).stream(9),
    ///     Update::new(p2, &g[40..], m2).stream(9).offset(40),
    /// ], &[group])?;
    /// assert_eq!(whole, pieces);
    /// # Ok::<(), lion_optim::Error>(())
    /// ```
    #[inline]
    pub fn stream(self, stream: u64) -> Self {
        Self {
            stream: Some(stream),
            ..self
        }
    }

    /// Steps this update alone with `group`'s settings (the update's [`group`](Self::group)
    /// index is not used): the bytes of [`step_many`]`(&mut [update], &[group])`, validated once
    /// and without allocating. The run-time-typed counterpart of [`step_with`](crate::step_with),
    /// for callers that hold one tensor at a time (the bindings' stateless steps).
    ///
    /// ```
    /// use lion_optim::{Group, Hyperparams, SliceMut, SliceRef, Update, bf16};
    ///
    /// let (mut p, g, mut m) = ([bf16::ONE; 4], [0.5f32; 4], [0.0f32; 4]);
    /// let group = Group::new(Hyperparams { lr: 0.5, ..Hyperparams::default() });
    /// let u = Update::from_slices(SliceMut::from(&mut p[..]), SliceRef::from(&g[..]), &mut m[..]);
    /// u.apply(&group)?;
    /// assert_eq!(p, [bf16::from_f32(0.5); 4]);
    /// # Ok::<(), lion_optim::Error>(())
    /// ```
    #[inline]
    pub fn apply(mut self, group: &Group) -> Result<Outcome, Error> {
        self.group = 0;
        run_one(Isa::best(), &mut self, core::slice::from_ref(group), false)
    }

    /// The number of parameters.
    pub fn len(&self) -> usize {
        self.params.len()
    }

    /// Whether there are no parameters.
    pub fn is_empty(&self) -> bool {
        self.params.is_empty()
    }

    /// The validated constants and options of this update (the `index`-th of the call):
    /// `cache` keeps each group's constants once computed, so that an update then checks only
    /// what is its own (lengths, offset, a shard's count).
    #[inline]
    fn settings(
        &self,
        index: usize,
        groups: &[Group],
        cache: &mut Cache,
    ) -> Result<(Consts, StepOptions), Error> {
        let len = self.params.len();
        let group = groups.get(self.group).ok_or(Error::NoSuchGroup {
            index: self.group,
            count: groups.len(),
        })?;
        let stream = self.stream.unwrap_or(index as u64);
        let options = tensor_options(&group.options, self.step, self.offset, stream);
        let k = cache.constants(self.group, group, &options, len)?;
        if let MomentumMut::Q8(_) = self.momentum {
            crate::reference::check_q8_offset(&options)?;
        }
        check_lengths(len, self.grads.len(), self.momentum.len()).map_err(|e| match e {
            Error::LengthMismatch {
                what,
                expected,
                found,
            } => Error::TensorMismatch {
                index,
                what,
                expected,
                found,
            },
            e => e,
        })?;
        Ok((k, options))
    }

    /// The job of this (validated) update.
    #[inline]
    fn job(&mut self, index: usize, settings: (Consts, StepOptions)) -> Job<Dyn<'_>> {
        let slices = Dyn {
            p: self.params.reborrow(),
            g: self.grads,
            m: self.momentum.reborrow(),
        };
        Job::new(slices, settings.0, settings.1, index)
    }
}

/// Each group's constants, computed once per call (with `alloc`; without, every time; for no
/// group, `Cache::new(0)`, every time and without allocating).
struct Cache {
    #[cfg(feature = "alloc")]
    consts: Vec<Option<Consts>>,
}

impl Cache {
    #[inline]
    fn new(groups: usize) -> Self {
        #[cfg(feature = "alloc")]
        return Self {
            consts: alloc::vec![None; groups],
        };
        #[cfg(not(feature = "alloc"))]
        return {
            let _ = groups;
            Self {}
        };
    }

    /// The constants of `group` (the group `g`), validating `options` for `len` elements.
    #[inline]
    fn constants(
        &mut self,
        g: usize,
        group: &Group,
        options: &StepOptions,
        len: usize,
    ) -> Result<Consts, Error> {
        #[cfg(feature = "alloc")]
        if let Some(slot) = self.consts.get_mut(g) {
            if let Some(k) = slot {
                validate_options(options, len)?;
                return Ok(*k);
            }
            return Ok(*slot.insert(group.hp.constants_with(options, len)?));
        }
        let _ = g;
        group.hp.constants_with(options, len)
    }
}

/// One Lion step over many tensors at once, each with the settings of its group: the stateless
/// core of [`Lion::step`](crate::Lion::step), for frameworks that keep the momentum themselves.
///
/// Checks every update first (its group exists and is valid, its lengths agree) and writes
/// nothing on error. Then, if a tensor whose group sets
/// [`skip_non_finite`](StepOptions::skip_non_finite) has a non-finite gradient, skips the whole
/// step (nothing written: [`Outcome::SkippedNonFinite`]); otherwise counts the cautious tensors
/// and steps every tensor. With the `rayon` feature, the whole set is spread over the current
/// rayon thread pool (large tensors cut into blocks, small ones batched), bit-identically. Each
/// tensor's step is [`step_with`](crate::step_with) with its group's options, the update's
/// [`step`](Update::step) and [`offset`](Update::offset), and the group's seed mixed with the
/// update's [`stream`](Update::stream) (`seed ^ stream.wrapping_mul(0x9e37_79b9_7f4a_7c15)`).
///
/// ```
/// use lion_optim::{Group, Hyperparams, Update, bf16};
///
/// let decay = Group::new(Hyperparams { lr: 0.01, weight_decay: 0.1, ..Hyperparams::default() });
/// let no_decay = Group::new(Hyperparams { lr: 0.01, ..Hyperparams::default() });
/// let (mut w, mut mw) = (vec![1.0f32; 300], vec![0.0f32; 300]);
/// let (mut b, mut mb) = (vec![bf16::ONE; 3], vec![0.0f32; 3]);
/// let (gw, gb) = (vec![0.5f32; 300], vec![bf16::from_f32(0.5); 3]);
/// lion_optim::step_many(
///     &mut [Update::new(&mut w, &gw, &mut mw), Update::new(&mut b, &gb, &mut mb).group(1)],
///     &[decay, no_decay],
/// )?;
/// assert_eq!(w[0], 1.0 * (1.0f64 - 0.01 * 0.1) as f32 - 0.01f64 as f32);
/// assert_eq!(b[0], bf16::from_f32(1.0 - 0.01f64 as f32));
/// # Ok::<(), lion_optim::Error>(())
/// ```
pub fn step_many(updates: &mut [Update<'_>], groups: &[Group]) -> Result<Outcome, Error> {
    run(Isa::best(), updates, groups, false)
}

/// [`step_many`] with every group's `skip_non_finite` set.
#[deprecated(
    since = "0.2.0",
    note = "use `step_many` with `skip_non_finite: true` in the groups' options"
)]
pub fn step_many_guarded(updates: &mut [Update<'_>], groups: &[Group]) -> Result<Outcome, Error> {
    run(Isa::best(), updates, groups, true)
}

/// [`step_many`] on `isa` (with `skip_all`, as if every group set `skip_non_finite`).
pub(crate) fn run(
    isa: Isa,
    updates: &mut [Update<'_>],
    groups: &[Group],
    skip_all: bool,
) -> Result<Outcome, Error> {
    if let [u] = updates {
        return run_one(isa, u, groups, skip_all);
    }
    // Every check before any write.
    let mut cache = Cache::new(groups.len());
    for (index, u) in updates.iter().enumerate() {
        u.settings(index, groups, &mut cache)?;
    }
    let jobs = ManyJobs {
        updates,
        groups,
        cache,
        skip_all,
    };
    Ok(execute(isa, jobs, true))
}

/// [`run`] of one update: validated once and run as one job, without allocating.
#[inline]
fn run_one(
    isa: Isa,
    u: &mut Update<'_>,
    groups: &[Group],
    skip_all: bool,
) -> Result<Outcome, Error> {
    let (k, mut options) = u.settings(0, groups, &mut Cache::new(0))?;
    options.skip_non_finite |= skip_all;
    Ok(execute(isa, u.job(0, (k, options)), true))
}

/// The jobs of a validated [`step_many`]: job `i` is update `i`.
struct ManyJobs<'x, 'a> {
    updates: &'x mut [Update<'a>],
    groups: &'x [Group],
    cache: Cache,
    skip_all: bool,
}

impl ManyJobs<'_, '_> {
    /// Calls `f` with job `i` (validated: its settings cannot fail).
    fn with_job<R>(&mut self, i: usize, f: impl FnOnce(&mut Job<Dyn<'_>>) -> R) -> Option<R> {
        let u = self.updates.get_mut(i)?;
        let (k, mut options) = u.settings(i, self.groups, &mut self.cache).ok()?;
        options.skip_non_finite |= self.skip_all;
        Some(f(&mut u.job(i, (k, options))))
    }
}

impl<'x> Jobs for ManyJobs<'x, '_> {
    #[cfg(feature = "rayon")]
    type Slices = Dyn<'x>;

    fn len(&self) -> usize {
        self.updates.len()
    }

    #[cfg(feature = "rayon")]
    fn elements(&self) -> usize {
        self.updates.iter().map(Update::len).sum()
    }

    fn skips_at(&mut self, isa: Isa, i: usize) -> bool {
        // Only a job whose options ask for the check can skip: settle that from its group
        // before building the job (most steps ask for none).
        let asks = |u: &Update<'_>| {
            let group = self.groups.get(u.group);
            self.skip_all || group.is_some_and(|g| g.options.skip_non_finite)
        };
        self.updates.get(i).is_some_and(asks) && self.with_job(i, |j| j.skips(isa)).unwrap_or(false)
    }

    fn run_at(&mut self, isa: Isa, i: usize) {
        self.with_job(i, |j| j.run(isa));
    }

    #[cfg(feature = "rayon")]
    fn into_jobs(self) -> Vec<Job<Dyn<'x>>> {
        let ManyJobs {
            updates,
            groups,
            mut cache,
            skip_all,
        } = self;
        let mut jobs = Vec::with_capacity(updates.len());
        for (i, u) in updates.iter_mut().enumerate() {
            if let Ok((k, mut options)) = u.settings(i, groups, &mut cache) {
                options.skip_non_finite |= skip_all;
                jobs.push(u.job(i, (k, options)));
            }
        }
        jobs
    }
}
