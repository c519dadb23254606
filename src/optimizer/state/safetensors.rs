//! The optimizer state as a safetensors file: one tensor per momentum buffer, named
//! `"{tensor name}.exp_avg"` (the reference's state key) in its own dtype, and the settings and
//! a checksum as metadata strings — readable by Python's `safetensors`, candle and anything
//! else that reads the format.

use alloc::borrow::Cow;
use alloc::format;
use alloc::string::{String, ToString};
use alloc::vec::Vec;
use core::str::FromStr;

use ::safetensors::tensor::{Dtype as StDtype, SafeTensors};

use super::{GroupFields, check_lr_scale, crc32c, fill_momentum};
use crate::error::CheckpointError;
use crate::optimizer::{GroupState, Lion, MomentumStore};
use crate::{Dtype, Error, MomentumDtype, MomentumRef};

/// The value of the `format` metadata key.
const FORMAT: &str = "lion-optim";
/// The version of the metadata layout this code writes (2: per-group skip flags, a checksum).
const VERSION: &str = "2";
/// Version 1 (one skip flag, no checksum): still read.
const VERSION_1: &str = "1";
/// The checksum's key in the metadata, as the header's JSON spells it; the value is 8 hex
/// digits.
const CHECKSUM_KEY: &[u8] = br#""checksum":""#;
/// The checksum's value while the checksum is computed.
const CHECKSUM_PLACEHOLDER: &[u8; 8] = b"00000000";

/// A 1-D tensor of a state file: its name, safetensors dtype, length and little-endian bytes.
struct FileTensor<'a> {
    name: String,
    dtype: StDtype,
    len: usize,
    bytes: Cow<'a, [u8]>,
}

/// Little-endian bytes of a slice of `T`, borrowed where the platform is little-endian.
fn le<T: bytemuck::Pod, const W: usize>(s: &[T], to: fn(&T) -> [u8; W]) -> Cow<'_, [u8]> {
    if cfg!(target_endian = "little") {
        Cow::Borrowed(bytemuck::cast_slice(s))
    } else {
        Cow::Owned(s.iter().flat_map(to).collect())
    }
}

/// The file tensors of the momentum of the tensor called `name`: `{name}.exp_avg` in its own
/// dtype, or for 8-bit momentum `{name}.exp_avg.codes` (U8) and `{name}.exp_avg.absmax` (F32).
fn file_tensors<'a>(name: &str, m: MomentumRef<'a>, out: &mut Vec<FileTensor<'a>>) {
    let (len, name) = (m.len(), format!("{name}.exp_avg"));
    let one = |dtype, bytes| FileTensor {
        name: name.clone(),
        dtype,
        len,
        bytes,
    };
    match m {
        MomentumRef::F32(s) => out.push(one(StDtype::F32, le(s, |x| x.to_le_bytes()))),
        MomentumRef::F16(s) => out.push(one(StDtype::F16, le(s, |x| x.to_le_bytes()))),
        MomentumRef::Bf16(s) => out.push(one(StDtype::BF16, le(s, |x| x.to_le_bytes()))),
        MomentumRef::Q8(q) => {
            out.push(FileTensor {
                name: format!("{name}.codes"),
                dtype: StDtype::U8,
                len,
                bytes: Cow::Borrowed(q.codes()),
            });
            out.push(FileTensor {
                name: format!("{name}.absmax"),
                dtype: StDtype::F32,
                len: q.absmax().len(),
                bytes: le(q.absmax(), |x| x.to_le_bytes()),
            });
        }
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
fn write_file(mut meta: Vec<(String, String)>, tensors: &[FileTensor<'_>]) -> Vec<u8> {
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
    for t in tensors {
        header.push(',');
        json_string(&mut header, &t.name);
        let dtype = match t.dtype {
            StDtype::F16 => "F16",
            StDtype::BF16 => "BF16",
            StDtype::U8 => "U8",
            _ => "F32",
        };
        let (len, end) = (t.len, at + t.bytes.len());
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
    for t in tensors {
        out.extend(t.bytes.iter());
    }
    out
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
        match self.name_of(index) {
            Some(name) => Cow::Borrowed(name),
            None => Cow::Owned(index.to_string()),
        }
    }

    /// The optimizer state as a safetensors file: each momentum buffer as a 1-D tensor
    /// `"{name}.exp_avg"` in its own dtype (`{name}` is the tensor's name, or its index if it
    /// has none), and as metadata strings the format (`format = "lion-optim"`, `version = "2"`),
    /// the step count (`steps`), the skipped steps, the learning-rate scale, every group's
    /// hyperparameters and options (`group.{i}.lr`, ..., `group.{i}.skip_non_finite`), every
    /// tensor's group, parameter dtype and random stream (`tensor.{name}.group`, ...) and a
    /// `checksum`: the CRC-32C of the whole file, computed with the checksum's 8 hex digits set
    /// to `00000000`. Numbers are written exactly (shortest round-trip decimal); the same state
    /// gives the same bytes.
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
        put("lr_scale".into(), num(self.lr_scale));
        put("groups".into(), self.groups.len().to_string());
        for (i, g) in self.groups.iter().enumerate() {
            for (key, value) in group_text(&GroupFields::of(&g.group)) {
                put(format!("group.{i}.{key}"), value);
            }
        }
        put("tensors".into(), self.tensor_count().to_string());
        let placeholder = core::str::from_utf8(CHECKSUM_PLACEHOLDER).unwrap_or_default();
        put("checksum".into(), placeholder.into());
        let mut tensors = Vec::with_capacity(self.tensor_count());
        for (i, slice) in self.slots().enumerate() {
            let name = self.file_name(i);
            let m = self.meta_of(i);
            put(format!("tensor.{name}.group"), m.group.to_string());
            put(format!("tensor.{name}.params"), dtype_name(m.params).into());
            put(format!("tensor.{name}.stream"), m.stream.to_string());
            file_tensors(&name, slice, &mut tensors);
        }
        let mut names: Vec<&str> = tensors.iter().map(|t| t.name.as_str()).collect();
        names.sort_unstable();
        if let Some(pair) = names.windows(2).find(|w| w[0] == w[1]) {
            let name = pair[0]
                .trim_end_matches(".codes")
                .trim_end_matches(".absmax")
                .trim_end_matches(".exp_avg");
            let index = self.tensor_id(name).map_or(0, |id| id.index());
            return Err(Error::DuplicateName { index });
        }
        let mut file = write_file(meta, &tensors);
        if let Some(at) = checksum_at(&file) {
            let digits = format!("{:08x}", file_checksum(&file, at));
            file[at..at + 8].copy_from_slice(digits.as_bytes());
        }
        Ok(file)
    }

    /// Restores the state from a safetensors file written by
    /// [`save_safetensors`](Self::save_safetensors): counts, every group's settings and every
    /// tensor's momentum.
    ///
    /// The file must describe this optimizer: the same number of groups; for every tensor a
    /// `"{name}.exp_avg"` of its length and momentum dtype and the same group, parameter dtype
    /// and stream; no other tensors. Any other file — truncated, damaged (its checksum does not
    /// match: [`CheckpointError::Checksum`]), with wrong names, lengths or dtypes, another
    /// format version, metadata that does not parse — is an error, and the optimizer is
    /// unchanged. (Files of version 1, without a checksum, load too.)
    ///
    /// ```
    /// use lion_optim::{CheckpointError, Dtype, Error, Lion, TensorSpec};
    ///
    /// let mut opt = Lion::new(Default::default())?;
    /// opt.add(TensorSpec::new(4).name("wte"))?;
    /// let mut file = opt.save_safetensors()?;
    /// assert!(matches!(opt.load_safetensors(&file[..file.len() - 1]), Err(Error::Checkpoint(_))));
    /// let mut other = Lion::new(Default::default())?;
    /// other.add(TensorSpec::new(4).name("wpe"))?;
    /// assert_eq!(
    ///     other.load_safetensors(&file),
    ///     Err(Error::Checkpoint(CheckpointError::MissingTensor { index: 0 }))
    /// );
    /// let last = file.len() - 1;
    /// file[last] ^= 0x40; // a flipped bit in the momentum
    /// assert_eq!(opt.load_safetensors(&file), Err(Error::Checkpoint(CheckpointError::Checksum)));
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
        // The checksum first: a damaged file is reported as damaged, whatever it now says.
        let checksummed = match meta.get("checksum") {
            None => false,
            Some(value) => {
                // Exactly the 8 lower-case digits `save_safetensors` writes: `from_str_radix`
                // alone would also take an upper-case digit or a leading `+`, single-byte
                // changes that leave the value (and so the checksum) as it was.
                let digits = value.len() == 8
                    && value
                        .bytes()
                        .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
                let expected = u32::from_str_radix(value, 16).ok().filter(|_| digits);
                let at = checksum_at(bytes);
                match (expected, at) {
                    (Some(x), Some(at)) if file_checksum(bytes, at) == x => true,
                    _ => return Err(CheckpointError::Checksum.into()),
                }
            }
        };
        let get = |key: &str, field: &'static str| {
            meta.get(key)
                .map(String::as_str)
                .ok_or(CheckpointError::Invalid(field))
        };
        if get("format", "format")? != FORMAT {
            return Err(CheckpointError::Invalid("format").into());
        }
        // Version 1 kept one skip flag for all groups (and no checksum).
        let skip_all = match get("version", "version")? {
            VERSION if checksummed => None,
            VERSION => return Err(CheckpointError::Invalid("checksum").into()),
            VERSION_1 => Some(parse::<bool>(
                get("skip_non_finite", "skip_non_finite")?,
                "skip_non_finite",
            )?),
            _ => return Err(CheckpointError::UnknownVersion.into()),
        };
        let steps = parse(get("steps", "steps")?, "steps")?;
        let skipped = parse(get("skipped_steps", "skipped_steps")?, "skipped_steps")?;
        let lr_scale = check_lr_scale(parse(get("lr_scale", "lr_scale")?, "lr_scale")?)?;
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
            let mut fields = group_from_text(field, skip_all.is_none())?;
            if let Some(skip) = skip_all {
                fields.skip_non_finite = skip;
            }
            let state = GroupState::new(fields.group(), lr_scale)
                .map_err(|_| CheckpointError::Hyperparams)?;
            states.push(state);
        }
        let count: usize = parse(get("tensors", "tensors")?, "tensors")?;
        let expected = self.tensor_count();
        // The file tensors this optimizer's momentum is (two for 8-bit momentum).
        let mut mine = Vec::with_capacity(expected);
        for index in 0..expected {
            file_tensors(&self.file_name(index), self.momentum(index)?, &mut mine);
        }
        if count != expected || file.len() != mine.len() {
            let found = if count != expected { count } else { file.len() };
            return Err(CheckpointError::TensorCount { expected, found }.into());
        }
        let mut data = Vec::with_capacity(expected);
        let mut mine = mine.iter();
        for index in 0..expected {
            let name = self.file_name(index);
            let momentum = self.momentum(index)?;
            let parts = if momentum.dtype() == MomentumDtype::Q8 {
                2
            } else {
                1
            };
            let mut bytes: Vec<&[u8]> = Vec::with_capacity(parts);
            for t in mine.by_ref().take(parts) {
                let view = file
                    .tensor(&t.name)
                    .map_err(|_| CheckpointError::MissingTensor { index })?;
                if view.dtype() != t.dtype || view.shape() != [t.len] {
                    return Err(CheckpointError::TensorShape { index }.into());
                }
                bytes.push(view.data());
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
            data.push(bytes.concat());
        }
        // Everything is valid: from here on nothing can fail.
        for (index, bytes) in data.into_iter().enumerate() {
            if let Some(m) = self.buffers.momentum_mut(index) {
                fill_momentum(m, &bytes);
            }
        }
        for (g, state) in self.groups.iter_mut().zip(states) {
            *g = state;
        }
        self.steps = steps;
        self.skipped = skipped;
        self.lr_scale = lr_scale;
        Ok(())
    }
}

/// Where the checksum's 8 hex digits are in a safetensors file: right after the one occurrence
/// of `"checksum":"` in its header. `None` if the header does not hold it exactly once.
fn checksum_at(file: &[u8]) -> Option<usize> {
    let len = usize::try_from(u64::from_le_bytes(*file.first_chunk::<8>()?)).ok()?;
    let header = file.get(8..8usize.checked_add(len)?)?;
    let mut found = header
        .windows(CHECKSUM_KEY.len())
        .enumerate()
        .filter(|(_, w)| *w == CHECKSUM_KEY)
        .map(|(i, _)| 8 + i + CHECKSUM_KEY.len());
    let at = found.next()?;
    if found.next().is_some() || file.get(at + 8) != Some(&b'"') {
        return None;
    }
    Some(at)
}

/// The CRC-32C of `file` with the 8 bytes at `at` read as [`CHECKSUM_PLACEHOLDER`].
fn file_checksum(file: &[u8], at: usize) -> u32 {
    let crc = crc32c(0, &file[..at]);
    let crc = crc32c(crc, CHECKSUM_PLACEHOLDER);
    crc32c(crc, &file[at + 8..])
}

fn parse<T: FromStr>(text: &str, field: &'static str) -> Result<T, CheckpointError> {
    text.parse().map_err(|_| CheckpointError::Invalid(field))
}

/// A group's settings as metadata fields (the keys after `group.{i}.`).
fn group_text(g: &GroupFields) -> [(&'static str, String); 12] {
    let (variant, max_lr) = match g.max_lr {
        None => ("paper", "none".into()),
        Some(max_lr) => ("fully_decoupled", num(max_lr)),
    };
    let (rounding, seed) = match g.seed {
        None => ("nearest", "none".into()),
        Some(seed) => ("stochastic", seed.to_string()),
    };
    [
        ("lr", num(g.lr)),
        ("beta1", num(g.beta1)),
        ("beta2", num(g.beta2)),
        ("weight_decay", num(g.weight_decay)),
        ("maximize", g.maximize.to_string()),
        ("grad_unscale", g.grad_unscale.map_or("none".into(), num)),
        ("weight_decay_variant", variant.into()),
        ("max_lr", max_lr),
        ("rounding", rounding.into()),
        ("seed", seed),
        ("cautious", if g.cautious { "whole" } else { "off" }.into()),
        ("skip_non_finite", g.skip_non_finite.to_string()),
    ]
}

/// A group's settings from its metadata fields (`field(key)` is `group.{i}.{key}`), with the
/// skip flag (from version 2 on).
fn group_from_text<'m>(
    field: impl Fn(&str) -> Option<&'m str>,
    with_skip: bool,
) -> Result<GroupFields, CheckpointError> {
    let get = |key: &str, what: &'static str| field(key).ok_or(CheckpointError::Invalid(what));
    let number = |key: &str, what: &'static str| parse::<f64>(get(key, what)?, what);
    let max_lr = get("max_lr", "group max_lr")?;
    let max_lr = match get("weight_decay_variant", "group weight_decay_variant")? {
        "paper" if max_lr == "none" => None,
        "fully_decoupled" => Some(parse(max_lr, "group max_lr")?),
        _ => return Err(CheckpointError::Invalid("group weight_decay_variant")),
    };
    let seed = get("seed", "group seed")?;
    let seed = match get("rounding", "group rounding")? {
        "nearest" if seed == "none" => None,
        "stochastic" => Some(parse(seed, "group seed")?),
        _ => return Err(CheckpointError::Invalid("group rounding")),
    };
    let cautious = match get("cautious", "group cautious")? {
        "off" => false,
        "whole" => true,
        _ => return Err(CheckpointError::Invalid("group cautious")),
    };
    let skip_non_finite = with_skip
        && parse(
            get("skip_non_finite", "group skip_non_finite")?,
            "group skip_non_finite",
        )?;
    Ok(GroupFields {
        lr: number("lr", "group lr")?,
        beta1: number("beta1", "group beta1")?,
        beta2: number("beta2", "group beta2")?,
        weight_decay: number("weight_decay", "group weight_decay")?,
        maximize: parse(get("maximize", "group maximize")?, "group maximize")?,
        grad_unscale: match get("grad_unscale", "group grad_unscale")? {
            "none" => None,
            x => Some(parse(x, "group grad_unscale")?),
        },
        max_lr,
        seed,
        cautious,
        skip_non_finite,
    })
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
            .filter_map(|i| self.momentum(i).ok())
            .map(|m| m.dtype().bytes(m.len()))
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
