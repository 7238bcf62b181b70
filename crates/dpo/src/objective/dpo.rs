//! DPO and its relatives: a policy trained on preference pairs, against a
//! frozen reference (the DPO loss types) or against none (SimPO, ORPO).
//!
//! One batch of B pairs is one forward pass: by default over B sequences
//! `[prompt | chosen | rejected]`, each prompt run once (prefix sharing,
//! [`PairLayout::SharedPrefix`]), or over 2B sequences, chosen rows first,
//! then rejected ([`PairLayout::Separate`]); both give the same log-probs.
//! The reference never changes, so its log-probs are computed once per row,
//! in no-grad mode and in the same layout, the first time a batch uses the
//! row ([`ReferenceCache`]), and looked up afterwards. Without a reference
//! they are taken as 0.

use autograd::{Float, Precision, Tape, Var};
use serde_json::{json, Value};
use transformer::{Model, ModelParams};

use super::reference_cache::ReferenceCache;
use super::{BatchLoss, Metrics, Objective};
use crate::data::{PairLayout, PreferenceRow, TrainingRow};
use crate::loss::{
    bco_shift, held_out_statistics, loss_values, preference_loss, BcoShift, DpoLossConfig,
    DpoMetrics, LossType, MetricSums, PairContext, RunningMean,
};
use crate::scoring::{score, score_pairs, ScoringBatch};

/// The metrics of every pair of `rows` under `policy` against `reference`
/// (no tape), `batch_size` pairs per forward pass; the loss is that of all
/// the rows as one batch (which matters for the batch-level terms: sft's
/// NLL, aot's sorting, bco_pair's mean reward). Run in f64 (the f32
/// checkpoints widened exactly), the metrics are those of the stored
/// weights up to f64 rounding. Both models see the pairs in `layout`.
///
/// Beside the metrics, what a held-out record adds to them: the policy's
/// own `pair_accuracy` (the share of pairs with `logp_c > logp_r`) and the
/// standard errors of the means over the pairs ([`held_out_statistics`]).
pub fn evaluate_pairs<T: Float>(
    policy: &Model<T>,
    reference: Option<&Model<T>>,
    rows: &[PreferenceRow],
    loss: &DpoLossConfig,
    batch_size: usize,
    layout: PairLayout,
) -> (DpoMetrics, Vec<(&'static str, f64)>) {
    let with_prompts = loss.needs_prompt_logps();
    let (policy_logps, prompt_logps) = score_pairs(
        policy,
        rows,
        batch_size,
        layout,
        Precision::F32,
        with_prompts,
    );
    let reference_logps = match reference {
        Some(model) => score_pairs(model, rows, batch_size, layout, Precision::F32, false).0,
        None => vec![(0.0, 0.0); rows.len()],
    };
    let context = PairContext::of_rows(rows, &reference_logps, with_prompts);
    let logps = context.with_policy(&policy_logps, &prompt_logps);
    let values = loss_values(loss, &logps, bco_shift(loss, &logps, BcoShift::BatchMean));
    let mut sums = MetricSums::default();
    sums.add(&logps, &values, loss);
    (sums.metrics(), held_out_statistics(&logps, loss).to_vec())
}

/// DPO (any of its loss types), SimPO or ORPO over preference pairs.
pub struct DpoObjective {
    loss: DpoLossConfig,
    train: Vec<PreferenceRow>,
    held_out: Vec<PreferenceRow>,
    /// The reference's `(chosen, rejected)` log-probs of each training row,
    /// filled as batches use the rows.
    train_reference: ReferenceCache,
    /// The same for the held-out rows, filled at the first evaluation.
    held_out_reference: ReferenceCache,
    eval_batch_size: usize,
    /// How pairs go through the policy and the reference.
    layout: PairLayout,
    /// bco_pair's running mean of the rewards over the training batches.
    bco_running_mean: RunningMean,
}

impl DpoObjective {
    /// DPO with `loss` on `train`, evaluated on `held_out` (`eval_batch_size`
    /// pairs per forward pass), with prefix sharing. `reference` is kept
    /// (its parameters are shared, not copied); its log-probs of a row are
    /// computed the first time the row is used. `None` is reference-free.
    pub fn new(
        loss: DpoLossConfig,
        train: Vec<PreferenceRow>,
        held_out: Vec<PreferenceRow>,
        reference: Option<&Model<f32>>,
        eval_batch_size: usize,
    ) -> Self {
        Self::with_layout(
            loss,
            train,
            held_out,
            reference,
            eval_batch_size,
            PairLayout::default(),
        )
    }

    /// [`DpoObjective::new`] with the pairs laid out as `layout` for the
    /// policy and the reference (`dpo train --prefix-sharing on|off`).
    pub fn with_layout(
        loss: DpoLossConfig,
        train: Vec<PreferenceRow>,
        held_out: Vec<PreferenceRow>,
        reference: Option<&Model<f32>>,
        eval_batch_size: usize,
        layout: PairLayout,
    ) -> Self {
        let eval_batch_size = eval_batch_size.max(1);
        DpoObjective {
            loss,
            train_reference: ReferenceCache::new(reference.cloned(), train.len(), layout),
            held_out_reference: ReferenceCache::new(reference.cloned(), held_out.len(), layout),
            train,
            held_out,
            eval_batch_size,
            layout,
            bco_running_mean: RunningMean::default(),
        }
    }

    /// The reference's `(chosen, rejected)` log-probs of the training rows
    /// `batch`, computing the ones not cached yet in one no-grad pass with
    /// its GEMMs in `precision` (the training tape's).
    pub fn train_reference_logps(
        &mut self,
        batch: &[usize],
        precision: Precision,
    ) -> Vec<(f64, f64)> {
        self.train_reference
            .get(&self.train, batch, batch.len().max(1), precision)
    }

    /// Training rows whose reference log-probs are cached so far.
    pub fn num_cached_reference_rows(&self) -> usize {
        self.train_reference.num_cached()
    }

    /// DPO with `loss` on training and held-out rows whose reference
    /// log-probs, `(chosen, rejected)` per row, are already computed
    /// (elsewhere, e.g. in shards by several processes), in `layout`.
    ///
    /// # Panics
    /// If a row count and its log-prob count differ.
    pub fn with_reference_logps(
        loss: DpoLossConfig,
        (train, train_reference): (Vec<PreferenceRow>, Vec<(f64, f64)>),
        (held_out, held_out_reference): (Vec<PreferenceRow>, Vec<(f64, f64)>),
        eval_batch_size: usize,
        layout: PairLayout,
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
            train_reference: ReferenceCache::precomputed(train_reference),
            held_out_reference: ReferenceCache::precomputed(held_out_reference),
            eval_batch_size: eval_batch_size.max(1),
            layout,
            bco_running_mean: RunningMean::default(),
        }
    }

    /// Why a batch of this loss cannot be split into parts (ranks,
    /// micro-batches) whose pair-weighted losses add up to the batch's, if
    /// it cannot: a term computed over the whole batch.
    pub fn split_refusal_of(loss: &DpoLossConfig) -> Option<String> {
        let why = |loss_type: LossType| match loss_type {
            LossType::BcoPair if loss.bco_running_mean => {
                Some("its rewards are shifted by the running mean of the batches' mean rewards")
            }
            LossType::Aot | LossType::AotUnpaired => {
                Some("it sorts the margins of the whole batch")
            }
            LossType::Sft | LossType::Orpo => {
                Some("its NLL is a mean over the chosen tokens of the whole batch, not over pairs")
            }
            _ => None,
        };
        loss.losses.iter().find_map(|term| {
            why(term.loss_type).map(|why| format!("--loss {}: {why}", term.loss_type.name()))
        })
    }

    /// Training rows plus held-out rows.
    pub fn num_rows(&self) -> usize {
        self.train.len() + self.held_out.len()
    }
}

impl Objective for DpoObjective {
    const STAGE: &'static str = "dpo";

    fn split_refusal(&self) -> Option<String> {
        Self::split_refusal_of(&self.loss)
    }

    fn train_lengths(&self) -> Vec<usize> {
        self.train.iter().map(PreferenceRow::padded_len).collect()
    }

    fn batch_loss(
        &mut self,
        model: &Model<f32>,
        tape: &Tape<f32>,
        params: &ModelParams<Var<f32>>,
        batch: &[usize],
    ) -> BatchLoss {
        let rows: Vec<PreferenceRow> = batch.iter().map(|&i| self.train[i].clone()).collect();
        let reference = self.train_reference_logps(batch, tape.precision());
        let with_prompts = self.loss.needs_prompt_logps();
        let scoring = ScoringBatch::pairs(&rows, self.layout, with_prompts);
        // Policy log-probs: (2B) = [chosen..., rejected...]; ORPO also the chosen prompts' (B).
        let scores = score(model, tape, params, &scoring);
        let context = PairContext::of_rows(&rows, &reference, with_prompts);
        let (loss, batch_logps, loss_values) = preference_loss(
            tape,
            &scores.responses,
            scores.prompts.as_ref(),
            &context,
            BcoShift::Running(&mut self.bco_running_mean),
            &self.loss,
        );
        let mut sums = MetricSums::default();
        sums.add(&batch_logps, &loss_values, &self.loss);
        BatchLoss {
            loss,
            metrics: sums.metrics().to_record(),
            tokens: rows
                .iter()
                .map(|r| {
                    let prompt_runs = match self.layout {
                        PairLayout::Separate => 2,
                        PairLayout::SharedPrefix => 1,
                    };
                    prompt_runs * r.prompt.len() + r.chosen.len() + r.rejected.len()
                })
                .sum(),
            padded_tokens: scoring.padded_tokens(),
        }
    }

    /// The metrics of the held-out pairs (as one batch), plus the policy's
    /// own `pair_accuracy`: the share of pairs whose chosen response has the
    /// higher log-probability (`logp_c > logp_r`, no reference involved),
    /// and the standard errors of the means (`*_stderr`,
    /// [`held_out_statistics`]). Held-out metrics are computed
    /// whole on one process, never merged from parts.
    /// bco_pair's shift is the running mean of training, not updated here.
    fn evaluate(&mut self, model: &Model<f32>) -> Option<Metrics> {
        if self.held_out.is_empty() {
            return None;
        }
        let with_prompts = self.loss.needs_prompt_logps();
        let (policy, prompts) = score_pairs(
            model,
            &self.held_out,
            self.eval_batch_size,
            self.layout,
            Precision::F32,
            with_prompts,
        );
        let all: Vec<usize> = (0..self.held_out.len()).collect();
        let reference =
            self.held_out_reference
                .get(&self.held_out, &all, self.eval_batch_size, Precision::F32);
        let logps = PairContext::of_rows(&self.held_out, &reference, with_prompts)
            .with_policy(&policy, &prompts);
        // Before the first training step there is no running mean yet: the
        // held-out rows' own mean reward stands in for it.
        let shift = if self.loss.shifts_bco() && self.bco_running_mean.count > 0 {
            BcoShift::Fixed(self.bco_running_mean.mean)
        } else {
            BcoShift::BatchMean
        };
        let delta = bco_shift(&self.loss, &logps, shift);
        let values = loss_values(&self.loss, &logps, delta);
        let mut sums = MetricSums::default();
        sums.add(&logps, &values, &self.loss);
        let mut metrics = sums.metrics().to_record();
        for (name, value) in held_out_statistics(&logps, &self.loss) {
            metrics.set_mean(name, value);
        }
        Some(metrics)
    }

    fn describe(&self, metrics: &Metrics) -> String {
        let mut line = format!(
            "loss {:.4}, rewards/accuracies {:.3}, rewards/margins {:.4}",
            metrics.get("loss"),
            metrics.get("rewards/accuracies"),
            metrics.get("rewards/margins"),
        );
        if metrics.contains("pair_accuracy") {
            line += &format!(", pair accuracy {:.3}", metrics.get("pair_accuracy"));
        }
        if metrics.contains("rewards/accuracies_stderr") {
            line += &format!(
                " (standard errors: accuracies {:.3}, margins {:.4})",
                metrics.get("rewards/accuracies_stderr"),
                metrics.get("rewards/margins_stderr"),
            );
        }
        line
    }

    /// bco_pair's running mean, when the loss keeps one, and the reference
    /// log-probs cached so far, when there is a reference.
    fn state(&self) -> Option<Value> {
        let mut state = serde_json::Map::new();
        if self.loss.shifts_bco() {
            state.insert("bco_running_mean".into(), json!(self.bco_running_mean));
        }
        if self.train_reference.is_lazy() {
            state.insert("reference_logps".into(), self.train_reference.state());
            state.insert(
                "reference_precision".into(),
                json!(self.train_reference.precision().name()),
            );
        }
        (!state.is_empty()).then_some(Value::Object(state))
    }

    fn restore_state(&mut self, state: &Value) -> Result<(), String> {
        if self.loss.shifts_bco() {
            let running = state
                .get("bco_running_mean")
                .ok_or("the saved objective state has no bco_running_mean")?;
            self.bco_running_mean = serde_json::from_value(running.clone())
                .map_err(|e| format!("bco_running_mean: {e}"))?;
        }
        if let Some(cached) = state.get("reference_logps") {
            if self.train_reference.is_lazy() {
                // States saved before bf16 existed hold f32 values.
                let precision = match state.get("reference_precision") {
                    Some(name) => name
                        .as_str()
                        .ok_or("reference_precision: not a string")?
                        .parse()?,
                    None => Precision::F32,
                };
                self.train_reference.restore(cached, precision)?;
            }
        }
        Ok(())
    }
}
