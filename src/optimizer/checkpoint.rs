//! The compact checkpoint: little-endian bytes, written into a caller's buffer (no allocation, so
//! it serves no_std users), with everything that changes the next step's bytes.

use half::{bf16, f16};

use super::{Group, GroupState, Lion, MomentumStore, SliceMut, SliceRef, TensorId};
use crate::error::CheckpointError;
use crate::{Cautious, Dtype, Error, Hyperparams, Rounding, StepOptions, WeightDecay};

/// The magic bytes of this format's version; `LIONOPT1` was the version before groups.
const MAGIC: &[u8; 8] = b"LIONOPT2";
const MAGIC_V1: &[u8; 8] = b"LIONOPT1";
/// Magic, steps, skipped, skip flag, lr scale, group count.
const HEADER: usize = 8 + 8 + 8 + 1 + 8 + 8;
/// lr, beta1, beta2, weight decay; maximize; unscale; decay variant; rounding; cautious.
const GROUP: usize = 4 * 8 + 1 + 9 + 9 + 9 + 1;
/// Tensor count, then per tensor: length, momentum dtype, group, params dtype, stream, name
/// length (the name's bytes follow).
const TENSOR: usize = 8 + 1 + 8 + 1 + 8 + 4;
/// Tag of "any parameter dtype".
const ANY_DTYPE: u8 = 0xff;
/// Name length of "no name".
const NO_NAME: u32 = u32::MAX;

impl<B: MomentumStore> Lion<B> {
    /// The size in bytes of a checkpoint of this optimizer ([`save_state`](Self::save_state)).
    ///
    /// ```
    /// use lion_optim::{Lion, TensorSpec};
    ///
    /// let mut opt = Lion::new(Default::default())?;
    /// opt.add(TensorSpec::new(10).name("w").momentum(lion_optim::Dtype::Bf16))?;
    /// assert_eq!(opt.state_len(), 41 + 61 + 8 + 30 + 1 + 10 * 2);
    /// # Ok::<(), lion_optim::Error>(())
    /// ```
    pub fn state_len(&self) -> usize {
        let names: usize = (0..self.tensor_count())
            .map(|i| self.tensor_name(TensorId(i)).map_or(0, str::len))
            .sum();
        let data: usize = self.slots().map(|m| m.len() * m.dtype().size()).sum();
        HEADER + GROUP * self.groups.len() + 8 + TENSOR * self.tensor_count() + names + data
    }

    /// Every momentum buffer, in order.
    pub(super) fn slots(&self) -> impl Iterator<Item = SliceRef<'_>> {
        (0..self.tensor_count()).filter_map(|i| self.buffers.momentum(i))
    }

    /// Writes a checkpoint into `out` and returns the number of bytes written
    /// ([`state_len`](Self::state_len)): the step and skipped-step counts, the skip flag, the
    /// learning-rate scale, every group's hyperparameters and options, and per tensor its
    /// length, dtypes, group, random stream, name and momentum — everything that changes the next
    /// step's bytes, so a resumed run gives the bytes of an uninterrupted one.
    ///
    /// The format is little-endian on every platform: the magic `LIONOPT2`; steps, skipped
    /// (u64), skip flag (u8), lr scale (f64), group count (u64); per group `lr`, `beta1`,
    /// `beta2`, `weight_decay` (f64), maximize (u8), unscale (u8 present + f64), decay variant
    /// (u8: 0 paper, 1 fully decoupled + f64 `max_lr`), rounding (u8: 0 nearest, 1 stochastic +
    /// u64 seed), cautious (u8: 0 off, 1 whole); tensor count (u64); per tensor its length
    /// (u64), momentum dtype (u8: 0 f32, 1 f16, 2 bf16), group (u64), parameter dtype (u8,
    /// 255: any), stream (u64), name length (u32, `u32::MAX`: none) and the name's UTF-8
    /// bytes; then each tensor's momentum elements.
    ///
    /// For files other programs read (Python, candle), see the safetensors state (feature
    /// `safetensors`); this format needs no allocation, for microcontrollers.
    ///
    /// ```
    /// use lion_optim::{Dtype, Error, Lion};
    ///
    /// let mut opt = Lion::new(Default::default())?;
    /// opt.add_tensor(10, Dtype::Bf16);
    /// let mut buf = [0u8; 256];
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
        w.u64(self.steps);
        w.u64(self.skipped);
        w.put(&[u8::from(self.skip_non_finite)]);
        w.f64(self.lr_scale);
        w.u64(self.groups.len() as u64);
        for g in self.groups.iter() {
            put_group(&mut w, &g.group);
        }
        w.u64(self.tensor_count() as u64);
        for (i, m) in self.slots().enumerate() {
            let meta = self.meta_of(i);
            w.u64(m.len() as u64);
            w.put(&[m.dtype().tag()]);
            w.u64(meta.group as u64);
            w.put(&[meta.params.map_or(ANY_DTYPE, Dtype::tag)]);
            w.u64(meta.stream);
            match self.tensor_name(TensorId(i)) {
                Some(name) => {
                    w.put(&(name.len() as u32).to_le_bytes());
                    w.put(name.as_bytes());
                }
                None => w.put(&NO_NAME.to_le_bytes()),
            }
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

    /// Restores a checkpoint written by [`save_state`](Self::save_state): counts, flags, every
    /// group's settings and every tensor's momentum.
    ///
    /// The checkpoint must describe this optimizer's structure: as many groups; as many
    /// tensors, each matched by name (or, unnamed, by position) with the same length, dtypes,
    /// group and stream. Everything is checked before anything is written: on error the
    /// optimizer is unchanged.
    ///
    /// ```
    /// use lion_optim::{CheckpointError, Dtype, Error, Lion};
    ///
    /// let mut opt = Lion::new(Default::default())?;
    /// opt.add_tensor(10, Dtype::F32);
    /// let mut bytes = opt.state_to_vec();
    /// bytes.pop();
    /// let truncated = CheckpointError::Truncated { len: bytes.len(), needed: bytes.len() + 1 };
    /// assert_eq!(opt.load_state(&bytes), Err(Error::Checkpoint(truncated)));
    /// # Ok::<(), lion_optim::Error>(())
    /// ```
    pub fn load_state(&mut self, bytes: &[u8]) -> Result<(), Error> {
        // Twice through the same parser: first every check, then (unable to fail) the writes.
        self.parse(bytes, false)?;
        self.parse(bytes, true)
    }

    fn parse(&mut self, bytes: &[u8], apply: bool) -> Result<(), Error> {
        let mut r = Reader { bytes, at: 0 };
        match r.take(MAGIC.len())? {
            m if m == MAGIC => {}
            m if m == MAGIC_V1 => return Err(CheckpointError::UnknownVersion.into()),
            _ => return Err(CheckpointError::BadMagic.into()),
        }
        let steps = r.u64()?;
        let skipped = r.u64()?;
        let skip_non_finite = r.flag("skip flag")?;
        let lr_scale = r.f64()?;
        if !(lr_scale.is_finite() && lr_scale >= 0.0) {
            return Err(CheckpointError::Hyperparams.into());
        }
        let groups = r.u64()?;
        let expected = self.groups.len();
        if groups != expected as u64 {
            let found = usize::try_from(groups).unwrap_or(usize::MAX);
            return Err(CheckpointError::GroupCount { expected, found }.into());
        }
        for index in 0..expected {
            let group = take_group(&mut r)?;
            let state =
                GroupState::new(group, lr_scale).map_err(|_| CheckpointError::Hyperparams)?;
            if apply {
                self.groups[index] = state;
            }
        }
        let count = r.u64()?;
        let expected = self.tensor_count();
        if count != expected as u64 {
            let found = usize::try_from(count).unwrap_or(usize::MAX);
            return Err(CheckpointError::TensorCount { expected, found }.into());
        }
        #[cfg(feature = "alloc")]
        let mut seen = alloc::vec![false; expected];
        // Where each file tensor's data starts, to read them in the file's order.
        let mut data_at = 0usize;
        let headers_at = r.at;
        for position in 0..expected {
            let (index, len, dtype) = self.tensor_header(&mut r, position)?;
            #[cfg(feature = "alloc")]
            if core::mem::replace(&mut seen[index], true) {
                return Err(CheckpointError::DuplicateTensor { index }.into());
            }
            #[cfg(not(feature = "alloc"))]
            let _ = index; // positional only: no tensor can come twice
            data_at += len * dtype.size();
        }
        let data = &bytes[r.at..];
        if data.len() < data_at {
            let needed = r.at.saturating_add(data_at);
            return Err(CheckpointError::Truncated {
                len: bytes.len(),
                needed,
            }
            .into());
        }
        if data.len() > data_at {
            return Err(CheckpointError::TrailingBytes.into());
        }
        if !apply {
            return Ok(());
        }
        // Everything is valid: from here on nothing can fail.
        let mut r = Reader {
            bytes,
            at: headers_at,
        };
        let mut chunks = data;
        for position in 0..expected {
            let Ok((index, len, dtype)) = self.tensor_header(&mut r, position) else {
                return Ok(()); // unreachable: checked above
            };
            let (mine, rest) = chunks.split_at(len * dtype.size());
            chunks = rest;
            match self.buffers.momentum_mut(index) {
                Some(SliceMut::F32(s)) => fill_le(s, mine, f32::from_le_bytes),
                Some(SliceMut::F16(s)) => fill_le(s, mine, f16::from_le_bytes),
                Some(SliceMut::Bf16(s)) => fill_le(s, mine, bf16::from_le_bytes),
                None => {}
            }
        }
        self.steps = steps;
        self.skipped = skipped;
        self.skip_non_finite = skip_non_finite;
        self.lr_scale = lr_scale;
        Ok(())
    }

    /// Reads one tensor header and matches it to a tensor of the optimizer: returns its index,
    /// length and momentum dtype.
    fn tensor_header(
        &self,
        r: &mut Reader<'_>,
        position: usize,
    ) -> Result<(usize, usize, Dtype), Error> {
        let len = r.u64()?;
        let dtype = r.dtype()?;
        let group = r.u64()?;
        let params = match r.take(1)?[0] {
            ANY_DTYPE => None,
            tag => Some(Dtype::from_tag(tag).ok_or(CheckpointError::UnknownDtype(tag))?),
        };
        let stream = r.u64()?;
        let name_len = u32::from_le_bytes(r.array()?);
        let name = match name_len {
            NO_NAME => None,
            n => {
                let bytes = r.take(n as usize)?;
                Some(core::str::from_utf8(bytes).map_err(|_| CheckpointError::Invalid("name"))?)
            }
        };
        let index = self.match_tensor(name, position)?;
        let m = self.meta_of(index);
        let momentum = self.momentum(TensorId(index))?;
        if len != momentum.len() as u64 || dtype != momentum.dtype() {
            return Err(CheckpointError::TensorShape { index }.into());
        }
        if group != m.group as u64 || params != m.params || stream != m.stream {
            return Err(CheckpointError::TensorSettings { index }.into());
        }
        Ok((index, momentum.len(), dtype))
    }

    /// The optimizer's tensor for a state file's tensor: the one with its name, or (unnamed)
    /// the one at its position, which must be unnamed too.
    pub(super) fn match_tensor(&self, name: Option<&str>, position: usize) -> Result<usize, Error> {
        #[cfg(feature = "alloc")]
        if let Some(name) = name {
            return self
                .tensor_id(name)
                .map(TensorId::index)
                .ok_or(CheckpointError::UnknownTensor { position }.into());
        }
        #[cfg(not(feature = "alloc"))]
        if name.is_some() {
            return Err(CheckpointError::UnknownTensor { position }.into());
        }
        if position >= self.tensor_count() || self.tensor_name(TensorId(position)).is_some() {
            return Err(CheckpointError::UnknownTensor { position }.into());
        }
        Ok(position)
    }
}

fn put_group(w: &mut Writer<'_>, g: &Group) {
    let (hp, o) = (&g.hp, &g.options);
    for x in [hp.lr, hp.beta1, hp.beta2, hp.weight_decay] {
        w.f64(x);
    }
    w.put(&[u8::from(o.maximize)]);
    w.put(&[u8::from(o.grad_unscale.is_some())]);
    w.f64(o.grad_unscale.unwrap_or(0.0));
    match o.weight_decay {
        WeightDecay::Paper => {
            w.put(&[0]);
            w.f64(0.0);
        }
        WeightDecay::FullyDecoupled { max_lr } => {
            w.put(&[1]);
            w.f64(max_lr);
        }
    }
    match o.rounding {
        Rounding::Nearest => {
            w.put(&[0]);
            w.u64(0);
        }
        Rounding::Stochastic { seed } => {
            w.put(&[1]);
            w.u64(seed);
        }
    }
    w.put(&[u8::from(o.cautious != Cautious::Off)]);
}

fn take_group(r: &mut Reader<'_>) -> Result<Group, CheckpointError> {
    let hp = Hyperparams {
        lr: r.f64()?,
        beta1: r.f64()?,
        beta2: r.f64()?,
        weight_decay: r.f64()?,
    };
    // Unused fields must be zero: one state, one encoding (a loaded checkpoint saves back
    // byte for byte).
    let maximize = r.flag("maximize")?;
    let grad_unscale = match (r.flag("grad_unscale")?, r.u64()?) {
        (false, 0) => None,
        (true, bits) => Some(f64::from_bits(bits)),
        _ => return Err(CheckpointError::Invalid("grad_unscale")),
    };
    let weight_decay = match (r.take(1)?[0], r.u64()?) {
        (0, 0) => WeightDecay::Paper,
        (1, bits) => WeightDecay::FullyDecoupled {
            max_lr: f64::from_bits(bits),
        },
        _ => return Err(CheckpointError::Invalid("weight decay variant")),
    };
    let rounding = match (r.take(1)?[0], r.u64()?) {
        (0, 0) => Rounding::Nearest,
        (1, seed) => Rounding::Stochastic { seed },
        _ => return Err(CheckpointError::Invalid("rounding")),
    };
    let cautious = match r.flag("cautious")? {
        false => Cautious::Off,
        true => Cautious::Whole,
    };
    let options = StepOptions {
        maximize,
        grad_unscale,
        weight_decay,
        rounding,
        cautious,
        ..StepOptions::default()
    };
    Ok(Group { hp, options })
}

pub(super) fn fill_le<T, const W: usize>(dst: &mut [T], src: &[u8], from: fn([u8; W]) -> T) {
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
    fn u64(&mut self, x: u64) {
        self.put(&x.to_le_bytes());
    }
    fn f64(&mut self, x: f64) {
        self.put(&x.to_le_bytes());
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
            .ok_or(self.truncated(n))?;
        self.at += n;
        Ok(s)
    }
    /// The error of a field of `n` bytes at the current position that the bytes do not hold.
    fn truncated(&self, n: usize) -> CheckpointError {
        CheckpointError::Truncated {
            len: self.bytes.len(),
            needed: self.at.saturating_add(n),
        }
    }
    fn array<const N: usize>(&mut self) -> Result<[u8; N], CheckpointError> {
        let at = self.at;
        self.take(N)?
            .try_into()
            .map_err(|_| CheckpointError::Truncated {
                len: self.bytes.len(),
                needed: at.saturating_add(N),
            })
    }
    fn u64(&mut self) -> Result<u64, CheckpointError> {
        self.array().map(u64::from_le_bytes)
    }
    fn f64(&mut self) -> Result<f64, CheckpointError> {
        self.u64().map(f64::from_bits)
    }
    fn flag(&mut self, field: &'static str) -> Result<bool, CheckpointError> {
        match self.take(1)?[0] {
            0 => Ok(false),
            1 => Ok(true),
            _ => Err(CheckpointError::Invalid(field)),
        }
    }
    fn dtype(&mut self) -> Result<Dtype, CheckpointError> {
        let tag = self.take(1)?[0];
        Dtype::from_tag(tag).ok_or(CheckpointError::UnknownDtype(tag))
    }
}
