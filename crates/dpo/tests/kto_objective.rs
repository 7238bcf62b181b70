//! KTO through the model: the whole loss of a tiny GPT against central
//! differences in f64, and `KtoObjective`'s batch loss and evaluation
//! against the same computation written out from the lower-level functions.

use autograd::gradcheck::{gradcheck_with, GradcheckOptions};
use autograd::{Precision, Tape};
use dpo::data::{kl_sequences, SftRow, UnpairedRow};
use dpo::loss::kto::{batch_kl, kto_loss, KtoConfig, KtoMetricSums, UnpairedLogps};
use dpo::objective::{evaluate_unpaired, KtoObjective, Objective};
use dpo::scoring::{score, score_sequences, ScoringBatch};
use transformer::{gradcheck_params, Model, ModelConfig, ModelParams};

fn row(prompt: &[u32], completion: &[u32], desirable: bool) -> UnpairedRow {
    UnpairedRow {
        prompt: prompt.to_vec(),
        completion: completion.to_vec(),
        desirable,
        line: 0,
    }
}

/// Rows of assorted lengths, one with an empty prompt, both labels.
fn rows() -> Vec<UnpairedRow> {
    vec![
        row(&[1, 2, 3], &[4, 5], true),
        row(&[], &[7, 8, 9], false),
        row(&[12], &[13], true),
        row(&[18, 19], &[20, 21, 22], false),
        row(&[6, 7, 8, 9], &[10], true),
    ]
}

const CONFIG: KtoConfig = KtoConfig {
    beta: 0.5,
    desirable_weight: 1.3,
    undesirable_weight: 0.8,
};

#[test]
fn kto_loss_gradients_of_every_parameter() {
    let config = ModelConfig {
        vocab_size: 23,
        block_size: 10,
        n_layer: 2,
        n_head: 2,
        n_embd: 8,
        bias: true,
        llama: None,
    };
    let model = Model::<f64>::new(config.clone(), 0);
    let rows = rows();
    let sequences: Vec<SftRow> = rows.iter().map(UnpairedRow::to_sequence).collect();
    let batch = ScoringBatch::sequences(&sequences);
    let reference: Vec<f64> = (0..rows.len()).map(|i| -6.0 - 0.9 * i as f64).collect();
    let desirable: Vec<bool> = rows.iter().map(|r| r.desirable).collect();
    let params = gradcheck_params(&config, 3);
    // The KL estimate is a constant of the loss (detached): any value will do.
    let report = gradcheck_with(
        params,
        &GradcheckOptions {
            max_entries_per_input: 1000,
            ..Default::default()
        },
        |tape, params| {
            let params = ModelParams::from_vec(&config, params.to_vec());
            let logps = score(&model, tape, &params, &batch).responses;
            kto_loss(tape, &logps, &reference, &desirable, 0.7, &CONFIG)
        },
    );
    assert_eq!(report.checked, model.num_params());
    assert!(report.max_error < 1e-6, "{report:?}");
}

fn tiny_config() -> ModelConfig {
    ModelConfig {
        vocab_size: 256,
        block_size: 12,
        n_layer: 2,
        n_head: 2,
        n_embd: 16,
        bias: true,
        llama: None,
    }
}

#[test]
fn kto_objective_batch_loss_uses_the_cached_reference_and_the_kl_pairs() {
    let policy = Model::<f32>::new(tiny_config(), 1);
    let reference = Model::<f32>::new(tiny_config(), 2);
    let rows = rows();
    // KL pairs in chunks of 2: {0, 1}, {2, 3}, {4}.
    let mut objective = KtoObjective::new(CONFIG, &rows, &rows, &reference, 2, 8);
    assert_eq!(objective.num_rows(), 10);

    let batch = [3, 0, 4];
    let tape = Tape::<f32>::new();
    let params = policy.bind(&tape);
    let out = objective.batch_loss(&policy, &tape, &params, &batch);

    // The same loss written out.
    let kl_all = kl_sequences(&rows, 2, tiny_config().block_size);
    let pick = |i: &usize| rows[*i].to_sequence();
    let sequences: Vec<SftRow> = batch.iter().map(pick).collect();
    let kl: Vec<SftRow> = batch.iter().map(|&i| kl_all[i].clone()).collect();
    assert_eq!(kl[0].completion, rows[2].completion); // row 3's partner is row 2
    assert_eq!(kl[1].completion, rows[1].completion); // row 0's partner is row 1
    assert_eq!(kl[2].completion, rows[4].completion); // row 4 is a chunk of one
    let estimate = batch_kl(
        &score_sequences(&policy, &kl, 8, Precision::F32),
        &score_sequences(&reference, &kl, 8, Precision::F32),
    );
    let reference_logps = score_sequences(&reference, &sequences, 8, Precision::F32);
    let desirable: Vec<bool> = batch.iter().map(|&i| rows[i].desirable).collect();
    let logps = score(
        &policy,
        &tape,
        &params,
        &ScoringBatch::sequences(&sequences),
    )
    .responses;
    let expected = kto_loss(
        &tape,
        &logps,
        &reference_logps,
        &desirable,
        estimate,
        &CONFIG,
    );
    assert_eq!(out.loss.item(), expected.item());
    assert!((out.metrics.get("loss") - expected.item() as f64).abs() < 1e-6);
    assert!((out.metrics.get("kl") - estimate).abs() < 1e-9);
    assert_eq!(out.metrics.get("num_desirable"), 2.0);
    assert_eq!(out.metrics.get("num_undesirable"), 1.0);
    let real: usize = sequences.iter().chain(&kl).map(SftRow::sequence_len).sum();
    assert_eq!(out.tokens, real);
}

#[test]
fn a_batch_without_undesirable_rows_reports_no_rejected_metrics() {
    let model = Model::<f32>::new(tiny_config(), 1);
    let rows = rows();
    let mut objective = KtoObjective::new(CONFIG, &rows, &[], &model, 2, 8);
    assert!(objective.evaluate(&model).is_none());
    let tape = Tape::<f32>::new();
    let params = model.bind(&tape);
    let out = objective.batch_loss(&model, &tape, &params, &[0, 2]);
    for absent in ["rewards/rejected", "logps/rejected", "rewards/margins"] {
        assert!(!out.metrics.contains(absent), "{:?}", out.metrics);
    }
    // The policy is the reference: every reward is 0, and so is the KL.
    assert_eq!(out.metrics.get("rewards/chosen"), 0.0);
    assert_eq!(out.metrics.get("kl"), 0.0);
    // 1 - sigmoid(0) = 1/2 per row, weighted.
    let loss = out.metrics.get("loss");
    assert!(
        (loss - 0.5 * CONFIG.desirable_weight).abs() < 1e-7,
        "{loss}"
    );
}

#[test]
fn evaluation_has_one_kl_estimate_per_chunk() {
    let policy = Model::<f64>::new(tiny_config(), 1);
    let reference = Model::<f64>::new(tiny_config(), 2);
    let rows = rows();
    let metrics = evaluate_unpaired(&policy, &reference, &rows, &CONFIG, 2);
    let kl_all = kl_sequences(&rows, 2, tiny_config().block_size);
    let sequences: Vec<SftRow> = rows.iter().map(UnpairedRow::to_sequence).collect();
    let logps = |model: &Model<f64>, s: &[SftRow]| score_sequences(model, s, 3, Precision::F32);
    let (pi, pi_kl) = (logps(&policy, &sequences), logps(&policy, &kl_all));
    let (re, re_kl) = (logps(&reference, &sequences), logps(&reference, &kl_all));
    let mut sums = KtoMetricSums::default();
    for chunk in [0..2, 2..4, 4..5] {
        sums.add_batch(
            &UnpairedLogps {
                policy: pi[chunk.clone()].to_vec(),
                reference: re[chunk.clone()].to_vec(),
                policy_kl: pi_kl[chunk.clone()].to_vec(),
                reference_kl: re_kl[chunk.clone()].to_vec(),
                desirable: rows[chunk].iter().map(|r| r.desirable).collect(),
            },
            &CONFIG,
        );
    }
    assert_eq!(sums.batches, 3);
    let expected = sums.metrics();
    let close = |a: f64, b: f64| (a - b).abs() <= 1e-12 * (1.0 + b.abs());
    assert!(
        close(metrics.loss, expected.loss),
        "{metrics:?} {expected:?}"
    );
    assert!(close(metrics.kl, expected.kl));
    assert!(close(
        metrics.rewards_margins.unwrap(),
        expected.rewards_margins.unwrap()
    ));
    assert_eq!((metrics.num_desirable, metrics.num_undesirable), (3, 2));
}
