//! Training and evaluation: one training loop ([`train_loop::train`]) for
//! every objective of the `dpo` library, the commands that set it up
//! (`dpo sft`, `dpo train`; `kto.rs` for `--loss kto` on unpaired data),
//! held-out evaluation (`dpo eval`), and what a run needs around the loop:
//! settings, checkpoints with optimizer state, progress and the metrics log,
//! and data parallelism over ranks (`distributed`, `split`, `step`).

pub mod checkpoint;
pub mod distributed;
pub mod dpo;
pub mod evaluate;
pub mod kto;
pub mod lora;
pub mod memory;
pub mod progress;
pub mod settings;
pub mod setup;
pub mod sft;
pub mod split;
pub mod step;
pub mod train_loop;

pub use self::dpo::{train_dpo, DpoTrainArgs};
pub use distributed::{on_every_rank, Collective, SingleProcess};
pub use evaluate::{run_eval, EvalArgs, EvalPrecision, EvalReport};
pub use kto::{run_kto_eval, train_kto, KtoEvalArgs, KtoEvalReport, KtoTrainArgs};
pub use lora::{LoraSettings, ReferenceModel};
pub use settings::{AnyOptimizer, OptimizerKind, ScheduleKind, TrainHyper};
pub use setup::{DataArgs, InitialModel, Truncation};
pub use sft::{train_sft, SftTrainArgs};
pub use train_loop::{train, RunSettings, TrainSummary};
