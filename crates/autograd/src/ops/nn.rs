//! Fused neural-network ops: embedding (of an f32 or a frozen bf16 table), LayerNorm, causal self-attention
//! (cross-entropy is in [`super::logprobs`]).
//!
//! Each is one node on the tape with a hand-written backward, instead of a
//! chain of primitive ops: less memory (one saved buffer per op instead of
//! one per step) and one pass over the data each way. The loops live in
//! [`crate::kernels`] (`embedding`, `layernorm`, `attention`):
//! an op here checks the shapes, runs the forward kernel and records a
//! backward closure that runs the backward kernel.

use ndarray::IxDyn;

use crate::bf16_matrix::Bf16Matrix;
use crate::float::Float;
use crate::kernels::attention::{blocked, plain, AttentionDims, AttentionHeads, KeyGap};
use crate::kernels::embedding::{embedding_backward, embedding_forward};
use crate::kernels::layernorm::{layernorm_backward, layernorm_forward};
use crate::tape::{contiguous, Tape, Tensor, Var};

/// Which attention kernel an attention op runs.
enum AttentionKernel {
    /// [`plain`]: scalar loops, causal only.
    Plain,
    /// [`blocked`], with one [`KeyGap`] per sequence ([`KeyGap::NONE`]: causal).
    Blocked(Vec<KeyGap>),
}

/// Panics unless `ids` fill `shape` and each is below `v`, the table's
/// rows; returns their number.
fn check_ids(ids: &[usize], shape: &[usize], v: usize) -> usize {
    let n: usize = shape.iter().product();
    assert!(
        ids.len() == n,
        "embedding: {} ids do not fill shape {shape:?}",
        ids.len()
    );
    if let Some((pos, &id)) = ids.iter().enumerate().find(|(_, &id)| id >= v) {
        panic!("embedding: id {id} at position {pos} is out of range for a table of {v} rows");
    }
    n
}

impl<T: Float> Tape<T> {
    /// Rows of `table` picked by `ids`:  table: (V, C), ids: `shape` -> y: shape + (C)
    ///
    /// ```text
    /// y[i, :] = table[ids[i], :]
    /// dtable[v, :] = sum over i with ids[i] = v of dy[i, :]   (scatter-add, in order of i)
    /// ```
    /// See [`crate::kernels::embedding`].
    ///
    /// # Panics
    /// If `ids.len()` is not the product of `shape`, or an id is `>= V`.
    pub fn embedding(&self, table: &Var<T>, ids: &[usize], shape: &[usize]) -> Var<T> {
        assert!(
            table.ndim() == 2,
            "embedding: table must be (V, C), got {:?}",
            table.shape()
        );
        let (v, c) = (table.shape()[0], table.shape()[1]);
        let n = check_ids(ids, shape, v);
        let table_data = contiguous(table.value());
        let mut out = vec![T::zero(); n * c];
        embedding_forward(&mut out, &table_data, ids, c);
        drop(table_data);
        let mut out_shape = shape.to_vec();
        out_shape.push(c);
        let y = Tensor::from_shape_vec(IxDyn(&out_shape), out).unwrap();
        let ids = if self.needs_grad(&[table]) {
            ids.to_vec()
        } else {
            Vec::new()
        };
        self.record("embedding", y, &[table], move |dy| {
            let dout = contiguous(dy);
            let mut dtable = vec![T::zero(); v * c];
            embedding_backward(&mut dtable, &dout, &ids, c);
            vec![Some(
                Tensor::from_shape_vec(IxDyn(&[v, c]), dtable).unwrap(),
            )]
        })
    }

    /// Rows of a frozen bf16 `table` picked by `ids`, widened exactly:
    /// table: (V, C) as bf16, ids: `shape` -> y: shape + (C)
    ///
    /// ```text
    /// y[i, :] = table[ids[i], :]          (no gradient: the table is frozen)
    /// ```
    ///
    /// # Panics
    /// As [`Tape::embedding`].
    pub fn embedding_bf16(&self, table: &Bf16Matrix, ids: &[usize], shape: &[usize]) -> Var<T> {
        let (v, c) = table.dim();
        let n = check_ids(ids, shape, v);
        let mut out = vec![T::zero(); n * c];
        if c > 0 {
            out.chunks_mut(c)
                .zip(ids)
                .for_each(|(row, &id)| table.row_into(id, row));
        }
        let mut out_shape = shape.to_vec();
        out_shape.push(c);
        self.constant(Tensor::from_shape_vec(IxDyn(&out_shape), out).unwrap())
    }

    /// LayerNorm over the last axis:  x: (..., C), weight, bias: (C) -> y: (..., C)
    ///
    /// ```text
    /// y = (x - mean) * rstd * weight + bias,   rstd = 1 / sqrt(var + eps)
    /// dx = rstd * (dxhat - mean(dxhat) - xhat * mean(dxhat * xhat)),  dxhat = dy * weight
    /// dweight = sum over rows of dy * xhat,     dbias = sum over rows of dy
    /// ```
    /// The forward saves mean and rstd per row (see [`crate::kernels::layernorm`]).
    pub fn layer_norm(
        &self,
        x: &Var<T>,
        weight: &Var<T>,
        bias: Option<&Var<T>>,
        eps: f64,
    ) -> Var<T> {
        let sx = x.shape().to_vec();
        let c = *sx.last().unwrap_or(&0);
        assert!(
            c > 0 && weight.shape() == [c],
            "layer_norm: weight {:?} does not match input {sx:?} (expected [{c}])",
            weight.shape()
        );
        if let Some(b) = bias {
            assert!(
                b.shape() == [c],
                "layer_norm: bias {:?} does not match input {sx:?} (expected [{c}])",
                b.shape()
            );
        }
        let n = x.value().len() / c;
        let inp = contiguous(x.value());
        let w = contiguous(weight.value());
        let b = bias.map(|b| contiguous(b.value()));
        let mut out = vec![T::zero(); n * c];
        let mut mean = vec![T::zero(); n];
        let mut rstd = vec![T::zero(); n];
        layernorm_forward(
            &mut out,
            &mut mean,
            &mut rstd,
            &inp,
            &w,
            b.as_deref(),
            c,
            T::cast(eps),
        );
        drop((inp, w, b));
        let y = Tensor::from_shape_vec(IxDyn(&sx), out).unwrap();

        let (x_saved, w_saved) = (x.value_arc(), weight.value_arc());
        let mut inputs = vec![x, weight];
        inputs.extend(bias);
        let has_bias = bias.is_some();
        self.record("layer_norm", y, &inputs, move |dy| {
            let (dout, inp, w) = (contiguous(dy), contiguous(&x_saved), contiguous(&w_saved));
            let mut dinp = vec![T::zero(); n * c];
            let mut dweight = vec![T::zero(); c];
            let mut dbias = vec![T::zero(); if has_bias { c } else { 0 }];
            layernorm_backward(
                &mut dinp,
                &mut dweight,
                has_bias.then_some(&mut dbias[..]),
                &dout,
                &inp,
                &w,
                &mean,
                &rstd,
                c,
            );
            let mut grads = vec![
                Some(Tensor::from_shape_vec(IxDyn(x_saved.shape()), dinp).unwrap()),
                Some(Tensor::from_shape_vec(IxDyn(&[c]), dweight).unwrap()),
            ];
            if has_bias {
                grads.push(Some(Tensor::from_shape_vec(IxDyn(&[c]), dbias).unwrap()));
            }
            grads
        })
    }

    /// Causal self-attention on the output of the qkv projection, with
    /// grouped-query heads (`heads`; GPT-2: [`AttentionHeads::multi_head`]):
    /// qkv: (B, T, (NH + 2 NKV) hs) -> y: (B, T, NH hs), q, k, v in that order
    /// along the last axis; query head h reads kv head g = h / G.
    ///
    /// ```text
    /// preatt_h = q_h @ k_g^T / sqrt(hs)     dq_h = dpreatt_h @ k_g / sqrt(hs),  dk_g += dpreatt_h^T @ q_h / sqrt(hs)
    /// att_h = softmax(mask(preatt_h))       dpreatt_h = att_h * (datt_h - rowsum(att_h * datt_h))
    /// y_h = att_h @ v_g                     datt_h = dy_h @ v_g^T,  dv_g += att_h^T @ dy_h
    /// ```
    /// per query head h (T, T), g = h / G; the `+=` sum over the G query
    /// heads of kv head g; y is the heads side by side, (B, T, NH hs).
    /// The forward saves the probabilities `att` (B, NH, T, T); the backward
    /// (see [`blocked::attention_backward`]) needs nothing else. Runs the
    /// fast kernel, [`crate::kernels::attention::blocked`].
    pub fn causal_attention(&self, qkv: &Var<T>, heads: AttentionHeads) -> Var<T> {
        let b = qkv.shape().first().copied().unwrap_or(0);
        let kernel = AttentionKernel::Blocked(vec![KeyGap::NONE; b]);
        self.attention_op("causal_attention", qkv, heads, kernel)
    }

    /// [`Tape::causal_attention`] on the plain loops of
    /// [`crate::kernels::attention::plain`]: the same values to float
    /// rounding, much slower. For reading, and for checking the fast kernel.
    pub fn plain_causal_attention(&self, qkv: &Var<T>, heads: AttentionHeads) -> Var<T> {
        self.attention_op("plain_causal_attention", qkv, heads, AttentionKernel::Plain)
    }

    /// [`Tape::causal_attention`] where, in sequence `b`, the queries from
    /// `gaps[b].end` on do not see the keys `gaps[b].start..gaps[b].end`
    /// (prefix sharing: a row `[prompt | chosen | rejected]` hides the
    /// chosen span from the rejected tokens). qkv: (B, T, (NH + 2 NKV) hs), gaps: (B).
    ///
    /// ```text
    /// mask[i, j] = j <= i  and  not (i >= end and start <= j < end)
    /// ```
    /// Blocks of queries and keys that the mask hides wholly are skipped,
    /// not multiplied (`kernels::attention::blocked`).
    pub fn segment_attention(
        &self,
        qkv: &Var<T>,
        heads: AttentionHeads,
        gaps: &[KeyGap],
    ) -> Var<T> {
        let kernel = AttentionKernel::Blocked(gaps.to_vec());
        self.attention_op("segment_attention", qkv, heads, kernel)
    }

    /// The attention op of every kernel and mask: shape checks, forward
    /// kernel, backward closure.
    fn attention_op(
        &self,
        name: &str,
        qkv: &Var<T>,
        heads: AttentionHeads,
        kernel: AttentionKernel,
    ) -> Var<T> {
        if let Err(message) = heads.check() {
            panic!("{name}: {message}");
        }
        let s = qkv.shape().to_vec();
        let (qkv_w, c) = (heads.qkv_width(), heads.q_width());
        assert!(
            s.len() == 3 && s[2] == qkv_w,
            "{name}: qkv must be (B, T, (NH + 2 NKV) hs) = (B, T, {qkv_w}) for {heads:?}, got {s:?}"
        );
        let (b, t) = (s[0], s[1]);
        if let AttentionKernel::Blocked(gaps) = &kernel {
            assert!(
                gaps.len() == b && gaps.iter().all(|g| g.is_empty() || g.end <= t),
                "{name}: key gaps {gaps:?} do not fit qkv {s:?}"
            );
        }
        let dims = AttentionDims { b, t, heads };
        let qkv_data = contiguous(qkv.value());
        let mut out = vec![T::zero(); b * t * c];
        let mut att = vec![T::zero(); b * heads.n_head * t * t];
        match &kernel {
            AttentionKernel::Plain => plain::attention_forward(&mut out, &mut att, &qkv_data, dims),
            AttentionKernel::Blocked(gaps) => {
                blocked::attention_forward(&mut out, &mut att, &qkv_data, dims, gaps)
            }
        }
        drop(qkv_data);
        let y = Tensor::from_shape_vec(IxDyn(&[b, t, c]), out).unwrap();
        if !self.needs_grad(&[qkv]) {
            return self.record(name, y, &[qkv], |_| vec![None]);
        }
        let qkv_saved = qkv.value_arc();
        self.record(name, y, &[qkv], move |dy| {
            let (dout, qkv) = (contiguous(dy), contiguous(&qkv_saved));
            let mut dqkv = vec![T::zero(); b * t * qkv_w];
            match &kernel {
                AttentionKernel::Plain => {
                    plain::attention_backward(&mut dqkv, &dout, &qkv, &att, dims)
                }
                AttentionKernel::Blocked(gaps) => {
                    blocked::attention_backward(&mut dqkv, &dout, &qkv, &att, dims, gaps)
                }
            }
            vec![Some(
                Tensor::from_shape_vec(IxDyn(&[b, t, qkv_w]), dqkv).unwrap(),
            )]
        })
    }
}
