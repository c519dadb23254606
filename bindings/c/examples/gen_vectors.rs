//! Test vectors for the C tests (`bindings/c/tests/*.c`), computed by the crate's specification
//! (`lion::reference`), never through the C ABI:
//!
//! ```text
//! cargo run --release -p lion-optim-c --example gen_vectors -- OUT_DIR
//! ```
//!
//! writes `OUT_DIR/stateless.vec` (every dtype combination x hyperparameter sets x option sets x
//! lengths: inputs, the expected status, parameters, momentum, cautious count and finiteness)
//! and `OUT_DIR/handle.vec` (a `Lion` with two groups and named tensors of mixed dtypes, trained
//! for a few steps: its setup, every step's gradients, the expected parameters after each
//! step, the expected checkpoint) and `OUT_DIR/q8.vec` (8-bit momentum: every parameter x
//! gradient dtype x hyperparameter sets x option sets x lengths, by
//! `reference::step_q8_with`). The formats are little-endian and read by
//! `bindings/c/tests/vectors.h`.

use std::error::Error;
use std::path::PathBuf;

use lion::{
    Backend, Buffer, Cautious, Dtype, Element, Group, GroupId, Hyperparams, Lion, MomentumDtype,
    Q8_BLOCK, Q8Mut, Q8Ref, Rounding, StepOptions, Tensor, TensorId, TensorSpec, WeightDecay, bf16,
    f16, reference,
};
use lion_optim::status::LionStatus;
use support::{Rng, SPECIAL_F32, hyperparams, option_sets, plant_cancellations};

/// A little-endian byte writer.
#[derive(Default)]
struct Out(Vec<u8>);

impl Out {
    fn u32(&mut self, v: u32) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn i32(&mut self, v: i32) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn u64(&mut self, v: u64) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn f64(&mut self, v: f64) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn elements<T: Element>(&mut self, v: &[T]) {
        self.0.extend_from_slice(bytemuck_bytes(v));
    }
    /// Hyperparameters and options as the C structs' fields (see `vectors.h`).
    fn settings(&mut self, hp: &Hyperparams, o: &Settings) {
        for v in [hp.lr, hp.beta1, hp.beta2, hp.weight_decay] {
            self.f64(v);
        }
        let s = &o.options;
        self.i32(s.maximize.into());
        self.i32(s.skip_non_finite.into());
        let (rounding, seed) = match s.rounding {
            Rounding::Stochastic { seed } => (1, seed),
            _ => (0, 0),
        };
        let (cautious, agreeing, numel) = match s.cautious {
            Cautious::Off => (0, 0, 0),
            Cautious::Whole => (1, 0, 0),
            Cautious::Shard { agreeing, numel } => (2, agreeing, numel),
        };
        self.i32(rounding);
        self.i32(cautious);
        self.f64(s.grad_unscale.unwrap_or(0.0));
        self.f64(match s.weight_decay {
            WeightDecay::FullyDecoupled { max_lr } => max_lr,
            _ => 0.0,
        });
        for v in [seed, s.step, s.offset, o.stream, agreeing, numel] {
            self.u64(v);
        }
    }
}

/// The bytes of a slice of elements (all three are plain old data).
fn bytemuck_bytes<T: Element>(v: &[T]) -> &[u8] {
    // SAFETY: f32, f16 and bf16 have no padding and no invalid bit patterns; the length is the
    // slice's size in bytes.
    unsafe { std::slice::from_raw_parts(v.as_ptr().cast::<u8>(), std::mem::size_of_val(v)) }
}

/// Options of a stateless call: the core's, and the stream the C options carry.
#[derive(Clone, Copy)]
struct Settings {
    options: StepOptions,
    stream: u64,
}

/// The options the reference runs with: the stream mixed into the seed, as `lion_step`
/// documents (`seed ^ stream * 0x9e3779b97f4a7c15`).
fn reference_options(s: &Settings) -> StepOptions {
    let rounding = match s.options.rounding {
        Rounding::Stochastic { seed } => Rounding::Stochastic {
            seed: seed ^ s.stream.wrapping_mul(0x9e37_79b9_7f4a_7c15),
        },
        r => r,
    };
    StepOptions {
        rounding,
        ..s.options
    }
}

fn dtype_code(d: Dtype) -> i32 {
    match d {
        Dtype::F32 => 0,
        Dtype::F16 => 1,
        Dtype::Bf16 => 2,
    }
}

fn momentum_code(d: MomentumDtype) -> i32 {
    match d.element() {
        Some(e) => dtype_code(e),
        None => 3,
    }
}

fn status(e: &lion::Error) -> i32 {
    LionStatus::of(e) as i32
}

/// `len` random values with special values among them.
fn random_values<T: Element>(rng: &mut Rng, len: usize) -> Vec<T> {
    (0..len)
        .map(|_| support::value(rng, &SPECIAL_F32))
        .collect()
}

/// One time in `one_in`: every gradient replaced by a finite one in [-1, 1).
fn mostly_finite<G: Element>(rng: &mut Rng, g: &mut [G], one_in: usize) {
    if rng.below(one_in) == 0 {
        g.iter_mut()
            .for_each(|x| *x = G::from_f32_rounded(rng.uniform() * 2.0 - 1.0));
    }
}

/// A step's status as the vectors store it: 0 applied, 1 skipped, else the error's status.
fn step_status(r: Result<lion::Outcome, lion::Error>) -> i32 {
    match r {
        Ok(lion::Outcome::Applied) => 0,
        Ok(_) => 1,
        Err(e) => status(&e),
    }
}

/// One stateless case of types (P, G, M): random inputs with special values, the reference's
/// step, count and finiteness.
fn case<P: Element, G: Element, M: Element>(
    out: &mut Out,
    rng: &mut Rng,
    len: usize,
    hp: &Hyperparams,
    s: &Settings,
) {
    let mut p: Vec<P> = random_values(rng, len);
    let mut g: Vec<G> = random_values(rng, len);
    // Mostly finite gradients too, so that skip_non_finite steps happen.
    mostly_finite(rng, &mut g, 3);
    let mut m: Vec<M> = random_values(rng, len);
    plant_cancellations(&g, &mut m, hp, rng);
    for d in [P::DTYPE, G::DTYPE, M::DTYPE] {
        out.i32(dtype_code(d));
    }
    out.u64(len as u64);
    out.settings(hp, s);
    let opts = reference_options(s);
    let (p0, m0) = (p.clone(), m.clone());
    let st = step_status(reference::step_with(&mut p, &g, &mut m, hp, &opts));
    out.i32(st);
    let (count_status, count) = match reference::cautious_count(&g, &m0, hp, &opts) {
        Ok(n) => (0, n),
        Err(e) => (status(&e), 0),
    };
    out.i32(count_status);
    out.u64(count);
    out.i32(Backend::Scalar.all_finite(&g, &opts).into());
    out.elements(&p0);
    out.elements(&g);
    out.elements(&m0);
    out.elements(&p);
    out.elements(&m);
}

/// The option sets of the stateless cases: the shared fixtures, and stochastic rounding with
/// a stream, with skipping, and a cautious shard at offset 0.
fn settings() -> Vec<Settings> {
    let mut v: Vec<Settings> = option_sets()
        .into_iter()
        .map(|options| Settings { options, stream: 0 })
        .collect();
    let d = StepOptions::default();
    v.push(Settings {
        options: StepOptions {
            rounding: Rounding::Stochastic { seed: 42 },
            step: 17,
            offset: 1000,
            skip_non_finite: true,
            ..d
        },
        stream: 5,
    });
    v.push(Settings {
        options: StepOptions {
            cautious: Cautious::Shard {
                agreeing: 3,
                numel: 5000,
            },
            weight_decay: WeightDecay::FullyDecoupled { max_lr: 1e-2 },
            rounding: Rounding::Stochastic { seed: 7 },
            ..d
        },
        stream: u64::MAX,
    });
    v
}

type CaseFn = fn(&mut Out, &mut Rng, usize, &Hyperparams, &Settings);

/// The 27 dtype combinations, P slowest (the order of `support::all_combos!`, whose expansion
/// names the core `lion_optim`: here that is this crate's library, the core is `lion`).
const COMBOS: [CaseFn; 27] = [
    case::<f32, f32, f32>,
    case::<f32, f32, f16>,
    case::<f32, f32, bf16>,
    case::<f32, f16, f32>,
    case::<f32, f16, f16>,
    case::<f32, f16, bf16>,
    case::<f32, bf16, f32>,
    case::<f32, bf16, f16>,
    case::<f32, bf16, bf16>,
    case::<f16, f32, f32>,
    case::<f16, f32, f16>,
    case::<f16, f32, bf16>,
    case::<f16, f16, f32>,
    case::<f16, f16, f16>,
    case::<f16, f16, bf16>,
    case::<f16, bf16, f32>,
    case::<f16, bf16, f16>,
    case::<f16, bf16, bf16>,
    case::<bf16, f32, f32>,
    case::<bf16, f32, f16>,
    case::<bf16, f32, bf16>,
    case::<bf16, f16, f32>,
    case::<bf16, f16, f16>,
    case::<bf16, f16, bf16>,
    case::<bf16, bf16, f32>,
    case::<bf16, bf16, f16>,
    case::<bf16, bf16, bf16>,
];

fn stateless() -> Vec<u8> {
    let lens = [0usize, 1, 7, 16, 33, 100, 1000];
    vectors(
        b"LIONVEC1",
        &COMBOS,
        hyperparams(),
        &settings(),
        &lens,
        0x00c0_ffee,
    )
}

/// A vector file: `magic`, the case count, then one case for each combination, hyperparameter
/// set and setting (in that nesting), with random values from `seed` and every length of `lens`
/// for every combination, spread over the settings.
fn vectors(
    magic: &[u8; 8],
    combos: &[CaseFn],
    hps: &[Hyperparams],
    settings: &[Settings],
    lens: &[usize],
    seed: u64,
) -> Vec<u8> {
    let mut body = Out::default();
    let mut rng = Rng::new(seed);
    let mut n = 0u32;
    for (ci, combo) in combos.iter().enumerate() {
        for (hi, hp) in hps.iter().enumerate() {
            for (si, s) in settings.iter().enumerate() {
                let len = lens[(ci + hi + si) % lens.len()];
                combo(&mut body, &mut rng, len, hp, s);
                n += 1;
            }
        }
    }
    let mut out = Out::default();
    out.0.extend_from_slice(magic);
    out.u32(n);
    out.0.extend_from_slice(&body.0);
    out.0
}

/// One 8-bit case of types (P, G): random parameters and gradients with special values, random
/// codes and scales (block 1, where there is one, all zero scale), the reference's step and
/// cautious count.
fn q8_case<P: Element, G: Element>(
    out: &mut Out,
    rng: &mut Rng,
    len: usize,
    hp: &Hyperparams,
    s: &Settings,
) {
    let p: Vec<P> = random_values(rng, len);
    let mut g: Vec<G> = random_values(rng, len);
    // Mostly finite gradients too: steps that are not skipped, blocks that stay finite.
    mostly_finite(rng, &mut g, 2);
    let codes: Vec<u8> = (0..len).map(|_| rng.below(256) as u8).collect();
    let absmax: Vec<f32> = (0..len.div_ceil(Q8_BLOCK))
        .map(|b| if b == 1 { 0.0 } else { rng.uniform() * 3.0 })
        .collect();
    out.i32(dtype_code(P::DTYPE));
    out.i32(dtype_code(G::DTYPE));
    out.u64(len as u64);
    out.settings(hp, s);
    let opts = reference_options(s);
    let (mut p1, mut c1, mut a1) = (p.clone(), codes.clone(), absmax.clone());
    let st = step_status(
        Q8Mut::new(&mut c1, &mut a1)
            .and_then(|m| reference::step_q8_with(&mut p1, &g, m, hp, &opts)),
    );
    out.i32(st);
    // The count of the specification: the decoded momentum, counted as f32 momentum (the
    // 8-bit count also needs a block-aligned offset).
    let q = Q8Ref::new(&codes, &absmax).expect("lengths match");
    let decoded: Vec<f32> = (0..len).map(|i| q.get(i).unwrap_or(0.0)).collect();
    let count = if opts.offset.is_multiple_of(Q8_BLOCK as u64) {
        reference::cautious_count(&g, &decoded, hp, &opts)
    } else {
        Err(reference::step_q8_with(
            &mut [0.0f32; 0],
            &[0.0f32; 0],
            Q8Mut::new(&mut [], &mut []).expect("empty"),
            hp,
            &opts,
        )
        .expect_err("a misaligned offset"))
    };
    let (count_status, count) = match count {
        Ok(n) => (0, n),
        Err(e) => (status(&e), 0),
    };
    out.i32(count_status);
    out.u64(count);
    out.elements(&p);
    out.elements(&g);
    out.0.extend_from_slice(&codes);
    out.elements(&absmax);
    out.elements(&p1);
    out.0.extend_from_slice(&c1);
    out.elements(&a1);
}

/// The 9 parameter x gradient dtype combinations, P slowest.
const Q8_COMBOS: [CaseFn; 9] = [
    q8_case::<f32, f32>,
    q8_case::<f32, f16>,
    q8_case::<f32, bf16>,
    q8_case::<f16, f32>,
    q8_case::<f16, f16>,
    q8_case::<f16, bf16>,
    q8_case::<bf16, f32>,
    q8_case::<bf16, f16>,
    q8_case::<bf16, bf16>,
];

/// The option sets of the 8-bit cases: nearest, stochastic with a step, a block-aligned offset
/// and a stream, cautious (whole), skipping with gradient unscaling, and a misaligned offset
/// (an error).
fn q8_settings() -> Vec<Settings> {
    let d = StepOptions::default();
    let plain = |options| Settings { options, stream: 0 };
    vec![
        plain(d),
        Settings {
            options: StepOptions {
                rounding: Rounding::Stochastic { seed: 42 },
                step: 17,
                offset: 512,
                ..d
            },
            stream: 5,
        },
        plain(StepOptions {
            cautious: Cautious::Whole,
            rounding: Rounding::Stochastic { seed: 3 },
            step: 2,
            ..d
        }),
        plain(StepOptions {
            cautious: Cautious::Whole,
            maximize: true,
            weight_decay: WeightDecay::FullyDecoupled { max_lr: 1e-2 },
            ..d
        }),
        plain(StepOptions {
            skip_non_finite: true,
            grad_unscale: Some(0.5),
            offset: 256,
            ..d
        }),
        plain(StepOptions { offset: 100, ..d }),
    ]
}

/// The 8-bit vectors: "LIONQ8V1", the count, then the cases (see `q8_case`).
fn q8_vectors() -> Vec<u8> {
    let lens = [0usize, 1, 255, 256, 300, 1000, 1031];
    let hps = &hyperparams()[..3];
    vectors(
        b"LIONQ8V1",
        &Q8_COMBOS,
        hps,
        &q8_settings(),
        &lens,
        0x0008_b175,
    )
}

/// The handle's run: groups, tensors, steps, expectations.
fn handle() -> Result<Vec<u8>, lion::Error> {
    let mut out = Out::default();
    out.0.extend_from_slice(b"LIONOPT1");
    let hp = Hyperparams {
        lr: 1e-2,
        weight_decay: 0.1,
        ..Hyperparams::default()
    };
    let groups = [
        (
            hp,
            Settings {
                options: StepOptions::default(),
                stream: 0,
            },
        ),
        (
            Hyperparams {
                weight_decay: 0.0,
                lr: 3e-3,
                ..hp
            },
            Settings {
                options: StepOptions {
                    rounding: Rounding::Stochastic { seed: 99 },
                    cautious: Cautious::Whole,
                    skip_non_finite: true,
                    ..StepOptions::default()
                },
                stream: 0,
            },
        ),
    ];
    let mut opt = Lion::new(groups[0].0)?;
    opt.set_group(
        GroupId::DEFAULT,
        Group::new(groups[0].0).with_options(groups[0].1.options),
    )?;
    out.u32(groups.len() as u32);
    for (i, (g_hp, g)) in groups.iter().enumerate() {
        out.settings(g_hp, g);
        if i > 0 {
            opt.add_group(Group::new(*g_hp).with_options(g.options))?;
        }
    }
    // name, len, params dtype, grads dtype, momentum dtype, group, stream
    struct T {
        name: &'static str,
        len: usize,
        p: Dtype,
        g: Dtype,
        m: MomentumDtype,
        group: usize,
        stream: Option<u64>,
    }
    #[rustfmt::skip]
    let tensors = [
        T { name: "embed.weight", len: 3000, p: Dtype::F32, g: Dtype::F32, m: MomentumDtype::F32, group: 0, stream: None },
        T { name: "layer0.weight", len: 1111, p: Dtype::Bf16, g: Dtype::F32, m: MomentumDtype::Bf16, group: 0, stream: Some(1234) },
        T { name: "layer0.bias", len: 37, p: Dtype::Bf16, g: Dtype::Bf16, m: MomentumDtype::F32, group: 1, stream: None },
        T { name: "norm.weight", len: 300, p: Dtype::F16, g: Dtype::F16, m: MomentumDtype::F16, group: 1, stream: None },
        // 8-bit momentum: a partial last block, in each group.
        T { name: "layer1.weight", len: 700, p: Dtype::F32, g: Dtype::Bf16, m: MomentumDtype::Q8, group: 1, stream: None },
        T { name: "head.weight", len: 513, p: Dtype::Bf16, g: Dtype::F32, m: MomentumDtype::Q8, group: 0, stream: Some(77) },
    ];
    out.u32(tensors.len() as u32);
    for t in &tensors {
        out.u32(t.name.len() as u32);
        out.0.extend_from_slice(t.name.as_bytes());
        out.u64(t.len as u64);
        out.i32(dtype_code(t.p));
        out.i32(dtype_code(t.g));
        out.i32(momentum_code(t.m));
        out.u64(t.group as u64);
        out.i32(t.stream.is_some().into());
        out.u64(t.stream.unwrap_or(0));
        let mut spec = TensorSpec::new(t.len)
            .name(t.name)
            .params(t.p)
            .momentum(t.m)
            .group(GroupId::new(t.group));
        if let Some(s) = t.stream {
            spec = spec.stream(s);
        }
        opt.add(spec)?;
    }
    // The parameters, typed at run time, stepped through `Lion::step`.
    let mut rng = Rng::new(0x0bad_cafe);
    let mut params: Vec<Buffer> = tensors
        .iter()
        .map(|t| random_buffer(&mut rng, t.p, t.len, 1.0))
        .collect();
    for p in &params {
        out.0.extend_from_slice(bytes(p));
    }
    let steps = 6;
    out.u32(steps);
    for step in 0..steps {
        let lr_scale = [0.5, 1.0, 1.0, 0.75, 0.25, 0.1][step as usize];
        opt.set_lr_scale(lr_scale)?;
        // A subset of the tensors, in a shuffled order; step 3 has a NaN gradient in group 1
        // (which skips non-finite steps): the whole step is skipped.
        let mut which: Vec<usize> = (0..tensors.len())
            .filter(|i| (step as usize + i) % 4 != 3)
            .collect();
        rng.shuffle(&mut which);
        let grads: Vec<Buffer> = which
            .iter()
            .map(|&i| {
                let t = &tensors[i];
                let mut g = random_buffer(&mut rng, t.g, t.len, 0.1);
                if step == 3 && t.group == 1 {
                    poison(&mut g);
                }
                g
            })
            .collect();
        out.f64(lr_scale);
        out.u32(which.len() as u32);
        for (&i, g) in which.iter().zip(&grads) {
            out.u64(i as u64);
            out.0.extend_from_slice(bytes(g));
        }
        let mut slots: Vec<Option<&mut Buffer>> = params.iter_mut().map(Some).collect();
        let mut step_tensors: Vec<Tensor<'_>> = which
            .iter()
            .zip(&grads)
            .map(|(&i, g)| {
                let p = slots[i].take().expect("each tensor once");
                Tensor::from_slices(p.elements_mut().unwrap(), g.elements().unwrap())
                    .of(TensorId::new(i))
            })
            .collect();
        let st = match opt.step(&mut step_tensors)? {
            lion::Outcome::Applied => 0,
            _ => 1,
        };
        drop(step_tensors);
        out.i32(st);
        for p in &params {
            out.0.extend_from_slice(bytes(p));
        }
    }
    let state = opt.state_to_vec();
    out.u64(state.len() as u64);
    out.0.extend_from_slice(&state);
    Ok(out.0)
}

/// `len` random elements of `dtype` in [-scale, scale].
fn random_buffer(rng: &mut Rng, dtype: Dtype, len: usize, scale: f32) -> Buffer {
    let x: Vec<f32> = (0..len)
        .map(|_| (rng.uniform() * 2.0 - 1.0) * scale)
        .collect();
    match dtype {
        Dtype::F32 => Buffer::F32(x),
        Dtype::F16 => Buffer::F16(x.iter().map(|&v| f16::from_f32(v)).collect()),
        Dtype::Bf16 => Buffer::Bf16(x.iter().map(|&v| bf16::from_f32(v)).collect()),
    }
}

/// Makes the first element a NaN.
fn poison(b: &mut Buffer) {
    match b {
        Buffer::F32(v) => v[0] = f32::NAN,
        Buffer::F16(v) => v[0] = f16::NAN,
        Buffer::Bf16(v) => v[0] = bf16::NAN,
        _ => unreachable!("element buffers only"),
    }
}

/// A buffer's bytes.
fn bytes(b: &Buffer) -> &[u8] {
    match b {
        Buffer::F32(v) => bytemuck_bytes(v),
        Buffer::F16(v) => bytemuck_bytes(v),
        Buffer::Bf16(v) => bytemuck_bytes(v),
        _ => unreachable!("element buffers only"),
    }
}

fn main() -> Result<(), Box<dyn Error>> {
    let dir: PathBuf = std::env::args_os()
        .nth(1)
        .ok_or("usage: gen_vectors OUT_DIR")?
        .into();
    std::fs::create_dir_all(&dir)?;
    let s = stateless();
    std::fs::write(dir.join("stateless.vec"), &s)?;
    let h = handle()?;
    std::fs::write(dir.join("handle.vec"), &h)?;
    let q = q8_vectors();
    std::fs::write(dir.join("q8.vec"), &q)?;
    println!(
        "gen_vectors: {} ({} bytes), {} ({} bytes), {} ({} bytes)",
        dir.join("stateless.vec").display(),
        s.len(),
        dir.join("handle.vec").display(),
        h.len(),
        dir.join("q8.vec").display(),
        q.len()
    );
    Ok(())
}
