//! LoRA runs from the command line (`--use-peft`): checkpoints in PEFT's
//! files that every command reads back, a bitwise `--resume`, the reference
//! from the base with no second model, `convert --merge-lora`, SFT and KTO,
//! and the refusals; on the real SmolLM2, one DPO step against TRL 1.16 +
//! PEFT (`tests/golden/smollm2/trl_lora`).

use crate::common;

use std::fs;
use std::path::{Path, PathBuf};

use crate::common::{dpo, golden_dir};
use serde_json::Value;
use transformer::Model;

fn s(path: &Path) -> &str {
    path.to_str().unwrap()
}

/// The tiny Llama of the PEFT goldens (vocab 128) and the golden ids/ pairs (ids < 40).
fn llama_base() -> PathBuf {
    golden_dir().join("lora/llama/base")
}

fn ids_data() -> PathBuf {
    golden_dir().join("ids/prefs.jsonl")
}

/// `dpo train --use-peft` on the tiny Llama: 4 pairs a step, AdamW, dropout on.
fn train_lora(out: &Path, steps: &str, extra: &[&str]) -> common::Run {
    let base = llama_base();
    let data = ids_data();
    let mut args = vec![
        "train",
        "--policy",
        s(&base),
        "--data",
        s(&data),
        "--out",
        s(out),
        "--use-peft",
        "--lora-r",
        "4",
        "--lora-targets",
        "all-linear",
        "--lora-dropout",
        "0.1",
        "--steps",
        steps,
        "--batch-size",
        "4",
        "--lr",
        "0.01",
        "--no-progress",
    ];
    args.extend_from_slice(extra);
    dpo(&args)
}

#[test]
fn lora_checkpoints_are_peft_adapters_that_every_command_reads() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("run");
    let summary = train_lora(&out, "3", &[]).assert_ok().json();
    assert!(summary["final_loss"].as_f64().unwrap() < summary["first_loss"].as_f64().unwrap());
    // PEFT's files, the optimizer state of the adapters only, no model weights
    for file in [
        "adapter_config.json",
        "adapter_model.safetensors",
        "optimizer.safetensors",
        "trainer_state.json",
    ] {
        assert!(out.join(file).is_file(), "{file} missing");
    }
    assert!(!out.join("model.safetensors").exists());
    assert!(!out.join("config.json").exists());
    let config: Value =
        serde_json::from_str(&fs::read_to_string(out.join("adapter_config.json")).unwrap())
            .unwrap();
    assert_eq!(config["peft_type"], "LORA");
    assert_eq!(config["r"], 4);
    assert_eq!(config["target_modules"], "all-linear");
    let base_path = fs::canonicalize(llama_base()).unwrap();
    assert_eq!(config["base_model_name_or_path"], s(&base_path));

    // eval with no --ref: the reference is the base (adapters off); with
    // --ref the base, the same numbers
    let data = ids_data();
    let eval = |extra: &[&str]| {
        let mut args = vec!["eval", "--policy", s(&out), "--data", s(&data)];
        args.extend_from_slice(extra);
        dpo(&args).assert_ok().json()
    };
    let adapters_off = eval(&[]);
    let explicit = eval(&["--ref", s(&base_path)]);
    assert_eq!(adapters_off["loss"], explicit["loss"]);
    assert_ne!(adapters_off["rewards/margins"].as_f64().unwrap(), 0.0);

    // generate reads it; convert --merge-lora writes the merged model, whose
    // logits are the adapted model's
    let run = dpo(&[
        "generate",
        "--model",
        s(&out),
        "--prompt-ids",
        "1,2,3",
        "--max-new-tokens",
        "4",
    ]);
    run.assert_ok();
    let merged = tmp.path().join("merged");
    let refused = dpo(&["convert", s(&out), s(&merged), "--to", "hf"]);
    refused.assert_one_line_error();
    assert!(refused.stderr.contains("--merge-lora"), "{refused}");
    dpo(&["convert", s(&out), s(&merged), "--to", "hf", "--merge-lora"]).assert_ok();
    let adapted = Model::<f32>::load(&out).unwrap();
    assert!(adapted.lora().is_some());
    let merged = Model::<f32>::load(&merged).unwrap();
    let ids = [1usize, 5, 9, 2, 30];
    let logits = |model: &Model<f32>| {
        let tape = autograd::Tape::<f32>::no_grad();
        let params = model.bind(&tape);
        let y = model.forward(&tape, &params, &ids, 1, ids.len());
        y.value().iter().copied().collect::<Vec<f32>>()
    };
    let worst = logits(&adapted)
        .iter()
        .zip(logits(&merged))
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max);
    assert!(worst < 1e-4, "merged logits off by {worst}");
}

/// 4 steps in one run, and 2 + 2 with `--resume`, give the same adapter bit
/// for bit (dropout masks included).
#[test]
fn lora_resume_is_bitwise() {
    let tmp = tempfile::tempdir().unwrap();
    let (whole, split) = (tmp.path().join("whole"), tmp.path().join("split"));
    train_lora(&whole, "4", &[]).assert_ok();
    train_lora(&split, "2", &[]).assert_ok();
    train_lora(&split, "4", &["--resume"]).assert_ok();
    for file in ["adapter_model.safetensors", "optimizer.safetensors"] {
        assert_eq!(
            fs::read(whole.join(file)).unwrap(),
            fs::read(split.join(file)).unwrap(),
            "{file}"
        );
    }
    // resuming it without --use-peft is refused, saying why
    let base = llama_base();
    let data = ids_data();
    let run = dpo(&[
        "train",
        "--policy",
        s(&base),
        "--data",
        s(&data),
        "--out",
        s(&split),
        "--reference-free",
        "--steps",
        "6",
        "--resume",
    ]);
    run.assert_one_line_error();
    assert!(run.stderr.contains("--use-peft"), "{run}");
}

/// `--base-precision bf16`: the base's matrices kept as bf16. The run
/// resumes bit for bit, its adapter files are those of an f32-base run (the
/// same keys and shapes), and its metrics follow the f32 base's within
/// bf16's rounding; without --use-peft the flag is refused.
#[test]
fn lora_with_a_bf16_base() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = |name: &str| tmp.path().join(name);
    let metrics = |name: &str| -> Vec<Value> {
        fs::read_to_string(dir(&format!("{name}.jsonl")))
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    };
    let bf16 = ["--base-precision", "bf16", "--optimizer", "sgd"];
    let with_metrics = |name: &str, steps: &str, extra: &[&str]| {
        let path = dir(&format!("{name}.jsonl"));
        let mut args = vec!["--metrics", s(&path)];
        args.extend_from_slice(extra);
        train_lora(&dir(name), steps, &args).assert_ok();
    };
    // SGD: each update is proportional to its gradient, so the two runs stay close.
    with_metrics("f32", "4", &["--optimizer", "sgd"]);
    with_metrics("bf16", "4", &bf16);
    train_lora(&dir("split"), "2", &bf16).assert_ok();
    train_lora(&dir("split"), "4", &[&bf16[..], &["--resume"]].concat()).assert_ok();
    let file = "adapter_model.safetensors";
    let same =
        fs::read(dir("bf16").join(file)).unwrap() == fs::read(dir("split").join(file)).unwrap();
    assert!(same, "a resumed bf16-base run is not bitwise the whole run");
    let (full, half) = (
        tensors(&dir("f32").join("adapter_model.safetensors")),
        tensors(&dir("bf16").join("adapter_model.safetensors")),
    );
    assert_eq!(
        full.iter().map(|(k, v)| (k, v.len())).collect::<Vec<_>>(),
        half.iter().map(|(k, v)| (k, v.len())).collect::<Vec<_>>()
    );
    assert_ne!(full, half, "the bf16 base computes in bf16");
    for (a, b) in metrics("f32").iter().zip(&metrics("bf16")) {
        // (bf16 keeps 8 significant bits: relative 4e-3 a value; margins near 0 are differences)
        for (key, abs, rel) in [
            ("loss", 0.0, 1e-2),
            ("grad_norm", 0.0, 3e-2),
            ("rewards/margins", 1e-2, 3e-2),
        ] {
            let (a, b) = (a[key].as_f64().unwrap(), b[key].as_f64().unwrap());
            assert!(
                (a - b).abs() <= abs + rel * a.abs(),
                "{key}: f32 {a}, bf16 {b}"
            );
        }
    }
    // Only a LoRA run has a frozen base to store.
    let base = llama_base();
    let data = ids_data();
    let run = dpo(&[
        "train",
        "--policy",
        s(&base),
        "--data",
        s(&data),
        "--out",
        s(&dir("full")),
        "--reference-free",
        "--base-precision",
        "bf16",
    ]);
    assert_ne!(run.code, Some(0));
    assert!(run.stderr.contains("--use-peft"), "{run}");
}

/// SFT and KTO train adapters too; KTO's reference is the base.
#[test]
fn lora_sft_and_kto() {
    let tmp = tempfile::tempdir().unwrap();
    let base = llama_base();
    let data = ids_data();
    let sft_out = tmp.path().join("sft");
    let sft = dpo(&[
        "sft",
        "--init",
        s(&base),
        "--data",
        s(&data),
        "--out",
        s(&sft_out),
        "--use-peft",
        "--steps",
        "3",
        "--batch-size",
        "4",
        "--lr",
        "0.01",
        "--no-progress",
    ])
    .assert_ok()
    .json();
    assert!(sft["final_loss"].as_f64().unwrap() < sft["first_loss"].as_f64().unwrap());
    assert!(sft_out.join("adapter_model.safetensors").is_file());

    // unpaired rows from the pairs: chosen desirable, rejected not
    let unpaired = tmp.path().join("kto.jsonl");
    let mut lines = String::new();
    for line in fs::read_to_string(&data).unwrap().lines() {
        let row: Value = serde_json::from_str(line).unwrap();
        for (side, label) in [("chosen_ids", true), ("rejected_ids", false)] {
            let prompt = match &row["prompt_ids"] {
                Value::Null => serde_json::json!([]),
                ids => ids.clone(),
            };
            let kto = serde_json::json!({"prompt_ids": prompt, "completion_ids": row[side], "label": label});
            lines.push_str(&format!("{kto}\n"));
        }
    }
    fs::write(&unpaired, lines).unwrap();
    let kto_out = tmp.path().join("kto");
    dpo(&[
        "train",
        "--loss",
        "kto",
        "--policy",
        s(&base),
        "--data",
        s(&unpaired),
        "--out",
        s(&kto_out),
        "--use-peft",
        "--steps",
        "2",
        "--batch-size",
        "4",
        "--no-progress",
    ])
    .assert_ok();
    assert!(kto_out.join("adapter_model.safetensors").is_file());
}

#[test]
fn lora_flags_are_refused_where_they_mean_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let base = llama_base();
    let data = ids_data();
    let train = |extra: &[&str]| {
        let mut args = vec![
            "train",
            "--policy",
            s(&base),
            "--data",
            s(&data),
            "--out",
            s(&out),
            "--steps",
            "1",
        ];
        args.extend_from_slice(extra);
        dpo(&args)
    };
    // a LoRA flag without --use-peft
    let run = train(&["--reference-free", "--lora-r", "8"]);
    assert_ne!(run.code, Some(0));
    assert!(run.stderr.contains("--use-peft"), "{run}");
    // no layer of that name
    let run = train(&["--use-peft", "--lora-targets", "c_attn"]);
    run.assert_one_line_error();
    assert!(
        run.stderr.contains("q_proj") && run.stderr.contains("c_attn"),
        "{run}"
    );
    // rank 0
    let run = train(&["--use-peft", "--lora-r", "0"]);
    run.assert_one_line_error();
    // a fresh model
    let sft = dpo(&[
        "sft",
        "--config",
        "llama-tiny",
        "--data",
        s(&data),
        "--out",
        s(&out),
        "--use-peft",
    ]);
    sft.assert_one_line_error();
    assert!(sft.stderr.contains("pretrained"), "{sft}");
    assert!(!out.exists(), "a refused run wrote {}", out.display());
}

// ---------------------------------------------------------------- SmolLM2 against TRL

fn read_json(path: &Path) -> Value {
    serde_json::from_str(&fs::read_to_string(path).unwrap()).unwrap()
}

fn tensors(path: &Path) -> Vec<(String, Vec<f32>)> {
    let bytes = fs::read(path).unwrap();
    let file = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut names: Vec<String> = file.names().into_iter().cloned().collect();
    names.sort();
    names
        .into_iter()
        .map(|n| {
            let view = file.tensor(&n).unwrap();
            let data = view
                .data()
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect();
            (n, data)
        })
        .collect()
}

/// One DPO step of SmolLM2 with a LoRA adapter (r 8 on q/v, B nonzero),
/// reference the base, SGD at lr 0.1 with no clipping, 4 HH-RLHF pairs in
/// one batch: the step's loss and metrics equal TRL's logged ones (rtol
/// 1e-4), and the adapter's update equals TRL's (relative error 1e-3).
#[test]
#[ignore = "needs the real SmolLM2 GGUF (DPO_SMOLLM2_GGUF): run by .ci/run"]
fn smollm2_lora_dpo_step_equals_trl_with_peft() {
    let gguf = transformer::gguf::smollm2_for_tests();
    let golden = golden_dir().join("smollm2/trl_lora");
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("run");
    let metrics = tmp.path().join("metrics.jsonl");
    let (pairs, adapter) = (golden.join("pairs.jsonl"), golden.join("adapter"));
    dpo(&[
        "train",
        "--policy",
        s(&gguf),
        "--ref",
        s(&gguf),
        "--use-peft",
        "--init-adapter",
        s(&adapter),
        "--data",
        s(&pairs),
        "--out",
        s(&out),
        "--steps",
        "1",
        "--batch-size",
        "4",
        "--optimizer",
        "sgd",
        "--lr",
        "0.1",
        "--max-grad-norm",
        "0",
        "--beta",
        "0.1",
        "--metrics",
        s(&metrics),
        "--no-progress",
    ])
    .assert_ok();
    let expected = read_json(&golden.join("metrics.json"));
    let record: Value = serde_json::from_str(
        fs::read_to_string(&metrics)
            .unwrap()
            .lines()
            .next()
            .unwrap(),
    )
    .unwrap();
    for (key, e) in expected["train_step_1_log"].as_object().unwrap() {
        if key == "learning_rate" {
            continue;
        }
        let (a, e) = (record[key].as_f64().unwrap(), e.as_f64().unwrap());
        assert!(
            (a - e).abs() <= 1e-5 + 1e-4 * e.abs(),
            "{key}: {a} vs TRL {e}"
        );
    }
    let before = tensors(&adapter.join("adapter_model.safetensors"));
    let ours = tensors(&out.join("adapter_model.safetensors"));
    let theirs = tensors(&golden.join("adapter_after_step/adapter_model.safetensors"));
    assert_eq!(ours.len(), theirs.len());
    for (((name, b), (_, o)), (_, t)) in before.iter().zip(&ours).zip(&theirs) {
        let (mut diff, mut norm) = (0f64, 0f64);
        for ((b, o), t) in b.iter().zip(o).zip(t) {
            let (ours, theirs) = ((o - b) as f64, (t - b) as f64);
            diff += (ours - theirs).powi(2);
            norm += theirs.powi(2);
        }
        let err = (diff / norm.max(1e-30)).sqrt();
        assert!(err < 1e-3, "{name}: update off by {err:e}");
    }
}
