//! On-device training on a Cortex-M4F (run by qemu-system-arm `-M mps2-an386`, semihosting): a
//! small MLP learns three spirals with lion-optim, without `std` or an allocator. Every buffer
//! is a `static` (through `cortex_m::singleton!`) or on the stack.
//!
//! Two runs from the same initial weights: f32 parameters with bf16 momentum, then with 8-bit
//! momentum (bitsandbytes' blockwise format, `Q8Mut`). Each run has two parameter groups: the
//! weight matrices with weight decay, the biases without. Without the `alloc` feature a `Lion`
//! has one group, so each group is its own `Lion` over its own momentum buffers.
//!
//! Prints the training loss and test accuracy every few epochs, then `fw: PASS` and exits qemu
//! with status 0 if both runs reach [`MIN_TEST_ACCURACY`]; otherwise status 1.
#![no_std]
#![no_main]

mod data;
mod mlp;

use cortex_m::singleton;
use cortex_m_rt::entry;
use cortex_m_semihosting::{debug, hprintln};
use lion_optim::{bf16, Hyperparams, Lion, MomentumMut, Q8Mut, Tensor, Q8_BLOCK};
use lion_optim_test_support::Rng;
use panic_semihosting as _;

use data::{Sample, ALL, TEST, TRAIN};
use mlp::{Activations, Mlp, H, IN, OUT};

/// Passes over the training set.
const EPOCHS: usize = 60;
/// Samples per step.
const BATCH: usize = 32;
/// The peak learning rate (a cosine schedule takes it down to 5% of this).
const LR: f64 = 5e-3;
/// Decoupled weight decay of the weight matrices (the biases have none).
const WEIGHT_DECAY: f64 = 0.1;
/// A table row every this many epochs (and after the first).
const REPORT_EVERY: usize = 10;
/// The test accuracy both runs must reach (measured: 98.9% with bf16, 100% with 8-bit momentum).
const MIN_TEST_ACCURACY: f32 = 0.9;

/// One parameter group: a `Lion` over the momentum of three tensors.
type Group<'a> = Lion<[MomentumMut<'a>; 3]>;

/// The scales of 8-bit momentum: one f32 per started block of 256 elements of each tensor.
struct Absmax {
    w1: [f32; blocks(H * IN)],
    b1: [f32; blocks(H)],
    w2: [f32; blocks(H * H)],
    b2: [f32; blocks(H)],
    w3: [f32; blocks(OUT * H)],
    b3: [f32; blocks(OUT)],
}

const fn blocks(len: usize) -> usize {
    len.div_ceil(Q8_BLOCK)
}

#[entry]
fn main() -> ! {
    // The data, the model, its gradients, and both runs' momentum: all in .bss.
    let samples =
        singleton!(: [Sample; ALL] = [Sample { point: [0.0; 2], class: 0 }; ALL]).unwrap();
    let model = singleton!(: Mlp = Mlp::ZERO).unwrap();
    let grad = singleton!(: Mlp = Mlp::ZERO).unwrap();
    let momentum_bf16 = singleton!(: Mlp<bf16> = Mlp::filled(bf16::ZERO)).unwrap();
    // 8-bit zeros: code 127 (the map's 0.0) with scale 0.
    let codes = singleton!(: Mlp<u8> = Mlp::filled(127)).unwrap();
    let absmax = singleton!(: Absmax = Absmax {
        w1: [0.0; blocks(H * IN)],
        b1: [0.0; blocks(H)],
        w2: [0.0; blocks(H * H)],
        b2: [0.0; blocks(H)],
        w3: [0.0; blocks(OUT * H)],
        b3: [0.0; blocks(OUT)],
    })
    .unwrap();

    data::generate(samples);
    hprintln!(
        "fw: three spirals, {} training and {} test points; MLP {}-{}-{}-{} ({} parameters); {} epochs of {} steps (batch {})",
        TRAIN, TEST, IN, H, H, OUT, Mlp::<f32>::LEN, EPOCHS, TRAIN.div_ceil(BATCH), BATCH
    );
    hprintln!("| momentum | epoch | train loss | test accuracy |");
    hprintln!("|---|---:|---:|---:|");

    // Run 1: bf16 momentum, one slice per tensor.
    let bytes_bf16 = core::mem::size_of_val(momentum_bf16);
    let (w, b) = momentum_bf16.groups_mut();
    let acc_bf16 = train(
        "bf16",
        model,
        grad,
        samples,
        w.map(MomentumMut::from),
        b.map(MomentumMut::from),
    );

    // Run 2: 8-bit momentum, codes and scales per tensor.
    let bytes_q8 = core::mem::size_of_val(codes) + core::mem::size_of_val(absmax);
    let (cw, cb) = codes.groups_mut();
    let aw = [&mut absmax.w1[..], &mut absmax.w2[..], &mut absmax.w3[..]];
    let ab = [&mut absmax.b1[..], &mut absmax.b2[..], &mut absmax.b3[..]];
    let acc_q8 = train("q8", model, grad, samples, q8(cw, aw), q8(cb, ab));

    let pass = acc_bf16 >= MIN_TEST_ACCURACY && acc_q8 >= MIN_TEST_ACCURACY;
    hprintln!(
        "fw: test accuracy bf16 momentum {:.1}% ({} B), 8-bit momentum {:.1}% ({} B); required {:.0}%",
        100.0 * acc_bf16, bytes_bf16, 100.0 * acc_q8, bytes_q8, 100.0 * MIN_TEST_ACCURACY
    );
    if pass {
        hprintln!("fw: PASS");
        debug::exit(debug::EXIT_SUCCESS);
    } else {
        hprintln!("fw: FAIL");
        debug::exit(debug::EXIT_FAILURE);
    }
    #[allow(clippy::empty_loop)]
    loop {}
}

/// 8-bit momentum views of three tensors' codes and scales.
fn q8<'a>(codes: [&'a mut [u8]; 3], absmax: [&'a mut [f32]; 3]) -> [MomentumMut<'a>; 3] {
    let [c1, c2, c3] = codes;
    let [a1, a2, a3] = absmax;
    let view = |c, a| MomentumMut::from(Q8Mut::new(c, a).expect("one scale per 256 codes"));
    [view(c1, a1), view(c2, a2), view(c3, a3)]
}

/// Trains `model` from its initial weights with mini-batch Lion over the given momentum (the
/// weight matrices' and the biases'), printing a table row every few epochs; returns the final
/// test accuracy.
fn train(
    name: &str,
    model: &mut Mlp,
    grad: &mut Mlp,
    samples: &[Sample; ALL],
    momentum_weights: [MomentumMut<'_>; 3],
    momentum_biases: [MomentumMut<'_>; 3],
) -> f32 {
    let (train, test) = samples.split_at(TRAIN);
    model.init(0xfeed_beef);
    let hp = Hyperparams {
        lr: LR,
        weight_decay: WEIGHT_DECAY,
        ..Hyperparams::default() // betas 0.9 and 0.99
    };
    let mut decay: Group = Lion::with_buffers(hp, momentum_weights).unwrap();
    let no_decay = Hyperparams {
        weight_decay: 0.0,
        ..hp
    };
    let mut no_decay: Group = Lion::with_buffers(no_decay, momentum_biases).unwrap();

    let mut order = [0u16; TRAIN];
    order
        .iter_mut()
        .enumerate()
        .for_each(|(i, o)| *o = i as u16);
    let mut rng = Rng::new(7);
    let total_steps = EPOCHS * TRAIN.div_ceil(BATCH);
    let mut accuracy = 0.0;
    for epoch in 1..=EPOCHS {
        rng.shuffle(&mut order);
        let mut loss = 0.0;
        for batch in order.chunks(BATCH) {
            // Forward and backward over the batch: the mean gradient in `grad`.
            grad.fill(0.0);
            let mut a = Activations::default();
            for &i in batch {
                let s = train[usize::from(i)];
                let class = usize::from(s.class);
                loss += model.forward(s.point, class, &mut a);
                model.backward(s.point, class, &a, 1.0 / batch.len() as f32, grad);
            }
            // The schedule: a cosine from LR down to 5% of it, over every step of the run.
            let t = decay.steps() as f64 / total_steps as f64;
            let scale = 0.05 + 0.95 * 0.5 * (1.0 + libm::cos(core::f64::consts::PI * t));
            decay.set_lr_scale(scale).unwrap();
            no_decay.set_lr_scale(scale).unwrap();
            // One Lion step per group.
            let (w, b) = model.groups_mut();
            let (gw, gb) = grad.groups();
            decay.step(&mut tensors(w, gw)).unwrap();
            no_decay.step(&mut tensors(b, gb)).unwrap();
        }
        accuracy = test
            .iter()
            .filter(|s| model.predict(s.point) == usize::from(s.class))
            .count() as f32
            / TEST as f32;
        if epoch == 1 || epoch % REPORT_EVERY == 0 || epoch == EPOCHS {
            hprintln!(
                "| {} | {} | {:.3} | {:.1}% |",
                name,
                epoch,
                loss / TRAIN as f32,
                100.0 * accuracy
            );
        }
    }
    accuracy
}

/// Three tensors of a group for `Lion::step`: parameters and their gradients.
fn tensors<'a>(params: [&'a mut [f32]; 3], grads: [&'a [f32]; 3]) -> [Tensor<'a>; 3] {
    let [p1, p2, p3] = params;
    let [g1, g2, g3] = grads;
    [
        Tensor::new(p1, g1),
        Tensor::new(p2, g2),
        Tensor::new(p3, g3),
    ]
}
