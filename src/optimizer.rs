//! The thin stateful optimizer: hyperparameters, one momentum buffer per tensor, a step count.

#[cfg(feature = "alloc")]
use alloc::{vec, vec::Vec};

use half::{bf16, f16};

use crate::error::CheckpointError;
use crate::{Dtype, Element, Error, Hyperparams, Outcome, Path, Rounding, StepOptions};

/// A mutable slice whose element type is known at run time.
///
/// ```
/// use lion_optim::{Dtype, SliceMut, bf16};
///
/// let mut data = [bf16::ZERO; 8];
/// let s = SliceMut::from(&mut data[..]);
/// assert_eq!((s.dtype(), s.len()), (Dtype::Bf16, 8));
/// ```
#[derive(Debug)]
pub enum SliceMut<'a> {
    /// f32 elements.
    F32(&'a mut [f32]),
    /// f16 elements.
    F16(&'a mut [f16]),
    /// bf16 elements.
    Bf16(&'a mut [bf16]),
}

/// A shared slice whose element type is known at run time.
///
/// ```
/// use lion_optim::{Dtype, SliceRef};
///
/// let s = SliceRef::from(&[1.0f32, 2.0][..]);
/// assert_eq!((s.dtype(), s.len()), (Dtype::F32, 2));
/// ```
#[derive(Clone, Copy, Debug)]
pub enum SliceRef<'a> {
    /// f32 elements.
    F32(&'a [f32]),
    /// f16 elements.
    F16(&'a [f16]),
    /// bf16 elements.
    Bf16(&'a [bf16]),
}

macro_rules! slice_common {
    ($t:ident, $empty:literal) => {
        impl $t<'_> {
            /// The element type (see the type's example).
            pub fn dtype(&self) -> Dtype {
                match self {
                    Self::F32(_) => Dtype::F32,
                    Self::F16(_) => Dtype::F16,
                    Self::Bf16(_) => Dtype::Bf16,
                }
            }
            /// The number of elements (see the type's example).
            pub fn len(&self) -> usize {
                match self {
                    Self::F32(s) => s.len(),
                    Self::F16(s) => s.len(),
                    Self::Bf16(s) => s.len(),
                }
            }
            /// Whether there are no elements.
            ///
            /// ```
            #[doc = concat!("assert!(lion_optim::", stringify!($t), "::from(", $empty, ").is_empty());")]
            /// ```
            pub fn is_empty(&self) -> bool {
                self.len() == 0
            }
        }
    };
}
slice_common!(SliceMut, "&mut [0.0f32; 0][..]");
slice_common!(SliceRef, "&[0.0f32; 0][..]");

impl<'a, T: Element> From<&'a mut [T]> for SliceMut<'a> {
    fn from(s: &'a mut [T]) -> Self {
        T::slice_mut(s)
    }
}

impl<'a, T: Element> From<&'a [T]> for SliceRef<'a> {
    fn from(s: &'a [T]) -> Self {
        T::slice_ref(s)
    }
}

impl<'a> SliceMut<'a> {
    /// A shorter-lived mutable view of the same slice.
    ///
    /// ```
    /// use lion_optim::SliceMut;
    ///
    /// let mut data = [1.0f32; 3];
    /// let mut s = SliceMut::from(&mut data[..]);
    /// if let SliceMut::F32(x) = s.reborrow() { x[0] = 2.0; }
    /// assert_eq!(s.len(), 3);
    /// assert_eq!(data[0], 2.0);
    /// ```
    pub fn reborrow(&mut self) -> SliceMut<'_> {
        match self {
            Self::F32(s) => SliceMut::F32(s),
            Self::F16(s) => SliceMut::F16(s),
            Self::Bf16(s) => SliceMut::Bf16(s),
        }
    }

    /// A shared view of the same slice.
    ///
    /// ```
    /// use lion_optim::{Dtype, SliceMut};
    ///
    /// let mut data = [lion_optim::f16::ONE; 2];
    /// assert_eq!(SliceMut::from(&mut data[..]).as_ref().dtype(), Dtype::F16);
    /// ```
    pub fn as_ref(&self) -> SliceRef<'_> {
        match self {
            Self::F32(s) => SliceRef::F32(s),
            Self::F16(s) => SliceRef::F16(s),
            Self::Bf16(s) => SliceRef::Bf16(s),
        }
    }
}

/// Runs `path.step_with` on runtime-typed slices: one generic call per dtype combination.
pub(crate) fn step_dyn(
    path: Path,
    params: SliceMut<'_>,
    grads: SliceRef<'_>,
    momentum: SliceMut<'_>,
    hp: &Hyperparams,
    options: &StepOptions,
) -> Result<(), Error> {
    type Args<'a> = (Path, &'a Hyperparams, &'a StepOptions);
    fn with_grads<P: Element>(
        p: &mut [P],
        g: SliceRef<'_>,
        m: SliceMut<'_>,
        args: Args<'_>,
    ) -> Result<(), Error> {
        match g {
            SliceRef::F32(g) => with_momentum(p, g, m, args),
            SliceRef::F16(g) => with_momentum(p, g, m, args),
            SliceRef::Bf16(g) => with_momentum(p, g, m, args),
        }
    }
    fn with_momentum<P: Element, G: Element>(
        p: &mut [P],
        g: &[G],
        m: SliceMut<'_>,
        args: Args<'_>,
    ) -> Result<(), Error> {
        match m {
            SliceMut::F32(m) => one(p, g, m, args),
            SliceMut::F16(m) => one(p, g, m, args),
            SliceMut::Bf16(m) => one(p, g, m, args),
        }
    }
    /// With `rayon`, large tensors are split across threads (bit-identical either way).
    fn one<P: Element, G: Element, M: Element>(
        p: &mut [P],
        g: &[G],
        m: &mut [M],
        (path, hp, options): Args<'_>,
    ) -> Result<(), Error> {
        #[cfg(feature = "rayon")]
        return path.par_step_with(p, g, m, hp, options);
        #[cfg(not(feature = "rayon"))]
        return path.step_with(p, g, m, hp, options);
    }
    let args = (path, hp, options);
    match params {
        SliceMut::F32(p) => with_grads(p, grads, momentum, args),
        SliceMut::F16(p) => with_grads(p, grads, momentum, args),
        SliceMut::Bf16(p) => with_grads(p, grads, momentum, args),
    }
}

/// `path.all_finite` on a runtime-typed slice.
fn all_finite_dyn(path: Path, grads: SliceRef<'_>, options: &StepOptions) -> bool {
    match grads {
        SliceRef::F32(g) => path.all_finite(g, options),
        SliceRef::F16(g) => path.all_finite(g, options),
        SliceRef::Bf16(g) => path.all_finite(g, options),
    }
}

/// One parameter tensor and its gradient, for [`Lion::step`]; element types may differ.
///
/// ```
/// use lion_optim::{Tensor, bf16};
///
/// let mut w = vec![bf16::ONE; 16];
/// let g = vec![0.5f32; 16];
/// let t = Tensor::new(&mut w, &g);
/// assert_eq!(t.len(), 16);
/// ```
#[derive(Debug)]
pub struct Tensor<'a> {
    params: SliceMut<'a>,
    grads: SliceRef<'a>,
}

impl<'a> Tensor<'a> {
    /// Pairs a parameter slice with its gradient (lengths are checked by [`Lion::step`]); see
    /// the type's example.
    pub fn new<P: Element, G: Element>(params: &'a mut [P], grads: &'a [G]) -> Self {
        Self {
            params: params.into(),
            grads: grads.into(),
        }
    }

    /// Pairs runtime-typed slices (for frameworks whose tensors carry their dtype at run time).
    ///
    /// ```
    /// use lion_optim::{SliceMut, SliceRef, Tensor};
    ///
    /// let (mut w, g) = ([1.0f32; 4], [0.5f32; 4]);
    /// let t = Tensor::from_slices(SliceMut::F32(&mut w), SliceRef::F32(&g));
    /// assert_eq!(t.len(), 4);
    /// ```
    pub fn from_slices(params: SliceMut<'a>, grads: SliceRef<'a>) -> Self {
        Self { params, grads }
    }

    /// The number of parameters (see the type's example).
    pub fn len(&self) -> usize {
        self.params.len()
    }

    /// Whether the tensor has no parameters.
    ///
    /// ```
    /// let mut w: [f32; 0] = [];
    /// assert!(lion_optim::Tensor::new(&mut w, &[0.0f32; 0]).is_empty());
    /// ```
    pub fn is_empty(&self) -> bool {
        self.params.is_empty()
    }
}

/// Where a [`Lion`] keeps the momentum of its tensors: `Vec<Buffer>` when it owns them, or
/// caller-provided slices (`[SliceMut; N]`, `&mut [SliceMut]`) without allocation.
///
/// ```
/// use lion_optim::{MomentumStore, SliceMut};
///
/// let (mut a, mut b) = ([0.0f32; 3], [lion_optim::bf16::ZERO; 5]);
/// let store = [SliceMut::from(&mut a[..]), SliceMut::from(&mut b[..])];
/// assert_eq!(store.count(), 2);
/// assert_eq!(store.momentum(1).map(|m| m.len()), Some(5));
/// ```
pub trait MomentumStore {
    /// The number of tensors.
    fn count(&self) -> usize;
    /// The momentum of tensor `index`, for reading.
    fn momentum(&self, index: usize) -> Option<SliceRef<'_>>;
    /// The momentum of tensor `index`, for updating.
    fn momentum_mut(&mut self, index: usize) -> Option<SliceMut<'_>>;
}

impl<const N: usize> MomentumStore for [SliceMut<'_>; N] {
    fn count(&self) -> usize {
        N
    }
    fn momentum(&self, index: usize) -> Option<SliceRef<'_>> {
        self.get(index).map(SliceMut::as_ref)
    }
    fn momentum_mut(&mut self, index: usize) -> Option<SliceMut<'_>> {
        self.get_mut(index).map(SliceMut::reborrow)
    }
}

impl MomentumStore for &mut [SliceMut<'_>] {
    fn count(&self) -> usize {
        self.len()
    }
    fn momentum(&self, index: usize) -> Option<SliceRef<'_>> {
        self.get(index).map(SliceMut::as_ref)
    }
    fn momentum_mut(&mut self, index: usize) -> Option<SliceMut<'_>> {
        self.get_mut(index).map(SliceMut::reborrow)
    }
}

/// An owned momentum buffer of a run-time element type.
///
/// ```
/// use lion_optim::{Buffer, Dtype};
///
/// let b = Buffer::zeros(Dtype::Bf16, 10);
/// assert_eq!((b.as_slice().dtype(), b.as_slice().len()), (Dtype::Bf16, 10));
/// ```
#[cfg(feature = "alloc")]
#[derive(Clone, Debug, PartialEq)]
pub enum Buffer {
    /// f32 momentum.
    F32(Vec<f32>),
    /// f16 momentum.
    F16(Vec<f16>),
    /// bf16 momentum.
    Bf16(Vec<bf16>),
}

#[cfg(feature = "alloc")]
impl Buffer {
    /// `len` zeros of type `dtype` (see the type's example).
    pub fn zeros(dtype: Dtype, len: usize) -> Self {
        match dtype {
            Dtype::F32 => Buffer::F32(vec![0.0; len]),
            Dtype::F16 => Buffer::F16(vec![f16::ZERO; len]),
            Dtype::Bf16 => Buffer::Bf16(vec![bf16::ZERO; len]),
        }
    }
}

#[cfg(feature = "alloc")]
impl Buffer {
    /// The momentum, for reading (see the type's example).
    pub fn as_slice(&self) -> SliceRef<'_> {
        match self {
            Buffer::F32(v) => SliceRef::F32(v),
            Buffer::F16(v) => SliceRef::F16(v),
            Buffer::Bf16(v) => SliceRef::Bf16(v),
        }
    }
    /// The momentum, for updating.
    ///
    /// ```
    /// use lion_optim::{Buffer, Dtype, SliceMut};
    ///
    /// let mut b = Buffer::zeros(Dtype::F32, 2);
    /// if let SliceMut::F32(m) = b.as_mut_slice() { m[1] = 0.5; }
    /// assert_eq!(b, Buffer::F32(vec![0.0, 0.5]));
    /// ```
    pub fn as_mut_slice(&mut self) -> SliceMut<'_> {
        match self {
            Buffer::F32(v) => SliceMut::F32(v),
            Buffer::F16(v) => SliceMut::F16(v),
            Buffer::Bf16(v) => SliceMut::Bf16(v),
        }
    }
}

/// The Lion optimizer across steps: hyperparameters, one momentum buffer per parameter tensor
/// (each with its own element type) and the step count.
///
/// `B` is the momentum storage: `Vec<Buffer>` when the optimizer owns it (feature `alloc`,
/// [`Lion::new`]), or any other [`MomentumStore`] — such as an array of [`SliceMut`] over
/// `static` buffers on a microcontroller ([`Lion::with_buffers`]).
///
/// A step is all or nothing: [`Lion::step`] checks every tensor against its momentum and the
/// hyperparameters first; on any error it returns it and changes nothing.
///
/// ```
/// use lion_optim::{Dtype, Hyperparams, Lion, Tensor, bf16};
///
/// let mut w1 = vec![0.5f32; 300];          // f32 weights, f32 momentum
/// let mut w2 = vec![bf16::ONE; 20];        // bf16 weights, bf16 momentum
/// let mut opt = Lion::new(Hyperparams { lr: 1e-2, ..Hyperparams::default() })?;
/// opt.add_tensor(w1.len(), Dtype::F32);
/// opt.add_tensor(w2.len(), Dtype::Bf16);
///
/// for epoch in 0..3 {
///     let (g1, g2) = (vec![0.1f32; 300], vec![bf16::from_f32(-0.2); 20]);
///     opt.set_lr(1e-2 / (1 + epoch) as f64)?; // a schedule
///     opt.step(&mut [Tensor::new(&mut w1, &g1), Tensor::new(&mut w2, &g2)])?;
/// }
/// assert_eq!(opt.steps(), 3);
/// assert!(w1[0] < 0.5 && w2[0] > bf16::ONE);
/// # Ok::<(), lion_optim::Error>(())
/// ```
#[derive(Clone, Debug)]
pub struct Lion<B> {
    hp: Hyperparams,
    options: StepOptions,
    skip_non_finite: bool,
    steps: u64,
    skipped: u64,
    buffers: B,
}

#[cfg(feature = "alloc")]
impl MomentumStore for Vec<Buffer> {
    fn count(&self) -> usize {
        self.len()
    }
    fn momentum(&self, index: usize) -> Option<SliceRef<'_>> {
        self.get(index).map(Buffer::as_slice)
    }
    fn momentum_mut(&mut self, index: usize) -> Option<SliceMut<'_>> {
        self.get_mut(index).map(Buffer::as_mut_slice)
    }
}

#[cfg(feature = "alloc")]
impl Lion<Vec<Buffer>> {
    /// An optimizer that owns its momentum buffers; add tensors with [`add_tensor`](Self::add_tensor).
    ///
    /// ```
    /// let opt = lion_optim::Lion::new(Default::default())?;
    /// assert_eq!(opt.tensor_count(), 0);
    /// # Ok::<(), lion_optim::Error>(())
    /// ```
    pub fn new(hp: Hyperparams) -> Result<Self, Error> {
        Self::with_buffers(hp, Vec::new())
    }

    /// Adds a tensor of `len` parameters with zero momentum of type `momentum`; returns its
    /// index (the position its [`Tensor`] must have in [`step`](Self::step)).
    ///
    /// ```
    /// use lion_optim::{Dtype, Lion};
    ///
    /// let mut opt = Lion::new(Default::default())?;
    /// assert_eq!(opt.add_tensor(128, Dtype::Bf16), 0);
    /// assert_eq!(opt.add_tensor(16, Dtype::F32), 1);
    /// # Ok::<(), lion_optim::Error>(())
    /// ```
    pub fn add_tensor(&mut self, len: usize, momentum: Dtype) -> usize {
        self.buffers.push(Buffer::zeros(momentum, len));
        self.buffers.len() - 1
    }

    /// The checkpoint of [`save_state`](Self::save_state) as a new vector.
    ///
    /// ```
    /// use lion_optim::{Dtype, Lion};
    ///
    /// let mut opt = Lion::new(Default::default())?;
    /// opt.add_tensor(4, Dtype::F32);
    /// let bytes = opt.state_to_vec();
    /// assert_eq!(bytes.len(), opt.state_len());
    /// opt.load_state(&bytes)?;
    /// # Ok::<(), lion_optim::Error>(())
    /// ```
    pub fn state_to_vec(&self) -> Vec<u8> {
        let mut out = vec![0; self.state_len()];
        let written = self.save_state(&mut out);
        debug_assert_eq!(written, Ok(out.len()));
        out
    }
}

impl<B: MomentumStore> Lion<B> {
    /// An optimizer over momentum storage the caller provides (no allocation).
    ///
    /// ```
    /// use lion_optim::{Hyperparams, Lion, SliceMut, Tensor};
    ///
    /// let mut m = [0.0f32; 8];                          // e.g. a `static` buffer on an MCU
    /// let mut opt = Lion::with_buffers(Hyperparams::default(), [SliceMut::from(&mut m[..])])?;
    /// let mut w = [1.0f32; 8];
    /// opt.step(&mut [Tensor::new(&mut w, &[1.0f32; 8])])?;
    /// assert!(w[0] < 1.0);
    /// # Ok::<(), lion_optim::Error>(())
    /// ```
    pub fn with_buffers(hp: Hyperparams, buffers: B) -> Result<Self, Error> {
        hp.validate()?;
        Ok(Self {
            hp,
            options: StepOptions::default(),
            skip_non_finite: false,
            steps: 0,
            skipped: 0,
            buffers,
        })
    }

    /// The hyperparameters of the next step.
    ///
    /// ```
    /// let opt = lion_optim::Lion::new(Default::default())?;
    /// assert_eq!(opt.hyperparams().beta2, 0.99);
    /// # Ok::<(), lion_optim::Error>(())
    /// ```
    pub fn hyperparams(&self) -> &Hyperparams {
        &self.hp
    }

    /// Replaces the hyperparameters if they are valid (otherwise nothing changes).
    ///
    /// ```
    /// use lion_optim::{Hyperparams, Lion};
    ///
    /// let mut opt = Lion::new(Hyperparams::default())?;
    /// opt.set_hyperparams(Hyperparams { beta1: 0.95, beta2: 0.98, ..Hyperparams::default() })?;
    /// assert!(opt.set_hyperparams(Hyperparams { weight_decay: -1.0, ..Hyperparams::default() }).is_err());
    /// assert_eq!(opt.hyperparams().beta1, 0.95);
    /// # Ok::<(), lion_optim::Error>(())
    /// ```
    pub fn set_hyperparams(&mut self, hp: Hyperparams) -> Result<(), Error> {
        hp.validate()?;
        self.hp = hp;
        Ok(())
    }

    /// Sets the learning rate of the next steps (for schedules) if it is valid.
    ///
    /// ```
    /// let mut opt = lion_optim::Lion::new(Default::default())?;
    /// opt.set_lr(3e-4)?;
    /// assert!(opt.set_lr(f64::NAN).is_err());
    /// assert_eq!(opt.hyperparams().lr, 3e-4);
    /// # Ok::<(), lion_optim::Error>(())
    /// ```
    pub fn set_lr(&mut self, lr: f64) -> Result<(), Error> {
        self.set_hyperparams(Hyperparams { lr, ..self.hp })
    }

    /// The per-step options (see [`StepOptions`] and [`set_options`](Self::set_options)).
    pub fn options(&self) -> &StepOptions {
        &self.options
    }

    /// Sets the options of the next steps if they are valid (otherwise nothing changes).
    ///
    /// [`step`](StepOptions::step) and [`offset`](StepOptions::offset) are managed by the
    /// optimizer: each step uses its step count and offset 0, and stochastic rounding draws every
    /// tensor's bits from its own stream (the seed mixed with the tensor's index).
    ///
    /// ```
    /// use lion_optim::{Lion, Rounding, StepOptions};
    ///
    /// let mut opt = Lion::new(Default::default())?;
    /// opt.set_options(StepOptions { rounding: Rounding::Stochastic { seed: 7 }, ..StepOptions::default() })?;
    /// assert!(opt.set_options(StepOptions { grad_unscale: Some(-1.0), ..StepOptions::default() }).is_err());
    /// assert_eq!(opt.options().rounding, Rounding::Stochastic { seed: 7 });
    /// # Ok::<(), lion_optim::Error>(())
    /// ```
    pub fn set_options(&mut self, options: StepOptions) -> Result<(), Error> {
        self.hp.constants_with(&options, 0)?;
        self.options = options;
        Ok(())
    }

    /// Sets the inverse loss scale of the next steps' gradients (`None`: no unscaling).
    ///
    /// ```
    /// use lion_optim::{Dtype, Lion, Tensor};
    ///
    /// let mut opt = Lion::new(Default::default())?;
    /// opt.add_tensor(1, Dtype::F32);
    /// opt.set_grad_unscale(Some(1.0 / 65536.0))?;      // the loss was scaled by 2^16
    /// let mut w = [0.0f32];
    /// opt.step(&mut [Tensor::new(&mut w, &[65536.0f32])])?;
    /// assert_eq!(opt.momentum(0)?.len(), 1);
    /// assert_eq!(opt.options().grad_unscale, Some(1.0 / 65536.0));
    /// # Ok::<(), lion_optim::Error>(())
    /// ```
    pub fn set_grad_unscale(&mut self, inv_scale: Option<f64>) -> Result<(), Error> {
        self.set_options(StepOptions {
            grad_unscale: inv_scale,
            ..self.options
        })
    }

    /// With `true`, [`step`](Self::step) first checks every gradient (after unscaling) and, if
    /// one is infinite or NaN, skips the whole step without touching any state: it returns
    /// [`Outcome::SkippedNonFinite`] and counts it in [`skipped_steps`](Self::skipped_steps).
    ///
    /// ```
    /// use lion_optim::{Dtype, Lion, Outcome, Tensor};
    ///
    /// let mut opt = Lion::new(Default::default())?;
    /// opt.add_tensor(2, Dtype::F32);
    /// opt.set_skip_non_finite(true);
    /// let mut w = [1.0f32; 2];
    /// assert_eq!(opt.step(&mut [Tensor::new(&mut w, &[f32::NAN, 1.0])])?, Outcome::SkippedNonFinite);
    /// assert_eq!((w, opt.steps(), opt.skipped_steps()), ([1.0; 2], 0, 1));
    /// # Ok::<(), lion_optim::Error>(())
    /// ```
    pub fn set_skip_non_finite(&mut self, skip: bool) {
        self.skip_non_finite = skip;
    }

    /// How many steps were skipped for non-finite gradients (see
    /// [`set_skip_non_finite`](Self::set_skip_non_finite)).
    pub fn skipped_steps(&self) -> u64 {
        self.skipped
    }

    /// How many steps have been applied (see the type's example).
    pub fn steps(&self) -> u64 {
        self.steps
    }

    /// How many tensors the optimizer holds momentum for.
    ///
    /// ```
    /// let mut opt = lion_optim::Lion::new(Default::default())?;
    /// opt.add_tensor(8, lion_optim::Dtype::F32);
    /// assert_eq!(opt.tensor_count(), 1);
    /// # Ok::<(), lion_optim::Error>(())
    /// ```
    pub fn tensor_count(&self) -> usize {
        self.buffers.count()
    }

    /// The momentum of tensor `index`.
    ///
    /// ```
    /// use lion_optim::{Dtype, Lion};
    ///
    /// let mut opt = Lion::new(Default::default())?;
    /// opt.add_tensor(3, Dtype::F16);
    /// assert_eq!(opt.momentum(0)?.dtype(), Dtype::F16);
    /// assert!(opt.momentum(1).is_err());
    /// # Ok::<(), lion_optim::Error>(())
    /// ```
    pub fn momentum(&self, index: usize) -> Result<SliceRef<'_>, Error> {
        let count = self.tensor_count();
        self.buffers
            .momentum(index)
            .ok_or(Error::NoSuchTensor { index, count })
    }

    /// One Lion step over every tensor, `tensors[i]` paired with momentum buffer `i`, with the
    /// optimizer's [options](Self::set_options).
    ///
    /// Checks first that there is one tensor per buffer, that every tensor's parameters,
    /// gradient and momentum have the same length and that the hyperparameters are valid; on
    /// error nothing is written and the step count does not change. With
    /// [`set_skip_non_finite`](Self::set_skip_non_finite), a step with a non-finite gradient is
    /// skipped the same way. See the type's example.
    pub fn step(&mut self, tensors: &mut [Tensor<'_>]) -> Result<Outcome, Error> {
        self.hp.constants_with(&self.options, 0)?;
        let count = self.tensor_count();
        if tensors.len() != count {
            return Err(Error::TensorCount {
                expected: count,
                found: tensors.len(),
            });
        }
        for (index, t) in tensors.iter().enumerate() {
            let expected = self.momentum(index)?.len();
            if t.params.len() != expected {
                return Err(Error::TensorMismatch {
                    index,
                    expected,
                    found: t.params.len(),
                });
            }
            if t.grads.len() != expected {
                return Err(Error::LengthMismatch {
                    what: "grads",
                    expected,
                    found: t.grads.len(),
                });
            }
        }
        let path = Path::detect();
        if self.skip_non_finite
            && !tensors
                .iter()
                .all(|t| all_finite_dyn(path, t.grads, &self.options))
        {
            self.skipped += 1;
            return Ok(Outcome::SkippedNonFinite);
        }
        for (index, t) in tensors.iter_mut().enumerate() {
            let m = self
                .buffers
                .momentum_mut(index)
                .ok_or(Error::NoSuchTensor { index, count })?;
            let mut options = StepOptions {
                step: self.steps,
                offset: 0,
                ..self.options
            };
            if let Rounding::Stochastic { seed } = options.rounding {
                let seed = seed ^ (index as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15);
                options.rounding = Rounding::Stochastic { seed };
            }
            step_dyn(path, t.params.reborrow(), t.grads, m, &self.hp, &options)?;
        }
        self.steps += 1;
        Ok(Outcome::Applied)
    }

    /// The size in bytes of a checkpoint of this optimizer.
    ///
    /// ```
    /// let mut opt = lion_optim::Lion::new(Default::default())?;
    /// opt.add_tensor(10, lion_optim::Dtype::Bf16);
    /// assert_eq!(opt.state_len(), 64 + 9 + 10 * 2);
    /// # Ok::<(), lion_optim::Error>(())
    /// ```
    pub fn state_len(&self) -> usize {
        HEADER + TENSOR_HEADER * self.tensor_count() + self.data_len()
    }

    /// Bytes of all momentum buffers.
    fn data_len(&self) -> usize {
        self.slots().map(slice_bytes).sum()
    }

    /// Every momentum buffer, in order.
    fn slots(&self) -> impl Iterator<Item = SliceRef<'_>> {
        (0..self.tensor_count()).filter_map(|i| self.buffers.momentum(i))
    }

    /// Writes a checkpoint (hyperparameters, step count, every momentum buffer) into `out` and
    /// returns the number of bytes written ([`state_len`](Self::state_len)).
    ///
    /// The format is little-endian on every platform: the magic `LIONOPT1`; `lr`, `beta1`,
    /// `beta2`, `weight_decay` as f64; the step count, the skipped-step count and the tensor count
    /// as u64; per tensor its
    /// length (u64) and dtype tag (u8: 0 f32, 1 f16, 2 bf16); then each tensor's elements.
    ///
    /// ```
    /// use lion_optim::{Dtype, Error, Lion};
    ///
    /// let mut opt = Lion::new(Default::default())?;
    /// opt.add_tensor(10, Dtype::Bf16);
    /// let mut buf = [0u8; 128];
    /// let n = opt.save_state(&mut buf)?;
    /// assert_eq!(n, opt.state_len());
    /// assert!(matches!(opt.save_state(&mut buf[..10]), Err(Error::BufferTooSmall { .. })));
    /// # Ok::<(), lion_optim::Error>(())
    /// ```
    pub fn save_state(&self, out: &mut [u8]) -> Result<usize, Error> {
        let needed = self.state_len();
        let Some(out) = out.get_mut(..needed) else {
            return Err(Error::BufferTooSmall {
                needed,
                available: out.len(),
            });
        };
        let mut w = Writer { out, at: 0 };
        w.put(MAGIC);
        for x in [
            self.hp.lr,
            self.hp.beta1,
            self.hp.beta2,
            self.hp.weight_decay,
        ] {
            w.put(&x.to_le_bytes());
        }
        w.put(&self.steps.to_le_bytes());
        w.put(&self.skipped.to_le_bytes());
        w.put(&(self.tensor_count() as u64).to_le_bytes());
        for m in self.slots() {
            w.put(&(m.len() as u64).to_le_bytes());
            w.put(&[m.dtype().tag()]);
        }
        for m in self.slots() {
            match m {
                SliceRef::F32(s) => s.iter().for_each(|x| w.put(&x.to_le_bytes())),
                SliceRef::F16(s) => s.iter().for_each(|x| w.put(&x.to_le_bytes())),
                SliceRef::Bf16(s) => s.iter().for_each(|x| w.put(&x.to_le_bytes())),
            }
        }
        debug_assert_eq!(w.at, needed);
        Ok(needed)
    }

    /// Restores a checkpoint written by [`save_state`](Self::save_state): hyperparameters, step
    /// count and momentum.
    ///
    /// The checkpoint must hold as many tensors as the optimizer, each with the same length and
    /// dtype. Everything is checked before anything is written: on error the optimizer is
    /// unchanged.
    ///
    /// ```
    /// use lion_optim::{CheckpointError, Dtype, Error, Lion};
    ///
    /// let mut opt = Lion::new(Default::default())?;
    /// opt.add_tensor(10, Dtype::F32);
    /// let mut bytes = opt.state_to_vec();
    /// bytes.pop();
    /// assert_eq!(opt.load_state(&bytes), Err(Error::Checkpoint(CheckpointError::Truncated)));
    /// # Ok::<(), lion_optim::Error>(())
    /// ```
    pub fn load_state(&mut self, bytes: &[u8]) -> Result<(), Error> {
        let mut r = Reader { bytes, at: 0 };
        if r.take(MAGIC.len())? != MAGIC {
            return Err(CheckpointError::BadMagic.into());
        }
        let hp = Hyperparams {
            lr: r.f64()?,
            beta1: r.f64()?,
            beta2: r.f64()?,
            weight_decay: r.f64()?,
        };
        hp.validate().map_err(|_| CheckpointError::Hyperparams)?;
        let steps = r.u64()?;
        let skipped = r.u64()?;
        let count = r.u64()?;
        let expected = self.tensor_count();
        if count != expected as u64 {
            let found = usize::try_from(count).unwrap_or(usize::MAX);
            return Err(CheckpointError::TensorCount { expected, found }.into());
        }
        for (index, m) in self.slots().enumerate() {
            let len = r.u64()?;
            let tag = r.take(1)?[0];
            let dtype = Dtype::from_tag(tag).ok_or(CheckpointError::UnknownDtype(tag))?;
            if len != m.len() as u64 || dtype != m.dtype() {
                return Err(CheckpointError::TensorShape { index }.into());
            }
        }
        let data = &bytes[r.at..];
        let needed = self.data_len();
        if data.len() < needed {
            return Err(CheckpointError::Truncated.into());
        }
        if data.len() > needed {
            return Err(CheckpointError::TrailingBytes.into());
        }
        // Everything is valid: from here on nothing can fail.
        let mut chunks = data;
        for index in 0..expected {
            let Some(m) = self.buffers.momentum_mut(index) else {
                continue;
            };
            let (mine, rest) = chunks.split_at(m.len() * m.dtype().size());
            chunks = rest;
            match m {
                SliceMut::F32(s) => fill_le(s, mine, f32::from_le_bytes),
                SliceMut::F16(s) => fill_le(s, mine, f16::from_le_bytes),
                SliceMut::Bf16(s) => fill_le(s, mine, bf16::from_le_bytes),
            }
        }
        self.hp = hp;
        self.steps = steps;
        self.skipped = skipped;
        Ok(())
    }
}

const MAGIC: &[u8; 8] = b"LIONOPT1";
const HEADER: usize = 8 + 4 * 8 + 8 + 8 + 8;
const TENSOR_HEADER: usize = 8 + 1;

fn slice_bytes(s: SliceRef<'_>) -> usize {
    s.len() * s.dtype().size()
}

fn fill_le<T, const W: usize>(dst: &mut [T], src: &[u8], from: fn([u8; W]) -> T) {
    let (chunks, _) = src.as_chunks::<W>();
    for (d, c) in dst.iter_mut().zip(chunks) {
        *d = from(*c);
    }
}

struct Writer<'a> {
    out: &'a mut [u8],
    at: usize,
}

impl Writer<'_> {
    fn put(&mut self, b: &[u8]) {
        self.out[self.at..self.at + b.len()].copy_from_slice(b);
        self.at += b.len();
    }
}

struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], CheckpointError> {
        let s = self
            .bytes
            .get(self.at..)
            .and_then(|r| r.get(..n))
            .ok_or(CheckpointError::Truncated)?;
        self.at += n;
        Ok(s)
    }
    fn u64(&mut self) -> Result<u64, CheckpointError> {
        let b = self.take(8)?;
        Ok(u64::from_le_bytes(
            b.try_into().map_err(|_| CheckpointError::Truncated)?,
        ))
    }
    fn f64(&mut self) -> Result<f64, CheckpointError> {
        self.u64().map(f64::from_bits)
    }
}
