//! LoRA: f64 gradient checks of the adapted linear layer and of whole
//! models with adapters, the settings (targets, init, scale), the frozen
//! base, the merge, and PEFT's files written and read back.

use std::sync::Arc;

use autograd::gradcheck::{gradcheck, gradcheck_with, random_inputs, GradcheckOptions};
use autograd::{Tape, Tensor, Var};
use transformer::lora::{default_targets, resolve_targets, Dropout, LoraAdapter};
use transformer::params::Linear;
use transformer::{Lora, LoraConfig, Model, ModelConfig, ModelParams};

use crate::oracle::{sft_loss, shrunk, SftBatch};

fn lora_config(r: usize, targets: &[&str]) -> LoraConfig {
    LoraConfig {
        r,
        alpha: 3.0,
        dropout: 0.0,
        target_modules: targets.iter().map(|s| s.to_string()).collect(),
        use_rslora: false,
    }
}

/// y = x W^T + b + s (x A^T) B^T, every input a leaf: odd sizes, rank 1,
/// one row, a 3-D input (rows folded), and no bias.
#[test]
fn adapted_linear_gradients() {
    for (x_shape, out, inp, r) in [
        (&[3usize, 5][..], 4usize, 5usize, 2usize),
        (&[1, 1], 1, 1, 1),
        (&[2, 3, 7], 3, 7, 1),
        (&[4, 6], 5, 6, 3),
    ] {
        for with_bias in [true, false] {
            let (w_shape, a_shape, b_shape, bias_shape) = ([out, inp], [r, inp], [out, r], [out]);
            let mut shapes: Vec<&[usize]> = vec![x_shape, &w_shape, &a_shape, &b_shape];
            if with_bias {
                shapes.push(&bias_shape);
            }
            gradcheck(&shapes, |tape, v| {
                let linear = Linear {
                    weight: v[1].clone(),
                    bias: v.get(4).cloned(),
                    lora: Some(LoraAdapter {
                        a: v[2].clone(),
                        b: v[3].clone(),
                        scale: 1.7,
                        dropout: None,
                    }),
                    weight_bf16: None,
                };
                linear.forward(tape, &v[0])
            });
        }
    }
}

/// With dropout the mask is a constant of the tape: the gradients are
/// still exact, and the same seed gives the same output.
#[test]
fn adapted_linear_gradients_with_dropout() {
    let adapter = |v: &[Var<f64>], seed| LoraAdapter {
        a: v[1].clone(),
        b: v[2].clone(),
        scale: 0.5,
        dropout: Some(Dropout { p: 0.3, seed }),
    };
    gradcheck(&[&[6, 5], &[2, 5], &[4, 2]], |tape, v| {
        adapter(v, 9).forward(tape, &v[0])
    });
    let inputs = random_inputs(&[&[6, 5], &[2, 5], &[4, 2]], 1);
    let run = |seed| {
        let tape = Tape::<f64>::new();
        let v: Vec<Var<f64>> = inputs.iter().map(|x| tape.leaf(x.clone())).collect();
        adapter(&v, seed).forward(&tape, &v[0]).value().clone()
    };
    assert_eq!(run(9), run(9));
    assert_ne!(run(9), run(10));
    // Model::bind (evaluation, generation) has no dropout; a training bind has.
    let config = gpt2_config();
    let lora = LoraConfig {
        dropout: 0.1,
        ..lora_config(2, &["c_attn"])
    };
    let model =
        Model::<f64>::new(config.clone(), 0).with_lora(Lora::new(&config, lora, 0).unwrap());
    let tape = Tape::<f64>::new();
    let dropout =
        |params: &ModelParams<Var<f64>>| params.linears()[0].lora.as_ref().unwrap().dropout;
    assert_eq!(dropout(&model.bind(&tape)), None);
    let p = dropout(&model.bind_for_training(&tape, 4)).unwrap().p;
    assert_eq!(p, 0.1);
}

fn gpt2_config() -> ModelConfig {
    ModelConfig {
        vocab_size: 11,
        block_size: 8,
        n_layer: 2,
        n_head: 2,
        n_embd: 8,
        bias: true,
        llama: None,
    }
}

/// The logits (1, T, V) of one sequence, on a no-grad tape.
fn logits(model: &Model<f32>, ids: &[usize]) -> Tensor<f32> {
    let tape = Tape::<f32>::no_grad();
    let params = model.bind(&tape);
    model
        .forward(&tape, &params, ids, 1, ids.len())
        .value()
        .clone()
}

/// Adapters with every B nonzero (fresh ones have B = 0, where A gets no
/// gradient), seeded.
fn random_adapters(config: &ModelConfig, lora: LoraConfig, seed: u64) -> Lora<f64> {
    let mut adapters = Lora::<f64>::new(config, lora, seed).unwrap();
    let mut next = seed;
    for t in adapters.tensors_mut() {
        next += 1;
        let shape: Vec<usize> = t.shape().to_vec();
        *t = Arc::new(random_inputs(&[&shape], next).remove(0).mapv(|v| 0.5 * v));
    }
    adapters
}

/// The SFT loss of a model with adapters against central differences, in
/// every entry of every A and B; the base is bound as constants, so the
/// tape holds exactly the adapters as leaves.
fn check_whole_model(config: ModelConfig, targets: &[&str]) {
    let base = Model::<f64>::new(config.clone(), 0);
    let base = Model::from_named(
        config.clone(),
        base.param_names()
            .into_iter()
            .zip(transformer::gradcheck_params(&config, 7))
            .collect(),
    );
    let adapters = random_adapters(&config, lora_config(2, targets), 3);
    let scale = adapters.config.scale();
    let adapted: Vec<bool> = adapters.pairs.iter().map(Option::is_some).collect();
    let model = base.with_lora(adapters);
    let batch = SftBatch::from_sequences(&[
        (vec![1, 2, 3], vec![4, 5, 6, 7]),
        (vec![], vec![9, 10, 0, 3, 2]),
    ]);
    let inputs: Vec<Tensor<f64>> = model
        .trainable_params()
        .into_iter()
        .map(|t| (**t).clone())
        .collect();
    let report = gradcheck_with(
        inputs,
        &GradcheckOptions {
            max_entries_per_input: 1000,
            ..Default::default()
        },
        |tape, leaves| {
            let mut params = model.params().map(|p| tape.constant(p.clone()));
            let mut next = leaves.iter();
            for (linear, &on) in params.linears_mut().into_iter().zip(&adapted) {
                if on {
                    linear.lora = Some(LoraAdapter {
                        a: next.next().unwrap().clone(),
                        b: next.next().unwrap().clone(),
                        scale,
                        dropout: None,
                    });
                }
            }
            sft_loss(&model, tape, &params, &batch)
        },
    );
    assert_eq!(report.checked, model.num_trainable_params());
    // central differences through every block and the rotary scaling: ~1e-6 of noise
    assert!(report.max_error < 1e-5, "{report:?}");

    // Model::bind gives the same loss, with the adapters as its only leaves.
    let tape = Tape::<f64>::new();
    let params = model.bind(&tape);
    let loss = sft_loss(&model, &tape, &params, &batch);
    let grads = tape.backward(&loss);
    assert!(
        params.iter().all(|p| grads.get(p).is_none()),
        "the base took a gradient"
    );
    assert_eq!(
        model.trainable_vars(&params).len(),
        model.trainable_params().len()
    );
}

#[test]
fn gpt2_with_adapters_gradients() {
    check_whole_model(gpt2_config(), &["c_attn", "c_proj"]);
}

#[test]
fn llama_with_adapters_on_every_linear_gradients() {
    check_whole_model(shrunk("llama-tiny"), &["all-linear"]);
}

#[test]
fn qwen2_and_qwen3_with_adapters_gradients() {
    check_whole_model(shrunk("qwen2-tiny"), &["q_proj", "v_proj"]);
    check_whole_model(shrunk("qwen3-tiny"), &["k_proj", "o_proj", "down_proj"]);
}

/// PEFT's matching: a target is a module name or its last part after a dot.
#[test]
fn targets_resolve_as_peft_matches_them() {
    let gpt2 = gpt2_config();
    let modules = ModelParams::linear_modules(&gpt2);
    assert_eq!(
        modules[..4],
        [
            "transformer.h.0.attn.c_attn",
            "transformer.h.0.attn.c_proj",
            "transformer.h.0.mlp.c_fc",
            "transformer.h.0.mlp.c_proj"
        ]
    );
    let resolve = |config: &ModelConfig, t: &[&str]| {
        resolve_targets(config, &t.iter().map(|s| s.to_string()).collect::<Vec<_>>())
    };
    // c_proj adapts the attention's and the MLP's
    assert_eq!(
        resolve(&gpt2, &["c_proj"]).unwrap(),
        [false, true, false, true, false, true, false, true]
    );
    assert_eq!(resolve(&gpt2, &["all-linear"]).unwrap(), [true; 8]);
    assert_eq!(
        resolve(&gpt2, &["transformer.h.1.mlp.c_fc"]).unwrap(),
        [false, false, false, false, false, false, true, false]
    );
    let error = resolve(&gpt2, &["q_proj"]).unwrap_err();
    assert!(error.contains("c_attn, c_fc, c_proj"), "{error}");
    let llama = shrunk("llama-tiny");
    assert_eq!(default_targets(&llama), ["q_proj", "v_proj"]);
    assert_eq!(default_targets(&gpt2), ["c_attn"]);
    // per block: q, k, v, o, gate, up, down
    assert_eq!(
        resolve(&llama, &["q_proj", "v_proj"]).unwrap(),
        [true, false, true, false, false, false, false].repeat(2)
    );
}

/// Fresh adapters: B = 0 (the model starts as its base, bit for bit), A
/// within PEFT's Kaiming-uniform bound 1/sqrt(IN), the scale alpha / r or
/// alpha / sqrt(r).
#[test]
fn fresh_adapters_start_as_the_base() {
    let config = shrunk("llama-tiny");
    let base = Model::<f32>::new(config.clone(), 1);
    let lora = Lora::<f32>::new(&config, lora_config(4, &["all-linear"]), 5).unwrap();
    for (pair, (_, inp)) in lora.pairs.iter().flatten().zip(
        ModelParams::specs(&config)
            .linears()
            .iter()
            .map(|l| (l.weight.shape[0], l.weight.shape[1])),
    ) {
        assert!(pair.b.iter().all(|&b| b == 0.0));
        let bound = 1.0 / (inp as f32).sqrt();
        assert!(pair.a.iter().all(|a| a.abs() <= bound));
        assert!(pair.a.iter().any(|a| a.abs() > bound / 2.0));
    }
    assert_eq!(lora.config.scale(), 3.0 / 4.0);
    let rs = LoraConfig {
        use_rslora: true,
        ..lora_config(4, &["q_proj"])
    };
    assert_eq!(rs.scale(), 3.0 / 2.0);

    let logits = |model: &Model<f32>| logits(model, &[1, 4, 2, 7, 3]);
    let adapted = base.clone().with_lora(lora);
    assert_eq!(logits(&adapted), logits(&base));
    let expected: usize = ModelParams::specs(&config)
        .linears()
        .iter()
        .map(|l| 4 * (l.weight.shape[0] + l.weight.shape[1]))
        .sum();
    assert_eq!(adapted.num_trainable_params(), expected);
}

/// Merging W + s B A gives the adapted model's logits; the written PEFT
/// files read back to the same adapters, and the merge copies only the
/// adapted weights.
#[test]
fn merge_and_files_round_trip() {
    for (config, targets) in [
        (shrunk("qwen2-tiny"), vec!["q_proj", "v_proj"]),
        (gpt2_config(), vec!["c_attn", "c_fc"]),
    ] {
        let base = Model::<f32>::new(config.clone(), 2);
        let mut lora = random_adapters(&config, lora_config(3, &targets), 8).cast::<f32>();
        lora.base_model = Some("/somewhere/base".into());
        let adapted = base.clone().with_lora(lora.clone());
        let logits = |model: &Model<f32>| logits(model, &[1, 4, 2, 7, 3, 9]);
        let merged = adapted.merge_lora();
        assert!(merged.lora().is_none());
        let (a, m) = (logits(&adapted), logits(&merged));
        let worst = a
            .iter()
            .zip(&m)
            .map(|(x, y)| (x - y).abs())
            .fold(0f32, f32::max);
        assert!(worst < 1e-4, "merged logits off by {worst}");
        assert_ne!(logits(&base), a, "the adapters change nothing");
        // unadapted weights are shared, adapted ones copied
        let shared = |i: usize| {
            Arc::ptr_eq(
                base.params().iter().nth(i).unwrap(),
                merged.params().iter().nth(i).unwrap(),
            )
        };
        assert!(shared(0));

        let dir = tempfile::tempdir().unwrap();
        for (name, bytes) in lora.files(&config).unwrap() {
            std::fs::write(dir.path().join(name), bytes).unwrap();
        }
        let back = Lora::load(dir.path(), &config).unwrap();
        assert_eq!(back.config, lora.config);
        assert_eq!(back.base_model.as_deref(), Some("/somewhere/base"));
        assert_eq!(back.pairs, lora.pairs);
        assert_eq!(back.names(&config), lora.names(&config));
        assert!(lora.names(&config)[0].starts_with("base_model.model."));
    }
}

/// Bad adapter files are refused in one line naming the file and the tensor.
#[test]
fn bad_adapters_are_refused() {
    let config = shrunk("llama-tiny");
    let lora = random_adapters(&config, lora_config(2, &["q_proj"]), 1).cast::<f32>();
    let dir = tempfile::tempdir().unwrap();
    let write = |files: [(&str, Vec<u8>); 2]| {
        for (name, bytes) in files {
            std::fs::write(dir.path().join(name), bytes).unwrap();
        }
    };
    write(lora.files(&config).unwrap());
    // another model's shapes
    let other = shrunk("qwen3-tiny");
    let error = Lora::load(dir.path(), &other).unwrap_err().to_string();
    assert!(
        error.contains("adapter_model.safetensors") && error.contains("shape"),
        "{error}"
    );
    // DoRA
    let config_path = dir.path().join("adapter_config.json");
    let text = std::fs::read_to_string(&config_path).unwrap();
    std::fs::write(
        &config_path,
        text.replace("\"use_dora\": false", "\"use_dora\": true"),
    )
    .unwrap();
    let error = Lora::load(dir.path(), &config).unwrap_err().to_string();
    assert!(
        error.contains("use_dora") && error.contains("adapter_config.json"),
        "{error}"
    );
    std::fs::write(&config_path, "{").unwrap();
    let error = Lora::load(dir.path(), &config).unwrap_err().to_string();
    assert!(error.contains("not a PEFT adapter config"), "{error}");
    assert_eq!(error.lines().count(), 1);
}
