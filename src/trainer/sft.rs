//! `dpo sft`: supervised fine-tuning, the usual first stage before DPO (the
//! loss: [`dpo::objective::SftObjective`]).

use anyhow::Result;
use dpo::data::SftRow;
use dpo::objective::{Objective, SftObjective};

use super::distributed::Collective;
use super::setup::{prepare_run, DataArgs, InitialModel, RunSetup};
use super::train_loop::{train, RunSettings, TrainSummary};

/// Everything `dpo sft` needs.
#[derive(Debug, Clone)]
pub struct SftTrainArgs {
    /// Initial model (ignored with `--resume`: the checkpoint in `--out`).
    pub init: InitialModel,
    /// SFT or preference rows (preference rows train on the chosen side).
    pub data: DataArgs,
    /// How to train.
    pub run: RunSettings,
}

/// Runs `dpo sft` on this rank of `comm` (see [`train`]). Nothing new is
/// written to `--out` before the inputs are validated.
pub fn train_sft(args: &SftTrainArgs, comm: &dyn Collective) -> Result<TrainSummary> {
    let run = &args.run;
    let setup = RunSetup {
        stage: SftObjective::STAGE,
        init: (&args.init, "--init"),
        data: &args.data,
        run,
        split_refusal: None,
        reference: None,
    };
    let mut prepared = prepare_run::<SftRow>(&setup, comm)?;
    let data = prepared.data;
    let mut objective = SftObjective::new(data.train, data.held_out, run.hyper.batch_size);
    train(
        &mut objective,
        &mut prepared.policy,
        &prepared.model_files,
        run,
        data.counts,
        comm,
    )
}
