//! Softmax and log-softmax loops along one axis (numerically stable).
//!
//! A tensor is seen as `(outer, n, inner)`: `n` is the length of the softmax
//! axis, `outer` the product of the axes before it and `inner` of those after.
//! For the last axis (`inner == 1`) the rows are contiguous and the fast path
//! runs whole rows in parallel; for any other axis a block of `n * inner`
//! values holds `inner` interleaved rows, processed together so that the inner
//! loops run over contiguous memory and vectorize.
//!
//! Every row is computed by the same sequence of operations whatever the
//! split over threads, so results do not depend on the pool size.

use rayon::prelude::*;

use super::simd::{dot_lanes, max_lanes, sum_lanes};
use super::PAR_CHUNK;
use crate::float::Float;

/// Softmax or log-softmax: which function a kernel computes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SoftmaxKind {
    /// `y_i = e^(x_i - m) / sum_j e^(x_j - m)`
    Softmax,
    /// `y_i = x_i - m - log sum_j e^(x_j - m)`
    LogSoftmax,
}

/// Runs `f(out_block, in_block)` over matching blocks of `block` elements,
/// in parallel when there is enough work. Task boundaries are multiples of
/// `block` (whole rows), fixed by the sizes alone.
fn for_each_block<T: Float>(
    out: &mut [T],
    inp: &[T],
    block: usize,
    f: impl Fn(&mut [T], &[T]) + Sync,
) {
    assert_eq!(out.len(), inp.len());
    if block == 0 || out.is_empty() {
        return;
    }
    let blocks_per_task = (PAR_CHUNK / block).max(1);
    let task = blocks_per_task * block;
    let run = |o: &mut [T], i: &[T]| {
        for (o, i) in o.chunks_exact_mut(block).zip(i.chunks_exact(block)) {
            f(o, i);
        }
    };
    if out.len() <= task {
        run(out, inp);
    } else {
        out.par_chunks_mut(task)
            .zip(inp.par_chunks(task))
            .for_each(|(o, i)| run(o, i));
    }
}

/// Same as [`for_each_block`] with two inputs.
fn for_each_block2<T: Float>(
    out: &mut [T],
    a: &[T],
    b: &[T],
    block: usize,
    f: impl Fn(&mut [T], &[T], &[T]) + Sync,
) {
    assert_eq!(out.len(), a.len());
    assert_eq!(out.len(), b.len());
    if block == 0 || out.is_empty() {
        return;
    }
    let task = (PAR_CHUNK / block).max(1) * block;
    let run = |o: &mut [T], a: &[T], b: &[T]| {
        for ((o, a), b) in o
            .chunks_exact_mut(block)
            .zip(a.chunks_exact(block))
            .zip(b.chunks_exact(block))
        {
            f(o, a, b);
        }
    };
    if out.len() <= task {
        run(out, a, b);
    } else {
        out.par_chunks_mut(task)
            .zip(a.par_chunks(task).zip(b.par_chunks(task)))
            .for_each(|(o, (a, b))| run(o, a, b));
    }
}

/// Softmax or log-softmax of each row of `C` contiguous values.
///
/// ```text
/// m = max_j x_j                  (so every exponent is <= 0: no overflow)
/// s = sum_j e^(x_j - m)          (>= 1: the max contributes e^0, no log(0))
/// softmax:      y_i = e^(x_i - m) / s
/// log-softmax:  y_i = x_i - m - log s
/// ```
/// inp, out: (rows, C)
///
/// The loops are zipped iterators (no bounds checks) so that they vectorize.
pub fn softmax_forward_rows<T: Float>(out: &mut [T], inp: &[T], c: usize, kind: SoftmaxKind) {
    for_each_block(out, inp, c, |out_row, inp_row| {
        // pass 1: row max
        let maxval = max_lanes(inp_row);
        // pass 2: exponentials and their sum
        for (o, &x) in out_row.iter_mut().zip(inp_row) {
            *o = (x - maxval).exp_fast();
        }
        let sum = sum_lanes(out_row);
        // pass 3: normalize
        match kind {
            SoftmaxKind::Softmax => {
                let norm = T::one() / sum;
                for o in out_row.iter_mut() {
                    *o *= norm;
                }
            }
            SoftmaxKind::LogSoftmax => {
                let log_norm = maxval + sum.ln();
                for (o, &x) in out_row.iter_mut().zip(inp_row) {
                    *o = x - log_norm;
                }
            }
        }
    });
}

/// Softmax or log-softmax along the middle axis of `(outer, n, inner)`.
///
/// Same math as [`softmax_forward_rows`]; within a block of `n * inner`
/// values the `inner` rows are interleaved, so each pass loops over the
/// `inner` contiguous values of one position `j` at a time.
pub fn softmax_forward_strided<T: Float>(
    out: &mut [T],
    inp: &[T],
    n: usize,
    inner: usize,
    kind: SoftmaxKind,
) {
    if inner == 1 {
        return softmax_forward_rows(out, inp, n, kind);
    }
    for_each_block(out, inp, n * inner, |out_blk, inp_blk| {
        // out_blk, inp_blk: (n, inner)
        // pass 1: max of each of the `inner` rows
        let mut maxval = vec![T::neg_infinity(); inner];
        for inp_j in inp_blk.chunks_exact(inner) {
            for (m, &x) in maxval.iter_mut().zip(inp_j) {
                *m = if x > *m { x } else { *m };
            }
        }
        // pass 2: exponentials and their sums
        let mut sum = vec![T::zero(); inner];
        for (out_j, inp_j) in out_blk
            .chunks_exact_mut(inner)
            .zip(inp_blk.chunks_exact(inner))
        {
            for (o, (&x, &m)) in out_j.iter_mut().zip(inp_j.iter().zip(&maxval)) {
                *o = (x - m).exp_fast();
            }
            for (s, &o) in sum.iter_mut().zip(out_j.iter()) {
                *s += o;
            }
        }
        // pass 3: normalize
        match kind {
            SoftmaxKind::Softmax => {
                let norm: Vec<T> = sum.iter().map(|&s| T::one() / s).collect();
                for out_j in out_blk.chunks_exact_mut(inner) {
                    for (o, &r) in out_j.iter_mut().zip(&norm) {
                        *o *= r;
                    }
                }
            }
            SoftmaxKind::LogSoftmax => {
                let log_norm: Vec<T> = maxval.iter().zip(&sum).map(|(&m, &s)| m + s.ln()).collect();
                for (out_j, inp_j) in out_blk
                    .chunks_exact_mut(inner)
                    .zip(inp_blk.chunks_exact(inner))
                {
                    for (o, (&x, &l)) in out_j.iter_mut().zip(inp_j.iter().zip(&log_norm)) {
                        *o = x - l;
                    }
                }
            }
        }
    });
}

/// Backward of softmax / log-softmax along the middle axis of `(outer, n, inner)`,
/// from the forward's output `out` (no input needs to be kept):
///
/// ```text
/// softmax:      dinp_i = y_i (dout_i - sum_j dout_j y_j)
/// log-softmax:  dinp_i = dout_i - e^(y_i) sum_j dout_j      (e^y is the softmax)
/// ```
/// dinp, dout, out: (outer, n, inner)
pub fn softmax_backward_strided<T: Float>(
    dinp: &mut [T],
    dout: &[T],
    out: &[T],
    n: usize,
    inner: usize,
    kind: SoftmaxKind,
) {
    if inner == 1 {
        return softmax_backward_rows(dinp, dout, out, n, kind);
    }
    for_each_block2(dinp, dout, out, n * inner, |dinp_blk, dout_blk, out_blk| {
        // pass 1: the per-row sum that the Jacobian contracts with
        let mut row_sum = vec![T::zero(); inner];
        for (dout_j, out_j) in dout_blk
            .chunks_exact(inner)
            .zip(out_blk.chunks_exact(inner))
        {
            match kind {
                SoftmaxKind::Softmax => {
                    for (s, (&d, &y)) in row_sum.iter_mut().zip(dout_j.iter().zip(out_j)) {
                        *s += d * y;
                    }
                }
                SoftmaxKind::LogSoftmax => {
                    for (s, &d) in row_sum.iter_mut().zip(dout_j) {
                        *s += d;
                    }
                }
            }
        }
        // pass 2: dinp
        for ((dinp_j, dout_j), out_j) in dinp_blk
            .chunks_exact_mut(inner)
            .zip(dout_blk.chunks_exact(inner))
            .zip(out_blk.chunks_exact(inner))
        {
            let rows = dinp_j
                .iter_mut()
                .zip(dout_j.iter().zip(out_j).zip(&row_sum));
            match kind {
                SoftmaxKind::Softmax => {
                    for (dx, ((&d, &y), &s)) in rows {
                        *dx = y * (d - s);
                    }
                }
                SoftmaxKind::LogSoftmax => {
                    for (dx, ((&d, &y), &s)) in rows {
                        *dx = d - y.exp_fast() * s;
                    }
                }
            }
        }
    });
}

/// Backward of [`softmax_forward_rows`] (same math as
/// [`softmax_backward_strided`], rows of `C` contiguous values).
/// dinp, dout, out: (rows, C)
pub fn softmax_backward_rows<T: Float>(
    dinp: &mut [T],
    dout: &[T],
    out: &[T],
    c: usize,
    kind: SoftmaxKind,
) {
    for_each_block2(dinp, dout, out, c, |dinp_row, dout_row, out_row| {
        match kind {
            SoftmaxKind::Softmax => {
                // pass 1: sum_j dout_j y_j
                let dot = dot_lanes(dout_row, out_row);
                // pass 2: dinp_i = y_i (dout_i - dot)
                for (dx, (&d, &y)) in dinp_row.iter_mut().zip(dout_row.iter().zip(out_row)) {
                    *dx = y * (d - dot);
                }
            }
            SoftmaxKind::LogSoftmax => {
                // pass 1: sum_j dout_j
                let total = sum_lanes(dout_row);
                // pass 2: dinp_i = dout_i - softmax_i total
                for (dx, (&d, &y)) in dinp_row.iter_mut().zip(dout_row.iter().zip(out_row)) {
                    *dx = d - y.exp_fast() * total;
                }
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strided_matches_rows_of_the_transpose() {
        // x: (2, 3, 4); softmax along axis 1 == rows of x permuted to (2, 4, 3).
        let x: Vec<f64> = (0..24).map(|i| ((i * 7) % 11) as f64 * 0.3 - 1.0).collect();
        for kind in [SoftmaxKind::Softmax, SoftmaxKind::LogSoftmax] {
            let mut strided = vec![0.0; 24];
            softmax_forward_strided(&mut strided, &x, 3, 4, kind);
            let mut xt = vec![0.0; 24];
            for o in 0..2 {
                for j in 0..3 {
                    for k in 0..4 {
                        xt[o * 12 + k * 3 + j] = x[o * 12 + j * 4 + k];
                    }
                }
            }
            let mut rows = vec![0.0; 24];
            softmax_forward_rows(&mut rows, &xt, 3, kind);
            for o in 0..2 {
                for j in 0..3 {
                    for k in 0..4 {
                        let (a, b) = (strided[o * 12 + j * 4 + k], rows[o * 12 + k * 3 + j]);
                        assert!((a - b).abs() < 1e-15, "{a} != {b}");
                    }
                }
            }
        }
    }
}
