//! The preference-optimization losses and the metrics reported with them:
//! every `loss_type` of TRL's `DPOTrainer`, SimPO (TRL's `CPOTrainer`) and
//! ORPO (TRL's `ORPOTrainer`).
//!
//! For a pair with policy log-probs `pi_c`, `pi_r` (summed over the response
//! tokens), reference log-probs `ref_c`, `ref_r`, and `n_c`, `n_r` scored
//! response tokens:
//!
//! ```text
//! a = pi_c - ref_c,  b = pi_r - ref_r,  d = a - b      the implicit reward margin / beta
//! ```
//!
//! Each loss is written once, as a per-pair (or per-batch) forward with its
//! derivative beside it, in the file of its family:
//!
//! | file | losses | depends on |
//! |---|---|---|
//! | [`margin`] | sigmoid, hinge, ipo, robust, exo_pair, discopop, sigmoid_norm | the margin `d` (or its per-token form) |
//! | [`separate`] | nca_pair, bco_pair, sppo_hard, apo_zero, apo_down | `a` and `b` separately |
//! | [`sorted`] | aot, aot_unpaired | the sorted margins of the whole batch |
//! | [`reference_free`] | simpo, orpo (odds ratio) | per-token mean policy log-probs, no reference |
//! | [`nll`] | sft, orpo (NLL) | the chosen tokens of the whole batch |
//! | [`kto`] | kto (unpaired rows, `dpo train --loss kto`) | each row's log-ratio and the batch's KL estimate |
//!
//! The batch loss is `sum_k w_k * mean_pairs(loss_k)` over the requested
//! losses (`--loss sigmoid,sft --loss-weights 1,0.5`, TRL's MPO style);
//! [`batch`] combines them and is one fused op on the tape, its input the
//! policy log-probs of the `2B` sequences (chosen first, then rejected), its
//! backward `dloss/dpi` written out. `docs/dpo.md` derives every formula.

pub mod batch;
pub mod kto;
pub mod margin;
mod metrics;
pub mod nll;
pub mod reference_free;
pub mod separate;
pub mod sorted;

pub use batch::{
    bco_shift, dpo_loss, loss_values, preference_loss, BcoShift, LossValues, PairContext,
    PairLogps, RunningMean,
};
pub use metrics::{
    held_out_statistics, pair_rewards, reported_logps, standard_error, DpoMetrics, MetricSums,
};

use serde::Serialize;

/// Which preference loss to use (TRL's `loss_type` names).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LossType {
    /// The DPO paper's loss: `-logsigmoid(beta d)` (with label smoothing: cDPO).
    Sigmoid,
    /// IPO: squared distance of the per-token margin to `1/(2 beta)`.
    Ipo,
    /// SLiC's hinge: `relu(1 - beta d)`.
    Hinge,
    /// Robust DPO: unbiased under a label flip rate `e`.
    Robust,
    /// EXO: the reverse KL from the smoothed labels to the policy's pair probabilities.
    ExoPair,
    /// NCA: each response's reward against an absolute scale.
    NcaPair,
    /// BCO on pairs: a reward classifier, rewards shifted by their running mean.
    BcoPair,
    /// SPPO with hard labels: chosen log-ratio to `1/(2 beta)`, rejected to `-1/(2 beta)`.
    SppoHard,
    /// AOT: sigmoid loss on the sorted policy and reference margins of the batch.
    Aot,
    /// AOT, unpaired: sigmoid loss on the sorted chosen and rejected log-ratios.
    AotUnpaired,
    /// APO-zero: raise the chosen likelihood, lower the rejected one.
    ApoZero,
    /// APO-down: lower both, the rejected one more.
    ApoDown,
    /// DiscoPOP: logistic and exponential losses blended by the margin.
    Discopop,
    /// Sigmoid loss on the per-token mean log-ratios.
    SigmoidNorm,
    /// The NLL of the chosen responses (mean over their tokens).
    Sft,
    /// SimPO: reference-free, per-token mean log-probs, target margin gamma.
    Simpo,
    /// ORPO: the chosen sequences' NLL plus an odds-ratio term, reference-free.
    Orpo,
}

impl LossType {
    /// Every loss type, under its name (what `LossType::from_str` reads).
    pub const ALL: [(&'static str, LossType); 17] = [
        ("sigmoid", LossType::Sigmoid),
        ("ipo", LossType::Ipo),
        ("hinge", LossType::Hinge),
        ("robust", LossType::Robust),
        ("exo_pair", LossType::ExoPair),
        ("nca_pair", LossType::NcaPair),
        ("bco_pair", LossType::BcoPair),
        ("sppo_hard", LossType::SppoHard),
        ("aot", LossType::Aot),
        ("aot_unpaired", LossType::AotUnpaired),
        ("apo_zero", LossType::ApoZero),
        ("apo_down", LossType::ApoDown),
        ("discopop", LossType::Discopop),
        ("sigmoid_norm", LossType::SigmoidNorm),
        ("sft", LossType::Sft),
        ("simpo", LossType::Simpo),
        ("orpo", LossType::Orpo),
    ];

    /// The loss's name, as TRL's `loss_type` spells it.
    pub fn name(self) -> &'static str {
        Self::ALL.iter().find(|(_, t)| *t == self).unwrap().0
    }

    /// SimPO and ORPO need no reference model: their rewards are the
    /// policy's per-token mean log-probs.
    pub fn is_reference_free(self) -> bool {
        matches!(self, LossType::Simpo | LossType::Orpo)
    }
}

impl std::str::FromStr for LossType {
    type Err = LossConfigError;

    /// A loss by its name; `dpo` is accepted for `sigmoid` (the DPO paper's loss).
    fn from_str(name: &str) -> Result<Self, Self::Err> {
        let name = if name == "dpo" { "sigmoid" } else { name };
        Self::ALL
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, t)| *t)
            .ok_or_else(|| LossConfigError::UnknownLoss(name.to_string()))
    }
}

/// Why a loss configuration is refused. `Display` is one line.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum LossConfigError {
    /// A loss name that is none of [`LossType::ALL`].
    #[error("unknown loss '{0}' (expected one of {names}; dpo is sigmoid)", names = LossType::ALL.map(|(name, _)| name).join(", "))]
    UnknownLoss(String),
    /// No loss at all.
    #[error("no loss given")]
    NoLoss,
    /// The weights do not pair up with the losses.
    #[error("{losses} losses but {weights} loss weights")]
    WeightCount {
        /// Losses given.
        losses: usize,
        /// Weights given.
        weights: usize,
    },
    /// A weight that is not a finite number.
    #[error("loss weights must be finite numbers, got {0}")]
    Weight(f64),
    /// The same loss twice.
    #[error("the loss {0} is given twice")]
    Repeated(&'static str),
    /// `beta` is not a positive number.
    #[error("beta must be a positive number, got {0}")]
    Beta(f64),
    /// The label smoothing is outside `[0, 0.5)`. It is the assumed share of
    /// flipped labels: at 0.5 the labels carry no preference (and robust DPO
    /// divides by `1 - 2e = 0`), above it the preference is inverted.
    #[error("label smoothing must be in [0, 0.5) (the assumed share of flipped labels; from 0.5 on the preference is lost or inverted), got {0}")]
    LabelSmoothing(f64),
    /// EXO takes `log e`: it needs `e > 0`.
    #[error("the exo_pair loss needs a label smoothing above 0 (the EXO paper recommends 1e-3)")]
    ExoLabelSmoothing,
    /// DiscoPOP divides by tau.
    #[error("discopop's tau must be a positive number, got {0}")]
    DiscopopTau(f64),
    /// SimPO's target margin is not a finite number.
    #[error("simpo's gamma must be a finite number, got {0}")]
    SimpoGamma(f64),
    /// SimPO/ORPO mixed with a loss that needs a reference (or ORPO with anything).
    #[error("{0}")]
    Mix(&'static str),
}

/// One term of the batch loss: a loss and its weight.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct WeightedLoss {
    /// Which loss.
    pub loss_type: LossType,
    /// Its weight in the sum.
    pub weight: f64,
}

/// The loss settings.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DpoLossConfig {
    /// The terms of the batch loss, `sum_k w_k * mean_pairs(loss_k)`.
    pub losses: Vec<WeightedLoss>,
    /// The KL-penalty strength (temperature of the implicit reward); ORPO's lambda.
    pub beta: f64,
    /// Label smoothing `e` (the assumed rate of flipped preference labels).
    pub label_smoothing: f64,
    /// DiscoPOP's temperature tau (TRL's `discopop_tau`, default 0.05).
    pub discopop_tau: f64,
    /// SimPO's target reward margin gamma (TRL's `simpo_gamma`, default 0.5).
    pub simpo_gamma: f64,
    /// bco_pair shifts the rewards by their running mean over the batches
    /// (the BCO paper; TRL's DPOTrainer before 1.0). `false`: no shift, as
    /// TRL 1.16's `bco_pair`.
    pub bco_running_mean: bool,
}

impl DpoLossConfig {
    /// TRL's default DiscoPOP tau.
    pub const DISCOPOP_TAU: f64 = 0.05;
    /// TRL's default SimPO gamma.
    pub const SIMPO_GAMMA: f64 = 0.5;

    /// One loss with weight 1 and the default settings of the others.
    pub fn new(loss_type: LossType, beta: f64, label_smoothing: f64) -> Self {
        DpoLossConfig {
            losses: vec![WeightedLoss {
                loss_type,
                weight: 1.0,
            }],
            beta,
            label_smoothing,
            discopop_tau: Self::DISCOPOP_TAU,
            simpo_gamma: Self::SIMPO_GAMMA,
            bco_running_mean: true,
        }
    }

    /// Whether `loss_type` is one of the terms.
    pub fn uses(&self, loss_type: LossType) -> bool {
        self.losses.iter().any(|l| l.loss_type == loss_type)
    }

    /// SimPO or ORPO: no reference model, and the rewards are `beta` times
    /// the per-token mean log-probs (as TRL's CPO and ORPO trainers log them).
    pub fn is_reference_free(&self) -> bool {
        self.losses.iter().any(|l| l.loss_type.is_reference_free())
    }

    /// ORPO's NLL counts the prompt tokens of the chosen sequences too.
    pub fn needs_prompt_logps(&self) -> bool {
        self.uses(LossType::Orpo)
    }

    /// Whether the loss is bco_pair with its running-mean shift of the rewards.
    pub fn shifts_bco(&self) -> bool {
        self.uses(LossType::BcoPair) && self.bco_running_mean
    }

    /// The losses as `--loss` spells them, e.g. `sigmoid,sft`.
    pub fn names(&self) -> String {
        let names: Vec<&str> = self.losses.iter().map(|l| l.loss_type.name()).collect();
        names.join(",")
    }

    /// Checks the settings.
    pub fn validate(&self) -> Result<(), LossConfigError> {
        if self.losses.is_empty() {
            return Err(LossConfigError::NoLoss);
        }
        for (i, l) in self.losses.iter().enumerate() {
            if !l.weight.is_finite() {
                return Err(LossConfigError::Weight(l.weight));
            }
            if self.losses[..i].iter().any(|k| k.loss_type == l.loss_type) {
                return Err(LossConfigError::Repeated(l.loss_type.name()));
            }
        }
        if !(self.beta.is_finite() && self.beta > 0.0) {
            return Err(LossConfigError::Beta(self.beta));
        }
        let e = self.label_smoothing;
        if !(0.0..0.5).contains(&e) {
            return Err(LossConfigError::LabelSmoothing(e));
        }
        if self.uses(LossType::ExoPair) && e == 0.0 {
            return Err(LossConfigError::ExoLabelSmoothing);
        }
        if !(self.discopop_tau.is_finite() && self.discopop_tau > 0.0) {
            return Err(LossConfigError::DiscopopTau(self.discopop_tau));
        }
        if !self.simpo_gamma.is_finite() {
            return Err(LossConfigError::SimpoGamma(self.simpo_gamma));
        }
        if self.uses(LossType::Orpo) && self.losses.len() > 1 {
            return Err(LossConfigError::Mix(
                "orpo has its own NLL term and combines with no other loss",
            ));
        }
        let needs_reference =
            |l: &WeightedLoss| !l.loss_type.is_reference_free() && l.loss_type != LossType::Sft;
        if self.is_reference_free() && self.losses.iter().any(needs_reference) {
            return Err(LossConfigError::Mix(
                "simpo is reference-free and combines only with sft",
            ));
        }
        Ok(())
    }
}

/// One pair's log-probs (summed over the response tokens) and token counts.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Pair {
    /// Policy log-prob of the chosen response.
    pub policy_chosen: f64,
    /// Policy log-prob of the rejected response.
    pub policy_rejected: f64,
    /// Reference log-prob of the chosen response (0 reference-free).
    pub ref_chosen: f64,
    /// Reference log-prob of the rejected response.
    pub ref_rejected: f64,
    /// Scored tokens of the chosen response.
    pub n_chosen: f64,
    /// Scored tokens of the rejected response.
    pub n_rejected: f64,
}

impl Pair {
    /// `a = pi_c - ref_c`.
    pub fn logratio_chosen(&self) -> f64 {
        self.policy_chosen - self.ref_chosen
    }

    /// `b = pi_r - ref_r`.
    pub fn logratio_rejected(&self) -> f64 {
        self.policy_rejected - self.ref_rejected
    }
}

/// A per-pair loss and its derivatives with respect to the pair's policy
/// log-probs `pi_c` and `pi_r`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PairLoss {
    /// The loss of the pair.
    pub loss: f64,
    /// `dloss/dpi_c`.
    pub dchosen: f64,
    /// `dloss/dpi_r`.
    pub drejected: f64,
}

impl PairLoss {
    /// A loss of the margin `d = a - b` only: `dloss/dpi_c = dloss/dd = -dloss/dpi_r`.
    pub fn of_margin(loss: f64, dloss_dd: f64) -> Self {
        PairLoss {
            loss,
            dchosen: dloss_dd,
            drejected: -dloss_dd,
        }
    }
}
