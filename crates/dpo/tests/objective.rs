//! The training objectives and the data functions the trainer runs: the
//! epoch batch plan, `prepare_rows`, and SFT and DPO batch losses and
//! evaluations checked against the same computation written out from the
//! lower-level functions.

use std::io::Write;

use autograd::{Precision, Tape};
use dpo::data::{
    collate_pairs, epoch_batches, load_preferences, padding_share, prepare_rows, truncate_rows,
    BatchOrder, DataError, LoadOptions, PairLayout, PreferenceRow, SftRow,
};
use dpo::loss::{dpo_loss, DpoLossConfig, LossType};
use dpo::objective::{sft_batch_loss, DpoObjective, Objective, SftObjective};
use dpo::scoring::{score, score_pairs, ScoringBatch};
use rand::{Rng, SeedableRng};
use transformer::{ByteTokenizer, Model, ModelConfig};

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

fn pair(prompt: &[u32], chosen: &[u32], rejected: &[u32]) -> PreferenceRow {
    PreferenceRow {
        prompt: prompt.to_vec(),
        chosen: chosen.to_vec(),
        rejected: rejected.to_vec(),
        line: 0,
    }
}

/// Pairs of assorted lengths, one with an empty prompt.
fn pairs() -> Vec<PreferenceRow> {
    vec![
        pair(&[1, 2, 3], &[4, 5], &[6]),
        pair(&[], &[7, 8, 9], &[10, 11]),
        pair(&[12], &[13], &[14, 15, 16, 17]),
        pair(&[18, 19], &[20, 21, 22], &[23, 24, 25]),
        pair(&[26, 27, 28, 29], &[30], &[31, 32]),
    ]
}

fn sigmoid() -> DpoLossConfig {
    DpoLossConfig::new(LossType::Sigmoid, 0.1, 0.0)
}

#[test]
fn epoch_batches_cover_every_row_once_and_are_a_function_of_their_arguments() {
    let mut rng = rand::rngs::StdRng::seed_from_u64(3);
    let lengths: Vec<usize> = (0..103).map(|_| rng.gen_range(1..200)).collect();
    for order in [BatchOrder::Shuffled, BatchOrder::GroupedByLength] {
        for batch_size in [1, 4, 7, 103, 200] {
            let first = epoch_batches(&lengths, batch_size, 5, 0, order);
            let mut seen: Vec<usize> = first.iter().flatten().copied().collect();
            seen.sort_unstable();
            assert_eq!(seen, (0..103).collect::<Vec<_>>());
            assert!(first.iter().all(|b| !b.is_empty() && b.len() <= batch_size));
            assert_eq!(first, epoch_batches(&lengths, batch_size, 5, 0, order));
            if batch_size < 103 {
                assert_ne!(first, epoch_batches(&lengths, batch_size, 5, 1, order));
                assert_ne!(first, epoch_batches(&lengths, batch_size, 6, 0, order));
            }
        }
    }
    // Grouping by length is what it is for: less padding.
    let plain = epoch_batches(&lengths, 4, 5, 0, BatchOrder::Shuffled);
    let grouped = epoch_batches(&lengths, 4, 5, 0, BatchOrder::GroupedByLength);
    assert!(padding_share(&grouped, &lengths) < padding_share(&plain, &lengths) / 2.0);
    // The file's order: consecutive rows, the same every epoch and seed.
    let in_file = epoch_batches(&lengths, 7, 5, 0, BatchOrder::File);
    assert_eq!(in_file.len(), 15);
    assert_eq!(in_file[0], (0..7).collect::<Vec<_>>());
    assert_eq!(in_file[14], (98..103).collect::<Vec<_>>());
    assert_eq!(in_file, epoch_batches(&lengths, 7, 6, 3, BatchOrder::File));
}

fn jsonl_file(lines: &[&str]) -> tempfile::NamedTempFile {
    let mut file = tempfile::Builder::new()
        .suffix(".jsonl")
        .tempfile()
        .unwrap();
    for line in lines {
        writeln!(file, "{line}").unwrap();
    }
    file
}

#[test]
fn prepare_rows_is_load_then_truncate() {
    let file = jsonl_file(&[
        r#"{"prompt": "a long prompt here", "chosen": " yes", "rejected": " no"}"#,
        r#"{"prompt": "hi", "chosen": " a fine answer", "rejected": " bad"}"#,
        r#"{"prompt_ids": [1, 2], "chosen_ids": [3], "rejected_ids": [4, 5]}"#,
    ]);
    let prepared = prepare_rows::<PreferenceRow>(
        file.path(),
        &ByteTokenizer,
        256,
        12,
        6,
        &LoadOptions::default(),
    )
    .unwrap();
    let (loaded, load) = load_preferences(file.path(), &ByteTokenizer, 256, false).unwrap();
    let (truncated, report) = truncate_rows(&loaded, 12, 6, false).unwrap();
    assert_eq!(prepared.rows, truncated);
    assert_eq!(prepared.load, load);
    assert_eq!(prepared.truncation, report);
    assert_eq!(prepared.truncation.truncated, 2);
    assert!(prepared.rows.iter().all(|r| r.max_sequence_len() <= 12));
}

#[test]
fn prepare_rows_refuses_a_file_left_empty_by_truncation() {
    // A 1-token response after a prompt cut to nothing has no scored token.
    let file =
        jsonl_file(&[r#"{"prompt_ids": [1, 2, 3], "chosen_ids": [4], "rejected_ids": [5, 6, 7]}"#]);
    let err = prepare_rows::<PreferenceRow>(
        file.path(),
        &ByteTokenizer,
        256,
        3,
        0,
        &LoadOptions {
            skip_invalid: true,
            assistant_only_loss: false,
        },
    )
    .unwrap_err();
    assert!(matches!(err, DataError::NoRows { skipped: 1, .. }), "{err}");
    let err = prepare_rows::<PreferenceRow>(
        file.path(),
        &ByteTokenizer,
        256,
        3,
        0,
        &LoadOptions::default(),
    )
    .unwrap_err();
    assert!(
        matches!(err, DataError::NoScoredTokenAfterTruncation { line: 1, .. }),
        "{err}"
    );
}

#[test]
fn sft_objective_batch_loss_is_the_sft_loss_of_its_rows() {
    let model = Model::<f32>::new(tiny_config(), 1);
    let rows: Vec<SftRow> = pairs()
        .into_iter()
        .map(|p| SftRow {
            prompt: p.prompt,
            completion: p.chosen,
            line: 0,
            completion_mask: None,
        })
        .collect();
    let mut objective = SftObjective::new(rows.clone(), rows[..2].to_vec(), 2);
    assert_eq!(objective.train_lengths(), vec![5, 3, 2, 5, 5]);

    let batch = [3, 0, 2];
    let tape = Tape::<f32>::new();
    let params = model.bind(&tape);
    let out = objective.batch_loss(&model, &tape, &params, &batch);
    let chosen: Vec<SftRow> = batch.iter().map(|&i| rows[i].clone()).collect();
    let (expected, scored) = sft_batch_loss(&model, &tape, &params, &chosen);
    assert_eq!(scored, 3 + 2 + 1);
    assert_eq!(out.loss.item(), expected.item());
    assert_eq!(out.metrics.get("loss"), expected.item() as f64);
    assert_eq!(out.tokens, 5 + 5 + 2);
    assert_eq!(out.padded_tokens, 3 * 5);

    // Held-out: the token-weighted mean over both rows.
    let eval = objective.evaluate(&model).unwrap();
    let tape = Tape::<f32>::no_grad();
    let params = model.bind(&tape);
    let (all, _) = sft_batch_loss(&model, &tape, &params, &rows[..2]);
    let held_out = eval.get("loss");
    assert!(
        (held_out - all.item() as f64).abs() < 1e-6 * held_out.abs(),
        "{eval:?}"
    );
}

#[test]
fn dpo_objective_batch_loss_uses_the_cached_reference_log_probs() {
    let policy = Model::<f32>::new(tiny_config(), 1);
    let reference = Model::<f32>::new(tiny_config(), 2);
    let rows = pairs();
    let mut objective = DpoObjective::with_layout(
        sigmoid(),
        rows.clone(),
        rows.clone(),
        Some(&reference),
        2,
        PairLayout::Separate,
    );
    assert_eq!(objective.num_rows(), 10);

    let batch = [4, 1, 2];
    let tape = Tape::<f32>::new();
    let params = policy.bind(&tape);
    let out = objective.batch_loss(&policy, &tape, &params, &batch);

    // The same loss written out: reference log-probs computed directly.
    let batch_rows: Vec<PreferenceRow> = batch.iter().map(|&i| rows[i].clone()).collect();
    let (reference_logps, _) = score_pairs(
        &reference,
        &batch_rows,
        8,
        PairLayout::Separate,
        Precision::F32,
        false,
    );
    let flat: Vec<f64> = reference_logps
        .iter()
        .map(|r| r.0)
        .chain(reference_logps.iter().map(|r| r.1))
        .collect();
    let pairs_batch = collate_pairs(&batch_rows);
    let scoring = ScoringBatch::pairs(&batch_rows, PairLayout::Separate, false);
    let logps = score(&policy, &tape, &params, &scoring).responses;
    let expected = dpo_loss(&tape, &logps, &flat, &pairs_batch.scored_tokens, &sigmoid());
    assert_eq!(out.loss.item(), expected.item());
    assert!((out.metrics.get("loss") - expected.item() as f64).abs() < 1e-6);
    assert_eq!(out.metrics.get("num_pairs"), 3.0);
    let real: usize = batch_rows
        .iter()
        .map(|r| 2 * r.prompt.len() + r.chosen.len() + r.rejected.len())
        .sum();
    assert_eq!(out.tokens, real);
    assert_eq!(out.padded_tokens, 2 * 3 * pairs_batch.seq_len);
}

#[test]
fn dpo_objective_evaluates_rewards_and_the_policy_pair_accuracy() {
    let policy = Model::<f32>::new(tiny_config(), 1);
    let rows = pairs();
    // Reference-free: the rewards are beta times the policy log-probs.
    let mut objective = DpoObjective::new(sigmoid(), rows[..1].to_vec(), rows.clone(), None, 3);
    let eval = objective.evaluate(&policy).unwrap();
    let mut no_held_out = DpoObjective::new(sigmoid(), rows.clone(), Vec::new(), None, 3);
    assert!(no_held_out.evaluate(&policy).is_none());
    let (logps, _) = score_pairs(
        &policy,
        &rows,
        3,
        PairLayout::default(),
        Precision::F32,
        false,
    );
    let n = rows.len() as f64;
    let mean_chosen = logps.iter().map(|l| l.0).sum::<f64>() / n;
    let close = |a: f64, b: f64| (a - b).abs() <= 1e-9 * (1.0 + b.abs());
    assert!(close(eval.get("logps/chosen"), mean_chosen), "{eval:?}");
    assert!(
        close(eval.get("rewards/chosen"), 0.1 * mean_chosen),
        "{eval:?}"
    );
    let preferred = logps.iter().filter(|(c, r)| c > r).count() as f64;
    assert_eq!(eval.get("pair_accuracy"), preferred / n);
    // Without a reference, the reward accuracy is the pair accuracy.
    assert_eq!(eval.get("rewards/accuracies"), preferred / n);
    assert_eq!(eval.get("num_pairs"), n);
}

#[test]
fn orpo_nll_is_the_sft_loss_of_the_whole_chosen_sequences() {
    let policy = Model::<f32>::new(tiny_config(), 1);
    let rows = pairs();
    let orpo = DpoLossConfig::new(LossType::Orpo, 0.1, 0.0);
    let mut objective = DpoObjective::new(orpo.clone(), rows.clone(), rows.clone(), None, 2);
    let batch = [0, 1, 3];
    let tape = Tape::<f32>::new();
    let params = policy.bind(&tape);
    let out = objective.batch_loss(&policy, &tape, &params, &batch);
    // TRL's ORPO NLL: every token of prompt + chosen but the first, as one SFT completion.
    let whole: Vec<SftRow> = batch
        .iter()
        .map(|&i| SftRow {
            prompt: Vec::new(),
            completion: [&rows[i].prompt[..], &rows[i].chosen[..]].concat(),
            line: 0,
            completion_mask: None,
        })
        .collect();
    let (nll, scored) = sft_batch_loss(&policy, &tape, &params, &whole);
    assert_eq!(scored, (3 + 2 - 1) + (3 - 1) + (2 + 3 - 1));
    let close = |a: f64, b: f64| (a - b).abs() <= 1e-5 * (1.0 + b.abs());
    assert!(
        close(out.metrics.get("nll_loss"), nll.item() as f64),
        "{:?} vs {}",
        out.metrics,
        nll.item()
    );
    for key in ["log_odds_ratio", "log_odds_chosen", "rewards/chosen"] {
        assert!(out.metrics.get(key).is_finite(), "{key}: {:?}", out.metrics);
    }
    // Held out, the same metrics through the no-grad path.
    let eval = objective.evaluate(&policy).unwrap();
    assert!(eval.get("nll_loss").is_finite() && eval.get("loss").is_finite());
}

#[test]
fn bco_running_mean_is_saved_and_restored_with_the_objective_state() {
    let policy = Model::<f32>::new(tiny_config(), 1);
    let reference = Model::<f32>::new(tiny_config(), 2);
    let rows = pairs();
    let bco = DpoLossConfig::new(LossType::BcoPair, 0.1, 0.0);
    let new_objective =
        || DpoObjective::new(bco.clone(), rows.clone(), rows.clone(), Some(&reference), 2);
    let step = |objective: &mut DpoObjective, batch: &[usize]| {
        let tape = Tape::<f32>::new();
        let params = policy.bind(&tape);
        objective
            .batch_loss(&policy, &tape, &params, batch)
            .loss
            .item()
    };
    let mut first = new_objective();
    assert!(first.state().is_some());
    step(&mut first, &[0, 1]);
    step(&mut first, &[2, 3]);
    let saved = first.state().unwrap();
    assert_eq!(saved["bco_running_mean"]["count"], 2);

    let mut resumed = new_objective();
    resumed.restore_state(&saved).unwrap();
    assert_eq!(resumed.state(), Some(saved));
    // The third batch sees the same shift in both runs; a fresh one does not.
    let (a, b) = (step(&mut first, &[4, 0]), step(&mut resumed, &[4, 0]));
    assert_eq!(a, b);
    assert_ne!(step(&mut new_objective(), &[4, 0]), a);
    // Other losses keep no state.
    let sigmoid_objective = DpoObjective::new(sigmoid(), rows.clone(), Vec::new(), None, 2);
    assert!(sigmoid_objective.state().is_none());
}

/// `score_pairs` batches the rows shortest first; what it returns is in the
/// rows' order and each row's values are those of the row scored alone, bit
/// for bit, in both layouts, with and without prompts.
#[test]
fn score_pairs_returns_each_rows_own_logps_in_order_whatever_the_batching() {
    let model = Model::<f32>::new(tiny_config(), 5);
    let rows = pairs();
    for layout in [PairLayout::SharedPrefix, PairLayout::Separate] {
        for with_prompts in [false, true] {
            let alone: Vec<_> = rows
                .iter()
                .map(|row| {
                    let (pairs, prompts) = score_pairs(
                        &model,
                        std::slice::from_ref(row),
                        1,
                        layout,
                        Precision::F32,
                        with_prompts,
                    );
                    (pairs[0], prompts.first().copied())
                })
                .collect();
            for batch_size in [2, 3, 8] {
                let (pairs, prompts) = score_pairs(
                    &model,
                    &rows,
                    batch_size,
                    layout,
                    Precision::F32,
                    with_prompts,
                );
                for (i, (pair, prompt)) in alone.iter().enumerate() {
                    assert_eq!(pairs[i], *pair, "{layout:?}, batch {batch_size}, row {i}");
                    assert_eq!(prompts.get(i).copied(), *prompt, "row {i}");
                }
            }
        }
    }
}
