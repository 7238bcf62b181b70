//! SiLU and the SwiGLU gate of Llama's MLP (`act_fn(gate_proj(x)) *
//! up_proj(x)`), fused: one pass forward, one pass backward for both inputs.
//!
//! `sigmoid(g) = 1 / (1 + exp(-g))` goes through [`Float::exp_fast`]
//! without a branch, so the loops vectorize: for very negative `g`,
//! `exp(-g)` overflows to `inf` and `sigmoid` is 0, as it should be.
//!
//! Elementwise, split over rayon in fixed chunks above [`PAR_MIN_ELEMENTS`].

use rayon::prelude::*;

use super::{PAR_CHUNK, PAR_MIN_ELEMENTS};
use crate::float::Float;

/// `1 / (1 + exp(-g))`, branch-free.
#[inline(always)]
pub fn sigmoid_fast<T: Float>(g: T) -> T {
    T::one() / (T::one() + (-g).exp_fast())
}

/// `silu(g) = g * sigmoid(g)`.
#[inline(always)]
pub fn silu<T: Float>(g: T) -> T {
    g * sigmoid_fast(g)
}

/// `d silu(g) / dg = s (1 + g (1 - s))`, `s = sigmoid(g)`.
#[inline(always)]
pub fn silu_grad<T: Float>(g: T) -> T {
    let s = sigmoid_fast(g);
    s * (T::one() + g * (T::one() - s))
}

/// ```text
/// out = silu(gate) * up = gate * sigmoid(gate) * up
/// ```
/// gate, up, out: the same length.
pub fn swiglu_forward<T: Float>(out: &mut [T], gate: &[T], up: &[T]) {
    assert_eq!(gate.len(), out.len(), "swiglu_forward: gate and out differ");
    assert_eq!(up.len(), out.len(), "swiglu_forward: up and out differ");
    let run = |o: &mut [T], g: &[T], u: &[T]| {
        for (o, (&g, &u)) in o.iter_mut().zip(g.iter().zip(u)) {
            *o = silu(g) * u;
        }
    };
    if out.len() < PAR_MIN_ELEMENTS {
        run(out, gate, up);
    } else {
        out.par_chunks_mut(PAR_CHUNK)
            .zip(gate.par_chunks(PAR_CHUNK).zip(up.par_chunks(PAR_CHUNK)))
            .for_each(|(o, (g, u))| run(o, g, u));
    }
}

/// The backward of [`swiglu_forward`], both gradients in one pass:
///
/// ```text
/// s      = sigmoid(gate)
/// dgate  = dout * up * s (1 + gate (1 - s))
/// dup    = dout * gate * s
/// ```
/// `dgate` and `dup` are overwritten.
pub fn swiglu_backward<T: Float>(dgate: &mut [T], dup: &mut [T], dout: &[T], gate: &[T], up: &[T]) {
    let n = dout.len();
    assert!(
        dgate.len() == n && dup.len() == n && gate.len() == n && up.len() == n,
        "swiglu_backward: buffers differ in length"
    );
    let run = |dg: &mut [T], du: &mut [T], dy: &[T], g: &[T], u: &[T]| {
        for i in 0..dy.len() {
            let s = sigmoid_fast(g[i]);
            let gs = g[i] * s;
            dg[i] = dy[i] * u[i] * (s + gs * (T::one() - s));
            du[i] = dy[i] * gs;
        }
    };
    if n < PAR_MIN_ELEMENTS {
        run(dgate, dup, dout, gate, up);
    } else {
        dgate
            .par_chunks_mut(PAR_CHUNK)
            .zip(dup.par_chunks_mut(PAR_CHUNK))
            .zip(dout.par_chunks(PAR_CHUNK))
            .zip(gate.par_chunks(PAR_CHUNK).zip(up.par_chunks(PAR_CHUNK)))
            .for_each(|(((dg, du), dy), (g, u))| run(dg, du, dy, g, u));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sigmoid_saturates_without_nan() {
        assert_eq!(sigmoid_fast(-1e4f32), 0.0);
        assert_eq!(sigmoid_fast(1e4f32), 1.0);
        assert_eq!(silu(-1e4f32), 0.0);
        assert_eq!(silu(1e4f32), 1e4);
        assert!((silu(0.5f64) - 0.5 / (1.0 + (-0.5f64).exp())).abs() < 1e-15);
        assert!(silu_grad(-1e4f32).abs() < 1e-30 && silu_grad(-1e4f32).is_finite());
    }
}
