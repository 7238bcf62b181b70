//! What every command loads before it trains or evaluates: checkpoints and
//! data files, checked against each other, with errors that name the flag.

use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, ensure, Context, Result};
use dpo::data::{self, prepare_rows, DataError, LoadOptions, PreparedRows, TrainingRow};
use transformer::hf_tokenizer::TOKENIZER_FILE;
use transformer::{
    detect_format, load_tokenizer, tokenizer_files, ByteTokenizer, CheckpointFormat, Model,
    ModelConfig, Tokenizer,
};

use super::checkpoint::{check_out_apart, check_replaceable, open_run_dir, ModelFiles};
use super::distributed::Collective;
use super::lora::{adapters_off_reference, start_adapters, store_base, ReferenceModel};
use super::memory::{available_memory, check_fits, ModelDims, RunMemory};
use super::step::check_split;
use super::train_loop::{DataCounts, RunSettings};

/// Loads a checkpoint (nanoGPT or Hugging Face); errors name `what` it is
/// (e.g. `policy`) and where.
pub fn load_model(path: &Path, what: &str) -> Result<Model<f32>> {
    Model::<f32>::load(path).with_context(|| format!("{what} {}", path.display()))
}

/// A checkpoint with what comes with the model: its tokenizer (the
/// directory's `tokenizer.json`, else bytes), its format and its tokenizer
/// files, which the checkpoints of a run started from it carry along.
pub struct LoadedModel {
    /// The model.
    pub model: Model<f32>,
    /// How text becomes ids for this model.
    pub tokenizer: Box<dyn Tokenizer>,
    /// The format it was read in; the default format of the checkpoints
    /// written from it.
    pub format: CheckpointFormat,
    /// `(name, bytes)` of its tokenizer files.
    pub tokenizer_files: Vec<(&'static str, Vec<u8>)>,
}

impl LoadedModel {
    /// Replaces the model's chat template with the Jinja file at `path`
    /// (`--chat-template`, TRL's `chat_template_path`): the tokenizer renders
    /// conversations with it, and the checkpoints written from this model
    /// carry it as their `chat_template.jinja`.
    pub fn set_chat_template(&mut self, path: &Path) -> Result<()> {
        let context = || format!("--chat-template {}", path.display());
        let bytes = transformer::checkpoint::read_bounded(path, MAX_TEMPLATE_BYTES)
            .with_context(context)?;
        let source = String::from_utf8(bytes).map_err(|_| anyhow!("{}: not UTF-8", context()))?;
        self.tokenizer
            .set_chat_template(&source)
            .with_context(context)?;
        self.tokenizer_files
            .retain(|(name, _)| *name != transformer::gguf::CHAT_TEMPLATE_FILE);
        self.tokenizer_files
            .push((transformer::gguf::CHAT_TEMPLATE_FILE, source.into_bytes()));
        Ok(())
    }

    /// What a run's checkpoints write: `save_format`, or this model's format.
    pub fn model_files(&self, save_format: Option<CheckpointFormat>) -> ModelFiles {
        ModelFiles {
            format: save_format.unwrap_or(self.format),
            tokenizer_files: self.tokenizer_files.clone(),
        }
    }

    /// The ids that end a generation: the tokenizer's end-of-sequence token
    /// and those of the model's `config.json` (a Llama-family `eos_token_id`,
    /// which may list several: Llama 3's instruct models end a turn with
    /// either of two), as transformers' `generate` stops at any of them.
    pub fn eos_ids(&self) -> Vec<u32> {
        let from_config = self.model.config().llama.iter();
        let mut ids: Vec<u32> = self.tokenizer.eos_id().into_iter().collect();
        for &id in from_config.flat_map(|llama| &llama.special.eos) {
            if !ids.contains(&id) {
                ids.push(id);
            }
        }
        ids
    }
}

/// The largest chat template read: 1 MiB (real ones are a few KiB).
const MAX_TEMPLATE_BYTES: u64 = 1 << 20;

/// Loads a checkpoint with its tokenizer (see [`LoadedModel`]); errors name
/// `what` it is and where. A `tokenizer.json` with more ids than the
/// model's vocabulary is refused. (Without one, text is read as bytes, and
/// a model with fewer than 256 ids is for `_ids` rows.)
///
/// A directory holding a PEFT adapter (`adapter_config.json`, no
/// `config.json`) is loaded as its base model (`base_model_name_or_path`)
/// with the adapter on it, as PEFT's `AutoPeftModelForCausalLM` does; its
/// tokenizer is the adapter directory's own when it has a `tokenizer.json`
/// (`dpo` writes one beside every adapter it trains), the base's otherwise.
pub fn load_checkpoint(path: &Path, what: &str) -> Result<LoadedModel> {
    let context = || format!("{what} {}", path.display());
    if transformer::lora::is_adapter_dir(path) {
        let base_path = transformer::lora::adapter_base_path(path).with_context(context)?;
        ensure!(
            !transformer::lora::is_adapter_dir(&base_path),
            "{}: its base model {} is an adapter too (stacked adapters are not supported)",
            context(),
            base_path.display()
        );
        let mut loaded = load_checkpoint(&base_path, &format!("the base model of {what}"))?;
        let lora = transformer::Lora::load(path, loaded.model.config()).with_context(context)?;
        loaded.model = loaded.model.with_lora(lora);
        if path.join(TOKENIZER_FILE).is_file() {
            loaded.tokenizer = load_tokenizer(path).with_context(context)?;
            loaded.tokenizer_files = tokenizer_files(path).with_context(context)?;
        }
        return Ok(loaded);
    }
    if transformer::gguf::is_gguf(path) {
        // A GGUF file: its runs' checkpoints are Hugging Face directories.
        let gguf = transformer::gguf::load_model(path).with_context(context)?;
        return Ok(LoadedModel {
            model: gguf.model,
            tokenizer: Box::new(gguf.tokenizer),
            format: CheckpointFormat::Hf,
            tokenizer_files: gguf.tokenizer_files,
        });
    }
    let format = detect_format(path).with_context(context)?;
    let model = Model::<f32>::load(path).with_context(context)?;
    let tokenizer = load_tokenizer(path).with_context(context)?;
    let tokenizer_files = tokenizer_files(path).with_context(context)?;
    let vocab_size = model.config().vocab_size;
    ensure!(
        !path.join(TOKENIZER_FILE).exists() || tokenizer.vocab_size() <= vocab_size,
        "{}: its tokenizer has {} ids, more than the model's vocab_size {vocab_size}",
        context(),
        tokenizer.vocab_size()
    );
    Ok(LoadedModel {
        model,
        tokenizer,
        format,
        tokenizer_files,
    })
}

/// What the peak memory of a run of `config` depends on, for `policy` once
/// it is loaded (`None`: before, as if every parameter trained, in f32) (see [`super::memory`]), for rows of `lengths.0` tokens whose
/// queries attend over at most `lengths.1` keys: a pair objective runs two
/// sequences per row (chosen and rejected; KTO a completion and its KL
/// sequence), SFT one.
fn run_memory(
    setup: &RunSetup<'_>,
    config: &ModelConfig,
    policy: Option<&Model<f32>>,
    lengths: (usize, usize),
) -> RunMemory {
    let hyper = &setup.run.hyper;
    let params = config.num_params().unwrap_or(u64::MAX);
    let trainable_params = policy.map(|m| m.num_trainable_params() as u64);
    let bf16_params = policy
        .and_then(|m| m.bf16_base())
        .map_or(0, |b| b.len() as u64);
    let rows = hyper.batch_size.div_ceil(hyper.grad_accum.max(1)) as u64;
    let sequences_per_row = if setup.stage == "sft" { 1 } else { 2 };
    // Evaluation scores `batch_size` rows per forward (SFT), the reference
    // and pair evaluation `eval_batch_size` rows.
    let scoring_rows = if setup.stage == "sft" {
        hyper.batch_size
    } else {
        super::dpo::eval_batch_size(hyper.batch_size)
    } as u64;
    RunMemory {
        params,
        // Gradients and moments for what trains: every parameter, or the adapters.
        trainable_params: trainable_params.unwrap_or(params),
        bf16_params,
        with_reference: setup.reference.is_some(),
        optimizer_moments: if hyper.optimizer_name() == "adamw" {
            2
        } else {
            0
        },
        accumulates: hyper.grad_accum > 1,
        sequences: rows * sequences_per_row,
        scoring_sequences: scoring_rows * sequences_per_row,
        seq_len: lengths.0.min(config.block_size) as u64,
        attended: lengths.1.min(2 * config.block_size) as u64,
        dims: ModelDims::of(config),
        precision: setup.run.precision,
        checkpointing: setup.run.gradient_checkpointing,
    }
}

/// Refuses a run whose peak, on rows of `lengths` (see [`run_memory`]), would not fit in
/// the memory this machine (or its cgroup) has available, unless
/// `--allow-oom-risk`: one line with both figures and what to lower.
fn check_training_memory(
    setup: &RunSetup<'_>,
    config: &ModelConfig,
    policy: Option<&Model<f32>>,
    lengths: (usize, usize),
) -> Result<()> {
    check_fits(
        &run_memory(setup, config, policy, lengths),
        available_memory(),
        setup.run.allow_oom_risk,
    )
}

/// The frozen reference (`None`: reference-free), which must have the
/// policy's config. [`ReferenceModel::AdaptersOff`] is the policy's base
/// (with `init_adapter`, if the run started from one).
pub fn load_reference(
    reference: &ReferenceModel,
    policy: &Model<f32>,
    init_adapter: Option<&Path>,
) -> Result<Option<Model<f32>>> {
    let path = match reference {
        ReferenceModel::Free => return Ok(None),
        ReferenceModel::AdaptersOff => {
            return adapters_off_reference(policy, init_adapter).map(Some)
        }
        ReferenceModel::Checkpoint(path) => path,
    };
    let reference = load_model(path, "reference")?;
    ensure!(
        reference.config() == policy.config(),
        "the reference {} has another config than the policy",
        path.display()
    );
    Ok(Some(reference))
}

/// How a long row is cut to fit (TRL's `max_length` and `max_prompt_length`,
/// docs/spec.md section 3.6): prompt and longest response together keep at
/// most `max_length` tokens (default: the model's block), the prompt giving
/// way first down to its last `max_prompt_length` (default: half of
/// `max_length`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::Args)]
pub struct Truncation {
    /// Tokens a row keeps: prompt and longest response are cut to fit (default: the model's block_size).
    #[arg(long, value_name = "N")]
    pub max_length: Option<usize>,
    /// Tokens kept of a long prompt when a row is cut (default: max_length / 2).
    #[arg(long, value_name = "N")]
    pub max_prompt_length: Option<usize>,
}

impl Truncation {
    /// (tokens a row keeps, tokens a cut row's prompt keeps) for a model
    /// whose block is `block_size`, each checked.
    pub fn budgets(&self, block_size: usize) -> Result<(usize, usize)> {
        let length = self.max_length.unwrap_or(block_size);
        ensure!(
            (1..=block_size).contains(&length),
            "--max-length {length} must be between 1 and the model's block_size {block_size}"
        );
        let prompt = self
            .max_prompt_length
            .unwrap_or_else(|| data::default_max_prompt_length(length));
        ensure!(
            prompt < length,
            "--max-prompt-length {prompt} must be below {}",
            match self.max_length {
                Some(_) => format!("--max-length {length}"),
                None => format!("the model's block_size {length}"),
            }
        );
        Ok((length, prompt))
    }
}

/// The rows of one file for a model of `config`, text tokenized by
/// `tokenizer`: loaded, validated and truncated by the data layer, with
/// skipped rows reported on stderr when `report_skips` (one rank of a
/// data-parallel run reports for all: they read the same file).
pub fn load_rows<R: TrainingRow>(
    path: &Path,
    config: &ModelConfig,
    tokenizer: &dyn Tokenizer,
    truncation: Truncation,
    options: &LoadOptions,
    report_skips: bool,
) -> Result<PreparedRows<R>> {
    let (max_length, max_prompt_length) = truncation.budgets(config.block_size)?;
    let prepared = prepare_rows::<R>(
        path,
        tokenizer,
        config.vocab_size,
        max_length,
        max_prompt_length,
        options,
    )
    .map_err(|e| match e {
        // The one data error that does not name its file.
        DataError::NoScoredTokenAfterTruncation { .. } => anyhow!("{}: {e}", path.display()),
        e => e.into(),
    })?;
    if report_skips && prepared.load.skipped > 0 {
        eprintln!("{}: {}", path.display(), prepared.load);
    }
    if report_skips && prepared.load.prompt_not_prefix > 0 {
        eprintln!(
            "{}: warning: in {} conversational rows the prompt rendered alone is not a prefix of prompt + response (the chat template renders the open assistant turn differently, or tokens merge across the boundary); their responses start where the two diverge, as TRL does",
            path.display(),
            prepared.load.prompt_not_prefix
        );
    }
    if report_skips && prepared.truncation.skipped > 0 {
        eprintln!("{}: {}", path.display(), prepared.truncation);
    }
    Ok(prepared)
}

/// Where a run's rows come from, whatever its objective.
#[derive(Debug, Clone)]
pub struct DataArgs {
    /// Training data (JSONL, optionally .gz; a Parquet file or a directory of Parquet shards).
    pub data: PathBuf,
    /// Held-out data of the same kind, evaluated during training.
    pub eval_data: Option<PathBuf>,
    /// Share of `data` held out (seeded) when there is no `eval_data`.
    pub eval_fraction: f64,
    /// How a long row is cut.
    pub truncation: Truncation,
    /// Skip bad rows instead of refusing the file; train on the assistant's
    /// tokens only (SFT).
    pub options: LoadOptions,
    /// A chat template to use instead of the model's (`--chat-template`).
    pub chat_template: Option<PathBuf>,
}

/// A run's training rows and held-out rows.
pub struct TrainData<R> {
    /// Rows to train on.
    pub train: Vec<R>,
    /// Rows to evaluate on (maybe none).
    pub held_out: Vec<R>,
    /// What the summary reports of them.
    pub counts: DataCounts,
}

/// Loads the training rows and the held-out rows (a file of their own, or a
/// seeded `eval_fraction` of the training file: the same split in every
/// stage run with the same seed). A run left with no training row is refused.
/// Skipped rows are reported when `report_skips` (on the root rank).
pub fn load_train_data<R: TrainingRow>(
    args: &DataArgs,
    config: &ModelConfig,
    tokenizer: &dyn Tokenizer,
    seed: u64,
    report_skips: bool,
) -> Result<TrainData<R>> {
    ensure!(
        (0.0..1.0).contains(&args.eval_fraction),
        "--eval-fraction must be in [0, 1), got {}",
        args.eval_fraction
    );
    let load = |path: &Path| {
        load_rows::<R>(
            path,
            config,
            tokenizer,
            args.truncation,
            &args.options,
            report_skips,
        )
    };
    let prepared = load(&args.data)?;
    let truncated_rows = prepared.truncation.truncated;
    let (train, held_out) = match &args.eval_data {
        Some(path) => (prepared.rows, load(path)?.rows),
        None => data::eval_split(prepared.rows, args.eval_fraction, seed),
    };
    ensure!(
        !train.is_empty(),
        "{}: no training rows left after holding out --eval-fraction {}",
        args.data.display(),
        args.eval_fraction
    );
    Ok(TrainData {
        counts: DataCounts {
            train_rows: train.len(),
            truncated_rows,
        },
        train,
        held_out,
    })
}

/// Where a run's initial model comes from.
#[derive(Debug, Clone)]
pub enum InitialModel {
    /// An existing checkpoint.
    Checkpoint(PathBuf),
    /// A fresh nanoGPT-initialised model of this config (seeded), reading bytes.
    Config(ModelConfig),
}

/// What a training command needs besides its objective's own settings.
pub struct RunSetup<'a> {
    /// The stage saved with each checkpoint (`Objective::STAGE`).
    pub stage: &'static str,
    /// The initial model, and the name errors give it (`policy`, `--init`).
    pub init: (&'a InitialModel, &'static str),
    /// The rows.
    pub data: &'a DataArgs,
    /// How to train.
    pub run: &'a RunSettings,
    /// Why a batch of this objective cannot be split over ranks, if it cannot.
    pub split_refusal: Option<String>,
    /// The frozen reference held in memory beside the policy, if any.
    pub reference: Option<&'a Path>,
}

impl RunSetup<'_> {
    /// What the run reads, which `--out` must not be: the initial checkpoint
    /// (unless resuming: then it is `--out`), the reference, the data.
    fn inputs(&self) -> Vec<(&str, &Path)> {
        let mut inputs = Vec::new();
        if let (InitialModel::Checkpoint(path), what) = self.init {
            if !self.run.resume {
                inputs.push((
                    if what == "policy" { "--policy" } else { what },
                    path.as_path(),
                ));
            }
        }
        inputs.extend(self.reference.map(|path| ("--ref", path)));
        let init_adapter = self
            .run
            .lora
            .as_ref()
            .and_then(|l| l.init_adapter.as_deref());
        inputs.extend(init_adapter.map(|path| ("--init-adapter", path)));
        inputs.push(("--data", self.data.data.as_path()));
        inputs.extend(
            self.data
                .eval_data
                .as_deref()
                .map(|path| ("--eval-data", path)),
        );
        inputs
    }
}

/// A training run set up, whatever its objective.
pub struct PreparedRun<R> {
    /// The model to train: the initial one, or the checkpoint in `--out` when resuming.
    pub policy: Model<f32>,
    /// How its checkpoints are written.
    pub model_files: ModelFiles,
    /// Its training and held-out rows.
    pub data: TrainData<R>,
}

/// What every training command does before it builds its objective, in an
/// order that writes nothing new to `--out` before the inputs are validated:
///
/// 1. the hyper-parameters, and whether a batch may be split over the ranks;
/// 2. `--out` opened by the root rank: it must be none of the inputs, and
///    is checked against the run to resume, or (a new run) must hold no
///    checkpoint files of another kind of run; then a barrier, so that the
///    other ranks read it whole;
/// 3. the initial model (the checkpoint in `--out` when resuming); a fresh
///    one is first checked to fit in memory on rows of its whole block;
/// 4. the training and held-out rows, tokenized by the model's tokenizer,
///    and whether a step on the longest of them fits in memory.
pub fn prepare_run<R: TrainingRow>(
    setup: &RunSetup<'_>,
    comm: &dyn Collective,
) -> Result<PreparedRun<R>> {
    let run = setup.run;
    run.hyper.validate()?;
    check_split(setup.split_refusal.clone(), &run.hyper, comm)?;
    if comm.is_root() {
        check_out_apart(&run.out, &setup.inputs())?;
        open_run_dir(&run.out, run.resume.then_some((setup.stage, &run.hyper)))?;
        // After open_run_dir has finished an interrupted save, whose state
        // may still have been staged.
        if !run.resume {
            check_replaceable(&run.out, setup.stage, run.overwrite)?;
        }
    }
    comm.barrier();
    let mut loaded = match setup.init {
        _ if run.resume => load_checkpoint(&run.out, "--resume: the checkpoint in --out")?,
        (InitialModel::Checkpoint(dir), what) => load_checkpoint(dir, what)?,
        (InitialModel::Config(config), _) => {
            config.validate().map_err(|e| anyhow!("--config: {e}"))?;
            // Before the weights are allocated (no row is read yet: rows as
            // long as the block, the most a fresh byte-level model reads).
            let block = config.block_size;
            check_training_memory(setup, config, None, (block, block))?;
            // A fresh model reads bytes and is saved as nanoGPT (GPT-2) or
            // Hugging Face (the Llama family) files by default.
            LoadedModel {
                model: Model::<f32>::new(config.clone(), run.hyper.seed),
                tokenizer: Box::new(ByteTokenizer),
                format: CheckpointFormat::default_for(config),
                tokenizer_files: Vec::new(),
            }
        }
    };
    match (&run.lora, setup.init) {
        (Some(_), _) if run.resume => ensure!(
            loaded.model.lora().is_some(),
            "--resume --use-peft: the run in {} trained the whole model, not adapters: drop --use-peft",
            run.out.display()
        ),
        (None, _) if run.resume => ensure!(
            loaded.model.lora().is_none(),
            "--resume: the run in {} trains LoRA adapters: give --use-peft (and the same LoRA flags) to continue it",
            run.out.display()
        ),
        (Some(lora), (InitialModel::Checkpoint(path), _)) => {
            loaded.model = start_adapters(loaded.model, path, lora, run.hyper.seed)?;
        }
        (Some(_), (InitialModel::Config(_), _)) => bail!(
            "--use-peft adapts a pretrained model: start from a checkpoint (--init), not a fresh --config"
        ),
        (None, _) => {}
    }
    if let Some(lora) = &run.lora {
        loaded.model = store_base(loaded.model, lora);
    }
    loaded
        .model
        .set_gradient_checkpointing(run.gradient_checkpointing);
    if let Some(path) = &setup.data.chat_template {
        loaded.set_chat_template(path)?;
    }
    let model_files = loaded.model_files(run.save_format);
    let config = loaded.model.config();
    let data = load_train_data::<R>(
        setup.data,
        config,
        loaded.tokenizer.as_ref(),
        run.hyper.seed,
        comm.is_root(),
    )?;
    let rows = || data.train.iter().chain(&data.held_out);
    // A pair that shares its prompt runs as one sequence [prompt | chosen | rejected].
    let whole_row =
        |row: &R| row.prompt().len() + row.responses().iter().map(|(_, r)| r.len()).sum::<usize>();
    let longest = rows().map(R::padded_len).max().unwrap_or(config.block_size);
    let attended = rows().map(whole_row).max().unwrap_or(config.block_size);
    check_training_memory(
        setup,
        config,
        Some(&loaded.model),
        (longest, attended.max(longest)),
    )?;
    Ok(PreparedRun {
        policy: loaded.model,
        model_files,
        data,
    })
}
