//! The key/value cache of generation, and its forward-only attention kernel.
//!
//! In a causal decoder the keys and values of a position depend only on the
//! tokens up to it (position `t` attends to `t2 <= t` only), so they never
//! change as the sequence grows. [`KvCache`] keeps them, per block, for every
//! processed position of one sequence. Continuing the sequence by `T_new`
//! tokens then runs the model's own forward ([`Gpt::hidden_states_cached`],
//! the same blocks as training) on those positions only, with each block's
//! attention in [`AttentionMode::Cached`]: the new keys and values are
//! appended to the cache, and the new queries attend to all the cached ones
//! ([`attention_cached_forward`]).
//!
//! A prompt is one call (`T_new` = its length, on an empty cache: this is
//! exactly causal self-attention over the prompt); each generated token is
//! then one call with `T_new = 1`.
//!
//! [`AttentionMode::Cached`]: crate::model::AttentionMode::Cached

use autograd::kernels::gemm::gemm_serial;
// The softmax of a row of scores, the same steps as the training kernel's.
use autograd::kernels::attention::causal_softmax_row;
use autograd::{Float, Tape, Tensor, Var};
use ndarray::{s, Array2, ArrayView2, ArrayViewMut2, Axis, IxDyn};
use rayon::prelude::*;

use crate::model::Gpt;

/// The keys and values of every processed position of one sequence, per block.
#[derive(Debug, Clone)]
pub struct KvCache<T> {
    layers: Vec<LayerKvCache<T>>,
}

/// One block's cached keys and values.
#[derive(Debug, Clone)]
pub struct LayerKvCache<T> {
    /// Keys of positions 0..len: (len, C), row-major.
    keys: Vec<T>,
    /// Values of positions 0..len: (len, C).
    values: Vec<T>,
    /// C
    n_embd: usize,
}

impl<T: Float> KvCache<T> {
    /// An empty cache for `model`.
    pub fn new(model: &Gpt<T>) -> KvCache<T> {
        let cfg = model.config();
        let layer = || LayerKvCache {
            keys: Vec::with_capacity(cfg.block_size * cfg.n_embd),
            values: Vec::with_capacity(cfg.block_size * cfg.n_embd),
            n_embd: cfg.n_embd,
        };
        KvCache {
            layers: (0..cfg.n_layer).map(|_| layer()).collect(),
        }
    }

    /// Number of cached positions.
    pub fn len(&self) -> usize {
        self.layers[0].len()
    }

    /// True when nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Forgets every position.
    pub fn clear(&mut self) {
        for layer in &mut self.layers {
            layer.keys.clear();
            layer.values.clear();
        }
    }

    /// Number of blocks.
    pub fn num_layers(&self) -> usize {
        self.layers.len()
    }

    /// The cache of block `layer`.
    pub fn layer_mut(&mut self, layer: usize) -> &mut LayerKvCache<T> {
        &mut self.layers[layer]
    }

    /// Runs the model on `tokens` at the next positions (`len()..len() + n`),
    /// caches their keys and values, and returns the logits (V) that predict
    /// the token after the last one.
    ///
    /// # Panics
    /// If `tokens` is empty, the positions would pass `block_size`, or a
    /// token is out of the vocabulary.
    pub fn extend(&mut self, model: &Gpt<T>, tokens: &[usize]) -> Vec<T> {
        assert!(!tokens.is_empty(), "KvCache::extend: no tokens");
        let tape = Tape::no_grad();
        let params = model.bind(&tape);
        let hidden = model.hidden_states_cached(&tape, &params, tokens, self); // (1, T, C)
                                                                               // only the last position predicts the next token
        let last = tape.narrow(&hidden, 1, tokens.len() - 1, 1); // (1, 1, C)
        let logits = model.logits(&tape, &params, &last); // (1, 1, V)
        logits.value().iter().copied().collect()
    }

    /// [`KvCache::extend`] by one token.
    pub fn step(&mut self, model: &Gpt<T>, token: usize) -> Vec<T> {
        self.extend(model, &[token])
    }

    /// Clears the cache and runs `tokens` (at most `block_size`) through it;
    /// returns the logits after the last one.
    ///
    /// # Panics
    /// If `tokens` is empty or longer than `block_size`.
    pub fn prefill(&mut self, model: &Gpt<T>, tokens: &[usize]) -> Vec<T> {
        self.clear();
        self.extend(model, tokens)
    }
}

impl<T: Float> LayerKvCache<T> {
    /// Number of cached positions.
    pub fn len(&self) -> usize {
        self.keys.len() / self.n_embd
    }

    /// True when nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Attention of new positions of the cached sequence, on the output of
    /// `c_attn` for them: qkv (1, T_new, 3C) -> y (1, T_new, C). Appends their
    /// keys and values to the cache, then runs [`attention_cached_forward`].
    ///
    /// # Panics
    /// If `tape` would record a gradient (the kernel has no backward), or
    /// `qkv` is not (1, T_new, 3C).
    pub fn attend(&mut self, tape: &Tape<T>, qkv: &Var<T>, n_head: usize) -> Var<T> {
        assert!(
            !tape.needs_grad(&[qkv]),
            "KV-cached attention is forward-only: run it on a no-grad tape"
        );
        let c = self.n_embd;
        let shape = qkv.shape();
        assert!(
            shape.len() == 3 && shape[0] == 1 && shape[2] == 3 * c,
            "KV-cached attention: qkv must be (1, T, {}), got {shape:?}",
            3 * c
        );
        let t_new = shape[1];
        let qkv = qkv.value().as_standard_layout(); // (T_new, 3C)
        let qkv = qkv.as_slice().unwrap();
        for row in qkv.chunks_exact(3 * c) {
            self.keys.extend_from_slice(&row[c..2 * c]);
            self.values.extend_from_slice(&row[2 * c..]);
        }
        let mut out = vec![T::zero(); t_new * c];
        attention_cached_forward(&mut out, qkv, &self.keys, &self.values, c, n_head);
        tape.constant(Tensor::from_shape_vec(IxDyn(&[1, t_new, c]), out).unwrap())
    }
}

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
    use autograd::kernels::attention::{attention_forward, AttentionDims, KeyGap};

    /// Deterministic values in [-2, 2).
    fn values(n: usize, seed: usize) -> Vec<f64> {
        (0..n)
            .map(|i| ((i * 7919 + seed * 104_729) % 1000) as f64 / 250.0 - 2.0)
            .collect()
    }

    /// Every split into cached and new positions gives the rows of full causal attention.
    #[test]
    fn cached_rows_equal_full_causal_attention() {
        let (t, c, nh) = (9, 12, 3);
        let qkv = values(t * 3 * c, 1); // (T, 3C)
        let mut full = vec![0.0; t * c];
        let mut att = vec![0.0; nh * t * t];
        let dims = AttentionDims { b: 1, t, c, nh };
        attention_forward(&mut full, &mut att, &qkv, dims, &[KeyGap::NONE]);
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
                attention_cached_forward(&mut out, new_qkv, &keys[..l * c], &vals[..l * c], c, nh);
                let expected = &full[past * c..l * c];
                let err = out
                    .iter()
                    .zip(expected)
                    .map(|(a, b)| (a - b).abs())
                    .fold(0.0, f64::max);
                assert!(err < 1e-14, "L {l}, T_new {t_new}: error {err}");
            }
        }
    }
}
