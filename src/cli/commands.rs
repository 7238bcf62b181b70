//! What each subcommand does: turn arguments into library and trainer calls,
//! print one JSON object on stdout.

use std::path::Path;

use anyhow::{bail, ensure, Context, Result};
use dpo::data::{BatchOrder, LoadOptions, PairLayout};
use dpo::loss::kto::KtoConfig;
use dpo::loss::{DpoLossConfig, LossType, WeightedLoss};
use serde::Serialize;
use transformer::ModelConfig;

use super::args::{
    Cli, Command, ConvertDataArgs, DataOrder, EvalCliArgs, LossArgs, LossName, OnOff, OptimArgs,
    PairArgs, SaveFormat, SftArgs, TrainArgs,
};
use crate::trainer::{
    on_every_rank, run_eval, run_kto_eval, train_dpo, train_kto, train_sft, DataArgs, DpoTrainArgs,
    EvalArgs, InitialModel, KtoEvalArgs, KtoTrainArgs, LoraSettings, ReferenceModel, RunSettings,
    SftTrainArgs, TrainHyper,
};

/// Runs one parsed command line.
pub fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Demo(a) => print_json(&crate::demo::run_demo(&a.out, a.seed)?),
        Command::Sft(a) => {
            let args = sft_args(a)?;
            print_on_root(on_every_rank(|comm| train_sft(&args, comm))?)
        }
        Command::Train(a) => match objective(&a.loss, &a.pairs, "train", a.optim.lora.use_peft)? {
            LossChoice::Pairs(loss) => {
                let args = train_args(a, loss);
                print_on_root(on_every_rank(|comm| train_dpo(&args, comm))?)
            }
            LossChoice::Kto(config, reference) => {
                let args = KtoTrainArgs {
                    reference,
                    config,
                    data: data_args(&a.pairs.data, &a.optim, false),
                    run: run_settings(&a.out, &a.optim, a.lr),
                    policy: a.pairs.policy,
                };
                print_on_root(on_every_rank(|comm| train_kto(&args, comm))?)
            }
        },
        Command::Eval(a) => match objective(
            &a.loss,
            &a.pairs,
            "eval",
            transformer::lora::is_adapter_dir(&a.pairs.policy),
        )? {
            LossChoice::Pairs(loss) => print_json(&run_eval(&eval_args(a, loss))?),
            LossChoice::Kto(config, reference) => print_json(&run_kto_eval(&KtoEvalArgs {
                policy: a.pairs.policy,
                reference,
                data: a.pairs.data,
                config,
                truncation: a.truncation,
                batch_size: a.batch_size,
                skip_invalid: a.skip_invalid,
                chat_template: a.chat_template,
                precision: a.precision,
            })?),
        },
        Command::Generate(a) => print_json(&super::generate::run_generate(&a)?),
        Command::Chat(a) => super::chat::run_chat(&a),
        Command::Convert(a) => print_json(&super::convert::run_convert(&a)?),
        Command::ConvertData(a) => print_json(&convert_data(&a)?),
        Command::Plot(a) => print_json(
            &crate::report::plot_runs(&a.files, &a.labels, a.out.as_deref())
                .map_err(anyhow::Error::msg)?,
        ),
    }
}

/// `dpo convert-data --from hh-rlhf IN OUT`: rows converted, rows skipped.
fn convert_data(a: &ConvertDataArgs) -> Result<serde_json::Value> {
    let report = dpo::data::convert_hh_rlhf(&a.input, &a.output, a.skip_invalid)?;
    if report.skipped > 0 {
        eprintln!("{}: {report}", a.input.display());
    }
    Ok(serde_json::json!({
        "from": a.from,
        "input": a.input.display().to_string(),
        "output": a.output.display().to_string(),
        "rows": report.rows,
        "skipped": report.skipped,
    }))
}

fn print_json<S: Serialize>(value: &S) -> Result<()> {
    println!("{}", serde_json::to_string(value)?);
    Ok(())
}

/// Prints the result of a command run on every rank: rank 0's (`Some`), once.
fn print_on_root<S: Serialize>(value: Option<S>) -> Result<()> {
    value.map_or(Ok(()), |value| print_json(&value))
}

fn sft_args(a: SftArgs) -> Result<SftTrainArgs> {
    let init = match (&a.init, &a.config) {
        (Some(dir), _) => InitialModel::Checkpoint(dir.clone()),
        (None, Some(name)) => InitialModel::Config(parse_config(name)?),
        (None, None) if a.optim.resume => InitialModel::Checkpoint(a.out.clone()),
        (None, None) => bail!(
            "dpo sft needs a starting model: one of --init DIR (a checkpoint) or --config NAME|FILE (a fresh model)"
        ),
    };
    Ok(SftTrainArgs {
        init,
        data: data_args(&a.data, &a.optim, a.assistant_only_loss),
        run: run_settings(&a.out, &a.optim, a.lr),
    })
}

/// What `train` and `eval` optimise or measure: pair losses or KTO, with
/// their reference.
enum LossChoice {
    Pairs((DpoLossConfig, ReferenceModel)),
    Kto(KtoConfig, ReferenceModel),
}

/// The loss of `--loss` and the flags that go with it; a flag of the other
/// kind is refused with one line. `with_adapters`: the policy trains (or
/// is) LoRA adapters, whose base is the reference when no `--ref` is given.
fn objective(
    loss: &LossArgs,
    pairs: &PairArgs,
    command: &str,
    with_adapters: bool,
) -> Result<LossChoice> {
    if !loss.loss.contains(&LossName::Kto) {
        for (flag, given) in [
            ("--desirable-weight", loss.desirable_weight.is_some()),
            ("--undesirable-weight", loss.undesirable_weight.is_some()),
        ] {
            ensure!(!given, "{flag} applies to --loss kto only");
        }
        let config = loss_config(loss)?;
        let reference = reference(pairs, command, &config, with_adapters)?;
        return Ok(LossChoice::Pairs((config, reference)));
    }
    ensure!(
        loss.loss.len() == 1,
        "--loss kto is trained alone: it cannot be summed with pair losses"
    );
    for (flag, given) in [
        ("--loss-weights", !loss.loss_weights.is_empty()),
        ("--rpo-alpha", loss.rpo_alpha.is_some()),
        ("--label-smoothing", loss.label_smoothing.is_some()),
        ("--discopop-tau", loss.discopop_tau.is_some()),
        ("--simpo-gamma", loss.simpo_gamma.is_some()),
        ("--bco-no-running-mean", loss.bco_no_running_mean),
        ("--reference-free", pairs.reference_free),
        ("--prefix-sharing", pairs.prefix_sharing.is_some()),
    ] {
        ensure!(
            !given,
            "{flag} does not apply to --loss kto (unpaired rows)"
        );
    }
    let reference = match &pairs.reference {
        Some(path) => ReferenceModel::Checkpoint(path.clone()),
        None if with_adapters => ReferenceModel::AdaptersOff,
        None => bail!("dpo {command} --loss kto needs a frozen reference: --ref DIR (usually the SFT checkpoint the policy starts from)"),
    };
    let config = KtoConfig {
        beta: loss.beta,
        desirable_weight: loss.desirable_weight.unwrap_or(1.0),
        undesirable_weight: loss.undesirable_weight.unwrap_or(1.0),
    };
    Ok(LossChoice::Kto(config, reference))
}

fn train_args(a: TrainArgs, (loss, reference): (DpoLossConfig, ReferenceModel)) -> DpoTrainArgs {
    DpoTrainArgs {
        reference,
        layout: pair_layout(a.pairs.prefix_sharing),
        loss,
        data: data_args(&a.pairs.data, &a.optim, false),
        run: run_settings(&a.out, &a.optim, a.lr),
        policy: a.pairs.policy,
    }
}

fn eval_args(a: EvalCliArgs, (loss, reference): (DpoLossConfig, ReferenceModel)) -> EvalArgs {
    EvalArgs {
        reference,
        layout: pair_layout(a.pairs.prefix_sharing),
        policy: a.pairs.policy,
        data: a.pairs.data,
        loss,
        truncation: a.truncation,
        batch_size: a.batch_size.max(1),
        skip_invalid: a.skip_invalid,
        chat_template: a.chat_template,
        precision: a.precision,
    }
}

/// `--prefix-sharing on|off` (default on) as the layout of the pairs.
fn pair_layout(prefix_sharing: Option<OnOff>) -> PairLayout {
    match prefix_sharing.unwrap_or(OnOff::On) {
        OnOff::On => PairLayout::SharedPrefix,
        OnOff::Off => PairLayout::Separate,
    }
}

/// `--ref DIR`, or none with `--reference-free`; one of them is needed,
/// except by SimPO and ORPO, which use no reference and refuse one, and
/// `with_adapters`, where the reference is the adapters' base.
fn reference(
    a: &PairArgs,
    command: &str,
    loss: &DpoLossConfig,
    with_adapters: bool,
) -> Result<ReferenceModel> {
    if loss.is_reference_free() {
        ensure!(
            a.reference.is_none(),
            "--loss {} is reference-free: drop --ref",
            loss.names()
        );
        return Ok(ReferenceModel::Free);
    }
    match (&a.reference, a.reference_free) {
        (Some(_), true) => bail!("--ref and --reference-free exclude each other"),
        (Some(dir), false) => Ok(ReferenceModel::Checkpoint(dir.clone())),
        (None, true) => Ok(ReferenceModel::Free),
        (None, false) if with_adapters => Ok(ReferenceModel::AdaptersOff),
        (None, false) => bail!(
            "dpo {command} needs a frozen reference: --ref DIR (usually the SFT checkpoint the policy starts from), or --reference-free (or, with --use-peft, neither: the model with its adapters off)"
        ),
    }
}

fn data_args(data: &Path, a: &OptimArgs, assistant_only_loss: bool) -> DataArgs {
    DataArgs {
        data: data.to_path_buf(),
        eval_data: a.eval_data.clone(),
        eval_fraction: a.eval_fraction,
        truncation: a.truncation,
        options: LoadOptions {
            skip_invalid: a.skip_invalid,
            assistant_only_loss,
        },
        chat_template: a.chat_template.clone(),
    }
}

fn run_settings(out: &Path, a: &OptimArgs, lr: f64) -> RunSettings {
    RunSettings {
        out: out.to_path_buf(),
        hyper: TrainHyper {
            steps: a.steps,
            batch_size: a.batch_size,
            grad_accum: a.grad_accum,
            lr,
            optimizer: a.optimizer,
            weight_decay: a.weight_decay,
            max_grad_norm: a.max_grad_norm,
            warmup_steps: a.warmup_steps,
            schedule: a.schedule,
            seed: a.seed,
        },
        eval_every: a.eval_every,
        save_every: a.save_every,
        metrics: a.metrics.clone(),
        resume: a.resume,
        batch_order: match (a.group_by_length, a.data_order) {
            (true, _) => BatchOrder::GroupedByLength,
            (false, DataOrder::Shuffled) => BatchOrder::Shuffled,
            (false, DataOrder::File) => BatchOrder::File,
        },
        progress: !a.no_progress,
        save_format: a.save_format.map(SaveFormat::format),
        precision: a.precision,
        gradient_checkpointing: a.gradient_checkpointing,
        lora: a.lora.use_peft.then(|| LoraSettings {
            r: a.lora.lora_r,
            alpha: a.lora.lora_alpha,
            dropout: a.lora.lora_dropout,
            targets: (!a.lora.lora_targets.is_empty()).then(|| a.lora.lora_targets.clone()),
            use_rslora: a.lora.use_rslora,
            init_adapter: a.lora.init_adapter.clone(),
            base_precision: a.lora.base_precision,
        }),
        overwrite: a.overwrite,
        allow_oom_risk: a.allow_oom_risk,
    }
}

/// The losses of `--loss` with their `--loss-weights`, plus the `sft` term of `--rpo-alpha`.
fn loss_config(a: &LossArgs) -> Result<DpoLossConfig> {
    ensure!(
        a.loss_weights.is_empty() || a.loss_weights.len() == a.loss.len(),
        "--loss-weights gives {} weights for the {} losses of --loss",
        a.loss_weights.len(),
        a.loss.len()
    );
    let mut losses: Vec<WeightedLoss> = a
        .loss
        .iter()
        .enumerate()
        .filter_map(|(i, name)| match name {
            LossName::Pair(loss_type) => Some(WeightedLoss {
                loss_type: *loss_type,
                weight: a.loss_weights.get(i).copied().unwrap_or(1.0),
            }),
            LossName::Kto => None,
        })
        .collect();
    if let Some(alpha) = a.rpo_alpha {
        ensure!(
            !a.loss.contains(&LossName::Pair(LossType::Sft)),
            "--rpo-alpha adds the sft term, which --loss already has: give its weight in --loss-weights instead"
        );
        losses.push(WeightedLoss {
            loss_type: LossType::Sft,
            weight: alpha,
        });
    }
    Ok(DpoLossConfig {
        losses,
        beta: a.beta,
        label_smoothing: a.label_smoothing.unwrap_or(0.0),
        discopop_tau: a.discopop_tau.unwrap_or(DpoLossConfig::DISCOPOP_TAU),
        simpo_gamma: a.simpo_gamma.unwrap_or(DpoLossConfig::SIMPO_GAMMA),
        bco_running_mean: !a.bco_no_running_mean,
    })
}

/// A preset name or a config.json path (nanoGPT's, or a Hugging Face one of
/// GPT-2 or the Llama family).
fn parse_config(name: &str) -> Result<ModelConfig> {
    if let Some(config) = ModelConfig::preset(name) {
        return Ok(config);
    }
    let path = Path::new(name);
    ensure!(
        path.is_file(),
        "--config {name}: neither a preset ({}) nor a config.json file",
        ModelConfig::PRESETS.join(", ")
    );
    let bytes = std::fs::read(path).with_context(|| format!("--config {name}"))?;
    let config = match transformer::hf::model_type(&bytes, path)? {
        Some(_) => transformer::hf::parse_hf_config(&bytes, path)?,
        None => transformer::parse_config(&bytes, path)?,
    };
    Ok(config)
}
