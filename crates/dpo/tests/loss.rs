//! The DPO losses: the fused op against finite differences and against the
//! formulas built from primitive autograd ops.

use autograd::gradcheck::{gradcheck_with, random_inputs, GradcheckOptions};
use autograd::{Tape, Var};
use dpo::loss::margin::sigmoid_loss;
use dpo::loss::{
    dpo_loss, preference_loss, BcoShift, DpoLossConfig, LossType, Pair, PairContext, PairLoss,
    RunningMean, WeightedLoss,
};

const ALL: [LossType; 4] = [
    LossType::Sigmoid,
    LossType::Ipo,
    LossType::Hinge,
    LossType::Robust,
];

fn config(loss_type: LossType, label_smoothing: f64) -> DpoLossConfig {
    DpoLossConfig::new(loss_type, 0.7, label_smoothing)
}

#[test]
fn dpo_loss_gradcheck_every_type() {
    let pairs = 5;
    let reference: Vec<f64> = (0..2 * pairs).map(|i| -(i as f64) * 0.3 - 1.0).collect();
    let scored: Vec<usize> = (0..2 * pairs).map(|i| 1 + i % 4).collect();
    for loss_type in ALL {
        for e in [0.0, 0.2] {
            let cfg = config(loss_type, e);
            let report = gradcheck_with(
                random_inputs(&[&[2 * pairs]], 3)
                    .into_iter()
                    .map(|x| x * 3.0)
                    .collect(),
                &GradcheckOptions::default(),
                |tape, x| dpo_loss(tape, &x[0], &reference, &scored, &cfg),
            );
            assert!(report.max_error < 1e-6, "{loss_type:?} e={e}: {report:?}");
        }
    }
}

/// The loss written with primitive ops, as the formulas read.
fn composed(
    tape: &Tape<f64>,
    pi: &Var<f64>,
    reference: &[f64],
    scored: &[usize],
    cfg: &DpoLossConfig,
) -> Var<f64> {
    let n = reference.len() / 2;
    let reference = tape.constant(ndarray::Array1::from(reference.to_vec()).into_dyn());
    let ratios = tape.sub(pi, &reference);
    let (ratio_c, ratio_r) = (tape.narrow(&ratios, 0, 0, n), tape.narrow(&ratios, 0, n, n));
    let beta = cfg.beta;
    let e = cfg.label_smoothing;
    let z = tape.mul_scalar(&tape.sub(&ratio_c, &ratio_r), beta); // beta d
    let per_pair = match cfg.losses[0].loss_type {
        LossType::Sigmoid => tape.sub(
            &tape.mul_scalar(&tape.logsigmoid(&z), -(1.0 - e)),
            &tape.mul_scalar(&tape.logsigmoid(&tape.neg(&z)), e),
        ),
        LossType::Robust => tape.mul_scalar(
            &tape.add(
                &tape.mul_scalar(&tape.logsigmoid(&z), -(1.0 - e)),
                &tape.mul_scalar(&tape.logsigmoid(&tape.neg(&z)), e),
            ),
            1.0 / (1.0 - 2.0 * e),
        ),
        LossType::Hinge => tape.relu(&tape.add_scalar(&tape.neg(&z), 1.0)),
        LossType::Ipo => {
            let counts = |range: std::ops::Range<usize>| {
                tape.constant(
                    ndarray::Array1::from(
                        scored[range].iter().map(|&c| c as f64).collect::<Vec<_>>(),
                    )
                    .into_dyn(),
                )
            };
            let avg_c = tape.div(&ratio_c, &counts(0..n));
            let avg_r = tape.div(&ratio_r, &counts(n..2 * n));
            let gap = tape.add_scalar(&tape.sub(&avg_c, &avg_r), -1.0 / (2.0 * beta));
            tape.mul(&gap, &gap)
        }
        other => unreachable!("no composition written for {other:?}"),
    };
    tape.mean_all(&per_pair)
}

#[test]
fn dpo_loss_matches_composition() {
    let pairs = 6;
    let reference: Vec<f64> = (0..2 * pairs).map(|i| -(i as f64) * 0.5 - 2.0).collect();
    let scored: Vec<usize> = (0..2 * pairs).map(|i| 1 + (i * 7) % 5).collect();
    let pi = random_inputs(&[&[2 * pairs]], 8).remove(0) * 4.0;
    for loss_type in ALL {
        for e in [0.0, 0.2] {
            let cfg = config(loss_type, e);
            let t1 = Tape::<f64>::new();
            let x1 = t1.leaf(pi.clone());
            let fused = dpo_loss(&t1, &x1, &reference, &scored, &cfg);
            let t2 = Tape::<f64>::new();
            let x2 = t2.leaf(pi.clone());
            let comp = composed(&t2, &x2, &reference, &scored, &cfg);
            assert!(
                (fused.item() - comp.item()).abs() < 1e-12,
                "{loss_type:?}: {} vs {}",
                fused.item(),
                comp.item()
            );
            let (g1, g2) = (t1.backward(&fused), t2.backward(&comp));
            for (a, b) in g1.get(&x1).unwrap().iter().zip(g2.get(&x2).unwrap().iter()) {
                assert!((a - b).abs() < 1e-12, "{loss_type:?} gradients: {a} vs {b}");
            }
        }
    }
}

#[test]
fn sigmoid_loss_is_stable_for_huge_margins() {
    for margin in [1e4, -1e4] {
        let pair = Pair {
            policy_chosen: margin,
            policy_rejected: 0.0,
            ref_chosen: 0.0,
            ref_rejected: 0.0,
            n_chosen: 1.0,
            n_rejected: 1.0,
        };
        let PairLoss {
            loss,
            dchosen,
            drejected,
        } = sigmoid_loss(&pair, 0.7, 0.0);
        assert!(loss.is_finite() && dchosen.is_finite() && drejected.is_finite());
        if margin > 0.0 {
            assert!(loss >= 0.0 && loss < 1e-300_f64.max(0.0) + 1e-100);
        } else {
            assert!((loss - 0.7 * 1e4).abs() < 1e-6);
        }
    }
}

/// Label smoothings worth checking for `loss_type` (exo_pair needs e > 0).
fn smoothings(loss_type: LossType) -> &'static [f64] {
    match loss_type {
        LossType::ExoPair => &[1e-3, 0.2],
        _ => &[0.0, 0.2],
    }
}

/// The losses one at a time, and the weighted combinations of TRL's MPO style.
fn every_config() -> Vec<DpoLossConfig> {
    let mut configs = Vec::new();
    for (_, loss_type) in LossType::ALL {
        for &e in smoothings(loss_type) {
            let mut cfg = config(loss_type, e);
            cfg.discopop_tau = 0.3;
            configs.push(cfg);
        }
    }
    let weighted = |terms: &[(LossType, f64)]| {
        let mut cfg = config(LossType::Sigmoid, 0.1);
        cfg.losses = terms
            .iter()
            .map(|&(loss_type, weight)| WeightedLoss { loss_type, weight })
            .collect();
        cfg
    };
    configs.push(weighted(&[(LossType::Sigmoid, 1.0), (LossType::Sft, 0.5)]));
    configs.push(weighted(&[
        (LossType::Sigmoid, 0.8),
        (LossType::BcoPair, 0.2),
        (LossType::Sft, 1.0),
    ]));
    configs.push(weighted(&[(LossType::Simpo, 1.0), (LossType::Sft, 0.7)]));
    configs
}

/// The fused op of every loss (and combination) against central differences
/// in f64, with respect to the policy log-probs and, for orpo, the chosen
/// prompts' log-probs. bco_pair's shift is a constant of the step here.
#[test]
fn preference_loss_gradcheck_every_loss() {
    let pairs = 5;
    let reference: Vec<f64> = (0..2 * pairs).map(|i| -4.0 - (i as f64) * 0.3).collect();
    let scored: Vec<usize> = (0..2 * pairs).map(|i| 1 + i % 4).collect();
    let prompt_scored: Vec<usize> = (0..pairs).map(|i| i % 3).collect();
    for cfg in every_config() {
        cfg.validate().unwrap();
        let orpo = cfg.needs_prompt_logps();
        // Log-probs around -5: below 0, as ORPO's odds need.
        let inputs: Vec<_> = random_inputs(&[&[2 * pairs], &[pairs]], 3)
            .into_iter()
            .map(|x| x * 0.8 - 5.0)
            .take(if orpo { 2 } else { 1 })
            .collect();
        let report = gradcheck_with(inputs, &GradcheckOptions::default(), |tape, x| {
            let mut context = PairContext::from_flat(&reference, &scored);
            if orpo {
                context.n_prompt = prompt_scored.clone();
            }
            preference_loss(tape, &x[0], x.get(1), &context, BcoShift::Fixed(0.3), &cfg).0
        });
        assert_eq!(report.checked, if orpo { 3 * pairs } else { 2 * pairs });
        assert!(
            report.max_error < 1e-6,
            "{} e={}: {report:?}",
            cfg.names(),
            cfg.label_smoothing
        );
    }
}

#[test]
fn bco_running_mean_is_the_mean_of_the_batch_means() {
    let mut running = RunningMean::default();
    assert_eq!(running.update(2.0), 2.0);
    assert_eq!(running.update(-1.0), 0.5);
    assert_eq!(running.update(0.5), 0.5);
    assert_eq!(running.count, 3);
}

#[test]
fn loss_configs_are_checked() {
    let err = |cfg: DpoLossConfig| cfg.validate().unwrap_err().to_string();
    assert!(err(config(LossType::ExoPair, 0.0)).contains("exo_pair"));
    assert!(err(config(LossType::Robust, 0.5)).contains("[0, 0.5)"));
    let mut mixed = config(LossType::Simpo, 0.0);
    mixed.losses.push(WeightedLoss {
        loss_type: LossType::Sigmoid,
        weight: 1.0,
    });
    assert!(err(mixed).contains("reference-free"));
    let mut orpo_sft = config(LossType::Orpo, 0.0);
    orpo_sft.losses.push(WeightedLoss {
        loss_type: LossType::Sft,
        weight: 1.0,
    });
    assert!(err(orpo_sft).contains("orpo"));
    let mut twice = config(LossType::Sigmoid, 0.0);
    twice.losses.push(twice.losses[0]);
    assert!(err(twice).contains("twice"));
    let mut tau = config(LossType::Discopop, 0.0);
    tau.discopop_tau = 0.0;
    assert!(err(tau).contains("tau"));
    assert_eq!("dpo".parse::<LossType>().unwrap(), LossType::Sigmoid);
    for (name, loss_type) in LossType::ALL {
        assert_eq!(name.parse::<LossType>().unwrap(), loss_type);
        assert_eq!(loss_type.name(), name);
    }
}
