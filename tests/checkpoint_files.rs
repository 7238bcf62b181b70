//! A training checkpoint's files, written straight from the model's weights
//! and the optimizer's moments, are byte for byte the files the in-memory
//! serializer (`safetensors::serialize`) made before, so checksums, goldens
//! and `--resume` of older checkpoints are unchanged; the checksums recorded
//! in `trainer_state.json` are those of the files on disk; the moments read
//! back equal.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use autograd::optim::AdamW;
use autograd::Tensor;
use dpo_rs::trainer::checkpoint::{
    load_optimizer_state, read_state, save_checkpoint, ModelFiles, TrainerState,
};
use dpo_rs::trainer::AnyOptimizer;
use safetensors::tensor::TensorView;
use safetensors::Dtype;
use sha2::{Digest, Sha256};
use transformer::{CheckpointFormat, Lora, LoraConfig, Model, ModelConfig};

/// `safetensors::serialize` of F32 tensors `(name, tensor)`: the oracle.
fn serialized(tensors: &[(String, Tensor<f32>)], metadata: Option<(&str, &str)>) -> Vec<u8> {
    let bytes: Vec<Vec<u8>> = tensors
        .iter()
        .map(|(_, t)| t.iter().flat_map(|x| x.to_le_bytes()).collect())
        .collect();
    let views: Vec<(String, TensorView<'_>)> = tensors
        .iter()
        .zip(&bytes)
        .map(|((name, t), b)| {
            let view = TensorView::new(Dtype::F32, t.shape().to_vec(), b).unwrap();
            (name.clone(), view)
        })
        .collect();
    let metadata = metadata.map(|(k, v)| HashMap::from([(k.to_string(), v.to_string())]));
    safetensors::serialize(views, &metadata).unwrap()
}

/// AdamW with moments of every trainable parameter's shape, none zero.
fn adamw_with_moments(model: &Model<f32>) -> (AnyOptimizer, [Vec<Tensor<f32>>; 2]) {
    let moment = |scale: f32| -> Vec<Tensor<f32>> {
        model
            .trainable_params()
            .into_iter()
            .map(|p| p.mapv(|x| x * scale + 0.25))
            .collect()
    };
    let (exp_avg, exp_avg_sq) = (moment(0.5), moment(-3.0));
    let mut adamw = AdamW::new(0.0);
    adamw.load_state(4, exp_avg.clone(), exp_avg_sq.clone());
    (AnyOptimizer::AdamW(adamw), [exp_avg, exp_avg_sq])
}

fn state() -> TrainerState {
    TrainerState {
        step: 4,
        optimizer: "adamw".into(),
        stage: "sft".into(),
        last_loss: 1.5,
        sha256: Default::default(),
        objective_state: None,
    }
}

fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Every file in `dir` but the state, by name, with its bytes.
fn files_in(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap())
        .map(|e| (e.file_name().to_string_lossy().into_owned(), e.path()))
        .filter(|(name, _)| name != "trainer_state.json")
        .map(|(name, path)| (name, std::fs::read(path).unwrap()))
        .collect()
}

/// Saves `model` with AdamW's moments twice into `dir` (the second save
/// replaces the first), then checks the optimizer file against the oracle,
/// the checksums against the files, and the moments read back.
fn check_save(
    model: &Model<f32>,
    format: CheckpointFormat,
    dir: &Path,
) -> BTreeMap<String, Vec<u8>> {
    let (optimizer, moments) = adamw_with_moments(model);
    let model_files = ModelFiles {
        format,
        tokenizer_files: vec![("tokenizer.json", b"{\"model\": {}}\n".to_vec())],
    };
    for _ in 0..2 {
        // Dropped at once: the files the second save replaces are removed.
        drop(save_checkpoint(dir, model, &model_files, &optimizer, &state()).unwrap());
    }
    let hidden: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name.starts_with('.'))
        .collect();
    assert!(hidden.is_empty(), "left in the folder: {hidden:?}");
    let files = files_in(dir);
    // The optimizer file, as optimizer_file serialized it before.
    let names = model.trainable_names();
    let mut expected = Vec::new();
    for (moment, values) in ["exp_avg", "exp_avg_sq"].iter().zip(&moments) {
        for (name, t) in names.iter().zip(values) {
            expected.push((format!("{name}.{moment}"), t.clone()));
        }
    }
    assert!(files["optimizer.safetensors"] == serialized(&expected, None));
    assert_eq!(files["tokenizer.json"], b"{\"model\": {}}\n");
    // The checksums recorded are those of the files, and nothing else.
    let recorded = read_state(dir).unwrap().sha256;
    let actual: BTreeMap<String, String> = files
        .iter()
        .map(|(name, bytes)| (name.clone(), sha256_hex(bytes)))
        .collect();
    assert_eq!(recorded, actual);
    // The moments come back.
    let mut reloaded = AnyOptimizer::AdamW(AdamW::new(0.0));
    load_optimizer_state(dir, model, &mut reloaded, &read_state(dir).unwrap()).unwrap();
    let AnyOptimizer::AdamW(adamw) = reloaded else {
        unreachable!()
    };
    use autograd::optim::Optimizer;
    let back: Vec<Vec<Tensor<f32>>> = adamw.state().into_iter().map(|(_, t)| t.to_vec()).collect();
    assert!(back == moments);
    files
}

#[test]
fn nanogpt_checkpoint_files_are_the_serialized_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let model = Model::<f32>::new(ModelConfig::preset("small").unwrap(), 11);
    let files = check_save(&model, CheckpointFormat::NanoGpt, dir.path());
    let weights: Vec<_> = model
        .named_params()
        .map(|(name, p)| (name, (**p).clone()))
        .collect();
    assert!(files["model.safetensors"] == serialized(&weights, None));
    assert_eq!(
        files.keys().collect::<Vec<_>>(),
        [
            "config.json",
            "model.safetensors",
            "optimizer.safetensors",
            "tokenizer.json"
        ]
    );
}

#[test]
fn hf_checkpoint_files_are_the_serialized_bytes() {
    for preset in ["small", "llama-tiny"] {
        let dir = tempfile::tempdir().unwrap();
        let model = Model::<f32>::new(ModelConfig::preset(preset).unwrap(), 12);
        let files = check_save(&model, CheckpointFormat::Hf, dir.path());
        // GPT-2's Conv1D weights [in, out], as hf_safetensors_bytes wrote them.
        let conv1d = |name: &str| {
            [
                "attn.c_attn.weight",
                "attn.c_proj.weight",
                "mlp.c_fc.weight",
                "mlp.c_proj.weight",
            ]
            .iter()
            .any(|s| name.ends_with(s))
        };
        let weights: Vec<_> = model
            .named_params()
            .map(|(name, p)| {
                let t = if conv1d(&name) {
                    p.t().as_standard_layout().into_owned()
                } else {
                    (**p).clone()
                };
                (name, t)
            })
            .collect();
        assert!(
            files["model.safetensors"] == serialized(&weights, Some(("format", "pt"))),
            "{preset}"
        );
    }
}

#[test]
fn lora_checkpoint_files_are_the_serialized_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let config = ModelConfig::preset("small").unwrap();
    let lora = LoraConfig {
        r: 2,
        alpha: 4.0,
        dropout: 0.0,
        target_modules: vec!["all-linear".into()],
        use_rslora: false,
    };
    let adapters = Lora::<f32>::new(&config, lora, 1).unwrap();
    let model = Model::<f32>::new(config, 3).with_lora(adapters);
    let files = check_save(&model, CheckpointFormat::NanoGpt, dir.path());
    let [(weights_name, weights), (config_name, config_json)] =
        model.lora().unwrap().files(model.config()).unwrap();
    assert!(files[weights_name] == weights);
    assert!(files[config_name] == config_json);
    assert!(!files.contains_key("model.safetensors"));
}
