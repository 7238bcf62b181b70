//! # dpo
//!
//! Direct Preference Optimization of the `transformer` crate's GPT on CPU:
//! - [`kernels`]: fused, numerically stable sequence log-probabilities
//!   (from logits, or straight from the final hidden states and the tied
//!   embedding, never materialising the full log-softmax);
//! - [`loss`]: the DPO family of losses (sigmoid, IPO, hinge, robust, label
//!   smoothing) and the metrics the wider ecosystem reports;
//! - [`data`]: preference and SFT JSON Lines, truncation, batching;
//! - [`trainer`]: the training and evaluation loops;
//! - [`report`]: the plotted training report of a metrics file (`dpo plot`);
//! - [`cli`]: the `dpo` command line.
//!
//! The math is derived in `docs/dpo.md`.

pub mod cli;
pub mod data;
pub mod demo;
pub mod kernels;
pub mod loss;
pub mod report;
pub mod trainer;
