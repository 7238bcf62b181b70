//! Training objectives: what one training loop minimises.
//!
//! The loop (the application's trainer) knows nothing about DPO or SFT. Each
//! step it asks the objective for the loss of a batch of training rows on a
//! fresh tape, runs the backward pass and the optimizer, and now and then
//! asks it for held-out metrics. An [`Objective`] owns its rows (training and
//! held-out) and whatever it precomputes from them, such as the frozen
//! reference's log-probs of DPO.
//!
//! - [`SftObjective`]: supervised fine-tuning, the mean token cross-entropy;
//! - [`DpoObjective`]: DPO and its variants (every TRL DPO loss type),
//!   against a cached reference or reference-free, and SimPO and ORPO;
//! - [`KtoObjective`]: KTO on unpaired, labelled completions, against a
//!   cached reference.

mod dpo;
mod kto;
mod metrics;
mod reference_cache;
mod sft;

pub use dpo::{evaluate_pairs, DpoObjective};
pub use kto::{evaluate_unpaired, KtoObjective};
pub use reference_cache::ReferenceCache;
pub use sft::{sft_batch_loss, sft_eval_loss, SftObjective};

pub use metrics::{MetricValue, Metrics};

use autograd::{Tape, Var};
use serde_json::Value;
use transformer::{Model, ModelParams};

/// The loss of one training batch, and what the loop logs about it.
pub struct BatchLoss {
    /// The scalar loss on the tape, ready for `backward`.
    pub loss: Var<f32>,
    /// The batch's metrics (`loss` among them), computed in the forward pass.
    pub metrics: Metrics,
    /// Tokens through the model that are not padding.
    pub tokens: usize,
    /// Tokens through the model, padding included.
    pub padded_tokens: usize,
}

/// What a training run minimises, over the rows it owns.
pub trait Objective {
    /// The stage name (`"sft"`, `"dpo"` or `"kto"`), saved with each checkpoint so that
    /// `--resume` continues a run under the objective it started with.
    const STAGE: &'static str;

    /// The padded length of each training row (see
    /// [`crate::data::TrainingRow::padded_len`]): what batches are planned on.
    fn train_lengths(&self) -> Vec<usize>;

    /// Why a batch cannot be split into parts (ranks, micro-batches) whose
    /// weighted losses add up to the batch's loss, if it cannot; `None` for
    /// a loss that is a weighted mean over rows.
    fn split_refusal(&self) -> Option<String> {
        None
    }

    /// What the loss of the training rows `batch` is a mean over: its number
    /// of pairs or rows (the default), or of scored tokens for SFT. The loss
    /// of a batch is then the mean of its parts' losses weighted by this, so
    /// a batch can be split over ranks and micro-batches exactly.
    fn batch_weight(&self, batch: &[usize]) -> f64 {
        batch.len() as f64
    }

    /// The loss of the training rows `batch` (indices into the training
    /// rows) on `tape`, where `params` are `model`'s parameters bound as
    /// leaves.
    fn batch_loss(
        &mut self,
        model: &Model<f32>,
        tape: &Tape<f32>,
        params: &ModelParams<Var<f32>>,
        batch: &[usize],
    ) -> BatchLoss;

    /// The metrics of `model` on the held-out rows (no tape), `loss` among
    /// them; `None` when there are no held-out rows.
    fn evaluate(&mut self, model: &Model<f32>) -> Option<Metrics>;

    /// The few metrics worth a log line, e.g. `loss 0.6931 acc 0.50`.
    fn describe(&self, metrics: &Metrics) -> String {
        format!("loss {:.4}", metrics.get("loss"))
    }

    /// What the objective carries from one step to the next (bco_pair's
    /// running mean of the rewards), saved with each checkpoint so that
    /// `--resume` continues it exactly; `None` for a stateless objective.
    fn state(&self) -> Option<Value> {
        None
    }

    /// Restores what [`Objective::state`] saved. The message of an error
    /// is one line.
    fn restore_state(&mut self, _state: &Value) -> Result<(), String> {
        Ok(())
    }
}
