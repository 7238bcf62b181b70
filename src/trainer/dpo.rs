//! `dpo train`: DPO of a policy against a frozen reference (the loss:
//! [`dpo::objective::DpoObjective`]).

use std::path::PathBuf;

use anyhow::Result;
use dpo::data::{PairLayout, PreferenceRow};
use dpo::loss::DpoLossConfig;
use dpo::objective::{DpoObjective, Objective};

use super::checkpoint::open_run_dir;
use super::setup::{check_training_memory, load_model, load_reference, load_train_data, DataArgs};
use super::train_loop::{train, RunSettings, TrainSummary};

/// Everything `dpo train` needs.
#[derive(Debug, Clone)]
pub struct DpoTrainArgs {
    /// The initial policy checkpoint (with `--resume`: the one in `--out`).
    pub policy: PathBuf,
    /// The frozen reference checkpoint; `None` for reference-free DPO.
    pub reference: Option<PathBuf>,
    /// Loss settings.
    pub loss: DpoLossConfig,
    /// How pairs go through the models (`--prefix-sharing`).
    pub layout: PairLayout,
    /// Preference rows.
    pub data: DataArgs,
    /// How to train.
    pub run: RunSettings,
}

/// Pairs per no-grad forward pass of the reference and of evaluation.
pub fn eval_batch_size(train_batch_size: usize) -> usize {
    train_batch_size.max(8)
}

/// Runs `dpo train`. Nothing new is written to `--out` before the inputs are validated.
pub fn train_dpo(args: &DpoTrainArgs) -> Result<TrainSummary> {
    let run = &args.run;
    args.loss.validate()?;
    run.hyper.validate()?;
    open_run_dir(
        &run.out,
        run.resume.then_some((DpoObjective::STAGE, &run.hyper)),
    )?;
    let mut policy = if run.resume {
        load_model(&run.out, "--resume: the checkpoint in --out")?
    } else {
        load_model(&args.policy, "policy")?
    };
    check_training_memory(policy.config(), &run.hyper, args.reference.is_some())?;
    let reference = load_reference(args.reference.as_deref(), &policy)?;
    let data = load_train_data::<PreferenceRow>(&args.data, policy.config(), run.hyper.seed)?;

    // The reference's log-probs of a row are computed when a batch first
    // uses it (the objective keeps the reference), so training starts at once.
    let mut objective = DpoObjective::with_layout(
        args.loss.clone(),
        data.train,
        data.held_out,
        reference.as_ref(),
        eval_batch_size(run.hyper.batch_size),
        args.layout,
    );
    drop(reference);
    train(&mut objective, &mut policy, run, data.counts)
}
