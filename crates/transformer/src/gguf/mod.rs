//! GGUF files (llama.cpp's format) read natively: the container
//! ([`reader`]), the dequantization of its tensor types to f32 ([`quants`]),
//! the names and config of the Llama-family decoders in Hugging Face terms
//! ([`hf_names`]) and the tokenizer in its metadata ([`tokenizer`]).
//!
//! [`read_checkpoint`] gives what transformers gives for
//! `AutoModelForCausalLM.from_pretrained(dir, gguf_file=name)` (f32) and
//! `AutoTokenizer.from_pretrained(dir, gguf_file=name)`: the HF config, every
//! tensor under its HF name and PyTorch shape (llama's q/k projections
//! un-permuted), the tokenizer and the chat template. Every problem is one
//! [`GgufError`] line naming the file.

pub mod hf_names;
pub mod model;
pub mod quants;
pub mod reader;
pub mod tokenizer;

use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};

use thiserror::Error;

pub use hf_names::{hf_config, hf_tensor_name, reverse_permute, SUPPORTED_ARCHS};
pub use model::{is_gguf, load_model, GgufModel, CHAT_TEMPLATE_FILE};
pub use quants::{dequantize, GgmlType};
pub use reader::{GgufFile, MetaValue, TensorInfo};
pub use tokenizer::{build_tokenizer, tokenizer_info, tokenizer_json, GgufTokenizerInfo};

/// The largest GGUF file read (64 GiB): a bound on what a link to
/// `/dev/zero` or a runaway file can make us read.
pub const MAX_GGUF_BYTES: u64 = 64 << 30;

/// Why a GGUF file cannot be read (each is one line naming the file).
#[derive(Debug, Error)]
pub enum GgufError {
    /// The file could not be read.
    #[error("{path}: {error}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        error: std::io::Error,
    },
    /// The header, the metadata or the tensor infos are not valid GGUF, or
    /// the metadata does not describe a supported model or tokenizer.
    #[error("{path}: not a usable GGUF file: {message}")]
    Format {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// One tensor's info or data is invalid or unsupported.
    #[error("{path}: tensor {name}: {message}")]
    Tensor {
        /// The file.
        path: PathBuf,
        /// The tensor's GGUF name.
        name: String,
        /// What is wrong.
        message: String,
    },
}

/// A GGUF model in Hugging Face terms (see the module docs).
#[derive(Debug)]
pub struct GgufCheckpoint {
    /// The HF `config.json` transformers builds from the metadata.
    pub config: serde_json::Value,
    /// Each tensor as (HF name, PyTorch shape, f32 values in row-major
    /// order), in file order. llama.cpp's `rope_freqs.weight` (Llama 3's
    /// rotary frequency factors) is not here but in [`Self::rope_freqs`].
    pub tensors: Vec<(String, Vec<usize>, Vec<f32>)>,
    /// The tokenizer of `tokenizer.ggml.*`.
    pub tokenizer: tokenizers::Tokenizer,
    /// `tokenizer.chat_template`.
    pub chat_template: Option<String>,
    /// `tokenizer.ggml.bos_token_id`.
    pub bos_id: Option<u32>,
    /// `tokenizer.ggml.eos_token_id`.
    pub eos_id: Option<u32>,
    /// `tokenizer.ggml.padding_token_id`.
    pub pad_id: Option<u32>,
    /// `rope_freqs.weight`, if the file has it.
    pub rope_freqs: Option<Vec<f32>>,
}

/// The real SmolLM2-135M-Instruct GGUF that the tests of the real model
/// read: the file `$DPO_SMOLLM2_GGUF` names (`scripts/fetch_smollm2.sh`
/// fetches it and prints the path). Such tests are `#[ignore]`d and
/// `.ci/run` runs them; run without the file, this panics saying what is
/// missing, so that no test passes by checking nothing.
pub fn smollm2_for_tests() -> PathBuf {
    match std::env::var_os("DPO_SMOLLM2_GGUF").map(PathBuf::from) {
        Some(path) if path.is_file() => path,
        other => panic!(
            "DPO_SMOLLM2_GGUF is {other:?}, not the path of SmolLM2-135M-Instruct.Q4_1.gguf \
             (scripts/fetch_smollm2.sh prints it): this test is #[ignore]d for that reason and run by .ci/run"
        ),
    }
}

/// Reads the file `path` whole (at most [`MAX_GGUF_BYTES`]).
pub fn read_file(path: &Path) -> Result<Vec<u8>, GgufError> {
    let io = |error| GgufError::Io {
        path: path.to_path_buf(),
        error,
    };
    let file = fs::File::open(path).map_err(io)?;
    let mut bytes = Vec::new();
    file.take(MAX_GGUF_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(io)?;
    if bytes.len() as u64 > MAX_GGUF_BYTES {
        return Err(GgufError::Format {
            path: path.to_path_buf(),
            message: format!("larger than the {MAX_GGUF_BYTES} bytes a GGUF may be"),
        });
    }
    Ok(bytes)
}

/// The f32 values of `tensor` of `file`, whose bytes are `bytes`, in
/// PyTorch's row-major order for [`TensorInfo::shape`] (no un-permuting).
pub fn tensor_f32(bytes: &[u8], tensor: &TensorInfo, path: &Path) -> Result<Vec<f32>, GgufError> {
    let data = &bytes[tensor.start..tensor.start + tensor.n_bytes];
    dequantize(tensor.ty, data, tensor.n_values()).map_err(|message| GgufError::Tensor {
        path: path.to_path_buf(),
        name: tensor.name.clone(),
        message,
    })
}

/// Reads the GGUF model at `path` (see the module docs).
pub fn read_checkpoint(path: &Path) -> Result<GgufCheckpoint, GgufError> {
    let bytes = read_file(path)?;
    parse_checkpoint(&bytes, path)
}

/// [`read_checkpoint`] of the bytes of a file (`path` names it in errors).
pub fn parse_checkpoint(bytes: &[u8], path: &Path) -> Result<GgufCheckpoint, GgufError> {
    let format = |message: String| GgufError::Format {
        path: path.to_path_buf(),
        message,
    };
    let file = GgufFile::parse(bytes, path)?;
    let arch = file
        .get("general.architecture")
        .and_then(MetaValue::as_str)
        .ok_or_else(|| format("metadata \"general.architecture\" is missing".into()))?;
    if !SUPPORTED_ARCHS.contains(&arch) {
        return Err(format(format!(
            "architecture {arch:?} is not supported (only {SUPPORTED_ARCHS:?})"
        )));
    }
    let config = hf_config(&file, arch).map_err(format)?;
    let info = tokenizer_info(&file).map_err(format)?;
    let tokenizer = build_tokenizer(&file).map_err(format)?;

    let heads = |key: &str| -> Result<usize, GgufError> {
        config[key]
            .as_u64()
            .filter(|&h| h > 0)
            .map(|h| h as usize)
            .ok_or_else(|| format(format!("{key} is {} in the config", config[key])))
    };
    let (n_head, n_kv_head) = (heads("num_attention_heads")?, heads("num_key_value_heads")?);

    let mut tensors = Vec::with_capacity(file.tensors.len());
    let mut rope_freqs = None;
    for tensor in &file.tensors {
        let tensor_error = |message: String| GgufError::Tensor {
            path: path.to_path_buf(),
            name: tensor.name.clone(),
            message,
        };
        if tensor.name == "rope_freqs.weight" {
            rope_freqs = Some(tensor_f32(bytes, tensor, path)?);
            continue;
        }
        let name = hf_tensor_name(&tensor.name)
            .ok_or_else(|| tensor_error(format!("has no Hugging Face name for {arch}")))?;
        let values = tensor_f32(bytes, tensor, path)?;
        let shape = tensor.shape();
        // llama.cpp's convert permutes llama's q/k rows for its rotary
        // layout (not qwen2's or qwen3's); transformers undoes it.
        let permuted_heads = match (
            arch,
            tensor.name.contains(".attn_q."),
            tensor.name.contains(".attn_k."),
        ) {
            ("llama", true, _) => Some(n_head),
            ("llama", _, true) => Some(n_kv_head),
            _ => None,
        };
        let values = match permuted_heads {
            None => values,
            Some(heads) => {
                let rows = shape[0];
                let cols = values.len() / rows.max(1);
                if !rows.is_multiple_of(2) || !(rows / 2).is_multiple_of(heads) {
                    return Err(tensor_error(format!(
                        "{rows} rows do not split into {heads} heads of pairs"
                    )));
                }
                reverse_permute(&values, rows, cols, heads)
            }
        };
        tensors.push((name, shape, values));
    }
    Ok(GgufCheckpoint {
        config,
        tensors,
        tokenizer,
        chat_template: info.chat_template,
        bos_id: info.bos_id,
        eos_id: info.eos_id,
        pad_id: info.pad_id,
        rope_freqs,
    })
}
