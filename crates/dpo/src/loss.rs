//! The DPO family of losses and the metrics reported with them.
//!
//! For a pair with policy log-probs `pi_c`, `pi_r` (summed over the response
//! tokens) and reference log-probs `ref_c`, `ref_r`:
//!
//! ```text
//! d = (pi_c - ref_c) - (pi_r - ref_r)          the implicit reward margin / beta
//! sigmoid:  -(1-e) logsig(beta d) - e logsig(-beta d)            DPO; conservative DPO for e > 0
//! hinge:    relu(1 - beta d)                                     SLiC
//! ipo:      (d' - 1/(2 beta))^2,  d' from per-token mean log-probs: (pi_c-ref_c)/n_c - (pi_r-ref_r)/n_r
//! robust:   ((1-e) (-logsig(beta d)) + e logsig(-beta d)) / (1 - 2e)
//! ```
//!
//! the batch loss being the mean over pairs. These are TRL `DPOTrainer`'s
//! formulas (up to its 0.28 release); `docs/dpo.md` derives them.
//!
//! The loss is one fused op on the tape: its input is the policy log-probs
//! of the `2B` sequences (chosen first, then rejected), its output the
//! scalar loss, and its backward is `dloss/dpi` written out below.

use autograd::ops::elementwise::{logsigmoid, sigmoid};
use autograd::{Float, Tape, Tensor, Var};
use ndarray::IxDyn;
use serde::Serialize;

/// Which DPO-family loss to use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LossType {
    /// The DPO paper's loss: `-logsigmoid(beta d)` (with label smoothing: cDPO).
    Sigmoid,
    /// IPO: squared distance of the per-token margin to `1/(2 beta)`.
    Ipo,
    /// SLiC's hinge: `relu(1 - beta d)`.
    Hinge,
    /// Robust DPO: unbiased under a label flip rate `e`.
    Robust,
}

impl LossType {
    /// Every loss type, under its name (what `LossType::from_str` reads).
    pub const ALL: [(&'static str, LossType); 4] = [
        ("sigmoid", LossType::Sigmoid),
        ("ipo", LossType::Ipo),
        ("hinge", LossType::Hinge),
        ("robust", LossType::Robust),
    ];

    /// The loss's name, as TRL's `loss_type` spells it.
    pub fn name(self) -> &'static str {
        Self::ALL.iter().find(|(_, t)| *t == self).unwrap().0
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
    #[error("unknown loss '{0}' (expected one of sigmoid (or dpo), ipo, hinge, robust)")]
    UnknownLoss(String),
    /// `beta` is not a positive number.
    #[error("beta must be a positive number, got {0}")]
    Beta(f64),
    /// The label smoothing is outside `[0, 0.5)`. It is the assumed share of
    /// flipped labels: at 0.5 the labels carry no preference (and robust DPO
    /// divides by `1 - 2e = 0`), above it the preference is inverted.
    #[error("label smoothing must be in [0, 0.5) (the assumed share of flipped labels; from 0.5 on the preference is lost or inverted), got {0}")]
    LabelSmoothing(f64),
}

/// The loss settings.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct DpoLossConfig {
    /// Which loss.
    pub loss_type: LossType,
    /// The KL-penalty strength (temperature of the implicit reward).
    pub beta: f64,
    /// Label smoothing `e` (the assumed rate of flipped preference labels).
    pub label_smoothing: f64,
}

impl DpoLossConfig {
    /// Checks the settings.
    pub fn validate(&self) -> Result<(), LossConfigError> {
        if !(self.beta.is_finite() && self.beta > 0.0) {
            return Err(LossConfigError::Beta(self.beta));
        }
        let e = self.label_smoothing;
        if !(0.0..0.5).contains(&e) {
            return Err(LossConfigError::LabelSmoothing(e));
        }
        Ok(())
    }

    /// Per-pair loss and its derivatives `(loss, dloss/dpi_c, dloss/dpi_r)`.
    ///
    /// `logratio_c = pi_c - ref_c`, `logratio_r = pi_r - ref_r`; `n_c`, `n_r`
    /// the scored tokens of each response (for IPO).
    pub fn pair_loss(
        &self,
        logratio_c: f64,
        logratio_r: f64,
        n_c: f64,
        n_r: f64,
    ) -> (f64, f64, f64) {
        let (beta, e) = (self.beta, self.label_smoothing);
        let d = logratio_c - logratio_r;
        // For the losses of d: dloss/dpi_c = dloss/dd, dloss/dpi_r = -dloss/dd.
        let of_margin = |loss: f64, dloss_dd: f64| (loss, dloss_dd, -dloss_dd);
        match self.loss_type {
            LossType::Sigmoid => {
                // d/dz logsig(z) = sigmoid(-z)
                let loss = -(1.0 - e) * logsigmoid(beta * d) - e * logsigmoid(-beta * d);
                let dloss_dd =
                    -(1.0 - e) * beta * sigmoid(-beta * d) + e * beta * sigmoid(beta * d);
                of_margin(loss, dloss_dd)
            }
            LossType::Hinge => {
                let slack = 1.0 - beta * d;
                if slack > 0.0 {
                    of_margin(slack, -beta)
                } else {
                    of_margin(0.0, 0.0)
                }
            }
            LossType::Ipo => {
                let gap = logratio_c / n_c - logratio_r / n_r - 1.0 / (2.0 * beta);
                (gap * gap, 2.0 * gap / n_c, -2.0 * gap / n_r)
            }
            LossType::Robust => {
                let loss = ((1.0 - e) * -logsigmoid(beta * d) + e * logsigmoid(-beta * d))
                    / (1.0 - 2.0 * e);
                let dloss_dd = (-(1.0 - e) * beta * sigmoid(-beta * d)
                    - e * beta * sigmoid(beta * d))
                    / (1.0 - 2.0 * e);
                of_margin(loss, dloss_dd)
            }
        }
    }
}

/// The log-probs of one batch of pairs, in f64.
#[derive(Debug, Clone, Default)]
pub struct PairLogps {
    /// Policy log-probs of the chosen responses (B).
    pub policy_chosen: Vec<f64>,
    /// Policy log-probs of the rejected responses (B).
    pub policy_rejected: Vec<f64>,
    /// Reference log-probs of the chosen responses (B); zeros when reference-free.
    pub ref_chosen: Vec<f64>,
    /// Reference log-probs of the rejected responses (B).
    pub ref_rejected: Vec<f64>,
    /// Scored tokens of each chosen response (B).
    pub n_chosen: Vec<usize>,
    /// Scored tokens of each rejected response (B).
    pub n_rejected: Vec<usize>,
}

/// The DPO loss as one op on the tape.
///
/// policy_logps: (2B) = [chosen..., rejected...]; `reference` has the same
/// layout (all zeros for reference-free DPO); `scored` the number of scored
/// tokens per sequence (2B). Returns the mean loss over the B pairs.
pub fn dpo_loss<T: Float>(
    tape: &Tape<T>,
    policy_logps: &Var<T>,
    reference: &[f64],
    scored: &[usize],
    config: &DpoLossConfig,
) -> Var<T> {
    let n = policy_logps.value().len();
    assert!(
        n.is_multiple_of(2) && reference.len() == n && scored.len() == n,
        "dpo_loss: policy log-probs {:?}, {} reference log-probs and {} counts do not match (expected 2B each)",
        policy_logps.shape(),
        reference.len(),
        scored.len()
    );
    let pairs = n / 2;
    let pi: Vec<f64> = policy_logps.value().iter().map(|v| v.as_f64()).collect();
    let mut total = 0.0;
    let mut dpi = vec![0.0; n];
    for i in 0..pairs {
        let (c, r) = (i, pairs + i);
        let (loss, dc, dr) = config.pair_loss(
            pi[c] - reference[c],
            pi[r] - reference[r],
            scored[c] as f64,
            scored[r] as f64,
        );
        total += loss;
        dpi[c] = dc / pairs as f64;
        dpi[r] = dr / pairs as f64;
    }
    let loss = Tensor::from_elem(IxDyn(&[]), T::cast(total / pairs as f64));
    tape.record("dpo_loss", loss, &[policy_logps], move |dloss| {
        let g = dloss.iter().next().unwrap().as_f64();
        let grad = dpi.iter().map(|&d| T::cast(g * d)).collect();
        vec![Some(Tensor::from_shape_vec(IxDyn(&[n]), grad).unwrap())]
    })
}

/// Sums of the per-pair metrics, so that batches can be merged exactly.
#[derive(Debug, Clone, Default)]
pub struct MetricSums {
    /// Number of pairs.
    pub pairs: usize,
    /// Sum of per-pair losses.
    pub loss: f64,
    /// Sum of `beta (pi_c - ref_c)`.
    pub rewards_chosen: f64,
    /// Sum of `beta (pi_r - ref_r)`.
    pub rewards_rejected: f64,
    /// Pairs whose chosen reward is above the rejected one.
    pub correct: usize,
    /// Sum of `pi_c`.
    pub logps_chosen: f64,
    /// Sum of `pi_r`.
    pub logps_rejected: f64,
}

impl MetricSums {
    /// Adds one batch of pairs.
    pub fn add(&mut self, logps: &PairLogps, config: &DpoLossConfig) {
        for i in 0..logps.policy_chosen.len() {
            let ratio_c = logps.policy_chosen[i] - logps.ref_chosen[i];
            let ratio_r = logps.policy_rejected[i] - logps.ref_rejected[i];
            let (loss, _, _) = config.pair_loss(
                ratio_c,
                ratio_r,
                logps.n_chosen[i] as f64,
                logps.n_rejected[i] as f64,
            );
            let (reward_c, reward_r) = (config.beta * ratio_c, config.beta * ratio_r);
            self.pairs += 1;
            self.loss += loss;
            self.rewards_chosen += reward_c;
            self.rewards_rejected += reward_r;
            self.correct += usize::from(reward_c > reward_r);
            self.logps_chosen += logps.policy_chosen[i];
            self.logps_rejected += logps.policy_rejected[i];
        }
    }

    /// The means, under the names the ecosystem (TRL) uses.
    pub fn metrics(&self) -> DpoMetrics {
        let n = self.pairs.max(1) as f64;
        DpoMetrics {
            loss: self.loss / n,
            rewards_chosen: self.rewards_chosen / n,
            rewards_rejected: self.rewards_rejected / n,
            rewards_accuracies: self.correct as f64 / n,
            rewards_margins: (self.rewards_chosen - self.rewards_rejected) / n,
            logps_chosen: self.logps_chosen / n,
            logps_rejected: self.logps_rejected / n,
            num_pairs: self.pairs,
        }
    }
}

impl DpoMetrics {
    /// The metrics as one record of named values (the metrics log's form).
    pub fn to_record(&self) -> crate::objective::Metrics {
        match serde_json::to_value(self) {
            Ok(serde_json::Value::Object(record)) => record,
            _ => unreachable!("DpoMetrics serializes to an object"),
        }
    }
}

/// The metrics of a set of pairs (means over pairs).
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq)]
pub struct DpoMetrics {
    /// Mean loss.
    pub loss: f64,
    /// Mean implicit reward of the chosen responses, `beta (pi_c - ref_c)`.
    #[serde(rename = "rewards/chosen")]
    pub rewards_chosen: f64,
    /// Mean implicit reward of the rejected responses.
    #[serde(rename = "rewards/rejected")]
    pub rewards_rejected: f64,
    /// Share of pairs whose chosen reward is higher.
    #[serde(rename = "rewards/accuracies")]
    pub rewards_accuracies: f64,
    /// Mean of chosen minus rejected reward.
    #[serde(rename = "rewards/margins")]
    pub rewards_margins: f64,
    /// Mean policy log-prob of the chosen responses.
    #[serde(rename = "logps/chosen")]
    pub logps_chosen: f64,
    /// Mean policy log-prob of the rejected responses.
    #[serde(rename = "logps/rejected")]
    pub logps_rejected: f64,
    /// Number of pairs.
    pub num_pairs: usize,
}
