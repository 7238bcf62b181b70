//! The bookkeeping every training run shares: the first and last loss, the
//! tokens seen, the final checkpoint, and the summary printed at the end.

use std::path::Path;
use std::time::Instant;

use transformer::Gpt;

use super::dpo_train::TrainSummary;
use super::optimizer::{AnyOptimizer, TrainHyper};
use super::state::{save_checkpoint, TrainerState};
use crate::loss::DpoMetrics;

/// Running totals of one training run.
pub struct RunStats {
    started: Instant,
    stage: &'static str,
    start_step: u64,
    first_loss: f64,
    last_loss: f64,
    real_tokens: usize,
    padded_tokens: usize,
}

impl RunStats {
    /// Starts the clock of a `stage` ("dpo" or "sft") run that begins at `start_step`.
    pub fn start(stage: &'static str, start_step: u64) -> Self {
        RunStats {
            started: Instant::now(),
            stage,
            start_step,
            first_loss: f64::NAN,
            last_loss: f64::NAN,
            real_tokens: 0,
            padded_tokens: 0,
        }
    }

    /// Records one step: its loss (before the update), the non-padding tokens
    /// through the model and the tokens including padding.
    pub fn record(&mut self, loss: f64, real_tokens: usize, padded_tokens: usize) {
        if self.first_loss.is_nan() {
            self.first_loss = loss;
        }
        self.last_loss = loss;
        self.real_tokens += real_tokens;
        self.padded_tokens += padded_tokens;
    }

    /// Non-padding tokens per second so far.
    pub fn tokens_per_second(&self) -> f64 {
        self.real_tokens as f64 / self.started.elapsed().as_secs_f64().max(1e-9)
    }

    /// The trainer state to save after `step` steps.
    pub fn state(&self, step: u64, hyper: &TrainHyper) -> TrainerState {
        TrainerState {
            step,
            optimizer: format!("{:?}", hyper.optimizer).to_lowercase(),
            stage: self.stage.into(),
            last_loss: self.last_loss,
        }
    }

    /// Saves the final checkpoint into `out` and returns the run's summary.
    #[allow(clippy::too_many_arguments)]
    pub fn finish(
        self,
        out: &Path,
        model: &Gpt<f32>,
        optimizer: &AnyOptimizer,
        hyper: &TrainHyper,
        train_rows: usize,
        truncated_rows: usize,
        eval: Option<DpoMetrics>,
        eval_loss: Option<f64>,
    ) -> Result<TrainSummary, String> {
        let train_runtime = self.started.elapsed().as_secs_f64();
        let state = self.state(hyper.steps.max(self.start_step), hyper);
        save_checkpoint(out, model, optimizer, &state)?;
        Ok(TrainSummary {
            steps: hyper.steps.saturating_sub(self.start_step),
            first_loss: self.first_loss,
            final_loss: self.last_loss,
            train_runtime,
            tokens_per_second: self.real_tokens as f64 / train_runtime.max(1e-9),
            train_rows,
            truncated_rows,
            padding_share: 1.0 - self.real_tokens as f64 / self.padded_tokens.max(1) as f64,
            eval,
            eval_loss,
            out: out.display().to_string(),
        })
    }
}

/// Splits off a seeded held-out share of `rows` (none when `fraction` is 0)
/// and refuses a run left with no training rows.
pub fn split_held_out<R>(
    rows: Vec<R>,
    fraction: f64,
    seed: u64,
    data: &Path,
) -> Result<(Vec<R>, Vec<R>), String> {
    let (train, held_out) = if fraction > 0.0 {
        crate::data::eval_split(rows, fraction, seed)
    } else {
        (rows, Vec::new())
    };
    if train.is_empty() {
        return Err(format!("{}: no training rows", data.display()));
    }
    Ok((train, held_out))
}
