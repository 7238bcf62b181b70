//! Causal attention of the newest positions of one sequence against all its
//! positions so far, forward only: the kernel of generation with a key/value
//! cache (`transformer::KvCache` keeps the keys and values and calls it).
//!
//! It is [`super::plain`]'s forward restricted to the last `T_new` query rows
//! of a sequence of `L`: the keys and values of the `P = L - T_new` earlier
//! positions come from the cache instead of from `qkv`, and the rows before
//! `P` are not computed. Like [`super::blocked`] it runs the two products as
//! GEMMs per head and takes the softmax of a row with the same steps
//! ([`causal_softmax_row`]), so its rows equal the training kernel's.

use ndarray::{s, Array2, ArrayView2, ArrayViewMut2, Axis};
use rayon::prelude::*;

use super::blocked::causal_softmax_row;
use super::AttentionHeads;
use crate::float::Float;
use crate::kernels::gemm::gemm_serial;

/// Causal attention of the `T_new` newest positions of one sequence against
/// all `L` positions so far, forward only: the last `T_new` rows of causal
/// self-attention over the `L` positions, without the rows before.
///
/// ```text
/// P = L - T_new                                  positions before the new ones
/// preatt[i, t2] = q[i] . k[t2] / sqrt(hs)         t2 <= P + i (masked above)
/// att[i, t2]    = exp(preatt[i, t2] - max) / sum_t2' exp(preatt[i, t2'] - max)
/// out[i]        = sum_t2 att[i, t2] v[t2]
/// ```
/// per query head h, q its column block `h*hs .. (h+1)*hs` (and out's), k
/// and v kv head `h / G`'s (see [`super`] for the layout).
/// qkv: (T_new, (NH + 2 NKV) hs), of which only q is read; keys, values:
/// (L, NKV hs), the new positions' included (rows P..L); out: (T_new, NH hs).
pub fn attention_cached_forward<T: Float>(
    out: &mut [T],
    qkv: &[T],
    keys: &[T],
    values: &[T],
    heads: AttentionHeads,
) {
    if let Err(message) = heads.check() {
        panic!("attention_cached_forward: {message}");
    }
    let (hs, group) = (heads.head_dim, heads.group());
    let (q_w, kv_w, qkv_w) = (heads.q_width(), heads.kv_width(), heads.qkv_width());
    let t_new = out.len() / q_w;
    let l = keys.len() / kv_w;
    assert_eq!(
        (qkv.len(), out.len()),
        (t_new * qkv_w, t_new * q_w),
        "attention_cached_forward: qkv and out are not (T_new, {qkv_w}) and (T_new, {q_w})"
    );
    assert!(
        keys.len() == l * kv_w && values.len() == l * kv_w && t_new <= l,
        "attention_cached_forward: keys and values are not (L, {kv_w}) with L >= T_new"
    );
    let past = l - t_new;
    let scale = T::one() / T::cast(hs as f64).sqrt();
    let qkv = ArrayView2::from_shape((t_new, qkv_w), qkv).unwrap();
    let keys = ArrayView2::from_shape((l, kv_w), keys).unwrap();
    let values = ArrayView2::from_shape((l, kv_w), values).unwrap();
    let mut out = ArrayViewMut2::from_shape((t_new, q_w), out).unwrap();

    let head = |(h, mut out_h): (usize, ArrayViewMut2<'_, T>)| {
        let g = h / group;
        let q = qkv.slice(s![.., h * hs..(h + 1) * hs]); // (T_new, hs)
        let k = keys.slice(s![.., g * hs..(g + 1) * hs]); // (L, hs)
        let v = values.slice(s![.., g * hs..(g + 1) * hs]); // (L, hs)

        // pass 1: preatt = scale * q @ k^T   (T_new, L)
        let mut att = Array2::zeros((t_new, l));
        gemm_serial(scale, q, k.t(), T::zero(), att.view_mut());
        // pass 2: softmax of row i over t2 <= P + i; zero above
        for (i, mut row) in att.outer_iter_mut().enumerate() {
            causal_softmax_row(row.as_slice_mut().unwrap(), past + i);
        }
        // pass 3: out = att @ v   (T_new, hs), straight into its column block
        gemm_serial(T::one(), att.view(), v, T::zero(), out_h.view_mut());
    };
    let heads_out = out.axis_chunks_iter_mut(Axis(1), hs).enumerate();
    if heads.n_head * t_new * l * hs < 1 << 14 {
        heads_out.for_each(head);
    } else {
        heads_out.collect::<Vec<_>>().into_par_iter().for_each(head);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::attention::{plain, AttentionDims};

    /// Deterministic values in [-2, 2).
    fn values(n: usize, seed: usize) -> Vec<f64> {
        (0..n)
            .map(|i| ((i * 7919 + seed * 104_729) % 1000) as f64 / 250.0 - 2.0)
            .collect()
    }

    /// Every split of a sequence into cached and new positions gives the rows
    /// of the plain causal attention over the whole sequence, for multi-head,
    /// grouped-query and multi-query heads.
    #[test]
    fn cached_rows_equal_plain_causal_attention() {
        for (t, n_head, n_kv_head, head_dim) in [
            (9, 3, 3, 4),
            (1, 1, 1, 1),
            (7, 1, 1, 5),
            (40, 4, 4, 4),
            (9, 4, 2, 3),
            (7, 3, 1, 2),
            // the parallel path over heads
            (40, 8, 2, 4),
        ] {
            let heads = AttentionHeads {
                n_head,
                n_kv_head,
                head_dim,
            };
            let (q_w, kv_w, qkv_w) = (heads.q_width(), heads.kv_width(), heads.qkv_width());
            let qkv = values(t * qkv_w, 1); // (T, (NH + 2 NKV) hs)
            let mut full = vec![0.0; t * q_w];
            let mut att = vec![0.0; n_head * t * t];
            let dims = AttentionDims { b: 1, t, heads };
            plain::attention_forward(&mut full, &mut att, &qkv, dims);
            let keys: Vec<f64> = qkv
                .chunks(qkv_w)
                .flat_map(|r| r[q_w..q_w + kv_w].to_vec())
                .collect();
            let vals: Vec<f64> = qkv
                .chunks(qkv_w)
                .flat_map(|r| r[q_w + kv_w..].to_vec())
                .collect();
            for l in 1..=t {
                for t_new in 1..=l {
                    let past = l - t_new;
                    let mut out = vec![0.0; t_new * q_w];
                    let new_qkv = &qkv[past * qkv_w..l * qkv_w];
                    attention_cached_forward(
                        &mut out,
                        new_qkv,
                        &keys[..l * kv_w],
                        &vals[..l * kv_w],
                        heads,
                    );
                    let expected = &full[past * q_w..l * q_w];
                    let err = out
                        .iter()
                        .zip(expected)
                        .map(|(a, b)| (a - b).abs())
                        .fold(0.0, f64::max);
                    assert!(
                        err < 1e-13,
                        "{heads:?}, T {t}, L {l}, T_new {t_new}: error {err}"
                    );
                }
            }
        }
    }
}
