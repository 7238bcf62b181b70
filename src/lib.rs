//! # dpo-rs: the application
//!
//! The `dpo` command line and what it runs, on top of the libraries
//! (`autograd` -> `transformer` -> `dpo`):
//! - [`trainer`]: one training loop for every objective, its settings,
//!   checkpoints with optimizer state, progress and the metrics log, and the
//!   commands around it (`dpo sft`, `dpo train`, `dpo eval`);
//! - [`cli`]: argument parsing (clap) and the subcommands;
//! - [`demo`]: `dpo demo`, the whole pipeline on a built-in task;
//! - [`report`]: `dpo plot`, the SVG training report of a metrics log.
//!
//! `docs/architecture.md` follows one training step through these modules.

pub mod cli;
pub mod demo;
pub mod report;
pub mod trainer;
