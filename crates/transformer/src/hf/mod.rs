//! Hugging Face checkpoints (`save_pretrained` of `GPT2LMHeadModel`,
//! `LlamaForCausalLM`, `Qwen2ForCausalLM`, `Qwen3ForCausalLM`), read as they
//! are and written so that transformers reads them back.
//!
//! The Llama family's tensors have the names and layouts of the model's own
//! parameters ([`crate::params`]); its `config.json` is [`llama`]'s. A GPT-2
//! model is the same as nanoGPT's (docs/spec.md section 1); only the files
//! differ:
//!
//! | | nanoGPT (`checkpoint.rs`) | Hugging Face (this file) |
//! |---|---|---|
//! | config | `block_size`, `n_layer`, ... | `model_type: "gpt2"`, `n_positions`, `layer_norm_epsilon`, `activation_function`, ... |
//! | names | `transformer.h.0.attn.c_attn.weight` | the same, or without `transformer.` (`GPT2Model` files) |
//! | `c_attn`, `c_proj`, `c_fc` weights | `[out, in]` (`nn.Linear`) | `[in, out]` (GPT-2's `Conv1D`) |
//! | extra tensors | `lm_head.weight` (tied) | `lm_head.weight` (tied), `attn.bias` / `attn.masked_bias` (mask buffers, ignored) |
//! | dtypes | F32 | F32, F16, BF16 (converted to f32 on load) |
//! | files | `model.safetensors` | `model.safetensors`, or shards listed in `model.safetensors.index.json` |
//!
//! Loading is as strict as for nanoGPT files: a config the model does not
//! implement (another `model_type`, another epsilon or activation, an inner
//! MLP width other than `4 n_embd`, untied embeddings, ...) is one error
//! line; so is a missing, unknown, duplicated or misshapen tensor. Every
//! file is read with a size bound derived from the validated config.

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};

use safetensors::{Dtype, SafeTensors};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::checkpoint::{
    read_bounded, CheckpointError, CONFIG_FILE, LM_HEAD, MAX_CONFIG_BYTES, MAX_HEADER_BYTES,
    WEIGHTS_FILE,
};
use crate::config::{LlamaType, ModelConfig};
use crate::mapped_file::MappedFile;
use crate::model::Model;
use crate::params::param_specs;
use crate::safetensors_writer::SafetensorsFile;

pub mod llama;

/// The index of a sharded checkpoint: `{"weight_map": {tensor: shard file}}`.
pub const INDEX_FILE: &str = "model.safetensors.index.json";
/// The `model_type` of GPT-2 (the Llama family's are [`crate::config::LlamaType`]'s).
pub const MODEL_TYPE: &str = "gpt2";
/// The LayerNorm epsilon the model implements (GPT-2's).
pub const LAYER_NORM_EPSILON: f64 = 1e-5;
/// The activations that are the model's GELU (tanh form): GPT-2's
/// `gelu_new` and its other name in transformers.
pub const ACTIVATIONS: [&str; 2] = ["gelu_new", "gelu_pytorch_tanh"];

/// The fields of a transformers `GPT2Config` that shape the model, with
/// `GPT2Config`'s defaults for those a file leaves out.
#[derive(Debug, Deserialize)]
struct HfGpt2Config {
    #[serde(default = "default_vocab_size")]
    vocab_size: usize,
    #[serde(default = "default_n_positions")]
    n_positions: usize,
    #[serde(default = "default_n_embd")]
    n_embd: usize,
    #[serde(default = "default_n_layer")]
    n_layer: usize,
    #[serde(default = "default_n_head")]
    n_head: usize,
    #[serde(default)]
    n_inner: Option<usize>,
    #[serde(default = "default_epsilon")]
    layer_norm_epsilon: f64,
    #[serde(default = "default_activation")]
    activation_function: String,
    #[serde(default = "yes")]
    scale_attn_weights: bool,
    #[serde(default)]
    scale_attn_by_inverse_layer_idx: bool,
    #[serde(default = "yes")]
    tie_word_embeddings: bool,
    #[serde(default)]
    add_cross_attention: bool,
}

fn default_vocab_size() -> usize {
    50257
}
fn default_n_positions() -> usize {
    1024
}
fn default_n_embd() -> usize {
    768
}
fn default_n_layer() -> usize {
    12
}
fn default_n_head() -> usize {
    12
}
fn default_epsilon() -> f64 {
    LAYER_NORM_EPSILON
}
fn default_activation() -> String {
    ACTIVATIONS[0].into()
}
fn yes() -> bool {
    true
}

/// The `model_type` of a `config.json`, if it has one (nanoGPT configs do not).
pub fn model_type(bytes: &[u8], path: &Path) -> Result<Option<String>, CheckpointError> {
    let config_error = |message: String| CheckpointError::Config {
        path: path.to_path_buf(),
        message,
    };
    let value: Value = serde_json::from_slice(bytes).map_err(|e| config_error(e.to_string()))?;
    match value.get("model_type") {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(other) => Err(config_error(format!("model_type {other} is not a string"))),
    }
}

/// Parses a transformers `config.json` (GPT-2 or the Llama family) into the
/// model's config, refusing whatever the model does not implement.
pub fn parse_hf_config(bytes: &[u8], path: &Path) -> Result<ModelConfig, CheckpointError> {
    let config_error = |message: String| CheckpointError::Config {
        path: path.to_path_buf(),
        message,
    };
    match model_type(bytes, path)?.as_deref() {
        Some(MODEL_TYPE) => {}
        Some(other) => {
            let Some(family) = LlamaType::from_name(other) else {
                return Err(config_error(format!(
                    "model_type {other:?} is not supported (only {MODEL_TYPE:?}, \"llama\", \"qwen2\", \"qwen3\", and nanoGPT configs)"
                )));
            };
            let value: Value =
                serde_json::from_slice(bytes).map_err(|e| config_error(e.to_string()))?;
            return llama::parse(&value, family).map_err(config_error);
        }
        None => return Err(config_error("no model_type".into())),
    }
    let hf: HfGpt2Config =
        serde_json::from_slice(bytes).map_err(|e| config_error(e.to_string()))?;
    if hf.layer_norm_epsilon != LAYER_NORM_EPSILON {
        return Err(config_error(format!(
            "layer_norm_epsilon {} is not supported (the model's LayerNorm uses {LAYER_NORM_EPSILON})",
            hf.layer_norm_epsilon
        )));
    }
    if !ACTIVATIONS.contains(&hf.activation_function.as_str()) {
        return Err(config_error(format!(
            "activation_function {:?} is not supported (only GPT-2's tanh GELU, {:?})",
            hf.activation_function, ACTIVATIONS[0]
        )));
    }
    if let Some(n_inner) = hf.n_inner.filter(|&n| n != 4 * hf.n_embd) {
        return Err(config_error(format!(
            "n_inner {n_inner} is not supported (the MLP is 4 n_embd = {} wide)",
            4 * hf.n_embd
        )));
    }
    for (name, value, supported) in [
        ("scale_attn_weights", hf.scale_attn_weights, true),
        (
            "scale_attn_by_inverse_layer_idx",
            hf.scale_attn_by_inverse_layer_idx,
            false,
        ),
        ("tie_word_embeddings", hf.tie_word_embeddings, true),
        ("add_cross_attention", hf.add_cross_attention, false),
    ] {
        if value != supported {
            return Err(config_error(format!(
                "{name} {value} is not supported (only {supported})"
            )));
        }
    }
    let config = ModelConfig {
        vocab_size: hf.vocab_size,
        block_size: hf.n_positions,
        n_layer: hf.n_layer,
        n_head: hf.n_head,
        n_embd: hf.n_embd,
        bias: true,
        llama: None,
    };
    config.validate().map_err(config_error)?;
    Ok(config)
}

/// GPT-2's `<|endoftext|>`, its BOS and EOS id in transformers' `GPT2Config`.
pub const GPT2_EOS_ID: usize = 50256;

/// The `config.json` transformers writes for a `GPT2LMHeadModel` of `config`
/// (dropout 0: this model has none). `bos_token_id`/`eos_token_id` are
/// GPT-2's 50256 where the vocabulary has it, else null (the tokenizer files
/// name the EOS). Only configs with biases have a GPT-2 form.
pub fn hf_config_json(config: &ModelConfig) -> Result<String, String> {
    if config.llama.is_some() {
        let value = llama::config_json(config);
        return Ok(serde_json::to_string_pretty(&value).unwrap() + "\n");
    }
    if !config.bias {
        return Err("a model without biases has no Hugging Face GPT-2 form".into());
    }
    let special_id = (config.vocab_size > GPT2_EOS_ID).then_some(GPT2_EOS_ID);
    let value = json!({
        "activation_function": ACTIVATIONS[0],
        "architectures": ["GPT2LMHeadModel"],
        "attn_pdrop": 0.0,
        "bos_token_id": special_id,
        "eos_token_id": special_id,
        "embd_pdrop": 0.0,
        "initializer_range": 0.02,
        "layer_norm_epsilon": LAYER_NORM_EPSILON,
        "model_type": MODEL_TYPE,
        "n_ctx": config.block_size,
        "n_embd": config.n_embd,
        "n_head": config.n_head,
        "n_inner": null,
        "n_layer": config.n_layer,
        "n_positions": config.block_size,
        "resid_pdrop": 0.0,
        "scale_attn_weights": true,
        "tie_word_embeddings": true,
        "vocab_size": config.vocab_size,
    });
    Ok(serde_json::to_string_pretty(&value).unwrap() + "\n")
}

/// Whether the parameter `name` is a GPT-2 `Conv1D` weight, stored `[in, out]`.
fn is_conv1d_weight(name: &str) -> bool {
    [
        "attn.c_attn.weight",
        "attn.c_proj.weight",
        "mlp.c_fc.weight",
        "mlp.c_proj.weight",
    ]
    .iter()
    .any(|suffix| name.ends_with(suffix))
}

/// Whether `name` is one of the buffers older transformers saved: GPT-2's
/// attention masks, Llama's rotary `inv_freq` (both computed, not learned).
fn is_buffer(name: &str) -> bool {
    name.ends_with(".attn.bias")
        || name.ends_with(".attn.masked_bias")
        || name.ends_with(".rotary_emb.inv_freq")
}

/// The name in the model's form of a file's tensor name: GPT-2's in
/// nanoGPT's (`transformer.` prefix); the Llama family's are the same.
fn canonical_name(name: &str) -> String {
    if name.starts_with("transformer.") || name.starts_with("model.") || name == LM_HEAD {
        name.to_string()
    } else {
        format!("transformer.{name}")
    }
}

/// `[rows, cols]` row-major -> `[cols, rows]` row-major.
fn transpose(data: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    let mut out = vec![0.0; data.len()];
    for r in 0..rows {
        for c in 0..cols {
            out[c * rows + r] = data[r * cols + c];
        }
    }
    out
}

/// The f32 values of a tensor's little-endian bytes of `dtype`, or `None` for
/// a dtype other than F32, F16 and BF16.
pub(crate) fn to_f32(dtype: Dtype, bytes: &[u8]) -> Option<Vec<f32>> {
    let halves = || {
        bytes
            .chunks_exact(2)
            .map(|b| u16::from_le_bytes([b[0], b[1]]))
    };
    match dtype {
        Dtype::F32 => Some(crate::checkpoint::f32_from_le(bytes)),
        Dtype::F16 => Some(halves().map(|h| half::f16::from_bits(h).to_f32()).collect()),
        Dtype::BF16 => Some(
            halves()
                .map(|h| half::bf16::from_bits(h).to_f32())
                .collect(),
        ),
        _ => None,
    }
}

/// One tensor read from a file: its file, shape as stored, f32 values.
struct RawTensor {
    path: PathBuf,
    shape: Vec<usize>,
    data: Vec<f32>,
}

/// The weight files of `dir`: `model.safetensors`, or the shards its index lists.
fn weight_files(dir: &Path) -> Result<Vec<PathBuf>, CheckpointError> {
    let single = dir.join(WEIGHTS_FILE);
    let index = dir.join(INDEX_FILE);
    if single.exists() || !index.exists() {
        return Ok(vec![single]);
    }
    let bytes = read_bounded(&index, MAX_INDEX_BYTES)?;
    let index_error = |message: String| CheckpointError::Format {
        path: index.clone(),
        message,
    };
    let value: Value = serde_json::from_slice(&bytes).map_err(|e| index_error(e.to_string()))?;
    let map = value
        .get("weight_map")
        .and_then(Value::as_object)
        .ok_or_else(|| index_error("no weight_map object".into()))?;
    let mut shards = BTreeSet::new();
    for (name, file) in map {
        let file = file
            .as_str()
            .ok_or_else(|| index_error(format!("the file of {name} is not a string")))?;
        // A shard is a file of this directory, never a path elsewhere.
        if file.is_empty() || file.contains(['/', '\\']) || file == ".." || file == "." {
            return Err(index_error(format!(
                "shard name {file:?} is not a plain file name"
            )));
        }
        shards.insert(file.to_string());
    }
    if shards.is_empty() {
        return Err(index_error("the weight_map is empty".into()));
    }
    Ok(shards.into_iter().map(|f| dir.join(f)).collect())
}

/// The largest `model.safetensors.index.json` read (GPT-2 XL's is 30 kB).
pub const MAX_INDEX_BYTES: u64 = 16 << 20;

/// Loads a Hugging Face GPT-2 checkpoint directory (see the module docs).
pub fn load_hf(dir: &Path) -> Result<Model<f32>, CheckpointError> {
    let config_path = dir.join(CONFIG_FILE);
    let config = parse_hf_config(&read_bounded(&config_path, MAX_CONFIG_BYTES)?, &config_path)?;
    let files = weight_files(dir)?;
    // All files together: the parameters in f32 twice over (an untied head),
    // the mask buffers of older files (two of n_positions^2 per layer), and a
    // header per file; nothing larger is read.
    let params = config.num_params().unwrap_or(0);
    let positions = config.block_size as u64;
    let buffers = (config.n_layer as u64)
        .saturating_mul(positions.saturating_mul(positions))
        .saturating_mul(8);
    let mut budget = params
        .saturating_mul(8)
        .saturating_add(buffers)
        .saturating_add(MAX_HEADER_BYTES.saturating_mul(files.len() as u64));
    let mut tensors: HashMap<String, RawTensor> = HashMap::new();
    for path in &files {
        let mapped = MappedFile::open(path, budget)?;
        budget -= mapped.bytes().len() as u64;
        let file =
            SafeTensors::deserialize(mapped.bytes()).map_err(|e| CheckpointError::Format {
                path: path.clone(),
                message: format!("{e:?}"),
            })?;
        for (name, view) in file.tensors() {
            let tensor_error = |message: String| CheckpointError::Tensor {
                path: path.clone(),
                name: name.clone(),
                message,
            };
            if is_buffer(&name) {
                continue;
            }
            let dtype = view.dtype();
            let data = mapped
                .convert(view.data(), |bytes| to_f32(dtype, bytes))
                .ok_or_else(|| {
                    tensor_error(format!("dtype {dtype:?}, expected F32, F16 or BF16"))
                })?;
            let canonical = canonical_name(&name);
            let raw = RawTensor {
                path: path.clone(),
                shape: view.shape().to_vec(),
                data,
            };
            if tensors.insert(canonical.clone(), raw).is_some() {
                return Err(tensor_error(format!(
                    "appears twice (as {canonical}, with or without the transformer. prefix)"
                )));
            }
        }
    }
    let first_file = files[0].clone();
    let tensor_error = |path: &Path, name: &str, message: String| CheckpointError::Tensor {
        path: path.to_path_buf(),
        name: name.to_string(),
        message,
    };
    let mut params = Vec::new();
    for (name, shape) in param_specs(&config) {
        let raw = tensors
            .remove(&name)
            .ok_or_else(|| tensor_error(&first_file, &name, "missing".into()))?;
        let file_shape = if is_conv1d_weight(&name) {
            vec![shape[1], shape[0]]
        } else {
            shape.clone()
        };
        if raw.shape != file_shape {
            return Err(tensor_error(
                &raw.path,
                &name,
                format!("shape {:?}, expected {file_shape:?}", raw.shape),
            ));
        }
        let data = if is_conv1d_weight(&name) {
            transpose(&raw.data, shape[1], shape[0])
        } else {
            raw.data
        };
        params.push((name, ndarray::ArrayD::from_shape_vec(shape, data).unwrap()));
    }
    if let Some(head) = tensors.remove(LM_HEAD) {
        let (wte_name, wte) = &params[0];
        if head.shape != wte.shape() {
            return Err(tensor_error(
                &head.path,
                LM_HEAD,
                format!("shape {:?}, expected {:?}", head.shape, wte.shape()),
            ));
        }
        // Bitwise: the head is the same tensor, not a close one.
        if head
            .data
            .iter()
            .zip(wte.iter())
            .any(|(a, b)| a.to_bits() != b.to_bits())
        {
            return Err(tensor_error(
                &head.path,
                LM_HEAD,
                format!("differs from {wte_name} (the LM head is tied to it)"),
            ));
        }
    }
    let mut unknown: Vec<(String, PathBuf)> =
        tensors.into_iter().map(|(n, t)| (n, t.path)).collect();
    unknown.sort();
    if let Some((name, path)) = unknown.first() {
        return Err(tensor_error(
            path,
            name,
            format!(
                "unexpected tensor for this config ({} of them)",
                unknown.len()
            ),
        ));
    }
    Ok(Model::from_named(config, params))
}

/// The `model.safetensors` transformers reads for `model`: F32, the names of
/// `GPT2LMHeadModel` (`transformer.` prefix, no `lm_head.weight`: it is tied),
/// `Conv1D` weights as `[in, out]`.
pub fn hf_safetensors_file(model: &Model<f32>) -> SafetensorsFile<'_> {
    let tensors = model
        .named_params()
        .map(|(name, p)| {
            let view = if is_conv1d_weight(&name) {
                p.view().reversed_axes() // [out, in] -> [in, out]
            } else {
                p.view()
            };
            (name, view)
        })
        .collect();
    SafetensorsFile::new(tensors, &[("format", "pt")])
}
