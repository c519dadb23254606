//! The compact checkpoint: little-endian bytes, written into a caller's buffer (no allocation, so
//! it serves no_std users), with everything that changes the next step's bytes and a CRC-32C.

use super::{GroupFields, check_lr_scale, crc32c, fill_momentum, momentum_le_bytes};
use crate::error::CheckpointError;
use crate::optimizer::{GroupState, Lion, MomentumStore, TensorId};
use crate::{Error, MomentumDtype, MomentumRef};

/// The magic bytes of this version of the format (3: per-group skip flags, a checksum). It
/// differs from the earlier ones in four bytes, so no single damaged byte turns a file of one
/// version into one of another.
const MAGIC: &[u8; 8] = b"LIONCRC3";
/// Version 2 (groups, no checksum): still read.
const MAGIC_V2: &[u8; 8] = b"LIONOPT2";
/// Version 1 (before groups): refused.
const MAGIC_V1: &[u8; 8] = b"LIONOPT1";
/// Magic, steps, skipped, lr scale, group count.
const HEADER: usize = 8 + 8 + 8 + 8 + 8;
/// lr, beta1, beta2, weight decay; maximize; unscale; max_lr; seed; cautious; skip flag.
const GROUP: usize = 4 * 8 + 1 + 9 + 9 + 9 + 1 + 1;
/// Tensor count, then per tensor: length, momentum dtype, group, params dtype, stream, name
/// length (the name's bytes follow).
const TENSOR: usize = 8 + 1 + 8 + 1 + 8 + 4;
/// The CRC-32C at the end.
const CHECKSUM: usize = 4;
/// Tag of "any parameter dtype".
const ANY_DTYPE: u8 = 0xff;
/// Name length of "no name".
const NO_NAME: u32 = u32::MAX;

/// The versions this code reads.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Version {
    V2,
    V3,
}

impl<B: MomentumStore> Lion<B> {
    /// The size in bytes of a checkpoint of this optimizer ([`save_state`](Self::save_state)).
    ///
    /// ```
    /// use lion_optim::{Lion, TensorSpec};
    ///
    /// let mut opt = Lion::new(Default::default())?;
    /// opt.add(TensorSpec::new(10).name("w").momentum(lion_optim::Dtype::Bf16))?;
    /// assert_eq!(opt.state_len(), 40 + 62 + 8 + 30 + 1 + 10 * 2 + 4);
    /// # Ok::<(), lion_optim::Error>(())
    /// ```
    pub fn state_len(&self) -> usize {
        let names: usize = (0..self.tensor_count())
            .map(|i| self.name_of(i).map_or(0, str::len))
            .sum();
        let data: usize = self.slots().map(|m| m.dtype().bytes(m.len())).sum();
        HEADER
            + GROUP * self.groups.len()
            + 8
            + TENSOR * self.tensor_count()
            + names
            + data
            + CHECKSUM
    }

    /// Every momentum buffer, in order.
    pub(in crate::optimizer) fn slots(&self) -> impl Iterator<Item = MomentumRef<'_>> {
        (0..self.tensor_count()).filter_map(|i| self.buffers.momentum(i))
    }

    /// Writes a checkpoint into `out` and returns the number of bytes written
    /// ([`state_len`](Self::state_len)): the step and skipped-step counts, the learning-rate
    /// scale, every group's hyperparameters and options, and per tensor its length, dtypes,
    /// group, random stream, name and momentum — everything that changes the next step's bytes,
    /// so a resumed run gives the bytes of an uninterrupted one — and a checksum.
    ///
    /// The format is little-endian on every platform: the magic `LIONCRC3`; steps, skipped
    /// (u64), lr scale (f64), group count (u64); per group `lr`, `beta1`, `beta2`,
    /// `weight_decay` (f64), maximize (u8), unscale (u8 present + f64), decay variant (u8: 0
    /// paper, 1 fully decoupled + f64 `max_lr`), rounding (u8: 0 nearest, 1 stochastic + u64
    /// seed), cautious (u8: 0 off, 1 whole), skip non-finite steps (u8); tensor count (u64); per
    /// tensor its length (u64), momentum format (u8: 0 f32, 1 f16, 2 bf16, 3 8-bit), group
    /// (u64), parameter dtype (u8: 0 f32, 1 f16, 2 bf16, 255 any), stream (u64), name length
    /// (u32, `u32::MAX`: none) and the name's UTF-8 bytes; then each tensor's momentum (its
    /// elements; 8-bit: its codes, then its block scales as f32); last the CRC-32C (u32) of all
    /// the bytes before it. Unused fields are zero: one state, one encoding.
    ///
    /// For files other programs read (Python, candle), see the safetensors state (feature
    /// `safetensors`); this format needs no allocation, for microcontrollers.
    ///
    /// ```
    /// use lion_optim::{Dtype, Error, Lion, TensorSpec};
    ///
    /// let mut opt = Lion::new(Default::default())?;
    /// opt.add(TensorSpec::new(10).momentum(Dtype::Bf16))?;
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
        w.f64(self.lr_scale);
        w.u64(self.groups.len() as u64);
        for g in self.groups.iter() {
            put_group(&mut w, &GroupFields::of(&g.group));
        }
        w.u64(self.tensor_count() as u64);
        for (i, m) in self.slots().enumerate() {
            let meta = self.meta_of(i);
            w.u64(m.len() as u64);
            w.put(&[m.dtype().tag()]);
            w.u64(meta.group as u64);
            w.put(&[meta
                .params
                .map_or(ANY_DTYPE, |d| MomentumDtype::from(d).tag())]);
            w.u64(meta.stream);
            match self.name_of(i) {
                Some(name) => {
                    w.put(&(name.len() as u32).to_le_bytes());
                    w.put(name.as_bytes());
                }
                None => w.put(&NO_NAME.to_le_bytes()),
            }
        }
        for m in self.slots() {
            momentum_le_bytes(m, |bytes| w.put(bytes));
        }
        let crc = crc32c(0, &w.out[..w.at]);
        w.put(&crc.to_le_bytes());
        debug_assert_eq!(w.at, needed);
        Ok(needed)
    }

    /// Restores a checkpoint written by [`save_state`](Self::save_state): counts, every
    /// group's settings and every tensor's momentum.
    ///
    /// The checkpoint must describe this optimizer's structure: as many groups; as many
    /// tensors, each matched by name (or, unnamed, by position) with the same length, dtypes,
    /// group and stream. A damaged checkpoint — its checksum does not match — is
    /// [`CheckpointError::Checksum`] (or [`CheckpointError::Truncated`] when bytes are missing).
    /// Everything is checked before anything is written: on error the optimizer is unchanged.
    /// (Checkpoints of version 2, `LIONOPT2`, without a checksum, load too.)
    ///
    /// ```
    /// use lion_optim::{CheckpointError, Error, Lion, TensorSpec};
    ///
    /// let mut opt = Lion::new(Default::default())?;
    /// opt.add(TensorSpec::new(10))?;
    /// let mut bytes = opt.state_to_vec();
    /// bytes[60] ^= 1; // one flipped bit
    /// assert_eq!(opt.load_state(&bytes), Err(Error::Checkpoint(CheckpointError::Checksum)));
    /// bytes.pop();
    /// let truncated = CheckpointError::Truncated { len: bytes.len(), needed: bytes.len() + 1 };
    /// assert_eq!(opt.load_state(&bytes), Err(Error::Checkpoint(truncated)));
    /// # Ok::<(), lion_optim::Error>(())
    /// ```
    pub fn load_state(&mut self, bytes: &[u8]) -> Result<(), Error> {
        let version = match bytes.first_chunk::<8>() {
            None => {
                let (len, needed) = (bytes.len(), MAGIC.len());
                return Err(CheckpointError::Truncated { len, needed }.into());
            }
            Some(m) if m == MAGIC => Version::V3,
            Some(m) if m == MAGIC_V2 => Version::V2,
            Some(m) if m == MAGIC_V1 => return Err(CheckpointError::UnknownVersion.into()),
            Some(_) => return Err(CheckpointError::BadMagic.into()),
        };
        if version == Version::V3 {
            let intact = bytes
                .split_last_chunk::<CHECKSUM>()
                .is_some_and(|(body, crc)| crc32c(0, body) == u32::from_le_bytes(*crc));
            if !intact {
                // A missing or extra tail says more than the checksum; anything else is damage.
                return Err(match self.parse(bytes, version, false) {
                    Err(Error::Checkpoint(
                        e @ (CheckpointError::Truncated { .. } | CheckpointError::TrailingBytes),
                    )) => e,
                    _ => CheckpointError::Checksum,
                }
                .into());
            }
        }
        // Twice through the same parser: first every check, then (unable to fail) the writes.
        self.parse(bytes, version, false)?;
        self.parse(bytes, version, true)
    }

    fn parse(&mut self, bytes: &[u8], version: Version, apply: bool) -> Result<(), Error> {
        let mut r = Reader { bytes, at: 0 };
        r.take(MAGIC.len())?;
        let steps = r.u64()?;
        let skipped = r.u64()?;
        let skip_all = match version {
            Version::V2 => Some(r.flag("skip flag")?),
            Version::V3 => None,
        };
        let lr_scale = check_lr_scale(r.f64()?)?;
        let groups = r.u64()?;
        let expected = self.groups.len();
        if groups != expected as u64 {
            let found = usize::try_from(groups).unwrap_or(usize::MAX);
            return Err(CheckpointError::GroupCount { expected, found }.into());
        }
        for index in 0..expected {
            let mut fields = take_group(&mut r, skip_all.is_none())?;
            if let Some(skip) = skip_all {
                fields.skip_non_finite = skip;
            }
            let state = GroupState::new(fields.group(), lr_scale)
                .map_err(|_| CheckpointError::Hyperparams)?;
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
        // How many bytes the momentum takes, to read it in the file's order.
        let mut data_len = 0usize;
        let headers_at = r.at;
        for position in 0..expected {
            let (index, len, dtype) = self.tensor_header(&mut r, position)?;
            #[cfg(feature = "alloc")]
            if core::mem::replace(&mut seen[index], true) {
                return Err(CheckpointError::DuplicateTensor { index }.into());
            }
            #[cfg(not(feature = "alloc"))]
            let _ = index; // positional only: no tensor can come twice
            data_len += dtype.bytes(len);
        }
        let tail = if version == Version::V3 { CHECKSUM } else { 0 };
        let needed = r.at.saturating_add(data_len).saturating_add(tail);
        if bytes.len() < needed {
            let len = bytes.len();
            return Err(CheckpointError::Truncated { len, needed }.into());
        }
        if bytes.len() > needed {
            return Err(CheckpointError::TrailingBytes.into());
        }
        if !apply {
            return Ok(());
        }
        // Everything is valid: from here on nothing can fail.
        let mut chunks = &bytes[r.at..r.at + data_len];
        let mut r = Reader {
            bytes,
            at: headers_at,
        };
        for position in 0..expected {
            let Ok((index, len, dtype)) = self.tensor_header(&mut r, position) else {
                return Ok(()); // unreachable: checked above
            };
            let (mine, rest) = chunks.split_at(dtype.bytes(len));
            chunks = rest;
            if let Some(m) = self.buffers.momentum_mut(index) {
                fill_momentum(m, mine);
            }
        }
        self.steps = steps;
        self.skipped = skipped;
        self.lr_scale = lr_scale;
        Ok(())
    }

    /// Reads one tensor header and matches it to a tensor of the optimizer: returns its index,
    /// length and momentum dtype.
    fn tensor_header(
        &self,
        r: &mut Reader<'_>,
        position: usize,
    ) -> Result<(usize, usize, MomentumDtype), Error> {
        let len = r.u64()?;
        let tag = r.take(1)?[0];
        let dtype = MomentumDtype::from_tag(tag).ok_or(CheckpointError::UnknownDtype(tag))?;
        let group = r.u64()?;
        let params = match r.take(1)?[0] {
            ANY_DTYPE => None,
            tag => Some(
                MomentumDtype::from_tag(tag)
                    .and_then(MomentumDtype::element)
                    .ok_or(CheckpointError::UnknownDtype(tag))?,
            ),
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
    pub(in crate::optimizer) fn match_tensor(
        &self,
        name: Option<&str>,
        position: usize,
    ) -> Result<usize, Error> {
        if let Some(name) = name {
            return self
                .tensor_id(name)
                .map(TensorId::index)
                .ok_or(CheckpointError::UnknownTensor { position }.into());
        }
        if position >= self.tensor_count() || self.name_of(position).is_some() {
            return Err(CheckpointError::UnknownTensor { position }.into());
        }
        Ok(position)
    }
}

fn put_group(w: &mut Writer<'_>, g: &GroupFields) {
    for x in [g.lr, g.beta1, g.beta2, g.weight_decay] {
        w.f64(x);
    }
    w.put(&[u8::from(g.maximize)]);
    w.option(g.grad_unscale.map(f64::to_bits));
    w.option(g.max_lr.map(f64::to_bits));
    w.option(g.seed);
    w.put(&[u8::from(g.cautious)]);
    w.put(&[u8::from(g.skip_non_finite)]);
}

/// A group's fields (with the skip flag, from version 3 on).
fn take_group(r: &mut Reader<'_>, with_skip: bool) -> Result<GroupFields, CheckpointError> {
    let (lr, beta1, beta2, weight_decay) = (r.f64()?, r.f64()?, r.f64()?, r.f64()?);
    Ok(GroupFields {
        lr,
        beta1,
        beta2,
        weight_decay,
        maximize: r.flag("maximize")?,
        grad_unscale: r.option("grad_unscale")?.map(f64::from_bits),
        max_lr: r.option("weight decay variant")?.map(f64::from_bits),
        seed: r.option("rounding")?,
        cautious: r.flag("cautious")?,
        skip_non_finite: with_skip && r.flag("skip flag")?,
    })
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
    /// A tag (0 none, 1 some) and 8 bytes (zero for none).
    fn option(&mut self, x: Option<u64>) {
        self.put(&[u8::from(x.is_some())]);
        self.u64(x.unwrap_or(0));
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
    /// A tag and 8 bytes; a value of "none" must be zero (one state, one encoding).
    fn option(&mut self, field: &'static str) -> Result<Option<u64>, CheckpointError> {
        match (self.flag(field)?, self.u64()?) {
            (false, 0) => Ok(None),
            (true, x) => Ok(Some(x)),
            _ => Err(CheckpointError::Invalid(field)),
        }
    }
}
