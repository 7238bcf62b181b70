//! A frozen base stored as bf16 (`Model::with_bf16_base`) computes what the
//! f32 model with those matrices rounded to bf16 computes on a bf16 tape, bit
//! for bit: the loss, the log-probs of the fused LM head, and every adapter's
//! gradient, for GPT-2, a tied Llama-family model (Qwen2) and an untied one
//! (Llama), with dropout, causal and prefix-shared attention, and gradient
//! checkpointing. Its conversions (cast, merge, files) widen it exactly.

use std::sync::Arc;

use autograd::kernels::bf16::round_to_bf16;
use autograd::{Precision, Tape, Tensor, Var};
use transformer::{Lora, LoraConfig, Model, ModelConfig, ModelParams};

use crate::oracle::{two_sequence_loss, SegmentedBatch};

fn configs() -> Vec<ModelConfig> {
    let gpt2 = ModelConfig {
        vocab_size: 23,
        block_size: 16,
        n_layer: 2,
        n_head: 2,
        n_embd: 8,
        bias: true,
        llama: None,
    };
    let llama = |preset: &str| {
        let mut config = ModelConfig::preset(preset).unwrap();
        config.vocab_size = 23;
        config.block_size = 16;
        config
    };
    vec![gpt2, llama("qwen2-tiny"), llama("llama-tiny")]
}

/// A random model with adapters on every linear layer, A and B nonzero.
fn adapted_model(config: &ModelConfig, dropout: f64) -> Model<f32> {
    let lora = LoraConfig {
        r: 2,
        alpha: 4.0,
        dropout,
        target_modules: vec!["all-linear".into()],
        use_rslora: false,
    };
    let mut adapters = Lora::<f32>::new(config, lora, 1).unwrap();
    for (k, t) in adapters.tensors_mut().into_iter().enumerate() {
        let shape = t.shape().to_vec();
        *t = Arc::new(Tensor::from_shape_fn(shape, |i| {
            ((i[0] + 2 * i[1] + k) % 7) as f32 * 0.05 - 0.15
        }));
    }
    Model::<f32>::new(config.clone(), 3).with_lora(adapters)
}

/// The model with the matrices a bf16 base keeps (block linears, embedding,
/// LM head) rounded to bf16 in f32, made without `with_bf16_base`.
fn rounded(model: &Model<f32>) -> Model<f32> {
    let mut out = model.clone();
    let round = |t: &mut Arc<Tensor<f32>>| *t = Arc::new(t.mapv(round_to_bf16));
    let params = out.params_mut();
    params
        .linears_mut()
        .into_iter()
        .for_each(|l| round(&mut l.weight));
    round(&mut params.wte);
    params.lm_head.iter_mut().for_each(round);
    out
}

type Loss = fn(&Model<f32>, &Tape<f32>, &ModelParams<Var<f32>>) -> Var<f32>;

/// Prefix-shared attention and the fused LM head's log-probs.
fn segmented_logprobs(
    model: &Model<f32>,
    tape: &Tape<f32>,
    params: &ModelParams<Var<f32>>,
) -> Var<f32> {
    let batch = SegmentedBatch::new();
    let hidden = batch.hidden(model, tape, params);
    let logp = model.lm_head_logprobs(tape, params, &hidden, &batch.targets); // (2)
    tape.sum_all(&logp)
}

/// The loss and every adapter gradient on a bf16 tape.
fn run(model: &Model<f32>, loss: Loss) -> (u32, Vec<Tensor<f32>>) {
    let tape = Tape::<f32>::new().with_precision(Precision::Bf16);
    let params = model.bind_for_training(&tape, 5);
    let loss = loss(model, &tape, &params);
    let value = loss.item().to_bits();
    let mut grads = tape.backward(&loss);
    let grads = model
        .trainable_vars(&params)
        .into_iter()
        .map(|v| grads.take_or_zeros(v))
        .collect();
    (value, grads)
}

#[test]
fn a_bf16_base_computes_the_rounded_model_on_a_bf16_tape() {
    for config in configs() {
        for dropout in [0.0, 0.3] {
            let model = adapted_model(&config, dropout);
            let oracle = rounded(&model);
            let mut bf16 = model.clone().with_bf16_base();
            for loss in [two_sequence_loss as Loss, segmented_logprobs] {
                for checkpointing in [false, true] {
                    bf16.set_gradient_checkpointing(checkpointing);
                    let (want, got) = (run(&oracle, loss), run(&bf16, loss));
                    assert_eq!(got.0, want.0, "{config:?}: the loss");
                    assert_eq!(got.1, want.1, "{config:?}: the adapters' gradients");
                    assert!(got.1.iter().any(|g| g.iter().any(|&v| v != 0.0)));
                }
            }
        }
    }
}

#[test]
fn a_bf16_base_without_adapters_is_the_rounded_reference() {
    for config in configs() {
        let model = adapted_model(&config, 0.0);
        let (oracle, bf16) = (
            rounded(&model).without_lora(),
            model.with_bf16_base().without_lora(),
        );
        let tape = Tape::<f32>::no_grad().with_precision(Precision::Bf16);
        let want = segmented_logprobs(&oracle, &tape, &oracle.bind(&tape));
        let got = segmented_logprobs(&bf16, &tape, &bf16.bind(&tape));
        assert_eq!(got.value(), want.value());
        let ids = [1, 5, 7, 2];
        let want = oracle.forward(&tape, &oracle.bind(&tape), &ids, 1, 4);
        let got = bf16.forward(&tape, &bf16.bind(&tape), &ids, 1, 4);
        assert_eq!(got.value(), want.value(), "the full logits");
    }
}

#[test]
fn a_bf16_base_halves_the_big_matrices_and_widens_back_exactly() {
    for config in configs() {
        let model = adapted_model(&config, 0.0);
        let oracle = rounded(&model);
        let bf16 = model.clone().with_bf16_base();
        assert_eq!(bf16.num_params(), model.num_params());
        let base = bf16.bf16_base().unwrap();
        let big: usize = model
            .params()
            .linears()
            .iter()
            .map(|l| l.weight.len())
            .sum::<usize>()
            + model.params().wte.len()
            + model.params().lm_head.as_ref().map_or(0, |w| w.len());
        assert_eq!(base.len(), big);
        assert_eq!(base.lm_head.is_some(), model.params().lm_head.is_some());
        // What stays in f32: the norms, biases and GPT-2's position table.
        let f32_left: usize = bf16.params().iter().map(|p| p.len()).sum();
        assert_eq!(f32_left, model.num_params() - big);

        let widened = bf16.cast::<f32>();
        assert!(widened.bf16_base().is_none());
        for ((name, a), (_, b)) in widened.named_params().zip(oracle.named_params()) {
            assert_eq!(a, b, "{name}");
        }
        for ((name, a), (_, b)) in bf16
            .merge_lora()
            .named_params()
            .zip(oracle.merge_lora().named_params())
        {
            assert_eq!(a, b, "merged {name}");
        }
        // A LoRA checkpoint is the adapter alone; a bare bf16 base writes its values.
        let files = |model: &Model<f32>| -> Vec<(String, Vec<u8>)> {
            let files = model.checkpoint_files().unwrap();
            files
                .iter()
                .map(|(n, f)| (n.to_string(), f.to_bytes()))
                .collect()
        };
        assert!(files(&bf16) == files(&oracle), "the adapter's files");
        let (bare, bare_oracle) = (bf16.without_lora(), oracle.without_lora());
        assert!(files(&bare) == files(&bare_oracle), "the base's files");
    }
}
