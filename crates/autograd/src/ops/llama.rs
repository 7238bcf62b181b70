//! The ops of Llama-family decoders (SmolLM2, Qwen2.5/3, Llama 3.2) besides
//! attention and rotary embeddings ([`super::rope`]): RMSNorm, SiLU and the
//! fused SwiGLU gate of the MLP. The loops are in
//! [`crate::kernels::rmsnorm`] and [`crate::kernels::swiglu`].

use ndarray::IxDyn;

use super::elementwise::Derivative;
use crate::float::Float;
use crate::kernels::rmsnorm::{rmsnorm_backward, rmsnorm_forward};
use crate::kernels::swiglu::{silu, silu_grad, swiglu_backward, swiglu_forward};
use crate::tape::{contiguous, Tape, Tensor, Var};

impl<T: Float> Tape<T> {
    /// RMSNorm over the last axis (transformers' `LlamaRMSNorm`):
    /// x: (..., C), weight: (C) -> y: (..., C)
    ///
    /// ```text
    /// y = x * rstd * weight,      rstd = 1 / sqrt(mean(x^2) + eps)
    /// dx = rstd * (dxhat - xhat * mean(dxhat * xhat)),  xhat = x * rstd,  dxhat = dy * weight
    /// dweight = sum over rows of dy * xhat
    /// ```
    /// For Qwen3's per-head `q_norm`/`k_norm`, view x as (N, NH, hd) and pass
    /// a weight of (hd). The forward saves rstd per row (see
    /// [`crate::kernels::rmsnorm`]).
    pub fn rms_norm(&self, x: &Var<T>, weight: &Var<T>, eps: f64) -> Var<T> {
        let sx = x.shape().to_vec();
        let c = *sx.last().unwrap_or(&0);
        assert!(
            c > 0 && weight.shape() == [c],
            "rms_norm: weight {:?} does not match input {sx:?} (expected [{c}])",
            weight.shape()
        );
        let n = x.value().len() / c;
        let inp = contiguous(x.value());
        let w = contiguous(weight.value());
        let mut out = vec![T::zero(); n * c];
        let mut rstd = vec![T::zero(); n];
        rmsnorm_forward(&mut out, &mut rstd, &inp, &w, c, T::cast(eps));
        drop((inp, w));
        let y = Tensor::from_shape_vec(IxDyn(&sx), out).unwrap();
        if !self.needs_grad(&[x, weight]) {
            return self.record("rms_norm", y, &[x, weight], |_| vec![None, None]);
        }
        let (x_saved, w_saved) = (x.value_arc(), weight.value_arc());
        self.record("rms_norm", y, &[x, weight], move |dy| {
            let (dout, inp, w) = (contiguous(dy), contiguous(&x_saved), contiguous(&w_saved));
            let mut dinp = vec![T::zero(); n * c];
            let mut dweight = vec![T::zero(); c];
            rmsnorm_backward(&mut dinp, &mut dweight, &dout, &inp, &w, &rstd, c);
            vec![
                Some(Tensor::from_shape_vec(IxDyn(x_saved.shape()), dinp).unwrap()),
                Some(Tensor::from_shape_vec(IxDyn(&[c]), dweight).unwrap()),
            ]
        })
    }

    /// y = silu(x) = x * sigmoid(x)      dx = dy * s (1 + x (1 - s)),  s = sigmoid(x)
    ///
    /// Sigmoid as `1 / (1 + exp(-x))` through [`Float::exp_fast`],
    /// branch-free (see [`crate::kernels::swiglu`]).
    pub fn silu(&self, x: &Var<T>) -> Var<T> {
        self.unary("silu", x, silu, Derivative::OfInput(silu_grad))
    }

    /// The gate of Llama's MLP, fused: gate, up: the same shape -> y: that shape
    ///
    /// ```text
    /// y = silu(gate) * up = gate * s * up,        s = sigmoid(gate)
    /// dgate = dy * up * s (1 + gate (1 - s))      dup = dy * gate * s
    /// ```
    /// One node and one pass each way instead of `mul(silu(gate), up)`'s two
    /// (see [`crate::kernels::swiglu`]).
    pub fn swiglu(&self, gate: &Var<T>, up: &Var<T>) -> Var<T> {
        assert!(
            gate.shape() == up.shape(),
            "swiglu: gate {:?} and up {:?} differ in shape",
            gate.shape(),
            up.shape()
        );
        let shape = gate.shape().to_vec();
        let (g, u) = (contiguous(gate.value()), contiguous(up.value()));
        let mut out = vec![T::zero(); g.len()];
        swiglu_forward(&mut out, &g, &u);
        drop((g, u));
        let y = Tensor::from_shape_vec(IxDyn(&shape), out).unwrap();
        if !self.needs_grad(&[gate, up]) {
            return self.record("swiglu", y, &[gate, up], |_| vec![None, None]);
        }
        let (gate_saved, up_saved) = (gate.value_arc(), up.value_arc());
        self.record("swiglu", y, &[gate, up], move |dy| {
            let (dout, g, u) = (
                contiguous(dy),
                contiguous(&gate_saved),
                contiguous(&up_saved),
            );
            let mut dgate = vec![T::zero(); dout.len()];
            let mut dup = vec![T::zero(); dout.len()];
            swiglu_backward(&mut dgate, &mut dup, &dout, &g, &u);
            vec![
                Some(Tensor::from_shape_vec(IxDyn(&shape), dgate).unwrap()),
                Some(Tensor::from_shape_vec(IxDyn(&shape), dup).unwrap()),
            ]
        })
    }
}
