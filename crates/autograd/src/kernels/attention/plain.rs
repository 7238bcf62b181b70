//! Causal self-attention in plain loops: what attention is.
//!
//! Each (b, t, h) is one query row: the dot products of the query with the
//! keys of positions `0..=t`, their softmax, and the weighted sum of the
//! values of the same positions; the keys and values are those of kv head
//! `h / G` (see [`super`] for the grouped-query layout). The backward walks the same rows and undoes
//! the three passes in reverse order. No GEMM, no blocking, no threads: this
//! is the definition, written to be read and to check the fast kernels
//! against ([`super::blocked`] for training, [`super::cached`] for
//! generation).
//!
//! ```text
//! forward, per (b, t, h)                       backward, per (b, t, h): the passes in reverse
//! pass 1: preatt[t2] = q[t] . k[t2] * scale    pass 1: dq[t] += dpreatt[t2] k[t2] * scale
//!         (t2 <= t, scale = 1 / sqrt(hs))              dk[t2] += dpreatt[t2] q[t] * scale
//! pass 2: att[t2] = exp(preatt[t2] - max)      pass 2: dpreatt[t2] = att[t2] (datt[t2] - sum_t3 att[t3] datt[t3])
//!                   / sum_t3 exp(preatt[t3] - max)
//!         att[t2] = 0 for t2 > t (the mask)
//! pass 3: out[t] = sum_t2 att[t2] v[t2]        pass 3: datt[t2] = dout[t] . v[t2]
//!                                                      dv[t2] += att[t2] dout[t]
//! ```
//! Subtracting the row max keeps `exp` from overflowing and cancels in the
//! ratio. The backward needs `qkv` and the saved `att` only: `preatt` is
//! never needed again, and the mask needs no code there because `att` is 0
//! above the diagonal. `dk` and `dv` gather from every later query and,
//! with grouped-query heads, from every query head of their group, hence
//! the `+=`.

use super::AttentionDims;
use crate::float::Float;

/// Where the vectors of (b, t, h) start in the buffers, and the sizes.
#[derive(Clone, Copy)]
struct Layout {
    t: usize,
    nh: usize,
    hs: usize,
    /// Query heads per kv head.
    group: usize,
    /// Widths of q (and out), of k (and v), of a row of qkv.
    q_width: usize,
    kv_width: usize,
    qkv_width: usize,
}

impl Layout {
    fn new(dims: AttentionDims) -> Layout {
        let heads = dims.heads;
        Layout {
            t: dims.t,
            nh: heads.n_head,
            hs: heads.head_dim,
            group: heads.group(),
            q_width: heads.q_width(),
            kv_width: heads.kv_width(),
            qkv_width: heads.qkv_width(),
        }
    }

    /// q of (b, t, h) in qkv: (B, T, (NH + 2 NKV) hs).
    fn q(&self, b: usize, t: usize, h: usize) -> usize {
        (b * self.t + t) * self.qkv_width + h * self.hs
    }

    /// k of (b, t) that query head h reads: kv head h / G, after all of q.
    fn k(&self, b: usize, t: usize, h: usize) -> usize {
        (b * self.t + t) * self.qkv_width + self.q_width + (h / self.group) * self.hs
    }

    /// v of (b, t) that query head h reads: kv head h / G, after all of k.
    fn v(&self, b: usize, t: usize, h: usize) -> usize {
        self.k(b, t, h) + self.kv_width
    }

    /// The head-h output of position t in out: (B, T, NH hs).
    fn out(&self, b: usize, t: usize, h: usize) -> usize {
        (b * self.t + t) * self.q_width + h * self.hs
    }

    /// The row of query t in att: (B, NH, T, T).
    fn att_row(&self, b: usize, t: usize, h: usize) -> usize {
        ((b * self.nh + h) * self.t + t) * self.t
    }
}

/// `a . b` of two vectors of the same length.
fn dot<T: Float>(a: &[T], b: &[T]) -> T {
    a.iter().zip(b).map(|(&x, &y)| x * y).sum()
}

/// ```text
/// preatt[t2] = q[t] . k[t2] / sqrt(hs)                     t2 <= t
/// att[t2]    = exp(preatt[t2] - max) / sum_t3 exp(preatt[t3] - max),   0 for t2 > t
/// out[t]     = sum_t2 att[t2] v[t2]
/// ```
/// per (b, t, h), q being query head h's column block of `qkv`, k and v
/// those of kv head h / G.
/// qkv: (B, T, (NH + 2 NKV) hs) -> out: (B, T, NH hs), att: (B, NH, T, T) (saved for the backward).
pub fn attention_forward<T: Float>(out: &mut [T], att: &mut [T], qkv: &[T], dims: AttentionDims) {
    let AttentionDims { b, t, heads } = dims;
    let (nh, hs) = (heads.n_head, heads.head_dim);
    dims.check("attention_forward", qkv.len(), out.len(), att.len());
    let at = Layout::new(dims);
    let scale = T::one() / T::cast(hs as f64).sqrt();
    for bi in 0..b {
        for ti in 0..t {
            for h in 0..nh {
                let q = &qkv[at.q(bi, ti, h)..][..hs]; // (hs)
                let att_row = &mut att[at.att_row(bi, ti, h)..][..t]; // (T)

                // pass 1: preatt[t2] = q . k[t2] * scale, for the keys t2 <= t; and their max
                let mut max = T::neg_infinity();
                for (t2, preatt) in att_row[..=ti].iter_mut().enumerate() {
                    let k = &qkv[at.k(bi, t2, h)..][..hs];
                    *preatt = dot(q, k) * scale;
                    max = max.max(*preatt);
                }

                // pass 2: att[t2] = exp(preatt[t2] - max) / sum; the later keys are masked: 0
                let mut sum = T::zero();
                for a in &mut att_row[..=ti] {
                    *a = (*a - max).exp();
                    sum += *a;
                }
                for a in &mut att_row[..=ti] {
                    *a /= sum;
                }
                att_row[ti + 1..].fill(T::zero());

                // pass 3: out[t] = sum_t2 att[t2] v[t2]
                let out_t = &mut out[at.out(bi, ti, h)..][..hs];
                out_t.fill(T::zero());
                for (t2, &a) in att_row[..=ti].iter().enumerate() {
                    let v = &qkv[at.v(bi, t2, h)..][..hs];
                    for (o, &vi) in out_t.iter_mut().zip(v) {
                        *o += a * vi;
                    }
                }
            }
        }
    }
}

/// The backward of [`attention_forward`], its passes in reverse:
///
/// ```text
/// datt[t2]    = dout[t] . v[t2]                  dv[t2] += att[t2] dout[t]             (pass 3)
/// dpreatt[t2] = att[t2] (datt[t2] - sum_t3 att[t3] datt[t3])                           (pass 2)
/// dq[t]      += dpreatt[t2] k[t2] / sqrt(hs)     dk[t2] += dpreatt[t2] q[t] / sqrt(hs) (pass 1)
/// ```
/// per (b, t, h), over the keys t2 <= t; dk and dv of kv head g sum over
/// its query heads.
/// dqkv: (B, T, (NH + 2 NKV) hs) is overwritten; dout: (B, T, NH hs); qkv and att as in the forward.
pub fn attention_backward<T: Float>(
    dqkv: &mut [T],
    dout: &[T],
    qkv: &[T],
    att: &[T],
    dims: AttentionDims,
) {
    let AttentionDims { b, t, heads } = dims;
    let (nh, hs) = (heads.n_head, heads.head_dim);
    assert_eq!(
        dqkv.len(),
        qkv.len(),
        "attention_backward: dqkv and qkv differ"
    );
    dims.check("attention_backward", qkv.len(), dout.len(), att.len());
    let at = Layout::new(dims);
    let scale = T::one() / T::cast(hs as f64).sqrt();
    dqkv.fill(T::zero());
    let mut datt = vec![T::zero(); t]; // (T), one query row at a time
    let mut dpreatt = vec![T::zero(); t]; // (T)
    for bi in 0..b {
        for ti in 0..t {
            for h in 0..nh {
                let att_row = &att[at.att_row(bi, ti, h)..][..t]; // (T)
                let dout_t = &dout[at.out(bi, ti, h)..][..hs]; // (hs)

                // pass 3: out[t] = sum_t2 att[t2] v[t2]
                //   ->  datt[t2] = dout[t] . v[t2],  dv[t2] += att[t2] dout[t]
                for t2 in 0..=ti {
                    datt[t2] = dot(dout_t, &qkv[at.v(bi, t2, h)..][..hs]);
                    let dv = &mut dqkv[at.v(bi, t2, h)..][..hs];
                    for (dvi, &d) in dv.iter_mut().zip(dout_t) {
                        *dvi += att_row[t2] * d;
                    }
                }

                // pass 2: att = softmax(preatt)
                //   ->  dpreatt[t2] = att[t2] (datt[t2] - sum_t3 att[t3] datt[t3])
                let att_dot_datt = dot(&att_row[..=ti], &datt[..=ti]);
                for t2 in 0..=ti {
                    dpreatt[t2] = att_row[t2] * (datt[t2] - att_dot_datt);
                }

                // pass 1: preatt[t2] = q[t] . k[t2] * scale
                //   ->  dq[t] += dpreatt[t2] k[t2] * scale,  dk[t2] += dpreatt[t2] q[t] * scale
                for t2 in 0..=ti {
                    let d = dpreatt[t2] * scale;
                    for i in 0..hs {
                        dqkv[at.q(bi, ti, h) + i] += d * qkv[at.k(bi, t2, h) + i];
                        dqkv[at.k(bi, t2, h) + i] += d * qkv[at.q(bi, ti, h) + i];
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::attention::AttentionHeads;

    #[test]
    fn first_position_copies_its_value_and_rows_sum_to_one() {
        let dims = AttentionDims {
            b: 1,
            t: 3,
            heads: AttentionHeads::multi_head(2, 4),
        };
        let qkv: Vec<f64> = (0..3 * 12).map(|i| (i as f64 * 0.37).cos()).collect();
        let mut out = vec![0.0; 3 * 4];
        let mut att = vec![0.0; 2 * 9];
        attention_forward(&mut out, &mut att, &qkv, dims);
        // position 0 of each head sees only itself: out = v[0] of that head
        assert_eq!(&out[..4], &qkv[8..12]);
        for row in att.chunks(3) {
            assert!((row.iter().sum::<f64>() - 1.0).abs() < 1e-12);
        }
        assert_eq!((att[1], att[2], att[5]), (0.0, 0.0, 0.0));
    }
}
