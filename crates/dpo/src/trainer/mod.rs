//! Training and evaluation loops: DPO (`dpo train`), SFT (`dpo sft`) and
//! held-out evaluation (`dpo eval`), with their shared pieces: optimizer
//! choice, checkpoint + optimizer state, metrics logging and progress.

pub mod batch_plan;
pub mod dpo_train;
pub mod evaluate;
pub mod logps;
pub mod optimizer;
pub mod progress;
pub mod run;
pub mod sft_train;
pub mod state;

pub use dpo_train::{train_dpo, DpoTrainArgs, TrainSummary};
pub use evaluate::{evaluate_pairs, run_eval, EvalArgs, EvalReport};
pub use logps::{pair_logps, sequence_logps};
pub use optimizer::{AnyOptimizer, OptimizerKind, TrainHyper};
pub use sft_train::{train_sft, SftTrainArgs};
