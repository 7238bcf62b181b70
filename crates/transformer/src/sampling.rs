//! Text generation: greedy, temperature and top-k sampling, with a key/value cache.
//!
//! Without a cache, each new token costs a forward pass over the whole
//! context. With a [`KvCache`], the prompt runs through the model once and
//! each new token then runs the model on its one position only, attending to
//! the cached keys and values of the earlier ones (see [`crate::kv_cache`]).
//! Both run the model's own blocks; the cache only changes what the attention
//! looks at.
//!
//! The context is at most `block_size` tokens (the position table has no more
//! rows). When it overflows, it is cropped to its last `block_size` tokens,
//! which moves every token to a new position: the cache is then rebuilt from
//! scratch on the cropped context (as nanoGPT's `generate` re-runs the
//! cropped context every step). The context kept is at most twice the block,
//! so a long generation holds only its new tokens, however long it runs.
//!
//! [`generate_streaming`] hands each new token to the caller as it is made
//! (to print it, or to stop on a text) and ends at any of a set of
//! end-of-sequence ids; [`generate`] and [`generate_until`] run the same loop.
//!
//! A model with an inf or NaN weight gives non-finite logits, from which no
//! token can be drawn: generation stops with [`GenerateError`] rather than
//! emit token 0 forever.

use std::ops::ControlFlow;

use autograd::{Float, Tape};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::kv_cache::KvCache;
use crate::model::Model;

/// Why generation stopped without an answer.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum GenerateError {
    /// The logits for the next token are not all finite.
    #[error(
        "the logits after {new_tokens} new tokens are not finite (NaN or infinite): the model's weights hold inf or NaN"
    )]
    NonFiniteLogits {
        /// New tokens generated before.
        new_tokens: usize,
    },
}

/// `Ok` when every logit is finite.
fn check_finite<T: Float>(logits: &[T], new_tokens: usize) -> Result<(), GenerateError> {
    if logits.iter().all(|l| l.as_f64().is_finite()) {
        Ok(())
    } else {
        Err(GenerateError::NonFiniteLogits { new_tokens })
    }
}

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

/// The logits (V) after the last of `tokens`, by a full no-grad forward pass
/// (the reference the cache is tested against).
pub fn last_logits<T: Float>(model: &Model<T>, tokens: &[usize]) -> Vec<T> {
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
/// # Errors
/// [`GenerateError`] when the model's logits are not finite.
///
/// # Panics
/// If the prompt is empty or holds an id outside the vocabulary.
pub fn generate(
    model: &Model<f32>,
    prompt: &[u32],
    max_new_tokens: usize,
    options: SamplingOptions,
) -> Result<Vec<u32>, GenerateError> {
    generate_until(model, prompt, max_new_tokens, options, |_| false)
}

/// [`generate`], ending early once `stop(new_tokens)` is true (checked after
/// every new token, the last one too, e.g. for an end-of-sequence token or a
/// stop text). The tokens are those [`generate`] would give, up to that point.
pub fn generate_until(
    model: &Model<f32>,
    prompt: &[u32],
    max_new_tokens: usize,
    options: SamplingOptions,
    mut stop: impl FnMut(&[u32]) -> bool,
) -> Result<Vec<u32>, GenerateError> {
    let block_size = model.config().block_size;
    let mut context = check_prompt(prompt, model.config().vocab_size);
    let mut rng = StdRng::seed_from_u64(options.seed);
    let mut cache = KvCache::new(model);
    let mut out = Vec::with_capacity(max_new_tokens.min(1 << 16));
    if max_new_tokens == 0 {
        return Ok(out);
    }
    let start = context.len().saturating_sub(block_size);
    let mut logits = cache.prefill(model, &context[start..]);
    loop {
        check_finite(&logits, out.len())?;
        let next = sample_next(&logits, &options, &mut rng);
        out.push(next as u32);
        context.push(next);
        if stop(&out) || out.len() == max_new_tokens {
            return Ok(out);
        }
        if context.len() >= 2 * block_size {
            // Only the last block_size tokens are ever looked at again.
            context.drain(..context.len() - block_size);
        }
        logits = if cache.len() < block_size {
            cache.step(model, next)
        } else {
            // Full: crop to the last block_size tokens; every position moves, so rebuild.
            cache.prefill(model, &context[context.len() - block_size..])
        };
    }
}

/// Why [`generate_streaming`] ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Finish {
    /// `max_new_tokens` tokens were made.
    Length,
    /// The model made one of the end-of-sequence ids.
    Eos,
    /// The caller's `on_token` asked to stop.
    Stopped,
}

/// What [`generate_streaming`] made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Streamed {
    /// The new tokens, without the end-of-sequence token that ended them.
    pub tokens: Vec<u32>,
    /// Why generation ended.
    pub finish: Finish,
}

/// [`generate`] for a caller that takes tokens as they come (a chat that
/// prints them, a stop text to watch for): after each new token that is not
/// one of `eos`, `on_token(new_tokens)` is called, and generation ends when
/// it returns [`ControlFlow::Break`]. A token in `eos` ends generation
/// without being passed on or returned. The tokens are those [`generate`]
/// would give, up to that point.
///
/// # Errors
/// [`GenerateError`] when the model's logits are not finite.
///
/// # Panics
/// If the prompt is empty or holds an id outside the vocabulary.
pub fn generate_streaming(
    model: &Model<f32>,
    prompt: &[u32],
    max_new_tokens: usize,
    options: SamplingOptions,
    eos: &[u32],
    mut on_token: impl FnMut(&[u32]) -> ControlFlow<()>,
) -> Result<Streamed, GenerateError> {
    let mut finish = Finish::Length;
    let mut tokens = generate_until(model, prompt, max_new_tokens, options, |new| {
        if new.last().is_some_and(|id| eos.contains(id)) {
            finish = Finish::Eos;
        } else if on_token(new).is_break() {
            finish = Finish::Stopped;
        }
        finish != Finish::Length
    })?;
    if finish == Finish::Eos {
        tokens.pop();
    }
    Ok(Streamed { tokens, finish })
}

/// [`generate`] without a cache: a full forward pass over the (cropped)
/// context for every new token. Slow; the reference for the cached path.
pub fn generate_uncached(
    model: &Model<f32>,
    prompt: &[u32],
    max_new_tokens: usize,
    options: SamplingOptions,
) -> Vec<u32> {
    let block_size = model.config().block_size;
    let mut context = check_prompt(prompt, model.config().vocab_size);
    let mut rng = StdRng::seed_from_u64(options.seed);
    let mut out = Vec::with_capacity(max_new_tokens.min(1 << 16));
    while out.len() < max_new_tokens {
        let start = context.len().saturating_sub(block_size);
        let logits = last_logits(model, &context[start..]);
        let next = sample_next(&logits, &options, &mut rng);
        out.push(next as u32);
        context.push(next);
    }
    out
}
