//! End-to-end tests of the `dpo` command line beyond the golden numbers:
//! help texts, the global `--threads` flag, the shape of the output,
//! reproducible generation, clear errors for broken checkpoints, `--resume`,
//! a diverging run, and reference-free DPO. The inputs are the tiny models
//! and data of tests/golden/ (see tests/cli_golden.rs for the numbers).

use crate::common;

use std::path::Path;
use std::sync::Arc;

use crate::common::{
    assert_resumes_bitwise, copy_checkpoint, dpo, dpo_in, eval_ids_args, golden_dir, load_weights,
    metric_close, read, set_flag, train_ids, train_ids_args, IDS_NO_REF,
};
use serde_json::Value;
use transformer::Model;

#[test]
fn help_of_every_subcommand() {
    for sub in ["", "sft", "train", "eval", "generate", "chat", "demo"] {
        let args: Vec<&str> = [sub, "--help"]
            .into_iter()
            .filter(|a| !a.is_empty())
            .collect();
        let run = dpo(&args);
        run.assert_ok();
        assert!(
            run.stdout.contains("Usage:"),
            "dpo {sub} --help has no usage:\n{run}"
        );
    }
    let top = dpo(&["--help"]);
    for sub in ["sft", "train", "eval", "generate", "chat", "demo"] {
        assert!(top.stdout.contains(sub), "dpo --help does not list {sub}");
    }
}

#[test]
fn unknown_flag_is_a_usage_error_not_a_panic() {
    let run = dpo(&["eval", "--no-such-flag"]);
    assert_eq!(run.code, Some(2), "{run}");
    assert!(!run.stderr.contains("panicked at"), "{run}");
}

#[test]
fn threads_is_accepted_before_and_after_the_subcommand() {
    let before = dpo(&[&["--threads", "1"][..], &eval_ids_args()[..]].concat());
    let after = dpo(&[&eval_ids_args()[..], &["--threads", "1"]].concat());
    let two = dpo(&[&["--threads", "2"][..], &eval_ids_args()[..]].concat());
    before.assert_ok();
    after.assert_ok();
    two.assert_ok();
    // Same numbers, to the bit, whatever the thread count.
    assert_eq!(before.stdout, after.stdout);
    assert_eq!(before.stdout, two.stdout);

    // Training too: the written checkpoint does not depend on the threads.
    let tmp = tempfile::tempdir().unwrap();
    let (one, many) = (tmp.path().join("one"), tmp.path().join("many"));
    let flags = ["--steps", "2", "--batch-size", "4", "--lr", "1e-2"];
    let run1 = dpo(&[&["--threads", "1"][..], &train_ids_args(&one), &flags].concat());
    run1.assert_ok();
    train_ids(&many, &[&flags[..], &["--threads", "2"]].concat()).assert_ok();
    assert_eq!(
        read(&one.join("model.safetensors")),
        read(&many.join("model.safetensors")),
        "1 and 2 threads train different weights"
    );
}

#[test]
fn eval_prints_one_json_object() {
    let run = dpo(&eval_ids_args());
    run.assert_ok();
    let lines: Vec<&str> = run
        .stdout
        .lines()
        .filter(|l| !l.trim().is_empty())
        .collect();
    assert_eq!(lines.len(), 1, "stdout is not one line:\n{run}");
    let metrics = run.json();
    for key in [
        "loss",
        "rewards/chosen",
        "rewards/rejected",
        "rewards/accuracies",
        "rewards/margins",
        "logps/chosen",
        "logps/rejected",
        "num_pairs",
    ] {
        let v = metrics.get(key).and_then(Value::as_f64);
        assert!(v.is_some_and(f64::is_finite), "{key}: {v:?}");
    }
    assert_eq!(metrics["num_pairs"].as_u64(), Some(10));
}

/// `dpo generate` on the text/ policy; returns the parsed stdout.
fn generate(extra: &[&str]) -> serde_json::Map<String, Value> {
    let run = dpo(&[
        &["generate", "--model", "text/policy", "--prompt", "Hi"][..],
        extra,
    ]
    .concat());
    run.assert_ok();
    run.json()
}

#[test]
fn generate_is_deterministic_greedy_and_reproducible_with_a_seed() {
    let greedy = generate(&["--temperature", "0", "--max-new-tokens", "8"]);
    assert_eq!(greedy["new_tokens"].as_u64(), Some(8));
    assert!(greedy["text"].as_str().unwrap().starts_with("Hi"));
    // Greedy decoding ignores the seed and the thread count.
    assert_eq!(
        greedy,
        generate(&["--temperature", "0", "--max-new-tokens", "8", "--seed", "9"])
    );
    assert_eq!(
        greedy,
        generate(&[
            "--temperature",
            "0",
            "--max-new-tokens",
            "8",
            "--threads",
            "1"
        ])
    );

    let sample = |seed: &str| generate(&["--max-new-tokens", "8", "--seed", seed]);
    assert_eq!(
        sample("7"),
        sample("7"),
        "the same seed samples differently"
    );
    let distinct: std::collections::HashSet<String> = (0..6)
        .map(|s| sample(&s.to_string())["completion"].to_string())
        .collect();
    assert!(distinct.len() > 1, "six seeds sample the same text");
    let top_k = generate(&["--max-new-tokens", "8", "--seed", "3", "--top-k", "5"]);
    assert_eq!(
        top_k,
        generate(&["--max-new-tokens", "8", "--seed", "3", "--top-k", "5"])
    );
}

#[test]
fn generate_runs_past_the_block() {
    // 2 prompt tokens + 40 new ones > block_size 32: the context slides.
    let long = generate(&["--temperature", "0", "--max-new-tokens", "40"]);
    assert_eq!(long["new_tokens"].as_u64(), Some(40));
}

#[test]
fn missing_checkpoint_is_one_clear_error() {
    let tmp = tempfile::tempdir().unwrap();
    let missing = tmp.path().join("no-such-checkpoint");
    let missing = missing.to_str().unwrap();
    let run = dpo(&set_flag(&eval_ids_args(), "--policy", missing));
    run.assert_one_line_error();
    assert!(
        run.stderr.contains(missing),
        "the path is not named:\n{run}"
    );
    assert_eq!(
        run.stderr.matches("os error").count(),
        1,
        "the OS error is said more than once:\n{run}"
    );
    dpo(&["generate", "--model", missing, "--prompt", "Hi"]).assert_one_line_error();
    let run = dpo(&set_flag(&eval_ids_args(), "--data", missing));
    run.assert_one_line_error();
    assert_eq!(
        run.stderr.matches("os error").count(),
        1,
        "the OS error is said more than once:\n{run}"
    );

    let out = tmp.path().join("out");
    let run = dpo(&set_flag(&train_ids_args(&out), "--policy", missing));
    run.assert_one_line_error();
    assert!(!out.exists(), "--out written for a failed run");
}

#[test]
fn corrupt_safetensors_is_one_clear_error() {
    let tmp = tempfile::tempdir().unwrap();
    let bad = tmp.path().join("bad");
    copy_checkpoint(&golden_dir().join("text/policy"), &bad);
    let weights = read(&bad.join("model.safetensors"));
    let bad_str = bad.to_str().unwrap();
    let ref_dir = golden_dir().join("text/ref");
    let data = golden_dir().join("text/prefs.jsonl");
    for broken in [
        b"not a safetensors file".to_vec(),
        weights[..100].to_vec(),                 // header cut
        weights[..weights.len() - 100].to_vec(), // data cut
    ] {
        std::fs::write(bad.join("model.safetensors"), &broken).unwrap();
        let run = dpo_in(
            tmp.path(),
            &[
                "eval",
                "--policy",
                bad_str,
                "--ref",
                ref_dir.to_str().unwrap(),
                "--data",
                data.to_str().unwrap(),
            ],
        );
        run.assert_one_line_error();
        assert!(
            run.stderr.contains("model.safetensors"),
            "the file is not named:\n{run}"
        );
        dpo(&["generate", "--model", bad_str, "--prompt", "Hi"]).assert_one_line_error();
    }
}

#[test]
fn resume_continues_the_run_bitwise() {
    // The data order is seeded by the step, and AdamW's moments and step are
    // saved: 1 step + resume to 2 must equal 2 straight steps, to the bit.
    let tmp = tempfile::tempdir().unwrap();
    let runs = assert_resumes_bitwise(
        tmp.path(),
        &["model.safetensors", "optimizer.safetensors"],
        "1",
        "2",
        |out, steps, resume| {
            let mut flags = vec!["--steps", steps, "--batch-size", "3", "--lr", "1e-2"];
            flags.extend([
                "--optimizer",
                "adamw",
                "--weight-decay",
                "0.1",
                "--seed",
                "5",
            ]);
            if resume {
                flags.push("--resume");
            }
            train_ids(out, &flags)
        },
    );
    assert_eq!(runs.straight.json()["steps"].as_u64(), Some(2));
    let run = runs.resumed;
    assert_eq!(run.json()["steps"].as_u64(), Some(1), "{run}");
}

#[test]
fn diverging_run_stops_with_a_clear_error() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let run = train_ids(
        &out,
        &[
            "--steps",
            "8",
            "--lr",
            "1e6",
            "--optimizer",
            "sgd",
            "--max-grad-norm",
            "0",
        ],
    );
    assert!(matches!(run.code, Some(c) if c != 0), "{run}");
    assert!(!run.stderr.contains("panicked at"), "{run}");
    let error = run
        .stderr
        .lines()
        .find(|l| l.contains("loss is"))
        .unwrap_or_else(|| panic!("no loss error:\n{run}"));
    assert!(
        error.contains("NaN") || error.contains("inf"),
        "the error does not say the loss is not finite: {error}"
    );
}

#[test]
fn non_finite_weights_stop_training_at_the_first_step() {
    // A checkpoint with an infinite position embedding: every sequence's
    // first position is inf, so LayerNorm gives NaN and the first loss is NaN.
    let tmp = tempfile::tempdir().unwrap();
    let mut model = Model::<f32>::load(&golden_dir().join("ids/policy")).unwrap();
    Arc::make_mut(model.params_mut().wpe.as_mut().unwrap())
        .iter_mut()
        .take(3)
        .for_each(|w| *w = f32::INFINITY);
    let poisoned = tmp.path().join("poisoned");
    model.save(&poisoned).unwrap();
    let out = tmp.path().join("out");
    let poisoned_str = poisoned.to_str().unwrap();
    let train = set_flag(&train_ids_args(&out), "--policy", poisoned_str);
    let run = dpo(&[&train[..], &["--steps", "3"]].concat());
    assert!(matches!(run.code, Some(c) if c != 0), "{run}");
    assert!(!run.stderr.contains("panicked at"), "{run}");
    assert!(
        run.stderr.contains("step 1:") && run.stderr.contains("NaN"),
        "{run}"
    );
    assert!(!out.exists(), "a checkpoint was written for a NaN run");

    // Evaluating the same poisoned policy is an error too, not `"loss": null`.
    let run = dpo(&set_flag(&eval_ids_args(), "--policy", poisoned_str));
    assert!(matches!(run.code, Some(c) if c != 0), "{run}");
    assert!(run.stderr.contains("not finite"), "{run}");
    assert!(!run.stdout.contains("null"), "{run}");
}

#[test]
fn zero_steps_and_resuming_a_finished_run_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let run = train_ids(&out, &["--steps", "0"]);
    assert!(matches!(run.code, Some(c) if c != 0), "{run}");
    assert!(run.stderr.contains("--steps must be at least 1"), "{run}");
    assert!(!out.exists());
    let run = train_ids(&out, &["--steps", "1"]);
    assert_eq!(run.code, Some(0), "{run}");
    let run = train_ids(&out, &["--steps", "1", "--resume"]);
    assert!(matches!(run.code, Some(c) if c != 0), "{run}");
    assert!(run.stderr.contains("already took 1 steps"), "{run}");
    let empty = tmp.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    let run = train_ids(&empty, &["--steps", "2", "--resume"]);
    assert!(matches!(run.code, Some(c) if c != 0), "{run}");
    assert!(
        run.stderr.contains("--resume: --out") && run.stderr.contains("no training checkpoint"),
        "{run}"
    );
}

#[test]
fn reference_free_training_and_eval_run() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let run = dpo(&[
        &["train", "--reference-free"][..],
        &IDS_NO_REF,
        &["--out", out.to_str().unwrap()],
        &["--steps", "2", "--batch-size", "4", "--lr", "1e-2"],
    ]
    .concat());
    run.assert_ok();
    let summary = run.json();
    assert_eq!(summary["steps"].as_u64(), Some(2));
    assert!(summary["first_loss"].as_f64().unwrap().is_finite());
    let (config, _) = load_weights(&out);
    assert_eq!(config.vocab_size, 40);

    // Without a reference the rewards are beta times the policy's log-probs.
    let free = dpo(&[
        &["eval", "--reference-free"][..],
        &IDS_NO_REF,
        &["--beta", "0.5"],
    ]
    .concat());
    free.assert_ok();
    let free = free.json();
    let with_ref = dpo(&eval_ids_args());
    let with_ref = with_ref.json();
    let get = |m: &serde_json::Map<String, Value>, k: &str| m[k].as_f64().unwrap();
    assert_eq!(get(&free, "logps/chosen"), get(&with_ref, "logps/chosen"));
    assert!(metric_close(
        get(&free, "rewards/chosen"),
        0.5 * get(&free, "logps/chosen")
    ));
    assert!(metric_close(
        get(&free, "rewards/rejected"),
        0.5 * get(&free, "logps/rejected")
    ));
}

#[test]
fn train_writes_per_step_metrics() {
    let tmp = tempfile::tempdir().unwrap();
    let (out, metrics) = (tmp.path().join("out"), tmp.path().join("metrics.jsonl"));
    let run = train_ids(
        &out,
        &[
            "--steps",
            "3",
            "--batch-size",
            "4",
            "--metrics",
            metrics.to_str().unwrap(),
        ],
    );
    run.assert_ok();
    let text = std::fs::read_to_string(&metrics).unwrap();
    let records: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).expect("a metrics line is JSON"))
        .collect();
    assert_eq!(records.len(), 3, "one metrics line per step:\n{text}");
    let summary = run.json();
    let final_loss = summary["final_loss"].as_f64().unwrap();
    assert!(final_loss.is_finite());
    for (i, record) in records.iter().enumerate() {
        assert_eq!(record["step"].as_u64(), Some(i as u64 + 1), "{record}");
        assert_eq!(record["split"].as_str(), Some("train"), "{record}");
    }
    // The summary's losses are the first and last steps' batch losses (the
    // records recompute them in f64 from the f32 log-probs: equal to ~1e-7).
    let loss = |r: &Value| r["loss"].as_f64().unwrap();
    let first_loss = summary["first_loss"].as_f64().unwrap();
    assert!(
        metric_close(first_loss, loss(&records[0])),
        "{first_loss} {}",
        records[0]
    );
    assert!(
        metric_close(final_loss, loss(&records[2])),
        "{final_loss} {}",
        records[2]
    );
}

#[test]
fn sft_resume_continues_the_run_bitwise() {
    let tmp = tempfile::tempdir().unwrap();
    let sft = |out: &Path, steps: &str, resume: bool| {
        let mut args = vec![
            "sft",
            "--data",
            "sft/sft.jsonl",
            "--out",
            out.to_str().unwrap(),
        ];
        args.extend(if resume {
            ["--resume", "--no-progress"]
        } else {
            ["--init", "sft/init"]
        });
        args.extend(["--steps", steps, "--batch-size", "3", "--lr", "1e-2"]);
        dpo(&args)
    };
    let run = assert_resumes_bitwise(tmp.path(), &["model.safetensors"], "1", "2", sft).resumed;
    assert_eq!(run.json()["steps"].as_u64(), Some(1), "{run}");
}

#[test]
fn save_every_does_not_change_the_run() {
    let tmp = tempfile::tempdir().unwrap();
    let (plain, saving) = (tmp.path().join("plain"), tmp.path().join("saving"));
    let flags = ["--steps", "3", "--batch-size", "3", "--lr", "1e-2"];
    train_ids(&plain, &flags).assert_ok();
    train_ids(&saving, &[&flags[..], &["--save-every", "1"]].concat()).assert_ok();
    assert!(read(&plain.join("model.safetensors")) == read(&saving.join("model.safetensors")));
    let state: Value = serde_json::from_slice(&read(&saving.join("trainer_state.json"))).unwrap();
    assert_eq!(state["step"].as_u64(), Some(3), "{state}");
}

#[test]
fn gzip_data_reads_like_plain_data() {
    // ids/prefs.jsonl.gz is ids/prefs.jsonl gzipped by make_golden.py.
    let plain = dpo(&eval_ids_args());
    let zipped = dpo(&set_flag(&eval_ids_args(), "--data", "ids/prefs.jsonl.gz"));
    zipped.assert_ok();
    assert_eq!(plain.stdout, zipped.stdout);
}

#[test]
fn skip_invalid_skips_and_reports_the_bad_line() {
    let run = dpo(&[
        "eval",
        "--policy",
        "text/policy",
        "--ref",
        "text/ref",
        "--data",
        "bad/pref_blank_lines.jsonl",
        "--skip-invalid",
    ]);
    run.assert_ok();
    // 13 lines: 2 blank, 1 bad (line 12), 10 good rows.
    assert_eq!(run.json()["num_pairs"].as_u64(), Some(10), "{run}");
    assert!(common::contains_number(&run.stderr, 12), "{run}");
}

#[test]
fn an_out_path_that_is_a_file_is_refused_before_training() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("a_file");
    std::fs::write(&out, b"keep me").unwrap();
    let run = train_ids(&out, &["--steps", "1"]);
    assert!(matches!(run.code, Some(c) if c != 0), "{run}");
    assert!(run.stderr.contains("is not a directory"), "{run}");
    assert!(!run.stderr.contains("step 1"), "{run}");
    assert_eq!(std::fs::read(&out).unwrap(), b"keep me");
}
