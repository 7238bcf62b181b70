//! `dpo train --loss kto` and `dpo eval --loss kto`: KTO takes unpaired
//! data and flags of its own (`--desirable-weight`, `--undesirable-weight`),
//! so a command line asking for it is parsed by this parser instead of the
//! pair losses' one ([`asks_for_kto`]).

use std::ffi::OsString;
use std::path::PathBuf;

use anyhow::Result;
use clap::{Args, Parser, Subcommand};
use dpo::kto::KtoConfig;

use super::args::OptimArgs;
use super::commands::{data_args, print_json, print_on_root, run_settings};
use crate::trainer::{on_every_rank, run_kto_eval, train_kto, KtoEvalArgs, KtoTrainArgs};

/// KTO (Kahneman-Tversky Optimization) of small GPT-2-style models on CPU,
/// from unpaired completions labelled desirable or undesirable.
#[derive(Debug, Parser)]
#[command(name = "dpo", version, about, long_about = None, propagate_version = true)]
pub struct KtoCli {
    /// Worker threads (default: all cores). Accepted before or after the subcommand.
    #[arg(long, global = true, value_name = "N")]
    pub threads: Option<usize>,

    /// The command to run.
    #[command(subcommand)]
    pub command: KtoCommand,
}

/// The subcommands that take `--loss kto`.
#[derive(Debug, Subcommand)]
pub enum KtoCommand {
    /// KTO training of a policy against a frozen reference on unpaired, labelled completions.
    Train(KtoTrainCli),
    /// KTO metrics of a policy against a reference over an unpaired file (JSON on stdout).
    Eval(KtoEvalCli),
}

/// The KTO loss flags (TRL's `KTOConfig` names).
#[derive(Debug, Args, Clone)]
pub struct KtoLossArgs {
    /// Loss: kto, Kahneman-Tversky Optimization on unpaired rows (for the pair losses, see the command's --help without --loss kto).
    #[arg(long, value_parser = ["kto"])]
    pub loss: String,
    /// Temperature of the implicit reward beta * log(pi/ref).
    #[arg(long, default_value_t = 0.1)]
    pub beta: f64,
    /// Weight of the loss of desirable rows (label true). With unbalanced data, aim for desirable-weight * desirable rows / (undesirable-weight * undesirable rows) in [1, 4/3].
    #[arg(long, default_value_t = 1.0, value_name = "F")]
    pub desirable_weight: f64,
    /// Weight of the loss of undesirable rows (label false).
    #[arg(long, default_value_t = 1.0, value_name = "F")]
    pub undesirable_weight: f64,
}

impl KtoLossArgs {
    fn config(&self) -> KtoConfig {
        KtoConfig {
            beta: self.beta,
            desirable_weight: self.desirable_weight,
            undesirable_weight: self.undesirable_weight,
        }
    }
}

/// The policy, its reference and the unpaired data.
#[derive(Debug, Args, Clone)]
pub struct UnpairedArgs {
    /// Policy checkpoint (for `train`, the initial policy).
    #[arg(long, value_name = "DIR")]
    pub policy: PathBuf,
    /// Frozen reference checkpoint (usually the SFT checkpoint the policy starts from).
    #[arg(long = "ref", value_name = "DIR")]
    pub reference: PathBuf,
    /// Unpaired data: {"prompt","completion","label": true|false} rows, or `prompt_ids`/`completion_ids` forms; .gz accepted.
    #[arg(long, value_name = "FILE")]
    pub data: PathBuf,
}

/// `dpo train --loss kto`
#[derive(Debug, Args)]
pub struct KtoTrainCli {
    #[command(flatten)]
    pub rows: UnpairedArgs,
    /// Output checkpoint directory.
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    /// Learning rate.
    #[arg(long, default_value_t = 1e-4)]
    pub lr: f64,
    #[command(flatten)]
    pub loss: KtoLossArgs,
    #[command(flatten)]
    pub optim: OptimArgs,
}

/// `dpo eval --loss kto`
#[derive(Debug, Args)]
pub struct KtoEvalCli {
    #[command(flatten)]
    pub rows: UnpairedArgs,
    /// Tokens kept of a long prompt when a row is truncated (default: block_size / 2).
    #[arg(long, value_name = "N")]
    pub max_prompt_length: Option<usize>,
    /// Rows per batch, in file order: each batch pairs its KL sequences and has its own KL estimate.
    #[arg(long, default_value_t = 16)]
    pub batch_size: usize,
    /// Skip bad rows instead of refusing the file.
    #[arg(long)]
    pub skip_invalid: bool,
    #[command(flatten)]
    pub loss: KtoLossArgs,
}

/// Whether the command line is `dpo [--threads N] train|eval ... --loss kto ...`.
pub fn asks_for_kto(argv: &[OsString]) -> bool {
    let args: Vec<&str> = argv.iter().skip(1).filter_map(|a| a.to_str()).collect();
    let mut rest = args.iter();
    let command = loop {
        match rest.next() {
            Some(&"--threads") => {
                rest.next();
            }
            Some(arg) if arg.starts_with('-') => {}
            other => break other.copied(),
        }
    };
    let loss_kto = args
        .windows(2)
        .any(|pair| pair[0] == "--loss" && pair[1] == "kto")
        || args.contains(&"--loss=kto");
    matches!(command, Some("train" | "eval")) && loss_kto
}

/// Runs one parsed KTO command line.
pub fn run(cli: KtoCli) -> Result<()> {
    match cli.command {
        KtoCommand::Train(a) => {
            let args = KtoTrainArgs {
                policy: a.rows.policy,
                reference: a.rows.reference,
                config: a.loss.config(),
                data: data_args(&a.rows.data, &a.optim),
                run: run_settings(&a.out, &a.optim, a.lr),
            };
            print_on_root(on_every_rank(|comm| train_kto(&args, comm))?)
        }
        KtoCommand::Eval(a) => print_json(&run_kto_eval(&KtoEvalArgs {
            policy: a.rows.policy,
            reference: a.rows.reference,
            data: a.rows.data,
            config: a.loss.config(),
            max_prompt_length: a.max_prompt_length,
            batch_size: a.batch_size,
            skip_invalid: a.skip_invalid,
        })?),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn argv(line: &str) -> Vec<OsString> {
        line.split_whitespace().map(OsString::from).collect()
    }

    #[test]
    fn only_train_and_eval_with_loss_kto_are_kto() {
        assert!(asks_for_kto(&argv("dpo train --loss kto --data d")));
        assert!(asks_for_kto(&argv("dpo --threads 2 eval --loss=kto")));
        assert!(!asks_for_kto(&argv("dpo train --loss sigmoid --data kto")));
        assert!(!asks_for_kto(&argv("dpo sft --loss kto")));
        assert!(!asks_for_kto(&argv("dpo train --data d")));
    }
}
