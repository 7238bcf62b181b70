//! `dpo train --loss kto` and `dpo eval --loss kto` end to end, on the tiny
//! byte-level models of tests/golden/text and a small unpaired file written
//! here: training lowers the loss and logs TRL's metric names, evaluation
//! prints one JSON object, and bad input is one clear line.

use crate::common;

use std::path::{Path, PathBuf};

use crate::common::{assert_resumes_bitwise, dpo, golden_dir};
use serde_json::Value;

/// A small unpaired file: the capitalised copy of a word is desirable, the
/// lowercase copy undesirable (the task of `dpo demo`).
fn unpaired_file(dir: &Path) -> PathBuf {
    let mut lines = String::new();
    for word in ["cab", "dog", "sun", "map", "hat", "pen", "cup", "fig"] {
        let upper = word.to_uppercase();
        lines += &format!(
            "{{\"prompt\": \"{word}>\", \"completion\": \"{upper}.\", \"label\": true}}\n"
        );
        lines += &format!(
            "{{\"prompt\": \"{word}>\", \"completion\": \"{word}.\", \"label\": false}}\n"
        );
    }
    let path = dir.join("unpaired.jsonl");
    std::fs::write(&path, lines).unwrap();
    path
}

fn text_model(name: &str) -> String {
    golden_dir().join("text").join(name).display().to_string()
}

fn kto_train(data: &Path, out: &Path, extra: &[&str]) -> common::Run {
    let mut args = vec![
        "train".to_string(),
        "--loss".into(),
        "kto".into(),
        "--policy".into(),
        text_model("ref"),
        "--ref".into(),
        text_model("ref"),
        "--data".into(),
        data.display().to_string(),
        "--out".into(),
        out.display().to_string(),
        "--no-progress".into(),
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
    dpo(&args)
}

#[test]
fn kto_training_lowers_the_loss_and_logs_trl_metrics() {
    let tmp = tempfile::tempdir().unwrap();
    let data = unpaired_file(tmp.path());
    let (out, metrics) = (tmp.path().join("out"), tmp.path().join("metrics.jsonl"));
    let run = kto_train(
        &data,
        &out,
        &[
            "--steps",
            "30",
            "--batch-size",
            "4",
            "--lr",
            "1e-2",
            "--desirable-weight",
            "1.2",
            "--metrics",
            metrics.to_str().unwrap(),
        ],
    );
    run.assert_ok();
    let summary = run.json();
    let (first, last) = (
        summary["first_loss"].as_f64().unwrap(),
        summary["final_loss"].as_f64().unwrap(),
    );
    // The policy starts as the reference: every row's loss is w (1 - sigmoid(0)) = w / 2.
    assert!((0.5..=0.6).contains(&first), "{first}");
    assert!(
        last < 0.5 * first,
        "the loss did not fall: {first} -> {last}"
    );
    assert_eq!(summary["train_rows"].as_u64(), Some(16));

    let text = std::fs::read_to_string(&metrics).unwrap();
    let records: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(records.len(), 30);
    for record in &records {
        for key in [
            "loss",
            "kl",
            "num_desirable",
            "num_undesirable",
            "grad_norm",
        ] {
            assert!(record.get(key).is_some(), "no {key}: {record}");
        }
        let d = record["num_desirable"].as_u64().unwrap();
        let u = record["num_undesirable"].as_u64().unwrap();
        assert_eq!(d + u, 4);
        assert_eq!(record.get("rewards/chosen").is_some(), d > 0, "{record}");
        assert_eq!(record.get("rewards/rejected").is_some(), u > 0, "{record}");
        assert_eq!(
            record.get("rewards/margins").is_some(),
            d > 0 && u > 0,
            "{record}"
        );
    }
    let state: Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("trainer_state.json")).unwrap())
            .unwrap();
    assert_eq!(state["stage"], "kto");

    // The trained policy, evaluated: desirable rewards up, undesirable down.
    let eval = dpo(&[
        "eval",
        "--loss",
        "kto",
        "--policy",
        out.to_str().unwrap(),
        "--ref",
        &text_model("ref"),
        "--data",
        data.to_str().unwrap(),
    ]);
    let metrics = eval.assert_ok().json();
    assert!(
        metrics["rewards/margins"].as_f64().unwrap() > 0.0,
        "{metrics:?}"
    );
    assert!(metrics["loss"].as_f64().unwrap() < first);
}

#[test]
fn kto_eval_prints_one_json_object() {
    let tmp = tempfile::tempdir().unwrap();
    let data = unpaired_file(tmp.path());
    let (policy, reference) = (text_model("policy"), text_model("ref"));
    let args = [
        "--threads",
        "1",
        "eval",
        "--policy",
        &policy,
        "--ref",
        &reference,
        "--data",
        data.to_str().unwrap(),
        "--loss=kto",
        "--batch-size",
        "4",
    ];
    let run = dpo(&args);
    let metrics = run.assert_ok().json();
    for key in [
        "loss",
        "rewards/chosen",
        "rewards/rejected",
        "rewards/margins",
        "logps/chosen",
        "logps/rejected",
        "kl",
        "num_desirable",
        "num_undesirable",
        "truncated_rows",
    ] {
        assert!(metrics.contains_key(key), "no {key}: {metrics:?}");
    }
    assert_eq!(metrics["num_desirable"].as_u64(), Some(8));
    assert!(metrics["kl"].as_f64().unwrap() >= 0.0);

    // --precision f32: the same metrics up to f32 rounding.
    let f32_run = dpo(&[&args[..], &["--precision", "f32"]].concat());
    let in_f32 = f32_run.assert_ok().json();
    for key in ["loss", "rewards/margins", "logps/chosen", "kl"] {
        let (a, b) = (
            metrics[key].as_f64().unwrap(),
            in_f32[key].as_f64().unwrap(),
        );
        assert!(
            (a - b).abs() <= 1e-5 * (1.0 + a.abs()),
            "{key}: f64 {a}, f32 {b}"
        );
        assert_ne!(a, b, "{key}: --precision f32 gave the f64 value");
    }
}

#[test]
fn kto_bad_input_is_one_clear_line() {
    let tmp = tempfile::tempdir().unwrap();
    let data = unpaired_file(tmp.path());
    let bad = tmp.path().join("bad.jsonl");
    let good = r#"{"prompt": "a>", "completion": "A.", "label": true}"#;
    std::fs::write(
        &bad,
        format!(
            "{good}\n{good}\n{{\"prompt\": \"b>\", \"completion\": \"B.\", \"label\": \"yes\"}}\n"
        ),
    )
    .unwrap();
    let out = tmp.path().join("out");
    let run = kto_train(&bad, &out, &["--steps", "1"]);
    run.assert_one_line_error();
    assert!(
        run.stderr
            .contains("bad.jsonl:3: label must be true or false"),
        "{run}"
    );
    assert!(!out.exists());

    let run = kto_train(&data, &out, &["--steps", "1", "--batch-size", "1"]);
    run.assert_one_line_error();
    assert!(run.stderr.contains("--batch-size of at least 2"), "{run}");
    let run = kto_train(&data, &out, &["--steps", "1", "--undesirable-weight=-1"]);
    run.assert_one_line_error();
    assert!(!out.exists());

    // Preference rows are not unpaired rows.
    let prefs = golden_dir().join("text/prefs.jsonl");
    let run = kto_train(&prefs, &out, &["--steps", "1"]);
    run.assert_one_line_error();
    assert!(
        run.stderr.contains(":1: missing field 'completion'"),
        "{run}"
    );
}

#[test]
fn help_names_the_kto_flags() {
    let run = dpo(&["train", "--loss", "kto", "--help"]);
    run.assert_ok();
    for flag in [
        "--desirable-weight",
        "--undesirable-weight",
        "--beta",
        "--steps",
    ] {
        assert!(run.stdout.contains(flag), "{flag}:\n{run}");
    }
    let run = dpo(&["eval", "--loss", "kto", "--help"]);
    assert!(run.assert_ok().stdout.contains("--desirable-weight"));
    // One parser: `dpo train --help` lists KTO's flags beside the pair losses'.
    let run = dpo(&["train", "--help"]);
    let help = &run.assert_ok().stdout;
    for flag in ["--loss kto", "--desirable-weight", "--label-smoothing"] {
        assert!(
            help.contains(flag),
            "{flag}:
{run}"
        );
    }
}

#[test]
fn kto_resume_continues_the_run_bitwise_and_refuses_other_stages() {
    let tmp = tempfile::tempdir().unwrap();
    let data = unpaired_file(tmp.path());
    let flags = [
        "--batch-size",
        "4",
        "--lr",
        "1e-2",
        "--eval-fraction",
        "0.25",
        "--eval-every",
        "2",
        "--threads",
        "1",
    ];
    let runs = assert_resumes_bitwise(
        tmp.path(),
        &["model.safetensors"],
        "2",
        "4",
        |out, steps, resume| {
            let mut args = vec!["--steps", steps];
            args.extend(flags);
            if resume {
                args.push("--resume");
            }
            kto_train(&data, out, &args)
        },
    );
    let summary = runs.straight.json();
    assert_eq!(summary["train_rows"].as_u64(), Some(12));
    let eval = summary["eval"].as_object().expect("held-out metrics");
    assert!(
        eval.contains_key("kl") && eval.contains_key("num_desirable"),
        "{eval:?}"
    );

    // A DPO run is not continued as KTO.
    let dpo_out = tmp.path().join("dpo");
    dpo(&[
        "train",
        "--policy",
        "text/ref",
        "--ref",
        "text/ref",
        "--data",
        "text/prefs.jsonl",
        "--out",
        dpo_out.to_str().unwrap(),
        "--steps",
        "1",
    ])
    .assert_ok();
    let run = kto_train(&data, &dpo_out, &["--steps", "2", "--resume"]);
    run.assert_one_line_error();
    assert!(run.stderr.contains("is a dpo run, not kto"), "{run}");
}

/// One parser for every loss: a flag of the other kind of loss is refused
/// with one line, and nothing is written.
#[test]
fn flags_of_the_other_kind_of_loss_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let data = unpaired_file(tmp.path());
    let out = tmp.path().join("out");
    for (extra, message) in [
        (
            vec!["--label-smoothing", "0.1"],
            "--label-smoothing does not apply to --loss kto",
        ),
        (
            vec!["--prefix-sharing", "off"],
            "--prefix-sharing does not apply to --loss kto",
        ),
        (
            vec!["--loss-weights", "1"],
            "--loss-weights does not apply to --loss kto",
        ),
        (vec!["--loss", "kto,sigmoid"], "--loss kto is trained alone"),
    ] {
        let run = kto_train(&data, &out, &extra);
        run.assert_one_line_error();
        assert!(run.stderr.contains(message), "{extra:?}: {run}");
        assert!(!out.exists());
    }
    let pairs = dpo(&[
        "train",
        "--policy",
        &text_model("ref"),
        "--ref",
        &text_model("ref"),
        "--data",
        "text/prefs.jsonl",
        "--out",
        out.to_str().unwrap(),
        "--desirable-weight",
        "2",
    ]);
    pairs.assert_one_line_error();
    assert!(
        pairs
            .stderr
            .contains("--desirable-weight applies to --loss kto only"),
        "{pairs}"
    );
    assert!(!out.exists());
    let no_ref = dpo(&[
        "eval",
        "--loss",
        "kto",
        "--policy",
        &text_model("ref"),
        "--data",
        data.to_str().unwrap(),
    ]);
    no_ref.assert_one_line_error();
    assert!(
        no_ref.stderr.contains("needs a frozen reference"),
        "{no_ref}"
    );
}
