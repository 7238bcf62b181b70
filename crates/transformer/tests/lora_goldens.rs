//! LoRA against PEFT 0.21.2 (`tests/golden/lora`, made by
//! `tests/golden/make_lora_golden.py`): for a tiny Llama (every linear
//! adapted), Qwen2 (q/v, rsLoRA) and GPT-2 (c_attn and both c_proj, PEFT's
//! Conv1D layers), an adapter made by PEFT, with every A and B nonzero:
//!
//! - `dpo` reads PEFT's files and gives PEFT's logits (f32, and f64 with
//!   transformers' float32 spots patched), log-probs, and the f64 gradients
//!   of every adapter tensor;
//! - `dpo`'s merge equals `merge_and_unload` saved by transformers;
//! - the adapter `dpo` writes back has PEFT's keys, shapes and settings.

use std::path::{Path, PathBuf};

use autograd::Tape;
use serde_json::Value;
use transformer::lora::{ADAPTER_CONFIG_FILE, ADAPTER_WEIGHTS_FILE};
use transformer::{Lora, Model};

fn golden_dir(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/golden/lora")
        .join(name)
}

fn golden(name: &str) -> Value {
    let path = golden_dir(name).join("golden.json");
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn floats(v: &Value) -> Vec<f64> {
    match v {
        Value::Array(items) => items.iter().flat_map(floats).collect(),
        v => vec![v.as_f64().unwrap()],
    }
}

/// A sequence of token ids from its JSON list.
fn ids_of(v: &Value) -> Vec<usize> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap() as usize)
        .collect()
}

/// The base and PEFT's adapter on it, in f32.
fn adapted(name: &str) -> Model<f32> {
    let base = Model::load(&golden_dir(name).join("base")).unwrap();
    let lora = Lora::load(&golden_dir(name).join("adapter"), base.config()).unwrap();
    base.with_lora(lora)
}

fn logits<T: autograd::Float>(model: &Model<T>, ids: &[usize]) -> Vec<f64> {
    let tape = Tape::<T>::no_grad();
    let params = model.bind(&tape);
    let y = model.forward(&tape, &params, ids, 1, ids.len());
    y.value().iter().map(|v| v.as_f64()).collect()
}

/// ||ours - theirs|| / ||theirs|| (as the Llama goldens measure).
fn relative_error(ours: &[f64], theirs: &[f64]) -> f64 {
    assert_eq!(ours.len(), theirs.len());
    let diff: f64 = ours.iter().zip(theirs).map(|(a, b)| (a - b).powi(2)).sum();
    let norm: f64 = theirs.iter().map(|b| b * b).sum();
    (diff / norm.max(1e-300)).sqrt()
}

fn max_abs_diff(a: &[f64], b: &[f64]) -> f64 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f64::max)
}

fn check_logits(name: &str) {
    let g = golden(name);
    let model = adapted(name);
    let f64_model = model.to_f64();
    for (i, ids) in g["ids"].as_array().unwrap().iter().enumerate() {
        let ids = ids_of(ids);
        let theirs32 = floats(&g["logits_f32"][i]);
        let scale = theirs32.iter().fold(0f64, |m, v| m.max(v.abs()));
        let diff32 = max_abs_diff(&logits(&model, &ids), &theirs32);
        assert!(
            diff32 < 1e-5 * scale.max(1.0),
            "{name} f32 logits off by {diff32}"
        );
        let err64 = relative_error(&logits(&f64_model, &ids), &floats(&g["logits_f64"][i]));
        assert!(err64 < 1e-6, "{name} f64 logits off by {err64:e}");
        // and the adapter matters: the base alone is far from them
        let base = max_abs_diff(&logits(&model.without_lora(), &ids), &theirs32);
        assert!(base > 0.1, "{name}: the adapter changes nothing ({base})");
    }
}

#[test]
fn llama_all_linear_logits_equal_peft() {
    check_logits("llama");
}

#[test]
fn qwen2_rslora_logits_equal_peft() {
    check_logits("qwen2");
}

#[test]
fn gpt2_conv1d_logits_equal_peft() {
    check_logits("gpt2");
}

/// The f64 gradients of the summed log-probs of both sequences with respect
/// to every lora_A and lora_B, against PyTorch autograd through PEFT.
fn check_gradients(name: &str) {
    let g = golden(name);
    let model = adapted(name).to_f64();
    let tape = Tape::<f64>::new();
    let params = model.bind(&tape);
    let mut total = None;
    for ids in g["ids"].as_array().unwrap() {
        let ids = ids_of(ids);
        let t = ids.len();
        let logits = model.forward(&tape, &params, &ids, 1, t); // (1, T, V)
        let targets: Vec<i64> = ids[1..]
            .iter()
            .map(|&i| i as i64)
            .chain([autograd::IGNORE_INDEX])
            .collect();
        // the mean over T - 1 scored tokens, times T - 1: the sum of log-probs, negated
        let nll = tape.mul_scalar(&tape.cross_entropy(&logits, &targets), (t - 1) as f64);
        total = Some(match total {
            None => nll,
            Some(sum) => tape.add(&sum, &nll),
        });
    }
    let loss = tape.neg(&total.unwrap()); // sum of log-probs
    let sum_logprobs = loss.item();
    let expected: f64 = floats(&g["logprob_sums"]).iter().sum();
    assert!(
        (sum_logprobs - expected).abs() < 1e-7 * expected.abs(),
        "{name}: log-prob sum {sum_logprobs} vs {expected}"
    );
    let grads = tape.backward(&loss);
    let names = model.trainable_names();
    let vars = model.trainable_vars(&params);
    assert_eq!(names.len(), g["grads_f64"].as_object().unwrap().len());
    for (key, var) in names.iter().zip(vars) {
        let theirs = &g["grads_f64"][key];
        assert!(!theirs.is_null(), "{name}: PEFT has no tensor {key}");
        let theirs = floats(&theirs["grad"]);
        let ours: Vec<f64> = grads.get(var).unwrap().iter().copied().collect();
        let err = relative_error(&ours, &theirs);
        assert!(err < 1e-6, "{name} {key}: gradient off by {err:e}");
    }
}

#[test]
fn adapter_gradients_equal_pytorch_through_peft() {
    for name in ["llama", "qwen2", "gpt2"] {
        check_gradients(name);
    }
}

/// `merge_lora` equals PEFT's `merge_and_unload` saved by transformers,
/// tensor by tensor (the merged model has no adapters).
#[test]
fn merge_equals_merge_and_unload() {
    for name in ["llama", "qwen2", "gpt2"] {
        let ours = adapted(name).merge_lora();
        let theirs = Model::load(&golden_dir(name).join("merged")).unwrap();
        assert_eq!(ours.config(), theirs.config());
        for ((n, a), (_, b)) in ours.named_params().zip(theirs.named_params()) {
            let scale = b.iter().fold(0f32, |m, v| m.max(v.abs()));
            let diff = a
                .iter()
                .zip(b.iter())
                .map(|(x, y)| (x - y).abs())
                .fold(0f32, f32::max);
            assert!(
                diff <= 1e-6 * scale.max(1.0),
                "{name} {n}: merged off by {diff}"
            );
        }
    }
}

/// What `dpo` writes is what PEFT wrote: the same tensor keys and shapes,
/// and the settings that change what the adapter computes.
#[test]
fn written_adapter_matches_peft_files() {
    for name in ["llama", "qwen2", "gpt2"] {
        let model = adapted(name);
        let lora = model.lora().unwrap();
        let files = lora.files(model.config()).unwrap();
        let dir = golden_dir(name).join("adapter");
        let peft_bytes = std::fs::read(dir.join(ADAPTER_WEIGHTS_FILE)).unwrap();
        let peft = safetensors::SafeTensors::deserialize(&peft_bytes).unwrap();
        let ours = safetensors::SafeTensors::deserialize(&files[0].1).unwrap();
        let mut peft_keys: Vec<_> = peft.names().into_iter().cloned().collect();
        let mut our_keys: Vec<_> = ours.names().into_iter().cloned().collect();
        peft_keys.sort();
        our_keys.sort();
        assert_eq!(our_keys, peft_keys, "{name}");
        for key in &peft_keys {
            let (p, o) = (peft.tensor(key).unwrap(), ours.tensor(key).unwrap());
            assert_eq!(p.shape(), o.shape(), "{name} {key}");
            assert_eq!(p.data(), o.data(), "{name} {key}: values");
        }
        let peft_config: Value =
            serde_json::from_slice(&std::fs::read(dir.join(ADAPTER_CONFIG_FILE)).unwrap()).unwrap();
        let our_config: Value = serde_json::from_slice(&files[1].1).unwrap();
        for field in [
            "peft_type",
            "r",
            "lora_alpha",
            "use_rslora",
            "use_dora",
            "bias",
            "fan_in_fan_out",
        ] {
            assert_eq!(our_config[field], peft_config[field], "{name} {field}");
        }
    }
}

/// PEFT's defaults: targets per architecture, and a fresh adapter's B = 0
/// with A inside 1/sqrt(in_features).
#[test]
fn defaults_are_peft_defaults() {
    let path = golden_dir("peft_default_init.json");
    let g: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    for (arch, name) in [("llama", "llama"), ("qwen2", "qwen2"), ("gpt2", "gpt2")] {
        let base = Model::load(&golden_dir(name).join("base")).unwrap();
        let ours = transformer::lora::default_targets(base.config());
        let theirs: Vec<String> = g["default_target_modules"][arch]["resolved_target_modules"]
            .as_array()
            .unwrap_or_else(|| panic!("{arch}: {}", g["default_target_modules"]))
            .iter()
            .map(|v| v.as_str().unwrap().to_string())
            .collect();
        let (mut a, mut b) = (ours.clone(), theirs);
        a.sort();
        b.sort();
        assert_eq!(a, b, "{arch}");
    }
}

/// An adapter trained by `dpo` (5 steps of DPO on every linear layer of the
/// tiny Llama, `tests/golden/lora/dpo_written`), loaded by PEFT's
/// `PeftModel.from_pretrained`: PEFT's logits are `dpo`'s.
#[test]
fn adapter_written_by_dpo_gives_peft_the_same_logits() {
    let dir = golden_dir("dpo_written");
    let expected: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("peft_logits.json")).unwrap())
            .unwrap();
    let base = Model::load(&golden_dir("llama").join("base")).unwrap();
    let lora = Lora::load(&dir.join("adapter"), base.config()).unwrap();
    let model = base.with_lora(lora);
    for (i, ids) in expected["ids"].as_array().unwrap().iter().enumerate() {
        let ids = ids_of(ids);
        let theirs = floats(&expected["logits_f32"][i]);
        let scale = theirs.iter().fold(0f64, |m, v| m.max(v.abs()));
        let diff = max_abs_diff(&logits(&model, &ids), &theirs);
        assert!(diff < 1e-5 * scale.max(1.0), "sequence {i}: off by {diff}");
        let base_diff = max_abs_diff(&logits(&model.without_lora(), &ids), &theirs);
        assert!(base_diff > 0.1, "the trained adapter changes nothing");
    }
}
