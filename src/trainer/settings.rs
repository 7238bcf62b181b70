//! The optimization settings every objective trains with: steps, batch size,
//! learning rate and its schedule, the optimizer, clipping, the data seed.

use std::sync::Arc;

use autograd::optim::{clip_grad_norm, AdamW, LrSchedule, Optimizer, Sgd};
use autograd::Tensor;

/// `--optimizer`
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum OptimizerKind {
    /// AdamW with PyTorch's defaults (betas 0.9, 0.999; eps 1e-8).
    Adamw,
    /// Plain SGD: `w -= lr * grad` (plus decoupled weight decay).
    Sgd,
}

/// `--schedule`
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ScheduleKind {
    /// The base rate after the warmup (no decay).
    Constant,
    /// Linear warmup, then linear decay to 0.
    Linear,
    /// Linear warmup, then cosine decay to 10% of the base rate.
    Cosine,
}

/// The optimization settings of a training run (`dpo sft`, `dpo train`).
#[derive(Debug, Clone, serde::Serialize)]
pub struct TrainHyper {
    /// Number of optimizer steps (in total, counting resumed ones).
    pub steps: u64,
    /// Rows (pairs, for DPO) per step, over all ranks together.
    pub batch_size: usize,
    /// Micro-batches each rank's share of a batch is cut into (gradients
    /// added up before the step): memory for one micro-batch at a time.
    pub grad_accum: usize,
    /// Base learning rate.
    pub lr: f64,
    /// AdamW or SGD.
    pub optimizer: OptimizerKind,
    /// Decoupled weight decay.
    pub weight_decay: f64,
    /// Global-norm gradient clipping; 0 turns it off.
    pub max_grad_norm: f64,
    /// Warmup steps of the schedule.
    pub warmup_steps: u64,
    /// Learning-rate schedule.
    pub schedule: ScheduleKind,
    /// Seed of the data order.
    pub seed: u64,
}

impl TrainHyper {
    /// Checks the settings (one-line message naming the flag).
    pub fn validate(&self) -> anyhow::Result<()> {
        anyhow::ensure!(self.steps > 0, "--steps must be at least 1");
        anyhow::ensure!(self.batch_size > 0, "--batch-size must be at least 1");
        anyhow::ensure!(self.grad_accum > 0, "--grad-accum must be at least 1");
        let non_negative = |x: f64| x.is_finite() && x >= 0.0;
        anyhow::ensure!(
            non_negative(self.lr),
            "--lr must be a non-negative number, got {}",
            self.lr
        );
        anyhow::ensure!(
            non_negative(self.weight_decay),
            "--weight-decay must be non-negative, got {}",
            self.weight_decay
        );
        anyhow::ensure!(
            non_negative(self.max_grad_norm),
            "--max-grad-norm must be non-negative, got {}",
            self.max_grad_norm
        );
        Ok(())
    }

    /// The learning-rate schedule.
    pub fn lr_schedule(&self) -> LrSchedule {
        match self.schedule {
            ScheduleKind::Constant if self.warmup_steps == 0 => LrSchedule::Constant,
            ScheduleKind::Constant => LrSchedule::WarmupCosine {
                warmup: self.warmup_steps,
                total: u64::MAX,
                min_ratio: 1.0,
            },
            ScheduleKind::Linear => LrSchedule::WarmupLinear {
                warmup: self.warmup_steps,
                total: self.steps,
            },
            ScheduleKind::Cosine => LrSchedule::WarmupCosine {
                warmup: self.warmup_steps,
                total: self.steps,
                min_ratio: 0.1,
            },
        }
    }

    /// The optimizer's name, as `--optimizer` and the trainer state spell it.
    pub fn optimizer_name(&self) -> &'static str {
        match self.optimizer {
            OptimizerKind::Adamw => "adamw",
            OptimizerKind::Sgd => "sgd",
        }
    }

    /// A fresh optimizer of the chosen kind.
    pub fn new_optimizer(&self) -> AnyOptimizer {
        match self.optimizer {
            OptimizerKind::Adamw => AnyOptimizer::AdamW(AdamW::new(self.weight_decay)),
            OptimizerKind::Sgd => AnyOptimizer::Sgd(Sgd::new(self.weight_decay)),
        }
    }

    /// Clips (if enabled) and returns the gradient norm before clipping.
    pub fn clip(&self, grads: &mut [Tensor<f32>]) -> f64 {
        if self.max_grad_norm > 0.0 {
            clip_grad_norm(grads, self.max_grad_norm)
        } else {
            autograd::optim::global_grad_norm(grads)
        }
    }
}

/// Either optimizer, behind one type.
pub enum AnyOptimizer {
    /// AdamW.
    AdamW(AdamW<f32>),
    /// SGD.
    Sgd(Sgd),
}

impl AnyOptimizer {
    /// One update.
    pub fn step<'a>(
        &mut self,
        params: impl IntoIterator<Item = &'a mut Arc<Tensor<f32>>>,
        grads: &[Tensor<f32>],
        lr: f64,
    ) {
        match self {
            AnyOptimizer::AdamW(o) => o.step(params, grads, lr),
            AnyOptimizer::Sgd(o) => o.step(params, grads, lr),
        }
    }

    /// Steps taken so far.
    pub fn steps_taken(&self) -> u64 {
        match self {
            AnyOptimizer::AdamW(o) => o.steps_taken(),
            AnyOptimizer::Sgd(o) => <Sgd as Optimizer<f32>>::steps_taken(o),
        }
    }
}
