//! Conversational data end to end: a small Llama-family model with the
//! chat goldens' tokenizer (`tests/golden/chat/smollm2`: SmolLM2's template
//! over a 420-token BPE) through `dpo sft` (whole conversations, and
//! `--assistant-only-loss` with a training template given by
//! `--chat-template`), `dpo train` and `dpo eval` on conversational pairs,
//! and KTO on conversational unpaired rows.

use crate::common;

use std::fs;
use std::path::{Path, PathBuf};

use crate::common::dpo;
use transformer::{HfTokenizer, Model, ModelConfig, Tokenizer};

fn s(path: &Path) -> &str {
    path.to_str().unwrap()
}

fn chat_dir() -> PathBuf {
    common::golden_dir().join("chat")
}

/// A fresh `llama-tiny` whose vocabulary is the chat tokenizer's, saved as a
/// Hugging Face directory with that tokenizer and SmolLM2's template.
fn chat_model(dir: &Path) -> PathBuf {
    let tokenizer_dir = chat_dir().join("smollm2");
    let tokenizer = HfTokenizer::from_dir(&tokenizer_dir).unwrap().unwrap();
    let mut config = ModelConfig::preset("llama-tiny").unwrap();
    config.vocab_size = tokenizer.vocab_size();
    // Room for SmolLM2's default system message and a few turns.
    config.block_size = 256;
    let model_dir = dir.join("init");
    Model::<f32>::new(config, 7).save(&model_dir).unwrap();
    for entry in fs::read_dir(&tokenizer_dir).unwrap() {
        let path = entry.unwrap().path();
        fs::copy(&path, model_dir.join(path.file_name().unwrap())).unwrap();
    }
    model_dir
}

fn rows(name: &str) -> PathBuf {
    chat_dir().join(format!("rows/{name}.jsonl"))
}

const QUICK: [&str; 7] = [
    "--steps",
    "2",
    "--batch-size",
    "2",
    "--lr",
    "1e-3",
    "--no-progress",
];

#[test]
fn sft_then_dpo_and_kto_on_conversations() {
    let tmp = tempfile::tempdir().unwrap();
    let init = chat_model(tmp.path());
    let sft = tmp.path().join("sft");
    let mut args = vec![
        "sft",
        "--init",
        s(&init),
        "--data",
        s(&rows("sft_messages")).to_owned().leak(),
        "--out",
        s(&sft),
    ];
    args.extend(QUICK);
    let summary = dpo(&args).assert_ok().json();
    assert_eq!(summary["train_rows"], 5, "{summary:?}");
    assert!(summary["final_loss"].as_f64().unwrap().is_finite());
    // The checkpoint keeps the model's template.
    assert_eq!(
        fs::read_to_string(sft.join("chat_template.jinja")).unwrap(),
        fs::read_to_string(init.join("chat_template.jinja")).unwrap()
    );

    let dpo_out = tmp.path().join("dpo");
    let pairs = rows("preference");
    let mut args = vec![
        "train",
        "--policy",
        s(&sft),
        "--ref",
        s(&sft),
        "--data",
        s(&pairs),
        "--out",
        s(&dpo_out),
    ];
    args.extend(QUICK);
    let summary = dpo(&args).assert_ok().json();
    assert_eq!(summary["train_rows"], 4, "{summary:?}");

    let eval = dpo(&[
        "eval",
        "--policy",
        s(&sft),
        "--ref",
        s(&sft),
        "--data",
        s(&pairs),
    ])
    .assert_ok()
    .json();
    // The policy is its own reference: the loss is ln 2 on every pair.
    assert_eq!(eval["num_pairs"], 4);
    let loss = eval["loss"].as_f64().unwrap();
    assert!((loss - std::f64::consts::LN_2).abs() < 1e-6, "{loss}");

    let kto_out = tmp.path().join("kto");
    let kto_rows = rows("kto");
    let mut args = vec![
        "train",
        "--loss",
        "kto",
        "--policy",
        s(&sft),
        "--ref",
        s(&sft),
        "--data",
        s(&kto_rows),
        "--out",
        s(&kto_out),
    ];
    args.extend(QUICK);
    dpo(&args).assert_ok();
}

#[test]
fn assistant_only_loss_with_a_training_template() {
    let tmp = tempfile::tempdir().unwrap();
    let init = chat_model(tmp.path());
    let data = rows("sft_messages");
    let out = tmp.path().join("sft");
    let base = [
        "sft",
        "--init",
        s(&init),
        "--data",
        s(&data),
        "--out",
        s(&out),
        "--assistant-only-loss",
    ];
    // SmolLM2's own template marks no assistant text: one line saying what to do.
    let mut args = base.to_vec();
    args.extend(QUICK);
    let run = dpo(&args);
    run.assert_one_line_error();
    assert!(run.stderr.contains("--chat-template"), "{}", run.stderr);
    assert!(!out.exists());

    let template = chat_dir().join("smollm2_training/chat_template.jinja");
    let mut args = base.to_vec();
    args.extend(["--chat-template", s(&template)]);
    args.extend(QUICK);
    let summary = dpo(&args).assert_ok().json();
    assert!(summary["final_loss"].as_f64().unwrap().is_finite());
    // The run's checkpoint carries the template it was trained with.
    assert_eq!(
        fs::read_to_string(out.join("chat_template.jinja")).unwrap(),
        fs::read_to_string(&template).unwrap()
    );
}

#[test]
fn bad_templates_are_one_line_errors_in_bounded_time() {
    let tmp = tempfile::tempdir().unwrap();
    let init = chat_model(tmp.path());
    let pairs = rows("preference");
    let cases = [
        (
            "endless.jinja",
            "{% for i in range(9999) %}{% for j in range(9999) %}{% for k in range(9999) %}{% endfor %}{% endfor %}{% endfor %}",
            "the chat template failed",
        ),
        (
            "recursive.jinja",
            "{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}",
            "recursion",
        ),
        ("broken.jinja", "{% for m in messages %}", "does not parse"),
        (
            "refusing.jinja",
            "{{ raise_exception('no system messages here') }}",
            "no system messages here",
        ),
    ];
    for (name, source, says) in cases {
        let template = tmp.path().join(name);
        fs::write(&template, source).unwrap();
        let started = std::time::Instant::now();
        let run = dpo(&[
            "eval",
            "--policy",
            s(&init),
            "--ref",
            s(&init),
            "--data",
            s(&pairs),
            "--chat-template",
            s(&template),
        ]);
        run.assert_one_line_error();
        assert!(run.stderr.contains(says), "{name}: {}", run.stderr);
        assert!(
            started.elapsed().as_secs() < 30,
            "{name} took {:?}",
            started.elapsed()
        );
    }
}
