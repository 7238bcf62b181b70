//! # transformer
//!
//! A GPT-2 / nanoGPT decoder on the `autograd` crate (see `docs/transformer.md`).
//!
//! - [`config`]: [`ModelConfig`], nanoGPT's hyper-parameters, with presets;
//! - [`params`]: [`ModelParams`], the parameters as named structs (nanoGPT's
//!   module tree), their names, shapes, init and one canonical order;
//! - [`model`]: [`Model`], the layers' forward passes and the model on a tape;
//! - [`kv_cache`]: [`KvCache`], the keys and values of generation, and its attention;
//! - [`checkpoint`]: `config.json` + `model.safetensors`, strict and atomic;
//! - [`safetensors_writer`]: safetensors files written straight from the tensors;
//! - [`hf`]: the same model in Hugging Face GPT-2 files (read and written);
//! - [`sampling`]: greedy / temperature / top-k generation with a KV cache;
//! - [`tokenizer`]: text to ids (bytes by default);
//! - [`text_stream`]: the text of tokens as they come, whole characters only;
//! - [`chat_template`]: a conversation -> text, as transformers' `apply_chat_template`;
//! - [`hf_tokenizer`]: a checkpoint's `tokenizer.json` (Hugging Face BPE and others).
//! - [`gguf`]: llama.cpp GGUF files (Llama, Qwen2, Qwen3) read natively, dequantized to f32.
//!
//! ```
//! use autograd::Tape;
//! use transformer::{Model, ModelConfig};
//!
//! let model = Model::<f32>::new(ModelConfig::preset("tiny").unwrap(), 0);
//! let tape = Tape::no_grad();
//! let params = model.bind(&tape);
//! let logits = model.forward(&tape, &params, &[1, 2, 3], 1, 3);
//! assert_eq!(logits.shape(), &[1, 3, 256]);
//! ```

pub mod bf16_base;
pub mod chat_template;
pub mod checkpoint;
pub mod config;
pub mod gguf;
pub mod hf;
pub mod hf_tokenizer;
pub mod kv_cache;
pub mod lora;
pub mod mapped_file;
pub mod model;
pub mod params;
pub mod safetensors_writer;
pub mod sampling;
pub mod text_stream;
pub mod tokenizer;

pub use chat_template::{tokenize_with_assistant_mask, ChatTemplate, ChatTemplateError, Rendered};
pub use checkpoint::{
    detect_format, load_config, parse_config, write_atomic, write_synced, write_synced_with,
    CheckpointError, CheckpointFile, CheckpointFormat, FileContents,
};
pub use config::ModelConfig;
pub use hf_tokenizer::{load_tokenizer, tokenizer_files, HfTokenizer};
pub use kv_cache::KvCache;
pub use lora::{Lora, LoraConfig};
pub use model::{AttentionMode, Model, UnpaddedRows};
pub use params::{gradcheck_params, param_specs, ModelParams};
pub use sampling::{generate, SamplingOptions};
pub use text_stream::TextStream;
pub use tokenizer::{ByteTokenizer, Tokenizer};
