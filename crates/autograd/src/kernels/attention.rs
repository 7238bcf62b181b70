//! Causal multi-head self-attention forward and backward loops.
//!
//! The input is the output of the `c_attn` projection, `qkv: (B, T, 3C)`,
//! holding q, k and v in that order along the last axis; head `h` of q is the
//! column block `h*hs .. (h+1)*hs` (hs = C / NH), of k the same block shifted
//! by C, of v shifted by 2C. Every (b, h) pair is independent and runs as one
//! parallel task; its two products (`q @ k^T` and `att @ v`) are GEMMs on
//! strided views of `qkv`, so no head is ever copied out.
//!
//! The forward saves the attention probabilities `att: (B, NH, T, T)` (zero
//! above the diagonal), which is all the backward needs besides `qkv`.

use ndarray::{s, ArrayView2, ArrayView3, ArrayViewMut2, ArrayViewMut3, Axis};
use rayon::prelude::*;

use super::gemm::gemm_serial;
use super::simd::{max_lanes, sum_lanes};
use crate::float::Float;

/// The sizes of one attention call.
#[derive(Debug, Clone, Copy)]
pub struct AttentionDims {
    /// Batch size B.
    pub b: usize,
    /// Sequence length T.
    pub t: usize,
    /// Channels C (= NH * hs).
    pub c: usize,
    /// Number of heads NH.
    pub nh: usize,
}

impl AttentionDims {
    /// Head size hs = C / NH.
    pub fn hs(&self) -> usize {
        self.c / self.nh
    }
}

/// Splits `m: (T, W)` into its column blocks of width `hs`, in order.
fn column_blocks<T>(m: ArrayViewMut2<'_, T>, hs: usize) -> Vec<ArrayViewMut2<'_, T>> {
    let mut blocks = Vec::with_capacity(m.ncols() / hs);
    let mut rest = m;
    while rest.ncols() > hs {
        let (block, tail) = rest.split_at(Axis(1), hs);
        blocks.push(block);
        rest = tail;
    }
    blocks.push(rest);
    blocks
}

/// ```text
/// preatt[t, t2] = q[t] . k[t2] / sqrt(hs)                 (t2 <= t; masked above)
/// att[t, t2]    = exp(preatt[t, t2] - max) / sum_t2' exp(preatt[t, t2'] - max)
/// out[t]        = sum_t2 att[t, t2] v[t2]
/// ```
/// per (b, h). qkv: (B, T, 3C), out: (B, T, C), att: (B, NH, T, T).
pub fn attention_forward<T: Float>(out: &mut [T], att: &mut [T], qkv: &[T], dims: AttentionDims) {
    let AttentionDims { b, t, c, nh } = dims;
    let hs = dims.hs();
    assert_eq!(
        qkv.len(),
        b * t * 3 * c,
        "attention_forward: qkv is not (B, T, 3C)"
    );
    assert_eq!(
        out.len(),
        b * t * c,
        "attention_forward: out is not (B, T, C)"
    );
    assert_eq!(
        att.len(),
        b * nh * t * t,
        "attention_forward: att is not (B, NH, T, T)"
    );
    let scale = T::one() / T::cast(hs as f64).sqrt();
    let qkv = ArrayView3::from_shape((b, t, 3 * c), qkv).unwrap();
    let mut out = ArrayViewMut3::from_shape((b, t, c), out).unwrap();

    // One mutable (T, hs) output block per (b, h), in (b, h) order.
    let out_heads: Vec<ArrayViewMut2<'_, T>> = out
        .outer_iter_mut()
        .flat_map(|out_b| column_blocks(out_b, hs))
        .collect();
    let task = |(bh, (att_bh, mut out_bh)): (usize, (&mut [T], ArrayViewMut2<'_, T>))| {
        let (bi, h) = (bh / nh, bh % nh);
        let q = qkv.slice(s![bi, .., h * hs..(h + 1) * hs]); // (T, hs)
        let k = qkv.slice(s![bi, .., c + h * hs..c + (h + 1) * hs]); // (T, hs)
        let v = qkv.slice(s![bi, .., 2 * c + h * hs..2 * c + (h + 1) * hs]); // (T, hs)
        let mut att_m = ArrayViewMut2::from_shape((t, t), att_bh).unwrap();
        // pass 1: preatt = scale * q @ k^T   (T, T), by blocks of rows: a row
        // block [r0, r1) only needs the keys 0..r1 (the rest is masked), which
        // skips ~40% of the products at T = 128
        for (r0, r1) in row_blocks(t) {
            gemm_serial(
                scale,
                q.slice(s![r0..r1, ..]),
                k.slice(s![..r1, ..]).t(),
                T::zero(),
                att_m.slice_mut(s![r0..r1, ..r1]),
            );
        }
        // pass 2: causal softmax of each row over t2 <= t; zero above the diagonal
        for (ti, mut row) in att_m.outer_iter_mut().enumerate() {
            let row = row.as_slice_mut().unwrap();
            causal_softmax_row(row, ti);
        }
        // pass 3: out = att @ v   (T, hs), written straight into its column
        // block; again row block [r0, r1) only reads values 0..r1
        for (r0, r1) in row_blocks(t) {
            gemm_serial(
                T::one(),
                att_m.slice(s![r0..r1, ..r1]),
                v.slice(s![..r1, ..]),
                T::zero(),
                out_bh.slice_mut(s![r0..r1, ..]),
            );
        }
    };
    let items = att.chunks_mut(t * t).zip(out_heads).enumerate();
    if b * nh * t * t * hs < 1 << 14 {
        items.for_each(task);
    } else {
        items.collect::<Vec<_>>().into_par_iter().for_each(task);
    }
}

/// Rows per block of the causal products.
const ROW_BLOCK: usize = 32;

/// The row blocks `[r0, r1)` of a (T, T) causal attention matrix.
fn row_blocks(t: usize) -> impl Iterator<Item = (usize, usize)> {
    (0..t)
        .step_by(ROW_BLOCK)
        .map(move |r0| (r0, (r0 + ROW_BLOCK).min(t)))
}

/// In place: `row[..=last]` becomes its softmax, `row[last+1..]` zero (also
/// the generation kernel's, `transformer::kv_cache`).
pub fn causal_softmax_row<T: Float>(row: &mut [T], last: usize) {
    let (live, masked) = row.split_at_mut(last + 1);
    let max = max_lanes(live);
    live.iter_mut().for_each(|x| *x = (*x - max).exp_fast());
    let inv = T::one() / sum_lanes(live);
    live.iter_mut().for_each(|x| *x *= inv);
    masked.iter_mut().for_each(|x| *x = T::zero());
}

/// The backward of [`attention_forward`], per (b, h):
///
/// ```text
/// datt    = dout @ v^T                               (T, T)
/// dv      = att^T @ dout                             (T, hs)
/// dpreatt[t, t2] = att[t, t2] (datt[t, t2] - sum_t2' att[t, t2'] datt[t, t2'])   (softmax backward)
/// dq      = dpreatt @ k / sqrt(hs)                   dk = dpreatt^T @ q / sqrt(hs)
/// ```
/// The mask needs no code: `att` is zero above the diagonal, so `dpreatt` is too.
/// dqkv: (B, T, 3C) is overwritten; dout: (B, T, C); qkv, att as in the forward.
pub fn attention_backward<T: Float>(
    dqkv: &mut [T],
    dout: &[T],
    qkv: &[T],
    att: &[T],
    dims: AttentionDims,
) {
    let AttentionDims { b, t, c, nh } = dims;
    let hs = dims.hs();
    assert_eq!(
        dqkv.len(),
        b * t * 3 * c,
        "attention_backward: dqkv is not (B, T, 3C)"
    );
    assert_eq!(
        dout.len(),
        b * t * c,
        "attention_backward: dout is not (B, T, C)"
    );
    assert_eq!(
        qkv.len(),
        b * t * 3 * c,
        "attention_backward: qkv is not (B, T, 3C)"
    );
    assert_eq!(
        att.len(),
        b * nh * t * t,
        "attention_backward: att is not (B, NH, T, T)"
    );
    let scale = T::one() / T::cast(hs as f64).sqrt();
    let qkv = ArrayView3::from_shape((b, t, 3 * c), qkv).unwrap();
    let dout = ArrayView3::from_shape((b, t, c), dout).unwrap();
    let mut dqkv = ArrayViewMut3::from_shape((b, t, 3 * c), dqkv).unwrap();

    // Per (b, h): the (T, hs) blocks dq, dk, dv of dqkv, in (b, h) order.
    let mut grads: Vec<[ArrayViewMut2<'_, T>; 3]> = Vec::with_capacity(b * nh);
    for dqkv_b in dqkv.outer_iter_mut() {
        let mut blocks: Vec<Option<ArrayViewMut2<'_, T>>> =
            column_blocks(dqkv_b, hs).into_iter().map(Some).collect();
        for h in 0..nh {
            let dq = blocks[h].take().unwrap();
            let dk = blocks[nh + h].take().unwrap();
            let dv = blocks[2 * nh + h].take().unwrap();
            grads.push([dq, dk, dv]);
        }
    }
    let task =
        |(bh, (att_bh, [mut dq, mut dk, mut dv])): (usize, (&[T], [ArrayViewMut2<'_, T>; 3]))| {
            let (bi, h) = (bh / nh, bh % nh);
            let q = qkv.slice(s![bi, .., h * hs..(h + 1) * hs]); // (T, hs)
            let k = qkv.slice(s![bi, .., c + h * hs..c + (h + 1) * hs]);
            let v = qkv.slice(s![bi, .., 2 * c + h * hs..2 * c + (h + 1) * hs]);
            let dy = dout.slice(s![bi, .., h * hs..(h + 1) * hs]); // (T, hs)
            let att_m = ArrayView2::from_shape((t, t), att_bh).unwrap();
            // Row block [r0, r1) of att is zero beyond column r1, so every
            // product below only runs over keys 0..r1; dv and dk sum the
            // blocks' contributions (in a fixed order).
            dv.fill(T::zero());
            dk.fill(T::zero());
            let mut datt = ndarray::Array2::<T>::zeros((t, t));
            for (r0, r1) in row_blocks(t) {
                let dy_blk = dy.slice(s![r0..r1, ..]);
                let att_blk = att_m.slice(s![r0..r1, ..r1]);
                // out = att @ v   ->   datt = dout @ v^T,  dv += att^T @ dout
                gemm_serial(
                    T::one(),
                    dy_blk,
                    v.slice(s![..r1, ..]).t(),
                    T::zero(),
                    datt.slice_mut(s![r0..r1, ..r1]),
                );
                gemm_serial(
                    T::one(),
                    att_blk.t(),
                    dy_blk,
                    T::one(),
                    dv.slice_mut(s![..r1, ..]),
                );
            }
            // att = softmax(preatt)   ->   dpreatt = att * (datt - rowsum(att * datt)), in place
            for ti in 0..t {
                let a = &att_bh[ti * t..ti * t + ti + 1];
                let mut drow = datt.row_mut(ti);
                let d = drow.as_slice_mut().unwrap();
                let mut dot = T::zero();
                for j in 0..=ti {
                    dot += a[j] * d[j];
                }
                for j in 0..=ti {
                    d[j] = a[j] * (d[j] - dot);
                }
                d[ti + 1..].iter_mut().for_each(|x| *x = T::zero());
            }
            // preatt = scale * q @ k^T   ->   dq = scale * dpreatt @ k,  dk += scale * dpreatt^T @ q
            for (r0, r1) in row_blocks(t) {
                let dpre_blk = datt.slice(s![r0..r1, ..r1]);
                gemm_serial(
                    scale,
                    dpre_blk,
                    k.slice(s![..r1, ..]),
                    T::zero(),
                    dq.slice_mut(s![r0..r1, ..]),
                );
                gemm_serial(
                    scale,
                    dpre_blk.t(),
                    q.slice(s![r0..r1, ..]),
                    T::one(),
                    dk.slice_mut(s![..r1, ..]),
                );
            }
        };
    let items = att.chunks(t * t).zip(grads).enumerate();
    if b * nh * t * t * hs < 1 << 14 {
        items.for_each(task);
    } else {
        items.collect::<Vec<_>>().into_par_iter().for_each(task);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_position_attends_only_to_itself() {
        let dims = AttentionDims {
            b: 1,
            t: 3,
            c: 4,
            nh: 2,
        };
        let qkv: Vec<f64> = (0..3 * 12).map(|i| (i as f64 * 0.37).cos()).collect();
        let mut out = vec![0.0; 3 * 4];
        let mut att = vec![0.0; 2 * 9];
        attention_forward(&mut out, &mut att, &qkv, dims);
        // position 0 of each head copies v[0] of that head
        assert!((out[0] - qkv[8]).abs() < 1e-12 && (out[3] - qkv[11]).abs() < 1e-12);
        // rows of att sum to one, zeros above the diagonal
        for row in att.chunks(3) {
            assert!((row.iter().sum::<f64>() - 1.0).abs() < 1e-12);
        }
        assert_eq!(att[1], 0.0);
    }
}
