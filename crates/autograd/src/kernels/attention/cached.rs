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
/// per head h (column block `h*hs .. (h+1)*hs` of q, k, v and out).
/// qkv: (T_new, 3C), of which only q is read; keys, values: (L, C), the new
/// positions' included (rows P..L); out: (T_new, C).
pub fn attention_cached_forward<T: Float>(
    out: &mut [T],
    qkv: &[T],
    keys: &[T],
    values: &[T],
    c: usize,
    nh: usize,
) {
    assert!(
        nh > 0 && c.is_multiple_of(nh),
        "attention_cached_forward: {c} channels do not split into {nh} heads"
    );
    let hs = c / nh;
    let t_new = out.len() / c;
    let l = keys.len() / c;
    assert_eq!(
        qkv.len(),
        t_new * 3 * c,
        "attention_cached_forward: qkv is not (T_new, 3C)"
    );
    assert!(
        keys.len() == l * c && values.len() == l * c && t_new <= l,
        "attention_cached_forward: keys and values are not (L, C) with L >= T_new"
    );
    let past = l - t_new;
    let scale = T::one() / T::cast(hs as f64).sqrt();
    let qkv = ArrayView2::from_shape((t_new, 3 * c), qkv).unwrap();
    let keys = ArrayView2::from_shape((l, c), keys).unwrap();
    let values = ArrayView2::from_shape((l, c), values).unwrap();
    let mut out = ArrayViewMut2::from_shape((t_new, c), out).unwrap();

    let head = |(h, mut out_h): (usize, ArrayViewMut2<'_, T>)| {
        let q = qkv.slice(s![.., h * hs..(h + 1) * hs]); // (T_new, hs)
        let k = keys.slice(s![.., h * hs..(h + 1) * hs]); // (L, hs)
        let v = values.slice(s![.., h * hs..(h + 1) * hs]); // (L, hs)
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
    let heads = out.axis_chunks_iter_mut(Axis(1), hs).enumerate();
    if nh * t_new * l * hs < 1 << 14 {
        heads.for_each(head);
    } else {
        heads.collect::<Vec<_>>().into_par_iter().for_each(head);
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
    /// of the plain causal attention over the whole sequence.
    #[test]
    fn cached_rows_equal_plain_causal_attention() {
        for (t, c, nh) in [(9, 12, 3), (1, 1, 1), (7, 5, 1), (40, 16, 4)] {
            let qkv = values(t * 3 * c, 1); // (T, 3C)
            let mut full = vec![0.0; t * c];
            let mut att = vec![0.0; nh * t * t];
            let dims = AttentionDims { b: 1, t, c, nh };
            plain::attention_forward(&mut full, &mut att, &qkv, dims);
            let keys: Vec<f64> = qkv
                .chunks(3 * c)
                .flat_map(|r| r[c..2 * c].to_vec())
                .collect();
            let vals: Vec<f64> = qkv
                .chunks(3 * c)
                .flat_map(|r| r[2 * c..].to_vec())
                .collect();
            for l in 1..=t {
                for t_new in 1..=l {
                    let past = l - t_new;
                    let mut out = vec![0.0; t_new * c];
                    let new_qkv = &qkv[past * 3 * c..l * 3 * c];
                    attention_cached_forward(
                        &mut out,
                        new_qkv,
                        &keys[..l * c],
                        &vals[..l * c],
                        c,
                        nh,
                    );
                    let expected = &full[past * c..l * c];
                    let err = out
                        .iter()
                        .zip(expected)
                        .map(|(a, b)| (a - b).abs())
                        .fold(0.0, f64::max);
                    assert!(err < 1e-13, "T {t}, L {l}, T_new {t_new}: error {err}");
                }
            }
        }
    }
}
