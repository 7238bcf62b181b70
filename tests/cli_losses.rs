//! Every preference loss from the command line: each trains and evaluates
//! on the tiny golden `ids/` case with its metrics under TRL's names, SimPO
//! and ORPO refuse a reference, `--rpo-alpha` is the `sft` term, and
//! bco_pair's running mean survives `--resume` to the bit.

use crate::common;

use crate::common::{assert_resumes_bitwise, dpo, eval_ids, read, train_ids, IDS_NO_REF};
use serde_json::Value;

/// Flags that make a loss valid on its own (exo_pair needs label smoothing).
fn loss_flags(loss: &str) -> Vec<&str> {
    let mut flags = vec!["--loss", loss];
    if loss == "exo_pair" {
        flags.extend(["--label-smoothing", "0.001"]);
    }
    flags
}

fn reference_free(loss: &str) -> bool {
    loss.starts_with("simpo") || loss == "orpo"
}

/// `dpo eval` of the golden ids/ policy with `extra` flags (a reference unless SimPO/ORPO).
fn eval(loss: &str, extra: &[&str]) -> common::Run {
    let mut args = [&["eval"][..], &IDS_NO_REF].concat();
    if !reference_free(loss) {
        args.extend(["--ref", "ids/ref"]);
    }
    args.extend(loss_flags(loss));
    args.extend_from_slice(extra);
    dpo(&args)
}

const LOSSES: [&str; 18] = [
    "sigmoid",
    "ipo",
    "hinge",
    "robust",
    "exo_pair",
    "nca_pair",
    "bco_pair",
    "sppo_hard",
    "aot",
    "aot_unpaired",
    "apo_zero",
    "apo_down",
    "discopop",
    "sigmoid_norm",
    "sft",
    "simpo",
    "orpo",
    "sigmoid,sft",
];

#[test]
fn every_loss_trains_and_evaluates_with_trls_metric_names() {
    let tmp = tempfile::tempdir().unwrap();
    for loss in LOSSES {
        let out = tmp.path().join(loss.replace(',', "+"));
        let mut args = [
            &["train"][..],
            &IDS_NO_REF,
            &["--out", out.to_str().unwrap()],
            &["--steps", "2", "--batch-size", "4", "--no-progress"],
        ]
        .concat();
        if !reference_free(loss) {
            args.extend(["--ref", "ids/ref"]);
        }
        args.extend(loss_flags(loss));
        let run = dpo(&args);
        run.assert_ok();
        let first_loss = run.json()["first_loss"].as_f64().unwrap();
        assert!(first_loss.is_finite(), "{loss}: {run}");

        let report = eval(loss, &[]).assert_ok().json();
        for key in [
            "loss",
            "rewards/chosen",
            "rewards/rejected",
            "rewards/accuracies",
            "rewards/margins",
            "logps/chosen",
            "logps/rejected",
        ] {
            let value = report.get(key).and_then(Value::as_f64);
            assert!(
                value.is_some_and(f64::is_finite),
                "{loss}: {key} in {report:?}"
            );
        }
        let has_nll = loss.contains("sft") || loss == "orpo";
        assert_eq!(
            report.contains_key("nll_loss"),
            has_nll,
            "{loss}: {report:?}"
        );
        for key in ["log_odds_ratio", "log_odds_chosen"] {
            assert_eq!(
                report.contains_key(key),
                loss == "orpo",
                "{loss}: {report:?}"
            );
        }
    }
}

#[test]
fn simpo_and_orpo_refuse_a_reference() {
    for loss in ["simpo", "orpo"] {
        let run = eval_ids(&["--loss", loss]);
        run.assert_one_line_error();
        assert!(run.stderr.contains("reference-free: drop --ref"), "{run}");
    }
    // Nor do they mix with a loss that needs one.
    let run = eval("simpo,sigmoid", &[]);
    run.assert_one_line_error();
    assert!(run.stderr.contains("simpo"), "{run}");
}

#[test]
fn loss_weights_and_rpo_alpha() {
    let weighted = eval("sigmoid,sft", &["--loss-weights", "1,0.5"])
        .assert_ok()
        .json();
    let rpo = eval("sigmoid", &["--rpo-alpha", "0.5"]).assert_ok().json();
    assert_eq!(weighted, rpo);
    // The weighted sum of the parts.
    let sigmoid = eval("sigmoid", &[]).assert_ok().json()["loss"]
        .as_f64()
        .unwrap();
    let nll = weighted["nll_loss"].as_f64().unwrap();
    let total = weighted["loss"].as_f64().unwrap();
    assert!(
        (total - (sigmoid + 0.5 * nll)).abs() < 1e-12,
        "{weighted:?}"
    );

    let run = eval("sigmoid,sft", &["--loss-weights", "1"]);
    run.assert_one_line_error();
    assert!(run.stderr.contains("--loss-weights"), "{run}");
    let run = eval("sigmoid,sft", &["--rpo-alpha", "1"]);
    run.assert_one_line_error();
    assert!(run.stderr.contains("--rpo-alpha"), "{run}");
    let run = eval_ids(&["--loss", "exo_pair"]);
    run.assert_one_line_error();
    assert!(run.stderr.contains("exo_pair"), "{run}");
}

#[test]
fn bco_pair_running_mean_resumes_bitwise() {
    let tmp = tempfile::tempdir().unwrap();
    let runs = assert_resumes_bitwise(
        tmp.path(),
        &["model.safetensors"],
        "2",
        "3",
        |out, steps, resume| {
            let mut flags = vec!["--steps", steps, "--batch-size", "3", "--lr", "1e-2"];
            flags.extend(["--seed", "5", "--loss", "bco_pair", "--no-progress"]);
            if resume {
                // The checkpoint resumed from holds the mean of its 2 steps.
                let state: Value =
                    serde_json::from_slice(&read(&out.join("trainer_state.json"))).unwrap();
                assert_eq!(
                    state["objective_state"]["bco_running_mean"]["count"], 2,
                    "{state}"
                );
                flags.push("--resume");
            }
            train_ids(out, &flags)
        },
    );
    let straight_state: Value =
        serde_json::from_slice(&read(&runs.straight_dir.join("trainer_state.json"))).unwrap();
    let resumed_state: Value =
        serde_json::from_slice(&read(&runs.resumed_dir.join("trainer_state.json"))).unwrap();
    assert_eq!(
        straight_state["objective_state"],
        resumed_state["objective_state"]
    );
}
