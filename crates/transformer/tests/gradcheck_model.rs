//! Whole-model gradient check in f64: the SFT loss of a tiny decoder against
//! central finite differences, every entry of every parameter tensor: GPT-2
//! with and without biases, and each Llama-family variant (grouped-query
//! attention with `llama3` rope scaling and an untied head; Qwen2's q/k/v
//! biases; Qwen3's q/k norms with a head size other than C / NH).

use autograd::gradcheck::{gradcheck_with, GradcheckOptions};
use transformer::{gradcheck_params, Model, ModelConfig, ModelParams};

use crate::oracle::{sft_loss, shrunk, SftBatch};

fn check(config: ModelConfig) {
    let model = Model::<f64>::new(config.clone(), 0);
    let batch = SftBatch::from_sequences(&[
        (vec![1, 2, 3], vec![4, 5, 6, 7]),
        (vec![], vec![9, 10, 0, 3, 2]),
        (vec![8, 8], vec![1]),
    ]);
    let report = gradcheck_with(
        gradcheck_params(&config, 7),
        &GradcheckOptions {
            max_entries_per_input: 1000, // every entry of this tiny model
            ..Default::default()
        },
        |tape, params| {
            let params = ModelParams::from_vec(&config, params.to_vec());
            sft_loss(&model, tape, &params, &batch)
        },
    );
    assert_eq!(report.checked, model.num_params());
    assert!(report.max_error < 1e-6, "{report:?}");
}

#[test]
fn sft_loss_gradients_of_every_parameter() {
    check(ModelConfig {
        vocab_size: 11,
        block_size: 8,
        n_layer: 2,
        n_head: 2,
        n_embd: 8,
        bias: true,
        llama: None,
    });
}

#[test]
fn sft_loss_gradients_without_biases() {
    check(ModelConfig {
        vocab_size: 11,
        block_size: 8,
        n_layer: 1,
        n_head: 4,
        n_embd: 8,
        bias: false,
        llama: None,
    });
}

#[test]
fn llama_gradients_of_every_parameter() {
    check(shrunk("llama-tiny"));
}

#[test]
fn qwen2_gradients_of_every_parameter() {
    check(shrunk("qwen2-tiny"));
}

#[test]
fn qwen3_gradients_of_every_parameter() {
    check(shrunk("qwen3-tiny"));
}
