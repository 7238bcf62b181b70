//! The integration tests of `transformer`: the models against PyTorch and
//! transformers goldens, checkpoints (HF, nanoGPT, GGUF), LoRA, the KV cache.
//!
//! One test binary for the crate, each file below a module of it, so the
//! generic model and tape code is compiled once for the crate's tests rather
//! than once per file. One file's tests:
//! `cargo test --release -p transformer --test transformer_tests gguf::`.

mod oracle;

mod bf16_base;
mod checkpoint;
mod checkpointing;
mod forward_and_sampling;
mod gguf;
mod gradcheck_model;
mod hf;
mod kv_cache;
mod llama_goldens;
mod lora;
mod lora_goldens;
mod safetensors_writer;
mod smollm2;
mod vectors;
