//! The `dpo` command line on Hugging Face GPT-2 directories
//! (`tests/golden/hf`, written by `tests/golden/make_hf_golden.py` with
//! transformers, tokenizers and TRL 1.16): `eval` gives TRL's DPO metrics
//! from text rows tokenized by the directory's `tokenizer.json`; `convert`
//! round-trips exactly; `train` and `sft` write their checkpoints in the
//! format asked for, with the tokenizer files; `generate` takes and prints
//! ids and stops at the EOS.

use crate::common;

use std::fs;
use std::path::{Path, PathBuf};

use crate::common::{dpo, Run};
use serde_json::Value;

/// rtol of the metrics against TRL (float32 models on both sides).
const RTOL: f64 = 1e-4;

fn hf_dir() -> PathBuf {
    common::golden_dir().join("hf")
}

fn read_json(path: &Path) -> Value {
    serde_json::from_str(&fs::read_to_string(path).unwrap()).unwrap()
}

fn s(path: &Path) -> &str {
    path.to_str().unwrap()
}

#[test]
fn eval_gives_trls_dpo_metrics() {
    let hf = hf_dir();
    let run = dpo(&[
        "eval",
        "--policy",
        s(&hf.join("policy")),
        "--ref",
        s(&hf.join("ref")),
        "--data",
        s(&hf.join("pairs.jsonl")),
        "--beta",
        "0.1",
    ]);
    let got = run.assert_ok().json();
    let expected = read_json(&hf.join("metrics.json"));
    for (key, e) in expected["metrics"].as_object().unwrap() {
        let (a, e) = (got[key].as_f64().unwrap(), e.as_f64().unwrap());
        assert!(
            (a - e).abs() <= 1e-6 + RTOL * e.abs(),
            "{key}: {a} vs TRL {e}"
        );
    }
    assert_eq!(got["num_pairs"], expected["num_pairs"]);
}

/// The tensors of a safetensors file, sorted by name, with dtype, shape and bytes.
fn tensors(path: &Path) -> Vec<(String, String, Vec<usize>, Vec<u8>)> {
    let bytes = fs::read(path).unwrap();
    let file = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut out: Vec<_> = file
        .tensors()
        .into_iter()
        .map(|(n, v)| {
            (
                n,
                format!("{:?}", v.dtype()),
                v.shape().to_vec(),
                v.data().to_vec(),
            )
        })
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

#[test]
fn convert_round_trips_exactly_with_the_tokenizer() {
    let tmp = tempfile::tempdir().unwrap();
    let (nano, back) = (tmp.path().join("nano"), tmp.path().join("back"));
    let policy = hf_dir().join("policy");
    let run = dpo(&["convert", s(&policy), s(&nano), "--to", "nanogpt"]);
    assert_eq!(run.assert_ok().json()["from"], "hf");
    assert!(read_json(&nano.join("config.json"))
        .get("block_size")
        .is_some());
    dpo(&["convert", s(&nano), s(&back), "--to", "hf"]).assert_ok();
    assert_eq!(
        tensors(&back.join("model.safetensors")),
        tensors(&policy.join("model.safetensors"))
    );
    for file in ["tokenizer.json", "tokenizer_config.json"] {
        assert_eq!(
            fs::read(nano.join(file)).unwrap(),
            fs::read(policy.join(file)).unwrap()
        );
    }
    // The sharded and F16 files convert too; OUT must be new.
    for dir in ["policy_sharded", "policy_f16"] {
        let out = tmp.path().join(dir);
        dpo(&[
            "convert",
            s(&hf_dir().join(dir)),
            s(&out),
            "--to",
            "nanogpt",
        ])
        .assert_ok();
    }
    dpo(&["convert", s(&policy), s(&nano), "--to", "hf"]).assert_one_line_error();
}

fn train(out: &Path, steps: &str, extra: &[&str]) -> Run {
    let hf = hf_dir();
    let (policy, reference, data) = (hf.join("policy"), hf.join("ref"), hf.join("pairs.jsonl"));
    let mut args = vec![
        "train",
        "--policy",
        s(&policy),
        "--ref",
        s(&reference),
        "--data",
        s(&data),
        "--out",
        s(out),
        "--steps",
        steps,
        "--batch-size",
        "5",
        "--no-progress",
    ];
    args.extend_from_slice(extra);
    dpo(&args)
}

#[test]
fn training_keeps_the_format_and_the_tokenizer_unless_told() {
    let tmp = tempfile::tempdir().unwrap();
    let hf_out = tmp.path().join("hf");
    train(&hf_out, "1", &[]).assert_ok();
    assert_eq!(read_json(&hf_out.join("config.json"))["model_type"], "gpt2");
    let state = read_json(&hf_out.join("trainer_state.json"));
    for file in [
        "model.safetensors",
        "config.json",
        "tokenizer.json",
        "tokenizer_config.json",
    ] {
        assert!(state["sha256"].get(file).is_some(), "{file} in the state");
    }
    assert_eq!(
        fs::read(hf_out.join("tokenizer.json")).unwrap(),
        fs::read(hf_dir().join("policy/tokenizer.json")).unwrap()
    );
    // The same run saved as nanoGPT: the same model, other files.
    let nano_out = tmp.path().join("nano");
    train(&nano_out, "1", &["--save-format", "nanogpt"]).assert_ok();
    assert!(read_json(&nano_out.join("config.json"))
        .get("model_type")
        .is_none());
    assert!(nano_out.join("tokenizer.json").exists());
    let back = tmp.path().join("back");
    dpo(&["convert", s(&nano_out), s(&back), "--to", "hf"]).assert_ok();
    assert_eq!(
        tensors(&back.join("model.safetensors")),
        tensors(&hf_out.join("model.safetensors"))
    );
    // It resumes from its own files, and eval reads them.
    train(&hf_out, "2", &["--resume"]).assert_ok();
    let run = dpo(&[
        "eval",
        "--policy",
        s(&hf_out),
        "--reference-free",
        "--data",
        s(&hf_dir().join("pairs.jsonl")),
    ]);
    run.assert_ok();
    // sft from an HF directory, saved as HF.
    let sft_out = tmp.path().join("sft");
    let run = dpo(&[
        "sft",
        "--init",
        s(&hf_dir().join("policy")),
        "--data",
        s(&hf_dir().join("pairs.jsonl")),
        "--out",
        s(&sft_out),
        "--steps",
        "1",
        "--no-progress",
    ]);
    run.assert_ok();
    assert_eq!(
        read_json(&sft_out.join("config.json"))["model_type"],
        "gpt2"
    );
    assert!(sft_out.join("tokenizer.json").exists());
    // A later run of a byte-level model into the same --out leaves no stale
    // tokenizer file behind (it would change how the model reads text).
    let run = dpo(&[
        "sft",
        "--config",
        "tiny",
        "--data",
        s(&hf_dir().join("pairs.jsonl")),
        "--out",
        s(&sft_out),
        "--steps",
        "1",
        "--no-progress",
    ]);
    run.assert_ok();
    assert!(read_json(&sft_out.join("config.json"))
        .get("model_type")
        .is_none());
    assert!(!sft_out.join("tokenizer.json").exists());
    assert!(!sft_out.join("tokenizer_config.json").exists());
}

#[test]
fn generate_takes_and_prints_ids_and_stops_at_the_eos() {
    let policy = hf_dir().join("policy");
    let greedy = |model: &Path, prompt: &[&str]| {
        let mut args = vec!["generate", "--model", s(model), "--temperature", "0"];
        args.extend_from_slice(prompt);
        args.extend_from_slice(&["--max-new-tokens", "4", "--print-ids"]);
        dpo(&args).assert_ok().json()
    };
    let by_text = greedy(&policy, &["--prompt", "The capital of France"]);
    let prompt_ids: Vec<String> = by_text["prompt_ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.to_string())
        .collect();
    let by_ids = greedy(&policy, &["--prompt-ids", &prompt_ids.join(",")]);
    assert_eq!(by_ids["completion_ids"], by_text["completion_ids"]);
    assert_eq!(by_ids["prompt"], "The capital of France");
    assert_eq!(by_text["finish_reason"], "length");

    // With the first generated token as its EOS, generation stops at once.
    let first = by_text["completion_ids"][0].as_u64().unwrap();
    let tokenizer = read_json(&policy.join("tokenizer.json"));
    let (token, _) = tokenizer["model"]["vocab"]
        .as_object()
        .unwrap()
        .iter()
        .find(|(_, id)| id.as_u64() == Some(first))
        .unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let model = tmp.path().join("m");
    fs::create_dir(&model).unwrap();
    for file in ["config.json", "model.safetensors", "tokenizer.json"] {
        fs::copy(policy.join(file), model.join(file)).unwrap();
    }
    fs::write(
        model.join("tokenizer_config.json"),
        serde_json::json!({ "eos_token": token }).to_string(),
    )
    .unwrap();
    let stopped = greedy(&model, &["--prompt", "The capital of France"]);
    assert_eq!(stopped["finish_reason"], "eos");
    assert_eq!(stopped["new_tokens"], 0);
}

#[test]
fn another_model_type_is_one_clear_line() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tmp.path().join("mistral");
    fs::create_dir(&model).unwrap();
    fs::write(model.join("config.json"), r#"{"model_type": "mistral"}"#).unwrap();
    let run = dpo(&["generate", "--model", s(&model), "--prompt", "hi"]);
    run.assert_one_line_error();
    assert!(
        run.stderr
            .contains("model_type \"mistral\" is not supported"),
        "{run}"
    );
    // A Llama-family config that leaves out a size it needs names it.
    fs::write(model.join("config.json"), r#"{"model_type": "llama"}"#).unwrap();
    let run = dpo(&["generate", "--model", s(&model), "--prompt", "hi"]);
    run.assert_one_line_error();
    assert!(run.stderr.contains("no hidden_size"), "{run}");
}
