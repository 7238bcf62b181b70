//! The metrics of a set of pairs, under the names TRL logs them.
//!
//! The rewards are `beta (pi - ref)` of the summed log-probs for every DPO
//! loss type (TRL's DPOTrainer); for SimPO and ORPO, which have no
//! reference, `beta` times the per-token mean log-probs, and `logps/*` are
//! those means (TRL's CPO and ORPO trainers).

use serde::Serialize;

use super::{DpoLossConfig, LossValues, Pair, PairLogps};

/// Sums of the per-pair metrics, so that batches can be merged exactly.
#[derive(Debug, Clone, Default)]
pub struct MetricSums {
    /// Number of pairs.
    pub pairs: usize,
    /// Sum over batches of the batch loss times its pairs.
    pub loss: f64,
    /// Sum of the chosen rewards.
    pub rewards_chosen: f64,
    /// Sum of the rejected rewards.
    pub rewards_rejected: f64,
    /// Pairs whose chosen reward is above the rejected one.
    pub correct: usize,
    /// Sum of the chosen log-probs (per-token means for SimPO/ORPO).
    pub logps_chosen: f64,
    /// Sum of the rejected log-probs.
    pub logps_rejected: f64,
    /// Sums, weighted by pairs, of the metrics only some losses have.
    nll_loss: Option<f64>,
    log_odds_ratio: Option<f64>,
    log_odds_chosen: Option<f64>,
}

/// Adds `value * pairs` to an optional sum.
fn add_weighted(sum: &mut Option<f64>, value: Option<f64>, pairs: usize) {
    if let Some(v) = value {
        *sum = Some(sum.unwrap_or(0.0) + v * pairs as f64);
    }
}

/// The log-probs the metrics report for a pair: the summed `(pi_c, pi_r)`,
/// or for SimPO and ORPO the per-token means `(pi_c / n_c, pi_r / n_r)`.
pub fn reported_logps(config: &DpoLossConfig, pair: &Pair) -> (f64, f64) {
    if config.is_reference_free() {
        (
            pair.policy_chosen / pair.n_chosen,
            pair.policy_rejected / pair.n_rejected,
        )
    } else {
        (pair.policy_chosen, pair.policy_rejected)
    }
}

/// The chosen and rejected rewards of a pair: `beta (pi - ref)`, or for
/// SimPO and ORPO `beta` times the per-token mean log-probs.
pub fn pair_rewards(config: &DpoLossConfig, pair: &Pair) -> (f64, f64) {
    if config.is_reference_free() {
        let (u_c, u_r) = reported_logps(config, pair);
        (config.beta * u_c, config.beta * u_r)
    } else {
        (
            config.beta * pair.logratio_chosen(),
            config.beta * pair.logratio_rejected(),
        )
    }
}

/// The standard error of the mean of `values`: their sample standard
/// deviation over `sqrt(n)` (0 for fewer than two values). Of 0/1 values
/// (a share of pairs) it is `sqrt(p (1 - p) / (n - 1))`.
pub fn standard_error(values: &[f64]) -> f64 {
    let n = values.len();
    if n < 2 {
        return 0.0;
    }
    let mean = values.iter().sum::<f64>() / n as f64;
    let squares: f64 = values.iter().map(|v| (v - mean) * (v - mean)).sum();
    (squares / (n - 1) as f64 / n as f64).sqrt()
}

/// What a held-out evaluation reports beside [`DpoMetrics`]: the policy's
/// own `pair_accuracy`, the share of pairs with `logp_c > logp_r` (summed
/// log-probs, no reference), and the standard errors of the mean rewards,
/// reward margin, reward accuracy and `pair_accuracy`, under the names of
/// the metrics with `_stderr` added: the noise of held-out figures.
pub fn held_out_statistics(logps: &PairLogps, config: &DpoLossConfig) -> [(&'static str, f64); 6] {
    let pairs: Vec<Pair> = (0..logps.num_pairs()).map(|i| logps.pair(i)).collect();
    let rewards: Vec<(f64, f64)> = pairs.iter().map(|p| pair_rewards(config, p)).collect();
    let margins: Vec<f64> = rewards.iter().map(|(c, r)| c - r).collect();
    let correct: Vec<f64> = rewards
        .iter()
        .map(|(c, r)| f64::from(u8::from(c > r)))
        .collect();
    let preferred: Vec<f64> = pairs
        .iter()
        .map(|p| f64::from(u8::from(p.policy_chosen > p.policy_rejected)))
        .collect();
    let chosen: Vec<f64> = rewards.iter().map(|r| r.0).collect();
    let rejected: Vec<f64> = rewards.iter().map(|r| r.1).collect();
    let pair_accuracy = preferred.iter().sum::<f64>() / preferred.len().max(1) as f64;
    [
        ("pair_accuracy", pair_accuracy),
        ("rewards/chosen_stderr", standard_error(&chosen)),
        ("rewards/rejected_stderr", standard_error(&rejected)),
        ("rewards/margins_stderr", standard_error(&margins)),
        ("rewards/accuracies_stderr", standard_error(&correct)),
        ("pair_accuracy_stderr", standard_error(&preferred)),
    ]
}

impl MetricSums {
    /// Adds one batch of pairs with its loss values (see [`super::loss_values`]).
    pub fn add(&mut self, logps: &PairLogps, values: &LossValues, config: &DpoLossConfig) {
        let b = logps.num_pairs();
        for i in 0..b {
            let p = logps.pair(i);
            let (logp_c, logp_r) = reported_logps(config, &p);
            let (reward_c, reward_r) = pair_rewards(config, &p);
            self.rewards_chosen += reward_c;
            self.rewards_rejected += reward_r;
            self.correct += usize::from(reward_c > reward_r);
            self.logps_chosen += logp_c;
            self.logps_rejected += logp_r;
        }
        self.pairs += b;
        self.loss += values.loss * b as f64;
        add_weighted(&mut self.nll_loss, values.nll_loss, b);
        add_weighted(&mut self.log_odds_ratio, values.log_odds_ratio, b);
        add_weighted(&mut self.log_odds_chosen, values.log_odds_chosen, b);
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
            nll_loss: self.nll_loss.map(|v| v / n),
            log_odds_ratio: self.log_odds_ratio.map(|v| v / n),
            log_odds_chosen: self.log_odds_chosen.map(|v| v / n),
        }
    }
}

impl DpoMetrics {
    /// The metrics as one record of named values (the metrics log's form).
    pub fn to_record(&self) -> crate::objective::Metrics {
        crate::objective::Metrics::of(self)
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
    /// The NLL term of sft (`--rpo-alpha`) and orpo.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nll_loss: Option<f64>,
    /// ORPO: mean `logsigmoid(log_odds)`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub log_odds_ratio: Option<f64>,
    /// ORPO: mean log odds ratio.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub log_odds_chosen: Option<f64>,
}
