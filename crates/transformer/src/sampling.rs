//! Text generation: greedy, temperature and top-k sampling, with a key/value cache.
//!
//! Without a cache, each new token costs a forward pass over the whole
//! context. But in a causal decoder the keys and values of past positions
//! never change once computed (position `t` only attends to `t2 <= t`), so
//! [`KvCache`] keeps them, per block, and each step runs the model on one new
//! position only: its query attends to the cached keys and values plus its
//! own. The per-position math is the model's (same LayerNorm kernel, same
//! GELU, products through the same GEMM), written without a tape.
//!
//! The context is at most `block_size` tokens (the position table has no more
//! rows). When it overflows, it is cropped to its last `block_size` tokens,
//! which moves every token to a new position: the cache is then rebuilt from
//! scratch on the cropped context (as nanoGPT's `generate` re-runs the
//! cropped context every step).

use autograd::kernels::gemm::gemm;
use autograd::kernels::layernorm::layernorm_forward;
use autograd::ops::elementwise::gelu;
use autograd::{Float, Tape, Tensor};
use ndarray::{ArrayView2, ArrayViewMut2, Ix2};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::model::{Gpt, LAYER_NORM_EPS};

/// How the next token is chosen from the logits.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SamplingOptions {
    /// Logits are divided by this before the softmax; `0` (or below) means
    /// greedy: always the most likely token (the lowest id among ties).
    pub temperature: f32,
    /// Sample among the `k` most likely tokens only (ties with the k-th kept).
    pub top_k: Option<usize>,
    /// Seed of the sampler (unused when greedy).
    pub seed: u64,
}

impl Default for SamplingOptions {
    fn default() -> Self {
        SamplingOptions {
            temperature: 1.0,
            top_k: None,
            seed: 0,
        }
    }
}

impl SamplingOptions {
    /// Greedy decoding.
    pub fn greedy() -> Self {
        SamplingOptions {
            temperature: 0.0,
            top_k: None,
            seed: 0,
        }
    }
}

/// The keys and values of every processed position, per block.
#[derive(Debug, Clone)]
pub struct KvCache<T> {
    /// Per block: keys of positions 0..len, (len, C) row-major.
    keys: Vec<Vec<T>>,
    /// Per block: values of positions 0..len, (len, C).
    values: Vec<Vec<T>>,
    len: usize,
}

/// `out = W @ x + b`     W: (OUT, IN), x: (IN) -> out: (OUT)
fn linear_vec<T: Float>(w: &Tensor<T>, b: Option<&Tensor<T>>, x: &[T]) -> Vec<T> {
    let w = w.view().into_dimensionality::<Ix2>().unwrap();
    let mut out = match b {
        Some(b) => b.as_slice().unwrap().to_vec(),
        None => vec![T::zero(); w.nrows()],
    };
    let beta = if b.is_some() { T::one() } else { T::zero() };
    let x = ArrayView2::from_shape((1, x.len()), x).unwrap();
    let n = out.len();
    gemm(
        T::one(),
        x,
        w.t(),
        beta,
        ArrayViewMut2::from_shape((1, n), &mut out[..]).unwrap(),
    );
    out
}

/// LayerNorm of one vector.
fn layer_norm_vec<T: Float>(x: &[T], w: &Tensor<T>, b: Option<&Tensor<T>>) -> Vec<T> {
    let mut out = vec![T::zero(); x.len()];
    let (mut mean, mut rstd) = ([T::zero()], [T::zero()]);
    layernorm_forward(
        &mut out,
        &mut mean,
        &mut rstd,
        x,
        w.as_slice().unwrap(),
        b.map(|b| b.as_slice().unwrap()),
        x.len(),
        T::cast(LAYER_NORM_EPS),
    );
    out
}

impl<T: Float> KvCache<T> {
    /// An empty cache for `model`.
    pub fn new(model: &Gpt<T>) -> KvCache<T> {
        let n_layer = model.config().n_layer;
        KvCache {
            keys: vec![Vec::new(); n_layer],
            values: vec![Vec::new(); n_layer],
            len: 0,
        }
    }

    /// Number of cached positions.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Forgets every position.
    pub fn clear(&mut self) {
        self.keys.iter_mut().for_each(Vec::clear);
        self.values.iter_mut().for_each(Vec::clear);
        self.len = 0;
    }

    /// Runs the model on `token` at the next position (`len()`), caches its
    /// keys and values, and returns the logits (V) that predict the token after it.
    ///
    /// # Panics
    /// If the cache is full (`len() == block_size`) or `token` is out of the vocabulary.
    pub fn step(&mut self, model: &Gpt<T>, token: usize) -> Vec<T> {
        let cfg = model.config();
        let (c, nh, hs) = (cfg.n_embd, cfg.n_head, cfg.head_size());
        let pos = self.len;
        assert!(
            pos < cfg.block_size,
            "KvCache::step: the cache is full (block_size {})",
            cfg.block_size
        );
        assert!(
            token < cfg.vocab_size,
            "KvCache::step: token {token} is out of the vocabulary ({})",
            cfg.vocab_size
        );
        let params = model.params();
        let scale = T::one() / T::cast(hs as f64).sqrt();

        // x = wte[token] + wpe[pos]   (C)
        let (wte, wpe) = (
            params.wte.as_slice().unwrap(),
            params.wpe.as_slice().unwrap(),
        );
        let mut x: Vec<T> = (0..c)
            .map(|i| wte[token * c + i] + wpe[pos * c + i])
            .collect();
        for (l, blk) in params.h.iter().enumerate() {
            // x = x + attn(ln_1(x)), attending to the cached positions and this one
            let h = layer_norm_vec(&x, &blk.ln_1.weight, blk.ln_1.bias.as_deref());
            let qkv = linear_vec(&blk.attn.c_attn.weight, blk.attn.c_attn.bias.as_deref(), &h); // (3C)
            self.keys[l].extend_from_slice(&qkv[c..2 * c]);
            self.values[l].extend_from_slice(&qkv[2 * c..]);
            let (keys, values) = (&self.keys[l], &self.values[l]); // (pos+1, C)
            let mut y = vec![T::zero(); c];
            let mut att = vec![T::zero(); pos + 1];
            for head in 0..nh {
                let q = &qkv[head * hs..(head + 1) * hs];
                for (t2, a) in att.iter_mut().enumerate() {
                    let k = &keys[t2 * c + head * hs..t2 * c + (head + 1) * hs];
                    *a = q.iter().zip(k).map(|(&qi, &ki)| qi * ki).sum::<T>() * scale;
                }
                let max = att.iter().copied().fold(T::neg_infinity(), T::max);
                let mut sum = T::zero();
                for a in att.iter_mut() {
                    *a = (*a - max).exp();
                    sum += *a;
                }
                let yh = &mut y[head * hs..(head + 1) * hs];
                for (t2, &a) in att.iter().enumerate() {
                    let v = &values[t2 * c + head * hs..t2 * c + (head + 1) * hs];
                    for d in 0..hs {
                        yh[d] += a / sum * v[d];
                    }
                }
            }
            let att_out = linear_vec(&blk.attn.c_proj.weight, blk.attn.c_proj.bias.as_deref(), &y);
            x.iter_mut().zip(&att_out).for_each(|(xi, &a)| *xi += a);
            // x = x + mlp(ln_2(x))
            let h = layer_norm_vec(&x, &blk.ln_2.weight, blk.ln_2.bias.as_deref());
            let mut fc = linear_vec(&blk.mlp.c_fc.weight, blk.mlp.c_fc.bias.as_deref(), &h); // (4C)
            fc.iter_mut().for_each(|f| *f = gelu(*f));
            let mlp_out = linear_vec(&blk.mlp.c_proj.weight, blk.mlp.c_proj.bias.as_deref(), &fc);
            x.iter_mut().zip(&mlp_out).for_each(|(xi, &m)| *xi += m);
        }
        self.len += 1;
        let x = layer_norm_vec(&x, &params.ln_f.weight, params.ln_f.bias.as_deref());
        linear_vec(&params.wte, None, &x) // (V), the tied head
    }

    /// Clears the cache and runs `tokens` (at most `block_size`) through it;
    /// returns the logits after the last one.
    ///
    /// # Panics
    /// If `tokens` is empty or longer than `block_size`.
    pub fn prefill(&mut self, model: &Gpt<T>, tokens: &[usize]) -> Vec<T> {
        assert!(!tokens.is_empty(), "KvCache::prefill: no tokens");
        self.clear();
        let mut logits = Vec::new();
        for &token in tokens {
            logits = self.step(model, token);
        }
        logits
    }
}

/// The logits (V) after the last of `tokens`, by a full no-grad forward pass
/// (the reference the cache is tested against).
pub fn last_logits<T: Float>(model: &Gpt<T>, tokens: &[usize]) -> Vec<T> {
    let tape = Tape::no_grad();
    let params = model.bind(&tape);
    let logits = model.forward(&tape, &params, tokens, 1, tokens.len()); // (1, T, V)
    let v = model.config().vocab_size;
    let all = logits.value().as_slice().unwrap();
    all[all.len() - v..].to_vec()
}

/// Picks the next token from `logits` (see [`SamplingOptions`]).
pub fn sample_next<T: Float>(logits: &[T], options: &SamplingOptions, rng: &mut StdRng) -> usize {
    let argmax = || {
        let mut best = 0;
        for (i, &l) in logits.iter().enumerate() {
            if l > logits[best] {
                best = i;
            }
        }
        best
    };
    if options.temperature <= 0.0 {
        return argmax();
    }
    let threshold = match options.top_k {
        Some(k) if k > 0 && k < logits.len() => {
            let mut sorted: Vec<f64> = logits.iter().map(|l| l.as_f64()).collect();
            sorted.sort_by(|a, b| b.total_cmp(a));
            sorted[k - 1]
        }
        _ => f64::NEG_INFINITY,
    };
    let temperature = options.temperature as f64;
    let max = logits
        .iter()
        .map(|l| l.as_f64())
        .fold(f64::NEG_INFINITY, f64::max);
    let weights: Vec<f64> = logits
        .iter()
        .map(|l| {
            let l = l.as_f64();
            if l >= threshold {
                ((l - max) / temperature).exp()
            } else {
                0.0
            }
        })
        .collect();
    let total: f64 = weights.iter().sum();
    if !(total > 0.0 && total.is_finite()) {
        return argmax();
    }
    let mut u = rng.gen::<f64>() * total;
    for (i, &w) in weights.iter().enumerate() {
        if u < w {
            return i;
        }
        u -= w;
    }
    // rounding left u just above the last weight: the last token with any weight
    weights
        .iter()
        .rposition(|&w| w > 0.0)
        .unwrap_or_else(argmax)
}

fn check_prompt(prompt: &[u32], vocab_size: usize) -> Vec<usize> {
    assert!(!prompt.is_empty(), "generate: the prompt is empty");
    prompt
        .iter()
        .map(|&id| {
            assert!(
                (id as usize) < vocab_size,
                "generate: prompt token {id} is out of the vocabulary ({vocab_size})"
            );
            id as usize
        })
        .collect()
}

/// Continues `prompt` by `max_new_tokens` tokens, with the KV cache; returns
/// the new tokens only (not the prompt). Seeded: the same inputs give the same tokens.
///
/// # Panics
/// If the prompt is empty or holds an id outside the vocabulary.
pub fn generate(
    model: &Gpt<f32>,
    prompt: &[u32],
    max_new_tokens: usize,
    options: SamplingOptions,
) -> Vec<u32> {
    let block_size = model.config().block_size;
    let mut context = check_prompt(prompt, model.config().vocab_size);
    let mut rng = StdRng::seed_from_u64(options.seed);
    let mut cache = KvCache::new(model);
    let mut out = Vec::with_capacity(max_new_tokens);
    if max_new_tokens == 0 {
        return out;
    }
    let start = context.len().saturating_sub(block_size);
    let mut logits = cache.prefill(model, &context[start..]);
    loop {
        let next = sample_next(&logits, &options, &mut rng);
        out.push(next as u32);
        context.push(next);
        if out.len() == max_new_tokens {
            return out;
        }
        logits = if cache.len() < block_size {
            cache.step(model, next)
        } else {
            // Full: crop to the last block_size tokens; every position moves, so rebuild.
            cache.prefill(model, &context[context.len() - block_size..])
        };
    }
}

/// [`generate`] without a cache: a full forward pass over the (cropped)
/// context for every new token. Slow; the reference for the cached path.
pub fn generate_uncached(
    model: &Gpt<f32>,
    prompt: &[u32],
    max_new_tokens: usize,
    options: SamplingOptions,
) -> Vec<u32> {
    let block_size = model.config().block_size;
    let mut context = check_prompt(prompt, model.config().vocab_size);
    let mut rng = StdRng::seed_from_u64(options.seed);
    let mut out = Vec::with_capacity(max_new_tokens);
    while out.len() < max_new_tokens {
        let start = context.len().saturating_sub(block_size);
        let logits = last_logits(model, &context[start..]);
        let next = sample_next(&logits, &options, &mut rng);
        out.push(next as u32);
        context.push(next);
    }
    out
}
