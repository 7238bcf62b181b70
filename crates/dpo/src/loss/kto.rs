//! KTO: Kahneman-Tversky Optimization (Ethayarajh et al. 2024) on unpaired
//! rows, each completion labelled desirable or undesirable, as TRL's
//! `KTOTrainer` computes it (`loss_type="kto"`, trl 1.16).
//!
//! For a batch of B rows with policy log-probs `pi_i` and reference log-probs
//! `ref_i` of their completions (summed over the completion tokens), and the
//! same for B mismatched "KL" sequences (row i's prompt with another row's
//! completion, `pi_kl_i`, `ref_kl_i`):
//!
//! ```text
//! r_i  = pi_i - ref_i                                    the log-ratio (implicit reward / beta)
//! kl   = max(0, mean_i (pi_kl_i - ref_kl_i))             the batch KL estimate, detached
//! desirable:    l_i = 1 - sigmoid(beta (r_i - kl))
//! undesirable:  l_i = 1 - sigmoid(beta (kl - r_i))
//! loss = (1/B) (sum_desirable w_d l_i + sum_undesirable w_u l_i)
//! ```
//!
//! The derivative, with `z_i` the argument of the sigmoid and
//! `sigmoid'(z) = sigmoid(z) sigmoid(-z)` (`kl` is a constant: no gradient
//! reaches the KL sequences):
//!
//! ```text
//! desirable:    dloss/dpi_i = -(w_d / B) beta sigmoid(z_i) sigmoid(-z_i)
//! undesirable:  dloss/dpi_i = +(w_u / B) beta sigmoid(z_i) sigmoid(-z_i)
//! ```
//!
//! `docs/dpo.md` (KTO) explains what the terms are for.

use autograd::ops::elementwise::sigmoid;
use autograd::{Float, Tape, Tensor, Var};
use ndarray::IxDyn;
use serde::Serialize;

/// Why a KTO configuration is refused. `Display` is one line.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum KtoConfigError {
    /// `beta` is not a positive number.
    #[error("beta must be a positive number, got {0}")]
    Beta(f64),
    /// A class weight that is negative or not finite.
    #[error("the {which} weight must be a non-negative number, got {value}")]
    Weight {
        /// `desirable` or `undesirable`.
        which: &'static str,
        /// The value given.
        value: f64,
    },
}

/// The KTO loss settings (TRL's `KTOConfig` names).
#[derive(Debug, Clone, Copy, Serialize)]
pub struct KtoConfig {
    /// Temperature of the implicit reward `beta log(pi/ref)`.
    pub beta: f64,
    /// Weight of the losses of desirable rows (TRL's `desirable_weight`).
    pub desirable_weight: f64,
    /// Weight of the losses of undesirable rows (TRL's `undesirable_weight`).
    pub undesirable_weight: f64,
}

impl Default for KtoConfig {
    /// TRL's defaults: beta 0.1, both weights 1.
    fn default() -> Self {
        KtoConfig {
            beta: 0.1,
            desirable_weight: 1.0,
            undesirable_weight: 1.0,
        }
    }
}

impl KtoConfig {
    /// Checks the settings.
    pub fn validate(&self) -> Result<(), KtoConfigError> {
        if !(self.beta.is_finite() && self.beta > 0.0) {
            return Err(KtoConfigError::Beta(self.beta));
        }
        for (which, value) in [
            ("desirable", self.desirable_weight),
            ("undesirable", self.undesirable_weight),
        ] {
            if !(value.is_finite() && value >= 0.0) {
                return Err(KtoConfigError::Weight { which, value });
            }
        }
        Ok(())
    }

    /// One row's weighted loss and its derivative `(w l, d(w l)/dpi)`, for
    /// the log-ratio `r = pi - ref` against the batch KL estimate `kl`.
    pub fn row_loss(&self, logratio: f64, desirable: bool, kl: f64) -> (f64, f64) {
        let beta = self.beta;
        // z = beta (r - kl) for a desirable row, beta (kl - r) for an undesirable one.
        let (weight, z, dz_dr) = if desirable {
            (self.desirable_weight, beta * (logratio - kl), beta)
        } else {
            (self.undesirable_weight, beta * (kl - logratio), -beta)
        };
        // 1 - sigmoid(z) = sigmoid(-z): no cancellation when sigmoid(z) is near 1.
        let loss = sigmoid(-z);
        let dloss_dz = -sigmoid(z) * sigmoid(-z);
        (weight * loss, weight * dloss_dz * dz_dr)
    }
}

/// The batch KL estimate of KTO: the mean log-ratio of the mismatched KL
/// sequences, clamped at 0 (TRL's `(KL_logps - ref_KL_logps).mean().clamp(min=0)`).
/// A plain number: the loss treats it as a constant (TRL detaches it).
///
/// Panics if the slices differ in length or are empty.
pub fn batch_kl(policy_kl: &[f64], reference_kl: &[f64]) -> f64 {
    assert!(
        !policy_kl.is_empty() && policy_kl.len() == reference_kl.len(),
        "batch_kl: {} policy and {} reference log-probs (expected the same, at least 1)",
        policy_kl.len(),
        reference_kl.len()
    );
    let sum: f64 = policy_kl.iter().zip(reference_kl).map(|(p, r)| p - r).sum();
    (sum / policy_kl.len() as f64).max(0.0)
}

/// The KTO loss as one op on the tape.
///
/// policy_logps: (B) the policy log-probs of the batch's completions;
/// `reference` (B) their reference log-probs; `desirable` (B) the labels;
/// `kl` the batch KL estimate ([`batch_kl`]). Returns the scalar
/// `(1/B) sum_i w_i l_i`, whose backward is `dloss/dpi` of the module docs.
pub fn kto_loss<T: Float>(
    tape: &Tape<T>,
    policy_logps: &Var<T>,
    reference: &[f64],
    desirable: &[bool],
    kl: f64,
    config: &KtoConfig,
) -> Var<T> {
    let n = policy_logps.value().len();
    assert!(
        n > 0 && reference.len() == n && desirable.len() == n,
        "kto_loss: policy log-probs {:?}, {} reference log-probs and {} labels do not match (expected B >= 1 each)",
        policy_logps.shape(),
        reference.len(),
        desirable.len()
    );
    let pi: Vec<f64> = policy_logps.value().iter().map(|v| v.as_f64()).collect();
    let mut total = 0.0;
    let mut dpi = vec![0.0; n]; // (B) dloss/dpi
    for i in 0..n {
        let (loss, dloss) = config.row_loss(pi[i] - reference[i], desirable[i], kl);
        total += loss;
        dpi[i] = dloss / n as f64;
    }
    let loss = Tensor::from_elem(IxDyn(&[]), T::cast(total / n as f64));
    tape.record("kto_loss", loss, &[policy_logps], move |dloss| {
        let g = dloss.iter().next().unwrap().as_f64();
        let grad = dpi.iter().map(|&d| T::cast(g * d)).collect();
        vec![Some(Tensor::from_shape_vec(IxDyn(&[n]), grad).unwrap())]
    })
}

/// The log-probs of one batch of unpaired rows, in f64.
#[derive(Debug, Clone, Default)]
pub struct UnpairedLogps {
    /// Policy log-probs of the completions (B).
    pub policy: Vec<f64>,
    /// Reference log-probs of the completions (B).
    pub reference: Vec<f64>,
    /// Policy log-probs of the KL sequences (B).
    pub policy_kl: Vec<f64>,
    /// Reference log-probs of the KL sequences (B).
    pub reference_kl: Vec<f64>,
    /// The labels: true for a desirable completion (B).
    pub desirable: Vec<bool>,
}

/// Sums over rows (and batches) of what KTO reports, so that batches merge exactly.
#[derive(Debug, Clone, Default)]
pub struct KtoMetricSums {
    /// Rows.
    pub rows: usize,
    /// Batches (each with its own KL estimate).
    pub batches: usize,
    /// Sum of the weighted per-row losses.
    pub loss: f64,
    /// Sum of the batch KL estimates.
    pub kl: f64,
    /// Desirable rows.
    pub desirable: usize,
    /// Undesirable rows.
    pub undesirable: usize,
    /// Sum of `beta (pi - ref)` over desirable rows.
    pub rewards_chosen: f64,
    /// Sum of `beta (pi - ref)` over undesirable rows.
    pub rewards_rejected: f64,
    /// Sum of `pi` over desirable rows.
    pub logps_chosen: f64,
    /// Sum of `pi` over undesirable rows.
    pub logps_rejected: f64,
}

impl KtoMetricSums {
    /// Adds one batch, with its own KL estimate ([`batch_kl`]).
    pub fn add_batch(&mut self, logps: &UnpairedLogps, config: &KtoConfig) {
        let kl = batch_kl(&logps.policy_kl, &logps.reference_kl);
        self.batches += 1;
        self.kl += kl;
        for i in 0..logps.policy.len() {
            let logratio = logps.policy[i] - logps.reference[i];
            let (loss, _) = config.row_loss(logratio, logps.desirable[i], kl);
            self.rows += 1;
            self.loss += loss;
            let reward = config.beta * logratio;
            if logps.desirable[i] {
                self.desirable += 1;
                self.rewards_chosen += reward;
                self.logps_chosen += logps.policy[i];
            } else {
                self.undesirable += 1;
                self.rewards_rejected += reward;
                self.logps_rejected += logps.policy[i];
            }
        }
    }

    /// The means, under TRL's names. As TRL logs them, the `chosen` metrics
    /// are absent when no row is desirable, the `rejected` ones when none is
    /// undesirable, and `rewards/margins` unless there are both.
    pub fn metrics(&self) -> KtoMetrics {
        let mean = |sum: f64, n: usize| (n > 0).then(|| sum / n as f64);
        let rewards_chosen = mean(self.rewards_chosen, self.desirable);
        let rewards_rejected = mean(self.rewards_rejected, self.undesirable);
        KtoMetrics {
            loss: self.loss / self.rows.max(1) as f64,
            rewards_chosen,
            rewards_rejected,
            rewards_margins: rewards_chosen.zip(rewards_rejected).map(|(c, r)| c - r),
            logps_chosen: mean(self.logps_chosen, self.desirable),
            logps_rejected: mean(self.logps_rejected, self.undesirable),
            kl: self.kl / self.batches.max(1) as f64,
            num_desirable: self.desirable,
            num_undesirable: self.undesirable,
        }
    }
}

/// The KTO metrics of a set of rows, under TRL's names.
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq)]
pub struct KtoMetrics {
    /// Mean weighted loss over rows.
    pub loss: f64,
    /// Mean implicit reward `beta (pi - ref)` of the desirable rows.
    #[serde(rename = "rewards/chosen", skip_serializing_if = "Option::is_none")]
    pub rewards_chosen: Option<f64>,
    /// Mean implicit reward of the undesirable rows.
    #[serde(rename = "rewards/rejected", skip_serializing_if = "Option::is_none")]
    pub rewards_rejected: Option<f64>,
    /// `rewards/chosen - rewards/rejected`.
    #[serde(rename = "rewards/margins", skip_serializing_if = "Option::is_none")]
    pub rewards_margins: Option<f64>,
    /// Mean policy log-prob of the desirable completions.
    #[serde(rename = "logps/chosen", skip_serializing_if = "Option::is_none")]
    pub logps_chosen: Option<f64>,
    /// Mean policy log-prob of the undesirable completions.
    #[serde(rename = "logps/rejected", skip_serializing_if = "Option::is_none")]
    pub logps_rejected: Option<f64>,
    /// The batch KL estimate (the mean over batches, for several).
    pub kl: f64,
    /// Desirable rows.
    pub num_desirable: usize,
    /// Undesirable rows.
    pub num_undesirable: usize,
}

impl KtoMetrics {
    /// The metrics as one record of named values (the metrics log's form).
    pub fn to_record(&self) -> crate::objective::Metrics {
        crate::objective::Metrics::of(self)
    }
}
