//! `lion_optim_burn::Lion` against `lion_optim::reference` (bit for bit) and against burn's own
//! Lion; records both ways; groups and clipping through `ModuleOptimizer`; the copy and
//! fallback paths.

use burn::backend::Flex;
use burn::grad_clipping::GradientClippingConfig;
use burn::module::{Module, ParamGroup};
use burn::nn::{Linear, LinearConfig};
use burn::optim::{
    GradientsParams, LionState, ModuleOptimizer, Optimizer, RecordState, StateSink, StateSource,
};
use burn::tensor::{DType, Device, Tensor, TensorData};
use lion_optim::{Element, Hyperparams, Q8Mut, StepOptions, bf16, f16, reference};
use lion_optim_burn::{Lion, Lion8bitState, LionConfig, Stats};
use support::Rng;

/// `n` values of `Rng::value_with_zeros` (in [-2, 2), exact zeros (+0 and -0) now and then,
/// so that c == 0 happens), each representable in `T`.
fn random<T: Element>(rng: &mut Rng, n: usize) -> Vec<f32> {
    (0..n)
        .map(|_| T::from_f32_rounded(rng.value_with_zeros()).to_f32_exact())
        .collect()
}

/// A Flex tensor of these (exactly representable) values in `dtype`.
fn tensor<const D: usize>(values: &[f32], shape: [usize; D], dtype: DType) -> Tensor<D> {
    Tensor::<D>::from_data(TensorData::new(values.to_vec(), shape), &Device::flex()).cast(dtype)
}

/// A tensor's values widened to f32, as bits (widening is exact and keeps NaN payloads, so
/// equal bits here are equal bits in the tensor's own dtype).
fn bits<const D: usize>(t: &Tensor<D>) -> Vec<u32> {
    fn widened<T: burn::tensor::Element>(data: &TensorData, to_f32: impl Fn(T) -> f32) -> Vec<u32> {
        let values = data.as_slice::<T>().unwrap();
        values.iter().map(|&x| to_f32(x).to_bits()).collect()
    }
    let data = t.to_data();
    match data.dtype() {
        DType::F32 => widened(&data, |x: f32| x),
        DType::BF16 => widened(&data, bf16::to_f32),
        DType::F16 => widened(&data, f16::to_f32),
        DType::F64 => widened(&data, |x: f64| x as f32),
        d => panic!("{d:?}"),
    }
}

fn ref_bits<T: Element>(v: &[T]) -> Vec<u32> {
    v.iter().map(|x| x.to_f32_exact().to_bits()).collect()
}

fn buffer_ptr<const D: usize>(t: &Tensor<D>) -> usize {
    t.clone()
        .try_into_primitive::<Flex>()
        .unwrap()
        .bytes()
        .as_ptr() as usize
}

/// Six steps of `optim` (the scheduler changing `lr`) on a tensor of `shape` in `dtype` (values
/// of `T`), in place, against a reference on the same data: `reference_step(p, g, m, lr)` steps
/// the reference parameters `p` and momentum `m` (starting as `m`), `check_momentum(state, m,
/// what)` compares the optimizer's momentum with it after every step. Returns the reference
/// momentum.
fn check_steps<T: Element, O: Optimizer, M>(
    optim: &O,
    dtype: DType,
    seed: u64,
    shape: [usize; 2],
    mut m: M,
    reference_step: impl Fn(&mut [T], &[T], &mut M, f64),
    check_momentum: impl Fn(&O::State<2>, &M, &str),
) -> M {
    let mut rng = Rng(seed + dtype.size() as u64);
    let n = shape[0] * shape[1];
    let init = random::<T>(&mut rng, n);
    let mut p: Vec<T> = init.iter().map(|&x| T::from_f32_rounded(x)).collect();
    let mut t = tensor(&init, shape, dtype);
    let mut state: Option<O::State<2>> = None;
    for step in 0..6 {
        let lr = 0.01 * (step + 1) as f64;
        let g = random::<T>(&mut rng, n);
        let gt: Vec<T> = g.iter().map(|&x| T::from_f32_rounded(x)).collect();
        reference_step(&mut p, &gt, &mut m, lr);
        let before = buffer_ptr(&t);
        let (next, next_state) = optim.step(lr, t, tensor(&g, shape, dtype), state);
        let next_state = next_state.expect("a state");
        assert_eq!(buffer_ptr(&next), before, "{dtype:?} step {step}: in place");
        assert_eq!(next.dtype(), dtype);
        assert_eq!(
            bits(&next),
            ref_bits(&p),
            "{dtype:?} params after step {step}"
        );
        check_momentum(&next_state, &m, &format!("{dtype:?} after step {step}"));
        (t, state) = (next, Some(next_state));
    }
    m
}

/// [`check_steps`] of `Lion` on a 7 x 29 tensor.
fn check_against_reference<T: Element>(dtype: DType) {
    let optim = LionConfig::new().with_weight_decay(0.7).build();
    check_steps::<T, _, _>(
        &optim,
        dtype,
        0x1234,
        [7, 29],
        vec![T::from_f32_rounded(0.0); 7 * 29], // burn's momentum: the grad's dtype
        |p, g, m, lr| {
            reference::step_with(p, g, m, &optim.hyperparams(lr), &StepOptions::default()).unwrap();
        },
        |state, m, what| assert_eq!(bits(&state.momentum), ref_bits(m), "{what}: momentum"),
    );
    assert_eq!(
        optim.stats(),
        Stats {
            in_place: 6,
            copied: 0,
            fallback: 0
        }
    );
}

/// burn's own Lion on the same data: for f32 the parameters are bit-identical and the momentum
/// equal (burn's first step can store -0.0 where the core stores +0.0); bf16 and f16 differ,
/// since burn rounds after each of its tensor operations.
#[test]
fn cross_check_against_burns_own_lion() {
    for dtype in [DType::F32, DType::BF16, DType::F16] {
        let mut rng = Rng(99);
        let ours = LionConfig::new().with_weight_decay(0.1).build();
        let theirs = burn::optim::LionConfig::new()
            .with_weight_decay(0.1)
            .build();
        let n = 4096;
        let init = random::<bf16>(&mut rng, n);
        let (mut a, mut b) = (tensor(&init, [n], dtype), tensor(&init, [n], dtype));
        let (mut sa, mut sb) = (None, None);
        for step in 0..10 {
            let g = random::<bf16>(&mut rng, n);
            let lr = 1e-2 / (1 + step) as f64;
            (a, sa) = ours.step(lr, a, tensor(&g, [n], dtype), sa);
            (b, sb) = theirs.step(lr, b, tensor(&g, [n], dtype), sb);
        }
        let (ma, mb) = (sa.unwrap().momentum, sb.unwrap().momentum);
        let differ = |x: &[u32], y: &[u32]| x.iter().zip(y).filter(|(x, y)| x != y).count();
        let params_differ = differ(&bits(&a), &bits(&b));
        let momentum_bits_differ = differ(&bits(&ma), &bits(&mb));
        let values = |t: &Tensor<1>| t.to_data().convert::<f32>().try_to_vec::<f32>().unwrap();
        let momentum_values_differ = values(&ma)
            .iter()
            .zip(values(&mb))
            .filter(|(x, y)| **x != *y)
            .count();
        println!(
            "{dtype:?}: after 10 steps, {params_differ} of {n} parameters and {momentum_values_differ} \
             momentum values differ from burn's Lion ({momentum_bits_differ} momentum bit patterns)"
        );
        if dtype == DType::F32 {
            assert_eq!(params_differ, 0);
            assert_eq!(momentum_values_differ, 0);
        }
    }
}

/// The one f32 difference: on the first step, a -0.0 gradient gives burn's Lion a -0.0 momentum
/// (`g * (1 - b2)`), the core +0.0 (`0 * b2 + g * (1 - b2)`); equal values, and the next steps
/// agree again.
#[test]
fn the_first_momentum_of_a_negative_zero_gradient() {
    let g = [-0.0f32, 1.0];
    let (_, ours) = LionConfig::new().build().step(
        0.1,
        tensor(&[1.0, 1.0], [2], DType::F32),
        tensor(&g, [2], DType::F32),
        None,
    );
    let (_, theirs) = burn::optim::LionConfig::new().build().step(
        0.1,
        tensor(&[1.0, 1.0], [2], DType::F32),
        tensor(&g, [2], DType::F32),
        None,
    );
    let (ours, theirs) = (
        bits(&ours.unwrap().momentum),
        bits(&theirs.unwrap().momentum),
    );
    assert_eq!(ours[0], 0.0f32.to_bits());
    assert_eq!(theirs[0], (-0.0f32).to_bits());
    assert_eq!(ours[1], theirs[1]);
}

#[derive(Module, Debug)]
struct Net {
    fc1: Linear,
    fc2: Linear,
}

impl Net {
    fn new(dev: &Device) -> Self {
        Self {
            fc1: LinearConfig::new(6, 16).init(dev),
            fc2: LinearConfig::new(16, 2).init(dev),
        }
    }

    fn loss(&self, x: Tensor<2>, y: Tensor<2>) -> Tensor<1> {
        (self.fc2.forward(self.fc1.forward(x).tanh()) - y)
            .powi_scalar(2)
            .mean()
    }

    /// `(path, values)` of every parameter.
    fn params(&self) -> Vec<(&'static str, Tensor<1>)> {
        let flat = |t: Tensor<2>| t.clone().reshape([t.shape().num_elements()]);
        vec![
            ("fc1.weight", flat(self.fc1.weight.val()).inner()),
            ("fc1.bias", self.fc1.bias.as_ref().unwrap().val().inner()),
            ("fc2.weight", flat(self.fc2.weight.val()).inner()),
            ("fc2.bias", self.fc2.bias.as_ref().unwrap().val().inner()),
        ]
    }

    fn param_bits(&self) -> Vec<Vec<u32>> {
        self.params().iter().map(|(_, t)| bits(t)).collect()
    }
}

fn batch(rng: &mut Rng, dev: &Device) -> (Tensor<2>, Tensor<2>) {
    let x = Tensor::<2>::from_data(TensorData::new(random::<f32>(rng, 8 * 6), [8, 6]), dev);
    let y = Tensor::<2>::from_data(TensorData::new(random::<f32>(rng, 8 * 2), [8, 2]), dev);
    (x, y)
}

fn train(mut model: Net, optim: &mut ModuleOptimizer, steps: usize, rng: &mut Rng) -> Net {
    let dev = Device::flex().autodiff();
    for _ in 0..steps {
        let (x, y) = batch(rng, &dev);
        let grads = GradientsParams::from_grads(model.loss(x, y).backward(), &model);
        model = optim.step(1e-2, model, grads);
    }
    model
}

/// Training interrupted by a record: three steps from `start` with `first`, whose record (as
/// bytes) `then` loads to take three more, on the batches of `Rng(seed)`. Returns the model and
/// the number of entries of the record.
fn resumed(
    start: &Net,
    seed: u64,
    mut first: ModuleOptimizer,
    then: ModuleOptimizer,
) -> (Net, usize) {
    let mut rng = Rng(seed);
    let model = train(start.clone(), &mut first, 3, &mut rng);
    let record_len = first.to_record().len();
    let mut then = then.from_bytes(first.into_bytes().unwrap()).unwrap();
    (train(model, &mut then, 3, &mut rng), record_len)
}

/// Through `ModuleOptimizer` with two parameter groups (no weight decay for biases), every
/// parameter of a real backward pass against the reference.
#[test]
fn module_optimizer_with_groups_matches_the_reference() {
    let dev = Device::flex().autodiff();
    let decay = LionConfig::new().with_weight_decay(0.5).build();
    let no_decay = LionConfig::new().build();
    let (decay_stats, no_decay_stats) = (decay.clone(), no_decay.clone());
    let mut optim =
        ModuleOptimizer::from(decay).with_group(ParamGroup::from_predicate("bias"), no_decay, None);
    let mut model = Net::new(&dev);
    let mut rng = Rng(5);
    let mut reference_state: Vec<(Vec<f32>, Vec<f32>)> = model
        .params()
        .iter()
        .map(|(_, t)| {
            (
                bits(t).iter().map(|b| f32::from_bits(*b)).collect(),
                vec![0.0; t.shape().num_elements()],
            )
        })
        .collect();
    for step in 0..5 {
        let (x, y) = batch(&mut rng, &dev);
        let grads = GradientsParams::from_grads(model.loss(x, y).backward(), &model);
        let ids = [
            model.fc1.weight.id,
            model.fc1.bias.as_ref().unwrap().id,
            model.fc2.weight.id,
            model.fc2.bias.as_ref().unwrap().id,
        ];
        for (i, (path, _)) in model.params().iter().enumerate() {
            let g: Vec<f32> = match i % 2 {
                0 => grads
                    .get::<2>(ids[i])
                    .unwrap()
                    .to_data()
                    .try_to_vec()
                    .unwrap(),
                _ => grads
                    .get::<1>(ids[i])
                    .unwrap()
                    .to_data()
                    .try_to_vec()
                    .unwrap(),
            };
            let hp = Hyperparams {
                lr: 1e-2,
                weight_decay: if path.ends_with("bias") {
                    0.0
                } else {
                    f64::from(0.5f32)
                },
                beta1: f64::from(0.9f32),
                beta2: f64::from(0.99f32),
            };
            let (p, m) = &mut reference_state[i];
            reference::step(p, &g, m, &hp).unwrap();
        }
        model = optim.step(1e-2, model, grads);
        for (i, (path, t)) in model.params().iter().enumerate() {
            assert_eq!(
                bits(t),
                ref_bits(&reference_state[i].0),
                "{path} after step {step}"
            );
        }
    }
    // Every parameter stepped in place: 5 steps x (2 weights, 2 biases).
    assert_eq!(
        decay_stats.stats(),
        Stats {
            in_place: 10,
            copied: 0,
            fallback: 0
        }
    );
    assert_eq!(
        no_decay_stats.stats(),
        Stats {
            in_place: 10,
            copied: 0,
            fallback: 0
        }
    );
}

/// A record written by this optimizer loads into burn's Lion, and the other way round; training
/// continues exactly as without the interruption.
#[test]
fn records_load_into_burns_lion_and_back() {
    let dev = Device::flex().autodiff();
    let start = Net::new(&dev);
    let ours = || LionConfig::new().with_weight_decay(0.1).init();
    let burns = || burn::optim::LionConfig::new().with_weight_decay(0.1).init();

    let a = train(start.clone(), &mut ours(), 6, &mut Rng(11));
    let (b, record_len) = resumed(&start, 11, ours(), burns());
    let (c, burns_record_len) = resumed(&start, 11, burns(), ours());
    assert_eq!(
        burns_record_len, record_len,
        "the same record entries as burn's Lion"
    );

    assert_eq!(
        b.param_bits(),
        a.param_bits(),
        "ours -> record -> burn's Lion"
    );
    assert_eq!(
        c.param_bits(),
        a.param_bits(),
        "burn's Lion -> record -> ours"
    );
    assert_ne!(a.param_bits(), start.param_bits());
}

/// Gradient clipping (a `ModuleOptimizer` feature) applies before our step as before burn's.
#[test]
fn gradient_clipping_is_applied() {
    let dev = Device::flex().autodiff();
    let start = Net::new(&dev);
    let clip = Some(GradientClippingConfig::Value(1e-3));
    let mut ours = LionConfig::new().with_grad_clipping(clip.clone()).init();
    let mut theirs = burn::optim::LionConfig::new()
        .with_grad_clipping(clip)
        .init();
    assert!(ours.has_gradient_clipping());
    let a = train(start.clone(), &mut ours, 4, &mut Rng(2));
    let b = train(start, &mut theirs, 4, &mut Rng(2));
    assert_eq!(a.param_bits(), b.param_bits());
}

/// A parameter the caller still holds (shared) or a strided one is copied once and stepped the
/// same way; the held tensor is untouched.
#[test]
fn shared_and_strided_parameters_are_copied_then_stepped() {
    let mut rng = Rng(8);
    let optim = LionConfig::new().with_weight_decay(0.3).build();
    let hp = optim.hyperparams(0.05);
    let (init, g) = (random::<f32>(&mut rng, 32), random::<f32>(&mut rng, 32));
    let mut expected = init.clone();
    reference::step(&mut expected, &g, &mut [0.0f32; 32], &hp).unwrap();

    let t = tensor(&init, [32], DType::F32);
    let keep = t.clone();
    let (stepped, _) = optim.step(0.05, t, tensor(&g, [32], DType::F32), None);
    assert_eq!(bits(&stepped), ref_bits(&expected));
    assert_eq!(bits(&keep), ref_bits(&init), "the held clone is untouched");
    assert_ne!(buffer_ptr(&stepped), buffer_ptr(&keep));
    assert_eq!(
        optim.stats(),
        Stats {
            in_place: 0,
            copied: 1,
            fallback: 0
        }
    );

    // A transposed view (strided): its logical elements are stepped.
    let t = tensor(&init, [4, 8], DType::F32).transpose();
    let logical: Vec<f32> = t.to_data().try_to_vec().unwrap();
    let mut expected = logical.clone();
    reference::step(&mut expected, &g, &mut [0.0f32; 32], &hp).unwrap();
    let (stepped, _) = optim.step(0.05, t, tensor(&g, [8, 4], DType::F32), None);
    assert_eq!(bits(&stepped), ref_bits(&expected));
    assert_eq!(optim.stats().copied, 2);
}

/// Off the fast path (f64 tensors, settings the core refuses), the step is burn's own Lion.
#[test]
fn f64_and_unsupported_settings_fall_back_to_burns_lion() {
    let mut rng = Rng(4);
    let (init, g) = (random::<f32>(&mut rng, 16), random::<f32>(&mut rng, 16));
    for (ours, theirs, dtype) in [
        (
            LionConfig::new().build(),
            burn::optim::LionConfig::new().build(),
            DType::F64,
        ),
        (
            LionConfig::new().with_beta_1(1.0).build(),
            burn::optim::LionConfig::new().with_beta_1(1.0).build(),
            DType::F32,
        ),
    ] {
        let (a, sa) = ours.step(
            0.1,
            tensor(&init, [16], dtype),
            tensor(&g, [16], dtype),
            None,
        );
        let (b, sb) = theirs.step(
            0.1,
            tensor(&init, [16], dtype),
            tensor(&g, [16], dtype),
            None,
        );
        assert_eq!(a.dtype(), dtype);
        assert_eq!(bits(&a), bits(&b));
        assert_eq!(bits(&sa.unwrap().momentum), bits(&sb.unwrap().momentum));
        assert_eq!(
            ours.stats(),
            Stats {
                in_place: 0,
                copied: 0,
                fallback: 1
            }
        );
    }
}

/// The optimizer's `Debug` shows its settings and counts (for logs).
#[test]
fn debug_output() {
    let optim: Lion = LionConfig::new().build();
    let text = format!("{optim:?}");
    assert!(
        text.contains("beta_1: 0.9") && text.contains("fallback: 0"),
        "{text}"
    );
}

// ------------------------------------------------------------------------------------------------
// 8-bit momentum (`Lion8bit`)

fn q8_state<const D: usize>(s: &Lion8bitState<D>) -> (Vec<u8>, Vec<f32>) {
    match s {
        Lion8bitState::Q8 { codes, absmax } => (codes.clone(), absmax.clone()),
        Lion8bitState::Full(_) => panic!("expected 8-bit momentum"),
    }
}

/// [`check_steps`] of `Lion8bit` on a tensor of 9 blocks (the last one partial), against
/// `reference::step_q8_with`.
fn check_8bit_against_reference<T: Element>(dtype: DType) {
    let optim = LionConfig::new().with_weight_decay(0.3).build_8bit();
    let n = 7 * 300;
    let (codes, _) = check_steps::<T, _, _>(
        &optim,
        dtype,
        0x8b17,
        [7, 300],
        (vec![127u8; n], vec![0.0f32; n.div_ceil(256)]),
        |p, g, (codes, absmax), lr| {
            let m = Q8Mut::new(codes, absmax).unwrap();
            reference::step_q8_with(p, g, m, &optim.hyperparams(lr), &StepOptions::default())
                .unwrap();
        },
        |state, m, what| assert_eq!(&q8_state(state), m, "{what}: 8-bit momentum"),
    );
    assert!(codes.iter().any(|&c| c != 127));
    assert_eq!(optim.stats().in_place, 6);
}

/// `Lion` and `Lion8bit` in every dtype.
#[test]
fn lion_and_lion8bit_are_bit_identical_to_the_reference_in_every_dtype() {
    check_against_reference::<f32>(DType::F32);
    check_against_reference::<bf16>(DType::BF16);
    check_against_reference::<f16>(DType::F16);
    check_8bit_against_reference::<f32>(DType::F32);
    check_8bit_against_reference::<bf16>(DType::BF16);
    check_8bit_against_reference::<f16>(DType::F16);
}

/// Through `ModuleOptimizer`: a record of the 8-bit optimizer (codes u8, scales f32) saved
/// mid-run and loaded into a fresh one continues bit for bit; a damaged record is refused.
#[test]
fn lion8bit_records_resume_bit_for_bit() {
    let dev = Device::flex().autodiff();
    let start = Net::new(&dev);
    let ours = || LionConfig::new().with_weight_decay(0.1).init_8bit();

    let a = train(start.clone(), &mut ours(), 6, &mut Rng(12));
    let (b, _) = resumed(&start, 12, ours(), ours());
    assert_eq!(b.param_bits(), a.param_bits(), "resumed from the record");
    assert_ne!(a.param_bits(), start.param_bits());

    // The 8-bit leaves round-trip; a damaged one (scales of another length) is refused.
    let state = Lion8bitState::<2>::Q8 {
        codes: vec![3, 127, 250],
        absmax: vec![0.5],
    };
    let mut sink = StateSink::default();
    state.state_flatten("p", &mut sink);
    let names: Vec<&str> = sink.tensors.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["p.codes", "p.absmax"]);
    assert_eq!(sink.tensors[0].1.dtype(), DType::U8);
    let source = |tensors: Vec<(String, TensorData)>| {
        let mut src = StateSource::default();
        for (name, data) in tensors {
            src.insert_tensor(name, data);
        }
        src
    };
    let mut src = source(sink.tensors);
    let back = Lion8bitState::<2>::state_unflatten("p", &mut src, &Device::flex()).unwrap();
    assert_eq!(q8_state(&back), (vec![3, 127, 250], vec![0.5]));
    for bad in [
        TensorData::new(vec![0.5f32, 0.5], [2]),
        TensorData::new(vec![f32::NAN], [1]),
        TensorData::new(vec![0.5f64], [1]),
    ] {
        let mut src = source(vec![
            ("p.codes".into(), TensorData::new(vec![3u8, 127, 250], [3])),
            ("p.absmax".into(), bad),
        ]);
        assert!(Lion8bitState::<2>::state_unflatten("p", &mut src, &Device::flex()).is_none());
    }
}

/// Off the fast path (f64) the 8-bit optimizer is burn's Lion with full momentum; an 8-bit
/// state met there is dequantized for it first (exactly: its values are f32).
#[test]
fn lion8bit_falls_back_to_burns_lion_with_full_momentum() {
    let mut rng = Rng(5);
    let (init, g) = (random::<f32>(&mut rng, 300), random::<f32>(&mut rng, 300));
    let ours = LionConfig::new().build_8bit();
    let theirs = burn::optim::LionConfig::new().build();
    // The parameter and its gradient in `dtype`.
    let inputs = |dtype| (tensor(&init, [300], dtype), tensor(&g, [300], dtype));
    let ((p, gr), (p2, gr2)) = (inputs(DType::F64), inputs(DType::F64));
    let ((a, sa), (b, sb)) = (ours.step(0.1, p, gr, None), theirs.step(0.1, p2, gr2, None));
    assert_eq!(bits(&a), bits(&b));
    let Some(Lion8bitState::Full(sa)) = sa else {
        panic!("expected full momentum")
    };
    assert_eq!(bits(&sa.momentum), bits(&sb.unwrap().momentum));

    // An 8-bit state (from an f32 step) meeting an f64 parameter.
    let (p, gr) = inputs(DType::F32);
    let (_, s8) = ours.step(0.1, p, gr, None);
    let (codes, absmax) = q8_state(&s8.clone().unwrap());
    let decoded: Vec<f32> = (0..300)
        .map(|i| lion_optim::Q8_MAP[codes[i] as usize] * absmax[i / 256])
        .collect();
    let full = LionState::new(tensor(&decoded, [300], DType::F64));
    let ((p, gr), (p2, gr2)) = (inputs(DType::F64), inputs(DType::F64));
    let ((c, sc), (d, sd)) = (
        ours.step(0.1, p, gr, s8),
        theirs.step(0.1, p2, gr2, Some(full)),
    );
    assert_eq!(bits(&c), bits(&d));
    let Some(Lion8bitState::Full(sc)) = sc else {
        panic!("expected full momentum")
    };
    assert_eq!(bits(&sc.momentum), bits(&sd.unwrap().momentum));
    assert_eq!(ours.stats().fallback, 2);
}

/// A state of another length (a record of another model) panics with a message naming both
/// (burn's optimizer API has no error channel).
#[test]
#[should_panic(expected = "an 8-bit momentum state of 3 codes and 1 scales for a parameter of 16")]
fn lion8bit_state_of_another_length_panics_with_a_message() {
    let optim = LionConfig::new().build_8bit();
    let z = [0.5f32; 16];
    let state = Lion8bitState::Q8 {
        codes: vec![127; 3],
        absmax: vec![0.0],
    };
    let _ = optim.step(
        0.1,
        tensor(&z, [16], DType::F32),
        tensor(&z, [16], DType::F32),
        Some(state),
    );
}
