//! The LM head fused with sequence log-probs, chunked over the vocabulary.
//!
//! The tied LM head computes `logits = h @ wte^T` for every position, a
//! `(S*T, V)` tensor: for GPT-2 at 16 x 128 tokens that is 400 MB. DPO only
//! needs one log-prob per scored position, so this op
//!
//! 1. keeps only the scored rows of `h` (prompt and padding rows never reach
//!    the LM head: in DPO that is often half of the work), and
//! 2. walks the vocabulary in chunks of `VC` rows of `wte`, keeping a running
//!    max `m` and sum `s` per row (online log-sum-exp):
//!
//! ```text
//! z     = h_r @ wte[v0..v1]^T                       (R, VC)   one chunk of logits
//! m'    = max(m, max_v z_v)
//! s     = s * exp(m - m') + sum_v exp(z_v - m')     lse_r = m + log s at the end
//! logp_r = z_r[y_r] - lse_r
//! ```
//!
//! Backward, per chunk, with `g_r = dlogp[seq(r)]`:
//!
//! ```text
//! dz      = g_r * ([v == y_r] - exp(z_v - lse_r))   (R, VC)
//! dh_r   += dz @ wte[v0..v1]                        (R, C)
//! dwte[v0..v1] = dz^T @ h                           (VC, C)
//! ```
//!
//! so the memory of the output layer is `R x VC`, whatever the vocabulary.
//! When the whole vocabulary fits in one chunk, the forward keeps that chunk
//! for the backward; otherwise the backward recomputes each chunk (one extra
//! GEMM per chunk, the price of bounded memory).
//!
//! The loops are two slice-level kernels on the scored rows,
//! [`lm_head_logprobs_forward`] and [`lm_head_logprobs_backward`]; the op
//! [`crate::ops::logprobs::LmHeadLogprobs::apply`] gathers the scored rows of `h`, sums each
//! sequence's log-probs, and scatters `dh` back to the positions.

use ndarray::{ArrayView2, ArrayViewMut2, CowArray, Ix2};
use rayon::prelude::*;

use super::gemm::gemm_with;
use super::logprobs::{row_max, row_sum_exp};
use crate::bf16_matrix::Bf16Matrix;
use crate::float::Float;
use crate::precision::Precision;

/// The sizes of one LM-head call, and the arithmetic of its GEMMs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LmHeadDims {
    /// Scored rows R.
    pub r: usize,
    /// Channels C.
    pub c: usize,
    /// Vocabulary size V.
    pub v: usize,
    /// Vocabulary rows per chunk VC (`>= 1`; the last chunk may be shorter).
    pub vc: usize,
    /// The GEMMs' precision (the logits, dh, dwte); the log-softmax, its
    /// gradient and the sums stay f32 either way.
    pub precision: Precision,
}

impl LmHeadDims {
    /// The vocabulary chunks `[v0, v1)`, in order.
    pub fn chunks(&self) -> impl Iterator<Item = (usize, usize)> {
        let (v, vc) = (self.v, self.vc);
        (0..v).step_by(vc).map(move |v0| (v0, (v0 + vc).min(v)))
    }

    /// Panics unless the kernel inputs have these sizes.
    fn check<T: Float>(&self, h: &[T], wte: HeadWeight<'_, T>, targets: &[usize]) {
        assert!(self.vc > 0, "lm_head_logprobs: empty vocabulary chunks");
        assert_eq!(
            h.len(),
            self.r * self.c,
            "lm_head_logprobs: h is not (R, C)"
        );
        assert_eq!(
            wte.len(),
            self.v * self.c,
            "lm_head_logprobs: wte is not (V, C)"
        );
        assert_eq!(
            targets.len(),
            self.r,
            "lm_head_logprobs: targets are not (R)"
        );
    }
}

/// The LM head's weight (V, C) as the kernels read it: one vocabulary chunk
/// at a time.
#[derive(Debug, Clone, Copy)]
pub enum HeadWeight<'a, T> {
    /// Values of the tape's float type (V*C, row-major); the GEMMs run in
    /// [`LmHeadDims::precision`].
    Values(&'a [T]),
    /// A frozen bf16 matrix ([`Bf16Matrix`]): each chunk is widened for its
    /// GEMMs and dropped after them, and the GEMMs run in bf16.
    Bf16(&'a Bf16Matrix),
}

impl<'a, T: Float> HeadWeight<'a, T> {
    /// Number of values (V*C).
    fn len(&self) -> usize {
        match self {
            HeadWeight::Values(w) => w.len(),
            HeadWeight::Bf16(w) => w.len(),
        }
    }

    /// Rows `v0..v1`: (v1 - v0, C), borrowed or widened.
    fn chunk(&self, c: usize, v0: usize, v1: usize) -> CowArray<'a, T, Ix2> {
        match *self {
            HeadWeight::Values(w) => {
                let rows = ArrayView2::from_shape((v1 - v0, c), &w[v0 * c..v1 * c]).unwrap();
                CowArray::from(rows)
            }
            HeadWeight::Bf16(w) => CowArray::from(w.rows_as::<T>(v0, v1)),
        }
    }

    /// The precision of this weight's GEMMs: bf16 for a bf16 matrix.
    fn precision(&self, dims: LmHeadDims) -> Precision {
        match self {
            HeadWeight::Values(_) => dims.precision,
            HeadWeight::Bf16(_) => Precision::Bf16,
        }
    }
}

/// `z = h @ w_chunk^T`      h: (R, C), w_chunk: (VC, C) -> z: (R, VC)
fn chunk_logits<T: Float>(
    precision: Precision,
    h: ArrayView2<'_, T>,
    w_chunk: ArrayView2<'_, T>,
) -> Vec<T> {
    let (rows, vc) = (h.nrows(), w_chunk.nrows());
    let mut z = vec![T::zero(); rows * vc];
    let z_view = ArrayViewMut2::from_shape((rows, vc), &mut z).unwrap();
    gemm_with(precision, T::one(), h, w_chunk.t(), T::zero(), z_view);
    z
}

/// The forward on the scored rows, one vocabulary chunk at a time, with a
/// running max `m` and sum `s` per row (online log-sum-exp):
///
/// ```text
/// for each chunk [v0, v1) of the vocabulary:
///     z    = h @ wte[v0..v1]^T                                 (R, VC)
///     m'   = max(m, max_v z[r, v])
///     s    = s * exp(m - m') + sum_v exp(z[r, v] - m');   m = m'
///     zy_r = z[r, targets[r] - v0]                          if the target is in the chunk
/// lse[r]  = m + log s
/// logp[r] = zy_r - lse[r]
/// ```
/// h: (R, C) the hidden states of the scored rows, wte: (V, C), targets: (R)
/// in `0..V` -> logp, lse: (R), overwritten. Returns the logits (R, V) when
/// one chunk covers the vocabulary (`VC >= V`), for the backward to reuse
/// instead of recomputing them; `None` otherwise.
pub fn lm_head_logprobs_forward<T: Float>(
    logp: &mut [T],
    lse: &mut [T],
    h: &[T],
    wte: HeadWeight<'_, T>,
    targets: &[usize],
    dims: LmHeadDims,
) -> Option<Vec<T>> {
    dims.check(h, wte, targets);
    let LmHeadDims { r: rows, c, v, .. } = dims;
    assert!(logp.len() == rows && lse.len() == rows);
    let h = ArrayView2::from_shape((rows, c), h).unwrap();
    let precision = wte.precision(dims);
    let mut running_max = vec![T::neg_infinity(); rows];
    let mut running_sum = vec![T::zero(); rows];
    let mut target_logit = vec![T::zero(); rows];
    let mut kept_logits = None;
    for (v0, v1) in dims.chunks() {
        let z = chunk_logits(precision, h, wte.chunk(c, v0, v1).view()); // (R, VC)
        z.par_chunks(v1 - v0)
            .zip(running_max.par_iter_mut())
            .zip(running_sum.par_iter_mut())
            .zip(target_logit.par_iter_mut())
            .zip(targets.par_iter())
            .for_each(|((((z_row, m), s), logit), &y)| {
                // pass 1: the new running max
                let new_max = m.max(row_max(z_row));
                // pass 2: the running sum, rescaled to the new max, plus this chunk's
                let chunk_sum = row_sum_exp(z_row, new_max);
                *s = *s * (*m - new_max).exp() + chunk_sum;
                *m = new_max;
                // pass 3: gather the target's logit if it is in this chunk
                if (v0..v1).contains(&y) {
                    *logit = z_row[y - v0];
                }
            });
        if v1 - v0 == v {
            kept_logits = Some(z);
        }
    }
    for r in 0..rows {
        lse[r] = running_max[r] + running_sum[r].ln();
        logp[r] = target_logit[r] - lse[r];
    }
    kept_logits
}

/// The backward of [`lm_head_logprobs_forward`], one vocabulary chunk at a
/// time (its logits recomputed, or taken from `logits`, the forward's
/// return value, when one chunk covers the vocabulary):
///
/// ```text
/// dz[r, v]      = dlogp[r] * ([v == targets[r]] - exp(z[r, v] - lse[r]))   (R, VC), in place over z
/// dh           += dz @ wte[v0..v1]                                          (R, C)
/// dwte[v0..v1]  = dz^T @ h                                                  (VC, C)
/// ```
/// dh: (R, C) is accumulated into (`+=`), dwte: (V, C) is overwritten, or
/// not computed at all when `None` (a frozen head: no GEMM for it);
/// dlogp: (R) the gradient of each scored row's log-prob; h, wte, targets,
/// lse as in the forward.
#[allow(clippy::too_many_arguments)]
pub fn lm_head_logprobs_backward<T: Float>(
    dh: &mut [T],
    mut dwte: Option<&mut [T]>,
    dlogp: &[T],
    h: &[T],
    wte: HeadWeight<'_, T>,
    targets: &[usize],
    lse: &[T],
    logits: Option<Vec<T>>,
    dims: LmHeadDims,
) {
    dims.check(h, wte, targets);
    let LmHeadDims { r: rows, c, v, .. } = dims;
    assert!(dh.len() == rows * c && dwte.as_ref().is_none_or(|d| d.len() == v * c));
    assert!(dlogp.len() == rows && lse.len() == rows);
    if let Some(z) = &logits {
        assert!(
            dims.vc >= v && z.len() == rows * v,
            "lm_head_logprobs_backward: saved logits need one chunk of (R, V)"
        );
    }
    let h = ArrayView2::from_shape((rows, c), h).unwrap();
    let precision = wte.precision(dims);
    let mut dh = ArrayViewMut2::from_shape((rows, c), dh).unwrap();
    let mut logits = logits;
    for (v0, v1) in dims.chunks() {
        let w_chunk = wte.chunk(c, v0, v1);
        let w_chunk = w_chunk.view();
        // dz = g * ([v == y] - softmax), in place over the chunk's logits: (R, VC)
        let mut dz = logits
            .take()
            .unwrap_or_else(|| chunk_logits(precision, h, w_chunk));
        dz.par_chunks_mut(v1 - v0)
            .zip(dlogp.par_iter())
            .zip(lse.par_iter())
            .zip(targets.par_iter())
            .for_each(|(((row, &g), &lse_r), &y)| {
                row.iter_mut()
                    .for_each(|x| *x = -g * (*x - lse_r).exp_fast());
                if (v0..v1).contains(&y) {
                    row[y - v0] += g;
                }
            });
        let dz = ArrayView2::from_shape((rows, v1 - v0), &dz).unwrap();
        let dh_view = dh.view_mut();
        match dwte.as_deref_mut() {
            Some(dwte) => {
                let dwte_chunk =
                    ArrayViewMut2::from_shape((v1 - v0, c), &mut dwte[v0 * c..v1 * c]).unwrap();
                rayon::join(
                    || gemm_with(precision, T::one(), dz, w_chunk, T::one(), dh_view),
                    || gemm_with(precision, T::one(), dz.t(), h, T::zero(), dwte_chunk),
                );
            }
            None => gemm_with(precision, T::one(), dz, w_chunk, T::one(), dh_view),
        }
    }
}
