//! The KTO loss: the fused op against finite differences, against the
//! formula built from primitive autograd ops, and against TRL's own
//! `KTOTrainer` (the goldens of `tests/golden/make_trl_kto.py`).

use std::path::PathBuf;

use autograd::gradcheck::{gradcheck_with, random_inputs, GradcheckOptions};
use autograd::{Tape, Var};
use dpo::data::kl_partners;
use dpo::loss::kto::{batch_kl, kto_loss, KtoConfig, KtoMetricSums, UnpairedLogps};
use serde_json::Value;

fn config(beta: f64, desirable_weight: f64, undesirable_weight: f64) -> KtoConfig {
    KtoConfig {
        beta,
        desirable_weight,
        undesirable_weight,
    }
}

/// Batch compositions: all desirable, all undesirable, mixed, a batch of one.
fn compositions() -> Vec<(&'static str, Vec<bool>)> {
    vec![
        ("all desirable", vec![true; 4]),
        ("all undesirable", vec![false; 5]),
        ("mixed", vec![true, false, false, true, false, true, true]),
        ("one desirable", vec![true]),
        ("one undesirable", vec![false]),
    ]
}

#[test]
fn kto_loss_gradcheck_every_composition() {
    for (name, desirable) in compositions() {
        let n = desirable.len();
        let reference: Vec<f64> = (0..n).map(|i| -(i as f64) * 0.4 - 2.0).collect();
        for kl in [0.0, 0.8] {
            for cfg in [config(0.7, 1.0, 1.0), config(0.3, 1.33, 0.6)] {
                let report = gradcheck_with(
                    random_inputs(&[&[n]], 5)
                        .into_iter()
                        .map(|x| x * 3.0 - 2.0)
                        .collect(),
                    &GradcheckOptions::default(),
                    |tape, x| kto_loss(tape, &x[0], &reference, &desirable, kl, &cfg),
                );
                assert!(report.max_error < 1e-7, "{name}, kl {kl}: {report:?}");
            }
        }
    }
}

/// The loss written with primitive ops, as the formula reads:
/// `mean(w * (1 - sigmoid(z)))`, `z = beta (r - kl)` or `beta (kl - r)`.
fn composed(
    tape: &Tape<f64>,
    pi: &Var<f64>,
    reference: &[f64],
    desirable: &[bool],
    kl: f64,
    cfg: &KtoConfig,
) -> Var<f64> {
    let column = |values: Vec<f64>| tape.constant(ndarray::Array1::from(values).into_dyn());
    let reference = column(reference.to_vec());
    let logratio = tape.sub(pi, &reference);
    // sign = +1 for desirable rows, -1 for undesirable: z = sign beta (r - kl)
    let sign = column(
        desirable
            .iter()
            .map(|&d| if d { 1.0 } else { -1.0 })
            .collect(),
    );
    let weight = column(
        desirable
            .iter()
            .map(|&d| {
                if d {
                    cfg.desirable_weight
                } else {
                    cfg.undesirable_weight
                }
            })
            .collect(),
    );
    let z = tape.mul_scalar(&tape.mul(&sign, &tape.add_scalar(&logratio, -kl)), cfg.beta);
    let per_row = tape.add_scalar(&tape.neg(&tape.sigmoid(&z)), 1.0);
    tape.mean_all(&tape.mul(&weight, &per_row))
}

#[test]
fn kto_loss_matches_composition() {
    for (name, desirable) in compositions() {
        let n = desirable.len();
        let reference: Vec<f64> = (0..n).map(|i| -(i as f64) * 0.5 - 1.0).collect();
        let pi = random_inputs(&[&[n]], 9).remove(0) * 6.0;
        let cfg = config(0.4, 1.2, 0.7);
        let t1 = Tape::<f64>::new();
        let x1 = t1.leaf(pi.clone());
        let fused = kto_loss(&t1, &x1, &reference, &desirable, 0.3, &cfg);
        let t2 = Tape::<f64>::new();
        let x2 = t2.leaf(pi.clone());
        let comp = composed(&t2, &x2, &reference, &desirable, 0.3, &cfg);
        assert!(
            (fused.item() - comp.item()).abs() < 1e-12,
            "{name}: {} vs {}",
            fused.item(),
            comp.item()
        );
        let (g1, g2) = (t1.backward(&fused), t2.backward(&comp));
        for (a, b) in g1.get(&x1).unwrap().iter().zip(g2.get(&x2).unwrap().iter()) {
            assert!((a - b).abs() < 1e-12, "{name} gradients: {a} vs {b}");
        }
    }
}

#[test]
fn kto_loss_is_stable_for_huge_logratios() {
    let cfg = config(1.0, 1.0, 1.0);
    let tape = Tape::<f64>::new();
    let pi = tape.leaf(ndarray::Array1::from(vec![1e4, -1e4, 1e4, -1e4]).into_dyn());
    let loss = kto_loss(
        &tape,
        &pi,
        &[0.0; 4],
        &[true, true, false, false],
        0.0,
        &cfg,
    );
    // Rows 0 and 3 are right by far (loss 0), rows 1 and 2 wrong by far (loss 1).
    assert!((loss.item() - 0.5).abs() < 1e-12, "{}", loss.item());
    let grads = tape.backward(&loss);
    assert!(grads.get(&pi).unwrap().iter().all(|g| g.is_finite()));
}

#[test]
fn batch_kl_is_the_clamped_mean_logratio() {
    assert!((batch_kl(&[-1.0, -3.0], &[-2.0, -2.0]) - 0.0).abs() < 1e-15);
    assert!((batch_kl(&[-1.0, -1.0], &[-2.0, -3.0]) - 1.5).abs() < 1e-15);
    assert_eq!(batch_kl(&[-5.0], &[-1.0]), 0.0); // negative: clamped at 0
}

#[test]
fn config_is_validated() {
    assert!(config(0.1, 1.0, 1.0).validate().is_ok());
    assert!(config(0.0, 1.0, 1.0).validate().is_err());
    assert!(config(0.1, -1.0, 1.0).validate().is_err());
    assert!(config(0.1, 1.0, f64::NAN).validate().is_err());
    let e = config(0.1, 1.0, -2.0).validate().unwrap_err().to_string();
    assert_eq!(
        e,
        "the undesirable weight must be a non-negative number, got -2"
    );
}

// ---------------------------------------------------------------------------
// Against TRL (tests/golden/trl_kto, written by tests/golden/make_trl_kto.py)
// ---------------------------------------------------------------------------

const RTOL: f64 = 1e-5;
const ATOL: f64 = 1e-9;

fn golden(name: &str) -> Value {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/golden/trl_kto")
        .join(name);
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap()
}

fn floats(v: &Value) -> Vec<f64> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect()
}

fn assert_close(what: &str, actual: f64, expected: f64) {
    assert!(
        (actual - expected).abs() <= ATOL + RTOL * expected.abs(),
        "{what}: {actual} vs TRL's {expected}"
    );
}

/// The metrics `dpo` reports under TRL's names (TRL's `entropy`,
/// `logits/*` and `num_tokens` need the full logits or the attention mask:
/// not reported).
const SHARED_METRICS: [&str; 7] = [
    "kl",
    "rewards/chosen",
    "rewards/rejected",
    "rewards/margins",
    "logps/chosen",
    "logps/rejected",
    "loss",
];

#[test]
fn kto_loss_gradient_and_metrics_match_trl() {
    let cases = golden("loss_cases.json");
    let cases = cases["cases"].as_array().unwrap();
    assert!(cases.len() >= 8);
    for case in cases {
        let name = case["name"].as_str().unwrap();
        let cfg = config(
            case["beta"].as_f64().unwrap(),
            case["desirable_weight"].as_f64().unwrap(),
            case["undesirable_weight"].as_f64().unwrap(),
        );
        let desirable: Vec<bool> = case["labels"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| l.as_bool().unwrap())
            .collect();
        let logps = UnpairedLogps {
            policy: floats(&case["policy_logps"]),
            reference: floats(&case["reference_logps"]),
            policy_kl: floats(&case["policy_kl_logps"]),
            reference_kl: floats(&case["reference_kl_logps"]),
            desirable: desirable.clone(),
        };
        let expected = &case["expected"];

        let kl = batch_kl(&logps.policy_kl, &logps.reference_kl);
        let tape = Tape::<f64>::new();
        let pi = tape.leaf(ndarray::Array1::from(logps.policy.clone()).into_dyn());
        let loss = kto_loss(&tape, &pi, &logps.reference, &desirable, kl, &cfg);
        assert_close(
            &format!("{name} loss"),
            loss.item(),
            expected["loss"].as_f64().unwrap(),
        );
        let grads = tape.backward(&loss);
        let grad = grads.get(&pi).unwrap();
        for (i, (g, e)) in grad
            .iter()
            .zip(floats(&expected["grad_policy_logps"]))
            .enumerate()
        {
            assert_close(&format!("{name} dloss/dpi[{i}]"), *g, e);
        }

        let mut sums = KtoMetricSums::default();
        sums.add_batch(&logps, &cfg);
        let ours = sums.metrics().to_record().to_json();
        let trl = expected["metrics"].as_object().unwrap();
        for key in SHARED_METRICS {
            // `loss` is the trainer's, not a logged metric of `_compute_loss`.
            let theirs = if key == "loss" {
                expected.get("loss")
            } else {
                trl.get(key)
            };
            match (ours.get(key), theirs) {
                (Some(a), Some(e)) => assert_close(
                    &format!("{name} {key}"),
                    a.as_f64().unwrap(),
                    e.as_f64().unwrap(),
                ),
                (None, None) => {}
                (a, e) => panic!("{name} {key}: ours {a:?}, TRL logged {e:?}"),
            }
        }
        let count = |label: bool| desirable.iter().filter(|&&d| d == label).count();
        assert_eq!(ours["num_desirable"], count(true));
        assert_eq!(ours["num_undesirable"], count(false));
    }
}

#[test]
fn kl_pairs_match_trl() {
    let cases = golden("kl_pairs.json");
    for case in cases["cases"].as_array().unwrap() {
        let rows = case["rows"].as_u64().unwrap() as usize;
        let batch_size = case["batch_size"].as_u64().unwrap() as usize;
        let expected: Vec<usize> = case["kl_partner"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as usize)
            .collect();
        assert_eq!(
            kl_partners(rows, batch_size),
            expected,
            "{rows} rows in batches of {batch_size}"
        );
    }
}
