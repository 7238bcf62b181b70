//! # dpo
//!
//! The mathematics of Direct Preference Optimization for the `transformer`
//! crate's GPT, with no application around it (the `dpo` command line, the
//! trainer loop, the demo and the report live in the root package):
//! - [`kernels`]: fused, numerically stable sequence log-probabilities
//!   (from logits, or straight from the final hidden states and the tied
//!   embedding, never materialising the full log-softmax);
//! - [`logps`]: from token batches to summed response log-probs;
//! - [`loss`]: the preference losses (every `loss_type` of TRL's DPOTrainer,
//!   SimPO, ORPO, weighted combinations) and the metrics the wider
//!   ecosystem reports;
//! - [`kto`]: the KTO loss on unpaired, labelled rows, with TRL's batch KL
//!   estimate and metrics;
//! - [`data`]: preference, SFT and unpaired JSON Lines, truncation, batching;
//! - [`objective`]: what a training loop minimises: SFT or DPO, each with
//!   its rows, its batch loss, its metrics and its held-out evaluation.
//!
//! Errors are typed ([`data::DataError`], [`loss::LossConfigError`]) and
//! print as one line. The math is derived in `docs/dpo.md`.

pub mod data;
pub mod kernels;
pub mod kto;
pub mod logps;
pub mod loss;
pub mod objective;
