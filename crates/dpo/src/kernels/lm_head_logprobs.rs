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

use std::sync::Arc;

use autograd::kernels::gemm::gemm;
use autograd::{Float, Tape, Tensor, Var};
use ndarray::{Array2, ArrayView2, Axis, IxDyn};
use rayon::prelude::*;

use super::sequence_logprobs::{check_targets, row_max, row_sum_exp, IGNORE_INDEX};

/// Options of the fused LM-head log-prob op.
#[derive(Debug, Clone, Copy)]
pub struct LmHeadLogprobs {
    /// Upper bound on the elements of one logits chunk (`R x VC`).
    pub chunk_elements: usize,
}

impl Default for LmHeadLogprobs {
    fn default() -> Self {
        LmHeadLogprobs {
            chunk_elements: 1 << 24,
        }
    }
}

/// The scored rows of a batch: where they are, what they score, whose they are.
struct ScoredRows {
    /// Flat row index `s*T + t` of each scored row.
    rows: Vec<usize>,
    /// Target id of each scored row.
    targets: Vec<usize>,
    /// Sequence of each scored row.
    seqs: Vec<usize>,
}

impl ScoredRows {
    fn new(targets: &[i64], seq_len: usize) -> Self {
        let mut scored = ScoredRows {
            rows: Vec::new(),
            targets: Vec::new(),
            seqs: Vec::new(),
        };
        for (r, &y) in targets.iter().enumerate() {
            if y != IGNORE_INDEX {
                scored.rows.push(r);
                scored.targets.push(y as usize);
                scored.seqs.push(r / seq_len);
            }
        }
        scored
    }
}

/// `z = h @ w_chunk^T`      h: (R, C), w_chunk: (VC, C) -> z: (R, VC)
fn chunk_logits<T: Float>(h: ArrayView2<'_, T>, w_chunk: ArrayView2<'_, T>) -> Array2<T> {
    let mut z = Array2::zeros((h.nrows(), w_chunk.nrows()));
    gemm(T::one(), h, w_chunk.t(), T::zero(), z.view_mut());
    z
}

impl LmHeadLogprobs {
    /// Vocabulary rows per chunk for `rows` scored rows.
    fn chunk_size(&self, rows: usize, vocab: usize) -> usize {
        (self.chunk_elements / rows.max(1)).clamp(256.min(vocab), vocab.max(1))
    }

    /// Differentiable per-sequence log-probs straight from the final hidden states.
    ///
    /// hidden: (S, T, C), wte: (V, C), targets: S*T (label of position t+1 or -100) -> (S)
    pub fn apply<T: Float>(
        &self,
        tape: &Tape<T>,
        hidden: &Var<T>,
        wte: &Var<T>,
        targets: &[i64],
    ) -> Var<T> {
        let (hs, ws) = (hidden.shape().to_vec(), wte.shape().to_vec());
        assert!(
            hs.len() == 3 && ws.len() == 2 && hs[2] == ws[1] && targets.len() == hs[0] * hs[1],
            "lm_head_logprobs: hidden {hs:?}, wte {ws:?} and {} targets do not match (expected (S, T, C), (V, C), S*T)",
            targets.len()
        );
        let (seqs, seq_len, channels, vocab) = (hs[0], hs[1], hs[2], ws[0]);
        check_targets("lm_head_logprobs", targets, vocab);
        let scored = ScoredRows::new(targets, seq_len);
        let n_rows = scored.rows.len();

        // Gather the scored rows of h: (R, C).
        let hidden_std = hidden.value().as_standard_layout();
        let h_all = hidden_std.as_slice().unwrap();
        let mut h = Array2::<T>::zeros((n_rows, channels));
        h.axis_iter_mut(Axis(0))
            .into_par_iter()
            .zip(scored.rows.par_iter())
            .for_each(|(mut dst, &r)| {
                dst.as_slice_mut()
                    .unwrap()
                    .copy_from_slice(&h_all[r * channels..(r + 1) * channels]);
            });
        drop(hidden_std);
        let w = wte
            .value()
            .view()
            .into_dimensionality::<ndarray::Ix2>()
            .unwrap();

        // Forward: online log-sum-exp over vocabulary chunks.
        let chunk = self.chunk_size(n_rows, vocab);
        let mut running_max = vec![T::neg_infinity(); n_rows];
        let mut running_sum = vec![T::zero(); n_rows];
        let mut target_logit = vec![T::zero(); n_rows];
        let mut kept_chunk = None;
        for v0 in (0..vocab).step_by(chunk) {
            let v1 = (v0 + chunk).min(vocab);
            let z = chunk_logits(h.view(), w.slice(ndarray::s![v0..v1, ..]));
            z.axis_iter(Axis(0))
                .into_par_iter()
                .zip(running_max.par_iter_mut())
                .zip(running_sum.par_iter_mut())
                .zip(target_logit.par_iter_mut())
                .zip(scored.targets.par_iter())
                .for_each(|((((z_row, m), s), logit), &y)| {
                    let z_row = z_row.as_slice().unwrap();
                    let new_max = m.max(row_max(z_row));
                    let chunk_sum = row_sum_exp(z_row, new_max);
                    *s = *s * (*m - new_max).exp() + chunk_sum;
                    *m = new_max;
                    if (v0..v1).contains(&y) {
                        *logit = z_row[y - v0];
                    }
                });
            if v1 - v0 == vocab {
                kept_chunk = Some(z);
            }
        }
        let lse: Vec<T> = running_max
            .iter()
            .zip(&running_sum)
            .map(|(&m, &s)| m + s.ln())
            .collect();
        let mut seq_logp = vec![T::zero(); seqs];
        for (i, &s) in scored.seqs.iter().enumerate() {
            seq_logp[s] += target_logit[i] - lse[i];
        }
        let out = Tensor::from_shape_vec(IxDyn(&[seqs]), seq_logp).unwrap();
        if !tape.needs_grad(&[hidden, wte]) {
            return tape.record("lm_head_logprobs", out, &[hidden, wte], |_| {
                vec![None, None]
            });
        }

        let w_saved: Arc<Tensor<T>> = wte.value_arc();
        let hidden_shape = hs.clone();
        tape.record("lm_head_logprobs", out, &[hidden, wte], move |dlogp| {
            let dlogp = dlogp.as_slice().unwrap();
            let w = w_saved
                .view()
                .into_dimensionality::<ndarray::Ix2>()
                .unwrap();
            let mut dh = Array2::<T>::zeros((n_rows, channels));
            let mut dw = Array2::<T>::zeros((vocab, channels));
            let mut kept_chunk = kept_chunk;
            for v0 in (0..vocab).step_by(chunk) {
                let v1 = (v0 + chunk).min(vocab);
                let w_chunk = w.slice(ndarray::s![v0..v1, ..]);
                let mut dz = kept_chunk
                    .take()
                    .unwrap_or_else(|| chunk_logits(h.view(), w_chunk));
                // dz = g * ([v == y] - softmax), in place over the logits chunk.
                dz.axis_iter_mut(Axis(0))
                    .into_par_iter()
                    .enumerate()
                    .for_each(|(i, mut row)| {
                        let g = dlogp[scored.seqs[i]];
                        let lse_i = lse[i];
                        let row = row.as_slice_mut().unwrap();
                        row.iter_mut()
                            .for_each(|x| *x = -g * (*x - lse_i).exp_fast());
                        let y = scored.targets[i];
                        if (v0..v1).contains(&y) {
                            row[y - v0] += g;
                        }
                    });
                let dw_chunk = dw.slice_mut(ndarray::s![v0..v1, ..]);
                let dh_view = dh.view_mut();
                rayon::join(
                    || gemm(T::one(), dz.view(), w_chunk, T::one(), dh_view),
                    || gemm(T::one(), dz.t(), h.view(), T::zero(), dw_chunk),
                );
            }
            // Scatter the scored rows' gradient back to (S, T, C).
            let mut dhidden = Tensor::<T>::zeros(IxDyn(&hidden_shape));
            let dhidden_data = dhidden.as_slice_mut().unwrap();
            for (i, &r) in scored.rows.iter().enumerate() {
                dhidden_data[r * channels..(r + 1) * channels]
                    .copy_from_slice(dh.row(i).as_slice().unwrap());
            }
            vec![Some(dhidden), Some(dw.into_dyn())]
        })
    }
}
