//! The no-grad forward against the tape forward, and KV-cached generation
//! against full re-forward generation.

use std::ops::ControlFlow;
use std::sync::Arc;

use autograd::Tape;
use transformer::sampling::{
    generate_streaming, generate_uncached, generate_until, last_logits, sample_next, Finish,
    GenerateError, Streamed,
};
use transformer::{generate, KvCache, Model, ModelConfig, SamplingOptions};

fn config() -> ModelConfig {
    ModelConfig {
        vocab_size: 17,
        block_size: 8,
        n_layer: 2,
        n_head: 2,
        n_embd: 8,
        bias: true,
        llama: None,
    }
}

/// A model whose weights are large enough for confident, varied predictions
/// (the 0.02 init gives near-uniform logits, where greedy ties are fragile).
fn model() -> Model<f32> {
    let mut model = Model::<f32>::new(config(), 11);
    for p in model.params_mut() {
        Arc::make_mut(p).mapv_inplace(|x| x * 25.0);
    }
    model
}

#[test]
fn no_grad_forward_equals_tape_forward() {
    let model = Model::<f32>::new(ModelConfig::preset("tiny").unwrap(), 4);
    let ids: Vec<usize> = (0..2 * 9).map(|i| (i * 37) % 256).collect();
    let run = |tape: Tape<f32>| {
        let params = model.bind(&tape);
        model.forward(&tape, &params, &ids, 2, 9).value().clone()
    };
    let with_tape = run(Tape::new());
    let without = run(Tape::no_grad());
    assert_eq!(with_tape.shape(), &[2, 9, 256]);
    assert!(with_tape
        .iter()
        .zip(without.iter())
        .all(|(a, b)| a.to_bits() == b.to_bits()));
}

#[test]
#[should_panic(expected = "sequence length 9 > block_size 8")]
fn too_long_sequences_are_refused() {
    let model = model();
    let tape = Tape::no_grad();
    let params = model.bind(&tape);
    model.forward(&tape, &params, &[0; 9], 1, 9);
}

#[test]
fn cached_logits_match_full_forward() {
    let model = model();
    let tokens = [3usize, 16, 0, 5, 5, 9, 1, 12];
    let mut cache = KvCache::new(&model);
    for t in 0..tokens.len() {
        let cached = cache.step(&model, tokens[t]);
        let full = last_logits(&model, &tokens[..=t]);
        let err = cached
            .iter()
            .zip(&full)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        let scale = full.iter().map(|x| x.abs()).fold(0f32, f32::max);
        assert!(
            err <= 1e-5 * scale.max(1.0),
            "position {t}: logits differ by {err}"
        );
    }
    // and in f64, to rounding
    let model64 = model.to_f64();
    let mut cache = KvCache::new(&model64);
    for t in 0..tokens.len() {
        let cached = cache.step(&model64, tokens[t]);
        let full = last_logits(&model64, &tokens[..=t]);
        let err = cached
            .iter()
            .zip(&full)
            .map(|(a, b)| (a - b).abs())
            .fold(0f64, f64::max);
        assert!(err < 1e-10, "position {t}: f64 logits differ by {err}");
    }
}

#[test]
fn cached_and_uncached_generation_agree_past_the_block_size() {
    let model = model();
    let prompt = [1u32, 2, 3, 4, 5];
    // 5 + 12 tokens > block_size 8: the context is cropped and the cache rebuilt
    for options in [
        SamplingOptions::greedy(),
        SamplingOptions {
            temperature: 0.8,
            top_k: Some(5),
            seed: 3,
        },
        SamplingOptions {
            temperature: 1.0,
            top_k: None,
            seed: 9,
        },
    ] {
        let cached = generate(&model, &prompt, 12, options).unwrap();
        let uncached = generate_uncached(&model, &prompt, 12, options);
        assert_eq!(cached.len(), 12);
        assert_eq!(cached, uncached, "{options:?}");
        assert!(cached.iter().all(|&t| t < 17));
        // seeded: the same call gives the same tokens
        assert_eq!(generate(&model, &prompt, 12, options).unwrap(), cached);
    }
    // a long prompt is cropped to the block size
    let long: Vec<u32> = (0..20).map(|i| i % 17).collect();
    let options = SamplingOptions::greedy();
    assert_eq!(
        generate(&model, &long, 3, options).unwrap(),
        generate_uncached(&model, &long, 3, options)
    );
    assert!(generate(&model, &prompt, 0, options).unwrap().is_empty());
}

#[test]
fn top_k_one_is_greedy_and_sampling_follows_the_distribution() {
    let logits = [0.1f32, 2.0, -1.0, 1.5];
    let mut rng = rand::SeedableRng::seed_from_u64(0);
    let top1 = SamplingOptions {
        temperature: 1.0,
        top_k: Some(1),
        seed: 0,
    };
    for _ in 0..20 {
        assert_eq!(sample_next(&logits, &top1, &mut rng), 1);
    }
    assert_eq!(
        sample_next(&logits, &SamplingOptions::greedy(), &mut rng),
        1
    );
    // top-2 only ever picks ids 1 and 3, in proportion e^2 : e^1.5
    let top2 = SamplingOptions {
        temperature: 1.0,
        top_k: Some(2),
        seed: 0,
    };
    let n = 20000;
    let ones = (0..n)
        .map(|_| sample_next(&logits, &top2, &mut rng))
        .inspect(|&t| assert!(t == 1 || t == 3))
        .filter(|&t| t == 1)
        .count();
    let p1 = 1.0 / (1.0 + (-0.5f64).exp());
    assert!((ones as f64 / n as f64 - p1).abs() < 0.02);
}

#[test]
fn generation_until_a_condition_is_a_prefix_of_the_full_generation() {
    let model = model();
    let options = SamplingOptions {
        temperature: 1.0,
        top_k: None,
        seed: 7,
    };
    let full = generate(&model, &[1, 2, 3], 20, options).unwrap();
    let mut calls = 0;
    let cut = generate_until(&model, &[1, 2, 3], 20, options, |tokens| {
        calls += 1;
        tokens.len() == 5
    })
    .unwrap();
    assert_eq!(cut, full[..5]);
    assert_eq!(calls, 5, "the condition is checked after every new token");
    let never = generate_until(&model, &[1, 2, 3], 20, options, |_| false).unwrap();
    assert_eq!(never, full);
}

#[test]
fn streaming_hands_out_every_token_of_the_full_generation_and_ends_at_an_eos() {
    let model = model();
    let options = SamplingOptions {
        temperature: 1.0,
        top_k: None,
        seed: 7,
    };
    let full = generate(&model, &[1, 2, 3], 20, options).unwrap();
    // No EOS: every token is handed out, in order, the last one too.
    let mut seen = Vec::new();
    let streamed = generate_streaming(&model, &[1, 2, 3], 20, options, &[], |new| {
        assert_eq!(new[..seen.len()], seen[..], "earlier tokens do not change");
        seen.push(*new.last().unwrap());
        ControlFlow::Continue(())
    })
    .unwrap();
    assert_eq!(seen, full);
    let expected = Streamed {
        tokens: full.clone(),
        finish: Finish::Length,
    };
    assert_eq!(streamed, expected);

    // The 6th token as an EOS (with an id that never comes beside it): the
    // tokens before its first appearance, the EOS itself neither handed out
    // nor returned.
    let eos = full[5];
    let first = full.iter().position(|&id| id == eos).unwrap();
    let mut handed_out = 0;
    let streamed = generate_streaming(&model, &[1, 2, 3], 20, options, &[99, eos], |new| {
        handed_out = new.len();
        ControlFlow::Continue(())
    })
    .unwrap();
    assert_eq!(streamed.tokens, full[..first]);
    assert_eq!(streamed.finish, Finish::Eos);
    assert_eq!(handed_out, first);

    // The caller stops it: the tokens up to then.
    let streamed = generate_streaming(&model, &[1, 2, 3], 20, options, &[], |new| {
        if new.len() == 4 {
            ControlFlow::Break(())
        } else {
            ControlFlow::Continue(())
        }
    })
    .unwrap();
    assert_eq!(streamed.tokens, full[..4]);
    assert_eq!(streamed.finish, Finish::Stopped);
}

#[test]
fn a_long_generation_slides_its_window_like_the_uncached_one() {
    // Many times the block size: the context is cropped again and again.
    let model = model();
    let block_size = model.config().block_size;
    let options = SamplingOptions {
        temperature: 1.0,
        top_k: None,
        seed: 5,
    };
    let n = 5 * block_size + 3;
    let cached = generate(&model, &[1, 2], n, options).unwrap();
    assert_eq!(cached, generate_uncached(&model, &[1, 2], n, options));
}

#[test]
fn non_finite_weights_stop_generation_with_an_error() {
    let mut model = model();
    let ln_f_weight = Arc::make_mut(&mut model.params_mut().ln_f.weight);
    ln_f_weight.as_slice_mut().unwrap()[0] = f32::NAN;
    let err = generate(&model, &[1, 2], 4, SamplingOptions::greedy()).unwrap_err();
    assert_eq!(err, GenerateError::NonFiniteLogits { new_tokens: 0 });
    assert!(err.to_string().contains("not finite"), "{err}");
}
