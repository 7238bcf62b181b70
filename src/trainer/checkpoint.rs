//! Checkpoints of a training run: the model plus the optimizer's state, so
//! that a run can be resumed with `--resume`.
//!
//! `DIR/config.json` + `DIR/model.safetensors` are the model (see the
//! transformer crate's `checkpoint` module); `DIR/optimizer.safetensors`
//! holds AdamW's moments as `{param}.exp_avg` / `{param}.exp_avg_sq`, and
//! `DIR/trainer_state.json` the step count, the optimizer and the stage.
//! Every file is written with [`transformer::write_atomic`] (a temporary
//! file, flushed to disk, renamed into place), so an interrupted save leaves
//! each file whole.

use std::collections::HashMap;
use std::path::Path;

use anyhow::{anyhow, ensure, Context, Result};
use autograd::optim::Optimizer;
use autograd::Tensor;
use safetensors::tensor::{Dtype, TensorView};
use serde::{Deserialize, Serialize};
use transformer::{write_atomic, Gpt};

use super::settings::{AnyOptimizer, TrainHyper};

/// What `trainer_state.json` records.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TrainerState {
    /// Optimizer steps done.
    pub step: u64,
    /// `adamw` or `sgd`.
    pub optimizer: String,
    /// The objective's stage: `dpo` or `sft`.
    pub stage: String,
    /// Loss of the last step.
    pub last_loss: f64,
    /// What the objective carries between steps (see `Objective::state`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub objective_state: Option<serde_json::Value>,
}

const STATE_FILE: &str = "trainer_state.json";
const OPTIMIZER_FILE: &str = "optimizer.safetensors";

/// Refuses an `--out` that exists and is not a directory, before any work is
/// done (a run must not train for an hour and then fail to save).
pub fn check_out_dir(dir: &Path) -> Result<()> {
    ensure!(
        !dir.exists() || dir.is_dir(),
        "--out {} exists and is not a directory",
        dir.display()
    );
    Ok(())
}

/// The optimizer's state tensors under their file names: `{param}.{moment}`.
fn optimizer_tensors(model: &Gpt<f32>, optimizer: &AnyOptimizer) -> Vec<(String, Tensor<f32>)> {
    let AnyOptimizer::AdamW(adamw) = optimizer else {
        return Vec::new(); // plain SGD keeps no state but its step count
    };
    let mut named = Vec::new();
    for (moment, tensors) in adamw.state() {
        for (name, t) in model.param_names().iter().zip(tensors) {
            named.push((format!("{name}.{moment}"), t));
        }
    }
    named
}

/// Saves the model, the optimizer state, then the trainer state into `dir`.
pub fn save_checkpoint(
    dir: &Path,
    model: &Gpt<f32>,
    optimizer: &AnyOptimizer,
    state: &TrainerState,
) -> Result<()> {
    model
        .save(dir)
        .with_context(|| format!("cannot save the checkpoint to {}", dir.display()))?;
    let named = optimizer_tensors(model, optimizer);
    if !named.is_empty() {
        let bytes: Vec<Vec<u8>> = named
            .iter()
            .map(|(_, t)| t.iter().flat_map(|v| v.to_le_bytes()).collect())
            .collect();
        let views = named
            .iter()
            .zip(&bytes)
            .map(|((name, t), data)| {
                let view = TensorView::new(Dtype::F32, t.shape().to_vec(), data)?;
                Ok((name.clone(), view))
            })
            .collect::<Result<Vec<_>, safetensors::SafeTensorError>>()
            .context("cannot serialize the optimizer state")?;
        let serialized =
            safetensors::serialize(views, &None).context("cannot serialize the optimizer state")?;
        write_atomic(&dir.join(OPTIMIZER_FILE), &serialized)?;
    }
    let json = serde_json::to_string_pretty(state)?;
    write_atomic(&dir.join(STATE_FILE), json.as_bytes())?;
    Ok(())
}

/// The F32 tensors of a safetensors file, by name.
fn read_f32_tensors(path: &Path) -> Result<HashMap<String, Tensor<f32>>> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    let file = safetensors::SafeTensors::deserialize(&bytes)
        .with_context(|| format!("{} is not a safetensors file", path.display()))?;
    let mut by_name = HashMap::new();
    for (name, view) in file.tensors() {
        ensure!(
            view.dtype() == Dtype::F32,
            "{}: tensor {name} is not F32",
            path.display()
        );
        let data: Vec<f32> = view
            .data()
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        let t = Tensor::from_shape_vec(ndarray::IxDyn(view.shape()), data)
            .with_context(|| format!("{}: tensor {name}", path.display()))?;
        by_name.insert(name, t);
    }
    Ok(by_name)
}

/// Reads `DIR/trainer_state.json`.
pub fn read_state(dir: &Path) -> Result<TrainerState> {
    let path = dir.join(STATE_FILE);
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("cannot read {}", path.display()))?;
    serde_json::from_str(&text)
        .with_context(|| format!("{} is not a trainer state", path.display()))
}

/// Loads the optimizer state of `state` saved by [`save_checkpoint`] into `optimizer`.
pub fn load_optimizer_state(
    dir: &Path,
    model: &Gpt<f32>,
    optimizer: &mut AnyOptimizer,
    state: &TrainerState,
) -> Result<()> {
    match optimizer {
        AnyOptimizer::AdamW(adamw) => {
            let path = dir.join(OPTIMIZER_FILE);
            let mut by_name = read_f32_tensors(&path)?;
            let mut take = |moment: &str| -> Result<Vec<Tensor<f32>>> {
                model
                    .named_params()
                    .map(|(name, param)| {
                        let key = format!("{name}.{moment}");
                        let t = by_name
                            .remove(&key)
                            .ok_or_else(|| anyhow!("{}: no tensor {key}", path.display()))?;
                        ensure!(
                            t.shape() == param.shape(),
                            "{}: tensor {key} has shape {:?}, the parameter {:?}",
                            path.display(),
                            t.shape(),
                            param.shape()
                        );
                        Ok(t)
                    })
                    .collect()
            };
            let exp_avg = take("exp_avg")?;
            let exp_avg_sq = take("exp_avg_sq")?;
            adamw.load_state(state.step, exp_avg, exp_avg_sq);
        }
        AnyOptimizer::Sgd(sgd) => sgd.set_steps_taken(state.step),
    }
    Ok(())
}

/// The trainer state of the run in `out`, if `--resume` can continue it with
/// `hyper` under the objective `stage`: the same stage and optimizer, and
/// fewer steps taken than `hyper.steps`. Checked before any data is loaded.
pub fn resumable_state(out: &Path, stage: &str, hyper: &TrainHyper) -> Result<TrainerState> {
    let state = read_state(out).context("--resume")?;
    let run = out.display();
    ensure!(
        state.stage == stage,
        "--resume: the run in {run} is a {} run, not {stage}",
        state.stage
    );
    ensure!(
        state.optimizer == hyper.optimizer_name(),
        "--resume: the run in {run} used --optimizer {}, not {}",
        state.optimizer,
        hyper.optimizer_name()
    );
    ensure!(
        state.step < hyper.steps,
        "--resume: the run in {run} already took {} steps; ask for more with --steps",
        state.step
    );
    Ok(state)
}

/// A fresh optimizer at step 0, or, with `resume`, the optimizer state and
/// step count saved in `out` (see [`resumable_state`]).
pub fn optimizer_and_start_step(
    hyper: &TrainHyper,
    out: &Path,
    model: &Gpt<f32>,
    resume: bool,
    stage: &str,
) -> Result<(AnyOptimizer, u64)> {
    let mut optimizer = hyper.new_optimizer();
    if !resume {
        return Ok((optimizer, 0));
    }
    let state = resumable_state(out, stage, hyper)?;
    load_optimizer_state(out, model, &mut optimizer, &state).context("--resume")?;
    Ok((optimizer, state.step))
}
