//! The `dpo` binary against the project's golden files (tests/golden/),
//! which tests/golden/make_golden.py computes in float64 with PyTorch.
//!
//! Each check of tests/golden/MANIFEST.json is one `dpo` command run with
//! cwd = tests/golden and `{OUT}` replaced by a path in a fresh temporary
//! directory:
//! - `eval_metrics`: stdout is one JSON object with every expected metric;
//! - `train_step`: one SGD step of `dpo train`/`dpo sft` writes the expected
//!   checkpoint and a summary whose `first_loss` is the loss before the step;
//! - `error`: a file with one bad line is refused, naming the line, before
//!   anything is written.

use crate::common::{compare_checkpoints, contains_number, dpo, golden_dir, metric_close, Run};
use serde_json::Value;

fn manifest() -> Value {
    let path = golden_dir().join("MANIFEST.json");
    let text = std::fs::read_to_string(&path).expect("tests/golden/MANIFEST.json");
    serde_json::from_str(&text).expect("MANIFEST.json is JSON")
}

/// The checks whose name starts with `prefix`.
fn checks(prefix: &str) -> Vec<Value> {
    let all = manifest()["checks"].as_array().unwrap().clone();
    let picked: Vec<Value> = all
        .into_iter()
        .filter(|c| c["name"].as_str().unwrap().starts_with(prefix))
        .collect();
    assert!(!picked.is_empty(), "no golden checks named {prefix}*");
    picked
}

/// Runs a check's command with `{OUT}` in a fresh temporary directory, and
/// `extra` flags after a `train` or `eval` command's own.
/// Returns the run and the output path (inside the returned guard).
fn run_check(check: &Value, extra: &[&str]) -> (Run, std::path::PathBuf, tempfile::TempDir) {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let mut argv: Vec<String> = check["argv"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap().replace("{OUT}", out.to_str().unwrap()))
        .collect();
    if matches!(argv[0].as_str(), "train" | "eval") {
        argv.extend(extra.iter().map(|a| a.to_string()));
    }
    (dpo(&argv), out, tmp)
}

fn is_count(key: &str) -> bool {
    matches!(key, "num_pairs" | "truncated_rows" | "steps")
}

fn check_eval(check: &Value, extra: &[&str]) -> Result<(), String> {
    let (run, _, _tmp) = run_check(check, extra);
    if run.code != Some(0) {
        return Err(format!("failed:\n{run}"));
    }
    let got = run.json();
    let path = golden_dir().join(check["expected"].as_str().unwrap());
    let expected: serde_json::Map<String, Value> =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let mut failures = Vec::new();
    for (key, e) in &expected {
        let e = e.as_f64().unwrap();
        match got.get(key).and_then(Value::as_f64) {
            None => failures.push(format!("{key}: missing")),
            Some(a) if is_count(key) && a != e => failures.push(format!("{key}: {a} != {e}")),
            Some(a) if !metric_close(a, e) => {
                failures.push(format!("{key}: {a} vs expected {e} (diff {:.2e})", a - e))
            }
            Some(_) => {}
        }
    }
    if failures.is_empty() {
        Ok(())
    } else {
        Err(failures.join("; "))
    }
}

fn check_train_step(check: &Value, extra: &[&str]) -> Result<(), String> {
    let (run, out, _tmp) = run_check(check, extra);
    if run.code != Some(0) {
        return Err(format!("failed:\n{run}"));
    }
    let golden = golden_dir();
    let expected = golden.join(check["expected"].as_str().unwrap());
    let input = golden.join(check["input"].as_str().unwrap());
    let mut failures = Vec::new();
    if let Err(e) = compare_checkpoints(&out, &expected, &input) {
        failures.push(format!("checkpoint:\n{e}"));
    }
    let summary = run.json();
    for key in [
        "steps",
        "first_loss",
        "final_loss",
        "train_runtime",
        "tokens_per_second",
    ] {
        match summary.get(key).and_then(Value::as_f64) {
            Some(v) if v.is_finite() => {}
            other => failures.push(format!("summary {key}: {other:?}")),
        }
    }
    if summary.get("steps").and_then(Value::as_u64) != Some(1) {
        failures.push(format!("summary steps: {:?}", summary.get("steps")));
    }
    let first = summary.get("first_loss").and_then(Value::as_f64);
    let want = check["first_loss"].as_f64().unwrap();
    if !first.is_some_and(|a| metric_close(a, want)) {
        failures.push(format!("first_loss {first:?}, expected {want}"));
    }
    let truncated = summary.get("truncated_rows").and_then(Value::as_u64);
    if truncated != check["truncated_rows"].as_u64() {
        failures.push(format!(
            "truncated_rows {truncated:?}, expected {}",
            check["truncated_rows"]
        ));
    }
    if failures.is_empty() {
        Ok(())
    } else {
        Err(failures.join("\n"))
    }
}

fn check_error(check: &Value, extra: &[&str]) -> Result<(), String> {
    let (run, out, _tmp) = run_check(check, extra);
    let line = check["bad_line"].as_u64().unwrap();
    // Paths in the message may hold digits of their own.
    let stderr = run.stderr.replace(out.to_str().unwrap(), "{OUT}");
    let mut failures = Vec::new();
    if !matches!(run.code, Some(c) if c != 0) {
        failures.push("did not fail".to_string());
    }
    if !contains_number(&stderr, line) {
        failures.push(format!("stderr does not name line {line}"));
    }
    if stderr.contains("panicked at") {
        failures.push("panicked".to_string());
    }
    if out.exists() {
        failures.push("--out was created".to_string());
    }
    if failures.is_empty() {
        Ok(())
    } else {
        Err(format!("{}:\n{run}", failures.join(", ")))
    }
}

/// Runs every check named `prefix*` and reports all failures at once.
fn run_checks(prefix: &str) {
    run_checks_with(prefix, &[]);
}

/// [`run_checks`] with `extra` flags after each `train` and `eval` command.
fn run_checks_with(prefix: &str, extra: &[&str]) {
    let mut failures = Vec::new();
    for check in checks(prefix) {
        let result = match check["kind"].as_str().unwrap() {
            "eval_metrics" => check_eval(&check, extra),
            "train_step" => check_train_step(&check, extra),
            "error" => check_error(&check, extra),
            other => panic!("unknown check kind {other}"),
        };
        if let Err(e) = result {
            failures.push(format!(
                "{} (dpo {}): {e}",
                check["name"].as_str().unwrap(),
                check["argv"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|a| a.as_str().unwrap())
                    .collect::<Vec<_>>()
                    .join(" ")
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} golden check(s) failed:\n{}",
        failures.len(),
        failures.join("\n\n")
    );
}

#[test]
fn manifest_covers_every_loss_and_case() {
    let names: Vec<String> = checks("")
        .iter()
        .map(|c| c["name"].as_str().unwrap().to_string())
        .collect();
    for case in ["ids", "text"] {
        for stem in [
            "sigmoid",
            "ipo",
            "hinge",
            "robust",
            "sigmoid_ls0.2",
            "robust_ls0.2",
        ] {
            let name = format!("{case}/eval_{stem}");
            assert!(names.contains(&name), "MANIFEST.json lacks {name}");
        }
        assert!(names.contains(&format!("{case}/train_sgd_step")));
    }
    assert!(names.contains(&"sft/sft_sgd_step".to_string()));
    assert!(names.iter().filter(|n| n.starts_with("bad/")).count() >= 10);
}

#[test]
fn golden_eval_ids() {
    run_checks("ids/eval_");
}

/// `dpo eval --precision f32` meets the same float64 goldens, within their
/// tolerance: f32 rounding is far below it on these models.
#[test]
fn golden_eval_ids_in_f32() {
    run_checks_with("ids/eval_", &["--precision", "f32"]);
}

#[test]
fn golden_eval_text() {
    run_checks("text/eval_");
}

#[test]
fn golden_train_sgd_step_ids() {
    run_checks("ids/train_sgd_step");
}

#[test]
fn golden_train_sgd_step_text() {
    run_checks("text/train_sgd_step");
}

/// The default runs each pair as one sequence `[prompt | chosen | rejected]`;
/// the goldens hold for the separate layout too (and for an explicit `on`).
#[test]
fn golden_eval_and_train_step_with_prefix_sharing_off_and_on() {
    for switch in ["off", "on"] {
        let extra = ["--prefix-sharing", switch];
        for prefix in [
            "ids/eval_",
            "text/eval_",
            "ids/train_sgd_step",
            "text/train_sgd_step",
        ] {
            run_checks_with(prefix, &extra);
        }
    }
}

#[test]
fn golden_sft_sgd_step() {
    run_checks("sft/sft_sgd_step");
}

#[test]
fn golden_bad_input_is_refused_with_its_line() {
    run_checks("bad/");
}
