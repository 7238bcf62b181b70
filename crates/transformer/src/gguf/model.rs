//! A GGUF file as a model: the decoder of its Llama-family config and
//! tensors, its tokenizer, and the tokenizer files of its Hugging Face form
//! (what a checkpoint written from it, or `dpo convert --to hf`, carries).

use std::collections::HashMap;
use std::path::Path;

use serde_json::json;

use crate::checkpoint::CheckpointError;
use crate::config::LlamaType;
use crate::hf_tokenizer::{HfTokenizer, TOKENIZER_CONFIG_FILE, TOKENIZER_FILE};
use crate::model::Model;
use crate::params::param_specs;

use super::{read_checkpoint, GgufError};

/// The file of a Hugging Face directory that holds the chat template
/// (transformers 5 writes it beside `tokenizer_config.json`).
pub const CHAT_TEMPLATE_FILE: &str = "chat_template.jinja";

/// A model read from a GGUF file.
pub struct GgufModel {
    /// The decoder, in f32.
    pub model: Model<f32>,
    /// Its tokenizer, with the file's EOS.
    pub tokenizer: HfTokenizer,
    /// `tokenizer.json`, `tokenizer_config.json` (special tokens) and
    /// `chat_template.jinja` (when the file has a template), as transformers
    /// saves them.
    pub tokenizer_files: Vec<(&'static str, Vec<u8>)>,
}

/// Whether `path` is a GGUF file (a file whose first four bytes are `GGUF`).
pub fn is_gguf(path: &Path) -> bool {
    use std::io::Read;
    let mut magic = [0u8; 4];
    path.is_file()
        && std::fs::File::open(path)
            .and_then(|mut f| f.read_exact(&mut magic))
            .is_ok()
        && &magic == b"GGUF"
}

fn from_gguf(error: GgufError, path: &Path) -> CheckpointError {
    CheckpointError::Format {
        path: path.to_path_buf(),
        message: match error {
            GgufError::Io { error, .. } => error.to_string(),
            other => other
                .to_string()
                .split_once(": ")
                .map_or_else(|| other.to_string(), |(_, message)| message.to_string()),
        },
    }
}

/// Reads the GGUF model at `path`: the config transformers builds from its
/// metadata (refused, in one line, where the decoder does not implement
/// it), every tensor dequantized to f32 under its Hugging Face name (no
/// tensor missing, none left over), and the tokenizer.
pub fn load_model(path: &Path) -> Result<GgufModel, CheckpointError> {
    let checkpoint = read_checkpoint(path).map_err(|e| from_gguf(e, path))?;
    let config_error = |message: String| CheckpointError::Config {
        path: path.to_path_buf(),
        message,
    };
    let model_type = checkpoint.config["model_type"].as_str().unwrap_or_default();
    let family = LlamaType::from_name(model_type)
        .ok_or_else(|| config_error(format!("model_type {model_type:?} is not supported")))?;
    let mut config = crate::hf::llama::parse(&checkpoint.config, family).map_err(config_error)?;
    let llama = config.llama.as_mut().unwrap();
    if llama.special.eos.is_empty() {
        llama.special.eos.extend(checkpoint.eos_id);
    }
    llama.special.bos = llama.special.bos.or(checkpoint.bos_id);
    llama.special.pad = llama.special.pad.or(checkpoint.pad_id);

    let tensor_error = |name: &str, message: String| CheckpointError::Tensor {
        path: path.to_path_buf(),
        name: name.to_string(),
        message,
    };
    let mut tensors: HashMap<String, (Vec<usize>, Vec<f32>)> = HashMap::new();
    for (name, shape, values) in checkpoint.tensors {
        if tensors.insert(name.clone(), (shape, values)).is_some() {
            return Err(tensor_error(&name, "appears twice".into()));
        }
    }
    let mut params = Vec::new();
    for (name, shape) in param_specs(&config) {
        let (file_shape, values) = tensors
            .remove(&name)
            .ok_or_else(|| tensor_error(&name, "missing".into()))?;
        if file_shape != shape {
            return Err(tensor_error(
                &name,
                format!("shape {file_shape:?}, expected {shape:?}"),
            ));
        }
        params.push((
            name,
            ndarray::ArrayD::from_shape_vec(shape, values).unwrap(),
        ));
    }
    if let Some(name) = tensors.keys().min() {
        return Err(tensor_error(
            name,
            format!(
                "unexpected tensor for this config ({} of them)",
                tensors.len()
            ),
        ));
    }
    let model = Model::from_named(config, params);

    let tokenizer = checkpoint.tokenizer;
    let token = |id: Option<u32>| id.and_then(|id| tokenizer.id_to_token(id));
    let mut tokenizer_config = json!({
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": token(checkpoint.bos_id),
        "eos_token": token(checkpoint.eos_id),
        "pad_token": token(checkpoint.pad_id),
        "add_bos_token": false,
        "clean_up_tokenization_spaces": false,
        "model_max_length": model.config().block_size,
    });
    let mut tokenizer_files = vec![(
        TOKENIZER_FILE,
        tokenizer
            .to_string(true)
            .map_err(|e| tensor_error("tokenizer", e.to_string()))?
            .into_bytes(),
    )];
    if let Some(template) = &checkpoint.chat_template {
        tokenizer_files.push((CHAT_TEMPLATE_FILE, template.clone().into_bytes()));
    } else {
        tokenizer_config["chat_template"] = serde_json::Value::Null;
    }
    tokenizer_files.push((
        TOKENIZER_CONFIG_FILE,
        (serde_json::to_string_pretty(&tokenizer_config).unwrap() + "\n").into_bytes(),
    ));
    // The tokenizer is read from the files it is saved as, as a directory's is.
    let tokenizer = HfTokenizer::from_files(&tokenizer_files, checkpoint.eos_id, path)?
        .expect("tokenizer.json is among the files");
    Ok(GgufModel {
        tokenizer,
        model,
        tokenizer_files,
    })
}
