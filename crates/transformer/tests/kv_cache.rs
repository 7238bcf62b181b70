//! The KV cache runs the model's own blocks: the logits it gives at every
//! generated position equal those of a full forward pass over the same
//! context, before and after the context overflows the block size.

use std::sync::Arc;

use autograd::{Float, Tape};
use transformer::sampling::last_logits;
use transformer::{KvCache, Model, ModelConfig};

/// Three layers and sizes that divide nothing evenly: V 19, block 7, C 15 in 3 heads of 5.
fn odd_config(bias: bool) -> ModelConfig {
    ModelConfig {
        vocab_size: 19,
        block_size: 7,
        n_layer: 3,
        n_head: 3,
        n_embd: 15,
        bias,
        llama: None,
    }
}

/// A model with weights large enough for peaked, position-dependent attention
/// (the 0.02 init makes every attention row nearly uniform).
fn model(bias: bool) -> Model<f64> {
    let mut model = Model::<f64>::new(odd_config(bias), 17);
    for p in model.params_mut() {
        Arc::make_mut(p).mapv_inplace(|x| x * 20.0);
    }
    model
}

/// max |a - b| / max(max |b|, 1)
fn relative_error<T: Float>(a: &[T], b: &[T]) -> f64 {
    assert_eq!(a.len(), b.len());
    let err = a
        .iter()
        .zip(b)
        .map(|(x, y)| (x.as_f64() - y.as_f64()).abs())
        .fold(0.0, f64::max);
    let scale = b.iter().map(|y| y.as_f64().abs()).fold(1.0, f64::max);
    err / scale
}

/// Runs the generation loop of `sampling::generate` (prefill, one step per
/// token, rebuild on overflow) with fixed next tokens, and checks the cached
/// logits against a full forward of the current context at every position.
fn check_generation<T: Float>(model: &Model<T>, tolerance: f64) {
    let (block_size, vocab) = (model.config().block_size, model.config().vocab_size);
    let mut context = vec![3, 18, 0, 11, 5];
    let mut cache = KvCache::new(model);
    let mut logits = cache.prefill(model, &context);
    // 5 + 12 > 7: the context overflows at the 3rd new token and every step after
    for step in 0..12 {
        let window = &context[context.len().saturating_sub(block_size)..];
        assert_eq!(cache.len(), window.len());
        let full = last_logits(model, window);
        let err = relative_error(&logits, &full);
        assert!(
            err <= tolerance,
            "{}: step {step} (context {}): cached logits differ by {err:e}",
            T::NAME,
            context.len()
        );
        context.push((step * 7 + 2) % vocab);
        logits = if cache.len() < block_size {
            cache.step(model, *context.last().unwrap())
        } else {
            cache.prefill(model, &context[context.len() - block_size..])
        };
    }
}

#[test]
fn cached_logits_equal_the_full_forward_at_every_generated_position() {
    for bias in [true, false] {
        let model = model(bias);
        check_generation(&model, 1e-12);
        check_generation(&model.to_f32(), 2e-6);
    }
}

/// Several new positions at once after cached ones: causal among themselves.
#[test]
fn extending_by_several_tokens_equals_the_full_forward() {
    let model = model(true);
    let tokens = [4usize, 9, 9, 1, 16, 0, 7];
    let full = {
        let tape = Tape::no_grad();
        let params = model.bind(&tape);
        model.forward(&tape, &params, &tokens, 1, 7).value().clone() // (1, 7, V)
    };
    let v = model.config().vocab_size;
    for split in 0..tokens.len() {
        let mut cache = KvCache::new(&model);
        if split > 0 {
            cache.prefill(&model, &tokens[..split]);
        }
        let tape = Tape::no_grad();
        let params = model.bind(&tape);
        let hidden = model.hidden_states_cached(&tape, &params, &tokens[split..], &mut cache);
        let logits = model.logits(&tape, &params, &hidden); // (1, 7 - split, V)
        let expected = &full.as_slice().unwrap()[split * v..];
        let err = relative_error(logits.value().as_slice().unwrap(), expected);
        assert!(err <= 1e-12, "split {split}: logits differ by {err:e}");
        assert_eq!(cache.len(), tokens.len());
    }
}

#[test]
#[should_panic(expected = "forward-only")]
fn cached_attention_refuses_a_gradient_tape() {
    let model = model(true);
    let mut cache = KvCache::new(&model);
    let tape = Tape::new();
    let params = model.bind(&tape);
    model.hidden_states_cached(&tape, &params, &[1, 2], &mut cache);
}

#[test]
#[should_panic(expected = "5 cached + 3 new positions > block_size 7")]
fn a_full_cache_is_refused() {
    let model = model(true);
    let mut cache = KvCache::new(&model);
    cache.prefill(&model, &[1, 2, 3, 4, 5]);
    cache.extend(&model, &[6, 7, 8]);
}
