//! LayerNorm forward and backward loops (llm.c style), over the last axis.
//!
//! The input is `N` rows of `C` channels. The forward saves the mean and the
//! reciprocal standard deviation of every row so that the backward needs one
//! pass per row and never recomputes the statistics.
//!
//! Rows are independent and run in parallel. The weight and bias gradients
//! are sums over rows: each fixed block of [`ROWS_PER_TASK`] rows produces a
//! partial sum, and the partial sums are added in block order, so the result
//! is the same for any number of threads.

use rayon::prelude::*;

use super::simd::{sum_lanes, sum_map_lanes};
use super::{map_row_blocks, PAR_MIN_ELEMENTS, ROWS_PER_TASK};
use crate::float::Float;

/// ```text
/// mean = (1/C) sum_c x_c          var = (1/C) sum_c (x_c - mean)^2
/// rstd = 1 / sqrt(var + eps)      xhat_c = (x_c - mean) * rstd
/// out_c = xhat_c * weight_c + bias_c
/// ```
/// inp, out: (N, C); weight, bias: (C); mean, rstd: (N).
#[allow(clippy::too_many_arguments)]
pub fn layernorm_forward<T: Float>(
    out: &mut [T],
    mean: &mut [T],
    rstd: &mut [T],
    inp: &[T],
    weight: &[T],
    bias: Option<&[T]>,
    c: usize,
    eps: T,
) {
    let n = mean.len();
    assert!(c > 0, "layernorm_forward: zero channels");
    assert_eq!(inp.len(), n * c, "layernorm_forward: input is not (N, C)");
    assert_eq!(out.len(), n * c, "layernorm_forward: output is not (N, C)");
    assert_eq!(rstd.len(), n);
    assert_eq!(weight.len(), c);
    let inv_c = T::one() / T::cast(c as f64);
    let row = |out_row: &mut [T], mean_r: &mut T, rstd_r: &mut T, x: &[T]| {
        // pass 1: mean
        let m = sum_lanes(x) * inv_c;
        // pass 2: variance around the mean (two-pass: no cancellation)
        let v = sum_map_lanes(x, |xi| (xi - m) * (xi - m)) * inv_c;
        let s = T::one() / (v + eps).sqrt();
        // pass 3: normalize, scale and shift
        match bias {
            Some(b) => {
                for i in 0..c {
                    out_row[i] = (x[i] - m) * s * weight[i] + b[i];
                }
            }
            None => {
                for i in 0..c {
                    out_row[i] = (x[i] - m) * s * weight[i];
                }
            }
        }
        *mean_r = m;
        *rstd_r = s;
    };
    if n * c < PAR_MIN_ELEMENTS {
        for r in 0..n {
            let (o, x) = (&mut out[r * c..(r + 1) * c], &inp[r * c..(r + 1) * c]);
            row(o, &mut mean[r], &mut rstd[r], x);
        }
    } else {
        out.par_chunks_mut(c)
            .zip(mean.par_iter_mut().zip(rstd.par_iter_mut()))
            .zip(inp.par_chunks(c))
            .with_min_len(ROWS_PER_TASK)
            .for_each(|((o, (m, s)), x)| row(o, m, s, x));
    }
}

/// The backward of [`layernorm_forward`], one pass per row:
///
/// ```text
/// dxhat_c   = dout_c * weight_c
/// dinp_c    = rstd * (dxhat_c - mean_c'(dxhat) - xhat_c * mean_c'(dxhat * xhat))
/// dweight_c = sum over rows of dout_c * xhat_c
/// dbias_c   = sum over rows of dout_c
/// ```
/// `dinp` is overwritten; `dweight` and `dbias` (C) are overwritten with the
/// sums (`dbias` may be `None` when there is no bias).
#[allow(clippy::too_many_arguments)]
pub fn layernorm_backward<T: Float>(
    dinp: &mut [T],
    dweight: &mut [T],
    dbias: Option<&mut [T]>,
    dout: &[T],
    inp: &[T],
    weight: &[T],
    mean: &[T],
    rstd: &[T],
    c: usize,
) {
    let n = mean.len();
    assert_eq!(dinp.len(), n * c, "layernorm_backward: dinp is not (N, C)");
    assert_eq!(dout.len(), n * c, "layernorm_backward: dout is not (N, C)");
    assert_eq!(inp.len(), n * c, "layernorm_backward: inp is not (N, C)");
    assert_eq!(dweight.len(), c);
    let inv_c = T::one() / T::cast(c as f64);

    // One block of rows: writes its dinp rows, returns its partial (dweight, dbias).
    let block = |first_row: usize, dinp_blk: &mut [T]| -> (Vec<T>, Vec<T>) {
        let mut dw = vec![T::zero(); c];
        let mut db = vec![T::zero(); c];
        for (i, dx) in dinp_blk.chunks_mut(c).enumerate() {
            let r = first_row + i;
            let (x, dy) = (&inp[r * c..(r + 1) * c], &dout[r * c..(r + 1) * c]);
            let (m, s) = (mean[r], rstd[r]);
            // pass 1: the two row means of the dinp formula
            let mut mean_dxhat = T::zero();
            let mut mean_dxhat_xhat = T::zero();
            for j in 0..c {
                let xhat = (x[j] - m) * s;
                let dxhat = dy[j] * weight[j];
                mean_dxhat += dxhat;
                mean_dxhat_xhat += dxhat * xhat;
            }
            mean_dxhat *= inv_c;
            mean_dxhat_xhat *= inv_c;
            // pass 2: dinp of the row, and its share of dweight, dbias
            for j in 0..c {
                let xhat = (x[j] - m) * s;
                let dxhat = dy[j] * weight[j];
                dx[j] = s * (dxhat - mean_dxhat - xhat * mean_dxhat_xhat);
                dw[j] += dy[j] * xhat;
                db[j] += dy[j];
            }
        }
        (dw, db)
    };
    let partials: Vec<(Vec<T>, Vec<T>)> = map_row_blocks(dinp, c, block);
    // Partial sums added in block order: the same result for any thread count.
    dweight.iter_mut().for_each(|v| *v = T::zero());
    let mut dbias = dbias;
    if let Some(db) = dbias.as_deref_mut() {
        db.iter_mut().for_each(|v| *v = T::zero());
    }
    for (dw_part, db_part) in &partials {
        for j in 0..c {
            dweight[j] += dw_part[j];
        }
        if let Some(db) = dbias.as_deref_mut() {
            for j in 0..c {
                db[j] += db_part[j];
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalized_rows_have_zero_mean_unit_variance() {
        let c = 5;
        let inp: Vec<f64> = (0..3 * c).map(|i| (i as f64 * 0.7).sin() * 3.0).collect();
        let (mut out, mut mean, mut rstd) = (vec![0.0; 3 * c], vec![0.0; 3], vec![0.0; 3]);
        let weight = vec![1.0; c];
        layernorm_forward(&mut out, &mut mean, &mut rstd, &inp, &weight, None, c, 0.0);
        for row in out.chunks(c) {
            let m: f64 = row.iter().sum::<f64>() / c as f64;
            let v: f64 = row.iter().map(|x| (x - m) * (x - m)).sum::<f64>() / c as f64;
            assert!(m.abs() < 1e-12 && (v - 1.0).abs() < 1e-12);
        }
    }
}
