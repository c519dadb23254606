//! The wasm module of the npm package `lion-optim`: raw `extern "C"` exports over lion-optim for
//! the hand-written ES module `js/index.js`. Built twice for `wasm32-unknown-unknown` (with and
//! without simd128) by `build.sh`; the ES module picks one at load time.
//!
//! The module owns every buffer a step touches: tensors ([`lion_tensor_new`]: elements, or 8-bit
//! momentum for the stateless step) and optimizers
//! ([`lion_opt_new`]) live in slabs, and JS names them by *handle*, never by pointer (a pointer is
//! handed out only for JS's typed-array views). So every export is safe Rust over owned data: a
//! handle that was never issued, one that was freed, or one tensor passed twice in a step is an
//! error, never an aliasing or dangling reference.
//!
//! This crate only adapts: it parses the arguments, borrows the slabs' buffers as the core's
//! run-time-typed slices ([`SliceMut`], [`SliceRef`]) and makes one call into the core
//! ([`step_many`](lion_optim::Backend::step_many) or [`Lion::step`]), which checks everything
//! before it writes anything and does the dtype dispatch.
//!
//! # Calling convention
//!
//! * Handles are positive `i32`s: the slot's index + 1 in the low 20 bits and the slot's
//!   generation above, so a freed handle is not confused with the next tensor in its slot.
//! * Arguments that are not scalars (hyperparameters and options, handle lists, names,
//!   checkpoints, f32 values to convert) are written by JS into the *args block*
//!   ([`lion_args`]), little-endian; the layouts are given at each export.
//! * Results that are not scalars (a checkpoint, f32 values, a group's settings) and error
//!   messages come back in the *out block* ([`lion_out`], [`lion_out_len`]).
//! * A fallible export returns an `i32`: `>= 0` on success (a handle, an id, an outcome), or
//!   `-kind` on error (see [`Kind`]); then the out block holds the message (UTF-8) and
//!   [`lion_err_index`] the index of the update or tensor it concerns (or -1). Nothing was
//!   changed.
//!
//! Any export that allocates may grow the wasm memory (which detaches JS's views): JS re-creates
//! its views when `memory.buffer` changes.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::fmt;

use lion_optim::{
    Backend, Buffer, Cautious, Dtype, Element, Error, Group, GroupId, Hyperparams, Lion,
    MomentumDtype, MomentumRef, Outcome, Q8_BLOCK, Rounding, SliceMut, SliceRef, StepOptions,
    Tensor, TensorId, TensorSpec, Update, WeightDecay, bf16, f16,
};

/// The version of this interface; `js/index.js` refuses a module of another version.
pub const ABI: u32 = 1;

/// The dtype tags of the interface (`Dtype`'s order); 3 is 8-bit momentum.
const DTYPES: [Dtype; 3] = [Dtype::F32, Dtype::F16, Dtype::Bf16];
/// The tag of 8-bit momentum (blockwise codes + absmax): a momentum dtype of the optimizer
/// ([`lion_opt_add`]) and of tensors used as the momentum of a stateless step, never of
/// parameters or gradients.
const TAG_Q8: u32 = 3;
/// The parameter-dtype tag meaning "any" (`lion_opt_add`).
const TAG_ANY: u32 = 255;

/// The backend of the stateless step (`lion_step`): wide's simd128 vectors in the simd128 build;
/// in the scalar build the scalar specification, which runs faster there than wide's array
/// fallback (which `Backend::detect` would pick, and `Lion::step` uses). All are bit-identical.
const BACKEND: Backend = if cfg!(all(target_arch = "wasm32", not(target_feature = "simd128"))) {
    Backend::Scalar
} else {
    Backend::Portable
};

/// What kind of error an export reports (its negated value is the return code); js/index.js
/// throws the JS error type in brackets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(i32)]
pub enum Kind {
    /// A value of the wrong kind: a dtype, a tensor passed twice, a mixed key (`TypeError`).
    Type = 1,
    /// A value out of range: a length, a hyperparameter, an index (`RangeError`).
    Range = 2,
    /// A freed handle, or one never issued (`TypeError`: use after free).
    Freed = 3,
    /// A checkpoint that cannot be loaded (`Error`).
    State = 4,
    /// Out of memory (`RangeError`, as `new ArrayBuffer` throws).
    Memory = 5,
}

/// `len` copies of `value`, or `None` if the memory cannot grow that much.
fn filled<T: Clone>(len: usize, value: T) -> Option<Vec<T>> {
    let mut v = Vec::new();
    v.try_reserve_exact(len).ok()?;
    v.resize(len, value);
    Some(v)
}

/// Rounds `src` into `dst` (as a step's stores round: to nearest, ties to even).
fn round_into<T: Element>(dst: &mut [T], src: &[f32]) {
    for (d, s) in dst.iter_mut().zip(src) {
        *d = T::from_f32_rounded(*s);
    }
}

/// Appends `src` widened to f32 (exactly) to `out`, little-endian.
fn widen_into<T: Element>(out: &mut Vec<u8>, src: &[T]) {
    for x in src {
        out.extend_from_slice(&x.to_f32_exact().to_le_bytes());
    }
}

/// A tensor's storage, owned by the module (the core's [`Buffer`]: elements, or 8-bit momentum):
/// `len` zeros of `dtype` (8-bit: code 127, scale 0), or `None` if the memory cannot grow that
/// much.
fn buffer_zeros(dtype: MomentumDtype, len: usize) -> Option<Buffer> {
    Some(match dtype {
        MomentumDtype::F32 => Buffer::F32(filled(len, 0.0)?),
        MomentumDtype::F16 => Buffer::F16(filled(len, f16::ZERO)?),
        MomentumDtype::Bf16 => Buffer::Bf16(filled(len, bf16::ZERO)?),
        _ => Buffer::Q8 {
            codes: filled(len, 127)?,
            absmax: filled(len.div_ceil(Q8_BLOCK), 0.0)?,
        },
    })
}

/// The bytes of a buffer of `len` elements of `dtype`.
fn storage_bytes(dtype: MomentumDtype, len: usize) -> usize {
    match dtype {
        MomentumDtype::F32 => len.saturating_mul(4),
        MomentumDtype::Q8 => len.saturating_add(len.div_ceil(Q8_BLOCK).saturating_mul(4)),
        _ => len.saturating_mul(2), // f16, bf16
    }
}

/// The error of an 8-bit tensor where elements are needed (`what`: e.g. "the params tensor of
/// update 0").
fn not_elements(what: &str, index: i32) -> (Kind, i32, String) {
    err(
        Kind::Type,
        index,
        format!("{what} holds 8-bit (q8) momentum, not elements: it can only be a momentum"),
    )
}

/// The address of a slice's first element in the wasm memory (what JS views).
fn address(s: SliceRef<'_>) -> u32 {
    let ptr = match s {
        SliceRef::F32(v) => v.as_ptr().cast::<u8>(),
        SliceRef::F16(v) => v.as_ptr().cast(),
        SliceRef::Bf16(v) => v.as_ptr().cast(),
    };
    // wasm32 addresses are 32 bits (natively, where this is only tested, the value is unused).
    ptr as usize as u32
}

/// The address of momentum's first element, or of its codes for 8-bit momentum.
fn momentum_address(m: MomentumRef<'_>) -> u32 {
    match m {
        MomentumRef::Q8(q) => q.codes().as_ptr() as usize as u32,
        m => m.as_slice_ref().map_or(0, address),
    }
}

/// The address of 8-bit momentum's block scales (0 for other momentum).
fn absmax_address(m: MomentumRef<'_>) -> u32 {
    match m {
        MomentumRef::Q8(q) => q.absmax().as_ptr() as usize as u32,
        _ => 0,
    }
}

/// `address` of tensor `handle` (0 if the handle is not live).
fn tensor_address(handle: i32, address: fn(MomentumRef<'_>) -> u32) -> u32 {
    with(|s| s.tensors.get(handle).map_or(0, |b| address(b.as_slice())))
}

/// `address` of the momentum of tensor `id` of optimizer `handle` (0 if there is no such
/// tensor).
fn opt_momentum_address(handle: i32, id: u32, address: fn(MomentumRef<'_>) -> u32) -> u32 {
    with(|s| {
        let opt = s.optimizers.get(handle).ok();
        opt.and_then(|o| o.momentum(TensorId::new(id as usize)).ok())
            .map_or(0, address)
    })
}

/// Bits of a handle that hold the slot index + 1.
const INDEX_BITS: u32 = 20;
/// The generations a slot goes through before its handles repeat.
const GENERATIONS: u32 = 1 << (31 - INDEX_BITS);

/// Why a handle does not name a live object.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Fault {
    /// Never issued (or not a handle at all).
    Invalid,
    /// Issued, then freed.
    Freed,
    /// Named twice in one call.
    Duplicate,
}

/// A slot of a [`Slab`].
#[derive(Debug)]
struct Slot<T> {
    generation: u32,
    value: Option<T>,
}

/// Objects named by generational handles.
#[derive(Debug)]
struct Slab<T> {
    slots: Vec<Slot<T>>,
    /// Free slots, reused oldest first (so a stale handle meets its slot's next generation as
    /// late as possible).
    free: VecDeque<usize>,
}

impl<T> Slab<T> {
    const fn new() -> Self {
        Self {
            slots: Vec::new(),
            free: VecDeque::new(),
        }
    }

    /// Stores `value`; its handle, or `None` if there are 2^20 - 1 live objects already.
    fn insert(&mut self, value: T) -> Option<i32> {
        let index = match self.free.pop_front() {
            Some(index) => index,
            None if self.slots.len() + 1 < 1 << INDEX_BITS => {
                self.slots.push(Slot {
                    generation: 0,
                    value: None,
                });
                self.slots.len() - 1
            }
            None => return None,
        };
        let slot = &mut self.slots[index];
        slot.value = Some(value);
        Some(((slot.generation << INDEX_BITS) | (index as u32 + 1)) as i32)
    }

    /// The slot index of `handle`, if it names a live object.
    fn index(&self, handle: i32) -> Result<usize, Fault> {
        let handle = u32::try_from(handle).map_err(|_| Fault::Invalid)?;
        let index = (handle & ((1 << INDEX_BITS) - 1)) as usize;
        let slot = index
            .checked_sub(1)
            .and_then(|i| Some((i, self.slots.get(i)?)));
        match slot {
            None => Err(Fault::Invalid),
            Some((i, s)) if s.generation == handle >> INDEX_BITS && s.value.is_some() => Ok(i),
            Some(_) => Err(Fault::Freed),
        }
    }

    fn get(&self, handle: i32) -> Result<&T, Fault> {
        let i = self.index(handle)?;
        self.slots[i].value.as_ref().ok_or(Fault::Freed)
    }

    fn get_mut(&mut self, handle: i32) -> Result<&mut T, Fault> {
        let i = self.index(handle)?;
        self.slots[i].value.as_mut().ok_or(Fault::Freed)
    }

    fn remove(&mut self, handle: i32) -> Result<T, Fault> {
        let i = self.index(handle)?;
        let slot = &mut self.slots[i];
        slot.generation = (slot.generation + 1) % GENERATIONS;
        self.free.push_back(i);
        slot.value.take().ok_or(Fault::Freed)
    }

    /// The objects of `handles`, all at once (each may be named once); on error, the position
    /// of the first bad handle and what is wrong with it.
    fn get_many_mut(&mut self, handles: &[i32]) -> Result<Vec<&mut T>, (usize, Fault)> {
        let mut order = Vec::with_capacity(handles.len());
        for (position, &h) in handles.iter().enumerate() {
            order.push((self.index(h).map_err(|f| (position, f))?, position));
        }
        order.sort_unstable();
        if let Some(w) = order.windows(2).find(|w| w[0].0 == w[1].0) {
            return Err((w[0].1.max(w[1].1), Fault::Duplicate));
        }
        let mut all: Vec<Option<&mut T>> =
            self.slots.iter_mut().map(|s| s.value.as_mut()).collect();
        let mut out = Vec::with_capacity(handles.len());
        for &h in handles {
            // Valid and distinct: each slot is taken once.
            let index = (h as u32 & ((1 << INDEX_BITS) - 1)) as usize - 1;
            out.push(all[index].take().ok_or((0, Fault::Invalid))?);
        }
        Ok(out)
    }
}

/// Reads the args block.
struct Reader<'a> {
    bytes: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take<const N: usize>(&mut self) -> Option<[u8; N]> {
        let (head, rest) = self.bytes.split_first_chunk::<N>()?;
        self.bytes = rest;
        Some(*head)
    }
    fn bytes(&mut self, n: usize) -> Option<&'a [u8]> {
        let (head, rest) = self.bytes.split_at_checked(n)?;
        self.bytes = rest;
        Some(head)
    }
    fn u32(&mut self) -> Option<u32> {
        self.take().map(u32::from_le_bytes)
    }
    fn i32(&mut self) -> Option<i32> {
        self.take().map(i32::from_le_bytes)
    }
    fn u64(&mut self) -> Option<u64> {
        self.take().map(u64::from_le_bytes)
    }
    fn f64(&mut self) -> Option<f64> {
        self.take().map(f64::from_le_bytes)
    }
}

/// Flags of a group block.
const MAXIMIZE: u32 = 1;
const UNSCALE: u32 = 2;
const FULLY_DECOUPLED: u32 = 4;
const STOCHASTIC: u32 = 8;
const SKIP_NON_FINITE: u32 = 16;

/// The size of a group block.
pub const GROUP_BLOCK: usize = 96;

/// A group block (96 bytes): `lr`, `beta1`, `beta2`, `weight_decay`, `grad_unscale`, `max_lr`
/// (f64 at 0, 8, 16, 24, 32, 40); `seed`, `step`, `offset`, cautious `agreeing`, cautious
/// `numel` (u64 at 48, 56, 64, 72, 80); flags (u32 at 88: 1 maximize, 2 unscale (else
/// `grad_unscale` is ignored), 4 fully decoupled decay (else `max_lr` is ignored), 8 stochastic
/// rounding (else `seed` is ignored), 16 skip non-finite steps); cautious (u32 at 92: 0 off,
/// 1 whole, 2 shard).
struct GroupBlock {
    group: Group,
}

impl GroupBlock {
    fn read(r: &mut Reader<'_>) -> Result<Self, &'static str> {
        let short = "the args block is too short for a group";
        let mut f = [0.0; 6];
        for x in &mut f {
            *x = r.f64().ok_or(short)?;
        }
        let mut u = [0u64; 5];
        for x in &mut u {
            *x = r.u64().ok_or(short)?;
        }
        let [lr, beta1, beta2, weight_decay, unscale, max_lr] = f;
        let [seed, step, offset, agreeing, numel] = u;
        let flags = r.u32().ok_or(short)?;
        let cautious = match r.u32().ok_or(short)? {
            0 => Cautious::Off,
            1 => Cautious::Whole,
            2 => Cautious::Shard { agreeing, numel },
            _ => return Err("cautious must be 'off', 'whole' or { agreeing, numel }"),
        };
        if flags >= 32 {
            return Err("unknown option flags");
        }
        let options = StepOptions {
            maximize: flags & MAXIMIZE != 0,
            grad_unscale: (flags & UNSCALE != 0).then_some(unscale),
            weight_decay: if flags & FULLY_DECOUPLED != 0 {
                WeightDecay::FullyDecoupled { max_lr }
            } else {
                WeightDecay::Paper
            },
            rounding: if flags & STOCHASTIC != 0 {
                Rounding::Stochastic { seed }
            } else {
                Rounding::Nearest
            },
            step,
            offset,
            cautious,
            skip_non_finite: flags & SKIP_NON_FINITE != 0,
        };
        let hp = Hyperparams {
            lr,
            beta1,
            beta2,
            weight_decay,
        };
        Ok(Self {
            group: Group::new(hp).with_options(options),
        })
    }

    fn write(group: &Group, out: &mut Vec<u8>) {
        let (hp, o) = (&group.hp, &group.options);
        let mut flags = 0;
        let (mut unscale, mut max_lr, mut seed) = (0.0, 0.0, 0);
        if o.maximize {
            flags |= MAXIMIZE;
        }
        if let Some(s) = o.grad_unscale {
            flags |= UNSCALE;
            unscale = s;
        }
        if let WeightDecay::FullyDecoupled { max_lr: m } = o.weight_decay {
            flags |= FULLY_DECOUPLED;
            max_lr = m;
        }
        if let Rounding::Stochastic { seed: s } = o.rounding {
            flags |= STOCHASTIC;
            seed = s;
        }
        if o.skip_non_finite {
            flags |= SKIP_NON_FINITE;
        }
        let (cautious, agreeing, numel) = match o.cautious {
            Cautious::Off => (0, 0, 0),
            Cautious::Whole => (1, 0, 0),
            Cautious::Shard { agreeing, numel } => (2, agreeing, numel),
        };
        for x in [hp.lr, hp.beta1, hp.beta2, hp.weight_decay, unscale, max_lr] {
            out.extend_from_slice(&x.to_le_bytes());
        }
        for x in [seed, o.step, o.offset, agreeing, numel] {
            out.extend_from_slice(&x.to_le_bytes());
        }
        out.extend_from_slice(&flags.to_le_bytes());
        out.extend_from_slice(&(cautious as u32).to_le_bytes());
    }
}

/// Encodes `group` as a group block (for the fixture generator and the tests).
#[doc(hidden)]
pub fn encode_group(group: &Group, out: &mut Vec<u8>) {
    GroupBlock::write(group, out);
}

/// The kind of a core error.
fn kind_of(e: &Error) -> Kind {
    match e {
        Error::TensorDtype { .. }
        | Error::DuplicateTensor { .. }
        | Error::MixedKeys { .. }
        | Error::DuplicateName { .. }
        | Error::BackendUnavailable(_) => Kind::Type,
        Error::Checkpoint(_) => Kind::State,
        _ => Kind::Range,
    }
}

/// The index of the update or tensor a core error concerns, or -1.
fn index_of(e: &Error) -> i32 {
    match *e {
        Error::TensorMismatch { index, .. }
        | Error::TensorDtype { index, .. }
        | Error::DuplicateTensor { index }
        | Error::DuplicateName { index }
        | Error::NoSuchTensor { index, .. } => index as i32,
        Error::UnknownName { position } | Error::MixedKeys { position } => position as i32,
        _ => -1,
    }
}

/// What a role in a stateless step is called in messages.
const ROLES: [&str; 3] = ["params", "grads", "momentum"];

/// Everything the module owns.
struct State {
    tensors: Slab<Buffer>,
    optimizers: Slab<Lion<Vec<Buffer>>>,
    args: Vec<u8>,
    out: Vec<u8>,
    err_index: i32,
}

thread_local! {
    // wasm32-unknown-unknown without atomics has one thread: this is a plain static.
    static STATE: RefCell<State> = const {
        RefCell::new(State {
            tensors: Slab::new(),
            optimizers: Slab::new(),
            args: Vec::new(),
            out: Vec::new(),
            err_index: -1,
        })
    };
}

/// Runs `f` on the module's state (exports never re-enter: JS calls in, Rust never calls out).
fn with<R>(f: impl FnOnce(&mut State) -> R) -> R {
    STATE.with(|s| f(&mut s.borrow_mut()))
}

/// The result of an export: a non-negative value, or an error.
type Res = Result<i32, (Kind, i32, String)>;

/// Runs an export that can fail on the module's state: its value, or `-kind` with the message
/// in the out block (`State::finish`).
fn call(f: impl FnOnce(&mut State) -> Res) -> i32 {
    with(|s| {
        let r = f(s);
        s.finish(r)
    })
}

fn err(kind: Kind, index: i32, message: impl fmt::Display) -> (Kind, i32, String) {
    (kind, index, message.to_string())
}

fn core_err(e: Error) -> (Kind, i32, String) {
    err(kind_of(&e), index_of(&e), e)
}

fn fault_err(fault: Fault, what: &str, index: i32) -> (Kind, i32, String) {
    match fault {
        Fault::Invalid => err(Kind::Freed, index, format!("{what} is not a live handle")),
        Fault::Freed => err(Kind::Freed, index, format!("{what} was freed")),
        Fault::Duplicate => err(Kind::Type, index, format!("{what} is passed twice")),
    }
}

/// The object of a handle (`what`: "the tensor", "the optimizer"), or why it is not live.
fn live<T>(r: Result<T, Fault>, what: &str) -> Result<T, (Kind, i32, String)> {
    r.map_err(|f| fault_err(f, what, -1))
}

fn dtype_of(tag: u32) -> Result<Dtype, (Kind, i32, String)> {
    match tag {
        0..=2 => Ok(DTYPES[tag as usize]),
        TAG_Q8 => Err(err(
            Kind::Type,
            -1,
            "8-bit (q8) momentum is a momentum dtype, not an element type of parameters",
        )),
        _ => Err(err(Kind::Type, -1, format!("unknown dtype tag {tag}"))),
    }
}

/// A momentum dtype tag of the optimizer: an element type, or 8-bit momentum.
fn momentum_of(tag: u32) -> Result<MomentumDtype, (Kind, i32, String)> {
    match tag {
        TAG_Q8 => Ok(MomentumDtype::Q8),
        tag => dtype_of(tag).map(MomentumDtype::from),
    }
}

/// Empties the out block and reserves `bytes` in it.
fn empty_out(out: &mut Vec<u8>, bytes: usize) -> Result<(), (Kind, i32, String)> {
    out.clear();
    out.try_reserve_exact(bytes).map_err(|_| oom(bytes))
}

fn oom(bytes: usize) -> (Kind, i32, String) {
    err(
        Kind::Memory,
        -1,
        format!("out of wasm memory ({bytes} bytes requested)"),
    )
}

impl State {
    /// Returns `r` to JS: the value, or `-kind` with the message in the out block.
    fn finish(&mut self, r: Res) -> i32 {
        match r {
            Ok(v) => v,
            Err((kind, index, message)) => {
                self.out.clear();
                self.out.extend_from_slice(message.as_bytes());
                self.err_index = index;
                -(kind as i32)
            }
        }
    }

    fn group_arg(&self) -> Result<Group, (Kind, i32, String)> {
        GroupBlock::read(&mut Reader { bytes: &self.args })
            .map(|b| b.group)
            .map_err(|m| err(Kind::Type, -1, m))
    }

    fn tensor_new(&mut self, dtype: u32, len: u32) -> Res {
        let dtype = momentum_of(dtype)?;
        let len = len as usize;
        let data = buffer_zeros(dtype, len).ok_or_else(|| oom(storage_bytes(dtype, len)))?;
        self.tensors
            .insert(data)
            .ok_or_else(|| err(Kind::Memory, -1, "too many live tensors"))
    }

    fn tensor_from_f32(&mut self, handle: i32, start: u32, count: u32) -> Res {
        let data = live(self.tensors.get_mut(handle), "the tensor")?;
        let (start, count) = (start as usize, count as usize);
        let data = data
            .elements_mut()
            .ok_or_else(|| not_elements("the tensor", -1))?;
        let len = data.len();
        if start.checked_add(count).is_none_or(|end| end > len) {
            let msg = format!("{count} values from index {start} do not fit in {len} elements");
            return Err(err(Kind::Range, -1, msg));
        }
        let bytes = self
            .args
            .get(..count * 4)
            .ok_or_else(|| err(Kind::Type, -1, "the args block is too short for the values"))?;
        let values: Vec<f32> = bytes
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        match data {
            SliceMut::F32(d) => round_into(&mut d[start..], &values),
            SliceMut::F16(d) => round_into(&mut d[start..], &values),
            SliceMut::Bf16(d) => round_into(&mut d[start..], &values),
        }
        Ok(0)
    }

    fn tensor_to_f32(&mut self, handle: i32) -> Res {
        let data = live(self.tensors.get(handle), "the tensor")?;
        let m = data.as_slice();
        empty_out(&mut self.out, m.len() * 4)?;
        match m.as_slice_ref() {
            Some(SliceRef::F32(v)) => widen_into(&mut self.out, v),
            Some(SliceRef::F16(v)) => widen_into(&mut self.out, v),
            Some(SliceRef::Bf16(v)) => widen_into(&mut self.out, v),
            // 8-bit momentum: each element decoded (its code's value times its block's scale).
            _ => (0..m.len()).filter_map(|i| m.to_f32(i)).for_each(|x| {
                self.out.extend_from_slice(&x.to_le_bytes());
            }),
        }
        Ok(m.len() as i32)
    }

    /// `lion_step`: args = a group block, then `count` × (params, grads, momentum) handles
    /// (i32 each).
    fn step(&mut self, count: u32) -> Res {
        let group = self.group_arg()?;
        let mut r = Reader {
            bytes: self.args.get(GROUP_BLOCK..).unwrap_or_default(),
        };
        let n = count as usize * 3;
        let mut handles = Vec::with_capacity(n);
        for _ in 0..n {
            let h = r
                .i32()
                .ok_or_else(|| err(Kind::Type, -1, "the args block is too short"))?;
            handles.push(h);
        }
        let data = self.tensors.get_many_mut(&handles).map_err(|(at, f)| {
            let what = format!("the {} tensor of update {}", ROLES[at % 3], at / 3);
            fault_err(f, &what, (at / 3) as i32)
        })?;
        let (step, offset) = (group.options.step, group.options.offset);
        let mut it = data.into_iter();
        let mut updates = Vec::with_capacity(count as usize);
        let mut index = 0;
        while let (Some(p), Some(g), Some(m)) = (it.next(), it.next(), it.next()) {
            let role = |r: usize| format!("the {} tensor of update {index}", ROLES[r]);
            let p = p
                .elements_mut()
                .ok_or_else(|| not_elements(&role(0), index))?;
            let g = g.elements().ok_or_else(|| not_elements(&role(1), index))?;
            let u = Update::from_slices(p, g, m.as_mut_slice());
            updates.push(u.step(step).offset(offset));
            index += 1;
        }
        match BACKEND.step_many(&mut updates, &[group]) {
            Ok(Outcome::Applied) => Ok(0),
            Ok(_) => Ok(1),
            Err(e) => Err(core_err(e)),
        }
    }

    fn optimizer(&mut self, handle: i32) -> Result<&mut Lion<Vec<Buffer>>, (Kind, i32, String)> {
        live(self.optimizers.get_mut(handle), "the optimizer")
    }

    fn opt_new(&mut self) -> Res {
        let group = self.group_arg()?;
        let mut opt = Lion::new(group.hp).map_err(core_err)?;
        opt.set_group(GroupId::DEFAULT, group).map_err(core_err)?;
        self.optimizers
            .insert(opt)
            .ok_or_else(|| err(Kind::Memory, -1, "too many live optimizers"))
    }

    /// `lion_opt_add`: args = length (u64), stream (u64), group (u32), has stream (u32: 0, 1),
    /// momentum dtype (u32), params dtype (u32, 255: any), name length (u32, `u32::MAX`: none),
    /// the name's UTF-8 bytes.
    fn opt_add(&mut self, handle: i32) -> Res {
        let short = || {
            err(
                Kind::Type,
                -1,
                "the args block is too short for a tensor spec",
            )
        };
        let mut r = Reader { bytes: &self.args };
        let len = r.u64().ok_or_else(short)?;
        let stream = r.u64().ok_or_else(short)?;
        let group = r.u32().ok_or_else(short)?;
        let has_stream = r.u32().ok_or_else(short)? != 0;
        let momentum = momentum_of(r.u32().ok_or_else(short)?)?;
        let params = match r.u32().ok_or_else(short)? {
            TAG_ANY => None,
            tag => Some(dtype_of(tag)?),
        };
        let name = match r.u32().ok_or_else(short)? {
            u32::MAX => None,
            n => {
                let bytes = r.bytes(n as usize).ok_or_else(short)?;
                let name = std::str::from_utf8(bytes)
                    .map_err(|_| err(Kind::Type, -1, "the name is not UTF-8"))?;
                Some(name.to_owned())
            }
        };
        let len = usize::try_from(len).map_err(|_| err(Kind::Range, -1, "length too large"))?;
        let mut spec = TensorSpec::new(len)
            .momentum(momentum)
            .group(GroupId::new(group as usize));
        if let Some(p) = params {
            spec = spec.params(p);
        }
        if let Some(name) = &name {
            spec = spec.name(name);
        }
        if has_stream {
            spec = spec.stream(stream);
        }
        let bytes = storage_bytes(momentum, len);
        let opt = self.optimizer(handle)?;
        // The core allocates with `vec!` (a failed allocation would trap): check first that
        // the memory can grow that much.
        let mut probe: Vec<u8> = Vec::new();
        probe.try_reserve_exact(bytes).map_err(|_| oom(bytes))?;
        drop(probe);
        let id = opt.add(spec).map_err(core_err)?;
        Ok(id.index() as i32)
    }

    /// `lion_opt_step`: args = `count` × (tensor id, params handle, grads handle) (i32 each).
    fn opt_step(&mut self, handle: i32, count: u32) -> Res {
        let short = || err(Kind::Type, -1, "the args block is too short");
        let mut r = Reader { bytes: &self.args };
        let (mut ids, mut handles) = (Vec::new(), Vec::new());
        for _ in 0..count {
            let id = r.u32().ok_or_else(short)?;
            ids.push(TensorId::new(id as usize));
            handles.push(r.i32().ok_or_else(short)?);
            handles.push(r.i32().ok_or_else(short)?);
        }
        let opt = live(self.optimizers.get_mut(handle), "the optimizer")?;
        let data = self.tensors.get_many_mut(&handles).map_err(|(at, f)| {
            let id = ids[at / 2].index();
            let what = format!("the {} tensor of tensor {id}", ROLES[at % 2]);
            fault_err(f, &what, id as i32)
        })?;
        let mut it = data.into_iter();
        let mut tensors = Vec::with_capacity(count as usize);
        for &id in &ids {
            let (Some(p), Some(g)) = (it.next(), it.next()) else {
                break;
            };
            let role = |r: usize| format!("the {} tensor of tensor {}", ROLES[r], id.index());
            let index = id.index() as i32;
            let p = p
                .elements_mut()
                .ok_or_else(|| not_elements(&role(0), index))?;
            let g = g.elements().ok_or_else(|| not_elements(&role(1), index))?;
            tensors.push(Tensor::from_slices(p, g).of(id));
        }
        match opt.step(&mut tensors) {
            Ok(Outcome::Applied) => Ok(0),
            Ok(_) => Ok(1),
            Err(e) => Err(err(kind_of(&e), index_of(&e), opt.describe(&e))),
        }
    }

    fn opt_save(&mut self, handle: i32) -> Res {
        let opt = live(self.optimizers.get(handle), "the optimizer")?;
        let len = opt.state_len();
        empty_out(&mut self.out, len)?;
        self.out.resize(len, 0);
        let written = opt.save_state(&mut self.out).map_err(core_err)?;
        i32::try_from(written).map_err(|_| err(Kind::Memory, -1, "checkpoint over 2 GiB"))
    }

    fn opt_load(&mut self, handle: i32, len: u32) -> Res {
        let opt = live(self.optimizers.get_mut(handle), "the optimizer")?;
        let bytes = self.args.get(..len as usize).ok_or_else(|| {
            err(
                Kind::Type,
                -1,
                "the args block is too short for the checkpoint",
            )
        })?;
        opt.load_state(bytes).map_err(core_err)?;
        Ok(0)
    }
}

/// The version of this interface ([`ABI`]).
#[unsafe(no_mangle)]
pub extern "C" fn lion_abi() -> u32 {
    ABI
}

/// 1 if this build uses wasm simd128 instructions, else 0.
#[unsafe(no_mangle)]
pub extern "C" fn lion_simd() -> u32 {
    u32::from(cfg!(target_feature = "simd128"))
}

/// 1 if this build's optimizer supports 8-bit (q8) momentum (every build of this version does).
#[unsafe(no_mangle)]
pub extern "C" fn lion_q8() -> u32 {
    1
}

/// The args block, grown to at least `len` bytes (this may grow the memory); its address, or 0
/// if the memory cannot grow.
#[unsafe(no_mangle)]
pub extern "C" fn lion_args(len: u32) -> u32 {
    with(|s| {
        let len = len as usize;
        if s.args.len() < len {
            if s.args.try_reserve_exact(len - s.args.len()).is_err() {
                return 0;
            }
            s.args.resize(len, 0);
        }
        s.args.as_ptr() as usize as u32
    })
}

/// The address of the out block.
#[unsafe(no_mangle)]
pub extern "C" fn lion_out() -> u32 {
    with(|s| s.out.as_ptr() as usize as u32)
}

/// The length of the out block in bytes.
#[unsafe(no_mangle)]
pub extern "C" fn lion_out_len() -> u32 {
    with(|s| s.out.len() as u32)
}

/// The index of the update or tensor the last error concerns, or -1.
#[unsafe(no_mangle)]
pub extern "C" fn lion_err_index() -> i32 {
    with(|s| s.err_index)
}

/// A new tensor of `len` zeros of dtype `dtype` (0 f32, 1 f16, 2 bf16): its handle.
#[unsafe(no_mangle)]
pub extern "C" fn lion_tensor_new(dtype: u32, len: u32) -> i32 {
    call(|s| s.tensor_new(dtype, len))
}

/// Frees a tensor; its handle is invalid from now on.
#[unsafe(no_mangle)]
pub extern "C" fn lion_tensor_free(handle: i32) -> i32 {
    call(|s| live(s.tensors.remove(handle), "the tensor").map(|_| 0))
}

/// The address of a tensor's first element, or of its codes if it is 8-bit momentum (0 if the
/// handle is not live).
#[unsafe(no_mangle)]
pub extern "C" fn lion_tensor_ptr(handle: i32) -> u32 {
    tensor_address(handle, momentum_address)
}

/// The address of the block scales (f32, one per 256 elements) of an 8-bit tensor (0 if it is
/// not one, or the handle is not live).
#[unsafe(no_mangle)]
pub extern "C" fn lion_tensor_absmax(handle: i32) -> u32 {
    tensor_address(handle, absmax_address)
}

/// Sets `count` elements from index `start` to the f32 values in the args block, rounded to the
/// tensor's dtype as a step rounds (to nearest, ties to even).
#[unsafe(no_mangle)]
pub extern "C" fn lion_tensor_from_f32(handle: i32, start: u32, count: u32) -> i32 {
    call(|s| s.tensor_from_f32(handle, start, count))
}

/// Writes the tensor's elements widened to f32 (exactly) into the out block; returns the count.
#[unsafe(no_mangle)]
pub extern "C" fn lion_tensor_to_f32(handle: i32) -> i32 {
    call(|s| s.tensor_to_f32(handle))
}

/// One Lion step over `count` updates with one group's settings (`lion_optim::step_many`):
/// args = a group block ([`GROUP_BLOCK`] bytes; its `step` and `offset` apply to every update),
/// then per update the handles of its params, grads and momentum (i32 each). Returns 0
/// (applied) or 1 (skipped: a non-finite gradient with `skip_non_finite`).
#[unsafe(no_mangle)]
pub extern "C" fn lion_step(count: u32) -> i32 {
    call(|s| s.step(count))
}

/// A new optimizer (`Lion::new`) whose group 0 has the settings of the group block in the args.
#[unsafe(no_mangle)]
pub extern "C" fn lion_opt_new() -> i32 {
    call(|s| s.opt_new())
}

/// Frees an optimizer and its momentum.
#[unsafe(no_mangle)]
pub extern "C" fn lion_opt_free(handle: i32) -> i32 {
    call(|s| live(s.optimizers.remove(handle), "the optimizer").map(|_| 0))
}

/// Adds a parameter group (the group block in the args); returns its id.
#[unsafe(no_mangle)]
pub extern "C" fn lion_opt_add_group(handle: i32) -> i32 {
    call(|s| {
        let g = s.group_arg()?;
        let id = s.optimizer(handle)?.add_group(g).map_err(core_err)?;
        Ok(id.index() as i32)
    })
}

/// Replaces the settings of group `group` with the group block in the args.
#[unsafe(no_mangle)]
pub extern "C" fn lion_opt_set_group(handle: i32, group: u32) -> i32 {
    call(|s| {
        let g = s.group_arg()?;
        let opt = s.optimizer(handle)?;
        opt.set_group(GroupId::new(group as usize), g)
            .map_err(core_err)?;
        Ok(0)
    })
}

/// Writes the settings of group `group` as a group block into the out block.
#[unsafe(no_mangle)]
pub extern "C" fn lion_opt_group(handle: i32, group: u32) -> i32 {
    call(|s| {
        let g = *s
            .optimizer(handle)?
            .group(GroupId::new(group as usize))
            .map_err(core_err)?;
        s.out.clear();
        GroupBlock::write(&g, &mut s.out);
        Ok(0)
    })
}

/// Sets the learning-rate scale of every group (`Lion::set_lr_scale`).
#[unsafe(no_mangle)]
pub extern "C" fn lion_opt_set_lr_scale(handle: i32, scale: f64) -> i32 {
    call(|s| {
        s.optimizer(handle)
            .and_then(|opt| opt.set_lr_scale(scale).map_err(core_err).map(|()| 0))
    })
}

/// A counter of the optimizer as f64: 0 steps, 1 skipped steps, 2 the learning-rate scale,
/// 3 the number of tensors, 4 the number of groups. NaN if the handle is not live.
#[unsafe(no_mangle)]
pub extern "C" fn lion_opt_info(handle: i32, what: u32) -> f64 {
    with(|s| match s.optimizers.get(handle) {
        Err(_) => f64::NAN,
        Ok(opt) => match what {
            0 => opt.steps() as f64,
            1 => opt.skipped_steps() as f64,
            2 => opt.lr_scale(),
            3 => opt.tensor_count() as f64,
            4 => opt.group_count() as f64,
            _ => f64::NAN,
        },
    })
}

/// Adds a tensor (the spec in the args, see `State::opt_add`); returns its id.
#[unsafe(no_mangle)]
pub extern "C" fn lion_opt_add(handle: i32) -> i32 {
    call(|s| s.opt_add(handle))
}

/// The address of the momentum of tensor `id`: its elements, or its codes for 8-bit momentum
/// (0 if there is no such tensor).
#[unsafe(no_mangle)]
pub extern "C" fn lion_opt_momentum(handle: i32, id: u32) -> u32 {
    opt_momentum_address(handle, id, momentum_address)
}

/// The address of the block scales (f32, one per 256 elements) of tensor `id`'s 8-bit momentum
/// (0 if it has none).
#[unsafe(no_mangle)]
pub extern "C" fn lion_opt_absmax(handle: i32, id: u32) -> u32 {
    opt_momentum_address(handle, id, absmax_address)
}

/// One step of the optimizer (`Lion::step`, keyed by id): args = `count` × (tensor id, params
/// handle, grads handle) (i32 each). Returns 0 (applied) or 1 (skipped).
#[unsafe(no_mangle)]
pub extern "C" fn lion_opt_step(handle: i32, count: u32) -> i32 {
    call(|s| s.opt_step(handle, count))
}

/// Writes the optimizer's compact checkpoint (`Lion::save_state`) into the out block; returns
/// its length.
#[unsafe(no_mangle)]
pub extern "C" fn lion_opt_save(handle: i32) -> i32 {
    call(|s| s.opt_save(handle))
}

/// Loads a compact checkpoint of `len` bytes from the args block (`Lion::load_state`).
#[unsafe(no_mangle)]
pub extern "C" fn lion_opt_load(handle: i32, len: u32) -> i32 {
    call(|s| s.opt_load(handle, len))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn out() -> String {
        with(|s| String::from_utf8(s.out.clone()).unwrap())
    }

    #[test]
    fn handles_are_generational() {
        let mut slab = Slab::new();
        let a = slab.insert(1).unwrap();
        assert_eq!(slab.get(a), Ok(&1));
        assert_eq!(slab.remove(a), Ok(1));
        assert_eq!(slab.get(a), Err(Fault::Freed));
        let b = slab.insert(2).unwrap();
        assert_ne!(a, b);
        assert_eq!(slab.get(a), Err(Fault::Freed));
        assert_eq!(slab.get(0), Err(Fault::Invalid));
        assert_eq!(slab.get(-5), Err(Fault::Invalid));
        assert_eq!(slab.get(1 << 19), Err(Fault::Invalid));
        let c = slab.insert(3).unwrap();
        assert_eq!(slab.get_many_mut(&[b, c]).map(|v| v.len()), Ok(2));
        assert_eq!(
            slab.get_many_mut(&[b, c, b]).err(),
            Some((2, Fault::Duplicate))
        );
    }

    fn group_args(hp: Hyperparams, options: StepOptions) {
        with(|s| {
            s.args.clear();
            GroupBlock::write(&Group::new(hp).with_options(options), &mut s.args);
            assert_eq!(s.args.len(), GROUP_BLOCK);
        });
    }

    #[test]
    fn group_blocks_round_trip() {
        let options = StepOptions {
            maximize: true,
            grad_unscale: Some(0.5),
            weight_decay: WeightDecay::FullyDecoupled { max_lr: 0.1 },
            rounding: Rounding::Stochastic { seed: u64::MAX },
            step: 3,
            offset: 4,
            cautious: Cautious::Shard {
                agreeing: 5,
                numel: 6,
            },
            skip_non_finite: true,
        };
        let g = Group::new(Hyperparams::default()).with_options(options);
        let mut bytes = Vec::new();
        GroupBlock::write(&g, &mut bytes);
        let back = GroupBlock::read(&mut Reader { bytes: &bytes }).unwrap();
        assert_eq!(back.group, g);
    }

    #[test]
    fn stateless_step_matches_reference_and_checks_first() {
        let p = lion_tensor_new(2, 3);
        let g = lion_tensor_new(0, 3);
        let m = lion_tensor_new(1, 3);
        let hp = Hyperparams {
            lr: 0.25,
            ..Hyperparams::default()
        };
        let put = |h: i32, v: [f32; 3]| {
            with(|s| {
                s.args.clear();
                v.iter()
                    .for_each(|x| s.args.extend_from_slice(&x.to_le_bytes()));
            });
            assert_eq!(lion_tensor_from_f32(h, 0, 3), 0);
        };
        put(p, [1.0, 1.0, 1.0]);
        put(g, [1.0, -1.0, 0.0]);
        let handles = |list: &[i32]| {
            with(|s| {
                list.iter()
                    .for_each(|h| s.args.extend_from_slice(&h.to_le_bytes()))
            });
        };
        group_args(hp, StepOptions::default());
        handles(&[p, g, m]);
        assert_eq!(lion_step(1), 0);
        assert_eq!(lion_tensor_to_f32(p), 3);
        let got: Vec<f32> = with(|s| {
            s.out
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
                .collect()
        });
        let (mut rp, mut rm) = ([bf16::ONE; 3], [f16::ZERO; 3]);
        lion_optim::reference::step(&mut rp, &[1.0f32, -1.0, 0.0], &mut rm, &hp).unwrap();
        assert_eq!(got, rp.map(|x| x.to_f32()));

        // The same tensor twice, a freed tensor, a bad hyperparameter: errors, nothing written.
        group_args(hp, StepOptions::default());
        handles(&[p, g, p]);
        assert_eq!(lion_step(1), -(Kind::Type as i32));
        assert_eq!(out(), "the momentum tensor of update 0 is passed twice");
        group_args(Hyperparams { lr: -1.0, ..hp }, StepOptions::default());
        handles(&[p, g, m]);
        assert_eq!(lion_step(1), -(Kind::Range as i32));
        assert!(out().contains("lr"), "{}", out());
        assert_eq!(lion_tensor_free(g), 0);
        group_args(hp, StepOptions::default());
        handles(&[p, g, m]);
        assert_eq!(lion_step(1), -(Kind::Freed as i32));
        assert_eq!(out(), "the grads tensor of update 0 was freed");
        assert_eq!(lion_tensor_free(g), -(Kind::Freed as i32));
        assert_eq!(lion_tensor_to_f32(p), 3);
        assert_eq!(with(|s| s.out[..4].to_vec()), rp[0].to_f32().to_le_bytes());
    }

    #[test]
    fn stateless_q8_step_matches_reference() {
        let n = 300;
        let (p, g, m) = (
            lion_tensor_new(0, n),
            lion_tensor_new(2, n),
            lion_tensor_new(TAG_Q8, n),
        );
        let values = |k: f32| (0..n).map(move |i| ((i as f32) * k).sin());
        let put = |h: i32, v: &[f32]| {
            with(|s| {
                s.args.clear();
                v.iter()
                    .for_each(|x| s.args.extend_from_slice(&x.to_le_bytes()));
            });
            lion_tensor_from_f32(h, 0, v.len() as u32)
        };
        assert_eq!(put(p, &values(0.7).collect::<Vec<_>>()), 0);
        assert_eq!(put(g, &values(1.3).collect::<Vec<_>>()), 0);
        // The codes' tensor holds no elements to set.
        assert_eq!(put(m, &[1.0]), -(Kind::Type as i32));
        let hp = Hyperparams {
            lr: 3e-3,
            weight_decay: 0.1,
            ..Hyperparams::default()
        };
        let mut rp: Vec<f32> = values(0.7).collect();
        let rg: Vec<bf16> = values(1.3).map(bf16::from_f32).collect();
        let (mut codes, mut absmax) = (vec![127u8; n as usize], vec![0.0f32; 2]);
        let handles = |list: &[i32]| {
            with(|s| {
                list.iter()
                    .for_each(|h| s.args.extend_from_slice(&h.to_le_bytes()))
            });
        };
        for step in 1..=2 {
            let options = StepOptions {
                rounding: Rounding::Stochastic { seed: 5 },
                step,
                ..StepOptions::default()
            };
            group_args(hp, options);
            handles(&[p, g, m]);
            assert_eq!(lion_step(1), 0, "{}", out());
            let q = lion_optim::Q8Mut::new(&mut codes, &mut absmax).unwrap();
            lion_optim::reference::step_q8_with(&mut rp, &rg, q, &hp, &options).unwrap();
        }
        let b = with(|s| s.tensors.get(m).unwrap().clone());
        assert_eq!(b, Buffer::Q8 { codes, absmax });
        assert_eq!(with(|s| s.tensors.get(p).unwrap().clone()), Buffer::F32(rp));
        // Decoded to f32: each element its code's value times its block's scale.
        assert_eq!(lion_tensor_to_f32(m), n as i32);
        let decoded = with(|s| s.out.clone());
        for (i, x) in decoded.chunks_exact(4).enumerate() {
            let x = f32::from_le_bytes(x.try_into().unwrap());
            assert_eq!(Some(x), b.as_slice().to_f32(i));
        }
        // 8-bit momentum is no parameter; an offset inside a block is refused.
        group_args(hp, StepOptions::default());
        handles(&[m, g, p]);
        assert_eq!(lion_step(1), -(Kind::Type as i32));
        assert_eq!(
            out(),
            "the params tensor of update 0 holds 8-bit (q8) momentum, not elements: it can only \
             be a momentum"
        );
        let offset = StepOptions {
            offset: 100,
            ..StepOptions::default()
        };
        group_args(hp, offset);
        handles(&[p, g, m]);
        assert_eq!(lion_step(1), -(Kind::Range as i32), "{}", out());
        assert_eq!(with(|s| s.tensors.get(m).unwrap().clone()), b);
    }

    #[test]
    fn optimizer_round_trip() {
        group_args(Hyperparams::default(), StepOptions::default());
        let opt = lion_opt_new();
        assert!(opt > 0, "{}", out());
        with(|s| {
            s.args.clear();
            s.args.extend_from_slice(&4u64.to_le_bytes());
            s.args.extend_from_slice(&0u64.to_le_bytes());
            for x in [0u32, 0, 2, 0, 1] {
                s.args.extend_from_slice(&x.to_le_bytes());
            }
            s.args.push(b'w');
        });
        assert_eq!(lion_opt_add(opt), 0, "{}", out());
        let (p, g) = (lion_tensor_new(0, 4), lion_tensor_new(0, 4));
        with(|s| {
            s.args.clear();
            for x in [0, p, g] {
                s.args.extend_from_slice(&x.to_le_bytes());
            }
        });
        assert_eq!(lion_opt_step(opt, 1), 0, "{}", out());
        assert_eq!(lion_opt_info(opt, 0), 1.0);
        let n = lion_opt_save(opt);
        assert!(n > 0);
        let saved = with(|s| s.out.clone());
        with(|s| s.args = saved[..saved.len() - 1].to_vec());
        assert_eq!(lion_opt_load(opt, n as u32 - 1), -(Kind::State as i32));
        with(|s| s.args = saved.clone());
        assert_eq!(lion_opt_load(opt, n as u32), 0, "{}", out());
        let wrong = lion_tensor_new(0, 3);
        with(|s| {
            s.args.clear();
            for x in [0, wrong, g] {
                s.args.extend_from_slice(&x.to_le_bytes());
            }
        });
        assert_eq!(lion_opt_step(opt, 1), -(Kind::Range as i32));
        assert_eq!(out(), "tensor 0 (\"w\"): params has 3 elements, expected 4");
        assert_eq!(lion_opt_free(opt), 0);
        assert!(lion_opt_info(opt, 0).is_nan());
    }
}
