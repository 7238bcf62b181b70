//! `dpo sft`: supervised fine-tuning, the usual first stage before DPO.
//!
//! The loss is the mean next-token cross-entropy over every scored completion
//! token of the batch (PyTorch's `cross_entropy(..., ignore_index=-100)`):
//!
//! ```text
//! loss = -(1/N) sum_{scored (s,t)} log softmax(logits[s,t])[y_{s,t}]  =  -(1/N) sum_s logp[s]
//! ```
//!
//! so it reuses the fused LM-head log-prob kernel of DPO: the summed log-prob
//! of each sequence, added up and divided by the number of scored tokens.

use std::path::PathBuf;
use std::time::Instant;

use autograd::{Float, Tape, Var};
use serde_json::json;
use transformer::{ByteTokenizer, Gpt, GptConfig, GptParams};

use super::batch_plan::BatchPlan;
use super::dpo_train::{prompt_budget, TrainSummary};
use super::logps::sequence_logps;
use super::optimizer::TrainHyper;
use super::progress::{log_line, progress_bar, MetricsLog};
use super::run::{split_held_out, RunStats};
use super::state::{check_out_dir, optimizer_and_start_step};
use crate::data::{self, SftRow};

/// Where the initial model comes from.
#[derive(Debug, Clone)]
pub enum SftInit {
    /// An existing checkpoint.
    Checkpoint(PathBuf),
    /// A fresh nanoGPT-initialised model of this config (seeded).
    Config(GptConfig),
}

/// Everything `dpo sft` needs.
#[derive(Debug, Clone)]
pub struct SftTrainArgs {
    /// Initial model.
    pub init: SftInit,
    /// SFT or preference data (JSONL, optionally .gz).
    pub data: PathBuf,
    /// Output checkpoint directory.
    pub out: PathBuf,
    /// Optimization settings.
    pub hyper: TrainHyper,
    /// Prompt budget of truncation; default `block_size / 2`.
    pub max_prompt_length: Option<usize>,
    /// Share of rows held out for evaluation (seeded).
    pub eval_fraction: f64,
    /// Evaluate every this many steps (0: only at the end).
    pub eval_every: u64,
    /// JSON-lines metrics file.
    pub metrics: Option<PathBuf>,
    /// Skip bad rows instead of refusing the file.
    pub skip_invalid: bool,
    /// Continue the run saved in `out`.
    pub resume: bool,
    /// Group rows of similar length into batches.
    pub group_by_length: bool,
    /// Show a progress bar.
    pub progress: bool,
}

/// The SFT loss of a batch of rows on `tape`, and the number of scored tokens.
pub fn sft_batch_loss<T: Float>(
    model: &Gpt<T>,
    tape: &Tape<T>,
    params: &GptParams<Var<T>>,
    rows: &[SftRow],
) -> (Var<T>, usize) {
    let batch = data::collate_sft(rows);
    let scored = batch.targets.iter().filter(|&&y| y != -100).count();
    let logps = sequence_logps(
        model,
        tape,
        params,
        &batch.ids,
        &batch.targets,
        batch.batch,
        batch.seq_len,
    );
    let total = tape.sum_all(&logps);
    (
        tape.mul_scalar(&total, T::cast(-1.0 / scored.max(1) as f64)),
        scored,
    )
}

/// Mean token cross-entropy of `rows` (no-grad), batch by batch.
pub fn sft_eval_loss(model: &Gpt<f32>, rows: &[SftRow], batch_size: usize) -> f64 {
    let (mut nll, mut tokens) = (0.0, 0usize);
    for chunk in rows.chunks(batch_size.max(1)) {
        let tape = Tape::<f32>::no_grad();
        let params = model.bind(&tape);
        let (loss, scored) = sft_batch_loss(model, &tape, &params, chunk);
        nll += loss.item() as f64 * scored as f64;
        tokens += scored;
    }
    nll / tokens.max(1) as f64
}

/// Loads SFT rows (or the chosen side of preference rows) and truncates them.
pub fn load_sft_rows(
    path: &std::path::Path,
    cfg: &GptConfig,
    budget: usize,
    skip_invalid: bool,
) -> Result<(Vec<SftRow>, usize), String> {
    let (rows, report) = data::load_sft(path, &ByteTokenizer, cfg.vocab_size, skip_invalid)
        .map_err(|e| e.to_string())?;
    if report.skipped > 0 {
        eprintln!("{}: {report}", path.display());
    }
    let mut truncated = 0;
    let mut out = Vec::with_capacity(rows.len());
    for row in &rows {
        let (row, was_cut) = data::truncate_sft(row, cfg.block_size, budget);
        truncated += usize::from(was_cut);
        if row.completion.len() <= usize::from(row.prompt.is_empty()) {
            return Err(format!(
                "{}:{}: after truncation to the block of {} the completion has no scored token",
                path.display(),
                row.line,
                cfg.block_size
            ));
        }
        out.push(row);
    }
    Ok((out, truncated))
}

/// Runs `dpo sft`.
pub fn train_sft(args: &SftTrainArgs) -> Result<TrainSummary, String> {
    args.hyper.validate()?;
    check_out_dir(&args.out)?;
    let mut model = if args.resume {
        Gpt::<f32>::load(&args.out).map_err(|e| {
            format!(
                "--resume: the checkpoint in --out {}: {e}",
                args.out.display()
            )
        })?
    } else {
        match &args.init {
            SftInit::Checkpoint(p) => {
                Gpt::<f32>::load(p).map_err(|e| format!("--init {}: {e}", p.display()))?
            }
            SftInit::Config(c) => {
                c.validate().map_err(|e| format!("--config: {e}"))?;
                Gpt::<f32>::new(*c, args.hyper.seed)
            }
        }
    };
    let cfg = *model.config();
    let budget = prompt_budget(args.max_prompt_length, cfg.block_size)?;
    let (rows, truncated) = load_sft_rows(&args.data, &cfg, budget, args.skip_invalid)?;
    let (rows, eval_rows) = split_held_out(rows, args.eval_fraction, args.hyper.seed, &args.data)?;
    let mut metrics_log = MetricsLog::open(args.metrics.as_deref())?;
    let (mut optimizer, start_step) =
        optimizer_and_start_step(&args.hyper, &args.out, &model, args.resume)?;
    let lengths: Vec<usize> = rows
        .iter()
        .map(|r| r.prompt.len() + r.completion.len())
        .collect();
    let mut plan = BatchPlan::new(
        &lengths,
        args.hyper.batch_size,
        args.hyper.seed,
        args.group_by_length,
    );
    let schedule = args.hyper.lr_schedule();
    let bar = progress_bar(args.hyper.steps.saturating_sub(start_step), "dpo sft");
    if !args.progress {
        bar.set_draw_target(indicatif::ProgressDrawTarget::hidden());
    }
    let mut stats = RunStats::start("sft", start_step);
    let mut eval_loss = None;
    for step in start_step..args.hyper.steps {
        let indices = plan.batch(step);
        let batch_rows: Vec<SftRow> = indices.iter().map(|&i| rows[i].clone()).collect();
        let step_started = Instant::now();
        let tape = Tape::<f32>::new();
        let params = model.bind(&tape);
        let (loss, _) = sft_batch_loss(&model, &tape, &params, &batch_rows);
        let loss_value = loss.item() as f64;
        if !loss_value.is_finite() {
            bar.abandon();
            return Err(format!(
                "step {}: the loss is {loss_value}; stopping (the last good checkpoint, if any, is kept in {})",
                step + 1,
                args.out.display()
            ));
        }
        let mut grads = tape.backward(&loss);
        let mut grads: Vec<_> = params.iter().map(|p| grads.take_or_zeros(p)).collect();
        drop(params);
        let grad_norm = args.hyper.clip(&mut grads);
        let lr = schedule.lr(args.hyper.lr, step);
        optimizer.step(model.params_mut(), &grads, lr);
        let step_ms = step_started.elapsed().as_secs_f64() * 1e3;

        let lengths = batch_rows
            .iter()
            .map(|r| r.prompt.len() + r.completion.len());
        let longest = lengths.clone().max().unwrap_or(0);
        stats.record(loss_value, lengths.sum(), longest * batch_rows.len());
        let tps = stats.tokens_per_second();
        metrics_log.write(
            step + 1,
            "train",
            json!({"loss": loss_value, "lr": lr, "grad_norm": grad_norm,
                   "tokens_per_second": tps, "step_ms": step_ms}),
        )?;
        bar.set_message(format!("loss {loss_value:.4} {tps:.0} tok/s"));
        bar.inc(1);
        let is_last = step + 1 == args.hyper.steps;
        if !eval_rows.is_empty()
            && (is_last || (args.eval_every > 0 && (step + 1) % args.eval_every == 0))
        {
            let l = sft_eval_loss(&model, &eval_rows, args.hyper.batch_size);
            metrics_log.write(step + 1, "eval", json!({"loss": l}))?;
            log_line(&bar, format!("step {}: eval loss {l:.4}", step + 1));
            eval_loss = Some(l);
        }
    }
    bar.finish_and_clear();
    stats.finish(
        &args.out,
        &model,
        &optimizer,
        &args.hyper,
        rows.len(),
        truncated,
        None,
        eval_loss,
    )
}
