//! The whole DPO loss of a tiny GPT against central finite differences in
//! f64: every entry of every parameter, for every loss type, through the
//! model, the fused LM-head log-prob kernel and the fused loss.

use autograd::gradcheck::{gradcheck_with, GradcheckOptions};
use dpo::data::{chosen_prompt_targets, collate_pairs, PairLayout, PreferenceRow};
use dpo::loss::{
    dpo_loss, preference_loss, BcoShift, DpoLossConfig, LossType, PairContext, WeightedLoss,
};
use dpo::scoring::{score, ScoringBatch};
use transformer::{gradcheck_params, Model, ModelConfig, ModelParams};

fn row(prompt: &[u32], chosen: &[u32], rejected: &[u32]) -> PreferenceRow {
    PreferenceRow {
        prompt: prompt.to_vec(),
        chosen: chosen.to_vec(),
        rejected: rejected.to_vec(),
        line: 0,
    }
}

#[test]
fn dpo_loss_gradients_of_every_parameter_for_every_loss() {
    let config = ModelConfig {
        vocab_size: 13,
        block_size: 10,
        n_layer: 2,
        n_head: 2,
        n_embd: 8,
        bias: true,
        llama: None,
    };
    let model = Model::<f64>::new(config.clone(), 0);
    // An empty prompt, a length-1 response, responses of different lengths.
    let rows = [
        row(&[1, 2, 3], &[4, 5], &[6, 7, 8, 9]),
        row(&[], &[10, 11, 12], &[0, 3]),
        row(&[5, 5], &[1], &[2]),
    ];
    let batch = collate_pairs(&rows);
    let scoring = ScoringBatch::pairs(&rows, PairLayout::Separate, false);
    let reference: Vec<f64> = (0..2 * batch.num_pairs)
        .map(|i| -3.0 - 0.7 * i as f64)
        .collect();
    for loss_type in [
        LossType::Sigmoid,
        LossType::Ipo,
        LossType::Hinge,
        LossType::Robust,
    ] {
        let label_smoothing = if loss_type == LossType::Robust {
            0.1
        } else {
            0.0
        };
        let loss = DpoLossConfig::new(loss_type, 0.5, label_smoothing);
        let report = gradcheck_with(
            gradcheck_params(&config, 3),
            &GradcheckOptions {
                max_entries_per_input: 1000,
                ..Default::default()
            },
            |tape, params| {
                let params = ModelParams::from_vec(&config, params.to_vec());
                let logps = score(&model, tape, &params, &scoring).responses;
                dpo_loss(tape, &logps, &reference, &batch.scored_tokens, &loss)
            },
        );
        assert_eq!(report.checked, model.num_params());
        assert!(report.max_error < 1e-6, "{loss_type:?}: {report:?}");
    }
}

/// The reference-free losses and a weighted combination, through the model:
/// ORPO reads the hidden states twice (response and chosen-prompt targets),
/// so both paths of the LM-head kernel must add up in the gradient.
#[test]
fn reference_free_and_combined_losses_gradients_of_every_parameter() {
    let config = ModelConfig {
        vocab_size: 13,
        block_size: 10,
        n_layer: 1,
        n_head: 2,
        n_embd: 8,
        bias: true,
        llama: None,
    };
    let model = Model::<f64>::new(config.clone(), 0);
    let rows = [
        row(&[1, 2, 3], &[4, 5], &[6, 7, 8, 9]),
        row(&[], &[10, 11, 12], &[0, 3]),
        row(&[5, 5], &[1], &[2]),
    ];
    let batch = collate_pairs(&rows);
    let (_, prompt_scored) = chosen_prompt_targets(&batch, &rows);
    assert_eq!(prompt_scored, vec![2, 0, 1]);
    let reference: Vec<f64> = (0..2 * batch.num_pairs)
        .map(|i| -3.0 - 0.7 * i as f64)
        .collect();
    let mut combined = DpoLossConfig::new(LossType::Sigmoid, 0.5, 0.0);
    combined.losses.push(WeightedLoss {
        loss_type: LossType::Sft,
        weight: 0.5,
    });
    for loss in [
        DpoLossConfig::new(LossType::Orpo, 0.5, 0.0),
        DpoLossConfig::new(LossType::Simpo, 2.0, 0.0),
        combined,
    ] {
        let reference = if loss.is_reference_free() {
            vec![0.0; reference.len()]
        } else {
            reference.clone()
        };
        let report = gradcheck_with(
            gradcheck_params(&config, 5),
            &GradcheckOptions {
                max_entries_per_input: 1000,
                ..Default::default()
            },
            |tape, params| {
                let params = ModelParams::from_vec(&config, params.to_vec());
                let with_prompts = loss.needs_prompt_logps();
                let scoring = ScoringBatch::pairs(&rows, PairLayout::Separate, with_prompts);
                let scores = score(&model, tape, &params, &scoring);
                let mut context = PairContext::from_flat(&reference, &batch.scored_tokens);
                if with_prompts {
                    context.n_prompt = prompt_scored.clone();
                }
                let prompts = scores.prompts.as_ref();
                preference_loss(
                    tape,
                    &scores.responses,
                    prompts,
                    &context,
                    BcoShift::Fixed(0.0),
                    &loss,
                )
                .0
            },
        );
        assert_eq!(report.checked, model.num_params());
        assert!(report.max_error < 1e-6, "{}: {report:?}", loss.names());
    }
}
