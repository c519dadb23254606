//! The optimizer state as a safetensors file: one tensor per momentum buffer, named
//! `"{tensor name}.exp_avg"` (the reference's state key) in its own dtype, and the settings as
//! metadata strings — readable by Python's `safetensors`, candle and anything else that reads
//! the format.

use alloc::borrow::Cow;
use alloc::format;
use alloc::string::{String, ToString};
use alloc::vec::Vec;
use core::str::FromStr;

use ::safetensors::tensor::{Dtype as StDtype, SafeTensors};
use half::{bf16, f16};

use super::checkpoint::fill_le;
use super::{Group, GroupState, Lion, MomentumStore, SliceMut, SliceRef, TensorId};
use crate::error::CheckpointError;
use crate::{Cautious, Dtype, Error, Hyperparams, Rounding, StepOptions, WeightDecay};

/// The value of the `format` metadata key.
const FORMAT: &str = "lion-optim";
/// The version of the metadata layout this code writes and reads.
const VERSION: &str = "1";

/// A momentum buffer's bytes, little-endian on every platform.
fn le_bytes(slice: SliceRef<'_>) -> Cow<'_, [u8]> {
    fn le<T: bytemuck::Pod, const W: usize>(s: &[T], to: fn(&T) -> [u8; W]) -> Cow<'_, [u8]> {
        if cfg!(target_endian = "little") {
            Cow::Borrowed(bytemuck::cast_slice(s))
        } else {
            Cow::Owned(s.iter().flat_map(to).collect())
        }
    }
    match slice {
        SliceRef::F32(s) => le(s, |x| x.to_le_bytes()),
        SliceRef::F16(s) => le(s, |x| x.to_le_bytes()),
        SliceRef::Bf16(s) => le(s, |x| x.to_le_bytes()),
    }
}

/// Appends `text` as a JSON string literal.
fn json_string(out: &mut String, text: &str) {
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if u32::from(c) < 0x20 => out.push_str(&format!("\\u{:04x}", u32::from(c))),
            c => out.push(c),
        }
    }
    out.push('"');
}

/// A safetensors file with these metadata entries (written sorted by key) and 1-D tensors (in
/// this order): the same bytes for the same state, every time.
fn write_file(mut meta: Vec<(String, String)>, tensors: &[(String, SliceRef<'_>)]) -> Vec<u8> {
    meta.sort();
    let mut header = String::from("{\"__metadata__\":{");
    for (i, (key, value)) in meta.iter().enumerate() {
        if i > 0 {
            header.push(',');
        }
        json_string(&mut header, key);
        header.push(':');
        json_string(&mut header, value);
    }
    header.push('}');
    let mut at = 0;
    for (name, slice) in tensors {
        let bytes = slice.len() * slice.dtype().size();
        header.push(',');
        json_string(&mut header, name);
        let dtype = match slice.dtype() {
            Dtype::F32 => "F32",
            Dtype::F16 => "F16",
            Dtype::Bf16 => "BF16",
        };
        let (len, end) = (slice.len(), at + bytes);
        header.push_str(&format!(
            ":{{\"dtype\":\"{dtype}\",\"shape\":[{len}],\"data_offsets\":[{at},{end}]}}"
        ));
        at = end;
    }
    header.push('}');
    // The data starts at a multiple of 8 bytes (the header padded with spaces), as the
    // reference implementation writes it.
    while (8 + header.len()) % 8 != 0 {
        header.push(' ');
    }
    let mut out = Vec::with_capacity(8 + header.len() + at);
    out.extend((header.len() as u64).to_le_bytes());
    out.extend(header.as_bytes());
    for (_, slice) in tensors {
        out.extend(le_bytes(*slice).iter());
    }
    out
}

fn st_dtype(d: Dtype) -> StDtype {
    match d {
        Dtype::F32 => StDtype::F32,
        Dtype::F16 => StDtype::F16,
        Dtype::Bf16 => StDtype::BF16,
    }
}

/// Exact text for an f64: Rust's shortest round-trip form (parsed back bit for bit, and by
/// Python's `float`).
fn num(x: f64) -> String {
    format!("{x:?}")
}

fn dtype_name(d: Option<Dtype>) -> &'static str {
    d.map_or("any", Dtype::name)
}

impl<B: MomentumStore> Lion<B> {
    /// The name a tensor has in state files: its name, or its index.
    fn file_name(&self, index: usize) -> Cow<'_, str> {
        match self.tensor_name(TensorId(index)) {
            Some(name) => Cow::Borrowed(name),
            None => Cow::Owned(index.to_string()),
        }
    }

    /// The optimizer state as a safetensors file: each momentum buffer as a 1-D tensor
    /// `"{name}.exp_avg"` in its own dtype (`{name}` is the tensor's name, or its index if it
    /// has none), and as metadata strings the format (`format = "lion-optim"`, `version = "1"`),
    /// the step count (`steps`), the skipped steps, the skip flag, the learning-rate scale,
    /// every group's hyperparameters and options (`group.{i}.lr`, ...) and every tensor's
    /// group, parameter dtype and random stream (`tensor.{name}.group`, ...). Numbers are
    /// written exactly (shortest round-trip decimal); the same state gives the same bytes.
    ///
    /// Which state to use when: this file for anything another program reads (Python's
    /// `safetensors.torch.load_file` gives the momentum as ordinary tensors) or that should
    /// survive refactoring (tensors are matched by name); [`save_state`](Self::save_state)
    /// without allocation, e.g. on a microcontroller.
    ///
    /// An unnamed tensor whose index is another tensor's name cannot be written: that is
    /// [`Error::DuplicateName`].
    ///
    /// ```
    /// use lion_optim::{Dtype, Lion, TensorSpec};
    ///
    /// let mut opt = Lion::new(Default::default())?;
    /// opt.add(TensorSpec::new(4).name("wte").momentum(Dtype::Bf16))?;
    /// let file = opt.save_safetensors()?;
    /// let mut resumed = Lion::new(Default::default())?;
    /// resumed.add(TensorSpec::new(4).name("wte").momentum(Dtype::Bf16))?;
    /// resumed.load_safetensors(&file)?;
    /// assert_eq!(resumed.save_safetensors()?, file);
    /// # Ok::<(), lion_optim::Error>(())
    /// ```
    #[cfg_attr(docsrs, doc(cfg(feature = "safetensors")))]
    pub fn save_safetensors(&self) -> Result<Vec<u8>, Error> {
        let mut meta: Vec<(String, String)> = Vec::new();
        let mut put = |k: String, v: String| meta.push((k, v));
        put("format".into(), FORMAT.into());
        put("version".into(), VERSION.into());
        put("steps".into(), self.steps.to_string());
        put("skipped_steps".into(), self.skipped.to_string());
        put("skip_non_finite".into(), self.skip_non_finite.to_string());
        put("lr_scale".into(), num(self.lr_scale));
        put("groups".into(), self.groups.len().to_string());
        for (i, g) in self.groups.iter().enumerate() {
            for (key, value) in group_fields(&g.group) {
                put(format!("group.{i}.{key}"), value);
            }
        }
        put("tensors".into(), self.tensor_count().to_string());
        let mut tensors = Vec::with_capacity(self.tensor_count());
        for (i, slice) in self.slots().enumerate() {
            let name = self.file_name(i);
            let m = self.meta_of(i);
            put(format!("tensor.{name}.group"), m.group.to_string());
            put(format!("tensor.{name}.params"), dtype_name(m.params).into());
            put(format!("tensor.{name}.stream"), m.stream.to_string());
            tensors.push((format!("{name}.exp_avg"), slice));
        }
        let mut names: Vec<&str> = tensors.iter().map(|(n, _)| n.as_str()).collect();
        names.sort_unstable();
        if let Some(pair) = names.windows(2).find(|w| w[0] == w[1]) {
            let name = pair[0].trim_end_matches(".exp_avg");
            let index = self.tensor_id(name).map_or(0, TensorId::index);
            return Err(Error::DuplicateName { index });
        }
        Ok(write_file(meta, &tensors))
    }

    /// Restores the state from a safetensors file written by
    /// [`save_safetensors`](Self::save_safetensors): counts, flags, every group's settings and
    /// every tensor's momentum.
    ///
    /// The file must describe this optimizer: the same number of groups; for every tensor a
    /// `"{name}.exp_avg"` of its length and momentum dtype and the same group, parameter dtype
    /// and stream; no other tensors. Any other file — truncated, corrupted, with wrong names,
    /// lengths or dtypes, another format version, metadata that does not parse — is an error,
    /// and the optimizer is unchanged.
    ///
    /// ```
    /// use lion_optim::{CheckpointError, Dtype, Error, Lion, TensorSpec};
    ///
    /// let mut opt = Lion::new(Default::default())?;
    /// opt.add(TensorSpec::new(4).name("wte"))?;
    /// let file = opt.save_safetensors()?;
    /// assert!(matches!(opt.load_safetensors(&file[..file.len() - 1]), Err(Error::Checkpoint(_))));
    /// let mut other = Lion::new(Default::default())?;
    /// other.add(TensorSpec::new(4).name("wpe"))?;
    /// assert_eq!(
    ///     other.load_safetensors(&file),
    ///     Err(Error::Checkpoint(CheckpointError::MissingTensor { index: 0 }))
    /// );
    /// # Ok::<(), lion_optim::Error>(())
    /// ```
    #[cfg_attr(docsrs, doc(cfg(feature = "safetensors")))]
    pub fn load_safetensors(&mut self, bytes: &[u8]) -> Result<(), Error> {
        let file = SafeTensors::deserialize(bytes).map_err(|_| self.structure_error(bytes))?;
        let (_, header) =
            SafeTensors::read_metadata(bytes).map_err(|_| self.structure_error(bytes))?;
        let Some(meta) = header.metadata() else {
            return Err(CheckpointError::Invalid("metadata").into());
        };
        let get = |key: &str, field: &'static str| {
            meta.get(key)
                .map(String::as_str)
                .ok_or(CheckpointError::Invalid(field))
        };
        if get("format", "format")? != FORMAT {
            return Err(CheckpointError::Invalid("format").into());
        }
        if get("version", "version")? != VERSION {
            return Err(CheckpointError::UnknownVersion.into());
        }
        let steps = parse(get("steps", "steps")?, "steps")?;
        let skipped = parse(get("skipped_steps", "skipped_steps")?, "skipped_steps")?;
        let skip_non_finite = parse(
            get("skip_non_finite", "skip_non_finite")?,
            "skip_non_finite",
        )?;
        let lr_scale: f64 = parse(get("lr_scale", "lr_scale")?, "lr_scale")?;
        if !(lr_scale.is_finite() && lr_scale >= 0.0) {
            return Err(CheckpointError::Hyperparams.into());
        }
        let groups: usize = parse(get("groups", "groups")?, "groups")?;
        if groups != self.groups.len() {
            let expected = self.groups.len();
            return Err(CheckpointError::GroupCount {
                expected,
                found: groups,
            }
            .into());
        }
        let mut states = Vec::with_capacity(groups);
        for i in 0..groups {
            let field = |key: &str| meta.get(&format!("group.{i}.{key}")).map(String::as_str);
            let group = read_group(field)?;
            states
                .push(GroupState::new(group, lr_scale).map_err(|_| CheckpointError::Hyperparams)?);
        }
        let count: usize = parse(get("tensors", "tensors")?, "tensors")?;
        let expected = self.tensor_count();
        if count != expected || file.len() != expected {
            let found = if count != expected { count } else { file.len() };
            return Err(CheckpointError::TensorCount { expected, found }.into());
        }
        let mut data = Vec::with_capacity(expected);
        for index in 0..expected {
            let name = self.file_name(index);
            let view = file
                .tensor(&format!("{name}.exp_avg"))
                .map_err(|_| CheckpointError::MissingTensor { index })?;
            let momentum = self.momentum(TensorId(index))?;
            if view.dtype() != st_dtype(momentum.dtype()) || view.shape() != [momentum.len()] {
                return Err(CheckpointError::TensorShape { index }.into());
            }
            let m = self.meta_of(index);
            let field = |key: &str, what: &'static str| {
                meta.get(&format!("tensor.{name}.{key}"))
                    .map(String::as_str)
                    .ok_or(CheckpointError::Invalid(what))
            };
            let group: usize = parse(field("group", "tensor group")?, "tensor group")?;
            let params = field("params", "tensor params")?;
            let stream: u64 = parse(field("stream", "tensor stream")?, "tensor stream")?;
            if group != m.group || params != dtype_name(m.params) || stream != m.stream {
                return Err(CheckpointError::TensorSettings { index }.into());
            }
            data.push(view.data());
        }
        // Everything is valid: from here on nothing can fail.
        for (index, bytes) in data.into_iter().enumerate() {
            match self.buffers.momentum_mut(index) {
                Some(SliceMut::F32(s)) => fill_le(s, bytes, f32::from_le_bytes),
                Some(SliceMut::F16(s)) => fill_le(s, bytes, f16::from_le_bytes),
                Some(SliceMut::Bf16(s)) => fill_le(s, bytes, bf16::from_le_bytes),
                None => {}
            }
        }
        for (g, state) in self.groups.iter_mut().zip(states) {
            *g = state;
        }
        self.steps = steps;
        self.skipped = skipped;
        self.skip_non_finite = skip_non_finite;
        self.lr_scale = lr_scale;
        Ok(())
    }
}

fn parse<T: FromStr>(text: &str, field: &'static str) -> Result<T, CheckpointError> {
    text.parse().map_err(|_| CheckpointError::Invalid(field))
}

/// A group's settings as metadata fields.
fn group_fields(g: &Group) -> [(&'static str, String); 11] {
    let (hp, o) = (&g.hp, &g.options);
    let (variant, max_lr) = match o.weight_decay {
        WeightDecay::Paper => ("paper", "none".into()),
        WeightDecay::FullyDecoupled { max_lr } => ("fully_decoupled", num(max_lr)),
    };
    let (rounding, seed) = match o.rounding {
        Rounding::Nearest => ("nearest", "none".into()),
        Rounding::Stochastic { seed } => ("stochastic", seed.to_string()),
    };
    [
        ("lr", num(hp.lr)),
        ("beta1", num(hp.beta1)),
        ("beta2", num(hp.beta2)),
        ("weight_decay", num(hp.weight_decay)),
        ("maximize", o.maximize.to_string()),
        ("grad_unscale", o.grad_unscale.map_or("none".into(), num)),
        ("weight_decay_variant", variant.into()),
        ("max_lr", max_lr),
        ("rounding", rounding.into()),
        ("seed", seed),
        (
            "cautious",
            if o.cautious == Cautious::Off {
                "off"
            } else {
                "whole"
            }
            .into(),
        ),
    ]
}

/// A group from its metadata fields (`field(key)` is `group.{i}.{key}`).
fn read_group<'m>(field: impl Fn(&str) -> Option<&'m str>) -> Result<Group, CheckpointError> {
    let get = |key: &str, what: &'static str| field(key).ok_or(CheckpointError::Invalid(what));
    let hp = Hyperparams {
        lr: parse(get("lr", "group lr")?, "group lr")?,
        beta1: parse(get("beta1", "group beta1")?, "group beta1")?,
        beta2: parse(get("beta2", "group beta2")?, "group beta2")?,
        weight_decay: parse(
            get("weight_decay", "group weight_decay")?,
            "group weight_decay",
        )?,
    };
    let maximize = parse(get("maximize", "group maximize")?, "group maximize")?;
    let grad_unscale = match get("grad_unscale", "group grad_unscale")? {
        "none" => None,
        x => Some(parse(x, "group grad_unscale")?),
    };
    let max_lr = get("max_lr", "group max_lr")?;
    let weight_decay = match get("weight_decay_variant", "group weight_decay_variant")? {
        "paper" if max_lr == "none" => WeightDecay::Paper,
        "fully_decoupled" => WeightDecay::FullyDecoupled {
            max_lr: parse(max_lr, "group max_lr")?,
        },
        _ => return Err(CheckpointError::Invalid("group weight_decay_variant")),
    };
    let seed = get("seed", "group seed")?;
    let rounding = match get("rounding", "group rounding")? {
        "nearest" if seed == "none" => Rounding::Nearest,
        "stochastic" => Rounding::Stochastic {
            seed: parse(seed, "group seed")?,
        },
        _ => return Err(CheckpointError::Invalid("group rounding")),
    };
    let cautious = match get("cautious", "group cautious")? {
        "off" => Cautious::Off,
        "whole" => Cautious::Whole,
        _ => return Err(CheckpointError::Invalid("group cautious")),
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

impl<B: MomentumStore> Lion<B> {
    /// Why `bytes` is not a safetensors file: [`CheckpointError::Truncated`] when it ends
    /// before its 8-byte header length, before the header that length announces, or before
    /// the momentum of this optimizer's tensors after the header; otherwise an invalid
    /// structure.
    fn structure_error(&self, bytes: &[u8]) -> CheckpointError {
        const MAX_HEADER: usize = 100_000_000; // what the safetensors crate accepts
        let len = bytes.len();
        let Some(head) = bytes.first_chunk::<8>() else {
            return CheckpointError::Truncated { len, needed: 8 };
        };
        let header_end = usize::try_from(u64::from_le_bytes(*head))
            .ok()
            .filter(|&n| n <= MAX_HEADER)
            .map(|n| n + 8);
        let Some(header_end) = header_end else {
            return CheckpointError::Invalid("safetensors header length");
        };
        let momentum: usize = (0..self.tensor_count())
            .filter_map(|i| self.momentum(TensorId(i)).ok())
            .map(|m| m.len().saturating_mul(m.dtype().size()))
            .fold(0, usize::saturating_add);
        let needed = if header_end > len {
            header_end
        } else {
            header_end.saturating_add(momentum)
        };
        if needed > len {
            CheckpointError::Truncated { len, needed }
        } else {
            CheckpointError::Invalid("safetensors structure")
        }
    }
}
