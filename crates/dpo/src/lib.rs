//! # dpo
//!
//! The mathematics of Direct Preference Optimization for the `transformer`
//! crate's GPT, with no application around it (the `dpo` command line, the
//! trainer loop, the demo and the report live in the root package):
//! - [`scoring`]: from token batches to summed response log-probs, one
//!   forward pass and autograd's fused LM-head log-prob op;
//! - [`loss`]: the preference losses (every `loss_type` of TRL's DPOTrainer,
//!   SimPO, ORPO, weighted combinations), KTO on unpaired labelled rows, and
//!   the metrics the wider ecosystem reports;
//! - [`data`]: preference, SFT and unpaired JSON Lines, truncation, batching;
//! - [`objective`]: what a training loop minimises: SFT, DPO (and its
//!   family) or KTO, each with its rows, its batch loss, its metrics and its
//!   held-out evaluation.
//!
//! Errors are typed ([`data::DataError`], [`loss::LossConfigError`]) and
//! print as one line. The math is derived in `docs/dpo.md`.

pub mod data;
pub mod loss;
pub mod objective;
pub mod scoring;
