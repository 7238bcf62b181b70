//! The Llama family against transformers 5.24: tiny random-weight decoders
//! saved by `save_pretrained` (`tests/golden/llama/<name>`, made by
//! `tests/golden/make_llama_golden.py`), loaded from their Hugging Face
//! directories (F32, BF16, F16, sharded) and checked for logits, log-probs,
//! gradients and greedy generation.
//!
//! | name | what it has |
//! |---|---|
//! | `llama32` | grouped-query attention (4 : 2), `llama3` rope scaling in all three bands, an untied head |
//! | `qwen2` | q/k/v biases, a tied head |
//! | `qwen3` | q/k norms, head_dim 32 with C = 24 |
//! | `smollm_tiny` | SmolLM2's shape (tied, theta 100000, 6 : 2 heads) |
//!
//! The goldens' "f64" logits come from transformers' double model with the
//! three places that stay in f32 there (RMSNorm, the rope tables, the
//! softmax) kept in f64; the rope's inverse frequencies are f32 in both.

use std::path::{Path, PathBuf};

use autograd::{Float, Tape};
use serde_json::Value;
use transformer::sampling::{generate, SamplingOptions};
use transformer::Model;

const MODELS: [&str; 7] = [
    "llama32",
    "llama32_bf16",
    "llama32_f16",
    "llama32_sharded",
    "qwen2",
    "qwen3",
    "smollm_tiny",
];

fn golden_dir(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/golden/llama")
        .join(name)
}

fn golden(name: &str) -> Value {
    let path = golden_dir(name).join("golden.json");
    serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap()
}

fn ids_of(value: &Value) -> Vec<usize> {
    value
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap() as usize)
        .collect()
}

fn floats(value: &Value) -> Vec<f64> {
    match value {
        Value::Array(items) => items.iter().flat_map(floats).collect(),
        v => vec![v.as_f64().unwrap()],
    }
}

/// The logits (T, V) of one sequence, flattened.
fn logits<T: Float>(model: &Model<T>, ids: &[usize]) -> Vec<f64> {
    let tape = Tape::no_grad();
    let params = model.bind(&tape);
    let logits = model.forward(&tape, &params, ids, 1, ids.len());
    logits.value().iter().map(|x| x.as_f64()).collect()
}

/// max |a - b| / max(max |b|, 1)
fn relative_error(a: &[f64], b: &[f64]) -> f64 {
    assert_eq!(a.len(), b.len());
    let err = a
        .iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f64::max);
    err / b.iter().map(|y| y.abs()).fold(1.0, f64::max)
}

/// sum_t log softmax(logits[t])[ids[t + 1]] of one sequence, in f64.
fn logprob_sum(logits: &[f64], ids: &[usize], vocab: usize) -> f64 {
    (0..ids.len().saturating_sub(1))
        .map(|t| {
            let row = &logits[t * vocab..(t + 1) * vocab];
            let max = row.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            let lse = max + row.iter().map(|z| (z - max).exp()).sum::<f64>().ln();
            row[ids[t + 1]] - lse
        })
        .sum()
}

#[test]
fn logits_and_logprobs_equal_transformers() {
    for name in MODELS {
        let golden = golden(name);
        let model = Model::<f32>::load(&golden_dir(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
        let vocab = model.config().vocab_size;
        let model64 = model.to_f64();
        let sequences = golden["ids"].as_array().unwrap();
        for (s, ids) in sequences.iter().enumerate() {
            let ids = ids_of(ids);
            let expected = floats(&golden["logits_f64"][s]);
            let ours32 = logits(&model, &ids);
            let ours64 = logits(&model64, &ids);
            let (err32, err64) = (
                relative_error(&ours32, &expected),
                relative_error(&ours64, &expected),
            );
            assert!(
                err32 < 1e-5,
                "{name} sequence {s}: f32 logits off by {err32:e}"
            );
            assert!(
                err64 < 1e-6,
                "{name} sequence {s}: f64 logits off by {err64:e}"
            );
            let sum = logprob_sum(&ours64, &ids, vocab);
            let expected_sum = golden["logprob_sums"][s].as_f64().unwrap();
            assert!(
                (sum - expected_sum).abs() <= 1e-6 * expected_sum.abs().max(1.0),
                "{name} sequence {s}: log-prob sum {sum} vs {expected_sum}"
            );
        }
    }
}

#[test]
fn gradients_equal_pytorch_autograd() {
    for name in MODELS {
        let golden = golden(name);
        let model = Model::<f32>::load(&golden_dir(name)).unwrap().to_f64();
        let ids = ids_of(&golden["ids"][1]);
        let tape = Tape::new();
        let params = model.bind(&tape);
        let logits = model.forward(&tape, &params, &ids, 1, ids.len());
        let mut targets: Vec<i64> = ids[1..].iter().map(|&i| i as i64).collect();
        targets.push(autograd::IGNORE_INDEX);
        let logp = tape.sequence_logprobs(&logits, &targets);
        drop(logits);
        let loss = tape.sum_all(&logp);
        let grads = tape.backward(&loss);
        let names = model.param_names();
        let expected = golden["grads_f64"].as_object().unwrap();
        assert!(!expected.is_empty());
        for (param_name, entry) in expected {
            let at = names
                .iter()
                .position(|n| n == param_name)
                .unwrap_or_else(|| panic!("{name}: no parameter {param_name}"));
            let param = params.iter().nth(at).unwrap();
            let ours: Vec<f64> = grads.get_or_zeros(param).iter().copied().collect();
            let err = relative_error(&ours, &floats(&entry["grad"]));
            assert!(err < 1e-6, "{name}: d/d {param_name} off by {err:e}");
        }
    }
}

#[test]
fn greedy_generation_equals_transformers() {
    for name in MODELS {
        let golden = golden(name);
        let model = Model::<f32>::load(&golden_dir(name)).unwrap();
        let greedy = &golden["greedy"];
        let prompt: Vec<u32> = ids_of(&greedy["prompt_ids"])
            .iter()
            .map(|&i| i as u32)
            .collect();
        let expected: Vec<u32> = ids_of(&greedy["new_ids"])
            .iter()
            .map(|&i| i as u32)
            .collect();
        let ours = generate(&model, &prompt, expected.len(), SamplingOptions::greedy()).unwrap();
        assert_eq!(ours, expected, "{name}");
    }
}

/// The same tensors whatever the file's dtype or sharding: BF16 and F16
/// files hold the f32 values they round to, a sharded directory the same
/// tensors as one file.
#[test]
fn sharded_files_hold_the_same_model() {
    let one = Model::<f32>::load(&golden_dir("llama32")).unwrap();
    let sharded = Model::<f32>::load(&golden_dir("llama32_sharded")).unwrap();
    for ((name, a), (_, b)) in one.named_params().zip(sharded.named_params()) {
        assert_eq!(a, b, "{name}");
    }
}
