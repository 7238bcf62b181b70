//! Command-line arguments (clap derive).

use std::path::PathBuf;

use autograd::Precision;
use clap::builder::{PossibleValuesParser, TypedValueParser};
use clap::{Args, Parser, Subcommand, ValueEnum};
use dpo::loss::LossType;
use transformer::CheckpointFormat;

use crate::trainer::{EvalPrecision, OptimizerKind, ScheduleKind, Truncation};

/// Preference-tuning (DPO and its family, SFT, KTO) of GPT-2 and Llama-family models on CPU.
///
/// Typical pipeline: `dpo sft` a model on demonstrations, then `dpo train` it
/// with DPO against its own SFT checkpoint as the frozen reference, then
/// `dpo eval` on held-out pairs and `dpo generate` to look at samples.
/// `dpo demo` runs all of it on a built-in task.
#[derive(Debug, Parser)]
#[command(name = "dpo", version, about, long_about = None, propagate_version = true)]
pub struct Cli {
    /// Worker threads (default: all cores; under mpirun, the cores divided among the ranks on this machine). Accepted before or after the subcommand.
    #[arg(long, global = true, value_name = "N")]
    pub threads: Option<usize>,

    /// The command to run.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the whole pipeline on a built-in task (SFT, then DPO, then a before/after report).
    Demo(DemoArgs),
    /// Supervised fine-tuning on prompt/completion (or preference) data.
    Sft(SftArgs),
    /// DPO training of a policy against a frozen reference; SimPO and ORPO reference-free; KTO on unpaired data (`--loss kto`).
    Train(TrainArgs),
    /// DPO (SimPO, ORPO, KTO) metrics of a policy over a preference (or, with `--loss kto`, unpaired) file, JSON on stdout.
    Eval(EvalCliArgs),
    /// Sample a continuation of a prompt, or a chat model's reply to `--messages`.
    Generate(GenerateArgs),
    /// Talk with a chat model in the terminal: each line typed is a message, the reply streams back.
    ///
    /// Each line read from stdin is a user message. The model's chat template
    /// is applied to the whole conversation so far, and the reply is printed
    /// to stdout as its tokens come, until an end-of-sequence token or
    /// --max-new-tokens. A conversation that outgrows the model's context
    /// starts over (the system message kept). Lines starting with `/` are
    /// commands: `/reset` starts the conversation over (keeping the system
    /// message), `/system TEXT` sets the system message and starts over
    /// (`/system` alone removes it). Ctrl-D (end of input) leaves. Prompts and
    /// notices go to stderr, replies to stdout. A reply is the one
    /// `dpo generate --messages` gives for the same conversation and flags.
    Chat(ChatArgs),
    /// Convert a checkpoint between nanoGPT's and Hugging Face's files (exactly: same tensors), or merge a LoRA adapter into its base (--merge-lora).
    Convert(ConvertArgs),
    /// Convert a data file: HH-RLHF's "\n\nHuman:"/"\n\nAssistant:" dialogues into conversational preference rows (TRL's hh-rlhf-helpful-base layout), ready for a chat template.
    ConvertData(ConvertDataArgs),
    /// Draw `--metrics` files as an SVG (or HTML) report: loss, rewards, margins, accuracies, held-out preference, throughput; several files overlaid.
    Plot(PlotArgs),
}

/// `dpo demo`
#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Output directory (checkpoints, summary.json, metrics).
    #[arg(long, default_value = "dpo-demo")]
    pub out: PathBuf,
    /// Seed of the task data, the initialisation and the data order.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
}

/// Training flags shared by `sft` and `train`: every one works for every objective.
#[derive(Debug, Args, Clone)]
pub struct OptimArgs {
    /// Optimizer steps.
    #[arg(long, default_value_t = 100)]
    pub steps: u64,
    /// Rows (pairs, for `train`) per step; at least the row count means the whole file.
    #[arg(long, default_value_t = 8)]
    pub batch_size: usize,
    /// Cut each batch (each rank's share of it, under MPI) into N micro-batches whose gradients add up to the batch's: less memory, the same step.
    #[arg(long, default_value_t = 1, value_name = "N")]
    pub grad_accum: usize,
    /// Arithmetic of the training GEMMs: f32, or bf16 (inputs rounded to bfloat16, sums in f32; weights, gradients, optimizer and checkpoints stay f32; docs/bf16.md).
    #[arg(long, default_value = "f32", value_name = "f32|bf16")]
    pub precision: Precision,
    /// Optimizer.
    #[arg(long, value_enum, default_value_t = OptimizerKind::Adamw)]
    pub optimizer: OptimizerKind,
    /// Decoupled weight decay.
    #[arg(long, default_value_t = 0.0)]
    pub weight_decay: f64,
    /// Clip the global gradient norm to this value; 0 turns clipping off.
    #[arg(long, default_value_t = 1.0)]
    pub max_grad_norm: f64,
    /// Linear warmup steps.
    #[arg(long, default_value_t = 0)]
    pub warmup_steps: u64,
    /// Learning-rate schedule after warmup.
    #[arg(long, value_enum, default_value_t = ScheduleKind::Constant)]
    pub schedule: ScheduleKind,
    /// Seed of the data order (and of the initialisation with --config).
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    #[command(flatten)]
    pub truncation: Truncation,
    /// Append per-step metrics as JSON lines to this file.
    #[arg(long, value_name = "FILE")]
    pub metrics: Option<PathBuf>,
    /// Skip bad rows (reporting their count and first line numbers) instead of refusing the file.
    #[arg(long)]
    pub skip_invalid: bool,
    /// A Jinja chat template file to render conversational rows with, instead of the model's own (TRL's chat_template_path); the checkpoints written carry it as chat_template.jinja.
    #[arg(long, value_name = "FILE")]
    pub chat_template: Option<PathBuf>,
    /// Held-out data of the same kind as --data, evaluated every --eval-every steps and at the end.
    #[arg(long, value_name = "FILE")]
    pub eval_data: Option<PathBuf>,
    /// Without --eval-data: hold out this share of the rows of --data (seeded) for evaluation.
    #[arg(
        long,
        default_value_t = 0.0,
        value_name = "F",
        conflicts_with = "eval_data"
    )]
    pub eval_fraction: f64,
    /// Evaluate on held-out data every N steps (0: at the end only).
    #[arg(long, default_value_t = 0, value_name = "N")]
    pub eval_every: u64,
    /// Batch rows of similar length together (less padding on real data).
    #[arg(long, conflicts_with = "data_order")]
    pub group_by_length: bool,
    /// The order rows are taken in: shuffled (seeded by --seed, another order every epoch), or file (the
    /// file's order, every epoch: to see the rows in the order another tool does, or a curriculum).
    #[arg(long, value_enum, default_value_t = DataOrder::Shuffled)]
    pub data_order: DataOrder,
    /// Save a checkpoint (model, optimizer, trainer state) into --out every N steps (0: at the end only).
    #[arg(long, default_value_t = 0, value_name = "N")]
    pub save_every: u64,
    /// Continue the run whose checkpoint is in --out (same objective and optimizer).
    #[arg(long)]
    pub resume: bool,
    /// Hide the progress bar.
    #[arg(long)]
    pub no_progress: bool,
    /// Format of the checkpoints written into --out: hf (transformers' GPT2LMHeadModel) or
    /// nanogpt (default: the format of the starting checkpoint; for --config, nanogpt for GPT-2 and hf for the Llama family).
    #[arg(long, value_enum, value_name = "FORMAT")]
    pub save_format: Option<SaveFormat>,
    /// Recompute each block's activations in the backward pass instead of keeping them (transformers'
    /// gradient_checkpointing): the activations of a step take one block's memory instead of all blocks', for one
    /// more forward pass of the blocks; the same gradients.
    #[arg(long)]
    pub gradient_checkpointing: bool,
    /// Replace checkpoint files (config.json, model.safetensors, adapter files) in --out that no run of this command wrote (they carry no trainer_state.json of its stage).
    #[arg(long)]
    pub overwrite: bool,
    /// Train even when the estimated peak memory of the run (weights, gradients, optimizer, reference, activations, checkpoint saves) is more than this machine (or its cgroup) has available.
    #[arg(long)]
    pub allow_oom_risk: bool,
    #[command(flatten)]
    pub lora: LoraArgs,
}

/// LoRA flags shared by `sft` and `train` (PEFT's `LoraConfig`; docs/lora.md).
#[derive(Debug, Args, Clone)]
pub struct LoraArgs {
    /// Train LoRA adapters on the frozen model instead of the model (TRL's --use_peft). Checkpoints are PEFT
    /// adapters (adapter_config.json + adapter_model.safetensors); with no --ref, DPO's reference is the model
    /// with its adapters off, so no second model is loaded.
    #[arg(long, help_heading = "LoRA")]
    pub use_peft: bool,
    /// The adapters' rank r.
    #[arg(
        long,
        default_value_t = 16,
        value_name = "R",
        requires = "use_peft",
        help_heading = "LoRA"
    )]
    pub lora_r: usize,
    /// The adapters' alpha: their output is scaled by alpha / r.
    #[arg(
        long,
        default_value_t = 32.0,
        value_name = "F",
        requires = "use_peft",
        help_heading = "LoRA"
    )]
    pub lora_alpha: f64,
    /// Dropout on the adapters' input while training.
    #[arg(
        long,
        default_value_t = 0.05,
        value_name = "P",
        requires = "use_peft",
        help_heading = "LoRA"
    )]
    pub lora_dropout: f64,
    /// The layers to adapt, by name (`q_proj,v_proj`; GPT-2: `c_attn,c_proj,c_fc`), or `all-linear` (every linear
    /// layer but the LM head). Default: PEFT's for the architecture, q_proj,v_proj (Llama family) or c_attn (GPT-2).
    #[arg(
        long,
        alias = "lora-target-modules",
        value_delimiter = ',',
        value_name = "NAME,...",
        requires = "use_peft",
        help_heading = "LoRA"
    )]
    pub lora_targets: Vec<String>,
    /// Scale the adapters by alpha / sqrt(r) (rank-stabilized LoRA) instead of alpha / r.
    #[arg(long, requires = "use_peft", help_heading = "LoRA")]
    pub use_rslora: bool,
    /// Start from this trained adapter (a PEFT directory) instead of fresh ones; it is also the frozen reference,
    /// unless --ref is given. Its r, alpha and layers are the adapter's own.
    #[arg(long, value_name = "DIR", requires = "use_peft", help_heading = "LoRA")]
    pub init_adapter: Option<PathBuf>,
    /// How the frozen base is stored: f32, or bf16 (its linear layers, embedding and LM head rounded to bfloat16
    /// once, half their memory, and multiplied by the bf16 GEMM; the adapters, their gradients and AdamW stay f32,
    /// their GEMMs follow --precision; docs/lora.md).
    #[arg(
        long,
        default_value = "f32",
        value_name = "f32|bf16",
        requires = "use_peft",
        help_heading = "LoRA"
    )]
    pub base_precision: Precision,
}

/// A checkpoint format, as the command line names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SaveFormat {
    /// Hugging Face transformers' GPT-2 (`save_pretrained` files).
    Hf,
    /// nanoGPT's (docs/spec.md section 2).
    Nanogpt,
}

impl SaveFormat {
    /// The transformer crate's format.
    pub fn format(self) -> CheckpointFormat {
        match self {
            SaveFormat::Hf => CheckpointFormat::Hf,
            SaveFormat::Nanogpt => CheckpointFormat::NanoGpt,
        }
    }
}

/// `dpo convert`
#[derive(Debug, Args)]
pub struct ConvertArgs {
    /// The checkpoint to convert: a nanoGPT or Hugging Face directory (sharded, F16 or BF16 files too), or a GGUF file (F32, F16, BF16, Q8_0, Q4_0, Q4_1, Q4_K, Q5_K, Q6_K tensors, dequantized).
    #[arg(value_name = "IN")]
    pub input: PathBuf,
    /// The new checkpoint directory (must not exist yet); the tokenizer files of IN are copied along.
    #[arg(value_name = "OUT")]
    pub output: PathBuf,
    /// The format to write (F32, one file).
    #[arg(long, value_enum, value_name = "FORMAT")]
    pub to: SaveFormat,
    /// IN is a LoRA adapter (PEFT's files): write its base model with the adapter merged into the weights (PEFT's merge_and_unload).
    #[arg(long)]
    pub merge_lora: bool,
}

/// `dpo convert-data`
#[derive(Debug, Args)]
pub struct ConvertDataArgs {
    /// The file to convert (JSONL, optionally .gz).
    #[arg(value_name = "IN")]
    pub input: PathBuf,
    /// The JSONL file to write (replaced whole, atomically).
    #[arg(value_name = "OUT")]
    pub output: PathBuf,
    /// The layout of IN: hh-rlhf, Anthropic's {"chosen", "rejected"} dialogues.
    #[arg(long, value_parser = ["hh-rlhf"], value_name = "FORMAT")]
    pub from: String,
    /// Skip rows that do not convert (reporting their count and first line numbers) instead of refusing the file.
    #[arg(long)]
    pub skip_invalid: bool,
}

/// `dpo sft`
#[derive(Debug, Args)]
pub struct SftArgs {
    /// SFT data: {"prompt","completion"} or {"text"} rows (or `_ids` forms), conversational {"messages": [...]} or
    /// {"prompt": [...], "completion": [...]} rows (rendered by the chat template), or preference rows (trains on the
    /// chosen side); JSON Lines (.gz accepted), a .parquet file or a directory of .parquet shards.
    /// JSON Lines are read as a stream, once, start to end: a named pipe works, and waits for its writer (Ctrl-C ends the wait).
    #[arg(long, value_name = "FILE")]
    pub data: PathBuf,
    /// Output checkpoint directory.
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    /// Start from this checkpoint: a nanoGPT or Hugging Face directory, or a GGUF file (one of --init or --config is needed, unless --resume).
    #[arg(long, value_name = "PATH", conflicts_with = "config")]
    pub init: Option<PathBuf>,
    /// Start from a fresh model: a preset (GPT-2: tiny, small, medium, gpt2; the Llama family: llama-tiny, qwen2-tiny, qwen3-tiny) or a config.json file (nanoGPT or Hugging Face).
    #[arg(long, value_name = "NAME|FILE")]
    pub config: Option<String>,
    /// Learning rate.
    #[arg(long, default_value_t = 1e-3)]
    pub lr: f64,
    /// Train only on the assistant's tokens of conversational rows: those the chat template marks with {% generation %} ... {% endgeneration %} (TRL's assistant_only_loss; see --chat-template).
    #[arg(long)]
    pub assistant_only_loss: bool,
    #[command(flatten)]
    pub optim: OptimArgs,
}

/// One name given to `--loss`: a pair loss, or KTO on unpaired rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LossName {
    /// A loss on preference pairs (DPO and its family, SimPO, ORPO).
    Pair(LossType),
    /// KTO, on unpaired rows labelled desirable or undesirable.
    Kto,
}

/// The names `--loss` accepts: every [`LossType`], `dpo` (= sigmoid) and `kto`.
fn loss_names() -> impl Iterator<Item = &'static str> {
    LossType::ALL
        .iter()
        .map(|(name, _)| *name)
        .chain(["dpo", "kto"])
}

/// Loss flags shared by `train` and `eval`. Pair-loss flags are refused with
/// `--loss kto`, and KTO's with a pair loss.
#[derive(Debug, Args, Clone)]
pub struct LossArgs {
    /// KL-penalty strength: the temperature of the implicit reward beta * log(pi/ref); ORPO's lambda.
    #[arg(long, default_value_t = 0.1)]
    pub beta: f64,
    /// Loss, or several pair losses joined by commas and summed (`sigmoid,sft`): sigmoid (the DPO
    /// paper's; `dpo` is the same), ipo, hinge, robust, exo_pair, nca_pair, bco_pair, sppo_hard, aot,
    /// aot_unpaired, apo_zero, apo_down, discopop, sigmoid_norm, sft (NLL of the chosen response);
    /// simpo and orpo (reference-free: no --ref). Or `--loss kto`, alone: Kahneman-Tversky
    /// Optimization on unpaired rows ({"prompt","completion","label"} in --data), with
    /// --desirable-weight and --undesirable-weight.
    #[arg(
        long,
        default_value = "sigmoid",
        value_delimiter = ',',
        value_parser = PossibleValuesParser::new(loss_names()).map(|name| match name.as_str() {
            "kto" => LossName::Kto,
            name => LossName::Pair(name.parse().expect("a listed loss name")),
        })
    )]
    pub loss: Vec<LossName>,
    /// Weights of the losses of --loss, in order (default: 1 each), e.g. `--loss sigmoid,sft --loss-weights 1,0.5`.
    #[arg(long, value_delimiter = ',', value_name = "W,...")]
    pub loss_weights: Vec<f64>,
    /// RPO: add the NLL of the chosen responses (mean over their tokens) times this weight (`sft` term).
    #[arg(long, value_name = "F")]
    pub rpo_alpha: Option<f64>,
    /// Label smoothing e in [0, 0.5): assumed share of flipped labels (cDPO for sigmoid, robust, exo_pair's epsilon, aot, simpo). Default 0.
    #[arg(long, value_name = "F")]
    pub label_smoothing: Option<f64>,
    /// DiscoPOP's temperature tau (--loss discopop). Default 0.05.
    #[arg(long, value_name = "F")]
    pub discopop_tau: Option<f64>,
    /// SimPO's target reward margin gamma (--loss simpo). Default 0.5.
    #[arg(long, value_name = "F")]
    pub simpo_gamma: Option<f64>,
    /// bco_pair without its running-mean reward shift (delta = 0, as TRL 1.x's bco_pair).
    #[arg(long)]
    pub bco_no_running_mean: bool,
    /// KTO (--loss kto): weight of the loss of desirable rows (label true). With unbalanced data, aim for desirable-weight * desirable rows / (undesirable-weight * undesirable rows) in [1, 4/3]. Default 1.
    #[arg(long, value_name = "F")]
    pub desirable_weight: Option<f64>,
    /// KTO (--loss kto): weight of the loss of undesirable rows (label false). Default 1.
    #[arg(long, value_name = "F")]
    pub undesirable_weight: Option<f64>,
}

/// The policy, its reference and the preference data of `train` and `eval`.
#[derive(Debug, Args, Clone)]
pub struct PairArgs {
    /// Policy checkpoint (for `train`, the initial policy): a nanoGPT or Hugging Face directory, or a GGUF file.
    #[arg(long, value_name = "PATH")]
    pub policy: PathBuf,
    /// Frozen reference checkpoint (usually the SFT checkpoint the policy starts from; a directory or a GGUF file); or --reference-free.
    /// SimPO and ORPO take none.
    #[arg(long = "ref", value_name = "PATH")]
    pub reference: Option<PathBuf>,
    /// Reference-free DPO: reference log-probs are taken as 0.
    #[arg(long, conflicts_with = "reference")]
    pub reference_free: bool,
    /// Preference data: {"prompt","chosen","rejected"}, {"chosen","rejected"} or `_ids` forms, their
    /// conversational forms (lists of {"role","content"} messages, rendered by the chat template); with
    /// --loss kto, unpaired {"prompt","completion","label": true|false} rows. JSON Lines (.gz
    /// accepted), a .parquet file or a directory of .parquet shards.
    /// JSON Lines are read as a stream, once, start to end: a named pipe works, and waits for its writer (Ctrl-C ends the wait).
    #[arg(long, value_name = "FILE")]
    pub data: PathBuf,
    /// on (default): each pair is one sequence [prompt | chosen | rejected], the prompt run once
    /// (rejected tokens never see chosen ones); off: the prompt runs before each response. Same
    /// log-probs. Pair losses only.
    #[arg(long, value_enum, value_name = "on|off")]
    pub prefix_sharing: Option<OnOff>,
}

/// `--data-order`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum DataOrder {
    /// A seeded shuffle, another one every epoch.
    Shuffled,
    /// The file's order.
    File,
}

/// A switch given as `on` or `off`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum OnOff {
    /// Switched on.
    On,
    /// Switched off.
    Off,
}

/// `dpo train`
#[derive(Debug, Args)]
pub struct TrainArgs {
    #[command(flatten)]
    pub pairs: PairArgs,
    /// Output checkpoint directory.
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    /// Learning rate.
    #[arg(long, default_value_t = 1e-4)]
    pub lr: f64,
    #[command(flatten)]
    pub loss: LossArgs,
    #[command(flatten)]
    pub optim: OptimArgs,
}

/// `dpo eval`
#[derive(Debug, Args)]
pub struct EvalCliArgs {
    #[command(flatten)]
    pub pairs: PairArgs,
    #[command(flatten)]
    pub truncation: Truncation,
    /// Pairs per forward pass; with --loss kto, rows per batch, in file order (each batch pairs
    /// its KL sequences and has its own KL estimate).
    #[arg(long, default_value_t = 16)]
    pub batch_size: usize,
    /// Skip bad rows instead of refusing the file.
    #[arg(long)]
    pub skip_invalid: bool,
    /// A Jinja chat template file to render conversational rows with, instead of the model's own.
    #[arg(long, value_name = "FILE")]
    pub chat_template: Option<PathBuf>,
    /// Arithmetic of the models: f64 (the checkpoints widened exactly; the metrics are the
    /// stored weights' own, to compare with a float64 reference) or f32 (as training runs them:
    /// a third of the memory, twice as fast, rounding far below the noise of held-out metrics).
    #[arg(long, value_enum, default_value_t = EvalPrecision::F64, value_name = "f64|f32")]
    pub precision: EvalPrecision,
    #[command(flatten)]
    pub loss: LossArgs,
}

/// How the next token is drawn, in `generate` and `chat`.
#[derive(Debug, Args, Clone)]
pub struct SamplingArgs {
    /// Sampling temperature; 0 means greedy.
    #[arg(long, default_value_t = 1.0)]
    pub temperature: f64,
    /// Sample only among the k most likely tokens.
    #[arg(long)]
    pub top_k: Option<usize>,
    /// Sampling seed.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
}

/// `dpo generate`
#[derive(Debug, Args)]
pub struct GenerateArgs {
    /// Model checkpoint: a nanoGPT or Hugging Face directory, or a GGUF file.
    #[arg(long, value_name = "PATH")]
    pub model: PathBuf,
    /// The prompt text (tokenized by the model's tokenizer.json, else bytes).
    #[arg(
        long,
        required_unless_present_any = ["prompt_ids", "messages"],
        conflicts_with_all = ["prompt_ids", "messages"]
    )]
    pub prompt: Option<String>,
    /// The prompt as token ids, comma-separated (e.g. `15496,11,995`).
    #[arg(
        long,
        value_name = "IDS",
        value_delimiter = ',',
        conflicts_with = "messages"
    )]
    pub prompt_ids: Option<Vec<u32>>,
    /// A conversation as a JSON list of {"role","content"} messages (or @FILE holding it):
    /// the prompt is the model's chat template applied to it, with the assistant's turn
    /// opened, and the completion is the assistant's reply.
    #[arg(long, value_name = "JSON|@FILE")]
    pub messages: Option<String>,
    /// Also print the token ids of the prompt and of the completion.
    #[arg(long)]
    pub print_ids: bool,
    /// Tokens to generate, at most 1048576 (past the block size the context
    /// window slides; memory stays bounded).
    #[arg(long, default_value_t = 64)]
    pub max_new_tokens: usize,
    #[command(flatten)]
    pub sampling: SamplingArgs,
    /// Stop when the completion contains this text (cut before it); repeatable.
    /// Generation also stops at an end-of-sequence token: the tokenizer's, or one the model's config.json names.
    #[arg(long, value_name = "TEXT")]
    pub stop: Vec<String>,
}

/// `dpo chat`
#[derive(Debug, Args)]
pub struct ChatArgs {
    /// A chat model (one whose tokenizer has a chat template): a checkpoint directory or a GGUF file.
    #[arg(long, value_name = "PATH")]
    pub model: PathBuf,
    /// The system message the conversation starts with.
    #[arg(long, value_name = "TEXT")]
    pub system: Option<String>,
    /// The most tokens of one reply (a reply also ends where the model's context does).
    #[arg(long, default_value_t = 512)]
    pub max_new_tokens: usize,
    #[command(flatten)]
    pub sampling: SamplingArgs,
}

/// `dpo plot`
#[derive(Debug, Args)]
pub struct PlotArgs {
    /// Metrics JSON Lines written by `--metrics` (or `metrics.jsonl` of `dpo demo`); several files are
    /// overlaid in one report, a colour each (runs of different settings, or of `dpo` and TRL).
    #[arg(value_name = "FILE", required = true, num_args = 1..)]
    pub files: Vec<PathBuf>,
    /// Names of the runs of FILE..., comma-separated, in order (default: the file names).
    #[arg(long, value_delimiter = ',', value_name = "NAME,...")]
    pub labels: Vec<String>,
    /// Report to write: `.svg`, or `.html` for a page embedding it (default: FILE with `.svg`).
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
}
