//! Every preference loss against TRL's own implementation: the goldens of
//! `tests/golden/trl_losses/`, written by `tests/golden/make_trl_losses.py`
//! from the pinned trl (its version is in each file). For each case, the same
//! per-sequence log-probs go through [`loss_values`], [`pair_rewards`] and
//! [`MetricSums`]; the loss, its gradient with respect to every sequence
//! log-prob, the per-pair rewards and the logged metrics must match TRL's to
//! `rtol 1e-5`.

use std::path::PathBuf;

use dpo::loss::{
    loss_values, pair_rewards, DpoLossConfig, LossType, MetricSums, PairLogps, WeightedLoss,
};
use serde_json::Value;

const RTOL: f64 = 1e-5;
/// For values that are 0 (TRL's float32 metrics of ORPO and SimPO are also
/// exact only to ~1e-7 relative, inside RTOL).
const ATOL: f64 = 1e-9;

fn golden_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/golden/trl_losses")
}

fn floats(v: &Value) -> Vec<f64> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect()
}

fn counts(v: &Value) -> Vec<usize> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as usize)
        .collect()
}

/// The loss settings of a case, as `dpo train` would build them from the
/// same TRL arguments.
fn config_of(config: &Value) -> DpoLossConfig {
    let names = config["loss"].as_array().unwrap();
    let weights = floats(&config["loss_weights"]);
    let losses = names
        .iter()
        .zip(weights)
        .map(|(name, weight)| WeightedLoss {
            loss_type: name.as_str().unwrap().parse::<LossType>().unwrap(),
            weight,
        })
        .collect();
    let number =
        |key: &str, default: f64| config.get(key).and_then(Value::as_f64).unwrap_or(default);
    DpoLossConfig {
        losses,
        beta: number("beta", f64::NAN),
        label_smoothing: number("label_smoothing", 0.0),
        discopop_tau: number("discopop_tau", DpoLossConfig::DISCOPOP_TAU),
        simpo_gamma: number("simpo_gamma", DpoLossConfig::SIMPO_GAMMA),
        // TRL 1.16's bco_pair has no running-mean shift.
        bco_running_mean: false,
    }
}

fn logps_of(inputs: &Value, with_prompt: bool) -> PairLogps {
    PairLogps {
        policy_chosen: floats(&inputs["policy_chosen"]),
        policy_rejected: floats(&inputs["policy_rejected"]),
        ref_chosen: floats(&inputs["ref_chosen"]),
        ref_rejected: floats(&inputs["ref_rejected"]),
        n_chosen: counts(&inputs["n_chosen"]),
        n_rejected: counts(&inputs["n_rejected"]),
        prompt_chosen: if with_prompt {
            floats(&inputs["prompt_chosen"])
        } else {
            Vec::new()
        },
        n_prompt: if with_prompt {
            counts(&inputs["n_prompt"])
        } else {
            Vec::new()
        },
    }
}

fn close(actual: f64, expected: f64) -> bool {
    (actual - expected).abs() <= RTOL * expected.abs() + ATOL
}

#[test]
fn every_loss_matches_trl() {
    let mut files: Vec<PathBuf> = std::fs::read_dir(golden_dir())
        .expect("tests/golden/trl_losses")
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    files.sort();
    let mut covered = Vec::new();
    for path in &files {
        let case: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        let name = case["name"].as_str().unwrap();
        let config = config_of(&case["config"]);
        config.validate().unwrap_or_else(|e| panic!("{name}: {e}"));
        let logps = logps_of(&case["inputs"], config.needs_prompt_logps());
        let values = loss_values(&config, &logps, 0.0);
        let expected = &case["expected"];
        let mut failures = Vec::new();
        let mut check = |what: String, actual: f64, want: f64| {
            if !close(actual, want) {
                failures.push(format!("{what}: {actual} vs TRL {want}"));
            }
        };
        check(
            "loss".into(),
            values.loss,
            expected["loss"].as_f64().unwrap(),
        );

        let b = logps.num_pairs();
        let grad_chosen = floats(&expected["grad_policy_chosen"]);
        let grad_rejected = floats(&expected["grad_policy_rejected"]);
        for i in 0..b {
            check(
                format!("dloss/dpi_c[{i}]"),
                values.dpolicy[i],
                grad_chosen[i],
            );
            check(
                format!("dloss/dpi_r[{i}]"),
                values.dpolicy[b + i],
                grad_rejected[i],
            );
        }
        if let Some(grad_prompt) = expected.get("grad_prompt_chosen") {
            for (i, &want) in floats(grad_prompt).iter().enumerate() {
                let actual = values.dprompt.get(i).copied().unwrap_or(0.0);
                check(format!("dloss/dprompt_c[{i}]"), actual, want);
            }
        }

        let chosen_rewards = floats(&expected["chosen_rewards"]);
        let rejected_rewards = floats(&expected["rejected_rewards"]);
        for i in 0..b {
            let (reward_c, reward_r) = pair_rewards(&config, &logps.pair(i));
            check(format!("chosen_rewards[{i}]"), reward_c, chosen_rewards[i]);
            check(
                format!("rejected_rewards[{i}]"),
                reward_r,
                rejected_rewards[i],
            );
        }

        let mut sums = MetricSums::default();
        sums.add(&logps, &values, &config);
        let metrics = sums.metrics().to_record().to_json();
        for (key, want) in expected.as_object().unwrap() {
            if key == "loss" || key.starts_with("grad_") || key.ends_with("_rewards") {
                continue;
            }
            let actual = metrics
                .get(key)
                .and_then(Value::as_f64)
                .unwrap_or_else(|| panic!("{name}: no metric {key} in {metrics:?}"));
            check(key.clone(), actual, want.as_f64().unwrap());
        }
        assert!(
            failures.is_empty(),
            "{name} ({}):\n{}",
            path.display(),
            failures.join("\n")
        );
        covered.extend(config.losses.iter().map(|l| l.loss_type));
    }
    // Every loss type but the contract's label-smoothing-only variants has a TRL golden.
    for (name, loss_type) in LossType::ALL {
        assert!(covered.contains(&loss_type), "no TRL golden for {name}");
    }
}
