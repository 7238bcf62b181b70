//! `dpo train --loss kto` and `dpo eval --loss kto`: KTO of a policy against
//! a frozen reference on unpaired, labelled completions (the loss:
//! [`dpo::objective::KtoObjective`]).

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{anyhow, ensure, Result};
use dpo::data::{LoadOptions, UnpairedRow};
use dpo::loss::kto::{KtoConfig, KtoMetrics};
use dpo::objective::{evaluate_unpaired, KtoObjective, Objective};
use serde::Serialize;

use super::distributed::Collective;
use super::dpo::eval_batch_size;
use super::evaluate::EvalPrecision;
use super::lora::ReferenceModel;
use super::setup::{
    load_checkpoint, load_reference, load_rows, prepare_run, DataArgs, InitialModel, RunSetup,
    Truncation,
};
use super::train_loop::{train, RunSettings, TrainSummary};

/// Everything `dpo train --loss kto` needs.
#[derive(Debug, Clone)]
pub struct KtoTrainArgs {
    /// The initial policy checkpoint (with `--resume`: the one in `--out`).
    pub policy: PathBuf,
    /// The frozen reference (not [`ReferenceModel::Free`]).
    pub reference: ReferenceModel,
    /// Loss settings.
    pub config: KtoConfig,
    /// Unpaired rows.
    pub data: DataArgs,
    /// How to train.
    pub run: RunSettings,
}

/// KTO's KL estimate needs other rows' completions: a batch of one row would
/// compare the row with itself (TRL refuses it as well).
fn check_kl_batch_size(batch_size: usize) -> Result<()> {
    ensure!(
        batch_size >= 2,
        "--loss kto needs --batch-size of at least 2: the KL estimate of a batch pairs each prompt with another row's completion"
    );
    Ok(())
}

/// TRL's advice when desirable and undesirable rows are not balanced (Eq. 8
/// of the KTO paper): `w_d n_d / (w_u n_u)` should lie in `[1, 4/3]`. `None`
/// when the weights are fine (or the classes are balanced).
fn weight_advice(rows: &[UnpairedRow], config: &KtoConfig) -> Option<String> {
    let desirable = rows.iter().filter(|r| r.desirable).count().max(1) as f64;
    let undesirable = (rows.len() as f64 - desirable).max(1.0);
    if desirable == undesirable {
        return None;
    }
    let round = |x: f64| (x * 100.0).round() / 100.0;
    let (w_d, w_u) = (config.desirable_weight, config.undesirable_weight);
    let d_low = round(undesirable * w_u / desirable);
    let d_high = round(undesirable * w_u / desirable * 1.33);
    let u_low = round(desirable * w_d / undesirable / 1.33);
    let u_high = round(desirable * w_d / undesirable);
    let in_range = (d_low..=d_high).contains(&w_d) || (u_low..=u_high).contains(&w_u);
    (!in_range).then(|| {
        format!(
            "{desirable} desirable and {undesirable} undesirable rows: consider EITHER \
             --desirable-weight in [{d_low}, {d_high}] OR --undesirable-weight in [{u_low}, {u_high}] \
             (not both), so that weighted desirable and undesirable rows are in a ratio of 1 to 4/3"
        )
    })
}

/// Runs `dpo train --loss kto`, on one rank only (KTO's batch KL estimate
/// cannot be split). Nothing new is written to `--out` before the inputs are
/// validated.
pub fn train_kto(args: &KtoTrainArgs, comm: &dyn Collective) -> Result<TrainSummary> {
    let run = &args.run;
    args.config.validate()?;
    check_kl_batch_size(run.hyper.batch_size)?;
    let setup = RunSetup {
        stage: KtoObjective::STAGE,
        init: (&InitialModel::Checkpoint(args.policy.clone()), "policy"),
        data: &args.data,
        run,
        split_refusal: Some(KtoObjective::SPLIT_REFUSAL.into()),
        reference: match &args.reference {
            ReferenceModel::Checkpoint(path) => Some(path.as_path()),
            _ => None,
        },
    };
    let prepared = prepare_run::<UnpairedRow>(&setup, comm)?;
    let (mut policy, data) = (prepared.policy, prepared.data);
    let init_adapter = run.lora.as_ref().and_then(|l| l.init_adapter.as_deref());
    let reference = load_reference(&args.reference, &policy, init_adapter)?
        .ok_or_else(|| anyhow!("KTO needs a reference model"))?;
    if let Some(advice) = weight_advice(&data.train, &args.config) {
        eprintln!("warning: {advice}");
    }

    let started = Instant::now();
    let mut objective = KtoObjective::new(
        args.config,
        &data.train,
        &data.held_out,
        &reference,
        run.hyper.batch_size,
        eval_batch_size(run.hyper.batch_size),
    );
    eprintln!(
        "reference log-probs of {} rows and their KL sequences cached in {:.1}s",
        objective.num_rows(),
        started.elapsed().as_secs_f64()
    );
    drop(reference);
    train(
        &mut objective,
        &mut policy,
        &prepared.model_files,
        run,
        data.counts,
        comm,
    )
}

/// Everything `dpo eval --loss kto` needs.
#[derive(Debug, Clone)]
pub struct KtoEvalArgs {
    /// The policy checkpoint.
    pub policy: PathBuf,
    /// The reference (not [`ReferenceModel::Free`]).
    pub reference: ReferenceModel,
    /// Unpaired data.
    pub data: PathBuf,
    /// Loss settings.
    pub config: KtoConfig,
    /// How a long row is cut.
    pub truncation: Truncation,
    /// Rows per batch: each batch has its own KL estimate.
    pub batch_size: usize,
    /// Skip bad rows instead of refusing the file.
    pub skip_invalid: bool,
    /// A chat template to render conversational rows with, instead of the model's.
    pub chat_template: Option<PathBuf>,
    /// The arithmetic the models run in.
    pub precision: EvalPrecision,
}

/// The result of `dpo eval --loss kto`: the metrics plus counts.
#[derive(Debug, Clone, Serialize)]
pub struct KtoEvalReport {
    /// The metrics.
    #[serde(flatten)]
    pub metrics: KtoMetrics,
    /// Rows truncated to fit the block.
    pub truncated_rows: usize,
}

/// Runs `dpo eval --loss kto`, in f64 or f32 (see [`super::evaluate`]).
pub fn run_kto_eval(args: &KtoEvalArgs) -> Result<KtoEvalReport> {
    args.config.validate()?;
    check_kl_batch_size(args.batch_size)?;
    let mut loaded = load_checkpoint(&args.policy, "policy")?;
    if let Some(path) = &args.chat_template {
        loaded.set_chat_template(path)?;
    }
    let policy = loaded.model;
    let reference = load_reference(&args.reference, &policy, None)?
        .ok_or_else(|| anyhow!("KTO needs a reference model"))?;
    let prepared = load_rows::<UnpairedRow>(
        &args.data,
        policy.config(),
        loaded.tokenizer.as_ref(),
        args.truncation,
        &LoadOptions {
            skip_invalid: args.skip_invalid,
            assistant_only_loss: false,
        },
        true,
    )?;
    let (rows, config, batch_size) = (&prepared.rows, &args.config, args.batch_size);
    let metrics = match args.precision {
        EvalPrecision::F64 => evaluate_unpaired(
            &policy.to_f64(),
            &reference.to_f64(),
            rows,
            config,
            batch_size,
        ),
        EvalPrecision::F32 => evaluate_unpaired(&policy, &reference, rows, config, batch_size),
    };
    ensure!(
        metrics.loss.is_finite() && metrics.kl.is_finite(),
        "the metrics are not finite (loss {}, kl {}): check the checkpoints for inf/NaN weights",
        metrics.loss,
        metrics.kl
    );
    Ok(KtoEvalReport {
        metrics,
        truncated_rows: prepared.truncation.truncated,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rows(desirable: usize, undesirable: usize) -> Vec<UnpairedRow> {
        let row = |label| UnpairedRow {
            prompt: vec![1],
            completion: vec![2],
            desirable: label,
            line: 1,
        };
        let mut rows = vec![row(true); desirable];
        rows.extend(vec![row(false); undesirable]);
        rows
    }

    #[test]
    fn weight_advice_follows_trl_ranges() {
        let config = KtoConfig::default();
        assert_eq!(weight_advice(&rows(5, 5), &config), None);
        // 12 desirable, 4 undesirable: w_d in [0.33, 0.44] or w_u in [2.26, 3].
        let advice = weight_advice(&rows(12, 4), &config).unwrap();
        assert!(
            advice.contains("[0.33, 0.44]") && advice.contains("[2.26, 3]"),
            "{advice}"
        );
        let up = KtoConfig {
            undesirable_weight: 2.5,
            ..config
        };
        assert_eq!(weight_advice(&rows(12, 4), &up), None);
    }
}
