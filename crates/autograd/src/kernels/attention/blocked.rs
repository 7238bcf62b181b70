//! The fast causal attention the model runs (grouped-query heads, see
//! [`super`]), optionally with a gap of hidden keys per sequence (prefix
//! sharing). It computes what [`super::plain`] computes; read that one first.
//!
//! In the forward every (b, h) pair is independent and runs as one parallel
//! task. In the backward the query heads of one kv head all add into its
//! `dk` and `dv`, so a task is a (b, kv head g) pair that walks the group's
//! query heads in order: no two tasks write the same gradient, and the sums
//! come out in a fixed order whatever the thread count. The two products
//! (`q @ k^T` and `att @ v`) are GEMMs on strided views of `qkv`, so no head
//! is ever copied out.
//!
//! **The mask.** Query `i` sees key `j` when `j <= i` (causal) and `j` is not
//! in the row's [`KeyGap`] `start..end` while `i >= end`. A DPO pair laid out
//! as one row `[prompt | chosen | rejected]` has the gap `P..P+C`: chosen
//! tokens see the prompt and the earlier chosen tokens, rejected tokens see
//! the prompt and the earlier rejected tokens, never the chosen ones. The
//! plain causal mask is the empty gap.
//!
//! **Skipping masked blocks.** The queries are walked in blocks of
//! [`ROW_BLOCK`] rows, cut again at the gap's end, so that every block is
//! either wholly before the gap's end (it sees keys `0..r1`) or wholly after
//! it (keys `0..start` and `end..r1`). Each product runs only over the key
//! ranges its block sees (`visible_keys`): the keys above the last row of
//! the block and the whole gap are never multiplied. Inside those ranges the
//! causal triangle of the diagonal block is masked by the softmax, exactly.
//!
//! The forward saves the attention probabilities `att: (B, NH, T, T)` (zero
//! wherever the mask hides a key), which is all the backward needs besides
//! `qkv`.

use std::ops::Range;

use ndarray::{s, ArrayView2, ArrayView3, ArrayViewMut2, ArrayViewMut3, Axis};
use rayon::prelude::*;

use super::AttentionDims;
use crate::float::Float;
use crate::kernels::gemm::gemm_serial;
use crate::kernels::simd::{max_lanes, sum_lanes};

/// Keys `start..end` of one sequence, hidden from the queries at `end` and
/// after (earlier queries see them causally). Prefix sharing of a pair
/// `[prompt | chosen | rejected]` hides the chosen span `P..P+C` from the
/// rejected tokens; [`KeyGap::NONE`] is the plain causal mask.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct KeyGap {
    /// First hidden key.
    pub start: usize,
    /// One past the last hidden key; the first query that does not see them.
    pub end: usize,
    /// The sequence's real length: the positions from `len` on are padding,
    /// never computed (their output and probabilities are 0; no real query
    /// sees them). `usize::MAX`: no padding.
    pub len: usize,
}

impl KeyGap {
    /// No hidden keys: causal attention.
    pub const NONE: KeyGap = KeyGap {
        start: 0,
        end: 0,
        len: usize::MAX,
    };

    /// Hides the keys `start..end` from the later queries of a sequence of
    /// `len` real positions.
    pub fn new(start: usize, end: usize, len: usize) -> KeyGap {
        KeyGap { start, end, len }
    }

    /// The positions computed in a sequence of `t`: `0..min(len, t)`.
    fn live(&self, t: usize) -> usize {
        self.len.min(t)
    }

    /// Whether the gap hides any key.
    pub fn is_empty(&self) -> bool {
        self.start >= self.end
    }

    /// The keys query `i` sees: `0..=i`, minus the gap once `i >= end`. One
    /// range or two, the second possibly empty.
    pub fn visible_to(&self, i: usize) -> [Range<usize>; 2] {
        if self.is_empty() || i < self.end {
            [0..i + 1, 0..0]
        } else if self.start == 0 {
            [self.end..i + 1, 0..0]
        } else {
            [0..self.start, self.end..i + 1]
        }
    }
}

/// The key ranges a query block `r0..r1` multiplies: `0..r1`, or `0..start`
/// and `end..r1` for a block after the gap's end (the blocks of
/// [`query_blocks`] never straddle it). Empty ranges are left out.
fn visible_keys(gap: KeyGap, r0: usize, r1: usize) -> impl Iterator<Item = Range<usize>> {
    let ranges = if gap.is_empty() || r0 < gap.end {
        [0..r1, 0..0]
    } else {
        [0..gap.start, gap.end..r1]
    };
    ranges.into_iter().filter(|r| !r.is_empty())
}

/// Rows per block of the causal products.
pub const ROW_BLOCK: usize = 32;

/// The query blocks `[r0, r1)` of a (T, T) attention matrix: every
/// [`ROW_BLOCK`] rows, and also at the gap's end, so that no block has
/// queries on both sides of it.
fn query_blocks(t: usize, gap: KeyGap) -> Vec<(usize, usize)> {
    let t = gap.live(t);
    let mut cuts: Vec<usize> = (0..t).step_by(ROW_BLOCK).collect();
    if !gap.is_empty() && gap.end < t && !gap.end.is_multiple_of(ROW_BLOCK) {
        cuts.push(gap.end);
        cuts.sort_unstable();
    }
    cuts.iter()
        .enumerate()
        .map(|(n, &r0)| (r0, cuts.get(n + 1).copied().unwrap_or(t)))
        .collect()
}

/// Multiply-adds of the two products `q @ k^T` and `att @ v` of one head
/// that the blocks actually run: `2 hs` per (query, key) entry multiplied.
/// What the gaps and the causal blocks save is this against `2 hs T^2`.
pub fn attention_macs(t: usize, hs: usize, gap: KeyGap) -> usize {
    query_blocks(t, gap)
        .into_iter()
        .map(|(r0, r1)| {
            let keys: usize = visible_keys(gap, r0, r1).map(|r| r.len()).sum();
            2 * hs * (r1 - r0) * keys
        })
        .sum()
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

/// Checks the gaps: one per sequence, inside it.
fn check_gaps(gaps: &[KeyGap], dims: AttentionDims, op: &str) {
    assert_eq!(
        gaps.len(),
        dims.b,
        "{op}: {} key gaps for B = {}",
        gaps.len(),
        dims.b
    );
    for gap in gaps {
        assert!(
            gap.is_empty() || gap.end <= dims.t,
            "{op}: key gap {gap:?} outside a sequence of {}",
            dims.t
        );
    }
}

/// ```text
/// preatt[t, t2] = q[t] . k[t2] / sqrt(hs)                 (t2 visible to t; masked otherwise)
/// att[t, t2]    = exp(preatt[t, t2] - max) / sum_t2' exp(preatt[t, t2'] - max)
/// out[t]        = sum_t2 att[t, t2] v[t2]
/// ```
/// per (b, h), k and v of kv head h / G, "visible" as [`KeyGap::visible_to`] of `gaps[b]`.
/// qkv: (B, T, (NH + 2 NKV) hs), out: (B, T, NH hs), att: (B, NH, T, T), gaps: (B).
pub fn attention_forward<T: Float>(
    out: &mut [T],
    att: &mut [T],
    qkv: &[T],
    dims: AttentionDims,
    gaps: &[KeyGap],
) {
    let AttentionDims { b, t, heads } = dims;
    dims.check("attention_forward", qkv.len(), out.len(), att.len());
    check_gaps(gaps, dims, "attention_forward");
    let (nh, hs, group) = (heads.n_head, heads.head_dim, heads.group());
    let (q_w, kv_w) = (heads.q_width(), heads.kv_width());
    let scale = T::one() / T::cast(hs as f64).sqrt();
    let qkv = ArrayView3::from_shape((b, t, heads.qkv_width()), qkv).unwrap();
    let mut out = ArrayViewMut3::from_shape((b, t, q_w), out).unwrap();

    // One mutable (T, hs) output block per (b, h), in (b, h) order.
    let out_heads: Vec<ArrayViewMut2<'_, T>> = out
        .outer_iter_mut()
        .flat_map(|out_b| column_blocks(out_b, hs))
        .collect();
    let task = |(bh, (att_bh, mut out_bh)): (usize, (&mut [T], ArrayViewMut2<'_, T>))| {
        let (bi, h) = (bh / nh, bh % nh);
        let gap = gaps[bi];
        let (k0, v0) = (q_w + (h / group) * hs, q_w + kv_w + (h / group) * hs);
        let q = qkv.slice(s![bi, .., h * hs..(h + 1) * hs]); // (T, hs)
        let k = qkv.slice(s![bi, .., k0..k0 + hs]); // (T, hs), kv head h / G
        let v = qkv.slice(s![bi, .., v0..v0 + hs]); // (T, hs)
        let mut att_m = ArrayViewMut2::from_shape((t, t), att_bh).unwrap();
        let blocks = query_blocks(t, gap);
        // padding queries: nothing computed, zero
        let live = gap.live(t);
        att_m.slice_mut(s![live.., ..]).fill(T::zero());
        out_bh.slice_mut(s![live.., ..]).fill(T::zero());
        // pass 1: preatt = scale * q @ k^T   (T, T), by blocks of rows: a row
        // block [r0, r1) only needs the keys it can see (0..r1, less the gap),
        // which skips ~40% of the products at T = 128 with no gap
        for &(r0, r1) in &blocks {
            for keys in visible_keys(gap, r0, r1) {
                gemm_serial(
                    scale,
                    q.slice(s![r0..r1, ..]),
                    k.slice(s![keys.clone(), ..]).t(),
                    T::zero(),
                    att_m.slice_mut(s![r0..r1, keys]),
                );
            }
        }
        // pass 2: softmax of each row over its visible keys; zero elsewhere
        for (ti, mut row) in att_m.outer_iter_mut().enumerate().take(gap.live(t)) {
            let row = row.as_slice_mut().unwrap();
            masked_softmax_row(row, gap.visible_to(ti));
        }
        // pass 3: out = att @ v   (T, hs), written straight into its column
        // block; again row block [r0, r1) only reads the values it can see
        for &(r0, r1) in &blocks {
            for (n, keys) in visible_keys(gap, r0, r1).enumerate() {
                gemm_serial(
                    T::one(),
                    att_m.slice(s![r0..r1, keys.clone()]),
                    v.slice(s![keys, ..]),
                    if n == 0 { T::zero() } else { T::one() },
                    out_bh.slice_mut(s![r0..r1, ..]),
                );
            }
        }
    };
    let items = att.chunks_mut(t * t).zip(out_heads).enumerate();
    if b * nh * t * t * hs < 1 << 14 {
        items.for_each(task);
    } else {
        items.collect::<Vec<_>>().into_par_iter().for_each(task);
    }
}

/// In place: `row[..=last]` becomes its softmax, `row[last+1..]` zero (also
/// the generation kernel's, [`super::cached`], so that its rows equal these).
pub fn causal_softmax_row<T: Float>(row: &mut [T], last: usize) {
    masked_softmax_row(row, [0..last + 1, 0..0]);
}

/// In place: the entries of `row` in the `visible` ranges (in order, the
/// first non-empty, the second possibly empty) become their joint softmax,
/// every other entry zero.
///
/// ```text
/// m = max over visible x,   y = exp(x - m) / sum over visible exp(x - m)
/// ```
fn masked_softmax_row<T: Float>(row: &mut [T], visible: [Range<usize>; 2]) {
    let [first, second] = visible;
    let mut max = max_lanes(&row[first.clone()]);
    if !second.is_empty() {
        max = max.max(max_lanes(&row[second.clone()]));
    }
    for range in [first.clone(), second.clone()] {
        row[range]
            .iter_mut()
            .for_each(|x| *x = (*x - max).exp_fast());
    }
    let mut total = sum_lanes(&row[first.clone()]);
    if !second.is_empty() {
        total += sum_lanes(&row[second.clone()]);
    }
    let inv = T::one() / total;
    for range in [first.clone(), second.clone()] {
        row[range].iter_mut().for_each(|x| *x *= inv);
    }
    // zero what no range covers: before, between and after them
    let live_end = if second.is_empty() {
        first.end
    } else {
        second.end
    };
    let between = if second.is_empty() {
        0..0
    } else {
        first.end..second.start
    };
    for range in [0..first.start, between, live_end..row.len()] {
        row[range].iter_mut().for_each(|x| *x = T::zero());
    }
}

/// The backward of [`attention_forward`], per (b, h), g = h / G:
///
/// ```text
/// datt    = dout @ v_g^T                             (T, T)
/// dv_g   += att^T @ dout                             (T, hs)
/// dpreatt[t, t2] = att[t, t2] (datt[t, t2] - sum_t2' att[t, t2'] datt[t, t2'])   (softmax backward)
/// dq      = dpreatt @ k_g / sqrt(hs)                 dk_g += dpreatt^T @ q / sqrt(hs)
/// ```
/// One task per (b, g) runs the G query heads of kv head g in order, so
/// `dk_g` and `dv_g` sum over them in a fixed order. The mask needs no code
/// of its own: `att` is zero wherever a key is hidden, so `dpreatt` is too;
/// the products run over the same visible key ranges as the forward.
/// dqkv: (B, T, (NH + 2 NKV) hs) is overwritten; dout: (B, T, NH hs); qkv, att, gaps as in the forward.
pub fn attention_backward<T: Float>(
    dqkv: &mut [T],
    dout: &[T],
    qkv: &[T],
    att: &[T],
    dims: AttentionDims,
    gaps: &[KeyGap],
) {
    let AttentionDims { b, t, heads } = dims;
    assert_eq!(
        dqkv.len(),
        qkv.len(),
        "attention_backward: dqkv and qkv differ"
    );
    dims.check("attention_backward", qkv.len(), dout.len(), att.len());
    check_gaps(gaps, dims, "attention_backward");
    let (nh, nkv, hs, group) = (heads.n_head, heads.n_kv_head, heads.head_dim, heads.group());
    let (q_w, kv_w, qkv_w) = (heads.q_width(), heads.kv_width(), heads.qkv_width());
    let scale = T::one() / T::cast(hs as f64).sqrt();
    let qkv = ArrayView3::from_shape((b, t, qkv_w), qkv).unwrap();
    let dout = ArrayView3::from_shape((b, t, q_w), dout).unwrap();
    let mut dqkv = ArrayViewMut3::from_shape((b, t, qkv_w), dqkv).unwrap();

    // Per (b, g): the (T, hs) blocks dq of the group's G query heads, in
    // order, and dk, dv of kv head g; in (b, g) order.
    type Grads<'a, T> = (
        Vec<ArrayViewMut2<'a, T>>,
        ArrayViewMut2<'a, T>,
        ArrayViewMut2<'a, T>,
    );
    let mut grads: Vec<Grads<'_, T>> = Vec::with_capacity(b * nkv);
    for dqkv_b in dqkv.outer_iter_mut() {
        let mut blocks = column_blocks(dqkv_b, hs).into_iter();
        let dq: Vec<_> = blocks.by_ref().take(nh).collect();
        let dk: Vec<_> = blocks.by_ref().take(nkv).collect();
        let dv: Vec<_> = blocks.collect();
        let mut dq = dq.into_iter();
        for (dk, dv) in dk.into_iter().zip(dv) {
            grads.push((dq.by_ref().take(group).collect(), dk, dv));
        }
    }
    let task = |(bg, (att_bg, (dqs, mut dk, mut dv))): (usize, (&[T], Grads<'_, T>))| {
        let (bi, g) = (bg / nkv, bg % nkv);
        let gap = gaps[bi];
        let (k0, v0) = (q_w + g * hs, q_w + kv_w + g * hs);
        let k = qkv.slice(s![bi, .., k0..k0 + hs]); // (T, hs)
        let v = qkv.slice(s![bi, .., v0..v0 + hs]); // (T, hs)
        let blocks = query_blocks(t, gap);
        // Row block [r0, r1) of att is zero outside its visible keys, so
        // every product below only runs over those; dv and dk sum the
        // blocks' and the query heads' contributions (in a fixed order).
        dv.fill(T::zero());
        dk.fill(T::zero());
        let mut datt = ndarray::Array2::<T>::zeros((t, t));
        for (j, (att_bh, mut dq)) in att_bg.chunks(t * t).zip(dqs).enumerate() {
            let h = g * group + j; // the group's j-th query head
            let q = qkv.slice(s![bi, .., h * hs..(h + 1) * hs]); // (T, hs)
            let dy = dout.slice(s![bi, .., h * hs..(h + 1) * hs]); // (T, hs)
            let att_m = ArrayView2::from_shape((t, t), att_bh).unwrap();
            dq.slice_mut(s![gap.live(t).., ..]).fill(T::zero()); // padding queries
            if j > 0 {
                datt.fill(T::zero());
            }
            for &(r0, r1) in &blocks {
                let dy_blk = dy.slice(s![r0..r1, ..]);
                for keys in visible_keys(gap, r0, r1) {
                    let att_blk = att_m.slice(s![r0..r1, keys.clone()]);
                    // out = att @ v   ->   datt = dout @ v^T,  dv += att^T @ dout
                    gemm_serial(
                        T::one(),
                        dy_blk,
                        v.slice(s![keys.clone(), ..]).t(),
                        T::zero(),
                        datt.slice_mut(s![r0..r1, keys.clone()]),
                    );
                    gemm_serial(
                        T::one(),
                        att_blk.t(),
                        dy_blk,
                        T::one(),
                        dv.slice_mut(s![keys, ..]),
                    );
                }
            }
            // att = softmax(preatt)   ->   dpreatt = att * (datt - rowsum(att * datt)), in place
            for ti in 0..gap.live(t) {
                let a = &att_bh[ti * t..(ti + 1) * t];
                let mut drow = datt.row_mut(ti);
                let d = drow.as_slice_mut().unwrap();
                let visible = gap.visible_to(ti);
                let mut dot = T::zero();
                for j in visible.iter().flat_map(|r| r.clone()) {
                    dot += a[j] * d[j];
                }
                for j in visible.iter().flat_map(|r| r.clone()) {
                    d[j] = a[j] * (d[j] - dot);
                }
                d[ti + 1..].iter_mut().for_each(|x| *x = T::zero());
            }
            // preatt = scale * q @ k^T   ->   dq = scale * dpreatt @ k,  dk += scale * dpreatt^T @ q
            for &(r0, r1) in &blocks {
                for (n, keys) in visible_keys(gap, r0, r1).enumerate() {
                    let dpre_blk = datt.slice(s![r0..r1, keys.clone()]);
                    gemm_serial(
                        scale,
                        dpre_blk,
                        k.slice(s![keys.clone(), ..]),
                        if n == 0 { T::zero() } else { T::one() },
                        dq.slice_mut(s![r0..r1, ..]),
                    );
                    gemm_serial(
                        scale,
                        dpre_blk.t(),
                        q.slice(s![r0..r1, ..]),
                        T::one(),
                        dk.slice_mut(s![keys, ..]),
                    );
                }
            }
        }
    };
    // att: (B, NH, T, T), so the G heads of (b, g) are one contiguous chunk
    let items = att.chunks(group * t * t).zip(grads).enumerate();
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
            heads: crate::kernels::attention::AttentionHeads::multi_head(2, 4),
        };
        let qkv: Vec<f64> = (0..3 * 12).map(|i| (i as f64 * 0.37).cos()).collect();
        let mut out = vec![0.0; 3 * 4];
        let mut att = vec![0.0; 2 * 9];
        attention_forward(&mut out, &mut att, &qkv, dims, &[KeyGap::NONE]);
        // position 0 of each head copies v[0] of that head
        assert!((out[0] - qkv[8]).abs() < 1e-12 && (out[3] - qkv[11]).abs() < 1e-12);
        // rows of att sum to one, zeros above the diagonal
        for row in att.chunks(3) {
            assert!((row.iter().sum::<f64>() - 1.0).abs() < 1e-12);
        }
        assert_eq!(att[1], 0.0);
    }
}
