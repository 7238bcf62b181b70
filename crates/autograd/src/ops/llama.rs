//! The ops of Llama-family decoders (SmolLM2, Qwen2.5/3, Llama 3.2): RMSNorm. The loops are in
//! [`crate::kernels::rmsnorm`].

use ndarray::IxDyn;

use crate::float::Float;
use crate::kernels::rmsnorm::{rmsnorm_backward, rmsnorm_forward};
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
}
