//! `dpo train`: DPO of a policy against a frozen reference (the loss:
//! [`dpo::objective::DpoObjective`]).

use std::path::PathBuf;
use std::time::Instant;

use anyhow::Result;
use dpo::data::PreferenceRow;
use dpo::loss::DpoLossConfig;
use dpo::objective::{DpoObjective, Objective};

use super::checkpoint::open_run_dir;
use super::setup::{
    check_training_memory, load_checkpoint, load_reference, load_train_data, DataArgs,
};
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
    let loaded = if run.resume {
        load_checkpoint(&run.out, "--resume: the checkpoint in --out")?
    } else {
        load_checkpoint(&args.policy, "policy")?
    };
    let model_files = loaded.model_files(run.save_format);
    let mut policy = loaded.model;
    check_training_memory(policy.config(), &run.hyper, args.reference.is_some())?;
    let reference = load_reference(args.reference.as_deref(), &policy)?;
    let data = load_train_data::<PreferenceRow>(
        &args.data,
        policy.config(),
        loaded.tokenizer.as_ref(),
        run.hyper.seed,
    )?;

    let started = Instant::now();
    let mut objective = DpoObjective::new(
        args.loss.clone(),
        data.train,
        data.held_out,
        reference.as_ref(),
        eval_batch_size(run.hyper.batch_size),
    );
    if reference.is_some() {
        eprintln!(
            "reference log-probs of {} rows cached in {:.1}s",
            objective.num_rows(),
            started.elapsed().as_secs_f64()
        );
    }
    drop(reference);
    train(&mut objective, &mut policy, &model_files, run, data.counts)
}
