//! A 2-32-32-3 multilayer perceptron with ReLU and a softmax cross-entropy loss, written out
//! plainly: the forward pass of one sample, and its backward pass, which adds the sample's
//! gradient into a [`Mlp`] of gradients.

use lion_optim_test_support::Rng;

/// Inputs (a point in the plane).
pub const IN: usize = 2;
/// Hidden units per hidden layer.
pub const H: usize = 32;
/// Outputs (one logit per class).
pub const OUT: usize = 3;

/// The parameters of the network, their gradients, or anything else of their shape (the
/// momentum: `Mlp<bf16>`, the codes of 8-bit momentum: `Mlp<u8>`). Weights are row-major
/// `[outputs][inputs]`: `w1[j * IN + i]` connects input `i` to hidden unit `j`.
pub struct Mlp<T = f32> {
    pub w1: [T; H * IN],
    pub b1: [T; H],
    pub w2: [T; H * H],
    pub b2: [T; H],
    pub w3: [T; OUT * H],
    pub b3: [T; OUT],
}

/// What the backward pass needs from the forward pass of one sample.
pub struct Activations {
    pub h1: [f32; H],
    pub h2: [f32; H],
    /// The softmax of the logits: the predicted probabilities.
    pub probs: [f32; OUT],
}

impl<T: Copy> Mlp<T> {
    /// Every element `x`.
    pub const fn filled(x: T) -> Self {
        Mlp {
            w1: [x; H * IN],
            b1: [x; H],
            w2: [x; H * H],
            b2: [x; H],
            w3: [x; OUT * H],
            b3: [x; OUT],
        }
    }

    /// The number of elements (parameters).
    pub const LEN: usize = H * IN + H + H * H + H + OUT * H + OUT;

    /// The three weight matrices and the three biases: the optimizer's two parameter groups.
    pub fn groups_mut(&mut self) -> ([&mut [T]; 3], [&mut [T]; 3]) {
        (
            [&mut self.w1, &mut self.w2, &mut self.w3],
            [&mut self.b1, &mut self.b2, &mut self.b3],
        )
    }

    /// [`groups_mut`](Self::groups_mut), for reading.
    pub fn groups(&self) -> ([&[T]; 3], [&[T]; 3]) {
        (
            [&self.w1, &self.w2, &self.w3],
            [&self.b1, &self.b2, &self.b3],
        )
    }

    /// Sets every element to `x`.
    pub fn fill(&mut self, x: T) {
        let (w, b) = self.groups_mut();
        w.into_iter().chain(b).for_each(|t| t.fill(x));
    }
}

impl Mlp {
    /// All zeros.
    pub const ZERO: Mlp = Mlp::filled(0.0);

    /// Weights normal with variance `2 / fan_in` (He), biases zero; the same for a given seed.
    pub fn init(&mut self, seed: u64) {
        let mut rng = Rng(seed);
        let mut fill = |w: &mut [f32], fan_in: usize| {
            let scale = libm::sqrtf(2.0 / fan_in as f32);
            w.iter_mut().for_each(|x| *x = scale * rng.normal());
        };
        fill(&mut self.w1, IN);
        fill(&mut self.w2, H);
        fill(&mut self.w3, H);
        self.b1 = [0.0; H];
        self.b2 = [0.0; H];
        self.b3 = [0.0; OUT];
    }

    /// The forward pass of one point: fills `a` and returns the loss `-ln p[class]`.
    pub fn forward(&self, x: [f32; IN], class: usize, a: &mut Activations) -> f32 {
        layer(&self.w1, &self.b1, &x, &mut a.h1);
        a.h1.iter_mut().for_each(relu);
        layer(&self.w2, &self.b2, &a.h1, &mut a.h2);
        a.h2.iter_mut().for_each(relu);
        let mut logits = [0.0; OUT];
        layer(&self.w3, &self.b3, &a.h2, &mut logits);
        // Softmax, shifted by the largest logit so that exp cannot overflow.
        let max = logits.iter().fold(f32::NEG_INFINITY, |m, &z| m.max(z));
        let mut sum = 0.0;
        for (p, z) in a.probs.iter_mut().zip(logits) {
            *p = libm::expf(z - max);
            sum += *p;
        }
        a.probs.iter_mut().for_each(|p| *p /= sum);
        -libm::logf(a.probs[class].max(1e-30))
    }

    /// The class with the highest score.
    pub fn predict(&self, x: [f32; IN]) -> usize {
        let mut a = Activations::default();
        self.forward(x, 0, &mut a);
        (0..OUT).fold(
            0,
            |best, k| if a.probs[k] > a.probs[best] { k } else { best },
        )
    }

    /// The backward pass of one point (after its `forward` into `a`): adds `scale` times the
    /// gradient of its loss into `grad` (`scale` = 1 / batch size gives the batch mean).
    pub fn backward(
        &self,
        x: [f32; IN],
        class: usize,
        a: &Activations,
        scale: f32,
        grad: &mut Mlp,
    ) {
        // d loss / d logits = probs - one_hot(class).
        let mut d3 = a.probs;
        d3[class] -= 1.0;
        d3.iter_mut().for_each(|d| *d *= scale);
        let mut d2 = [0.0; H];
        layer_backward(&self.w3, &a.h2, &d3, &mut grad.w3, &mut grad.b3, &mut d2);
        relu_backward(&a.h2, &mut d2);
        let mut d1 = [0.0; H];
        layer_backward(&self.w2, &a.h1, &d2, &mut grad.w2, &mut grad.b2, &mut d1);
        relu_backward(&a.h1, &mut d1);
        let mut dx = [0.0; IN];
        layer_backward(&self.w1, &x, &d1, &mut grad.w1, &mut grad.b1, &mut dx);
    }
}

impl Default for Activations {
    fn default() -> Self {
        Activations {
            h1: [0.0; H],
            h2: [0.0; H],
            probs: [0.0; OUT],
        }
    }
}

/// `y = W x + b` (`W` is `y.len()` rows of `x.len()`).
fn layer(w: &[f32], b: &[f32], x: &[f32], y: &mut [f32]) {
    for (j, yj) in y.iter_mut().enumerate() {
        let row = &w[j * x.len()..(j + 1) * x.len()];
        *yj = b[j] + row.iter().zip(x).map(|(w, x)| w * x).sum::<f32>();
    }
}

/// The gradients of `y = W x + b` from `dy`: adds `dy xᵀ` into `dw` and `dy` into `db`, and
/// sets `dx = Wᵀ dy`.
fn layer_backward(
    w: &[f32],
    x: &[f32],
    dy: &[f32],
    dw: &mut [f32],
    db: &mut [f32],
    dx: &mut [f32],
) {
    dx.iter_mut().for_each(|d| *d = 0.0);
    for (j, &dyj) in dy.iter().enumerate() {
        db[j] += dyj;
        let row = j * x.len()..(j + 1) * x.len();
        for ((dw, &w), (&x, dx)) in dw[row.clone()]
            .iter_mut()
            .zip(&w[row])
            .zip(x.iter().zip(dx.iter_mut()))
        {
            *dw += dyj * x;
            *dx += dyj * w;
        }
    }
}

fn relu(x: &mut f32) {
    *x = x.max(0.0);
}

/// ReLU's gradient: zero where the unit was off.
fn relu_backward(h: &[f32], d: &mut [f32]) {
    for (d, &h) in d.iter_mut().zip(h) {
        if h <= 0.0 {
            *d = 0.0;
        }
    }
}
