//! The path of the recipe in docs/smollm2-dpo.md, short, on the real
//! SmolLM2-135M-Instruct and the real HH-RLHF harmless-base rows of
//! `../shared/datasets`: `convert-data` makes them conversational, the
//! first [`HELD_OUT`] pairs are held out and LoRA DPO trains on the next
//! [`STEPS`] x 8, every row cut to [`MAX_LENGTH`] tokens (`--max-length`,
//! the prompt keeping its last [`MAX_PROMPT_LENGTH`]) to fit CI's minutes:
//!
//! - DPO generalises: on the held-out pairs, evaluated after the last
//!   step, the implicit-reward accuracy is above chance and the reward
//!   margin above 0, each by more than two standard errors, and the loss is
//!   below ln 2 (measured on 2 threads: accuracy 0.594 ± 0.031, margin
//!   0.043 ± 0.011, loss 0.676; docs/smollm2-dpo.md section 7);
//! - the held-out record carries the standard errors and the policy's own
//!   preference;
//! - the adapter directory is a chat model: `dpo chat` loads it (base from
//!   `adapter_config.json`, template from the checkpoint) and answers.
//!
//! Ignored without `DPO_SMOLLM2_GGUF` (`.ci/run` sets it; its name holds
//! `smollm2`, so it runs with the SmolLM2 tests), and it needs `../shared`
//! beside the repository or `DPO_SHARED_DIR`; without them it fails saying
//! what is missing.

use std::fs;
use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use crate::common::dpo;
use serde_json::{Map, Value};

/// Pairs held out: the first ones of the converted file.
const HELD_OUT: usize = 256;
/// Optimizer steps of 8 pairs, on the pairs after the held-out ones.
const STEPS: usize = 24;
/// `--max-length`: tokens a row keeps.
const MAX_LENGTH: &str = "64";
/// `--max-prompt-length`: tokens a cut row's prompt keeps.
const MAX_PROMPT_LENGTH: &str = "32";
/// `--lr` of the adapters.
const LR: &str = "1e-4";

/// `../shared` beside the repository, or the folder `DPO_SHARED_DIR` names.
fn shared_dir() -> PathBuf {
    std::env::var_os("DPO_SHARED_DIR").map_or_else(
        || PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared"),
        PathBuf::from,
    )
}

fn s(path: &std::path::Path) -> &str {
    path.to_str().unwrap()
}

#[test]
#[ignore = "needs the real SmolLM2 GGUF (DPO_SMOLLM2_GGUF) and ../shared: run by .ci/run"]
fn smollm2_recipe_generalises_to_held_out_pairs_and_the_adapter_chats() {
    let gguf = transformer::gguf::smollm2_for_tests();
    let hh = shared_dir().join("datasets/hh-rlhf-harmless-base-test.jsonl.gz");
    assert!(
        hh.is_file(),
        "{} is missing: set DPO_SHARED_DIR to the folder holding datasets/",
        hh.display()
    );
    let tmp = tempfile::tempdir().unwrap();
    let pairs = tmp.path().join("pairs.jsonl");
    dpo(&["convert-data", "--from", "hh-rlhf", s(&hh), s(&pairs)]).assert_ok();
    let text = fs::read_to_string(&pairs).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    let (held_out, train) = (
        tmp.path().join("heldout.jsonl"),
        tmp.path().join("train.jsonl"),
    );
    fs::write(&held_out, lines[..HELD_OUT].join("\n") + "\n").unwrap();
    let trained = &lines[HELD_OUT..HELD_OUT + 8 * STEPS];
    fs::write(&train, trained.join("\n") + "\n").unwrap();
    let steps = STEPS.to_string();

    let out = tmp.path().join("lora");
    let metrics = tmp.path().join("metrics.jsonl");
    dpo(&[
        "train",
        "--policy",
        s(&gguf),
        "--use-peft",
        "--lora-targets",
        "all-linear",
        "--lora-r",
        "16",
        "--lora-alpha",
        "32",
        "--lora-dropout",
        "0",
        "--data",
        s(&train),
        "--eval-data",
        s(&held_out),
        "--eval-every",
        "0",
        "--out",
        s(&out),
        "--lr",
        LR,
        "--steps",
        &steps,
        "--data-order",
        "file",
        "--max-length",
        MAX_LENGTH,
        "--max-prompt-length",
        MAX_PROMPT_LENGTH,
        "--batch-size",
        "8",
        "--grad-accum",
        "8",
        "--metrics",
        s(&metrics),
        "--no-progress",
    ])
    .assert_ok();

    let records: Vec<Map<String, Value>> = fs::read_to_string(&metrics)
        .unwrap()
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l)
                .unwrap()
                .as_object()
                .unwrap()
                .clone()
        })
        .collect();
    let get = |r: &Map<String, Value>, k: &str| r[k].as_f64().unwrap();
    let ln2 = std::f64::consts::LN_2;
    let held_out: Vec<&Map<String, Value>> =
        records.iter().filter(|r| r["split"] == "eval").collect();
    let [end] = held_out[..] else {
        panic!("expected one held-out record, after step {STEPS}: {held_out:?}");
    };
    eprintln!("held-out after step {STEPS}: {end:?}");
    for key in [
        "pair_accuracy",
        "pair_accuracy_stderr",
        "rewards/margins_stderr",
        "rewards/accuracies_stderr",
    ] {
        assert!(end.contains_key(key), "{key}");
    }
    assert_eq!(get(end, "num_pairs"), HELD_OUT as f64);
    let (accuracy, margin) = (get(end, "rewards/accuracies"), get(end, "rewards/margins"));
    let (accuracy_se, margin_se) = (
        get(end, "rewards/accuracies_stderr"),
        get(end, "rewards/margins_stderr"),
    );
    assert!(
        accuracy - 2.0 * accuracy_se > 0.5 && margin - 2.0 * margin_se > 0.0,
        "held out after {STEPS} steps: reward accuracy {accuracy} ± {accuracy_se}, margin {margin} ± {margin_se}"
    );
    assert!(get(end, "loss") < ln2, "held-out loss {}", get(end, "loss"));

    let mut chat = Command::new(env!("CARGO_BIN_EXE_dpo"))
        .args([
            "chat",
            "--model",
            s(&out),
            "--temperature",
            "0",
            "--max-new-tokens",
            "24",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    chat.stdin
        .take()
        .unwrap()
        .write_all(b"What is the capital of France?\n")
        .unwrap();
    let output = chat.wait_with_output().unwrap();
    let reply = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success() && !reply.trim().is_empty(),
        "dpo chat on the adapter: {:?}\n{reply}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
}
