//! What each subcommand does: turn arguments into trainer calls, print JSON.

use std::path::Path;

use serde::Serialize;
use transformer::{ByteTokenizer, Gpt, GptConfig, Tokenizer};

use super::args::{Cli, Command, LossArgs, OptimArgs};
use crate::loss::DpoLossConfig;
use crate::trainer::dpo_train::DpoTrainArgs;
use crate::trainer::evaluate::{run_eval, EvalArgs};
use crate::trainer::optimizer::TrainHyper;
use crate::trainer::sft_train::{SftInit, SftTrainArgs};
use crate::trainer::{train_dpo, train_sft};

/// Runs one parsed command line.
pub fn run(cli: Cli) -> Result<(), String> {
    match cli.command {
        Command::Demo(a) => {
            let summary = crate::demo::run_demo(&a.out, a.seed)?;
            print_json(&summary)
        }
        Command::Sft(a) => {
            let init = match (&a.init, &a.config) {
                (Some(dir), _) => SftInit::Checkpoint(dir.clone()),
                (None, Some(name)) => SftInit::Config(parse_config(name)?),
                (None, None) => SftInit::Checkpoint(a.out.clone()), // --resume
            };
            let args = SftTrainArgs {
                init,
                data: a.data,
                out: a.out,
                hyper: hyper(&a.optim, a.lr),
                max_prompt_length: a.optim.max_prompt_length,
                eval_fraction: a.optim.eval_fraction,
                eval_every: a.optim.eval_every,
                metrics: a.optim.metrics.clone(),
                skip_invalid: a.optim.skip_invalid,
                resume: a.optim.resume,
                group_by_length: a.optim.group_by_length,
                progress: !a.optim.no_progress,
            };
            check_fraction(args.eval_fraction)?;
            print_json(&train_sft(&args)?)
        }
        Command::Train(a) => {
            let args = DpoTrainArgs {
                policy: a.policy,
                reference: if a.reference_free { None } else { a.reference },
                data: a.data,
                out: a.out,
                loss: loss_config(&a.loss),
                hyper: hyper(&a.optim, a.lr),
                max_prompt_length: a.optim.max_prompt_length,
                eval_data: a.eval_data,
                eval_fraction: a.optim.eval_fraction,
                eval_every: a.optim.eval_every,
                save_every: a.save_every,
                metrics: a.optim.metrics.clone(),
                skip_invalid: a.optim.skip_invalid,
                resume: a.optim.resume,
                group_by_length: a.optim.group_by_length,
                progress: !a.optim.no_progress,
            };
            check_fraction(args.eval_fraction)?;
            print_json(&train_dpo(&args)?)
        }
        Command::Eval(a) => {
            let args = EvalArgs {
                policy: a.policy,
                reference: if a.reference_free { None } else { a.reference },
                data: a.data,
                loss: loss_config(&a.loss),
                max_prompt_length: a.max_prompt_length,
                batch_size: a.batch_size.max(1),
                skip_invalid: a.skip_invalid,
            };
            print_json(&run_eval(&args)?)
        }
        Command::Plot(a) => print_json(&crate::report::plot_metrics(&a.file, a.out.as_deref())?),
        Command::Generate(a) => {
            let model = Gpt::<f32>::load(&a.model)
                .map_err(|e| format!("model {}: {e}", a.model.display()))?;
            let tokenizer = ByteTokenizer;
            let prompt = tokenizer.encode(&a.prompt);
            if prompt.is_empty() {
                return Err("--prompt must not be empty".into());
            }
            if let Some(&bad) = prompt
                .iter()
                .find(|&&id| id as usize >= model.config().vocab_size)
            {
                return Err(format!(
                    "the prompt's token {bad} is outside the model's vocabulary of {}",
                    model.config().vocab_size
                ));
            }
            if !(a.temperature.is_finite() && a.temperature >= 0.0) {
                return Err(format!("--temperature must be >= 0, got {}", a.temperature));
            }
            let options = transformer::sampling::SamplingOptions {
                temperature: a.temperature as f32,
                top_k: a.top_k,
                seed: a.seed,
            };
            let new_tokens =
                transformer::sampling::generate(&model, &prompt, a.max_new_tokens, options);
            let completion = tokenizer.decode(&new_tokens);
            print_json(&serde_json::json!({
                "prompt": a.prompt,
                "completion": completion,
                "text": format!("{}{}", a.prompt, completion),
                "new_tokens": new_tokens.len(),
            }))
        }
    }
}

fn print_json<S: Serialize>(value: &S) -> Result<(), String> {
    println!(
        "{}",
        serde_json::to_string(value).map_err(|e| e.to_string())?
    );
    Ok(())
}

fn check_fraction(f: f64) -> Result<(), String> {
    if (0.0..1.0).contains(&f) {
        Ok(())
    } else {
        Err(format!("--eval-fraction must be in [0, 1), got {f}"))
    }
}

fn loss_config(a: &LossArgs) -> DpoLossConfig {
    DpoLossConfig {
        loss_type: a.loss,
        beta: a.beta,
        label_smoothing: a.label_smoothing,
    }
}

fn hyper(a: &OptimArgs, lr: f64) -> TrainHyper {
    TrainHyper {
        steps: a.steps,
        batch_size: a.batch_size,
        lr,
        optimizer: a.optimizer,
        weight_decay: a.weight_decay,
        max_grad_norm: a.max_grad_norm,
        warmup_steps: a.warmup_steps,
        schedule: a.schedule,
        seed: a.seed,
    }
}

/// A preset name or a config.json path.
fn parse_config(name: &str) -> Result<GptConfig, String> {
    if let Some(c) = GptConfig::preset(name) {
        return Ok(c);
    }
    let path = Path::new(name);
    if path.is_file() {
        let text = std::fs::read_to_string(path).map_err(|e| format!("--config {name}: {e}"))?;
        let config: GptConfig = serde_json::from_str(&text)
            .map_err(|e| format!("--config {name}: not a model config: {e}"))?;
        config
            .validate()
            .map_err(|e| format!("--config {name}: {e}"))?;
        return Ok(config);
    }
    Err(format!(
        "--config {name}: neither a preset (tiny, small, medium, gpt2) nor a config.json file"
    ))
}
