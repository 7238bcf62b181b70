//! Prefix sharing (`[prompt | chosen | rejected]` in one row per pair)
//! against the separate layout: the collated layout, the per-sequence
//! log-probs (f32, rel 1e-6), the f64 gradient of the loss through the whole
//! model, every pair objective's loss, and the lazy reference cache.

use autograd::gradcheck::{gradcheck_with, GradcheckOptions};
use autograd::kernels::attention::KeyGap;
use autograd::{Precision, Tape, Tensor};
use dpo::data::{collate_pairs, collate_shared_pairs, PairLayout, PreferenceRow, IGNORE_INDEX};
use dpo::loss::{dpo_loss, DpoLossConfig, LossType};
use dpo::objective::{DpoObjective, Objective};
use dpo::scoring::{score, score_pairs, ScoringBatch};
use rand::{Rng, SeedableRng};
use transformer::{gradcheck_params, Model, ModelConfig, ModelParams};

fn row(prompt: &[u32], chosen: &[u32], rejected: &[u32]) -> PreferenceRow {
    PreferenceRow {
        prompt: prompt.to_vec(),
        chosen: chosen.to_vec(),
        rejected: rejected.to_vec(),
        line: 0,
    }
}

/// Rows with random lengths (prompts may be empty, responses have at least
/// one scored token), ids below `vocab`.
fn random_rows(
    n: usize,
    max_prompt: usize,
    max_response: usize,
    vocab: u32,
    seed: u64,
) -> Vec<PreferenceRow> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut ids = |len: usize| -> Vec<u32> { (0..len).map(|_| rng.gen_range(0..vocab)).collect() };
    let lens: Vec<(usize, usize, usize)> = {
        let mut r = rand::rngs::StdRng::seed_from_u64(seed + 1);
        (0..n)
            .map(|_| {
                let p = r.gen_range(0..=max_prompt);
                let min = if p == 0 { 2 } else { 1 };
                (
                    p,
                    r.gen_range(min..=max_response),
                    r.gen_range(min..=max_response),
                )
            })
            .collect()
    };
    lens.into_iter()
        .map(|(p, c, r)| {
            let (prompt, chosen, rejected) = (ids(p), ids(c), ids(r));
            row(&prompt, &chosen, &rejected)
        })
        .collect()
}

#[test]
fn shared_layout_positions_gaps_and_targets() {
    let rows = [row(&[1, 2], &[3, 4, 5], &[6, 7]), row(&[], &[8, 9], &[10])];
    let b = collate_shared_pairs(&rows);
    assert_eq!((b.num_pairs, b.seq_len), (2, 7));
    assert_eq!(b.ids, [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 0, 0, 0, 0]);
    // the rejected span restarts at len(prompt); padding at 0
    assert_eq!(b.positions, [0, 1, 2, 3, 4, 2, 3, 0, 1, 0, 0, 0, 0, 0]);
    assert_eq!(b.key_gaps, [KeyGap::new(2, 5, 7), KeyGap::new(0, 2, 3)]);
    let x = IGNORE_INDEX;
    // chosen token j is predicted at P + j - 1
    assert_eq!(b.chosen_targets, [x, 3, 4, 5, x, x, x, 9, x, x, x, x, x, x]);
    // the first rejected token from the last prompt position, then P + C + j - 1;
    // with an empty prompt the first token of each response is unscored
    assert_eq!(
        b.rejected_targets,
        [x, 6, x, x, x, 7, x, x, x, x, x, x, x, x]
    );
}

/// The per-sequence log-probs of both layouts, f32, over rows that cross the
/// 32-row attention blocks, with a shared row longer than the block size.
/// `gpt2` and the three Llama-family variants at its sizes (vocabulary,
/// positions, layers, width): grouped-query heads with llama3 rope scaling
/// and an untied head, Qwen2's biases, Qwen3's q/k norms.
fn with_the_llama_family(gpt2: ModelConfig) -> Vec<ModelConfig> {
    let mut configs = vec![gpt2.clone()];
    for preset in ["llama-tiny", "qwen2-tiny", "qwen3-tiny"] {
        let mut config = ModelConfig::preset(preset).unwrap();
        (config.vocab_size, config.block_size) = (gpt2.vocab_size, gpt2.block_size);
        (config.n_layer, config.n_embd) = (gpt2.n_layer, gpt2.n_embd);
        let llama = config.llama.as_mut().unwrap();
        llama.head_dim = if preset == "qwen3-tiny" { 6 } else { 4 };
        llama.intermediate_size = 2 * gpt2.n_embd + 2;
        if let Some(scaling) = &mut llama.rope.llama3 {
            scaling.original_max_position_embeddings = 4;
        }
        configs.push(config);
    }
    configs
}

#[test]
fn shared_log_probs_equal_the_separate_ones_in_f32() {
    let config = ModelConfig {
        vocab_size: 50,
        block_size: 48,
        n_layer: 2,
        n_head: 2,
        n_embd: 16,
        bias: true,
        llama: None,
    };
    for config in with_the_llama_family(config) {
        let model = Model::<f32>::new(config.clone(), 7);
        let mut rows = random_rows(7, 30, 17, 50, 1);
        rows.push(row(&[], &[1, 2], &[3, 4]));
        rows.push(row(&[4], &[5], &[6]));
        rows.push(row(
            &(0..30).collect::<Vec<u32>>(),
            &(0..18).collect::<Vec<u32>>(),
            &[9; 18],
        ));
        let tape = Tape::<f32>::no_grad();
        let params = model.bind(&tape);
        let scores = |layout| {
            score(
                &model,
                &tape,
                &params,
                &ScoringBatch::pairs(&rows, layout, false),
            )
        };
        let shared = scores(PairLayout::SharedPrefix).responses;
        let separate = scores(PairLayout::Separate).responses;
        assert!(collate_shared_pairs(&rows).seq_len > config.block_size);
        for (s, u) in shared.value().iter().zip(separate.value().iter()) {
            let rel = ((s - u) / u).abs();
            assert!(
                rel < 1e-6,
                "{config:?}: shared {s} vs separate {u}: rel {rel:e}"
            );
        }
    }
}

/// A batch with no padding (every row the same length) skips the gathers.
#[test]
fn shared_log_probs_without_padding_equal_the_separate_ones() {
    let config = ModelConfig {
        vocab_size: 20,
        block_size: 8,
        n_layer: 1,
        n_head: 2,
        n_embd: 8,
        bias: true,
        llama: None,
    };
    for config in with_the_llama_family(config) {
        let model = Model::<f64>::new(config.clone(), 3);
        let rows = [
            row(&[1, 2], &[3, 4], &[5, 6, 7]),
            row(&[8], &[9, 10, 11], &[12, 13]),
        ];
        let tape = Tape::<f64>::no_grad();
        let params = model.bind(&tape);
        let scores = |layout| {
            score(
                &model,
                &tape,
                &params,
                &ScoringBatch::pairs(&rows, layout, false),
            )
        };
        let shared = scores(PairLayout::SharedPrefix).responses;
        let separate = scores(PairLayout::Separate).responses;
        for (s, u) in shared.value().iter().zip(separate.value().iter()) {
            assert!((s - u).abs() < 1e-12 * u.abs(), "{config:?}: {s} vs {u}");
        }
    }
}

/// The DPO loss of a shared batch through the whole model, in f64: against
/// central differences (every parameter entry), and its gradient against the
/// separate layout's.
#[test]
fn shared_dpo_loss_gradients_of_every_parameter() {
    let config = ModelConfig {
        vocab_size: 13,
        block_size: 10,
        n_layer: 2,
        n_head: 2,
        n_embd: 8,
        bias: true,
        llama: None,
    };
    for config in with_the_llama_family(config) {
        let model = Model::<f64>::new(config.clone(), 0);
        // several pairs: an empty prompt, length-1 responses, different lengths
        let rows = [
            row(&[1, 2, 3], &[4, 5], &[6, 7, 8, 9]),
            row(&[], &[10, 11, 12], &[0, 3]),
            row(&[5, 5], &[1], &[2]),
        ];
        let shared = ScoringBatch::pairs(&rows, PairLayout::SharedPrefix, false);
        let separate = collate_pairs(&rows);
        let reference: Vec<f64> = (0..6).map(|i| -3.0 - 0.7 * i as f64).collect();
        let loss = DpoLossConfig::new(LossType::Sigmoid, 0.5, 0.0);
        let options = GradcheckOptions {
            max_entries_per_input: 1000,
            ..Default::default()
        };
        let report = gradcheck_with(gradcheck_params(&config, 3), &options, |tape, params| {
            let params = ModelParams::from_vec(&config, params.to_vec());
            let logps = score(&model, tape, &params, &shared).responses;
            dpo_loss(tape, &logps, &reference, &separate.scored_tokens, &loss)
        });
        assert_eq!(report.checked, model.num_params());
        assert!(report.max_error < 1e-6, "{report:?}");

        // the same gradient as the separate layout, to f64 rounding
        let grads = |layout: PairLayout| -> Vec<f64> {
            let tape = Tape::<f64>::new();
            let leaves: Vec<_> = gradcheck_params(&config, 3)
                .into_iter()
                .map(|p| tape.leaf(p))
                .collect();
            let params = ModelParams::from_vec(&config, leaves.clone());
            let batch = ScoringBatch::pairs(&rows, layout, false);
            let logps = score(&model, &tape, &params, &batch).responses;
            let l = dpo_loss(&tape, &logps, &reference, &separate.scored_tokens, &loss);
            let g = tape.backward(&l);
            leaves
                .iter()
                .flat_map(|p| g.get(p).unwrap().iter().copied().collect::<Vec<_>>())
                .collect()
        };
        let (a, b) = (grads(PairLayout::SharedPrefix), grads(PairLayout::Separate));
        let worst = a
            .iter()
            .zip(&b)
            .map(|(x, y)| (x - y).abs() / y.abs().max(1e-3))
            .fold(0.0, f64::max);
        assert!(worst < 1e-10, "{config:?}: gradients differ by {worst:e}");
    }
}

/// ORPO's second read of the hidden states (the chosen prompt's tokens).
#[test]
fn shared_prompt_log_probs_equal_the_separate_ones() {
    let config = ModelConfig {
        vocab_size: 13,
        block_size: 10,
        n_layer: 1,
        n_head: 2,
        n_embd: 8,
        bias: true,
        llama: None,
    };
    let model = Model::<f64>::new(config.clone(), 4);
    let rows = [
        row(&[1, 2, 3], &[4, 5], &[6, 7, 8, 9]),
        row(&[], &[10, 11, 12], &[0, 3]),
        row(&[5, 5], &[1], &[2]),
    ];
    let tape = Tape::<f64>::no_grad();
    let params = model.bind(&tape);
    let run = |layout| {
        let scores = score(
            &model,
            &tape,
            &params,
            &ScoringBatch::pairs(&rows, layout, true),
        );
        let prompts = scores.prompts.expect("prompts asked for");
        (scores.responses.value().clone(), prompts.value().clone())
    };
    let (shared, separate) = (run(PairLayout::SharedPrefix), run(PairLayout::Separate));
    let close = |a: &Tensor<f64>, b: &Tensor<f64>| {
        a.iter()
            .zip(b.iter())
            .all(|(x, y)| (x - y).abs() <= 1e-12 * y.abs().max(1.0))
    };
    assert!(close(&shared.0, &separate.0) && close(&shared.1, &separate.1));
}

/// The first loss of every pair objective is the same in both layouts.
#[test]
fn every_pair_objective_gives_the_same_loss_in_both_layouts() {
    let config = ModelConfig {
        vocab_size: 40,
        block_size: 24,
        n_layer: 2,
        n_head: 2,
        n_embd: 16,
        bias: true,
        llama: None,
    };
    let policy = Model::<f32>::new(config.clone(), 1);
    let reference = Model::<f32>::new(config.clone(), 2);
    let rows = random_rows(9, 14, 10, 40, 5);
    let batch = [3, 0, 7, 5];
    for (loss_type, smoothing) in [
        (LossType::Sigmoid, 0.0),
        (LossType::Ipo, 0.0),
        (LossType::Hinge, 0.0),
        (LossType::Robust, 0.1),
        (LossType::ExoPair, 1e-3),
        (LossType::NcaPair, 0.0),
        (LossType::BcoPair, 0.0),
        (LossType::SppoHard, 0.0),
        (LossType::Aot, 0.0),
        (LossType::AotUnpaired, 0.0),
        (LossType::ApoZero, 0.0),
        (LossType::ApoDown, 0.0),
        (LossType::Discopop, 0.0),
        (LossType::SigmoidNorm, 0.0),
        (LossType::Sft, 0.0),
        (LossType::Simpo, 0.0),
        (LossType::Orpo, 0.0),
    ] {
        let loss = DpoLossConfig::new(loss_type, 0.5, smoothing);
        let reference = (!loss.is_reference_free()).then_some(&reference);
        let first_loss = |layout| {
            let mut objective = DpoObjective::with_layout(
                loss.clone(),
                rows.clone(),
                Vec::new(),
                reference,
                4,
                layout,
            );
            let tape = Tape::<f32>::new();
            let params = policy.bind(&tape);
            let out = objective.batch_loss(&policy, &tape, &params, &batch);
            out.metrics.get("loss")
        };
        let (shared, separate) = (
            first_loss(PairLayout::SharedPrefix),
            first_loss(PairLayout::Separate),
        );
        let rel = (shared - separate).abs() / separate.abs().max(1e-12);
        assert!(
            rel < 1e-6,
            "{loss_type:?}: shared {shared} vs separate {separate} (rel {rel:e})"
        );
    }
}

/// The reference log-probs of a row are computed when a batch first uses it,
/// are those of a direct pass, and come back to the bit from the saved state.
#[test]
fn the_reference_cache_fills_lazily_and_resumes_to_the_bit() {
    let config = ModelConfig {
        vocab_size: 40,
        block_size: 24,
        n_layer: 1,
        n_head: 2,
        n_embd: 8,
        bias: true,
        llama: None,
    };
    let policy = Model::<f32>::new(config.clone(), 1);
    let reference = Model::<f32>::new(config.clone(), 2);
    let rows = random_rows(10, 10, 8, 40, 9);
    let loss = DpoLossConfig::new(LossType::Sigmoid, 0.1, 0.0);
    let new = || {
        DpoObjective::new(
            loss.clone(),
            rows.clone(),
            rows[..2].to_vec(),
            Some(&reference),
            3,
        )
    };
    let step = |objective: &mut DpoObjective, batch: &[usize]| {
        let tape = Tape::<f32>::new();
        let params = policy.bind(&tape);
        objective
            .batch_loss(&policy, &tape, &params, batch)
            .loss
            .item()
    };
    let mut straight = new();
    assert_eq!(straight.num_cached_reference_rows(), 0);
    step(&mut straight, &[4, 1, 2]);
    assert_eq!(straight.num_cached_reference_rows(), 3);
    let direct: Vec<PreferenceRow> = [4, 1, 2].iter().map(|&i| rows[i].clone()).collect();
    assert_eq!(
        straight.train_reference_logps(&[4, 1, 2], Precision::F32),
        score_pairs(
            &reference,
            &direct,
            3,
            PairLayout::SharedPrefix,
            Precision::F32,
            false
        )
        .0
    );
    let saved = straight.state().unwrap();
    // a row cached in an earlier batch keeps its value in a later one
    let later = step(&mut straight, &[2, 7, 8]);
    assert_eq!(straight.num_cached_reference_rows(), 5);

    let mut resumed = new();
    resumed.restore_state(&saved).unwrap();
    assert_eq!(resumed.num_cached_reference_rows(), 3);
    assert_eq!(step(&mut resumed, &[2, 7, 8]).to_bits(), later.to_bits());
    assert_eq!(resumed.state(), straight.state());
    // evaluation fills the held-out cache on its own
    assert!(resumed.evaluate(&policy).is_some());

    // Asked for in another precision (a run resumed with another
    // --precision), the cached rows are computed again in that precision.
    let bf16 = resumed.train_reference_logps(&[4, 1, 2], Precision::Bf16);
    assert_eq!(resumed.num_cached_reference_rows(), 3);
    assert_eq!(
        bf16,
        new().train_reference_logps(&[4, 1, 2], Precision::Bf16)
    );
    assert_ne!(
        bf16,
        straight.train_reference_logps(&[4, 1, 2], Precision::F32)
    );
    let mut resumed_bf16 = new();
    resumed_bf16
        .restore_state(&resumed.state().unwrap())
        .unwrap();
    assert_eq!(
        resumed_bf16.train_reference_logps(&[4, 1, 2], Precision::Bf16),
        bf16
    );
}
