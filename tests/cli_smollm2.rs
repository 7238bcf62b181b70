//! The `dpo` command line on the real SmolLM2-135M-Instruct, read from its
//! GGUF file (see crates/transformer/tests/smollm2.rs for the model itself):
//!
//! - `eval` (in f64 and in f32) gives TRL 1.16 `DPOTrainer.evaluate`'s metrics on 8 HH-RLHF text
//!   pairs (`tests/golden/smollm2/trl_eval`, made by
//!   `tests/golden/make_llama_golden.py`), with the reference the GGUF and
//!   the policy the same model with its final norm weight times 1.05f32;
//! - the same on HH-RLHF pairs in TRL's conversational form
//!   (`smollm2/trl_chat_eval`), rendered by SmolLM2's chat template, and
//!   their ids equal to TRL's;
//! - `convert --to hf` writes a directory `dpo` reads back to the same
//!   tensors, with the tokenizer, its special tokens and the chat template;
//! - `train` runs on the GGUF and writes Hugging Face checkpoints.
//!
//! Ignored without `DPO_SMOLLM2_GGUF` (`.ci/run` sets it); run without it they
//! fail saying what is missing.

use crate::common;

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::common::dpo;
use serde_json::Value;
use transformer::Model;

/// rtol of the metrics against TRL (float32 models on both sides).
const RTOL: f64 = 1e-4;
/// atol: the rewards and their margin are beta = 0.1 times differences of
/// float32 log-prob sums of about -110 (ulp 7.6e-6), so they carry an
/// absolute error of about 1e-6 that the margin's -0.0034 makes relative.
const ATOL: f64 = 1e-5;

fn smollm2_path() -> PathBuf {
    transformer::gguf::smollm2_for_tests()
}

fn trl_dir() -> PathBuf {
    common::golden_dir().join("smollm2/trl_eval")
}

fn read_json(path: &Path) -> Value {
    serde_json::from_str(&fs::read_to_string(path).unwrap()).unwrap()
}

fn s(path: &Path) -> &str {
    path.to_str().unwrap()
}

fn assert_metrics(got: &serde_json::Map<String, Value>, expected: &Value) {
    for (key, e) in expected["metrics"].as_object().unwrap() {
        let (a, e) = (got[key].as_f64().unwrap(), e.as_f64().unwrap());
        assert!(
            (a - e).abs() <= ATOL + RTOL * e.abs(),
            "{key}: {a} vs TRL {e}"
        );
    }
    assert_eq!(got["num_pairs"], expected["num_pairs"]);
}

/// `dpo eval` of `policy` against `reference` on `data` at beta 0.1 (TRL's
/// goldens'), the models in `precision` (`f64` or `f32`).
fn eval_metrics(
    policy: &Path,
    reference: &Path,
    data: &Path,
    precision: &str,
) -> serde_json::Map<String, Value> {
    dpo(&[
        "eval",
        "--policy",
        s(policy),
        "--ref",
        s(reference),
        "--data",
        s(data),
        "--beta",
        "0.1",
        "--precision",
        precision,
    ])
    .assert_ok()
    .json()
}

/// The policy of the TRL goldens, written under `tmp`: the GGUF model as a
/// Hugging Face directory with its final RMSNorm's weight times 1.05 in
/// float32 (as torch's `mul_`).
fn perturbed_policy(gguf: &Path, tmp: &Path) -> PathBuf {
    let (converted, policy) = (tmp.join("hf"), tmp.join("policy"));
    let run = dpo(&["convert", s(gguf), s(&converted), "--to", "hf"]);
    assert_eq!(run.assert_ok().json()["from"], "gguf");
    let mut model = Model::<f32>::load(&converted).unwrap();
    Arc::make_mut(&mut model.params_mut().ln_f.weight).mapv_inplace(|w| w * 1.05f32);
    fs::create_dir(&policy).unwrap();
    for entry in fs::read_dir(&converted).unwrap() {
        let path = entry.unwrap().path();
        fs::copy(&path, policy.join(path.file_name().unwrap())).unwrap();
    }
    model.save(&policy).unwrap();
    policy
}

#[test]
#[ignore = "needs the real SmolLM2 GGUF (DPO_SMOLLM2_GGUF): run by .ci/run"]
fn smollm2_eval_on_conversations_gives_trls_dpo_metrics() {
    // HH-RLHF pairs in TRL's conversational form, through SmolLM2's chat template.
    let gguf = smollm2_path();
    let tmp = tempfile::tempdir().unwrap();
    let policy = perturbed_policy(&gguf, tmp.path());
    let chat_dir = common::golden_dir().join("smollm2/trl_chat_eval");
    let got = eval_metrics(&policy, &gguf, &chat_dir.join("pairs.jsonl"), "f32");
    assert_metrics(&got, &read_json(&chat_dir.join("metrics.json")));
}

#[test]
#[ignore = "needs the real SmolLM2 GGUF (DPO_SMOLLM2_GGUF): run by .ci/run"]
fn smollm2_conversations_tokenize_as_trl_does() {
    let tokenizer = transformer::gguf::load_model(&smollm2_path())
        .unwrap()
        .tokenizer;
    let chat_dir = common::golden_dir().join("smollm2/trl_chat_eval");
    let (rows, report) =
        dpo::data::load_preferences(&chat_dir.join("pairs.jsonl"), &tokenizer, 49152, false)
            .unwrap();
    let expected = read_json(&chat_dir.join("ids.json"));
    let expected = expected["pairs"].as_array().unwrap();
    assert_eq!(rows.len(), expected.len());
    let ids = |v: &Value| -> Vec<u32> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|i| i.as_u64().unwrap() as u32)
            .collect()
    };
    for (row, trl) in rows.iter().zip(expected) {
        assert_eq!(row.prompt, ids(&trl["prompt_ids"]), "line {}", row.line);
        assert_eq!(row.chosen, ids(&trl["chosen_ids"]), "line {}", row.line);
        assert_eq!(row.rejected, ids(&trl["rejected_ids"]), "line {}", row.line);
    }
    assert_eq!(report.prompt_not_prefix, 0);
}

#[test]
#[ignore = "needs the real SmolLM2 GGUF (DPO_SMOLLM2_GGUF): run by .ci/run"]
fn smollm2_eval_gives_trls_dpo_metrics() {
    let gguf = smollm2_path();
    let tmp = tempfile::tempdir().unwrap();
    let policy = perturbed_policy(&gguf, tmp.path());
    let data = trl_dir().join("pairs.jsonl");
    let eval = |policy: &Path, precision| eval_metrics(policy, &gguf, &data, precision);
    let expected = read_json(&trl_dir().join("metrics.json"));
    assert_metrics(&eval(&policy, "f64"), &expected);
    assert_metrics(&eval(&policy, "f32"), &expected);
    assert_metrics(
        &eval(&gguf, "f32"),
        &read_json(&trl_dir().join("metrics_same.json")),
    );
}

#[test]
#[ignore = "needs the real SmolLM2 GGUF (DPO_SMOLLM2_GGUF): run by .ci/run"]
fn smollm2_convert_writes_a_hugging_face_directory_with_tokenizer_and_template() {
    let gguf = smollm2_path();
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("smollm2");
    dpo(&["convert", s(&gguf), s(&out), "--to", "hf"]).assert_ok();
    let config = read_json(&out.join("config.json"));
    assert_eq!(config["model_type"], "llama");
    assert_eq!(config["architectures"][0], "LlamaForCausalLM");
    assert_eq!(config["num_key_value_heads"], 3);
    assert_eq!(config["tie_word_embeddings"], true);
    let tokenizer_config = read_json(&out.join("tokenizer_config.json"));
    assert_eq!(tokenizer_config["eos_token"], "<|im_end|>");
    let template = fs::read_to_string(out.join("chat_template.jinja")).unwrap();
    assert!(template.contains("<|im_start|>"), "{template}");
    // The directory reads back to the GGUF's tensors.
    let (a, b) = (
        Model::<f32>::load(&gguf).unwrap(),
        Model::<f32>::load(&out).unwrap(),
    );
    assert_eq!(a.config(), b.config());
    for ((name, x), (_, y)) in a.named_params().zip(b.named_params()) {
        assert!(x == y, "{name}");
    }
}

#[test]
#[ignore = "needs the real SmolLM2 GGUF (DPO_SMOLLM2_GGUF): run by .ci/run"]
fn smollm2_train_on_the_gguf_writes_hugging_face_checkpoints() {
    let gguf = smollm2_path();
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let run = dpo(&[
        "train",
        "--policy",
        s(&gguf),
        "--ref",
        s(&gguf),
        "--data",
        s(&trl_dir().join("pairs.jsonl")),
        "--out",
        s(&out),
        "--batch-size",
        "2",
        "--steps",
        "2",
        "--lr",
        "1e-5",
        "--max-prompt-length",
        "64",
        "--no-progress",
    ]);
    run.assert_ok();
    let config = read_json(&out.join("config.json"));
    assert_eq!(config["model_type"], "llama");
    for file in [
        "tokenizer.json",
        "tokenizer_config.json",
        "chat_template.jinja",
    ] {
        assert!(
            out.join(file).is_file(),
            "{file} missing from the checkpoint"
        );
    }
    let trained = Model::<f32>::load(&out).unwrap();
    let start = Model::<f32>::load(&gguf).unwrap();
    assert!(
        trained.params().wte != start.params().wte,
        "two steps changed nothing"
    );
}
