//! The oracle of the `step` fuzz target (fuzz/fuzz_targets/step.rs), also replayed by
//! tests/suite/fuzz_regressions.rs on every target the test suite runs on.
//!
//! Arbitrary bytes become hyperparameters (valid and invalid: edges of every domain, raw f64
//! bits), step options (the cautious variant, whole or as a shard, included), one of the 27 dtype combinations, lengths (equal or not), misaligned
//! offsets into padded buffers, and values (special values, rounding ties, raw bit patterns,
//! planted exact cancellations `c == 0`). Then:
//!
//! * validity: `reference::step_with` accepts exactly the input the documented rules accept;
//! * every available backend's `step_with` and `step_many` (one update), `lion_optim::step` and
//!   `lion_optim::step_with` give the reference's result: on `Ok`, the same outcome and every
//!   element bit for bit (a NaN matching a NaN), the padding around the slices untouched; on
//!   `Err`, the same error (`step_many`: an error) and every buffer byte untouched;
//! * `cautious_count` of every backend and `SliceRef::cautious_count` give the reference's;
//! * `all_finite` of every backend and `SliceRef::all_finite` follow the scalar rule, and
//!   steps with `skip_non_finite` of every backend skip (writing nothing) exactly when it says
//!   a gradient is not finite, as `reference::step_with` with `skip_non_finite` does.
//!
//! A failed check panics, with a message that says what differed.

use lion_optim::{
    Backend, Cautious, Element, Error, Group, Hyperparams, Outcome, Rounding, SliceRef,
    StepOptions, Update, WeightDecay, bf16, f16, reference,
};
use support::same;

/// Reads the fuzz input front to back; past its end every read gives zeros.
pub struct Bytes<'a>(pub &'a [u8]);

impl Bytes<'_> {
    pub fn u8(&mut self) -> u8 {
        match self.0.split_first() {
            Some((&b, rest)) => {
                self.0 = rest;
                b
            }
            None => 0,
        }
    }
    pub fn u16(&mut self) -> u16 {
        u16::from_le_bytes([self.u8(), self.u8()])
    }
    pub fn u32(&mut self) -> u32 {
        u32::from_le_bytes([self.u8(), self.u8(), self.u8(), self.u8()])
    }
    pub fn u64(&mut self) -> u64 {
        u64::from(self.u32()) | (u64::from(self.u32()) << 32)
    }
    /// Everything not read yet.
    pub fn rest(&mut self) -> &[u8] {
        core::mem::take(&mut self.0)
    }
}

/// Where each slice starts in its padded buffer: 0 to 3 elements in (one byte each, in order).
pub fn misalignments<const N: usize>(r: &mut Bytes) -> [usize; N] {
    core::array::from_fn(|_| usize::from(r.u8() % 4))
}

/// A buffer of `len` elements and 3 more (the padding a step must not write), each read with
/// `read`.
pub fn padded<'a, T>(
    r: &mut Bytes<'a>,
    len: usize,
    mut read: impl FnMut(&mut Bytes<'a>) -> T,
) -> Vec<T> {
    (0..len + 3).map(|_| read(r)).collect()
}

/// Hyperparameter values at and around the edges of every domain.
const PARAMS: [f64; 32] = [
    0.0,
    -0.0,
    1e-4,
    3e-4,
    1e-3,
    0.1,
    0.5,
    0.9,
    0.95,
    0.99,
    0.999,
    0.999_999_9,
    1.0 - f64::EPSILON / 2.0, // the largest f64 below 1
    1.0,
    1.5,
    2.0,
    1e-8,
    1e4,
    1e30,
    1e38,
    f32::MAX as f64,
    3.402_823_567_797_336_6e38, // f32::MAX + half an ulp: rounds to f32 infinity
    3.402_823_567_797_336e38,   // just below: rounds to f32::MAX
    1e39,
    f64::MAX,
    f64::INFINITY,
    f64::NAN,
    f64::MIN_POSITIVE,
    5e-324,
    1e-45, // rounds to the smallest f32 subnormal
    -1e-9,
    65504.0,
];

pub fn param(r: &mut Bytes) -> f64 {
    let tag = r.u8();
    match tag % 8 {
        0..=3 => PARAMS[usize::from(r.u8()) % PARAMS.len()],
        4 => -PARAMS[usize::from(r.u8()) % PARAMS.len()],
        5 => f64::from_bits(r.u64()),
        // m * 10^e: any magnitude a schedule produces
        6 => f64::from(r.u16()) * 10f64.powi(i32::from(r.u8() % 48) - 40),
        // 1 - 2^-k: betas close to 1
        _ => 1.0 - 2f64.powi(-i32::from(r.u8() % 64)),
    }
}

pub fn options(r: &mut Bytes) -> StepOptions {
    let flags = r.u8();
    let mut o = StepOptions {
        maximize: flags & 1 != 0,
        ..StepOptions::default()
    };
    if flags & 2 != 0 {
        o.grad_unscale = Some(match r.u8() % 3 {
            0 => 2f64.powi(i32::from(r.u8() % 64) - 32),
            _ => param(r),
        });
    }
    if flags & 4 != 0 {
        o.weight_decay = WeightDecay::FullyDecoupled { max_lr: param(r) };
    }
    if flags & 8 != 0 {
        o.rounding = Rounding::Stochastic { seed: r.u64() };
        o.step = r.u64();
    }
    o.offset = match (flags >> 4) % 4 {
        0 => u64::from(r.u8()),
        1 => (1u64 << 32) - u64::from(r.u16()), // the stream key changes at 2^32
        2 => u64::MAX - u64::from(r.u16()),     // offset + len may overflow: Err
        _ => r.u64(),
    };
    o.cautious = match flags >> 6 {
        0 => Cautious::Off,
        1 => Cautious::Whole,
        // A shard's count and size: valid or not (agreeing > numel, numel < offset + len).
        2 => Cautious::Shard {
            agreeing: u64::from(r.u16()),
            numel: o.offset.saturating_add(u64::from(r.u16())),
        },
        _ => Cautious::Shard {
            agreeing: r.u64(),
            numel: r.u64(),
        },
    };
    o
}

/// f32 values where things go wrong (see tests/suite/common/mod.rs).
const SPECIALS: [u32; 32] = [
    0x0000_0000,
    0x8000_0000,
    0x3f80_0000,
    0xbf80_0000,
    0x3f00_0000,
    0x0080_0000,
    0x0000_0001,
    0x8000_0001,
    0x0040_0000,
    0x7f7f_ffff,
    0xff7f_ffff,
    0x7f80_0000,
    0xff80_0000,
    0x7fc0_0000,
    0xffc0_0000,
    0x7f80_0001,
    0xffc0_1234,
    0x477f_e000, // 65504
    0x477f_f000, // 65520: f16 overflow
    0x477f_efff,
    0x3880_0000, // 2^-14
    0x3380_0000, // 2^-24
    0x3300_0000, // 2^-25
    0x3f80_8000, // bf16 tie
    0x3f81_8000, // bf16 tie
    0x3f80_1000, // f16 tie
    0x3f80_3000, // f16 tie
    0x7f7f_8000, // bf16 overflow edge
    0x38d1_b717, // 1e-4
    0xb8d1_b717,
    0x7149_f2ca, // 1e30
    0x3dcc_cccd, // 0.1
];

pub fn value<T: Element>(r: &mut Bytes) -> T {
    let sel = r.u8();
    if sel < 96 {
        T::from_f32_rounded(f32::from_bits(SPECIALS[usize::from(sel) % SPECIALS.len()]))
    } else if sel < 160 {
        T::from_f32_rounded(f32::from(r.u8() as i8) / 16.0)
    } else {
        let bits = r.u32().to_le_bytes();
        bytemuck::pod_read_unaligned(&bits[..size_of::<T>()])
    }
}

/// Sets some momenta so that `m * beta1 + g * (1 - beta1)` is exactly zero in f32.
fn plant_cancellations<G: Element, M: Element>(
    g: &[G],
    m: &mut [M],
    hp: &Hyperparams,
    r: &mut Bytes,
) {
    let (b1, omb1) = (hp.beta1 as f32, (1.0 - hp.beta1) as f32);
    if !(b1 > 0.0 && b1.is_finite() && omb1.is_finite()) {
        return;
    }
    for (gi, mi) in g.iter().zip(m.iter_mut()) {
        let t = gi.to_f32_exact() * omb1;
        if r.u8() & 1 == 0 || !t.is_finite() {
            continue;
        }
        let guess = M::from_f32_rounded(-t / b1);
        for d in [0i32, 1, -1, 2, -2] {
            let cand = step_bits(guess, d);
            if cand.to_f32_exact() * b1 + t == 0.0 {
                *mi = cand;
                break;
            }
        }
    }
}

/// The element `d` bit patterns away from `x` (as an unsigned integer of its width).
fn step_bits<T: Element>(x: T, d: i32) -> T {
    if size_of::<T>() == 4 {
        let b: u32 = bytemuck::cast(bytemuck::cast::<T, [u8; 4]>(x));
        bytemuck::cast(bytemuck::cast::<u32, [u8; 4]>(b.wrapping_add(d as u32)))
    } else {
        let b: u16 = bytemuck::pod_read_unaligned(bytemuck::bytes_of(&x));
        bytemuck::pod_read_unaligned(bytemuck::bytes_of(&b.wrapping_add(d as u16)))
    }
}

/// Whether two buffers hold the same bytes (nothing written: NaN payloads and -0 included).
pub fn bytes_equal<T: Element>(a: &[T], b: &[T]) -> bool {
    bytemuck::cast_slice::<T, u8>(a) == bytemuck::cast_slice::<T, u8>(b)
}

/// Asserts that `got` is `want` bit for bit (a NaN matching a NaN), naming the first element
/// that is not: `"{who}: {what} {i} is .., the reference's ..: {ctx}"`.
pub fn assert_same<T: Element>(
    got: &[T],
    want: &[T],
    who: &str,
    what: &str,
    ctx: &dyn Fn() -> String,
) {
    for (i, (a, b)) in got.iter().zip(want).enumerate() {
        assert!(
            same(*a, *b),
            "{who}: {what} {i} is {a:?}, the reference's {b:?}: {}",
            ctx()
        );
    }
}

/// The documented rules of the options alone (src/options.rs).
pub fn options_valid(o: &StepOptions) -> bool {
    let max_lr_ok = match o.weight_decay {
        WeightDecay::Paper => true,
        WeightDecay::FullyDecoupled { max_lr } => max_lr.is_finite() && max_lr > 0.0,
    };
    let unscale_ok = o
        .grad_unscale
        .is_none_or(|s| s.is_finite() && (s as f32).is_finite() && s as f32 > 0.0);
    let shard_ok = match o.cautious {
        Cautious::Shard { agreeing, numel } => agreeing <= numel && o.offset <= numel,
        _ => true,
    };
    max_lr_ok && unscale_ok && shard_ok
}

/// The documented rules (src/hyper.rs, src/options.rs), written independently of the crate.
pub fn expect_valid(hp: &Hyperparams, o: &StepOptions, lens: [usize; 3]) -> bool {
    let f32_finite = |x: f64| (x as f32).is_finite();
    let lr_ok = hp.lr.is_finite() && hp.lr >= 0.0 && f32_finite(hp.lr);
    let beta_ok = |b: f64| (0.0..1.0).contains(&b);
    let wd_ok = hp.weight_decay.is_finite() && hp.weight_decay >= 0.0;
    let end = o.offset.checked_add(lens[0] as u64);
    let offset_ok = end.is_some();
    let shard_ok = match o.cautious {
        Cautious::Shard { agreeing, numel } => {
            agreeing <= numel && end.is_some_and(|end| end <= numel)
        }
        _ => true,
    };
    let decay = match o.weight_decay {
        WeightDecay::Paper => 1.0 - hp.lr * hp.weight_decay,
        WeightDecay::FullyDecoupled { max_lr } => 1.0 - hp.weight_decay * hp.lr / max_lr,
    };
    let lengths_ok = lens[0] == lens[1] && lens[0] == lens[2];
    lr_ok
        && beta_ok(hp.beta1)
        && beta_ok(hp.beta2)
        && wd_ok
        && options_valid(o)
        && offset_ok
        && shard_ok
        && decay >= 0.0
        && lengths_ok
}

/// The scalar rule of `all_finite`: every `f32(g) * f32(unscale)` is finite.
fn finite_rule<G: Element>(g: &[G], o: &StepOptions) -> bool {
    let s = o.grad_unscale.map(|s| s as f32);
    g.iter().all(|x| {
        let x = x.to_f32_exact();
        s.map_or(x, |s| x * s).is_finite()
    })
}

/// Decodes `data` and checks every backend against the reference (see the module docs).
pub fn check(data: &[u8]) {
    let mut r = Bytes(data);
    let which = r.u8() % 27;
    let t = [which / 9, which / 3 % 3, which % 3];
    macro_rules! by_dtype {
        ($i:expr, $f:ident::<$($t:ty),*>) => {
            match t[$i] {
                0 => $f::<$($t,)* f32>,
                1 => $f::<$($t,)* f16>,
                _ => $f::<$($t,)* bf16>,
            }
        };
    }
    // One generic instantiation per combination, picked at run time.
    let run: fn(&mut Bytes) = match t[0] {
        0 => match t[1] {
            0 => by_dtype!(2, combo::<f32, f32>),
            1 => by_dtype!(2, combo::<f32, f16>),
            _ => by_dtype!(2, combo::<f32, bf16>),
        },
        1 => match t[1] {
            0 => by_dtype!(2, combo::<f16, f32>),
            1 => by_dtype!(2, combo::<f16, f16>),
            _ => by_dtype!(2, combo::<f16, bf16>),
        },
        _ => match t[1] {
            0 => by_dtype!(2, combo::<bf16, f32>),
            1 => by_dtype!(2, combo::<bf16, f16>),
            _ => by_dtype!(2, combo::<bf16, bf16>),
        },
    };
    run(&mut r);
}

fn combo<P: Element, G: Element, M: Element>(r: &mut Bytes) {
    let hp = Hyperparams {
        lr: param(r),
        beta1: param(r),
        beta2: param(r),
        weight_decay: param(r),
    };
    let o = options(r);
    let shape = r.u8();
    // Long slices reach the unrolled loops of the widest backends; Miri (which interprets every
    // instruction) gets short ones.
    let (long, short) = if cfg!(miri) { (40, 24) } else { (4200, 256) };
    let len = if shape & 0x80 != 0 {
        usize::from(r.u16() % long)
    } else {
        usize::from(r.u8()) % short
    };
    let mut lens = [len; 3];
    if shape & 0x70 == 0x70 {
        // Mismatched lengths, now and then.
        let which = 1 + usize::from(shape & 1);
        lens[which] = (len + usize::from(r.u8() % 5)).saturating_sub(2);
    }
    let starts: [usize; 3] = misalignments(r);
    let p0: Vec<P> = padded(r, starts[0] + lens[0], value);
    let g: Vec<G> = padded(r, starts[1] + lens[1], value);
    let mut m0: Vec<M> = padded(r, starts[2] + lens[2], value);
    if shape & 0x08 != 0 {
        plant_cancellations(&g, &mut m0, &hp, r);
    }
    let rp = starts[0]..starts[0] + lens[0];
    let rg = starts[1]..starts[1] + lens[1];
    let rm = starts[2]..starts[2] + lens[2];
    let gs = &g[rg];
    let ctx = || {
        format!(
            "P={:?} G={:?} M={:?} lens {lens:?} starts {starts:?} {hp:?} {o:?}",
            P::DTYPE,
            G::DTYPE,
            M::DTYPE
        )
    };

    // The reference on copies of the buffers: its result and the buffers as it leaves them.
    let on_copies = |opts: &StepOptions| {
        let (mut p, mut m) = (p0.clone(), m0.clone());
        let got = reference::step_with(&mut p[rp.clone()], gs, &mut m[rm.clone()], &hp, opts);
        (got, p, m)
    };
    let (want, p_want, m_want) = on_copies(&o);
    assert_eq!(
        want.is_ok(),
        expect_valid(&hp, &o, lens),
        "reference::step_with gave {want:?} for {}",
        ctx()
    );
    if want.is_err() {
        assert!(
            bytes_equal(&p_want, &p0) && bytes_equal(&m_want, &m0),
            "reference::step_with wrote before refusing: {}",
            ctx()
        );
    }
    let same_result = |got: &Result<Outcome, Error>, who: &str| {
        // Errors carry f64 values (NaN too): compare their Debug text.
        assert_eq!(
            format!("{got:?}"),
            format!("{want:?}"),
            "{who} differs from the reference: {}",
            ctx()
        );
    };
    let same_buffers = |p: &[P], m: &[M], who: &str| {
        assert_same(p, &p_want, who, "param", &ctx);
        assert_same(m, &m_want, who, "momentum", &ctx);
    };
    let untouched = |p: &[P], m: &[M], who: &str| {
        assert!(
            bytes_equal(p, &p0) && bytes_equal(m, &m0),
            "{who} wrote: {}",
            ctx()
        );
    };

    // The reference's own skipping step: skips exactly when the scalar rule says a gradient is
    // not finite, and writes nothing then.
    let finite = finite_rule(gs, &o);
    let guarded = StepOptions {
        skip_non_finite: true,
        ..o
    };
    let (want_guarded, p_skip, m_skip) = on_copies(&guarded);
    match (&want, &want_guarded) {
        (Err(_), g) => {
            assert_eq!(format!("{g:?}"), format!("{want:?}"), "skipping: {}", ctx());
            untouched(&p_skip, &m_skip, "a refused reference::step_with");
        }
        (Ok(_), Ok(Outcome::Applied)) if finite => same_buffers(&p_skip, &m_skip, "guarded"),
        (Ok(_), Ok(Outcome::SkippedNonFinite)) if !finite => {
            untouched(&p_skip, &m_skip, "a skipped reference::step_with")
        }
        (_, g) => panic!(
            "reference::step_with skipping gave {g:?} (finite: {finite}): {}",
            ctx()
        ),
    }

    for &backend in Backend::ALL.iter().filter(|b| b.is_available()) {
        let name = backend.name();
        let (mut p, mut m) = (p0.clone(), m0.clone());
        let got = backend.step_with(&mut p[rp.clone()], gs, &mut m[rm.clone()], &hp, &o);
        same_result(&got, name);
        same_buffers(&p, &m, name);

        // The same step as the only update of a `step_many` (stream 0: the group's own seed).
        let (mut p, mut m) = (p0.clone(), m0.clone());
        let group = Group { hp, options: o };
        let update = Update::new(&mut p[rp.clone()], gs, &mut m[rm.clone()])
            .step(o.step)
            .offset(o.offset)
            .stream(0);
        let got = backend.step_many(&mut [update], &[group]);
        match (&want, got) {
            (Ok(w), Ok(g)) => {
                assert_eq!(*w, g, "{name}: step_many: {}", ctx());
                same_buffers(&p, &m, name);
            }
            (Err(_), Err(_)) => untouched(&p, &m, "a refused step_many"),
            (w, g) => panic!("{name}: step_many gave {g:?}, step_with {w:?}: {}", ctx()),
        }

        if want.is_ok() {
            let got = backend.cautious_count(gs, &m0[rm.clone()], &hp, &o);
            let count = reference::cautious_count(gs, &m0[rm.clone()], &hp, &o);
            assert_eq!(got, count, "{backend}: cautious_count: {}", ctx());
        }

        let got_finite = backend.all_finite(gs, &o);
        assert_eq!(
            got_finite,
            finite && options_valid(&o),
            "{backend}: all_finite: {}",
            ctx()
        );

        let (mut p, mut m) = (p0.clone(), m0.clone());
        let got = backend.step_with(&mut p[rp.clone()], gs, &mut m[rm.clone()], &hp, &guarded);
        assert_eq!(
            format!("{got:?}"),
            format!("{want_guarded:?}"),
            "{backend}: skipping step: {}",
            ctx()
        );
        same_buffers_as(&p, &m, &p_skip, &m_skip, &|| {
            format!("{backend} skipping: {}", ctx())
        });
    }

    // The run-time-typed forms.
    let (g_dyn, m_dyn) = (SliceRef::from(gs), SliceRef::from(&m0[rm.clone()]));
    assert_eq!(
        g_dyn.all_finite(&o),
        finite && options_valid(&o),
        "SliceRef::all_finite: {}",
        ctx()
    );
    if want.is_ok() {
        let count = reference::cautious_count(gs, &m0[rm.clone()], &hp, &o);
        assert_eq!(
            g_dyn.cautious_count(m_dyn, &hp, &o),
            count,
            "SliceRef::cautious_count: {}",
            ctx()
        );
    }

    if o == StepOptions::default() {
        let (mut p, mut m) = (p0.clone(), m0.clone());
        let got = lion_optim::step(&mut p[rp.clone()], gs, &mut m[rm.clone()], &hp);
        same_result(&got.map(|()| Outcome::Applied), "lion_optim::step");
        same_buffers(&p, &m, "lion_optim::step");
    }
    let (mut p, mut m) = (p0.clone(), m0.clone());
    let got = lion_optim::step_with(&mut p[rp], gs, &mut m[rm], &hp, &o);
    same_result(&got, "lion_optim::step_with");
    same_buffers(&p, &m, "lion_optim::step_with");
}

/// Bit for bit (a NaN matching a NaN), padding included.
fn same_buffers_as<P: Element, M: Element>(
    p: &[P],
    m: &[M],
    p_want: &[P],
    m_want: &[M],
    ctx: &dyn Fn() -> String,
) {
    let ok = p.iter().zip(p_want).all(|(a, b)| same(*a, *b))
        && m.iter().zip(m_want).all(|(a, b)| same(*a, *b));
    assert!(ok, "{} differs from the reference", ctx());
}
