//! `dpo sft`: supervised fine-tuning, the usual first stage before DPO (the
//! loss: [`dpo::objective::SftObjective`]).

use std::path::PathBuf;

use anyhow::Result;
use dpo::data::SftRow;
use dpo::objective::{Objective, SftObjective};
use transformer::{ByteTokenizer, CheckpointFormat, Gpt, GptConfig};

use super::checkpoint::open_run_dir;
use super::checkpoint::ModelFiles;
use super::distributed::Collective;
use super::setup::{
    check_training_memory, load_checkpoint, load_train_data, DataArgs, LoadedModel,
};
use super::train_loop::{train, RunSettings, TrainSummary};

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
    /// Initial model (ignored with `--resume`: the checkpoint in `--out`).
    pub init: SftInit,
    /// SFT or preference rows (preference rows train on the chosen side).
    pub data: DataArgs,
    /// How to train.
    pub run: RunSettings,
}

/// Runs `dpo sft` on this rank of `comm` (see [`train`]). Nothing new is
/// written to `--out` before the inputs are validated.
pub fn train_sft(args: &SftTrainArgs, comm: &dyn Collective) -> Result<TrainSummary> {
    let run = &args.run;
    run.hyper.validate()?;
    if comm.is_root() {
        open_run_dir(
            &run.out,
            run.resume.then_some((SftObjective::STAGE, &run.hyper)),
        )?;
    }
    // The other ranks read --out (to resume) once rank 0 has made it whole.
    comm.barrier();
    let loaded = match (&args.init, run.resume) {
        (_, true) => load_checkpoint(&run.out, "--resume: the checkpoint in --out")?,
        (SftInit::Checkpoint(dir), false) => load_checkpoint(dir, "--init")?,
        (SftInit::Config(config), false) => {
            config
                .validate()
                .map_err(|e| anyhow::anyhow!("--config: {e}"))?;
            // Before the weights are allocated.
            check_training_memory(config, &run.hyper, false)?;
            // A fresh model reads bytes and is saved as nanoGPT by default.
            LoadedModel {
                model: Gpt::<f32>::new(*config, run.hyper.seed),
                tokenizer: Box::new(ByteTokenizer),
                format: CheckpointFormat::NanoGpt,
                tokenizer_files: Vec::new(),
            }
        }
    };
    let model_files: ModelFiles = loaded.model_files(run.save_format);
    let mut model = loaded.model;
    check_training_memory(model.config(), &run.hyper, false)?;
    let data = load_train_data::<SftRow>(
        &args.data,
        model.config(),
        loaded.tokenizer.as_ref(),
        run.hyper.seed,
        comm.is_root(),
    )?;
    let mut objective = SftObjective::new(data.train, data.held_out, run.hyper.batch_size);
    train(
        &mut objective,
        &mut model,
        &model_files,
        run,
        data.counts,
        comm,
    )
}
