//! `dpo train`: DPO of a policy against a frozen reference (the loss:
//! [`dpo::objective::DpoObjective`]).

use std::path::PathBuf;
use std::time::Instant;

use anyhow::Result;
use autograd::Precision;
use dpo::data::{PairLayout, PreferenceRow};
use dpo::loss::DpoLossConfig;
use dpo::objective::{DpoObjective, Objective};
use dpo::scoring::score_pairs;
use transformer::Model;

use super::distributed::{all_gather_f64, Collective};
use super::lora::ReferenceModel;
use super::setup::{load_reference, prepare_run, DataArgs, InitialModel, RunSetup};
use super::split::share;
use super::train_loop::{train, RunSettings, TrainSummary};

/// Everything `dpo train` needs.
#[derive(Debug, Clone)]
pub struct DpoTrainArgs {
    /// The initial policy checkpoint (with `--resume`: the one in `--out`).
    pub policy: PathBuf,
    /// The frozen reference.
    pub reference: ReferenceModel,
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

/// The reference's `(chosen, rejected)` log-probs of every row of `rows`,
/// `batch_size` pairs per no-grad forward pass, each rank computing a share
/// of the batches and all of them receiving all of it. The batches are those
/// of one rank, so the values are the same bits on any number of ranks.
fn shared_reference_logps(
    reference: &Model<f32>,
    rows: &[PreferenceRow],
    batch_size: usize,
    layout: PairLayout,
    precision: Precision,
    comm: &dyn Collective,
) -> Vec<(f64, f64)> {
    let batches = share(rows.len().div_ceil(batch_size), comm.rank(), comm.ranks());
    let mine =
        (batches.start * batch_size).min(rows.len())..(batches.end * batch_size).min(rows.len());
    let local: Vec<f64> = score_pairs(reference, &rows[mine], batch_size, layout, precision, false)
        .0
        .into_iter()
        .flat_map(|(chosen, rejected)| [chosen, rejected])
        .collect();
    all_gather_f64(comm, &local)
        .chunks_exact(2)
        .map(|pair| (pair[0], pair[1]))
        .collect()
}

/// Runs `dpo train` on this rank of `comm` (see [`train`]). Nothing new is
/// written to `--out` before the inputs are validated.
pub fn train_dpo(args: &DpoTrainArgs, comm: &dyn Collective) -> Result<TrainSummary> {
    let run = &args.run;
    args.loss.validate()?;
    let setup = RunSetup {
        stage: DpoObjective::STAGE,
        init: (&InitialModel::Checkpoint(args.policy.clone()), "policy"),
        data: &args.data,
        run,
        split_refusal: DpoObjective::split_refusal_of(&args.loss),
        reference: match &args.reference {
            ReferenceModel::Checkpoint(path) => Some(path.as_path()),
            _ => None,
        },
    };
    let prepared = prepare_run::<PreferenceRow>(&setup, comm)?;
    let (mut policy, data) = (prepared.policy, prepared.data);
    let init_adapter = run.lora.as_ref().and_then(|l| l.init_adapter.as_deref());
    let reference = load_reference(&args.reference, &policy, init_adapter)?;

    let batch_size = eval_batch_size(run.hyper.batch_size);
    let mut objective = if comm.ranks() == 1 {
        // The reference's log-probs of a row are computed when a batch first
        // uses it (the objective keeps the reference), so training starts at
        // once.
        DpoObjective::with_layout(
            args.loss.clone(),
            data.train,
            data.held_out,
            reference.as_ref(),
            batch_size,
            args.layout,
        )
    } else {
        // Several ranks: each computes a share of every row's reference
        // log-probs before the first step and all receive all of them, so
        // every rank holds the same values whatever rows its batches get.
        let started = Instant::now();
        let cached = |rows: &[PreferenceRow]| match &reference {
            Some(model) => {
                shared_reference_logps(model, rows, batch_size, args.layout, run.precision, comm)
            }
            None => vec![(0.0, 0.0); rows.len()], // reference-free
        };
        let (train_reference, held_out_reference) = (cached(&data.train), cached(&data.held_out));
        let objective = DpoObjective::with_reference_logps(
            args.loss.clone(),
            (data.train, train_reference),
            (data.held_out, held_out_reference),
            batch_size,
            args.layout,
        );
        if reference.is_some() && comm.is_root() {
            eprintln!(
                "reference log-probs of {} rows cached in {:.1}s",
                objective.num_rows(),
                started.elapsed().as_secs_f64()
            );
        }
        objective
    };
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
