//! The executor: every step of the crate — [`step_with`](crate::step_with),
//! [`par_step_with`](crate::par_step_with), [`step_many`](crate::step_many) and
//! [`Lion::step`](crate::Lion::step) — runs here, as validated work ([`Job`]s) over slices typed
//! at compile time ([`Typed`]) or at run time ([`Dyn`]), one after the other or spread over
//! rayon's thread pool ([`execute`]).
//!
//! The parallel partition: every job is cut into blocks of [`PAR_BLOCK`] elements (each with its
//! global offset, so stochastic rounding is unchanged), and runs of consecutive small blocks are
//! batched until a batch holds about `PAR_BLOCK` elements; the batches are the parallel tasks. A
//! cautious tensor ([`Cautious::Whole`]) is counted block by block first (in parallel), the
//! counts added per tensor, and every block stepped with the tensor's total. Lion is
//! element-wise, so any cut gives the bytes of the sequential step.

#[cfg(feature = "rayon")]
use alloc::vec::Vec;

use crate::arch::Isa;
use crate::dtype::slices::{VisitG, VisitGM, VisitPGM, with_g, with_gm, with_pgm};
use crate::dtype::{Element, MomentumMut, MomentumRef, Q8Mut, Q8Ref, SliceMut, SliceRef};
use crate::error::check_lengths;
use crate::hyper::Consts;
use crate::kernel::{Count, CountQ8, Finite, Step, StepQ8};
use crate::{Cautious, Error, Hyperparams, Outcome, Rounding, StepOptions, reference};

/// Slices are split across threads only from this many elements in all (at this size one core
/// updates them in less time than it takes to wake a second thread): a single tensor by
/// [`par_step_with`](crate::par_step_with), a whole model by [`step_many`](crate::step_many)
/// and [`Lion::step`](crate::Lion::step) (with the `rayon` feature).
///
/// ```
/// assert!(lion_optim::PAR_THRESHOLD >= lion_optim::PAR_BLOCK);
/// ```
pub const PAR_THRESHOLD: usize = 1 << 18;

/// The number of elements each thread updates at a time in a parallel step: a multiple of every
/// path's lane count.
///
/// ```
/// assert_eq!(lion_optim::PAR_BLOCK % 64, 0);
/// ```
pub const PAR_BLOCK: usize = 1 << 16;

/// Parameters, gradients and momentum of equal length, whose element types are known at
/// compile time ([`Typed`]) or at run time ([`Dyn`]).
pub(crate) trait Slices: Sized {
    /// The number of elements.
    fn len(&self) -> usize;
    /// The elements `..mid` and `mid..` (`mid` clamped to the length; with 8-bit momentum
    /// rounded down to a multiple of 256).
    fn split_at(self, mid: usize) -> (Self, Self);
    /// Whether every gradient, times `inv_scale` if given, is finite.
    fn all_finite(&self, isa: Isa, inv_scale: Option<f32>) -> bool;
    /// The cautious count (see `kernel::cautious_count`).
    fn count(&self, isa: Isa, k: &Consts, options: &StepOptions) -> u64;
    /// The step with final constants (the cautious learning rate applied).
    fn step(&mut self, isa: Isa, k: &Consts, options: &StepOptions);
}

/// Slices of element types known at compile time.
pub(crate) struct Typed<'a, P, G, M> {
    pub(crate) p: &'a mut [P],
    pub(crate) g: &'a [G],
    pub(crate) m: &'a mut [M],
}

impl<P: Element, G: Element, M: Element> Slices for Typed<'_, P, G, M> {
    fn len(&self) -> usize {
        self.p.len()
    }

    fn split_at(self, mid: usize) -> (Self, Self) {
        let mid = mid.min(self.p.len()).min(self.g.len()).min(self.m.len());
        let (p1, p2) = self.p.split_at_mut(mid);
        let (g1, g2) = self.g.split_at(mid);
        let (m1, m2) = self.m.split_at_mut(mid);
        (
            Typed {
                p: p1,
                g: g1,
                m: m1,
            },
            Typed {
                p: p2,
                g: g2,
                m: m2,
            },
        )
    }

    fn all_finite(&self, isa: Isa, inv_scale: Option<f32>) -> bool {
        isa.run(Finite {
            grads: self.g,
            inv_scale,
        })
    }

    fn count(&self, isa: Isa, k: &Consts, options: &StepOptions) -> u64 {
        isa.run(Count {
            grads: self.g,
            momentum: self.m,
            k,
            options,
        })
    }

    fn step(&mut self, isa: Isa, k: &Consts, options: &StepOptions) {
        let slices = Typed {
            p: &mut *self.p,
            g: self.g,
            m: &mut *self.m,
        };
        segments(slices, options, |t, options, key| {
            isa.run(Step {
                params: t.p,
                grads: t.g,
                momentum: t.m,
                k,
                options,
                key,
            })
        });
    }
}

/// Runs `f` on `slices` with the key of their random bits; with stochastic rounding, cut where
/// the element index crosses a multiple of 2^32, so that within one kernel call the index's high
/// 32 bits (folded into the key) are the same for every element. (A multiple of 2^32 is one of
/// 256: 8-bit blocks are never cut.)
fn segments<S: Slices>(slices: S, options: &StepOptions, mut f: impl FnMut(S, &StepOptions, u32)) {
    let Rounding::Stochastic { seed } = options.rounding else {
        return f(slices, options, 0);
    };
    let (mut rest, mut offset) = (slices, options.offset);
    loop {
        let to_boundary = (1u64 << 32) - (offset & 0xffff_ffff);
        let n = usize::try_from(to_boundary).map_or(rest.len(), |b| b.min(rest.len()));
        let (now, later) = rest.split_at(n);
        let (done, key) = (
            now.len(),
            reference::stream_key(seed, options.step, (offset >> 32) as u32),
        );
        f(now, &StepOptions { offset, ..*options }, key);
        if later.len() == 0 || done == 0 {
            return;
        }
        (rest, offset) = (later, offset + done as u64);
    }
}

/// 8-bit momentum with parameters and gradients of element types known at compile time.
pub(crate) struct TypedQ8<'a, P, G> {
    pub(crate) p: &'a mut [P],
    pub(crate) g: &'a [G],
    pub(crate) m: Q8Mut<'a>,
}

impl<P: Element, G: Element> Slices for TypedQ8<'_, P, G> {
    fn len(&self) -> usize {
        self.p.len()
    }

    /// Cuts at a multiple of 256 (at or below `mid`).
    fn split_at(self, mid: usize) -> (Self, Self) {
        let (m1, m2) = self.m.split_blocks(mid);
        let mid = m1.len();
        let (p1, p2) = self.p.split_at_mut(mid.min(self.p.len()));
        let (g1, g2) = self.g.split_at(mid.min(self.g.len()));
        (
            TypedQ8 {
                p: p1,
                g: g1,
                m: m1,
            },
            TypedQ8 {
                p: p2,
                g: g2,
                m: m2,
            },
        )
    }

    fn all_finite(&self, isa: Isa, inv_scale: Option<f32>) -> bool {
        isa.run(Finite {
            grads: self.g,
            inv_scale,
        })
    }

    fn count(&self, isa: Isa, k: &Consts, options: &StepOptions) -> u64 {
        isa.run(CountQ8 {
            grads: self.g,
            momentum: self.m.as_ref(),
            k,
            options,
        })
    }

    fn step(&mut self, isa: Isa, k: &Consts, options: &StepOptions) {
        let slices = TypedQ8 {
            p: &mut *self.p,
            g: self.g,
            m: self.m.reborrow(),
        };
        segments(slices, options, |t, options, key| {
            isa.run(StepQ8 {
                params: t.p,
                grads: t.g,
                momentum: t.m,
                k,
                options,
                key,
            })
        });
    }
}

/// Slices of element types known at run time: every operation types them once (through the
/// dtype module's visitors) and runs the [`Typed`] one.
pub(crate) struct Dyn<'a> {
    pub(crate) p: SliceMut<'a>,
    pub(crate) g: SliceRef<'a>,
    pub(crate) m: MomentumMut<'a>,
}

impl Slices for Dyn<'_> {
    fn len(&self) -> usize {
        self.p.len()
    }

    fn split_at(self, mid: usize) -> (Self, Self) {
        let (m1, m2) = self.m.split_clamped(mid);
        let mid = m1.len();
        let (p1, p2) = self.p.split_clamped(mid);
        let (g1, g2) = self.g.split_clamped(mid);
        (
            Dyn {
                p: p1,
                g: g1,
                m: m1,
            },
            Dyn {
                p: p2,
                g: g2,
                m: m2,
            },
        )
    }

    fn all_finite(&self, isa: Isa, inv_scale: Option<f32>) -> bool {
        finite_dyn(isa, self.g, inv_scale)
    }

    fn count(&self, isa: Isa, k: &Consts, options: &StepOptions) -> u64 {
        count_dyn(isa, self.g, self.m.as_ref(), k, options)
    }

    fn step(&mut self, isa: Isa, k: &Consts, options: &StepOptions) {
        struct V<'k> {
            isa: Isa,
            k: &'k Consts,
            options: &'k StepOptions,
        }
        impl VisitPGM for V<'_> {
            type Output = ();
            fn visit<P: Element, G: Element, M: Element>(self, p: &mut [P], g: &[G], m: &mut [M]) {
                Typed { p, g, m }.step(self.isa, self.k, self.options)
            }
            fn visit_q8<P: Element, G: Element>(self, p: &mut [P], g: &[G], m: Q8Mut<'_>) {
                TypedQ8 { p, g, m }.step(self.isa, self.k, self.options)
            }
        }
        let v = V { isa, k, options };
        with_pgm(self.p.reborrow(), self.g, self.m.reborrow(), v)
    }
}

/// Whether every element of run-time-typed gradients, times `inv_scale`, is finite.
pub(crate) fn finite_dyn(isa: Isa, g: SliceRef<'_>, inv_scale: Option<f32>) -> bool {
    struct V(Isa, Option<f32>);
    impl VisitG for V {
        type Output = bool;
        fn visit<G: Element>(self, grads: &[G]) -> bool {
            self.0.run(Finite {
                grads,
                inv_scale: self.1,
            })
        }
    }
    with_g(g, V(isa, inv_scale))
}

/// The cautious count of run-time-typed gradients and momentum (of equal length).
pub(crate) fn count_dyn(
    isa: Isa,
    g: SliceRef<'_>,
    m: MomentumRef<'_>,
    k: &Consts,
    options: &StepOptions,
) -> u64 {
    struct V<'k>(Isa, &'k Consts, &'k StepOptions);
    impl VisitGM for V<'_> {
        type Output = u64;
        fn visit<G: Element, M: Element>(self, grads: &[G], momentum: &[M]) -> u64 {
            self.0.run(Count {
                grads,
                momentum,
                k: self.1,
                options: self.2,
            })
        }
        fn visit_q8<G: Element>(self, grads: &[G], momentum: Q8Ref<'_>) -> u64 {
            self.0.run(CountQ8 {
                grads,
                momentum,
                k: self.1,
                options: self.2,
            })
        }
    }
    with_gm(g, m, V(isa, k, options))
}

/// One tensor's (or one piece of it) validated share of a step: slices of equal length, the
/// constants and options of its group (valid for these slices).
pub(crate) struct Job<S> {
    pub(crate) slices: S,
    pub(crate) k: Consts,
    pub(crate) options: StepOptions,
    /// For [`Cautious::Whole`]: this piece's count, once taken (then the tensor's total).
    count: Option<u64>,
    /// Which tensor a piece belongs to (its position in the step), and that tensor's length.
    #[cfg_attr(not(feature = "rayon"), allow(dead_code))]
    tensor: usize,
    numel: u64,
}

impl<S: Slices> Job<S> {
    /// The work of one tensor (the `tensor`-th of a step) over validated slices.
    pub(crate) fn new(slices: S, k: Consts, options: StepOptions, tensor: usize) -> Self {
        let numel = slices.len() as u64;
        Self {
            slices,
            k,
            options,
            count: None,
            tensor,
            numel,
        }
    }

    /// Whether the options ask to skip a non-finite step and a gradient is not finite.
    pub(crate) fn skips(&self, isa: Isa) -> bool {
        self.options.skip_non_finite && !self.slices.all_finite(isa, self.k.unscale(&self.options))
    }

    /// Takes the cautious count of this piece, if it needs one.
    #[cfg_attr(not(feature = "rayon"), allow(dead_code))]
    fn count(&mut self, isa: Isa) {
        if self.options.cautious == Cautious::Whole && self.count.is_none() {
            self.count = Some(self.slices.count(isa, &self.k, &self.options));
        }
    }

    /// Runs the step (a whole cautious tensor counted first, unless its total is known).
    pub(crate) fn run(&mut self, isa: Isa) {
        let (slices, options) = (&self.slices, &self.options);
        let k = self.k.caution(options.cautious, self.numel, || {
            self.count
                .unwrap_or_else(|| slices.count(isa, &self.k, options))
        });
        self.slices.step(isa, &k, &self.options);
    }

    /// Cuts the job into pieces of at most `block` elements, each with its global offset.
    #[cfg(feature = "rayon")]
    fn split_into(self, block: usize, out: &mut Vec<Job<S>>) {
        let Job {
            mut slices,
            k,
            options,
            count,
            tensor,
            numel,
        } = self;
        let mut offset = options.offset;
        loop {
            let n = slices.len().min(block);
            let (piece, rest) = slices.split_at(n);
            out.push(Job {
                slices: piece,
                k,
                options: StepOptions { offset, ..options },
                count,
                tensor,
                numel,
            });
            if rest.len() == 0 {
                return;
            }
            slices = rest;
            offset += n as u64;
        }
    }
}

/// The jobs of one step, handed out one at a time (so that a step needs no allocation) or all
/// at once for the parallel executor.
pub(crate) trait Jobs {
    /// The slices of the jobs handed to the parallel executor.
    #[cfg(feature = "rayon")]
    type Slices: Slices + Send + Sync;
    /// The number of jobs.
    fn len(&self) -> usize;
    /// Their elements in all.
    #[cfg(feature = "rayon")]
    fn elements(&self) -> usize;
    /// Whether job `i`'s options ask to skip a non-finite step and a gradient is not finite.
    fn skips_at(&mut self, isa: Isa, i: usize) -> bool;
    /// Runs job `i`.
    fn run_at(&mut self, isa: Isa, i: usize);
    /// All jobs at once.
    #[cfg(feature = "rayon")]
    fn into_jobs(self) -> Vec<Job<Self::Slices>>;
}

/// One job is a step of its own.
impl<S: Slices + Send + Sync> Jobs for Job<S> {
    #[cfg(feature = "rayon")]
    type Slices = S;
    fn len(&self) -> usize {
        1
    }
    #[cfg(feature = "rayon")]
    fn elements(&self) -> usize {
        self.slices.len()
    }
    fn skips_at(&mut self, isa: Isa, _: usize) -> bool {
        Job::skips(self, isa)
    }
    fn run_at(&mut self, isa: Isa, _: usize) {
        Job::run(self, isa)
    }
    #[cfg(feature = "rayon")]
    fn into_jobs(self) -> Vec<Job<S>> {
        alloc::vec![self]
    }
}

#[cfg(feature = "alloc")]
impl<S: Slices + Send + Sync> Jobs for alloc::vec::Vec<Job<S>> {
    #[cfg(feature = "rayon")]
    type Slices = S;
    fn len(&self) -> usize {
        <[Job<S>]>::len(self)
    }
    #[cfg(feature = "rayon")]
    fn elements(&self) -> usize {
        self.iter().map(|j| j.slices.len()).sum()
    }
    fn skips_at(&mut self, isa: Isa, i: usize) -> bool {
        self.get(i).is_some_and(|j| j.skips(isa))
    }
    fn run_at(&mut self, isa: Isa, i: usize) {
        if let Some(j) = self.get_mut(i) {
            j.run(isa);
        }
    }
    #[cfg(feature = "rayon")]
    fn into_jobs(self) -> Vec<Job<S>> {
        self
    }
}

/// Runs the jobs of one step: first, if a job's options ask for it, the finiteness check of
/// every such job (a non-finite gradient skips the whole step: nothing is written); then every
/// job. With `spread` (and the `rayon` feature), on rayon's current thread pool when the jobs
/// hold at least [`PAR_THRESHOLD`] elements and the pool has more than one thread.
pub(crate) fn execute<J: Jobs>(isa: Isa, mut jobs: J, spread: bool) -> Outcome {
    #[cfg(feature = "rayon")]
    if spread && jobs.elements() >= PAR_THRESHOLD && rayon::current_num_threads() > 1 {
        return parallel(isa, jobs.into_jobs());
    }
    let _ = spread;
    if (0..jobs.len()).any(|i| jobs.skips_at(isa, i)) {
        return Outcome::SkippedNonFinite;
    }
    for i in 0..jobs.len() {
        jobs.run_at(isa, i);
    }
    Outcome::Applied
}

/// The parallel executor (see the module docs).
#[cfg(feature = "rayon")]
fn parallel<S: Slices + Send + Sync>(isa: Isa, jobs: Vec<Job<S>>) -> Outcome {
    use rayon::prelude::*;
    let total: usize = jobs.iter().map(|j| j.slices.len()).sum();
    let mut blocks = Vec::with_capacity(jobs.len() + total / PAR_BLOCK + 1);
    for job in jobs {
        job.split_into(PAR_BLOCK, &mut blocks);
    }
    let mut batches = batches(&mut blocks, PAR_BLOCK);
    if batches
        .par_iter()
        .any(|batch| batch.iter().any(|j| j.skips(isa)))
    {
        return Outcome::SkippedNonFinite;
    }
    if blocks_need_counts(&batches) {
        batches
            .par_iter_mut()
            .for_each(|batch| batch.iter_mut().for_each(|j| j.count(isa)));
        drop(batches);
        add_counts_per_tensor(&mut blocks);
        batches = self::batches(&mut blocks, PAR_BLOCK);
    }
    batches
        .into_par_iter()
        .for_each(|batch| batch.iter_mut().for_each(|j| j.run(isa)));
    Outcome::Applied
}

#[cfg(feature = "rayon")]
fn blocks_need_counts<S>(batches: &[&mut [Job<S>]]) -> bool {
    batches
        .iter()
        .any(|b| b.iter().any(|j| j.options.cautious == Cautious::Whole))
}

/// Replaces each counted block's count by its tensor's total (the blocks of a tensor are
/// consecutive).
#[cfg(feature = "rayon")]
fn add_counts_per_tensor<S>(blocks: &mut [Job<S>]) {
    for run in blocks.chunk_by_mut(|a, b| a.tensor == b.tensor) {
        let total = run.iter().filter_map(|j| j.count).sum::<u64>();
        for j in run.iter_mut().filter(|j| j.count.is_some()) {
            j.count = Some(total);
        }
    }
}

/// Consecutive runs of blocks with about `target` elements each (a block is never split).
#[cfg(feature = "rayon")]
fn batches<S: Slices>(mut blocks: &mut [Job<S>], target: usize) -> Vec<&mut [Job<S>]> {
    let mut out = Vec::new();
    while !blocks.is_empty() {
        let (mut n, mut elements) = (0, 0);
        while n < blocks.len() && (n == 0 || elements + blocks[n].slices.len() <= target) {
            elements += blocks[n].slices.len();
            n += 1;
        }
        let (batch, rest) = blocks.split_at_mut(n);
        out.push(batch);
        blocks = rest;
    }
    out
}

/// One Lion step over typed slices on `isa` (the body of `step_with` and `par_step_with` on
/// every backend): validated, then one job.
pub(crate) fn step_one<P: Element, G: Element, M: Element>(
    isa: Isa,
    params: &mut [P],
    grads: &[G],
    momentum: &mut [M],
    hp: &Hyperparams,
    options: &StepOptions,
    spread: bool,
) -> Result<Outcome, Error> {
    let k = hp.constants_with(options, params.len())?;
    check_lengths(params.len(), grads.len(), momentum.len())?;
    let slices = Typed {
        p: params,
        g: grads,
        m: momentum,
    };
    Ok(execute(isa, Job::new(slices, k, *options, 0), spread))
}

/// Whether every gradient (after the options' unscaling) is finite, on `isa`; `false` if the
/// options are invalid.
pub(crate) fn finite_one<G: Element>(isa: Isa, grads: &[G], options: &StepOptions) -> bool {
    match Hyperparams::default().constants_with(options, 0) {
        Ok(k) => isa.run(Finite {
            grads,
            inv_scale: k.unscale(options),
        }),
        Err(_) => false,
    }
}
