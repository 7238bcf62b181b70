//! The integration tests of `dpo`: the losses against TRL, data loading
//! (JSONL, parquet, chat templates, tokenizers), the objectives.
//!
//! One test binary for the crate, each file below a module of it, so the
//! generic model and tape code is compiled once for the crate's tests rather
//! than once per file. One file's tests:
//! `cargo test --release -p dpo --test dpo_tests trl_losses::`.

mod bf16_portable;
mod bf16_sft;
mod chat_goldens;
mod data;
mod gradcheck_dpo;
mod hf_tokenization;
mod kto;
mod kto_objective;
mod loss;
mod objective;
mod parquet_golden;
mod parquet_hostile;
mod prefix_sharing;
mod trl_losses;
mod unpaired;
