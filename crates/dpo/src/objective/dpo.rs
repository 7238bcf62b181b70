//! DPO: a policy trained on preference pairs against a frozen reference.
//!
//! One batch of B pairs is one forward pass over 2B sequences (chosen rows
//! first, then rejected). The reference never changes, so its log-probs are
//! computed once per row, in no-grad mode, when the objective is built, and
//! looked up by row afterwards. Reference-free DPO takes them as 0.

use autograd::{Float, Tape, Var};
use serde_json::json;
use transformer::{Gpt, GptParams};

use super::{metric, BatchLoss, Metrics, Objective};
use crate::data::{collate_pairs, scored_tokens, PreferenceRow, TrainingRow};
use crate::logps::{pair_logps, pair_logps_no_grad};
use crate::loss::{dpo_loss, DpoLossConfig, DpoMetrics, MetricSums, PairLogps};

/// Assembles [`PairLogps`] from per-row `(chosen, rejected)` log-probs.
fn pair_logps_of(
    rows: &[PreferenceRow],
    policy: &[(f64, f64)],
    reference: &[(f64, f64)],
) -> PairLogps {
    PairLogps {
        policy_chosen: policy.iter().map(|p| p.0).collect(),
        policy_rejected: policy.iter().map(|p| p.1).collect(),
        ref_chosen: reference.iter().map(|r| r.0).collect(),
        ref_rejected: reference.iter().map(|r| r.1).collect(),
        n_chosen: rows
            .iter()
            .map(|r| scored_tokens(&r.prompt, &r.chosen))
            .collect(),
        n_rejected: rows
            .iter()
            .map(|r| scored_tokens(&r.prompt, &r.rejected))
            .collect(),
    }
}

/// The reference log-probs of `rows`, `(chosen, rejected)` per row: zeros
/// without a reference (reference-free DPO).
fn reference_logps<T: Float>(
    reference: Option<&Gpt<T>>,
    rows: &[PreferenceRow],
    batch_size: usize,
) -> Vec<(f64, f64)> {
    match reference {
        Some(model) => pair_logps_no_grad(model, rows, batch_size),
        None => vec![(0.0, 0.0); rows.len()],
    }
}

/// The metrics of every pair of `rows` under `policy` against `reference`
/// (no tape), `batch_size` pairs per forward pass. Run in f64 (the f32
/// checkpoints widened exactly), the metrics are those of the stored weights
/// up to f64 rounding.
pub fn evaluate_pairs<T: Float>(
    policy: &Gpt<T>,
    reference: Option<&Gpt<T>>,
    rows: &[PreferenceRow],
    loss: &DpoLossConfig,
    batch_size: usize,
) -> DpoMetrics {
    let policy_logps = pair_logps_no_grad(policy, rows, batch_size);
    let reference_logps = reference_logps(reference, rows, batch_size);
    let mut sums = MetricSums::default();
    sums.add(&pair_logps_of(rows, &policy_logps, &reference_logps), loss);
    sums.metrics()
}

/// DPO (any of its loss types) over preference pairs.
pub struct DpoObjective {
    loss: DpoLossConfig,
    train: Vec<PreferenceRow>,
    held_out: Vec<PreferenceRow>,
    /// The reference's `(chosen, rejected)` log-probs of each training row.
    train_reference: Vec<(f64, f64)>,
    /// The same for the held-out rows.
    held_out_reference: Vec<(f64, f64)>,
    eval_batch_size: usize,
}

impl DpoObjective {
    /// DPO with `loss` on `train`, evaluated on `held_out`. The reference's
    /// log-probs of every row are computed here, once, `eval_batch_size`
    /// pairs per forward pass; `None` is reference-free DPO.
    pub fn new(
        loss: DpoLossConfig,
        train: Vec<PreferenceRow>,
        held_out: Vec<PreferenceRow>,
        reference: Option<&Gpt<f32>>,
        eval_batch_size: usize,
    ) -> Self {
        let eval_batch_size = eval_batch_size.max(1);
        DpoObjective {
            loss,
            train_reference: reference_logps(reference, &train, eval_batch_size),
            held_out_reference: reference_logps(reference, &held_out, eval_batch_size),
            train,
            held_out,
            eval_batch_size,
        }
    }

    /// DPO with `loss` on training and held-out rows whose reference
    /// log-probs, `(chosen, rejected)` per row, are already computed
    /// (elsewhere, e.g. in shards by several processes).
    ///
    /// # Panics
    /// If a row count and its log-prob count differ.
    pub fn with_reference_logps(
        loss: DpoLossConfig,
        (train, train_reference): (Vec<PreferenceRow>, Vec<(f64, f64)>),
        (held_out, held_out_reference): (Vec<PreferenceRow>, Vec<(f64, f64)>),
        eval_batch_size: usize,
    ) -> Self {
        assert_eq!(
            train.len(),
            train_reference.len(),
            "one reference pair per training row"
        );
        assert_eq!(
            held_out.len(),
            held_out_reference.len(),
            "one reference pair per held-out row"
        );
        DpoObjective {
            loss,
            train,
            held_out,
            train_reference,
            held_out_reference,
            eval_batch_size: eval_batch_size.max(1),
        }
    }

    /// Training rows plus held-out rows.
    pub fn num_rows(&self) -> usize {
        self.train.len() + self.held_out.len()
    }
}

impl Objective for DpoObjective {
    const STAGE: &'static str = "dpo";

    fn train_lengths(&self) -> Vec<usize> {
        self.train.iter().map(PreferenceRow::padded_len).collect()
    }

    fn batch_loss(
        &mut self,
        model: &Gpt<f32>,
        tape: &Tape<f32>,
        params: &GptParams<Var<f32>>,
        batch: &[usize],
    ) -> BatchLoss {
        let rows: Vec<PreferenceRow> = batch.iter().map(|&i| self.train[i].clone()).collect();
        let reference: Vec<(f64, f64)> = batch.iter().map(|&i| self.train_reference[i]).collect();
        let pairs = collate_pairs(&rows);
        let b = pairs.num_pairs;
        // Reference log-probs in the batch's layout: (2B) = [chosen..., rejected...].
        let reference_flat: Vec<f64> = reference
            .iter()
            .map(|r| r.0)
            .chain(reference.iter().map(|r| r.1))
            .collect();

        let logps = pair_logps(model, tape, params, &pairs); // (2B)
        let loss = dpo_loss(
            tape,
            &logps,
            &reference_flat,
            &pairs.scored_tokens,
            &self.loss,
        );
        let policy: Vec<(f64, f64)> = {
            let values = logps.value();
            let values = values.as_slice().expect("log-probs are contiguous");
            (0..b)
                .map(|i| (values[i] as f64, values[b + i] as f64))
                .collect()
        };
        let mut sums = MetricSums::default();
        sums.add(&pair_logps_of(&rows, &policy, &reference), &self.loss);
        BatchLoss {
            loss,
            metrics: sums.metrics().to_record(),
            tokens: rows
                .iter()
                .map(|r| 2 * r.prompt.len() + r.chosen.len() + r.rejected.len())
                .sum(),
            padded_tokens: 2 * b * pairs.seq_len,
        }
    }

    /// The DPO metrics of the held-out pairs, plus the policy's own
    /// `pair_accuracy`: the share of pairs whose chosen response has the
    /// higher log-probability (`logp_c > logp_r`, no reference involved).
    fn evaluate(&mut self, model: &Gpt<f32>) -> Option<Metrics> {
        if self.held_out.is_empty() {
            return None;
        }
        let policy = pair_logps_no_grad(model, &self.held_out, self.eval_batch_size);
        let mut sums = MetricSums::default();
        sums.add(
            &pair_logps_of(&self.held_out, &policy, &self.held_out_reference),
            &self.loss,
        );
        let preferred = policy.iter().filter(|(c, r)| c > r).count();
        let mut metrics = sums.metrics().to_record();
        metrics.insert(
            "pair_accuracy".into(),
            json!(preferred as f64 / self.held_out.len() as f64),
        );
        Some(metrics)
    }

    fn describe(&self, metrics: &Metrics) -> String {
        let mut line = format!(
            "loss {:.4}, rewards/accuracies {:.3}, rewards/margins {:.4}",
            metric(metrics, "loss"),
            metric(metrics, "rewards/accuracies"),
            metric(metrics, "rewards/margins"),
        );
        if metrics.contains_key("pair_accuracy") {
            line += &format!(", pair accuracy {:.3}", metric(metrics, "pair_accuracy"));
        }
        line
    }
}
