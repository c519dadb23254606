//! The Lion step, written once: generic over the instruction set `S` (with `N` lanes) and over
//! the element types of parameters `P`, gradients `G` and momentum `M`.
//!
//! One pass over memory: each chunk of `N` elements is loaded (3 reads), updated in registers and
//! stored (2 writes). The tail (fewer than `N` elements) is copied into zero-padded chunks and
//! goes through the very same body, so there is no second copy of the math to get wrong.

use crate::element::Element;
use crate::hyper::Consts;
use crate::simd::Simd;

/// The step's constants, splatted once per call.
struct Lanes<F> {
    decay: F,
    lr: F,
    beta1: F,
    one_minus_beta1: F,
    beta2: F,
    one_minus_beta2: F,
}

impl<F: Copy> Lanes<F> {
    #[inline(always)]
    fn new<S: Simd<N, F32 = F>, const N: usize>(s: S, k: &Consts) -> Self {
        Self {
            decay: s.splat(k.decay),
            lr: s.splat(k.lr),
            beta1: s.splat(k.beta1),
            one_minus_beta1: s.splat(k.one_minus_beta1),
            beta2: s.splat(k.beta2),
            one_minus_beta2: s.splat(k.one_minus_beta2),
        }
    }
}

/// Runs one Lion step over equally long slices. Lengths are checked by the caller.
#[inline(always)]
pub(crate) fn lion<S, const N: usize, P, G, M>(
    s: S,
    params: &mut [P],
    grads: &[G],
    momentum: &mut [M],
    k: &Consts,
) where
    S: Simd<N>,
    P: Element,
    G: Element,
    M: Element,
{
    debug_assert!(params.len() == grads.len() && params.len() == momentum.len());
    let v = Lanes::new(s, k);
    let (p_chunks, p_tail) = params.as_chunks_mut::<N>();
    let (g_chunks, g_tail) = grads.as_chunks::<N>();
    let (m_chunks, m_tail) = momentum.as_chunks_mut::<N>();
    for ((p, g), m) in p_chunks.iter_mut().zip(g_chunks).zip(m_chunks.iter_mut()) {
        body(s, &v, p, g, m);
    }
    let n = p_tail.len();
    if n > 0 {
        let (mut p, mut g, mut m) = ([P::default(); N], [G::default(); N], [M::default(); N]);
        p[..n].copy_from_slice(p_tail);
        g[..n].copy_from_slice(g_tail);
        m[..n].copy_from_slice(m_tail);
        body(s, &v, &mut p, &g, &mut m);
        p_tail.copy_from_slice(&p[..n]);
        m_tail.copy_from_slice(&m[..n]);
    }
}

/// Lion on `N` elements, in exactly the order of operations of `reference::step`.
#[inline(always)]
fn body<S, const N: usize, P, G, M>(
    s: S,
    k: &Lanes<S::F32>,
    p: &mut [P; N],
    g: &[G; N],
    m: &mut [M; N],
) where
    S: Simd<N>,
    P: Element,
    G: Element,
    M: Element,
{
    let (param, grad, mom) = (P::load(s, p), G::load(s, g), M::load(s, m));
    let decayed = s.mul(param, k.decay);
    let c = s.add(s.mul(mom, k.beta1), s.mul(grad, k.one_minus_beta1));
    let new_param = s.sub(decayed, s.signed(k.lr, c)); // lr * sign(c)
    let new_mom = s.add(s.mul(mom, k.beta2), s.mul(grad, k.one_minus_beta2));
    P::store(s, new_param, p);
    M::store(s, new_mom, m);
}
