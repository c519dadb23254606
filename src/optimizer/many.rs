//! One step over many tensors: the validated per-tensor work ([`Job`]), the stateless
//! many-tensor step ([`step_many`]) and the work partition that spreads a whole model over
//! rayon's thread pool.
//!
//! The partition: every tensor is cut into blocks of [`PAR_BLOCK`] elements (each with its
//! global offset, so stochastic rounding is unchanged), and runs of consecutive small blocks
//! are batched until a batch holds about `PAR_BLOCK` elements; the batches are the parallel
//! tasks. A cautious tensor is counted block by block first (in parallel), the counts added per
//! tensor, and every block stepped with the tensor's total. Lion is element-wise, so any cut
//! gives the bytes of the sequential step.

#[cfg(feature = "rayon")]
use alloc::vec::Vec;

use super::slices::{count_dyn, finite_dyn, step_dyn};
use super::{Group, SliceMut, SliceRef};
use crate::error::check_lengths;
use crate::hyper::Consts;
use crate::{Cautious, Element, Error, Outcome, Path, Rounding, StepOptions};

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

/// One tensor's (or one block's) validated share of a step: slices of equal length, the step's
/// constants and options.
pub(crate) struct Job<'a> {
    pub(crate) params: SliceMut<'a>,
    pub(crate) grads: SliceRef<'a>,
    pub(crate) momentum: SliceMut<'a>,
    pub(crate) k: Consts,
    pub(crate) options: StepOptions,
    /// For [`Cautious::Whole`]: this block's count, once taken (then the tensor's total).
    count: Option<u64>,
    /// Which tensor a block belongs to, and that tensor's length (for cautious totals).
    #[cfg_attr(not(feature = "rayon"), allow(dead_code))]
    tensor: usize,
    #[cfg_attr(not(feature = "rayon"), allow(dead_code))]
    tensor_len: usize,
}

impl<'a> Job<'a> {
    /// A job over validated slices (equal lengths, `k` and `options` valid for them).
    pub(crate) fn new(
        params: SliceMut<'a>,
        grads: SliceRef<'a>,
        momentum: SliceMut<'a>,
        k: Consts,
        options: StepOptions,
        tensor: usize,
    ) -> Self {
        let tensor_len = params.len();
        Self {
            params,
            grads,
            momentum,
            k,
            options,
            count: None,
            tensor,
            tensor_len,
        }
    }

    #[cfg_attr(not(feature = "rayon"), allow(dead_code))]
    fn len(&self) -> usize {
        self.params.len()
    }

    /// Whether every gradient is finite (after unscaling).
    pub(crate) fn finite(&self, path: Path) -> bool {
        finite_dyn(path, self.grads, &self.options)
    }

    /// Takes the cautious count of this job if it needs one.
    fn count(&mut self, path: Path) {
        if self.options.cautious == Cautious::Whole && self.count.is_none() {
            let n = count_dyn(
                path,
                self.grads,
                self.momentum.as_ref(),
                &self.k,
                &self.options,
            );
            self.count = Some(n);
        }
    }

    /// Runs the step (counting first if it is cautious and not yet counted).
    pub(crate) fn run(&mut self, path: Path) {
        let k = match self.options.cautious {
            Cautious::Off => self.k,
            Cautious::Whole => {
                self.count(path);
                let agreeing = self.count.unwrap_or(0);
                self.k.cautious(agreeing, self.tensor_len as u64)
            }
            Cautious::Shard { agreeing, numel } => self.k.cautious(agreeing, numel),
        };
        let (p, m) = (self.params.reborrow(), self.momentum.reborrow());
        step_dyn(path, p, self.grads, m, &k, &self.options);
    }

    /// Cuts the job into blocks of at most `block` elements, each with its global offset.
    #[cfg(feature = "rayon")]
    fn split_into(self, block: usize, out: &mut Vec<Job<'a>>) {
        let Self {
            mut params,
            mut grads,
            mut momentum,
            k,
            options,
            count,
            tensor,
            tensor_len,
        } = self;
        let mut offset = options.offset;
        loop {
            let n = params.len().min(block);
            let (Some((p, p_rest)), Some((g, g_rest)), Some((m, m_rest))) =
                (params.split_at(n), grads.split_at(n), momentum.split_at(n))
            else {
                return; // unreachable: the lengths are equal
            };
            let options = StepOptions { offset, ..options };
            out.push(Job {
                params: p,
                grads: g,
                momentum: m,
                k,
                options,
                count,
                tensor,
                tensor_len,
            });
            if p_rest.is_empty() {
                return;
            }
            (params, grads, momentum) = (p_rest, g_rest, m_rest);
            offset += n as u64;
        }
    }
}

/// Total elements from which a many-tensor step is spread over rayon's threads.
#[cfg(feature = "rayon")]
const PAR_TOTAL: usize = crate::PAR_THRESHOLD;

/// Runs jobs, on rayon's thread pool when they are large enough together; with
/// `skip_non_finite`, checks every gradient first and runs nothing if one is not finite.
/// Returns whether the step was applied.
#[cfg(feature = "rayon")]
pub(crate) fn run_parallel(path: Path, jobs: Vec<Job<'_>>, skip_non_finite: bool) -> Outcome {
    use rayon::prelude::*;
    let total: usize = jobs.iter().map(Job::len).sum();
    if total < PAR_TOTAL || rayon::current_num_threads() < 2 {
        if skip_non_finite && !jobs.iter().all(|j| j.finite(path)) {
            return Outcome::SkippedNonFinite;
        }
        jobs.into_iter().for_each(|mut j| j.run(path));
        return Outcome::Applied;
    }
    let mut blocks = Vec::with_capacity(jobs.len() + total / crate::PAR_BLOCK + 1);
    for job in jobs {
        job.split_into(crate::PAR_BLOCK, &mut blocks);
    }
    let mut batches = batches(&mut blocks, crate::PAR_BLOCK);
    if skip_non_finite
        && !batches
            .par_iter()
            .all(|batch| batch.iter().all(|j| j.finite(path)))
    {
        return Outcome::SkippedNonFinite;
    }
    if blocks_need_counts(&batches) {
        batches
            .par_iter_mut()
            .for_each(|batch| batch.iter_mut().for_each(|j| j.count(path)));
        drop(batches);
        add_counts_per_tensor(&mut blocks);
        batches = self::batches(&mut blocks, crate::PAR_BLOCK);
    }
    batches
        .into_par_iter()
        .for_each(|batch| batch.iter_mut().for_each(|j| j.run(path)));
    Outcome::Applied
}

#[cfg(feature = "rayon")]
fn blocks_need_counts(batches: &[&mut [Job<'_>]]) -> bool {
    batches
        .iter()
        .any(|b| b.iter().any(|j| j.options.cautious == Cautious::Whole))
}

/// Replaces each counted block's count by its tensor's total (the blocks of a tensor are
/// consecutive).
#[cfg(feature = "rayon")]
fn add_counts_per_tensor(blocks: &mut [Job<'_>]) {
    for run in blocks.chunk_by_mut(|a, b| a.tensor == b.tensor) {
        let total = run.iter().filter_map(|j| j.count).sum::<u64>();
        for j in run.iter_mut().filter(|j| j.count.is_some()) {
            j.count = Some(total);
        }
    }
}

/// Consecutive runs of blocks with about `target` elements each (a block is never split).
#[cfg(feature = "rayon")]
fn batches<'b, 'a>(mut blocks: &'b mut [Job<'a>], target: usize) -> Vec<&'b mut [Job<'a>]> {
    let mut out = Vec::new();
    while !blocks.is_empty() {
        let (mut n, mut elements) = (0, 0);
        while n < blocks.len() && (n == 0 || elements + blocks[n].len() <= target) {
            elements += blocks[n].len();
            n += 1;
        }
        let (batch, rest) = blocks.split_at_mut(n);
        out.push(batch);
        blocks = rest;
    }
    out
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
    momentum: SliceMut<'a>,
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
        Self::from_slices(params.into(), grads.into(), momentum.into())
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
    pub fn from_slices(params: SliceMut<'a>, grads: SliceRef<'a>, momentum: SliceMut<'a>) -> Self {
        Self {
            params,
            grads,
            momentum,
            group: 0,
            stream: None,
            offset: 0,
            step: 0,
        }
    }

    /// Uses the settings `groups[index]` of [`step_many`] (default 0).
    pub fn group(self, index: usize) -> Self {
        Self {
            group: index,
            ..self
        }
    }

    /// The step number, which keys the random bits of stochastic rounding (default 0): advance
    /// it every step, or the bits repeat.
    pub fn step(self, step: u64) -> Self {
        Self { step, ..self }
    }

    /// The index of these slices' first element in the whole tensor, for a piece of a larger
    /// tensor (see [`StepOptions::offset`]); default 0.
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
    pub fn stream(self, stream: u64) -> Self {
        Self {
            stream: Some(stream),
            ..self
        }
    }

    /// The number of parameters.
    pub fn len(&self) -> usize {
        self.params.len()
    }

    /// Whether there are no parameters.
    pub fn is_empty(&self) -> bool {
        self.params.is_empty()
    }

    /// Validates this update (the `index`-th of the call) against `groups` and makes its job.
    /// `cache` (one entry per group) keeps each group's constants once computed: an update then
    /// checks only what is its own (lengths, offset, a shard's count).
    fn job(
        &mut self,
        index: usize,
        groups: &[Group],
        cache: &mut [Option<Consts>],
    ) -> Result<Job<'_>, Error> {
        let len = self.params.len();
        let group = groups.get(self.group).ok_or(Error::NoSuchGroup {
            index: self.group,
            count: groups.len(),
        })?;
        let stream = self.stream.unwrap_or(index as u64);
        let options = tensor_options(&group.options, self.step, self.offset, stream);
        let k = match cache.get_mut(self.group) {
            Some(Some(k)) => {
                options.validate(len)?;
                *k
            }
            Some(slot) => *slot.insert(group.hp.constants_with(&options, len)?),
            None => group.hp.constants_with(&options, len)?,
        };
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
        Ok(Job::new(
            self.params.reborrow(),
            self.grads,
            self.momentum.reborrow(),
            k,
            options,
            index,
        ))
    }
}

/// One Lion step over many tensors at once, each with the settings of its group: the stateless
/// core of [`Lion::step`](crate::Lion::step), for frameworks that keep the momentum themselves.
///
/// Checks every update first (its group exists and is valid, its lengths agree) and writes
/// nothing on error. Then counts the cautious tensors and steps every tensor; with the `rayon`
/// feature, the whole set is spread over the current rayon thread pool (large tensors cut into
/// blocks, small ones batched; see the module docs), bit-identically. Each tensor's step is
/// [`step_with`](crate::step_with) with its group's options, the update's
/// [`step`](Update::step) and [`offset`](Update::offset), and the group's seed mixed with the
/// update's [`stream`](Update::stream).
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
pub fn step_many(updates: &mut [Update<'_>], groups: &[Group]) -> Result<(), Error> {
    run_many(updates, groups, false).map(|_| ())
}

/// [`step_many`], unless a gradient (after its group's unscaling) is infinite or NaN: then
/// nothing is written and [`Outcome::SkippedNonFinite`] is returned.
///
/// ```
/// use lion_optim::{Group, Outcome, Update};
///
/// let (mut p, mut m) = ([1.0f32; 2], [0.0f32; 2]);
/// let done = lion_optim::step_many_guarded(
///     &mut [Update::new(&mut p, &[f32::NAN, 1.0], &mut m)],
///     &[Group::default()],
/// )?;
/// assert_eq!((done, p), (Outcome::SkippedNonFinite, [1.0; 2]));
/// # Ok::<(), lion_optim::Error>(())
/// ```
#[must_use = "a skipped step changed nothing: the caller usually lowers its loss scale"]
pub fn step_many_guarded(updates: &mut [Update<'_>], groups: &[Group]) -> Result<Outcome, Error> {
    run_many(updates, groups, true)
}

fn run_many(
    updates: &mut [Update<'_>],
    groups: &[Group],
    skip_non_finite: bool,
) -> Result<Outcome, Error> {
    let path = Path::detect();
    // Every check before any write: the jobs are all made (each update validated once, each
    // group's constants computed once) before the first one runs.
    #[cfg(feature = "rayon")]
    {
        let mut cache = alloc::vec![None; groups.len()];
        let mut jobs = Vec::with_capacity(updates.len());
        for (index, u) in updates.iter_mut().enumerate() {
            jobs.push(u.job(index, groups, &mut cache)?);
        }
        Ok(run_parallel(path, jobs, skip_non_finite))
    }
    // Without `rayon` (and maybe without an allocator): validated first, then again as each
    // job is made and run.
    #[cfg(not(feature = "rayon"))]
    {
        for (index, u) in updates.iter_mut().enumerate() {
            u.job(index, groups, &mut [])?;
        }
        if skip_non_finite {
            for (index, u) in updates.iter_mut().enumerate() {
                if !u.job(index, groups, &mut [])?.finite(path) {
                    return Ok(Outcome::SkippedNonFinite);
                }
            }
        }
        for (index, u) in updates.iter_mut().enumerate() {
            u.job(index, groups, &mut [])?.run(path);
        }
        Ok(Outcome::Applied)
    }
}
