//! `dpo eval`: DPO metrics of a policy against a reference over a file.
//!
//! Evaluation runs in f64 (the f32 checkpoints are widened exactly), so the
//! printed metrics are the exact values of the stored weights, up to f64
//! rounding: they can be compared with a float64 reference to ~1e-12.

use std::path::PathBuf;

use serde::Serialize;
use transformer::Gpt;

use super::dpo_train::{load_model, load_pairs, load_reference, pair_logps_of, prompt_budget};
use super::logps::pair_logps_no_grad;
use crate::loss::{DpoLossConfig, DpoMetrics, MetricSums};

/// Everything `dpo eval` needs.
#[derive(Debug, Clone)]
pub struct EvalArgs {
    /// The policy checkpoint.
    pub policy: PathBuf,
    /// The reference checkpoint; `None` for reference-free metrics.
    pub reference: Option<PathBuf>,
    /// Preference data.
    pub data: PathBuf,
    /// Loss settings.
    pub loss: DpoLossConfig,
    /// Prompt budget of truncation; default `block_size / 2`.
    pub max_prompt_length: Option<usize>,
    /// Pairs per forward pass.
    pub batch_size: usize,
    /// Skip bad rows instead of refusing the file.
    pub skip_invalid: bool,
}

/// The result of `dpo eval`: the contract's metrics plus counts.
#[derive(Debug, Clone, Serialize)]
pub struct EvalReport {
    /// The metrics.
    #[serde(flatten)]
    pub metrics: DpoMetrics,
    /// Rows truncated to fit the block.
    pub truncated_rows: usize,
}

/// Metrics of every pair of `rows` (f64 forward of both models).
pub fn evaluate_pairs(
    policy: &Gpt<f64>,
    reference: Option<&Gpt<f64>>,
    rows: &[crate::data::PreferenceRow],
    loss: &DpoLossConfig,
    batch_size: usize,
) -> DpoMetrics {
    let policy_logps = pair_logps_no_grad(policy, rows, batch_size);
    let reference_logps = match reference {
        Some(r) => pair_logps_no_grad(r, rows, batch_size),
        None => vec![(0.0, 0.0); rows.len()],
    };
    let mut sums = MetricSums::default();
    sums.add(&pair_logps_of(rows, &policy_logps, &reference_logps), loss);
    sums.metrics()
}

/// Runs `dpo eval`.
pub fn run_eval(args: &EvalArgs) -> Result<EvalReport, String> {
    args.loss.validate()?;
    let policy = load_model(&args.policy, "policy")?;
    let reference = load_reference(args.reference.as_deref(), &policy)?;
    let cfg = *policy.config();
    let budget = prompt_budget(args.max_prompt_length, cfg.block_size)?;
    let (rows, truncated_rows) = load_pairs(
        &args.data,
        cfg.vocab_size,
        cfg.block_size,
        budget,
        args.skip_invalid,
    )?;
    let policy64 = policy.to_f64();
    let reference64 = reference.map(|r| r.to_f64());
    let metrics = evaluate_pairs(
        &policy64,
        reference64.as_ref(),
        &rows,
        &args.loss,
        args.batch_size,
    );
    let values = [
        metrics.loss,
        metrics.rewards_chosen,
        metrics.rewards_rejected,
        metrics.logps_chosen,
        metrics.logps_rejected,
    ];
    if values.iter().any(|v| !v.is_finite()) {
        return Err(format!(
            "the metrics are not finite (loss {}, logps/chosen {}, logps/rejected {}): check the checkpoints for inf/NaN weights",
            metrics.loss, metrics.logps_chosen, metrics.logps_rejected
        ));
    }
    Ok(EvalReport {
        metrics,
        truncated_rows,
    })
}
