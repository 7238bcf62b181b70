//! Cross-entropy forward and backward loops: log-softmax and the target's
//! gather fused, over `N` rows of `V` logits.
//!
//! The forward keeps one `lse` (log-sum-exp) per row, never the `(N, V)`
//! log-probabilities; the backward rebuilds the softmax from the logits and
//! `lse`. A row whose target is [`IGNORE_INDEX`] contributes nothing. Rows
//! are independent and run in parallel (each row is computed by the same
//! operations whatever the split, so results do not depend on the pool size).

use rayon::prelude::*;

use super::PAR_MIN_ELEMENTS;
use crate::float::Float;

/// The target of a row that is not scored (prompt, padding): PyTorch's
/// `ignore_index` default. The one definition of the workspace, re-exported
/// as `autograd::IGNORE_INDEX`.
pub const IGNORE_INDEX: i64 = -100;

/// Rows per parallel task.
const ROWS_PER_TASK: usize = 8;

/// ```text
/// lse[i]    = max_j inp[i, j] + log sum_j exp(inp[i, j] - max)
/// losses[i] = lse[i] - inp[i, targets[i]]         (0 for ignored rows)
/// ```
/// inp: (N, V); losses, lse, targets: (N). `lse` of an ignored row is not
/// written. Targets must be in `0..V` or [`IGNORE_INDEX`] (the op checks).
pub fn crossentropy_forward<T: Float>(
    losses: &mut [T],
    lse: &mut [T],
    inp: &[T],
    targets: &[i64],
    v: usize,
) {
    let row = |(((loss, lse), x), &target): (((&mut T, &mut T), &[T]), &i64)| {
        if target == IGNORE_INDEX {
            *loss = T::zero();
            return;
        }
        // pass 1: row max
        let max = x.iter().copied().fold(T::neg_infinity(), T::max);
        // pass 2: log-sum-exp
        let sum: T = x.iter().map(|&xi| (xi - max).exp()).sum();
        *lse = max + sum.ln();
        // pass 3: gather the target's logit
        *loss = *lse - x[target as usize];
    };
    if inp.len() < PAR_MIN_ELEMENTS {
        losses
            .iter_mut()
            .zip(lse.iter_mut())
            .zip(inp.chunks(v))
            .zip(targets)
            .for_each(row);
    } else {
        losses
            .par_iter_mut()
            .zip(lse.par_iter_mut())
            .zip(inp.par_chunks(v))
            .zip(targets.par_iter())
            .with_min_len(ROWS_PER_TASK)
            .for_each(row);
    }
}

/// The backward of [`crossentropy_forward`], from the saved `lse`:
///
/// ```text
/// dinp[i, j] = dloss * (exp(inp[i, j] - lse[i]) - [j == targets[i]])     (0 for ignored rows)
/// ```
/// dinp, inp: (N, V); lse, targets: (N). `dinp` is overwritten. `dloss` is
/// the gradient of every row's loss (for a mean it already holds the
/// `1/n_valid`).
pub fn crossentropy_backward<T: Float>(
    dinp: &mut [T],
    inp: &[T],
    lse: &[T],
    targets: &[i64],
    dloss: T,
    v: usize,
) {
    type Row<'a, T> = ((&'a mut [T], &'a [T]), (&'a T, &'a i64));
    let row = |((dx, x), (&lse, &target)): Row<'_, T>| {
        if target == IGNORE_INDEX {
            dx.iter_mut().for_each(|d| *d = T::zero());
            return;
        }
        for j in 0..v {
            dx[j] = (x[j] - lse).exp() * dloss;
        }
        dx[target as usize] -= dloss;
    };
    if inp.len() < PAR_MIN_ELEMENTS {
        dinp.chunks_mut(v)
            .zip(inp.chunks(v))
            .zip(lse.iter().zip(targets))
            .for_each(row);
    } else {
        dinp.par_chunks_mut(v)
            .zip(inp.par_chunks(v))
            .zip(lse.par_iter().zip(targets.par_iter()))
            .with_min_len(ROWS_PER_TASK)
            .for_each(row);
    }
}
