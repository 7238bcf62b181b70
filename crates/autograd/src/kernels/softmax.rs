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

use super::PAR_CHUNK;
use crate::float::Float;

/// `e^x`: for `f32` a branch-free polynomial that the compiler vectorizes
/// (the libm call it replaces is 5-10x slower and is the whole cost of a
/// softmax); for `f64` the exact `exp`, so gradient checks see no change.
///
/// The `f32` path is Cephes' `expf`: `x = n ln2 + r` with `|r| <= ln2/2`,
/// `e^r` by a degree-6 polynomial (relative error below 2 ulp), then `2^n`
/// built in the exponent bits (as two factors, so that `n = 128` is fine).
/// Below `ln(FLT_MIN) = -87.34` the result flushes to 0 (softmax only ever
/// needs `x <= 0`), above `ln(FLT_MAX)` it is `inf`, and NaN stays NaN.
#[inline(always)]
pub fn exp_fast<T: Float>(x: T) -> T {
    if T::NAME == "f32" {
        T::cast(exp_f32(x.as_f64() as f32) as f64)
    } else {
        x.exp()
    }
}

/// See [`exp_fast`]. The polynomial's coefficients are Cephes' as published.
#[inline(always)]
#[allow(clippy::excessive_precision)]
fn exp_f32(x: f32) -> f32 {
    const LO: f32 = -87.336_55; // ln(FLT_MIN)
    const HI: f32 = 88.722_83; // ln(FLT_MAX)
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_359_4; // ln 2 = LN2_HI + LN2_LO, LN2_HI exact in few bits
    const LN2_LO: f32 = -2.121_944_4e-4;
    // Round to nearest with the 1.5 * 2^23 trick: plain adds, so it vectorizes
    // without SSE4.1's round instruction.
    const ROUND: f32 = 12_582_912.0;
    let xc = x.clamp(LO, HI); // NaN stays NaN
    let shifted = xc * LOG2E + ROUND;
    let n = shifted - ROUND;
    let n_int = (shifted.to_bits() as i32).wrapping_sub(ROUND.to_bits() as i32);
    let r = xc - n * LN2_HI - n * LN2_LO;
    let r2 = r * r;
    let p = ((((1.987_569_1e-4 * r + 1.398_199_9e-3) * r + 8.333_452e-3) * r + 4.166_579_6e-2) * r
        + 1.666_666_5e-1)
        * r
        + 5.000_000_1e-1;
    let er = p * r2 + r + 1.0;
    let n_half = n_int >> 1;
    let scale_a = f32::from_bits(((n_half + 127) as u32) << 23);
    let scale_b = f32::from_bits(((n_int - n_half + 127) as u32) << 23);
    let y = er * scale_a * scale_b;
    if x < LO {
        0.0
    } else if x > HI {
        f32::INFINITY
    } else {
        y
    }
}

/// Sum in 8 interleaved partial sums (so the loop vectorizes), combined in a
/// fixed order: the result depends only on the data.
#[inline(always)]
pub fn sum_lanes<T: Float>(x: &[T]) -> T {
    sum_map_lanes(x, |v| v)
}

/// `sum_i f(x_i)` in 8 interleaved partial sums combined in a fixed order
/// (vectorizes; the result depends only on the data).
#[inline(always)]
pub fn sum_map_lanes<T: Float>(x: &[T], f: impl Fn(T) -> T) -> T {
    const LANES: usize = 8;
    let mut acc = [T::zero(); LANES];
    let mut chunks = x.chunks_exact(LANES);
    for c in &mut chunks {
        for l in 0..LANES {
            acc[l] += f(c[l]);
        }
    }
    let mut total = T::zero();
    for &v in chunks.remainder() {
        total += f(v);
    }
    let pairs = [
        acc[0] + acc[4],
        acc[1] + acc[5],
        acc[2] + acc[6],
        acc[3] + acc[7],
    ];
    total + ((pairs[0] + pairs[2]) + (pairs[1] + pairs[3]))
}

/// Max in 8 interleaved partial maxima (so the loop vectorizes).
#[inline(always)]
pub fn max_lanes<T: Float>(x: &[T]) -> T {
    const LANES: usize = 8;
    let mut acc = [T::neg_infinity(); LANES];
    let mut chunks = x.chunks_exact(LANES);
    for c in &mut chunks {
        for l in 0..LANES {
            acc[l] = if c[l] > acc[l] { c[l] } else { acc[l] };
        }
    }
    let mut m = T::neg_infinity();
    for &v in chunks.remainder().iter().chain(acc.iter()) {
        m = if v > m { v } else { m };
    }
    m
}

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
            *o = exp_fast(x - maxval);
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
                *o = exp_fast(x - m);
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
                        *dx = d - exp_fast(y) * s;
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
                // pass 1: sum_j dout_j y_j, in 8 lanes (vectorizes, fixed order)
                let mut dot_lanes = [T::zero(); 8];
                let (d_chunks, y_chunks) = (dout_row.chunks_exact(8), out_row.chunks_exact(8));
                let (d_rest, y_rest) = (d_chunks.remainder(), y_chunks.remainder());
                for (d8, y8) in d_chunks.zip(y_chunks) {
                    for l in 0..8 {
                        dot_lanes[l] += d8[l] * y8[l];
                    }
                }
                let mut dot = sum_lanes(&dot_lanes);
                for (&d, &y) in d_rest.iter().zip(y_rest) {
                    dot += d * y;
                }
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
                    *dx = d - exp_fast(y) * total;
                }
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exp_fast_is_accurate_in_f32_and_exact_in_f64() {
        let mut worst = 0f64;
        for i in -1_000_000..=1_000_000 {
            let x = i as f32 * 8.7e-5; // [-87, 87]: normal results
            let exact = (x as f64).exp();
            let err = (exp_fast(x) as f64 - exact).abs() / exact;
            worst = worst.max(err);
        }
        assert!(worst < 2.5e-7, "relative error {worst}");
        assert_eq!(exp_fast(-1e4f32), 0.0);
        assert_eq!(exp_fast(-100f32), 0.0);
        assert_eq!(exp_fast(0f32), 1.0);
        assert_eq!(exp_fast(88.7f32), 88.7f32.exp());
        assert_eq!(exp_fast(89f32), f32::INFINITY);
        assert!(exp_fast(f32::NAN).is_nan());
        assert_eq!(exp_fast(-0.7f64), (-0.7f64).exp());
    }

    #[test]
    fn lane_reductions() {
        let x: Vec<f64> = (0..37).map(|i| ((i * 13) % 17) as f64 - 8.0).collect();
        assert_eq!(sum_lanes(&x), x.iter().sum::<f64>());
        assert_eq!(max_lanes(&x), 8.0);
        assert_eq!(
            max_lanes(&x[..3]),
            x[..3].iter().cloned().fold(f64::MIN, f64::max)
        );
    }

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
