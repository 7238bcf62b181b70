//! The one training loop from the command line: every trainer flag works for
//! every objective (SFT and DPO), `--resume` refuses a run of another
//! objective or optimizer, and the newcomer's mistakes get a line that says
//! what to do. Inputs: the tiny models and data of tests/golden/.

use crate::common;

use std::path::Path;

use crate::common::{
    dpo, eval_ids, eval_ids_args, set_flag, sft_golden_args, train_ids_args, worst_relative_diff,
    IDS_NO_REF,
};
use serde_json::Value;

/// `dpo sft` from the golden sft/ case into `out`, with `extra` flags.
fn sft(out: &Path, extra: &[&str]) -> common::Run {
    let flags = ["--batch-size", "3", "--lr", "1e-2", "--no-progress"];
    dpo(&[&sft_golden_args(out)[..], &flags, extra].concat())
}

/// 4 steps of `dpo sft` into `dir/out`, the golden SFT rows held out and
/// evaluated every `eval_every` steps, the metrics logged to `log`.
fn sft_evaluating_every(dir: &Path, eval_every: u32, log: &Path) -> common::Run {
    let every = eval_every.to_string();
    let flags = [
        "--steps",
        "4",
        "--eval-data",
        "sft/sft.jsonl",
        "--eval-every",
        &every,
        "--metrics",
        log.to_str().unwrap(),
    ];
    sft(&dir.join("out"), &flags)
}

/// `dpo train` on the golden ids/ case into `out`, with `extra` flags.
fn train(out: &Path, extra: &[&str]) -> common::Run {
    common::train_ids(
        out,
        &[&["--batch-size", "3", "--no-progress"], extra].concat(),
    )
}

/// The records of a metrics log, as JSON objects.
fn records(path: &Path) -> Vec<serde_json::Map<String, Value>> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .map(|v| v.as_object().unwrap().clone())
        .collect()
}

fn trainer_step(dir: &Path) -> u64 {
    let text = std::fs::read_to_string(dir.join("trainer_state.json")).unwrap();
    serde_json::from_str::<Value>(&text).unwrap()["step"]
        .as_u64()
        .unwrap()
}

#[test]
fn sft_evaluates_held_out_data_on_the_cadence_and_at_the_end() {
    let tmp = tempfile::tempdir().unwrap();
    let log = tmp.path().join("metrics.jsonl");
    let run = sft_evaluating_every(tmp.path(), 2, &log);
    run.assert_ok();
    let summary = run.json();
    let eval_loss = summary["eval_loss"].as_f64().unwrap();
    assert_eq!(summary["eval"]["loss"].as_f64(), Some(eval_loss), "{run}");
    let eval_steps: Vec<u64> = records(&log)
        .iter()
        .filter(|r| r["split"] == "eval")
        .map(|r| r["step"].as_u64().unwrap())
        .collect();
    assert_eq!(eval_steps, vec![0, 2, 4], "{run}");
    let train_records = records(&log)
        .into_iter()
        .filter(|r| r["split"] == "train")
        .count();
    assert_eq!(train_records, 4);
}

/// `tokens_per_second` counts the time of the training steps only: times the
/// running sum of `step_ms` it gives a whole number of tokens, however long
/// the held-out evaluations between the steps took.
#[test]
fn tokens_per_second_leaves_out_the_held_out_evaluations() {
    let tmp = tempfile::tempdir().unwrap();
    let log = tmp.path().join("metrics.jsonl");
    let run = sft_evaluating_every(tmp.path(), 1, &log);
    run.assert_ok();
    let mut step_seconds = 0.0;
    let mut tokens_so_far = 0.0;
    for record in records(&log).iter().filter(|r| r["split"] == "train") {
        step_seconds += record["step_ms"].as_f64().unwrap() / 1e3;
        let tokens = record["tokens_per_second"].as_f64().unwrap() * step_seconds;
        assert!(
            (tokens - tokens.round()).abs() < 1e-6 && tokens.round() > tokens_so_far,
            "step {}: {tokens} tokens after {tokens_so_far}",
            record["step"]
        );
        tokens_so_far = tokens.round();
    }
    let summary = run.json()["tokens_per_second"].as_f64().unwrap();
    assert!(
        (summary * step_seconds - tokens_so_far).abs() < 1e-6,
        "{run}"
    );
}

#[test]
fn sft_saves_every_n_steps_without_changing_the_run() {
    let tmp = tempfile::tempdir().unwrap();
    let (plain, saving) = (tmp.path().join("plain"), tmp.path().join("saving"));
    sft(&plain, &["--steps", "3"]).assert_ok();
    // A run cut after 2 of 3 steps has its step-2 checkpoint on disk.
    sft(&saving, &["--steps", "3", "--save-every", "2"]).assert_ok();
    assert_eq!(trainer_step(&saving), 3);
    let weights = |dir: &Path| std::fs::read(dir.join("model.safetensors")).unwrap();
    assert!(weights(&plain) == weights(&saving));

    let cut = tmp.path().join("cut");
    sft(&cut, &["--steps", "2", "--save-every", "1"]).assert_ok();
    assert_eq!(trainer_step(&cut), 2);
}

#[test]
fn eval_fraction_holds_out_rows_for_sft_too() {
    let tmp = tempfile::tempdir().unwrap();
    let run = sft(
        &tmp.path().join("out"),
        &["--steps", "1", "--eval-fraction", "0.3"],
    );
    run.assert_ok();
    let summary = run.json();
    assert!(summary["eval_loss"].as_f64().unwrap().is_finite(), "{run}");
    let all_out = tmp.path().join("all");
    let all = dpo(&[
        &sft_golden_args(&all_out)[..],
        &["--steps", "1", "--no-progress"],
    ]
    .concat());
    all.assert_ok();
    assert!(
        summary["train_rows"].as_u64() < all.json()["train_rows"].as_u64(),
        "{run}"
    );
}

#[test]
fn resume_refuses_another_objective_or_optimizer() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    sft(&out, &["--steps", "1"]).assert_ok();
    // A DPO run cannot resume an SFT run.
    let run = train(&out, &["--steps", "2", "--resume"]);
    run.assert_one_line_error();
    assert!(run.stderr.contains("is a sft run, not dpo"), "{run}");
    // Nor an AdamW run with SGD.
    let run = sft(&out, &["--steps", "2", "--resume", "--optimizer", "sgd"]);
    run.assert_one_line_error();
    assert!(run.stderr.contains("--optimizer adamw"), "{run}");
    // The same objective and optimizer resume.
    sft(&out, &["--steps", "2", "--resume"]).assert_ok();
    assert_eq!(trainer_step(&out), 2);
}

/// In bf16 the reference runs in bf16 too, so a policy that is its own
/// reference starts at rewards of exactly 0 and a loss of exactly ln 2, as in
/// f32, although its bf16 log-probs differ from the f32 ones.
#[test]
fn a_bf16_policy_that_is_its_own_reference_starts_at_ln_2() {
    let tmp = tempfile::tempdir().unwrap();
    let first_record = |precision: &str| {
        let (out, log) = (
            tmp.path().join(format!("out-{precision}")),
            tmp.path().join(format!("metrics-{precision}.jsonl")),
        );
        let own_reference = set_flag(&train_ids_args(&out), "--ref", "ids/policy");
        dpo(&[
            &own_reference[..],
            &["--steps", "1", "--batch-size", "3", "--no-progress"],
            &["--precision", precision, "--metrics", log.to_str().unwrap()],
        ]
        .concat())
        .assert_ok();
        records(&log).remove(0)
    };
    let (f32_record, bf16_record) = (first_record("f32"), first_record("bf16"));
    let value = |record: &serde_json::Map<String, Value>, key: &str| record[key].as_f64().unwrap();
    assert_ne!(
        value(&f32_record, "logps/chosen"),
        value(&bf16_record, "logps/chosen"),
        "bf16 changed nothing: the test would prove nothing"
    );
    for record in [&f32_record, &bf16_record] {
        assert_eq!(value(record, "loss"), std::f64::consts::LN_2, "{record:?}");
        assert_eq!(value(record, "rewards/margins"), 0.0, "{record:?}");
    }
}

#[test]
fn loss_dpo_is_the_sigmoid_loss() {
    let eval = |loss: &str| eval_ids(&["--loss", loss]);
    let (dpo_run, sigmoid_run) = (eval("dpo"), eval("sigmoid"));
    sigmoid_run.assert_ok();
    assert_eq!(dpo_run.assert_ok().stdout, sigmoid_run.stdout);
    let unknown = eval("nope");
    assert_eq!(unknown.code, Some(2), "{unknown}");
    assert!(unknown.stderr.contains("sigmoid"), "{unknown}");
}

#[test]
fn a_missing_reference_names_reference_free() {
    for command in ["train", "eval"] {
        let mut args = [&[command][..], &IDS_NO_REF].concat();
        if command == "train" {
            args.extend(["--out", "unused-out"]);
        }
        let run = dpo(&args);
        run.assert_one_line_error();
        assert!(
            run.stderr.contains("--ref DIR") && run.stderr.contains("--reference-free"),
            "{run}"
        );
    }
}

#[test]
fn sft_without_a_starting_model_names_init_and_config() {
    let run = dpo(&["sft", "--data", "sft/sft.jsonl", "--out", "unused-out"]);
    run.assert_one_line_error();
    assert!(
        run.stderr.contains("one of --init") && run.stderr.contains("--config"),
        "{run}"
    );
}

#[test]
fn generate_stops_at_the_stop_text() {
    let generate = |extra: &[&str]| {
        let mut args = vec![
            "generate",
            "--model",
            "text/policy",
            "--prompt",
            "Hello",
            "--temperature",
            "0",
            "--max-new-tokens",
            "24",
        ];
        args.extend_from_slice(extra);
        let run = dpo(&args);
        run.assert_ok();
        run.json()
    };
    let full = generate(&[]);
    let completion = full["completion"].as_str().unwrap().to_string();
    assert_eq!(full["finish_reason"], "length");
    // Stop at a piece of what greedy decoding writes anyway: the completion
    // is cut right before its first occurrence.
    let chars: Vec<char> = completion.chars().collect();
    let stop: String = chars[chars.len() / 2..chars.len() / 2 + 2].iter().collect();
    let cut = generate(&["--stop", &stop]);
    let expected = &completion[..completion.find(&stop).unwrap()];
    assert_eq!(cut["completion"].as_str().unwrap(), expected, "{cut:?}");
    assert_eq!(cut["finish_reason"], "stop");
    assert_eq!(
        cut["text"].as_str().unwrap(),
        format!("Hello{expected}").as_str()
    );
}

#[test]
fn a_row_emptied_by_truncation_is_refused_or_skipped() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("prefs.jsonl");
    // Block 16: a 16-token prompt cut to nothing leaves a 1-token chosen
    // response with no scored token.
    let long_prompt: Vec<u32> = (1..=16).collect();
    std::fs::write(
        &data,
        format!(
            "{}\n{}\n",
            serde_json::json!({"prompt_ids": long_prompt, "chosen_ids": [4], "rejected_ids": [5, 6]}),
            serde_json::json!({"prompt_ids": [1], "chosen_ids": [4, 5], "rejected_ids": [5, 6]}),
        ),
    )
    .unwrap();
    let eval = |extra: &[&str]| {
        let eval = set_flag(&eval_ids_args(), "--data", data.to_str().unwrap());
        dpo(&[&eval[..], &["--max-prompt-length", "0"], extra].concat())
    };
    let refused = eval(&[]);
    refused.assert_one_line_error();
    assert!(
        refused
            .stderr
            .contains("line 1: chosen has no scored token"),
        "{refused}"
    );
    let skipped = eval(&["--skip-invalid"]);
    skipped.assert_ok();
    assert_eq!(skipped.json()["num_pairs"].as_u64(), Some(1), "{skipped}");
    assert!(skipped.stderr.contains("skipped"), "{skipped}");
}

#[test]
fn max_length_cuts_rows_as_if_cut_by_hand() {
    let tmp = tempfile::tempdir().unwrap();
    let rows = |path: &Path, first: serde_json::Value| {
        let second =
            serde_json::json!({"prompt_ids": [1], "chosen_ids": [4, 5], "rejected_ids": [5, 6]});
        std::fs::write(path, format!("{first}\n{second}\n")).unwrap();
    };
    // --max-length 8 in a block of 16, so the prompt budget is 4: the first
    // row (6 + 5 tokens) keeps its prompt's last 4 tokens and 8 - 4 of its
    // chosen response; the second fits.
    let (data, by_hand) = (tmp.path().join("prefs.jsonl"), tmp.path().join("cut.jsonl"));
    rows(
        &data,
        serde_json::json!({"prompt_ids": [1, 2, 3, 4, 5, 6], "chosen_ids": [7, 8, 9, 10, 11], "rejected_ids": [12, 13]}),
    );
    rows(
        &by_hand,
        serde_json::json!({"prompt_ids": [3, 4, 5, 6], "chosen_ids": [7, 8, 9, 10], "rejected_ids": [12, 13]}),
    );
    let eval = |path: &Path, extra: &[&str]| {
        let eval = set_flag(&eval_ids_args(), "--data", path.to_str().unwrap());
        dpo(&[&eval[..], extra].concat())
    };
    let mut cut = eval(&data, &["--max-length", "8"]).assert_ok().json();
    let mut expected = eval(&by_hand, &[]).assert_ok().json();
    assert_eq!(cut.remove("truncated_rows"), Some(1.into()));
    assert_eq!(expected.remove("truncated_rows"), Some(0.into()));
    assert_eq!(cut, expected);

    for (flags, error) in [
        (
            &["--max-length", "17"][..],
            "--max-length 17 must be between 1 and the model's block_size 16",
        ),
        (
            &["--max-length", "8", "--max-prompt-length", "8"],
            "--max-prompt-length 8 must be below --max-length 8",
        ),
        (
            &["--max-prompt-length", "16"],
            "--max-prompt-length 16 must be below the model's block_size 16",
        ),
    ] {
        let refused = eval(&data, flags);
        refused.assert_one_line_error();
        assert!(refused.stderr.contains(error), "{refused}");
    }
}

/// `sft` or `train` above.
type Runner = fn(&Path, &[&str]) -> common::Run;

#[test]
fn grad_accum_takes_the_step_of_the_whole_batch_for_sft_and_dpo() {
    let tmp = tempfile::tempdir().unwrap();
    let sgd = ["--optimizer", "sgd", "--max-grad-norm", "0", "--steps", "3"];
    let runs: [(&str, Runner); 2] = [("sft", sft), ("dpo", train)];
    for (name, run) in runs {
        let whole = tmp.path().join(format!("{name}_whole"));
        let accumulated = tmp.path().join(format!("{name}_accumulated"));
        let first = run(&whole, &sgd).assert_ok().json();
        let second = run(&accumulated, &[&sgd[..], &["--grad-accum", "2"]].concat())
            .assert_ok()
            .json();
        let diff = worst_relative_diff(&accumulated, &whole);
        assert!(diff <= 1e-5, "{name}: --grad-accum 2 off by {diff:e}");
        let (a, b) = (
            second["final_loss"].as_f64().unwrap(),
            first["final_loss"].as_f64().unwrap(),
        );
        assert!(
            (a - b).abs() <= 1e-6 * b.abs(),
            "{name}: final loss {a} vs {b}"
        );
    }
    let error = train(&tmp.path().join("zero"), &["--grad-accum", "0"]);
    error.assert_one_line_error();
    assert!(error.stderr.contains("--grad-accum"), "{error}");
}

/// `--data-order file` takes the rows in the file's order, whatever the
/// seed: step 1 trains on rows 1-3 and step 2 on rows 4-6, so the first
/// step is the step of a run on a file of those three rows alone.
#[test]
fn data_order_file_takes_the_rows_in_the_files_order() {
    let dir = tempfile::tempdir().unwrap();
    let log = |name: &str| dir.path().join(format!("{name}.jsonl"));
    let run = |name: &str, seed: &str, data: Option<&Path>| {
        let out = dir.path().join(name);
        let metrics = log(name);
        let mut args = train_ids_args(&out);
        if let Some(data) = data {
            args = set_flag(&args, "--data", data.to_str().unwrap());
        }
        let extra = [
            "--data-order",
            "file",
            "--seed",
            seed,
            "--steps",
            "2",
            "--batch-size",
            "3",
            "--no-progress",
            "--metrics",
            metrics.to_str().unwrap(),
        ];
        dpo(&[&args[..], &extra].concat()).assert_ok();
        records(&metrics)
    };
    let values = |r: &serde_json::Map<String, Value>| {
        ["loss", "rewards/margins", "grad_norm"].map(|k| r[k].as_f64().unwrap())
    };
    let first = run("a", "1", None);
    let other_seed = run("b", "7", None);
    for step in 0..2 {
        assert_eq!(
            values(&first[step]),
            values(&other_seed[step]),
            "the seed changes nothing"
        );
    }
    let rows = std::fs::read_to_string(common::golden_dir().join("ids/prefs.jsonl")).unwrap();
    let three = dir.path().join("three.jsonl");
    let head: Vec<&str> = rows.lines().take(3).collect();
    std::fs::write(&three, head.join("\n") + "\n").unwrap();
    let alone = run("c", "1", Some(&three));
    assert_eq!(values(&first[0]), values(&alone[0]));
    assert_ne!(
        values(&first[1]),
        values(&alone[1]),
        "step 2 takes rows 4-6"
    );

    let out = dir.path().join("d");
    let refused = [
        &train_ids_args(&out)[..],
        &["--data-order", "file", "--group-by-length"],
    ]
    .concat();
    let run = dpo(&refused);
    assert_eq!(run.code, Some(2), "{run}");
    assert!(run.stderr.contains("cannot be used with"), "{run}");
}
