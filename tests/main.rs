//! The end-to-end tests of the application: the `dpo` binary run as its own
//! process (CLI, chat, training, resume, kill -9, hostile input), the
//! checkpoint files it writes and the report.
//!
//! One test binary for the crate, each file below a module of it, so the
//! generic model and tape code is compiled once for the crate's tests rather
//! than once per file. One file's tests:
//! `cargo test --release --test end_to_end cli_golden::`.

mod common;

mod checkpoint_files;
mod cli;
mod cli_chat;
mod cli_chat_data;
mod cli_convert_data;
mod cli_golden;
mod cli_hf;
mod cli_kto;
mod cli_llama;
mod cli_lora;
mod cli_losses;
mod cli_reliability;
mod cli_smollm2;
mod cli_trainer;
mod fuzz_seeds;
mod hostile;
mod kill_resume;
mod recipe_smollm2;
mod report;
