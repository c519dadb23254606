//! The cost of the C ABI, in one run (a benchmark, not a test):
//!
//! 1. a stateless call: `lion_step` on a 4096-element f32 tensor against the Rust
//!    `lion_optim::step_with` on the same buffers (target: at most 50 ns more per call), and the
//!    same on 64 elements (the cost per call with little of the step's own noise); beside them
//!    the core's `Update::apply`, the run-time-typed step the C call makes;
//! 2. a whole model: `lion_optimizer_step` over the 148 tensors of GPT-2 small (124M f32
//!    parameters) against `Lion::step` with the same tensors (target: within 5%).
//!
//! The C entry points are called through `extern "C"` function pointers the optimizer cannot
//! see through (`black_box`): the same machine code a C caller runs. Calls alternate between
//! the two sides in rounds; each side's time is the median of its rounds.
//!
//! ```text
//! cargo run --release -p lion-optim-c --example bench            # BENCH_QUICK=1: fewer rounds
//! ```

use std::hint::black_box;
use std::time::Instant;

use lion::{Group, Hyperparams, Lion, StepOptions, Tensor, TensorId, TensorSpec, Update};
use lion_optim::handle::{
    LionOptimizer, lion_optimizer_add_tensor, lion_optimizer_create, lion_optimizer_destroy,
    lion_optimizer_step, lion_tensor_spec_default,
};
use lion_optim::stateless::{lion_hyperparams_default, lion_step, lion_step_options_default};
use lion_optim::status::LionStatus;
use lion_optim::types::{DtypeArg, LionHyperparams, LionStepOptions, LionTensorUpdate};

type StepFn = unsafe extern "C" fn(
    *mut core::ffi::c_void,
    DtypeArg,
    *const core::ffi::c_void,
    DtypeArg,
    *mut core::ffi::c_void,
    DtypeArg,
    usize,
    *const LionHyperparams,
    *const LionStepOptions,
) -> LionStatus;

type ManyFn =
    unsafe extern "C" fn(*mut LionOptimizer, *const LionTensorUpdate, usize) -> LionStatus;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn cpu() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into())
}

const F32: DtypeArg = DtypeArg(0);

fn stateless(quick: bool, n: usize) {
    let hp = Hyperparams {
        lr: 1e-4,
        weight_decay: 0.1,
        ..Hyperparams::default()
    };
    let opts = StepOptions::default();
    let mut c_hp = lion_hyperparams_default();
    c_hp.lr = hp.lr;
    c_hp.weight_decay = hp.weight_decay;
    let c_opts = lion_step_options_default();
    let mut p = vec![0.5f32; n];
    let g: Vec<f32> = (0..n).map(|i| ((i % 7) as f32 - 3.0) * 1e-3).collect();
    let mut m = vec![0.0f32; n];
    let c_step: StepFn = black_box(lion_step);
    let group = Group::new(hp);
    let calls = 2000;
    let rounds = if quick { 21 } else { 101 };
    // Per round: the time per call of each side, in turn; the differences are taken per round
    // (paired), so that a slow round on a shared machine moves both sides.
    // The three sides: the Rust step, the C call, and the core's run-time-typed step the C call
    // makes (`Update::apply`).
    let side = |which: usize, p: &mut [f32], m: &mut [f32]| match which {
        0 => {
            lion::step_with(
                black_box(p),
                black_box(&g[..]),
                black_box(m),
                black_box(&hp),
                black_box(&opts),
            )
            .unwrap();
        }
        1 => {
            // SAFETY: valid buffers of n f32 each; initialized structs.
            let s = unsafe {
                c_step(
                    black_box(p.as_mut_ptr().cast()),
                    F32,
                    black_box(g.as_ptr().cast()),
                    F32,
                    black_box(m.as_mut_ptr().cast()),
                    F32,
                    n,
                    &c_hp,
                    &c_opts,
                )
            };
            assert_eq!(s, LionStatus::Ok);
        }
        _ => {
            Update::new(black_box(p), black_box(&g[..]), black_box(m))
                .apply(black_box(&group))
                .unwrap();
        }
    };
    // Per round each side's time per call, the sides in a rotating order (no side always runs
    // after the same one); the differences are taken per round (paired), so that a slow round
    // on a shared machine moves all sides.
    let (mut rust, mut c, mut many) = (Vec::new(), Vec::new(), Vec::new());
    for round in 0..rounds + 3 {
        let mut t = [0.0f64; 3];
        for k in 0..3 {
            let which = (round + k) % 3;
            let start = Instant::now();
            for _ in 0..calls {
                side(which, &mut p, &mut m);
            }
            t[which] = start.elapsed().as_secs_f64() / calls as f64;
        }
        if round >= 3 {
            rust.push(t[0]);
            c.push(t[1] - t[0]);
            many.push(t[2] - t[0]);
        }
    }
    let (r, d, dm) = (median(rust) * 1e9, median(c) * 1e9, median(many) * 1e9);
    println!(
        "stateless, {n} f32: Rust step_with {r:.1} ns/call; C lion_step {d:+.1} ns per call \
         (median of paired rounds; {:.3}x){}",
        (r + d) / r,
        if n == 4096 {
            "   [target: at most +50 ns]"
        } else {
            ""
        }
    );
    println!("    of which the core's Update::apply: {dm:+.1} ns per call");
}

/// The parameter tensors of GPT-2 small, by full name and length (the shared fixture).
fn gpt2_small() -> Vec<(String, usize)> {
    support::gpt2_small()
        .map(|(layer, name, len)| match layer {
            Some(l) => (format!("h.{l}.{name}"), len),
            None => (name.to_string(), len),
        })
        .collect()
}

fn model(quick: bool) {
    let shapes = gpt2_small();
    let total: usize = shapes.iter().map(|s| s.1).sum();
    assert_eq!((shapes.len(), total), (148, 124_439_808));
    let hp = Hyperparams {
        lr: 3e-4,
        weight_decay: 0.1,
        ..Hyperparams::default()
    };
    let mut params: Vec<Vec<f32>> = shapes.iter().map(|s| vec![0.01f32; s.1]).collect();
    let grads: Vec<Vec<f32>> = shapes
        .iter()
        .map(|s| (0..s.1).map(|i| ((i % 13) as f32 - 6.0) * 1e-3).collect())
        .collect();

    let mut rust = Lion::new(hp).unwrap();
    let mut c_hp = lion_hyperparams_default();
    c_hp.lr = hp.lr;
    c_hp.weight_decay = hp.weight_decay;
    let mut handle: *mut LionOptimizer = std::ptr::null_mut();
    // SAFETY: valid struct and out pointer.
    assert_eq!(
        unsafe { lion_optimizer_create(&c_hp, std::ptr::null(), &mut handle) },
        LionStatus::Ok
    );
    let mut names = Vec::new();
    for (name, len) in &shapes {
        rust.add(TensorSpec::new(*len).name(name)).unwrap();
        names.push(std::ffi::CString::new(name.as_str()).unwrap());
        let mut spec = lion_tensor_spec_default();
        spec.len = *len;
        spec.name = names.last().unwrap().as_ptr();
        let mut id = 0usize;
        // SAFETY: a live handle, an initialized spec, a valid out pointer.
        assert_eq!(
            unsafe { lion_optimizer_add_tensor(handle, &spec, &mut id) },
            LionStatus::Ok
        );
    }
    let c_many: ManyFn = black_box(lion_optimizer_step);
    let rounds = if quick { 5 } else { 15 };
    let (mut r_times, mut c_times) = (Vec::new(), Vec::new());
    for round in 0..rounds + 1 {
        let t = Instant::now();
        let mut tensors: Vec<Tensor<'_>> = params
            .iter_mut()
            .zip(&grads)
            .enumerate()
            .map(|(i, (p, g))| Tensor::new(&mut p[..], &g[..]).of(TensorId::new(i)))
            .collect();
        rust.step(&mut tensors).unwrap();
        drop(tensors);
        let r = t.elapsed().as_secs_f64();
        let t = Instant::now();
        let updates: Vec<LionTensorUpdate> = params
            .iter_mut()
            .zip(&grads)
            .enumerate()
            .map(|(i, (p, g))| LionTensorUpdate {
                tensor: i,
                len: p.len(),
                params: p.as_mut_ptr().cast(),
                grads: g.as_ptr().cast(),
                params_dtype: F32,
                grads_dtype: F32,
            })
            .collect();
        // SAFETY: a live handle; every update's buffers are valid for its length.
        let s = unsafe { c_many(handle, updates.as_ptr(), updates.len()) };
        assert_eq!(s, LionStatus::Ok);
        let c = t.elapsed().as_secs_f64();
        if round >= 1 {
            r_times.push(r);
            c_times.push(c);
        }
    }
    // SAFETY: the handle from lion_optimizer_create, destroyed once.
    unsafe { lion_optimizer_destroy(handle) };
    let (r, c) = (median(r_times) * 1e3, median(c_times) * 1e3);
    println!(
        "GPT-2 small (148 tensors, 124M f32) on {} threads: Rust Lion::step {r:.1} ms, \
         C lion_optimizer_step {c:.1} ms: {:.3}x ({:+.1}%)   [target: within 5%]",
        rayon_threads(),
        c / r,
        (c / r - 1.0) * 100.0
    );
}

fn rayon_threads() -> usize {
    std::env::var("RAYON_NUM_THREADS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
}

fn main() {
    let quick = std::env::var_os("BENCH_QUICK").is_some();
    println!(
        "CPU: {} ({} threads); lion_optim backend: {:?}",
        cpu(),
        rayon_threads(),
        lion::Backend::detect()
    );
    // 4096 elements: the target's size; 64: the per-call cost with less of the step's noise.
    stateless(quick, 4096);
    stateless(quick, 64);
    if std::env::var_os("BENCH_NO_MODEL").is_none() {
        model(quick);
    }
}
