//! The training loop: one loop for every objective.
//!
//! ```text
//! for step in start..steps:
//!     batch      = the step's rows (data::epoch_batches, one seeded plan per epoch)
//!     loss       = objective.batch_loss(model, fresh tape, batch)      forward
//!     grads      = backward(loss)                                      one per parameter
//!                  (on N ranks and K micro-batches: step::step_gradient, the same sum)
//!     grad_norm  = clip(grads)                                         global norm
//!     optimizer.step(model, grads, schedule(step))
//!     log the batch's metrics; evaluate and save on their cadence
//! ```
//!
//! The objective (SFT, DPO, ...) decides what a batch's loss is and what is
//! measured; everything else, including `--resume`, `--save-every`,
//! `--eval-every`, the metrics log and the NaN stop, is the same for all.
//!
//! On several ranks (`mpirun`, docs/distributed.md) every rank runs this loop
//! on the same batches and ends each step with the same gradient, so all
//! hold the same weights; rank 0 alone evaluates and writes the checkpoints,
//! the metrics log and the progress bar.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{anyhow, bail, Result};
use autograd::Precision;
use dpo::data::{epoch_batches, BatchOrder};
use dpo::objective::{Metrics, Objective};
use indicatif::ProgressBar;
use serde::Serialize;
use serde_json::json;
use transformer::{CheckpointFormat, Model};

use super::checkpoint::{
    optimizer_and_start_step, read_state, save_checkpoint, ModelFiles, TrainerState,
};
use super::distributed::Collective;
use super::lora::LoraSettings;
use super::progress::{log_line, progress_bar, MetricsLog};
use super::settings::TrainHyper;
use super::step::{check_split, step_gradient};

/// How a run trains, whatever its objective: the optimization settings, the
/// cadence of evaluation and checkpoints, and where things are written.
#[derive(Debug, Clone)]
pub struct RunSettings {
    /// Where checkpoints (model, optimizer, trainer state) are written.
    pub out: PathBuf,
    /// Optimization settings.
    pub hyper: TrainHyper,
    /// Evaluate on the held-out rows every this many steps (0: only at the end).
    pub eval_every: u64,
    /// Save a checkpoint every this many steps (0: only at the end).
    pub save_every: u64,
    /// JSON-lines metrics file (appended to).
    pub metrics: Option<PathBuf>,
    /// Continue the run saved in `out`.
    pub resume: bool,
    /// How each epoch's rows are cut into batches.
    pub batch_order: BatchOrder,
    /// Show a progress bar (on a terminal).
    pub progress: bool,
    /// The format of the checkpoints written; `None`: the format of the
    /// checkpoint the run started from (nanoGPT for a fresh model).
    pub save_format: Option<CheckpointFormat>,
    /// The arithmetic of the training step's GEMMs (`--precision`); the
    /// weights, gradients, optimizer, evaluation and checkpoints are f32.
    pub precision: Precision,
    /// Recompute each block's activations in the backward pass (`--gradient-checkpointing`).
    pub gradient_checkpointing: bool,
    /// Train LoRA adapters on the frozen model instead of the model (`--use-peft`).
    pub lora: Option<LoraSettings>,
    /// Replace checkpoint files in `out` that no run of this stage wrote
    /// (`--overwrite`).
    pub overwrite: bool,
    /// Train even when a step's estimated peak memory is more than is
    /// available (`--allow-oom-risk`).
    pub allow_oom_risk: bool,
}

/// The rows a run trains on, for its summary.
#[derive(Debug, Clone, Copy, Default)]
pub struct DataCounts {
    /// Training rows after truncation (and skipping).
    pub train_rows: usize,
    /// Rows of the training file truncated to fit the block.
    pub truncated_rows: usize,
}

/// What `dpo train` and `dpo sft` print at the end.
#[derive(Debug, Clone, Serialize)]
pub struct TrainSummary {
    /// Optimizer steps taken in this run.
    pub steps: u64,
    /// Loss of the first batch, before its update.
    pub first_loss: f64,
    /// Loss of the last batch, before its update.
    pub final_loss: f64,
    /// Wall time of the training loop, seconds.
    pub train_runtime: f64,
    /// Non-padding tokens through the policy per second of training steps
    /// (held-out evaluations and checkpoint saves are not counted).
    pub tokens_per_second: f64,
    /// Training rows after truncation (and skipping).
    pub train_rows: usize,
    /// Rows truncated to fit the block.
    pub truncated_rows: usize,
    /// Share of padding among the tokens of the batches.
    pub padding_share: f64,
    /// Held-out metrics at the end, if there is held-out data.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub eval: Option<Metrics>,
    /// Held-out loss at the end (the `loss` of `eval`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub eval_loss: Option<f64>,
    /// Where the checkpoint was written.
    pub out: String,
}

/// Running totals of one training run.
struct RunStats {
    started: Instant,
    /// Seconds spent in training steps, without evaluations and saves.
    step_seconds: f64,
    first_loss: f64,
    last_loss: f64,
    tokens: usize,
    padded_tokens: usize,
}

impl RunStats {
    fn start() -> Self {
        RunStats {
            started: Instant::now(),
            step_seconds: 0.0,
            first_loss: f64::NAN,
            last_loss: f64::NAN,
            tokens: 0,
            padded_tokens: 0,
        }
    }

    /// Records one step: its loss (before the update), its tokens and how
    /// long it took.
    fn record(&mut self, loss: f64, tokens: usize, padded_tokens: usize, seconds: f64) {
        if self.first_loss.is_nan() {
            self.first_loss = loss;
        }
        self.last_loss = loss;
        self.tokens += tokens;
        self.padded_tokens += padded_tokens;
        self.step_seconds += seconds;
    }

    /// Non-padding tokens per second of the training steps so far.
    fn tokens_per_second(&self) -> f64 {
        self.tokens as f64 / self.step_seconds.max(1e-9)
    }
}

/// Evaluates on the held-out rows, if any: one metrics record and one log line.
fn evaluate<O: Objective>(
    step: u64,
    objective: &mut O,
    model: &Model<f32>,
    metrics_log: &mut MetricsLog,
    bar: &ProgressBar,
) -> Result<Option<Metrics>> {
    let Some(metrics) = objective.evaluate(model) else {
        return Ok(None);
    };
    if !metrics.get("loss").is_finite() {
        bail!(
            "step {step}: the held-out loss is not finite; stopping (check the data and the checkpoints for inf/NaN)"
        );
    }
    metrics_log.write(step, "eval", metrics.to_json())?;
    log_line(
        bar,
        format!("step {step}: eval {}", objective.describe(&metrics)),
    );
    Ok(Some(metrics))
}

/// Trains `model` on `objective` for `settings.hyper.steps` steps in all
/// (counting the steps of a resumed run), then saves the final checkpoint
/// into `settings.out` (the model as `model_files` says, with the
/// optimizer and trainer state). A NaN or infinite loss stops the run with
/// an error, keeping the last checkpoint saved. `comm` is this process's
/// place among the ranks of the job
/// ([`SingleProcess`](super::distributed::SingleProcess) for an ordinary run).
pub fn train<O: Objective>(
    objective: &mut O,
    model: &mut Model<f32>,
    model_files: &ModelFiles,
    settings: &RunSettings,
    data: DataCounts,
    comm: &dyn Collective,
) -> Result<TrainSummary> {
    let hyper = &settings.hyper;
    let stage = O::STAGE;
    check_split(objective.split_refusal(), hyper, comm)?;
    let root = comm.is_root();
    let (mut optimizer, start_step) =
        optimizer_and_start_step(hyper, &settings.out, model, settings.resume, stage)?;
    if settings.resume && root {
        eprintln!(
            "resuming from step {start_step} in {}",
            settings.out.display()
        );
    }
    let mut metrics_log = MetricsLog::open(settings.metrics.as_deref().filter(|_| root))?;
    let lengths = objective.train_lengths();
    let batches_per_epoch = lengths.len().div_ceil(hyper.batch_size).max(1) as u64;
    let schedule = hyper.lr_schedule();
    let bar = progress_bar(
        hyper.steps - start_step,
        &format!("dpo {stage}"),
        settings.progress && root,
    );
    let state = |step: u64, last_loss: f64, objective_state| TrainerState {
        step,
        optimizer: hyper.optimizer_name().into(),
        stage: stage.into(),
        last_loss,
        objective_state,
        sha256: Default::default(), // filled in by save_checkpoint
    };
    if settings.resume {
        if let Some(saved) = read_state(&settings.out)?.objective_state {
            objective
                .restore_state(&saved)
                .map_err(|e| anyhow!("--resume: {e}"))?;
        }
    }

    let mut stats = RunStats::start();
    let mut last_eval = None;
    if start_step == 0 && settings.eval_every > 0 && root {
        // Step 0: the starting point of the held-out curves.
        last_eval = evaluate(0, objective, model, &mut metrics_log, &bar)?;
    }
    let mut epoch_plan: Option<(u64, Vec<Vec<usize>>)> = None;
    let mut replaced = None;
    for step in start_step..hyper.steps {
        let epoch = step / batches_per_epoch;
        if epoch_plan.as_ref().map(|(e, _)| *e) != Some(epoch) {
            let batches = epoch_batches(
                &lengths,
                hyper.batch_size,
                hyper.seed,
                epoch,
                settings.batch_order,
            );
            epoch_plan = Some((epoch, batches));
        }
        let batch = &epoch_plan.as_ref().unwrap().1[(step % batches_per_epoch) as usize];

        let step_started = Instant::now();
        // Forward and backward of every micro-batch; the ranks' gradients summed.
        let gradient = step_gradient(
            objective,
            model,
            batch,
            hyper.grad_accum,
            settings.precision,
            autograd::ops::elementwise::splitmix64(hyper.seed ^ step.rotate_left(32)),
            comm,
        )?;
        let loss = gradient.batch.loss;
        if !loss.is_finite() {
            bar.abandon();
            bail!(
                "step {}: the loss is {loss}; stopping (the last checkpoint saved, if any, is kept in {})",
                step + 1,
                settings.out.display()
            );
        }
        // The tapes are gone: nothing else holds the parameters, so the update is in place.
        let mut grads = gradient.grads;
        let grad_norm = hyper.clip(&mut grads);
        let lr = schedule.lr(hyper.lr, step);
        optimizer.step(model.trainable_params_mut(), &grads, lr);
        let step_seconds = step_started.elapsed().as_secs_f64();

        let batch_out = gradient.batch;
        stats.record(
            loss,
            batch_out.tokens,
            batch_out.padded_tokens,
            step_seconds,
        );
        let tokens_per_second = stats.tokens_per_second();
        bar.set_message(format!(
            "{} {tokens_per_second:.0} tok/s",
            objective.describe(&batch_out.metrics)
        ));
        bar.inc(1);
        let mut record = batch_out.metrics.to_json();
        record.insert("lr".into(), json!(lr));
        record.insert("grad_norm".into(), json!(grad_norm));
        record.insert("tokens_per_second".into(), json!(tokens_per_second));
        record.insert("step_ms".into(), json!(step_seconds * 1e3));
        metrics_log.write(step + 1, "train", record)?;

        let done = step + 1;
        let is_last = done == hyper.steps;
        let every = |n: u64| n > 0 && done % n == 0;
        if root && (is_last || every(settings.eval_every)) {
            last_eval = evaluate(done, objective, model, &mut metrics_log, &bar)?;
        }
        if root && every(settings.save_every) && !is_last {
            // The files this save replaces are removed during the next steps.
            replaced = Some(save_checkpoint(
                &settings.out,
                model,
                model_files,
                &optimizer,
                &state(done, stats.last_loss, objective.state()),
            )?);
        }
    }
    bar.finish_and_clear();

    let train_runtime = stats.started.elapsed().as_secs_f64();
    drop(replaced);
    if root {
        drop(save_checkpoint(
            &settings.out,
            model,
            model_files,
            &optimizer,
            &state(hyper.steps, stats.last_loss, objective.state()),
        )?);
    }
    Ok(TrainSummary {
        steps: hyper.steps - start_step,
        first_loss: stats.first_loss,
        final_loss: stats.last_loss,
        train_runtime,
        tokens_per_second: stats.tokens_per_second(),
        train_rows: data.train_rows,
        truncated_rows: data.truncated_rows,
        padding_share: 1.0 - stats.tokens as f64 / stats.padded_tokens.max(1) as f64,
        eval_loss: last_eval.as_ref().map(|m| m.get("loss")),
        eval: last_eval,
        out: settings.out.display().to_string(),
    })
}
