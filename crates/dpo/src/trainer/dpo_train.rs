//! `dpo train`: DPO of a policy against a frozen reference.
//!
//! One step:
//! 1. collate B pairs into one batch of 2B sequences (chosen, then rejected);
//! 2. policy forward on a fresh tape, summed response log-probs (2B);
//! 3. the reference log-probs come from a cache filled once before training
//!    (the reference never changes, so it is run once per row, in no-grad mode);
//! 4. the DPO loss, backward, clipping, one optimizer step.

use std::path::PathBuf;
use std::time::Instant;

use autograd::Tape;
use serde::Serialize;
use serde_json::json;
use transformer::{ByteTokenizer, Gpt};

use super::batch_plan::BatchPlan;
use super::logps::{pair_logps, pair_logps_no_grad};
use super::optimizer::TrainHyper;
use super::progress::{log_line, progress_bar, MetricsLog};
use super::run::{split_held_out, RunStats};
use super::state::{check_out_dir, optimizer_and_start_step, save_checkpoint};
use crate::data::{self, PreferenceRow};
use crate::loss::{dpo_loss, DpoLossConfig, DpoMetrics, MetricSums, PairLogps};

/// Everything `dpo train` needs.
#[derive(Debug, Clone)]
pub struct DpoTrainArgs {
    /// The initial policy checkpoint.
    pub policy: PathBuf,
    /// The frozen reference checkpoint; `None` for reference-free DPO.
    pub reference: Option<PathBuf>,
    /// Preference data (JSONL, optionally .gz).
    pub data: PathBuf,
    /// Where the trained policy (and optimizer state) is written.
    pub out: PathBuf,
    /// Loss settings.
    pub loss: DpoLossConfig,
    /// Optimization settings.
    pub hyper: TrainHyper,
    /// Prompt budget of truncation; default `block_size / 2`.
    pub max_prompt_length: Option<usize>,
    /// Held-out preference data.
    pub eval_data: Option<PathBuf>,
    /// Share of `data` held out for evaluation (seeded), when no `eval_data`.
    pub eval_fraction: f64,
    /// Evaluate every this many steps (0: only at the end).
    pub eval_every: u64,
    /// Save a checkpoint every this many steps (0: only at the end).
    pub save_every: u64,
    /// JSON-lines metrics file.
    pub metrics: Option<PathBuf>,
    /// Skip bad rows instead of refusing the file.
    pub skip_invalid: bool,
    /// Continue the run saved in `out`.
    pub resume: bool,
    /// Group rows of similar length into batches (less padding).
    pub group_by_length: bool,
    /// Show a progress bar.
    pub progress: bool,
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
    /// Non-padding tokens through the policy per second.
    pub tokens_per_second: f64,
    /// Training rows after truncation (and skipping).
    pub train_rows: usize,
    /// Rows truncated to fit the block.
    pub truncated_rows: usize,
    /// Share of padding among the tokens of the batches.
    pub padding_share: f64,
    /// Held-out metrics at the end (DPO), if there is held-out data.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub eval: Option<DpoMetrics>,
    /// Held-out loss at the end (SFT), if there is held-out data.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub eval_loss: Option<f64>,
    /// Where the checkpoint was written.
    pub out: String,
}

/// Loads preference rows and truncates them for `block_size`.
pub fn load_pairs(
    path: &std::path::Path,
    vocab_size: usize,
    block_size: usize,
    max_prompt_length: usize,
    skip_invalid: bool,
) -> Result<(Vec<PreferenceRow>, usize), String> {
    let (rows, report) = data::load_preferences(path, &ByteTokenizer, vocab_size, skip_invalid)
        .map_err(|e| e.to_string())?;
    if report.skipped > 0 {
        eprintln!("{}: {report}", path.display());
    }
    let mut truncated = 0;
    let mut out = Vec::with_capacity(rows.len());
    for row in &rows {
        let (row, was_cut) = data::truncate_pair(row, block_size, max_prompt_length);
        truncated += usize::from(was_cut);
        let scored = |response: &[u32]| response.len() - usize::from(row.prompt.is_empty());
        if scored(&row.chosen) == 0 || scored(&row.rejected) == 0 {
            return Err(format!(
                "{}:{}: after truncation to the block of {block_size} a response has no scored token",
                path.display(),
                row.line
            ));
        }
        out.push(row);
    }
    Ok((out, truncated))
}

/// Checks `--max-prompt-length` against the block.
pub fn prompt_budget(max_prompt_length: Option<usize>, block_size: usize) -> Result<usize, String> {
    let p = max_prompt_length.unwrap_or_else(|| data::default_max_prompt_length(block_size));
    if p >= block_size {
        return Err(format!(
            "--max-prompt-length {p} must be below the model's block_size {block_size}"
        ));
    }
    Ok(p)
}

/// The frozen reference (if any), which must have the policy's config.
pub fn load_reference(
    path: Option<&std::path::Path>,
    policy: &Gpt<f32>,
) -> Result<Option<Gpt<f32>>, String> {
    let Some(path) = path else { return Ok(None) };
    let reference = load_model(path, "reference")?;
    if reference.config() != policy.config() {
        return Err(format!(
            "the reference {} has another config than the policy",
            path.display()
        ));
    }
    Ok(Some(reference))
}

/// Loads a checkpoint; errors name `what` it is and where.
pub fn load_model(path: &std::path::Path, what: &str) -> Result<Gpt<f32>, String> {
    Gpt::<f32>::load(path).map_err(|e| format!("{what} {}: {e}", path.display()))
}

/// The metrics of `rows` under `policy`, given the reference log-probs, and
/// the policy's own pair accuracy: the share of pairs whose chosen response
/// has the higher log-probability (`logp_c > logp_r`, no reference involved).
pub fn eval_metrics(
    policy: &Gpt<f32>,
    rows: &[PreferenceRow],
    reference: &[(f64, f64)],
    loss: &DpoLossConfig,
    batch_size: usize,
) -> (DpoMetrics, f64) {
    let policy_logps = pair_logps_no_grad(policy, rows, batch_size);
    let mut sums = MetricSums::default();
    sums.add(&pair_logps_of(rows, &policy_logps, reference), loss);
    let preferred = policy_logps.iter().filter(|(c, r)| c > r).count();
    (sums.metrics(), preferred as f64 / rows.len().max(1) as f64)
}

/// Evaluates on the held-out pairs, logs the line and the metrics record.
#[allow(clippy::too_many_arguments)]
fn run_eval_step(
    step: u64,
    policy: &Gpt<f32>,
    rows: &[PreferenceRow],
    reference: &[(f64, f64)],
    args: &DpoTrainArgs,
    batch_size: usize,
    metrics_log: &mut MetricsLog,
    bar: &indicatif::ProgressBar,
) -> Result<DpoMetrics, String> {
    let (m, pair_accuracy) = eval_metrics(policy, rows, reference, &args.loss, batch_size);
    let mut record = serde_json::to_value(m).unwrap();
    record["pair_accuracy"] = json!(pair_accuracy);
    metrics_log.write(step, "eval", record)?;
    log_line(
        bar,
        format!(
            "step {step}: eval loss {:.4}, rewards/accuracies {:.3}, rewards/margins {:.4}, pair accuracy {:.3}",
            m.loss, m.rewards_accuracies, m.rewards_margins, pair_accuracy
        ),
    );
    Ok(m)
}

/// Assembles [`PairLogps`] from per-row (chosen, rejected) values.
pub fn pair_logps_of(
    rows: &[PreferenceRow],
    policy: &[(f64, f64)],
    reference: &[(f64, f64)],
) -> PairLogps {
    let scored = |prompt: &[u32], response: &[u32]| response.len() - usize::from(prompt.is_empty());
    PairLogps {
        policy_chosen: policy.iter().map(|p| p.0).collect(),
        policy_rejected: policy.iter().map(|p| p.1).collect(),
        ref_chosen: reference.iter().map(|r| r.0).collect(),
        ref_rejected: reference.iter().map(|r| r.1).collect(),
        n_chosen: rows.iter().map(|r| scored(&r.prompt, &r.chosen)).collect(),
        n_rejected: rows
            .iter()
            .map(|r| scored(&r.prompt, &r.rejected))
            .collect(),
    }
}

/// Runs `dpo train`. Nothing is written to `--out` before the inputs are
/// validated; a NaN/inf loss stops the run with an error, keeping the last
/// good checkpoint.
pub fn train_dpo(args: &DpoTrainArgs) -> Result<TrainSummary, String> {
    args.loss.validate()?;
    args.hyper.validate()?;
    check_out_dir(&args.out)?;
    let mut policy = if args.resume {
        load_model(&args.out, "--resume: the checkpoint in --out")?
    } else {
        load_model(&args.policy, "policy")?
    };
    let reference = load_reference(args.reference.as_deref(), &policy)?;
    let cfg = *policy.config();
    let budget = prompt_budget(args.max_prompt_length, cfg.block_size)?;
    let (rows, truncated) = load_pairs(
        &args.data,
        cfg.vocab_size,
        cfg.block_size,
        budget,
        args.skip_invalid,
    )?;
    // Held-out pairs: a file of their own, or a seeded share of --data.
    let (rows, eval_rows) = match &args.eval_data {
        Some(p) => {
            let eval_rows =
                load_pairs(p, cfg.vocab_size, cfg.block_size, budget, args.skip_invalid)?.0;
            (
                split_held_out(rows, 0.0, args.hyper.seed, &args.data)?.0,
                eval_rows,
            )
        }
        None => split_held_out(rows, args.eval_fraction, args.hyper.seed, &args.data)?,
    };
    let mut metrics_log = MetricsLog::open(args.metrics.as_deref())?;
    let (mut optimizer, start_step) =
        optimizer_and_start_step(&args.hyper, &args.out, &policy, args.resume)?;
    if args.resume {
        eprintln!("resuming from step {start_step} in {}", args.out.display());
    }

    // The reference log-probs of every row, computed once.
    let t0 = Instant::now();
    let ref_batch = args.hyper.batch_size.max(8);
    let ref_logps = |rows: &[PreferenceRow]| match &reference {
        Some(r) => pair_logps_no_grad(r, rows, ref_batch),
        None => vec![(0.0, 0.0); rows.len()],
    };
    let train_ref = ref_logps(&rows);
    let eval_ref = ref_logps(&eval_rows);
    if reference.is_some() {
        eprintln!(
            "reference log-probs of {} rows cached in {:.1}s",
            rows.len() + eval_rows.len(),
            t0.elapsed().as_secs_f64()
        );
    }

    let lengths: Vec<usize> = rows
        .iter()
        .map(|r| r.prompt.len() + r.chosen.len().max(r.rejected.len()))
        .collect();
    let schedule = args.hyper.lr_schedule();
    let bar = progress_bar(args.hyper.steps.saturating_sub(start_step), "dpo train");
    if !args.progress {
        bar.set_draw_target(indicatif::ProgressDrawTarget::hidden());
    }
    let mut stats = RunStats::start("dpo", start_step);
    let mut plan = BatchPlan::new(
        &lengths,
        args.hyper.batch_size,
        args.hyper.seed,
        args.group_by_length,
    );
    let mut eval_result = None;
    if !eval_rows.is_empty() && start_step == 0 && args.eval_every > 0 {
        // Step 0: the starting point of the held-out curves.
        run_eval_step(
            0,
            &policy,
            &eval_rows,
            &eval_ref,
            args,
            ref_batch,
            &mut metrics_log,
            &bar,
        )?;
    }
    for step in start_step..args.hyper.steps {
        let indices = plan.batch(step);
        let batch_rows: Vec<PreferenceRow> = indices.iter().map(|&i| rows[i].clone()).collect();
        let batch = data::collate_pairs(&batch_rows);
        let b = batch.num_pairs;
        let mut reference_flat = vec![0.0; 2 * b];
        for (k, &i) in indices.iter().enumerate() {
            reference_flat[k] = train_ref[i].0;
            reference_flat[b + k] = train_ref[i].1;
        }

        let step_started = Instant::now();
        let tape = Tape::<f32>::new();
        let params = policy.bind(&tape);
        let logps = pair_logps(&policy, &tape, &params, &batch);
        let loss = dpo_loss(
            &tape,
            &logps,
            &reference_flat,
            &batch.scored_tokens,
            &args.loss,
        );
        let loss_value = loss.item() as f64;
        if !loss_value.is_finite() {
            bar.abandon();
            return Err(format!(
                "step {}: the loss is {loss_value}; stopping (the last good checkpoint, if any, is kept in {})",
                step + 1,
                args.out.display()
            ));
        }
        let values: Vec<f64> = logps.value().iter().map(|&v| v as f64).collect();
        let batch_logps = PairLogps {
            policy_chosen: values[..b].to_vec(),
            policy_rejected: values[b..].to_vec(),
            ref_chosen: reference_flat[..b].to_vec(),
            ref_rejected: reference_flat[b..].to_vec(),
            n_chosen: batch.scored_tokens[..b].to_vec(),
            n_rejected: batch.scored_tokens[b..].to_vec(),
        };
        let mut grads = tape.backward(&loss);
        let mut grads: Vec<_> = params.iter().map(|p| grads.take_or_zeros(p)).collect();
        drop(params);
        drop(logps);
        let grad_norm = args.hyper.clip(&mut grads);
        let lr = schedule.lr(args.hyper.lr, step);
        optimizer.step(policy.params_mut(), &grads, lr);
        let step_ms = step_started.elapsed().as_secs_f64() * 1e3;

        let real: usize = batch_rows
            .iter()
            .map(|r| 2 * r.prompt.len() + r.chosen.len() + r.rejected.len())
            .sum();
        stats.record(loss_value, real, 2 * b * batch.seq_len);
        let tokens_per_second = stats.tokens_per_second();
        let mut sums = MetricSums::default();
        sums.add(&batch_logps, &args.loss);
        let m = sums.metrics();
        let mut record = serde_json::to_value(m).unwrap();
        record["lr"] = json!(lr);
        record["grad_norm"] = json!(grad_norm);
        record["tokens_per_second"] = json!(tokens_per_second);
        record["step_ms"] = json!(step_ms);
        metrics_log.write(step + 1, "train", record)?;
        bar.set_message(format!(
            "loss {:.4} acc {:.2} {:.0} tok/s",
            loss_value, m.rewards_accuracies, tokens_per_second
        ));
        bar.inc(1);

        let is_last = step + 1 == args.hyper.steps;
        if !eval_rows.is_empty()
            && (is_last || (args.eval_every > 0 && (step + 1) % args.eval_every == 0))
        {
            eval_result = Some(run_eval_step(
                step + 1,
                &policy,
                &eval_rows,
                &eval_ref,
                args,
                ref_batch,
                &mut metrics_log,
                &bar,
            )?);
        }
        if args.save_every > 0 && (step + 1) % args.save_every == 0 && !is_last {
            save_checkpoint(
                &args.out,
                &policy,
                &optimizer,
                &stats.state(step + 1, &args.hyper),
            )?;
        }
    }
    bar.finish_and_clear();
    stats.finish(
        &args.out,
        &policy,
        &optimizer,
        &args.hyper,
        rows.len(),
        truncated,
        eval_result,
        None,
    )
}
