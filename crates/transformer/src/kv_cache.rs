//! The key/value cache of generation.
//!
//! In a causal decoder the keys and values of a position depend only on the
//! tokens up to it (position `t` attends to `t2 <= t` only), so they never
//! change as the sequence grows. [`KvCache`] keeps them, per block, for every
//! processed position of one sequence. Continuing the sequence by `T_new`
//! tokens then runs the model's own forward ([`Model::hidden_states_cached`],
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

use autograd::kernels::attention::cached::attention_cached_forward;
use autograd::kernels::attention::AttentionHeads;
use autograd::{Float, Tape, Tensor, Var};
use ndarray::IxDyn;

use crate::model::Model;

/// The keys and values of every processed position of one sequence, per block.
#[derive(Debug, Clone)]
pub struct KvCache<T> {
    layers: Vec<LayerKvCache<T>>,
}

/// One block's cached keys and values.
#[derive(Debug, Clone)]
pub struct LayerKvCache<T> {
    /// Keys of positions 0..len: (len, KV hd), row-major.
    keys: Vec<T>,
    /// Values of positions 0..len: (len, KV hd).
    values: Vec<T>,
    /// KV hd: the key/value heads side by side (C for GPT-2).
    kv_width: usize,
}

impl<T: Float> KvCache<T> {
    /// An empty cache for `model`.
    pub fn new(model: &Model<T>) -> KvCache<T> {
        let cfg = model.config();
        let kv_width = cfg.attention_heads().kv_width();
        // Room for a few hundred positions up front, not the whole context
        // (a Llama-family block_size of 8192 to 131072 positions would be
        // gigabytes reserved and never touched); the vectors grow past it.
        let positions = cfg.block_size.min(512);
        let layer = || LayerKvCache {
            keys: Vec::with_capacity(positions * kv_width),
            values: Vec::with_capacity(positions * kv_width),
            kv_width,
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
    pub fn extend(&mut self, model: &Model<T>, tokens: &[usize]) -> Vec<T> {
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
    pub fn step(&mut self, model: &Model<T>, token: usize) -> Vec<T> {
        self.extend(model, &[token])
    }

    /// Clears the cache and runs `tokens` (at most `block_size`) through it;
    /// returns the logits after the last one.
    ///
    /// # Panics
    /// If `tokens` is empty or longer than `block_size`.
    pub fn prefill(&mut self, model: &Model<T>, tokens: &[usize]) -> Vec<T> {
        self.clear();
        self.extend(model, tokens)
    }
}

impl<T: Float> LayerKvCache<T> {
    /// Number of cached positions.
    pub fn len(&self) -> usize {
        self.keys.len() / self.kv_width
    }

    /// True when nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Attention of new positions of the cached sequence, on their queries,
    /// keys and values (the keys already rotated, in the Llama family):
    /// qkv (1, T_new, (NH + 2 KV) hd) -> y (1, T_new, NH hd). Appends their
    /// keys and values to the cache, then runs [`attention_cached_forward`].
    ///
    /// # Panics
    /// If `tape` would record a gradient (the kernel has no backward), or
    /// `qkv` is not (1, T_new, (NH + 2 KV) hd) of this cache's key width.
    pub fn attend(&mut self, tape: &Tape<T>, qkv: &Var<T>, heads: AttentionHeads) -> Var<T> {
        assert!(
            !tape.needs_grad(&[qkv]),
            "KV-cached attention is forward-only: run it on a no-grad tape"
        );
        let (q_width, kv_width) = (heads.q_width(), heads.kv_width());
        let shape = qkv.shape();
        assert!(
            kv_width == self.kv_width
                && shape.len() == 3
                && shape[0] == 1
                && shape[2] == heads.qkv_width(),
            "KV-cached attention: qkv must be (1, T, {}), got {shape:?}",
            heads.qkv_width()
        );
        let t_new = shape[1];
        let qkv = qkv.value().as_standard_layout(); // (T_new, (NH + 2 KV) hd)
        let qkv = qkv.as_slice().unwrap();
        for row in qkv.chunks_exact(heads.qkv_width()) {
            self.keys
                .extend_from_slice(&row[q_width..q_width + kv_width]);
            self.values.extend_from_slice(&row[q_width + kv_width..]);
        }
        let mut out = vec![T::zero(); t_new * q_width];
        attention_cached_forward(&mut out, qkv, &self.keys, &self.values, heads);
        tape.constant(Tensor::from_shape_vec(IxDyn(&[1, t_new, q_width]), out).unwrap())
    }
}
