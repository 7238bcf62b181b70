//! `dpo demo`: the whole pipeline on a built-in task where preference is measurable.
//!
//! **The task.** A prompt is a short lowercase word and `>`; the desired
//! completion is the same word in capitals and a full stop: `cab>` -> `CAB.`.
//! A program can check any generation for that property.
//!
//! **The stages.**
//! 1. *SFT.* A small GPT is trained from scratch on demonstrations in which
//!    only 30% of the completions are the desired capitalised copy; the other
//!    70% are the plain lowercase copy (`cab>cab.`). It learns to copy, and
//!    mostly in lowercase: this is the reference policy.
//! 2. *DPO.* Pairs on other words prefer the capitalised copy (chosen) over a
//!    plausible wrong one (rejected: the lowercase copy, a capitalised copy
//!    that falls back to lowercase part-way, one with a letter wrong, or one
//!    that runs on by a letter). DPO trains the policy against the frozen SFT
//!    model.
//! 3. *Report.* On held-out words (never seen in training): the share of
//!    pairs where the model gives the chosen response the higher
//!    log-probability (`pair_accuracy`), and the share of prompts whose
//!    greedy generation is exactly the desired completion (`success_rate`),
//!    for the reference (before) and the DPO policy (after), plus the DPO
//!    metrics of the held-out pairs.
//!    The DPO training curves are drawn in `report.svg` (see `dpo plot`).

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use autograd::Precision;
use dpo::data::{LoadOptions, PairLayout, PreferenceRow};
use dpo::loss::{DpoLossConfig, DpoMetrics, LossType};
use dpo::objective::evaluate_pairs;
use dpo::scoring::score_pairs;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;
use serde_json::json;
use transformer::{ByteTokenizer, Model, ModelConfig, Tokenizer};

use crate::trainer::setup::{load_model, load_rows};
use crate::trainer::{
    train_dpo, train_sft, DataArgs, DpoTrainArgs, InitialModel, OptimizerKind, RunSettings,
    ScheduleKind, SftTrainArgs, SingleProcess, TrainHyper, Truncation,
};

/// Letters the words are made of.
const ALPHABET: &[u8] = b"abcdefgh";
/// Share of SFT demonstrations that show the desired completion.
const SFT_DESIRED_SHARE: f64 = 0.3;

/// The model of the demo: small enough to train in a minute on 2 cores.
pub fn demo_config() -> ModelConfig {
    ModelConfig {
        vocab_size: 256,
        block_size: 16,
        n_layer: 2,
        n_head: 2,
        n_embd: 64,
        bias: true,
        llama: None,
    }
}

/// Before/after numbers of one model.
#[derive(Debug, Clone, Serialize)]
pub struct ModelReport {
    /// Share of held-out pairs whose chosen response has the higher log-prob.
    pub pair_accuracy: f64,
    /// Share of held-out prompts whose greedy generation is the desired completion.
    pub success_rate: f64,
    /// DPO metrics of the held-out pairs against the reference (after only).
    #[serde(skip_serializing_if = "Option::is_none", flatten)]
    pub metrics: Option<DpoMetrics>,
}

/// What `summary.json` holds.
#[derive(Debug, Clone, Serialize)]
pub struct DemoSummary {
    /// The task, in words.
    pub task: String,
    /// The reference (SFT) model on held-out prompts.
    pub before: ModelReport,
    /// The DPO policy on held-out prompts.
    pub after: ModelReport,
    /// Held-out prompts and pairs.
    pub held_out_prompts: usize,
    /// A few held-out generations, before and after.
    pub examples: Vec<serde_json::Value>,
    /// Seconds of each stage.
    pub sft_seconds: f64,
    /// Seconds of DPO.
    pub dpo_seconds: f64,
    /// Where the checkpoints are.
    pub out: String,
    /// The plotted DPO training report (`report.svg`), when it could be drawn.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub report: Option<String>,
}

fn random_word(rng: &mut StdRng) -> String {
    let len = rng.gen_range(3..=5);
    (0..len)
        .map(|_| ALPHABET[rng.gen_range(0..ALPHABET.len())] as char)
        .collect()
}

/// The desired completion of a word.
fn desired(word: &str) -> String {
    format!("{}.", word.to_uppercase())
}

/// A plausible wrong completion, of the kinds the SFT model writes: the
/// lowercase copy, a capitalised copy that falls back to lowercase part-way
/// (`HAdg.`), a capitalised copy with one letter changed, or a capitalised
/// copy that runs on by one letter.
fn plausible_wrong(word: &str, rng: &mut StdRng) -> String {
    let upper = word.to_uppercase();
    let random_letter =
        |rng: &mut StdRng| ALPHABET[rng.gen_range(0..ALPHABET.len())].to_ascii_uppercase();
    match rng.gen_range(0..4) {
        0 => format!("{word}."),
        1 => {
            let capitals = rng.gen_range(1..word.len());
            format!("{}{}.", &upper[..capitals], &word[capitals..])
        }
        2 => {
            let mut letters = upper.into_bytes();
            let i = rng.gen_range(0..letters.len());
            let original = letters[i];
            while letters[i] == original {
                letters[i] = random_letter(rng);
            }
            format!("{}.", String::from_utf8(letters).unwrap())
        }
        _ => format!("{upper}{}.", random_letter(rng) as char),
    }
}

/// Distinct words, split into SFT, DPO and held-out sets.
fn word_sets(seed: u64) -> (Vec<String>, Vec<String>, Vec<String>) {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut seen = std::collections::HashSet::new();
    let mut words = Vec::new();
    while words.len() < 2400 {
        let w = random_word(&mut rng);
        if seen.insert(w.clone()) {
            words.push(w);
        }
    }
    let held_out = words.split_off(2200);
    let dpo = words.split_off(1200);
    (words, dpo, held_out)
}

fn write_jsonl(path: &Path, rows: &[serde_json::Value]) -> Result<()> {
    let mut f =
        fs::File::create(path).with_context(|| format!("cannot write {}", path.display()))?;
    for r in rows {
        writeln!(f, "{r}").with_context(|| format!("cannot write {}", path.display()))?;
    }
    Ok(())
}

/// The demo's runs: a data file, its held-out file, and the progress bar on.
fn demo_run(
    data: PathBuf,
    eval_data: Option<PathBuf>,
    out: PathBuf,
    hyper: TrainHyper,
) -> (DataArgs, RunSettings) {
    let data = DataArgs {
        data,
        eval_data,
        eval_fraction: 0.0,
        truncation: Truncation::default(),
        options: LoadOptions::default(),
        chat_template: None,
    };
    let run = RunSettings {
        out,
        hyper,
        eval_every: 50,
        save_every: 0,
        metrics: None,
        resume: false,
        batch_order: dpo::data::BatchOrder::Shuffled,
        progress: true,
        save_format: None,
        precision: autograd::Precision::F32,
        gradient_checkpointing: false,
        lora: None,
        overwrite: false,
        allow_oom_risk: false,
    };
    (data, run)
}

/// Greedy completion of `prompt`, cut after the first full stop.
fn greedy(model: &Model<f32>, prompt: &str) -> String {
    let ids = ByteTokenizer.encode(prompt);
    let out = transformer::sampling::generate(
        model,
        &ids,
        7,
        transformer::sampling::SamplingOptions::greedy(),
    )
    // The demo's models come out of training runs that stop on a non-finite loss.
    .expect("the demo's models have finite weights");
    let text = ByteTokenizer.decode(&out);
    match text.find('.') {
        Some(i) => text[..=i].to_string(),
        None => text,
    }
}

fn success_rate(model: &Model<f32>, words: &[String]) -> f64 {
    let ok = words
        .iter()
        .filter(|w| greedy(model, &format!("{w}>")) == desired(w))
        .count();
    ok as f64 / words.len() as f64
}

fn pair_accuracy(model: &Model<f32>, rows: &[PreferenceRow]) -> f64 {
    let (logps, _) = score_pairs(
        model,
        rows,
        64,
        PairLayout::default(),
        Precision::F32,
        false,
    );
    logps.iter().filter(|(c, r)| c > r).count() as f64 / rows.len() as f64
}

/// Runs the demo into `out` and returns the summary (also written to `out/summary.json`).
pub fn run_demo(out: &Path, seed: u64) -> Result<DemoSummary> {
    fs::create_dir_all(out.join("data"))
        .with_context(|| format!("cannot create {}", out.display()))?;
    let mut rng = StdRng::seed_from_u64(seed ^ 0xD0);
    let (sft_words, dpo_words, held_out_words) = word_sets(seed);

    let sft_rows: Vec<_> = sft_words
        .iter()
        .map(|w| {
            let completion = if rng.gen_bool(SFT_DESIRED_SHARE) {
                desired(w)
            } else {
                format!("{w}.")
            };
            json!({"prompt": format!("{w}>"), "completion": completion})
        })
        .collect();
    let pair = |w: &String, rng: &mut StdRng| json!({"prompt": format!("{w}>"), "chosen": desired(w), "rejected": plausible_wrong(w, rng)});
    let dpo_rows: Vec<_> = dpo_words.iter().map(|w| pair(w, &mut rng)).collect();
    let eval_rows: Vec<_> = held_out_words.iter().map(|w| pair(w, &mut rng)).collect();
    let data = out.join("data");
    write_jsonl(&data.join("sft.jsonl"), &sft_rows)?;
    write_jsonl(&data.join("prefs_train.jsonl"), &dpo_rows)?;
    write_jsonl(&data.join("prefs_eval.jsonl"), &eval_rows)?;
    let metrics = out.join("metrics.jsonl");
    let _ = fs::remove_file(&metrics);

    eprintln!(
        "demo: stage 1/3, SFT of a {}-layer GPT on {} demonstrations",
        demo_config().n_layer,
        sft_rows.len()
    );
    let sft_dir = out.join("sft");
    let (sft_data, sft_run) = demo_run(
        data.join("sft.jsonl"),
        None,
        sft_dir.clone(),
        TrainHyper {
            steps: 1500,
            batch_size: 32,
            grad_accum: 1,
            lr: 2e-3,
            optimizer: OptimizerKind::Adamw,
            weight_decay: 0.0,
            max_grad_norm: 1.0,
            warmup_steps: 50,
            schedule: ScheduleKind::Cosine,
            seed,
        },
    );
    let sft = train_sft(
        &SftTrainArgs {
            init: InitialModel::Config(demo_config()),
            data: sft_data,
            run: sft_run,
        },
        &SingleProcess,
    )?;
    eprintln!(
        "demo: SFT done in {:.1}s, final loss {:.4}",
        sft.train_runtime, sft.final_loss
    );

    eprintln!(
        "demo: stage 2/3, DPO against the SFT model on {} pairs",
        dpo_rows.len()
    );
    let loss = DpoLossConfig::new(LossType::Sigmoid, 0.1, 0.0);
    let dpo_dir = out.join("dpo");
    let (dpo_data, mut dpo_run) = demo_run(
        data.join("prefs_train.jsonl"),
        Some(data.join("prefs_eval.jsonl")),
        dpo_dir.clone(),
        TrainHyper {
            steps: 600,
            batch_size: 16,
            grad_accum: 1,
            lr: 1e-4,
            optimizer: OptimizerKind::Adamw,
            weight_decay: 0.0,
            max_grad_norm: 1.0,
            warmup_steps: 20,
            schedule: ScheduleKind::Constant,
            seed,
        },
    );
    dpo_run.metrics = Some(metrics);
    let dpo = train_dpo(
        &DpoTrainArgs {
            policy: sft_dir.clone(),
            reference: crate::trainer::ReferenceModel::Checkpoint(sft_dir.clone()),
            loss: loss.clone(),
            layout: PairLayout::default(),
            data: dpo_data,
            run: dpo_run,
        },
        &SingleProcess,
    )?;
    eprintln!("demo: DPO done in {:.1}s", dpo.train_runtime);

    eprintln!(
        "demo: stage 3/3, before/after report on {} held-out prompts",
        held_out_words.len()
    );
    let reference = load_model(&sft_dir, "the SFT model")?;
    let policy = load_model(&dpo_dir, "the DPO policy")?;
    let held_out_pairs = load_rows::<PreferenceRow>(
        &data.join("prefs_eval.jsonl"),
        reference.config(),
        &ByteTokenizer,
        Truncation::default(),
        &LoadOptions::default(),
        true,
    )?
    .rows;
    let (after_metrics, _) = evaluate_pairs(
        &policy.to_f64(),
        Some(&reference.to_f64()),
        &held_out_pairs,
        &loss,
        64,
        PairLayout::default(),
    );
    let examples = held_out_words
        .iter()
        .take(6)
        .map(|w| {
            let prompt = format!("{w}>");
            json!({"prompt": prompt, "desired": desired(w),
                   "before": greedy(&reference, &prompt), "after": greedy(&policy, &prompt)})
        })
        .collect();
    let summary = DemoSummary {
        task: "prompt `word>` (lowercase letters a-h); desired completion: the word in capitals and a full stop".into(),
        before: ModelReport {
            pair_accuracy: pair_accuracy(&reference, &held_out_pairs),
            success_rate: success_rate(&reference, &held_out_words),
            metrics: None,
        },
        after: ModelReport {
            pair_accuracy: pair_accuracy(&policy, &held_out_pairs),
            success_rate: success_rate(&policy, &held_out_words),
            metrics: Some(after_metrics),
        },
        held_out_prompts: held_out_words.len(),
        examples,
        sft_seconds: sft.train_runtime,
        dpo_seconds: dpo.train_runtime,
        out: out.display().to_string(),
        report: write_report(&out.join("metrics.jsonl"), &out.join("report.svg")),
    };
    let text = serde_json::to_string_pretty(&summary).unwrap();
    fs::write(out.join("summary.json"), text).context("cannot write summary.json")?;
    eprintln!(
        "demo: success rate {:.1}% -> {:.1}%, pair accuracy {:.1}% -> {:.1}% (held-out)",
        100.0 * summary.before.success_rate,
        100.0 * summary.after.success_rate,
        100.0 * summary.before.pair_accuracy,
        100.0 * summary.after.pair_accuracy
    );
    Ok(summary)
}

/// Draws the DPO metrics as `report.svg`; a failure is a warning, not the
/// end of a demo whose training went well.
fn write_report(metrics: &Path, svg: &Path) -> Option<String> {
    match crate::report::plot_metrics(metrics, Some(svg)) {
        Ok(plot) => Some(plot.out),
        Err(e) => {
            eprintln!("warning: no training report: {e}");
            None
        }
    }
}
