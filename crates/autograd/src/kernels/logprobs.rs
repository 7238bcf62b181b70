//! Log-probabilities of targets: log-softmax and the target's gather fused,
//! over `N` rows of `V` logits. Cross-entropy is this with the sign flipped
//! ([`crate::Tape::cross_entropy`]); a sequence's log-prob is the sum of its
//! rows' ([`crate::Tape::sequence_logprobs`]); the LM head fused with it is
//! [`super::lm_head_logprobs`].
//!
//! ```text
//! lse[i]  = m + log sum_j exp(inp[i, j] - m),   m = max_j inp[i, j]     (never overflows)
//! logp[i] = inp[i, y_i] - lse[i]                                        y_i = targets[i] != -100
//! ```
//!
//! The forward reads each row twice (pass 1: max, pass 2: sum of exp, then
//! the target's logit) and keeps one `lse` per row, never the `(N, V)`
//! log-probabilities; the backward rebuilds the softmax from the logits and
//! `lse`. A row whose target is [`IGNORE_INDEX`] is not scored. Rows run in
//! parallel in fixed groups, each by the same operations whatever the pool
//! size, on the lane reductions of [`super::simd`].

use rayon::prelude::*;

use super::simd::{max_lanes, sum_exp_lanes};
use crate::float::Float;

/// The target of a row that is not scored (prompt, padding): PyTorch's
/// `ignore_index` default. The one definition of the workspace, re-exported
/// as `autograd::IGNORE_INDEX`.
pub const IGNORE_INDEX: i64 = -100;

/// Rows per parallel task.
const ROWS_PER_TASK: usize = 8;

/// `max_j x_j` over one row, on the shared lanes.
#[inline]
pub fn row_max<T: Float>(row: &[T]) -> T {
    max_lanes(row)
}

/// `sum_j exp(x_j - shift)` over a row, with [`Float::exp_fast`] (vectorizes
/// in f32, exact `exp` in f64), on the shared lanes.
#[inline]
pub fn row_sum_exp<T: Float>(row: &[T], shift: T) -> T {
    sum_exp_lanes(row, shift)
}

/// ```text
/// lse[i]  = max_j inp[i, j] + log sum_j exp(inp[i, j] - max)
/// logp[i] = inp[i, targets[i]] - lse[i]            (logp and lse 0 for ignored rows)
/// ```
/// inp: (N, V); logp, lse, targets: (N), overwritten. Targets must be in
/// `0..V` or [`IGNORE_INDEX`] (the ops check).
pub fn logprobs_forward<T: Float>(
    logp: &mut [T],
    lse: &mut [T],
    inp: &[T],
    targets: &[i64],
    v: usize,
) {
    assert!(
        inp.len() == targets.len() * v && logp.len() == targets.len() && lse.len() == targets.len(),
        "logprobs_forward: inp is not (N, V) for {} targets",
        targets.len()
    );
    logp.par_iter_mut()
        .zip(lse.par_iter_mut())
        .zip(inp.par_chunks(v.max(1)))
        .zip(targets.par_iter())
        .with_min_len(ROWS_PER_TASK)
        .for_each(|(((logp, lse), x), &target)| {
            if target == IGNORE_INDEX {
                (*logp, *lse) = (T::zero(), T::zero());
                return;
            }
            // pass 1: row max
            let max = row_max(x);
            // pass 2: log-sum-exp
            *lse = max + row_sum_exp(x, max).ln();
            // pass 3: gather the target's logit
            *logp = x[target as usize] - *lse;
        });
}

/// The backward of [`logprobs_forward`], in place: `inp_to_dinp` holds the
/// logits and becomes their gradient.
///
/// ```text
/// dinp[i, j] = dlogp(i) * ([j == targets[i]] - exp(inp[i, j] - lse[i]))     (0 for ignored rows)
/// ```
/// inp_to_dinp: (N, V); lse, targets: (N); `dlogp(i)` is the gradient of
/// row `i`'s log-prob (a sequence's, for every row of the sequence).
pub fn logprobs_backward<T: Float>(
    inp_to_dinp: &mut [T],
    lse: &[T],
    targets: &[i64],
    dlogp: impl Fn(usize) -> T + Sync,
    v: usize,
) {
    assert!(
        inp_to_dinp.len() == targets.len() * v && lse.len() == targets.len(),
        "logprobs_backward: inp is not (N, V) for {} targets",
        targets.len()
    );
    inp_to_dinp
        .par_chunks_mut(v.max(1))
        .zip(lse.par_iter().zip(targets.par_iter()))
        .enumerate()
        .with_min_len(ROWS_PER_TASK)
        .for_each(|(i, (row, (&lse, &target)))| {
            if target == IGNORE_INDEX {
                row.iter_mut().for_each(|x| *x = T::zero());
                return;
            }
            let g = dlogp(i);
            row.iter_mut().for_each(|x| *x = -g * (*x - lse).exp_fast());
            row[target as usize] += g;
        });
}

/// Panics, naming `op`, unless every target is in `0..V` or [`IGNORE_INDEX`].
pub fn check_targets(op: &str, targets: &[i64], v: usize) {
    if let Some(bad) = targets
        .iter()
        .find(|&&y| y != IGNORE_INDEX && !(0..v as i64).contains(&y))
    {
        panic!("{op}: target {bad} is out of range for a vocabulary of {v}");
    }
}
