//! Gradient checkpointing gives the gradients of the plain backward pass,
//! bit for bit: whole models (GPT-2, Llama) and LoRA adapters with dropout,
//! causal and prefix-shared (segmented) attention, and f32 and bf16 GEMMs.

use autograd::{Precision, Tape, Tensor, Var};
use transformer::{Lora, LoraConfig, Model, ModelConfig, ModelParams};

use crate::oracle::{two_sequence_loss as causal_loss, SegmentedBatch};

fn gpt2() -> ModelConfig {
    ModelConfig {
        vocab_size: 23,
        block_size: 16,
        n_layer: 3,
        n_head: 2,
        n_embd: 8,
        bias: true,
        llama: None,
    }
}

fn llama() -> ModelConfig {
    let mut config = ModelConfig::preset("qwen2-tiny").unwrap();
    config.vocab_size = 23;
    config.block_size = 16;
    config
}

/// The loss and the gradients of the trained tensors, with checkpointing on or off.
fn gradients(
    model: &Model<f32>,
    precision: Precision,
    loss: impl Fn(&Model<f32>, &Tape<f32>, &ModelParams<Var<f32>>) -> Var<f32>,
) -> (f32, Vec<Tensor<f32>>) {
    let tape = Tape::<f32>::new().with_precision(precision);
    let params = model.bind_for_training(&tape, 11);
    let loss = loss(model, &tape, &params);
    let value = loss.item();
    let mut grads = tape.backward(&loss);
    let grads = model
        .trainable_vars(&params)
        .into_iter()
        .map(|v| grads.take_or_zeros(v))
        .collect();
    (value, grads)
}

fn assert_same_with_and_without(
    mut model: Model<f32>,
    loss: impl Fn(&Model<f32>, &Tape<f32>, &ModelParams<Var<f32>>) -> Var<f32> + Copy,
) {
    for precision in [Precision::F32, Precision::Bf16] {
        model.set_gradient_checkpointing(false);
        let plain = gradients(&model, precision, loss);
        model.set_gradient_checkpointing(true);
        let recomputed = gradients(&model, precision, loss);
        assert_eq!(plain.0.to_bits(), recomputed.0.to_bits(), "loss");
        assert_eq!(plain.1.len(), recomputed.1.len());
        for (i, (a, b)) in plain.1.iter().zip(&recomputed.1).enumerate() {
            assert_eq!(a, b, "gradient {i} ({precision:?})");
        }
        assert!(plain.1.iter().any(|g| g.iter().any(|&v| v != 0.0)));
    }
}

/// The full logits of [`SegmentedBatch`] and cross-entropy.
fn segmented_loss(
    model: &Model<f32>,
    tape: &Tape<f32>,
    params: &ModelParams<Var<f32>>,
) -> Var<f32> {
    let batch = SegmentedBatch::new();
    let logits = model.logits(tape, params, &batch.hidden(model, tape, params));
    tape.cross_entropy(&logits, &batch.targets)
}

#[test]
fn whole_model_gradients_are_unchanged() {
    for config in [gpt2(), llama()] {
        let model = Model::<f32>::new(config, 3);
        assert_same_with_and_without(model.clone(), causal_loss);
        assert_same_with_and_without(model, segmented_loss);
    }
}

#[test]
fn adapter_gradients_with_dropout_are_unchanged() {
    for config in [gpt2(), llama()] {
        let lora = LoraConfig {
            r: 2,
            alpha: 4.0,
            dropout: 0.2,
            target_modules: vec!["all-linear".into()],
            use_rslora: false,
        };
        let mut adapters = Lora::<f32>::new(&config, lora, 1).unwrap();
        for t in adapters.tensors_mut() {
            let shape = t.shape().to_vec();
            *t = std::sync::Arc::new(Tensor::from_shape_fn(shape, |i| {
                0.1 * (((i[0] + 2 * i[1]) % 5) as f32 - 2.0)
            }));
        }
        let model = Model::<f32>::new(config, 3).with_lora(adapters);
        assert_same_with_and_without(model.clone(), causal_loss);
        assert_same_with_and_without(model, segmented_loss);
    }
}
