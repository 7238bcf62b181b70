//! LoRA runs (`--use-peft`): which adapters a run trains, and where its
//! frozen reference comes from (docs/lora.md).
//!
//! A LoRA run trains adapters on a frozen base ([`transformer::lora`]). Its
//! reference needs no second model: it is the same base with the adapters
//! off (TRL's behaviour with a `peft_config`), or, for a run that starts
//! from a trained adapter (`--init-adapter`), the base with that adapter,
//! frozen. Both share the base's weights with the policy.

use std::path::{Path, PathBuf};

use anyhow::{anyhow, ensure, Context, Result};
use autograd::Precision;
use transformer::lora::{default_targets, Lora, LoraConfig};
use transformer::Model;

/// The adapters a `--use-peft` run trains.
#[derive(Debug, Clone, PartialEq)]
pub struct LoraSettings {
    /// `--lora-r`.
    pub r: usize,
    /// `--lora-alpha`.
    pub alpha: f64,
    /// `--lora-dropout`.
    pub dropout: f64,
    /// `--lora-targets`; `None`: PEFT's default for the architecture.
    pub targets: Option<Vec<String>>,
    /// `--use-rslora`.
    pub use_rslora: bool,
    /// `--init-adapter`: start from this adapter (PEFT's files), which is
    /// also the reference.
    pub init_adapter: Option<PathBuf>,
    /// `--base-precision`: the frozen base kept in f32, or rounded to bf16
    /// ([`Model::with_bf16_base`]).
    pub base_precision: Precision,
}

/// Where a run's (or an evaluation's) frozen reference comes from.
#[derive(Debug, Clone, PartialEq)]
pub enum ReferenceModel {
    /// None: reference-free (log-probs of 0).
    Free,
    /// A checkpoint of its own (`--ref`).
    Checkpoint(PathBuf),
    /// The policy's base with its adapters off, or with the adapter of
    /// `--init-adapter` (frozen) when the run started from one.
    AdaptersOff,
}

/// The policy of a LoRA run at its start: `base` with the adapter of
/// `--init-adapter`, or with fresh adapters (B = 0, so it starts as the
/// base) seeded by `seed`. `base_path` is written into the checkpoints'
/// `adapter_config.json` as `base_model_name_or_path` (absolute), so that
/// `dpo eval`, `generate`, `chat` and `--resume` find the base again.
pub fn start_adapters(
    base: Model<f32>,
    base_path: &Path,
    settings: &LoraSettings,
    seed: u64,
) -> Result<Model<f32>> {
    ensure!(
        base.lora().is_none(),
        "--use-peft: the starting model {} has adapters already; give its base as the model and the adapter as --init-adapter",
        base_path.display()
    );
    let mut lora = match &settings.init_adapter {
        Some(dir) => Lora::load(dir, base.config())
            .with_context(|| format!("--init-adapter {}", dir.display()))?,
        None => {
            let config = LoraConfig {
                r: settings.r,
                alpha: settings.alpha,
                dropout: settings.dropout,
                target_modules: settings
                    .targets
                    .clone()
                    .unwrap_or_else(|| default_targets(base.config())),
                use_rslora: settings.use_rslora,
            };
            Lora::new(base.config(), config, seed).map_err(|e| anyhow!(e))?
        }
    };
    let absolute = std::fs::canonicalize(base_path)
        .with_context(|| format!("cannot resolve {}", base_path.display()))?;
    lora.base_model = Some(absolute.display().to_string());
    Ok(base.with_lora(lora))
}

/// `policy` (with adapters) with its base stored as `--base-precision` says.
pub fn store_base(policy: Model<f32>, settings: &LoraSettings) -> Model<f32> {
    match settings.base_precision {
        Precision::F32 => policy,
        Precision::Bf16 => {
            let policy = policy.with_bf16_base();
            // The f32 base's memory, freed between the bf16 matrices.
            autograd::release_freed_memory();
            policy
        }
    }
}

/// The frozen reference of [`ReferenceModel::AdaptersOff`] for `policy`: the
/// base alone, or the base with `init_adapter`. The base's weights are
/// shared with the policy, not copied.
pub fn adapters_off_reference(
    policy: &Model<f32>,
    init_adapter: Option<&Path>,
) -> Result<Model<f32>> {
    ensure!(
        policy.lora().is_some(),
        "no reference: give --ref DIR (or --reference-free); the policy has no adapters whose base could be the reference"
    );
    let base = policy.without_lora();
    Ok(match init_adapter {
        None => base,
        Some(dir) => {
            let lora = Lora::load(dir, base.config())
                .with_context(|| format!("--init-adapter {}", dir.display()))?;
            base.with_lora(lora)
        }
    })
}
