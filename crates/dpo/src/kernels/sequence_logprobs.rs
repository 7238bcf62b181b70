//! Sequence log-probabilities from logits, fused and stable.
//!
//! For logits `(S, T, V)` and targets `(S, T)` (the label of position `t+1`,
//! or `-100` where nothing is scored):
//!
//! ```text
//! logp[s]  = sum_t  ( logits[s,t,y] - lse(logits[s,t,:]) )      y = targets[s,t] != -100
//! lse(x)   = m + log sum_v exp(x_v - m),   m = max_v x_v          (never overflows)
//! dlogits[s,t,v] = dlogp[s] * ( [v == y] - exp(logits[s,t,v] - lse) )   scored rows
//!                = 0                                                     masked rows
//! ```
//!
//! The forward reads each row once (pass 1: max, pass 2: sum of exp, then the
//! target's logit) and saves one `lse` per row; the backward recomputes the
//! softmax from the logits and the saved `lse`. Rows run in parallel.

use std::sync::Arc;

use autograd::{Float, Tape, Tensor, Var};
use ndarray::IxDyn;
use rayon::prelude::*;

/// The label value of a position that is not scored (autograd's, re-exported).
pub use autograd::IGNORE_INDEX;

/// Rows per parallel task.
const ROWS_PER_TASK: usize = 8;

/// Independent accumulators of the row loops: enough to fill the vector
/// units, combined in a fixed order so results depend only on the data.
const LANES: usize = 16;

/// `max_v x_v` over a row, in `LANES` interleaved partial maxima (vectorizes).
#[inline]
pub fn row_max<T: Float>(row: &[T]) -> T {
    let mut lanes = [T::neg_infinity(); LANES];
    let mut chunks = row.chunks_exact(LANES);
    for chunk in &mut chunks {
        for l in 0..LANES {
            lanes[l] = if chunk[l] > lanes[l] {
                chunk[l]
            } else {
                lanes[l]
            };
        }
    }
    let mut max = lanes.into_iter().fold(T::neg_infinity(), T::max);
    for &x in chunks.remainder() {
        max = max.max(x);
    }
    max
}

/// `sum_v exp(x_v - shift)` over a row, in `LANES` interleaved partial sums,
/// with [`Float::exp_fast`] (vectorizes in f32, exact `exp` in f64).
#[inline]
pub fn row_sum_exp<T: Float>(row: &[T], shift: T) -> T {
    let mut lanes = [T::zero(); LANES];
    let mut chunks = row.chunks_exact(LANES);
    for chunk in &mut chunks {
        for l in 0..LANES {
            lanes[l] += (chunk[l] - shift).exp_fast();
        }
    }
    let mut sum = lanes.into_iter().fold(T::zero(), |a, b| a + b);
    for &x in chunks.remainder() {
        sum += (x - shift).exp_fast();
    }
    sum
}

/// `lse` of one row: pass 1 the max, pass 2 the sum of `exp(x - max)`.
#[inline]
pub fn row_logsumexp<T: Float>(row: &[T]) -> T {
    let max = row_max(row);
    max + row_sum_exp(row, max).ln()
}

/// Forward: per-row log-prob of the target (`0` for masked rows) and per-row `lse`.
///
/// logits: (N, V), targets: (N) -> (row_logp (N), row_lse (N))
pub fn sequence_logprobs_forward<T: Float>(
    logits: &[T],
    targets: &[i64],
    vocab: usize,
) -> (Vec<T>, Vec<T>) {
    let rows = targets.len();
    assert_eq!(
        logits.len(),
        rows * vocab,
        "sequence_logprobs: logits are not (N, V)"
    );
    let mut row_logp = vec![T::zero(); rows];
    let mut row_lse = vec![T::zero(); rows];
    row_logp
        .par_chunks_mut(ROWS_PER_TASK)
        .zip(row_lse.par_chunks_mut(ROWS_PER_TASK))
        .enumerate()
        .for_each(|(task, (logp_chunk, lse_chunk))| {
            for (i, (logp, lse)) in logp_chunk.iter_mut().zip(lse_chunk).enumerate() {
                let r = task * ROWS_PER_TASK + i;
                let target = targets[r];
                if target == IGNORE_INDEX {
                    continue;
                }
                let row = &logits[r * vocab..(r + 1) * vocab];
                *lse = row_logsumexp(row);
                *logp = row[target as usize] - *lse;
            }
        });
    (row_logp, row_lse)
}

/// Backward, in place: `logits` becomes `dlogits`.
///
/// dlogits[r, v] = dlogp[seq(r)] * ([v == y_r] - exp(logits[r, v] - lse_r)), 0 for masked rows.
pub fn sequence_logprobs_backward<T: Float>(
    logits_to_grad: &mut [T],
    targets: &[i64],
    row_lse: &[T],
    dlogp_per_row: impl Fn(usize) -> T + Sync,
    vocab: usize,
) {
    logits_to_grad
        .par_chunks_mut(vocab * ROWS_PER_TASK)
        .enumerate()
        .for_each(|(task, rows)| {
            for (i, row) in rows.chunks_mut(vocab).enumerate() {
                let r = task * ROWS_PER_TASK + i;
                let target = targets[r];
                if target == IGNORE_INDEX {
                    row.iter_mut().for_each(|x| *x = T::zero());
                    continue;
                }
                let (g, lse) = (dlogp_per_row(r), row_lse[r]);
                row.iter_mut().for_each(|x| *x = -g * (*x - lse).exp_fast());
                row[target as usize] += g;
            }
        });
}

/// Checks targets against the vocabulary; panics naming the op otherwise.
pub(crate) fn check_targets(op: &str, targets: &[i64], vocab: usize) {
    if let Some(bad) = targets
        .iter()
        .find(|&&y| y != IGNORE_INDEX && !(0..vocab as i64).contains(&y))
    {
        panic!("{op}: target {bad} is outside the vocabulary of {vocab}");
    }
}

/// Differentiable sequence log-probs on a tape.
///
/// logits: (S, T, V), targets: S*T (label of position t+1, or -100) -> (S)
///
/// The backward turns the saved logits buffer into the gradient in place when
/// nothing else holds it (drop the logits `Var` before `backward`): the only
/// extra memory is one `lse` per row.
pub fn sequence_logprobs<T: Float>(tape: &Tape<T>, logits: &Var<T>, targets: &[i64]) -> Var<T> {
    let shape = logits.shape().to_vec();
    assert!(
        shape.len() == 3 && targets.len() == shape[0] * shape[1],
        "sequence_logprobs: logits {shape:?} and {} targets do not match (expected (S, T, V) and S*T)",
        targets.len()
    );
    let (seqs, seq_len, vocab) = (shape[0], shape[1], shape[2]);
    check_targets("sequence_logprobs", targets, vocab);
    let logits_data = logits
        .value()
        .as_slice()
        .expect("sequence_logprobs: logits must be contiguous");
    let (row_logp, row_lse) = sequence_logprobs_forward(logits_data, targets, vocab);
    // Sum each sequence's rows in order (deterministic).
    let seq_logp: Vec<T> = row_logp
        .chunks(seq_len)
        .map(|c| c.iter().copied().sum())
        .collect();
    let out = Tensor::from_shape_vec(IxDyn(&[seqs]), seq_logp).unwrap();
    if !tape.needs_grad(&[logits]) {
        return tape.record("sequence_logprobs", out, &[logits], |_| vec![None]);
    }
    let saved_logits: Arc<Tensor<T>> = logits.value_arc();
    let targets = targets.to_vec();
    tape.record("sequence_logprobs", out, &[logits], move |dlogp| {
        // Reuse the logits buffer for the gradient if we are its last owner.
        let mut dlogits = Arc::try_unwrap(saved_logits).unwrap_or_else(|shared| (*shared).clone());
        let dlogp = dlogp.as_slice().unwrap().to_vec();
        let grad = dlogits.as_slice_mut().unwrap();
        sequence_logprobs_backward(grad, &targets, &row_lse, |r| dlogp[r / seq_len], vocab);
        vec![Some(dlogits)]
    })
}
