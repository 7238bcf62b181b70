//! Checkpoints of a training run: the model (contract format) plus the
//! optimizer's state, so that a run can be resumed with `--resume`.
//!
//! `DIR/config.json` + `DIR/model.safetensors` are the model (see the
//! transformer crate); `DIR/optimizer.safetensors` holds AdamW's moments as
//! `{param}.exp_avg` / `{param}.exp_avg_sq`, and `DIR/trainer_state.json` the
//! step count and the settings. Every file is written to a temporary name and
//! renamed, so an interrupted save leaves the previous checkpoint intact.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use autograd::optim::Optimizer;
use autograd::Tensor;
use safetensors::tensor::{Dtype, TensorView};
use serde::{Deserialize, Serialize};
use transformer::Gpt;

use super::optimizer::AnyOptimizer;

/// What `trainer_state.json` records.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TrainerState {
    /// Optimizer steps done.
    pub step: u64,
    /// `adamw` or `sgd`.
    pub optimizer: String,
    /// `dpo` or `sft`.
    pub stage: String,
    /// Loss of the last step.
    pub last_loss: f64,
}

/// Refuses an `--out` that exists and is not a directory, before any work is
/// done (a run must not train for an hour and then fail to save).
pub fn check_out_dir(dir: &Path) -> Result<(), String> {
    if dir.exists() && !dir.is_dir() {
        return Err(format!(
            "--out {} exists and is not a directory",
            dir.display()
        ));
    }
    Ok(())
}

fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), String> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, bytes).map_err(|e| format!("cannot write {}: {e}", tmp.display()))?;
    std::fs::rename(&tmp, path).map_err(|e| format!("cannot rename to {}: {e}", path.display()))
}

/// Saves the model, then the optimizer state, into `dir`.
pub fn save_checkpoint(
    dir: &Path,
    model: &Gpt<f32>,
    optimizer: &AnyOptimizer,
    state: &TrainerState,
) -> Result<(), String> {
    model
        .save(dir)
        .map_err(|e| format!("cannot save the checkpoint to {}: {e}", dir.display()))?;
    if let AnyOptimizer::AdamW(adamw) = optimizer {
        let moments = adamw.state();
        let mut named: Vec<(String, &Tensor<f32>)> = Vec::new();
        for (suffix, tensors) in &moments {
            for (name, t) in model.param_names().iter().zip(tensors) {
                named.push((format!("{name}.{suffix}"), t));
            }
        }
        let bytes: Vec<(String, Vec<u8>, Vec<usize>)> = named
            .iter()
            .map(|(n, t)| {
                let data: Vec<u8> = t.iter().flat_map(|v| v.to_le_bytes()).collect();
                (n.clone(), data, t.shape().to_vec())
            })
            .collect();
        let views: Vec<(String, TensorView<'_>)> = bytes
            .iter()
            .map(|(n, data, shape)| {
                (
                    n.clone(),
                    TensorView::new(Dtype::F32, shape.clone(), data).unwrap(),
                )
            })
            .collect();
        let serialized = safetensors::serialize(views, &None)
            .map_err(|e| format!("cannot serialize the optimizer state: {e}"))?;
        write_atomic(&dir.join("optimizer.safetensors"), &serialized)?;
    }
    let json = serde_json::to_string_pretty(state).unwrap();
    write_atomic(&dir.join("trainer_state.json"), json.as_bytes())
}

/// Loads `trainer_state.json` and the optimizer state saved by [`save_checkpoint`].
pub fn load_optimizer_state(
    dir: &Path,
    model: &Gpt<f32>,
    optimizer: &mut AnyOptimizer,
) -> Result<TrainerState, String> {
    let state_path = dir.join("trainer_state.json");
    let text = std::fs::read_to_string(&state_path)
        .map_err(|e| format!("--resume: cannot read {}: {e}", state_path.display()))?;
    let state: TrainerState = serde_json::from_str(&text).map_err(|e| {
        format!(
            "--resume: {} is not a trainer state: {e}",
            state_path.display()
        )
    })?;
    match optimizer {
        AnyOptimizer::AdamW(adamw) => {
            let path = dir.join("optimizer.safetensors");
            let bytes = std::fs::read(&path)
                .map_err(|e| format!("--resume: cannot read {}: {e}", path.display()))?;
            let file = safetensors::SafeTensors::deserialize(&bytes).map_err(|e| {
                format!(
                    "--resume: {} is not a safetensors file: {e}",
                    path.display()
                )
            })?;
            let mut by_name: HashMap<String, Tensor<f32>> = HashMap::new();
            for (name, view) in file.tensors() {
                if view.dtype() != Dtype::F32 {
                    return Err(format!("--resume: optimizer tensor {name} is not F32"));
                }
                let data: Vec<f32> = view
                    .data()
                    .chunks_exact(4)
                    .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                    .collect();
                let t = Tensor::from_shape_vec(ndarray::IxDyn(view.shape()), data)
                    .map_err(|e| format!("--resume: optimizer tensor {name}: {e}"))?;
                by_name.insert(name, t);
            }
            let mut take = |suffix: &str| -> Result<Vec<Tensor<f32>>, String> {
                model
                    .param_names()
                    .iter()
                    .zip(model.params())
                    .map(|(n, p): (&String, &Arc<Tensor<f32>>)| {
                        let key = format!("{n}.{suffix}");
                        let t = by_name
                            .remove(&key)
                            .ok_or_else(|| format!("--resume: optimizer state lacks {key}"))?;
                        if t.shape() != p.shape() {
                            return Err(format!(
                                "--resume: optimizer tensor {key} has shape {:?}, the parameter {:?}",
                                t.shape(),
                                p.shape()
                            ));
                        }
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
    Ok(state)
}

/// A fresh optimizer at step 0, or, with `resume`, the optimizer state and
/// step count saved in `out` (refusing a run that already took `hyper.steps`).
pub fn optimizer_and_start_step(
    hyper: &super::optimizer::TrainHyper,
    out: &Path,
    model: &Gpt<f32>,
    resume: bool,
) -> Result<(AnyOptimizer, u64), String> {
    let mut optimizer = hyper.new_optimizer();
    if !resume {
        return Ok((optimizer, 0));
    }
    let start_step = load_optimizer_state(out, model, &mut optimizer)?.step;
    if start_step >= hyper.steps {
        return Err(format!(
            "--resume: the run in {} already took {start_step} steps; ask for more with --steps",
            out.display()
        ));
    }
    Ok((optimizer, start_step))
}
