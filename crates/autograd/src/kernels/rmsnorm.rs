//! RMSNorm forward and backward loops (Llama's `LlamaRMSNorm`), over the
//! last axis.
//!
//! The input is `N` rows of `C` channels. Unlike LayerNorm there is no mean
//! to subtract and no bias: each row is divided by its root mean square. The
//! forward saves the reciprocal RMS of every row, so the backward needs one
//! pass per row and never recomputes it.
//!
//! Rows are independent and run in parallel; the weight gradient is a sum
//! over rows, added in fixed blocks of [`ROWS_PER_TASK`] rows (in block
//! order), so the result is the same for any number of threads.

use rayon::prelude::*;

use super::simd::sum_map_lanes;
use super::{map_row_blocks, PAR_MIN_ELEMENTS, ROWS_PER_TASK};
use crate::float::Float;

/// ```text
/// rstd  = 1 / sqrt((1/C) sum_c x_c^2 + eps)
/// out_c = (x_c * rstd) * weight_c
/// ```
/// inp, out: (N, C); weight: (C); rstd: (N). The product is taken in
/// transformers' order (normalize, then scale).
pub fn rmsnorm_forward<T: Float>(
    out: &mut [T],
    rstd: &mut [T],
    inp: &[T],
    weight: &[T],
    c: usize,
    eps: T,
) {
    let n = rstd.len();
    assert!(c > 0, "rmsnorm_forward: zero channels");
    assert_eq!(inp.len(), n * c, "rmsnorm_forward: input is not (N, C)");
    assert_eq!(out.len(), n * c, "rmsnorm_forward: output is not (N, C)");
    assert_eq!(weight.len(), c, "rmsnorm_forward: weight is not (C)");
    let inv_c = T::one() / T::cast(c as f64);
    let row = |out_row: &mut [T], rstd_r: &mut T, x: &[T]| {
        // pass 1: mean square
        let ms = sum_map_lanes(x, |v| v * v) * inv_c;
        let s = T::one() / (ms + eps).sqrt();
        // pass 2: normalize and scale
        for ((o, &xi), &w) in out_row.iter_mut().zip(x).zip(weight) {
            *o = xi * s * w;
        }
        *rstd_r = s;
    };
    if n * c < PAR_MIN_ELEMENTS {
        for ((o, s), x) in out.chunks_mut(c).zip(rstd.iter_mut()).zip(inp.chunks(c)) {
            row(o, s, x);
        }
    } else {
        out.par_chunks_mut(c)
            .zip(rstd.par_iter_mut())
            .zip(inp.par_chunks(c))
            .with_min_len(ROWS_PER_TASK)
            .for_each(|((o, s), x)| row(o, s, x));
    }
}

/// The backward of [`rmsnorm_forward`], one pass per row:
///
/// ```text
/// xhat_c    = x_c * rstd                 dxhat_c = dout_c * weight_c
/// dinp_c    = rstd * (dxhat_c - xhat_c * mean_c'(dxhat * xhat))
/// dweight_c = sum over rows of dout_c * xhat_c
/// ```
/// (d rstd / d x_c = -rstd^3 x_c / C gives the second term.) `dinp` and
/// `dweight` (C) are overwritten.
pub fn rmsnorm_backward<T: Float>(
    dinp: &mut [T],
    dweight: &mut [T],
    dout: &[T],
    inp: &[T],
    weight: &[T],
    rstd: &[T],
    c: usize,
) {
    let n = rstd.len();
    assert_eq!(dinp.len(), n * c, "rmsnorm_backward: dinp is not (N, C)");
    assert_eq!(dout.len(), n * c, "rmsnorm_backward: dout is not (N, C)");
    assert_eq!(inp.len(), n * c, "rmsnorm_backward: inp is not (N, C)");
    assert_eq!(weight.len(), c, "rmsnorm_backward: weight is not (C)");
    assert_eq!(dweight.len(), c, "rmsnorm_backward: dweight is not (C)");
    let inv_c = T::one() / T::cast(c as f64);

    // One block of rows: writes its dinp rows, returns its partial dweight.
    let block = |first_row: usize, dinp_blk: &mut [T]| -> Vec<T> {
        let mut dw = vec![T::zero(); c];
        for (i, dx) in dinp_blk.chunks_mut(c).enumerate() {
            let r = first_row + i;
            let (x, dy) = (&inp[r * c..(r + 1) * c], &dout[r * c..(r + 1) * c]);
            let s = rstd[r];
            // pass 1: mean(dxhat * xhat) = rstd * mean(dout * weight * x)
            let mut dyw_x = T::zero();
            for j in 0..c {
                dyw_x += dy[j] * weight[j] * x[j];
            }
            let mean_dxhat_xhat = dyw_x * s * inv_c;
            // pass 2: dinp of the row, and its share of dweight
            for j in 0..c {
                let xhat = x[j] * s;
                dx[j] = s * (dy[j] * weight[j] - xhat * mean_dxhat_xhat);
                dw[j] += dy[j] * xhat;
            }
        }
        dw
    };
    let partials: Vec<Vec<T>> = map_row_blocks(dinp, c, block);
    // Partial sums added in block order: the same result for any thread count.
    dweight.iter_mut().for_each(|v| *v = T::zero());
    for dw_part in &partials {
        for (d, &p) in dweight.iter_mut().zip(dw_part) {
            *d += p;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalized_rows_have_unit_rms() {
        let c = 7;
        let inp: Vec<f64> = (0..3 * c).map(|i| (i as f64 * 0.7).sin() * 3.0).collect();
        let (mut out, mut rstd) = (vec![0.0; 3 * c], vec![0.0; 3]);
        rmsnorm_forward(&mut out, &mut rstd, &inp, &vec![1.0; c], c, 0.0);
        for row in out.chunks(c) {
            let ms = row.iter().map(|v| v * v).sum::<f64>() / c as f64;
            assert!((ms - 1.0).abs() < 1e-12);
        }
    }
}
