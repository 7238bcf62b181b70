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
use transformer::{Gpt, GptParams};

use super::reference_cache::ReferenceCache;
use super::{metric, BatchLoss, Metrics, Objective};
use crate::data::{scored_tokens, PairInputs, PairLayout, PreferenceRow, TrainingRow};
use crate::logps::{
    pair_and_prompt_logps_no_grad, pair_inputs_and_prompt_logps, pair_inputs_logps,
    pair_logps_no_grad,
};
use crate::loss::{
    loss_values, preference_loss, DpoLossConfig, DpoMetrics, LossType, MetricSums, PairLogps,
    RunningMean,
};

/// Assembles [`PairLogps`] from per-row `(chosen, rejected)` log-probs, and
/// the chosen prompts' log-probs when the loss needs them (ORPO).
fn pair_logps_of(
    rows: &[PreferenceRow],
    policy: &[(f64, f64)],
    reference: &[(f64, f64)],
    prompt: Option<&[f64]>,
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
        prompt_chosen: prompt.map(<[f64]>::to_vec).unwrap_or_default(),
        n_prompt: match prompt {
            Some(_) => rows
                .iter()
                .map(|r| r.prompt.len().saturating_sub(1))
                .collect(),
            None => Vec::new(),
        },
    }
}

/// The reference log-probs of `rows`, `(chosen, rejected)` per row: zeros
/// without a reference (reference-free DPO, SimPO, ORPO).
fn reference_logps<T: Float>(
    reference: Option<&Gpt<T>>,
    rows: &[PreferenceRow],
    batch_size: usize,
    layout: PairLayout,
) -> Vec<(f64, f64)> {
    match reference {
        Some(model) => pair_logps_no_grad(model, rows, batch_size, layout),
        None => vec![(0.0, 0.0); rows.len()],
    }
}

/// The policy's log-probs of `rows` in no-grad mode, `(chosen, rejected)`
/// per row, with the chosen prompts' log-probs when the loss needs them.
fn policy_logps<T: Float>(
    policy: &Gpt<T>,
    rows: &[PreferenceRow],
    loss: &DpoLossConfig,
    batch_size: usize,
    layout: PairLayout,
) -> (Vec<(f64, f64)>, Option<Vec<f64>>) {
    if loss.needs_prompt_logps() {
        let (pairs, prompts) = pair_and_prompt_logps_no_grad(policy, rows, batch_size, layout);
        (pairs, Some(prompts))
    } else {
        (pair_logps_no_grad(policy, rows, batch_size, layout), None)
    }
}

/// Whether the loss is bco_pair with its running-mean shift.
fn shifts_bco(loss: &DpoLossConfig) -> bool {
    loss.uses(LossType::BcoPair) && loss.bco_running_mean
}

/// bco_pair's reward shift for a batch: its running mean after this
/// batch's mean reward is added (`running`, while training), or this
/// batch's mean reward alone (`None`, e.g. `dpo eval`); 0 when the
/// loss does not use it.
fn bco_delta(loss: &DpoLossConfig, logps: &PairLogps, running: Option<&mut RunningMean>) -> f64 {
    if !shifts_bco(loss) {
        return 0.0;
    }
    let batch_mean = logps.mean_reward(loss.beta);
    match running {
        Some(running) => running.update(batch_mean),
        None => batch_mean,
    }
}

/// The metrics of every pair of `rows` under `policy` against `reference`
/// (no tape), `batch_size` pairs per forward pass; the loss is that of all
/// the rows as one batch (which matters for the batch-level terms: sft's
/// NLL, aot's sorting, bco_pair's mean reward). Run in f64 (the f32
/// checkpoints widened exactly), the metrics are those of the stored
/// weights up to f64 rounding. Both models see the pairs in `layout`.
pub fn evaluate_pairs<T: Float>(
    policy: &Gpt<T>,
    reference: Option<&Gpt<T>>,
    rows: &[PreferenceRow],
    loss: &DpoLossConfig,
    batch_size: usize,
    layout: PairLayout,
) -> DpoMetrics {
    let (policy_logps, prompt_logps) = policy_logps(policy, rows, loss, batch_size, layout);
    let reference_logps = reference_logps(reference, rows, batch_size, layout);
    let logps = pair_logps_of(
        rows,
        &policy_logps,
        &reference_logps,
        prompt_logps.as_deref(),
    );
    let values = loss_values(loss, &logps, bco_delta(loss, &logps, None));
    let mut sums = MetricSums::default();
    sums.add(&logps, &values, loss);
    sums.metrics()
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
        reference: Option<&Gpt<f32>>,
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
        reference: Option<&Gpt<f32>>,
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
        model: &Gpt<f32>,
        tape: &Tape<f32>,
        params: &GptParams<Var<f32>>,
        batch: &[usize],
    ) -> BatchLoss {
        let rows: Vec<PreferenceRow> = batch.iter().map(|&i| self.train[i].clone()).collect();
        let reference = self.train_reference_logps(batch, tape.precision());
        let pairs = PairInputs::collate(&rows, self.layout);
        let b = pairs.num_pairs();

        // Policy log-probs: (2B) = [chosen..., rejected...]; ORPO also the chosen prompts' (B).
        let (logps, prompt_logps) = if self.loss.needs_prompt_logps() {
            let (logps, prompt) = pair_inputs_and_prompt_logps(model, tape, params, &pairs, &rows);
            (logps, Some(prompt))
        } else {
            (pair_inputs_logps(model, tape, params, &pairs), None)
        };
        let values = |v: &Var<f32>| -> Vec<f64> { v.value().iter().map(|&x| x as f64).collect() };
        let flat = values(&logps);
        let policy: Vec<(f64, f64)> = (0..b).map(|i| (flat[i], flat[b + i])).collect();
        let prompt = prompt_logps.as_ref().map(values);
        let batch_logps = pair_logps_of(&rows, &policy, &reference, prompt.as_deref());
        let delta = bco_delta(&self.loss, &batch_logps, Some(&mut self.bco_running_mean));
        let (loss, loss_values) = preference_loss(
            tape,
            &logps,
            prompt_logps.as_ref(),
            &batch_logps,
            delta,
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
            padded_tokens: pairs.padded_tokens(),
        }
    }

    /// The metrics of the held-out pairs (as one batch), plus the policy's
    /// own `pair_accuracy`: the share of pairs whose chosen response has the
    /// higher log-probability (`logp_c > logp_r`, no reference involved).
    /// bco_pair's shift is the running mean of training, not updated here.
    fn evaluate(&mut self, model: &Gpt<f32>) -> Option<Metrics> {
        if self.held_out.is_empty() {
            return None;
        }
        let (policy, prompt) = policy_logps(
            model,
            &self.held_out,
            &self.loss,
            self.eval_batch_size,
            self.layout,
        );
        let all: Vec<usize> = (0..self.held_out.len()).collect();
        let reference =
            self.held_out_reference
                .get(&self.held_out, &all, self.eval_batch_size, Precision::F32);
        let logps = pair_logps_of(&self.held_out, &policy, &reference, prompt.as_deref());
        // Before the first training step there is no running mean yet: the
        // held-out rows' own mean reward stands in for it.
        let delta = if shifts_bco(&self.loss) && self.bco_running_mean.count > 0 {
            self.bco_running_mean.mean
        } else {
            bco_delta(&self.loss, &logps, None)
        };
        let values = loss_values(&self.loss, &logps, delta);
        let mut sums = MetricSums::default();
        sums.add(&logps, &values, &self.loss);
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

    /// bco_pair's running mean, when the loss keeps one, and the reference
    /// log-probs cached so far, when there is a reference.
    fn state(&self) -> Option<Value> {
        let mut state = serde_json::Map::new();
        if shifts_bco(&self.loss) {
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
        if shifts_bco(&self.loss) {
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
