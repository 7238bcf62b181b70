//! The gradient of one optimizer step, on any number of ranks and
//! micro-batches (the split: [`super::split`]).
//!
//! ```text
//! global batch (B rows, planned the same on every rank), weight W
//!   rank r's share, cut into --grad-accum K micro-batches
//!   for each micro-batch m of weight w_m:       fresh tape, forward, backward
//!       g_r += (w_m / W) grad loss_m             a share of 1 is no multiplication
//!   g = g_0 + g_1 + ... + g_{N-1}                Collective::sum_f32: rank order, same bits everywhere
//!   loss, metrics, tokens: the micro-batches' records, exchanged and merged in order
//! ```
//!
//! One rank with one micro-batch is the ordinary step, bit for bit: a
//! single backward pass, nothing scaled, nothing exchanged.

use anyhow::{Context, Result};
use autograd::ops::elementwise::splitmix64;
use autograd::{Precision, Tape, Tensor};
use dpo::objective::{MetricValue, Metrics, Objective};
use serde::{Deserialize, Serialize};

use transformer::Model;

use super::distributed::Collective;
use super::settings::TrainHyper;
use super::split::{merge_parts, micro_batches, MergedStep, PartRecord};

/// The summed gradient of one step, the same on every rank, and what the
/// whole batch measured.
pub struct StepGradient {
    /// One gradient per parameter, in the model's canonical order.
    pub grads: Vec<Tensor<f32>>,
    /// The batch's loss (before the update), metrics and tokens.
    pub batch: MergedStep,
}

/// Refuses to split batches (ranks, micro-batches) when the loss is not a
/// weighted mean over rows: `refusal` says why
/// ([`Objective::split_refusal`]). One line, before any work.
pub fn check_split(
    refusal: Option<String>,
    hyper: &TrainHyper,
    comm: &dyn Collective,
) -> Result<()> {
    if let Some(reason) = refusal {
        let ranks = comm.ranks();
        anyhow::ensure!(
            ranks == 1 && hyper.grad_accum == 1,
            "{reason}, so it trains on one rank with --grad-accum 1 only (here {ranks} rank{}, --grad-accum {})",
            if ranks == 1 { "" } else { "s" },
            hyper.grad_accum
        );
    }
    Ok(())
}

/// The seed of one micro-batch's dropout masks: the step's seed mixed with
/// the micro-batch's place among all ranks' micro-batches, so that no two
/// micro-batches of a run share a mask.
fn micro_batch_seed(step_seed: u64, rank: usize, micro: usize) -> u64 {
    splitmix64(step_seed ^ ((rank as u64) << 32 | micro as u64))
}

/// The gradient of the loss of the global `batch` with respect to `model`'s
/// trainable parameters ([`Model::trainable_params`]: all of them, or its
/// LoRA adapters): this rank's micro-batches run one after the other (one
/// tape alive at a time, its GEMMs in `precision`), then the ranks'
/// gradients are summed. `step_seed` seeds the adapters' dropout, if any.
#[allow(clippy::too_many_arguments)]
pub fn step_gradient<O: Objective>(
    objective: &mut O,
    model: &Model<f32>,
    batch: &[usize],
    grad_accum: usize,
    precision: Precision,
    step_seed: u64,
    comm: &dyn Collective,
) -> Result<StepGradient> {
    let batch_weight = objective.batch_weight(batch);
    let mut grads: Option<Vec<Tensor<f32>>> = None;
    let mut parts = Vec::new();
    let micros = micro_batches(batch, comm.rank(), comm.ranks(), grad_accum);
    for (index, micro) in micros.into_iter().enumerate() {
        let share = if micro.len() == batch.len() {
            1.0
        } else {
            objective.batch_weight(micro) / batch_weight
        };
        let tape = Tape::<f32>::new().with_precision(precision);
        let seed = micro_batch_seed(step_seed, comm.rank(), index);
        let params = model.bind_for_training(&tape, seed);
        let out = objective.batch_loss(model, &tape, &params, micro);
        let mut store = tape.backward(&out.loss);
        let mut micro_grads: Vec<_> = model
            .trainable_vars(&params)
            .into_iter()
            .map(|p| store.take_or_zeros(p))
            .collect();
        if share != 1.0 {
            let share = share as f32;
            micro_grads
                .iter_mut()
                .for_each(|g| g.mapv_inplace(|x| x * share));
        }
        match grads.as_mut() {
            None => grads = Some(micro_grads),
            Some(sum) => sum.iter_mut().zip(&micro_grads).for_each(|(s, g)| *s += g),
        }
        parts.push(PartRecord {
            share,
            loss: out.loss.item() as f64,
            metrics: out.metrics,
            tokens: out.tokens,
            padded_tokens: out.padded_tokens,
        });
    }
    // A rank whose share of a short batch is empty adds zeros.
    let mut grads = grads.unwrap_or_else(|| {
        model
            .trainable_params()
            .into_iter()
            .map(|p| Tensor::zeros(p.raw_dim()))
            .collect()
    });
    sum_over_ranks(comm, &mut grads);
    let parts = exchange_parts(comm, parts)?;
    Ok(StepGradient {
        grads,
        batch: merge_parts(&parts),
    })
}

/// Replaces each rank's gradients by their sum over the ranks (one buffer,
/// one collective call).
fn sum_over_ranks(comm: &dyn Collective, grads: &mut [Tensor<f32>]) {
    if comm.ranks() == 1 {
        return;
    }
    let mut flat: Vec<f32> = grads.iter().flat_map(|g| g.iter().copied()).collect();
    comm.sum_f32(&mut flat);
    let mut summed = flat.into_iter();
    for g in grads.iter_mut() {
        g.iter_mut().zip(&mut summed).for_each(|(x, s)| *x = s);
    }
}

/// A metric value between ranks: floats as their bits, so that they arrive
/// exactly (JSON text would round them) and NaN arrives as NaN.
#[derive(Serialize, Deserialize)]
enum WireValue {
    Count(u64),
    Bits(u64),
}

/// A [`PartRecord`] between ranks.
#[derive(Serialize, Deserialize)]
struct WirePart {
    share: u64,
    loss: u64,
    metrics: Vec<(String, WireValue)>,
    tokens: usize,
    padded_tokens: usize,
}

impl WirePart {
    fn from_part(part: &PartRecord) -> Self {
        let value = |v: MetricValue| match v {
            MetricValue::Count(count) => WireValue::Count(count),
            MetricValue::Mean(mean) => WireValue::Bits(mean.to_bits()),
        };
        WirePart {
            share: part.share.to_bits(),
            loss: part.loss.to_bits(),
            metrics: part
                .metrics
                .iter()
                .map(|(name, v)| (name.to_string(), value(v)))
                .collect(),
            tokens: part.tokens,
            padded_tokens: part.padded_tokens,
        }
    }

    fn into_part(self) -> PartRecord {
        let mut metrics = Metrics::new();
        for (name, v) in self.metrics {
            let value = match v {
                WireValue::Count(count) => MetricValue::Count(count),
                WireValue::Bits(bits) => MetricValue::Mean(f64::from_bits(bits)),
            };
            metrics.set(&name, value);
        }
        PartRecord {
            share: f64::from_bits(self.share),
            loss: f64::from_bits(self.loss),
            metrics,
            tokens: self.tokens,
            padded_tokens: self.padded_tokens,
        }
    }
}

/// Every rank's micro-batch records, in rank order (the global order of the
/// micro-batches), on every rank.
fn exchange_parts(comm: &dyn Collective, local: Vec<PartRecord>) -> Result<Vec<PartRecord>> {
    if comm.ranks() == 1 {
        return Ok(local);
    }
    let wire: Vec<WirePart> = local.iter().map(WirePart::from_part).collect();
    let bytes = serde_json::to_vec(&wire)?;
    let mut all = Vec::new();
    for (rank, rank_bytes) in comm.all_gather_bytes(&bytes).iter().enumerate() {
        let records: Vec<WirePart> = serde_json::from_slice(rank_bytes)
            .with_context(|| format!("the step records of rank {rank} are unreadable"))?;
        all.extend(records.into_iter().map(WirePart::into_part));
    }
    Ok(all)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::trainer::distributed::SingleProcess;
    use autograd::Precision::F32;
    use dpo::data::{PreferenceRow, SftRow};
    use dpo::loss::{DpoLossConfig, LossType, WeightedLoss};
    use dpo::objective::{DpoObjective, SftObjective};
    use transformer::ModelConfig;

    fn model() -> Model<f32> {
        let config = ModelConfig {
            vocab_size: 32,
            block_size: 16,
            n_layer: 2,
            n_head: 2,
            n_embd: 16,
            bias: true,
            llama: None,
        };
        Model::new(config.clone(), 7)
    }

    /// Rows of uneven lengths, so micro-batches pad differently and SFT's
    /// token weights differ from row counts.
    fn pairs() -> Vec<PreferenceRow> {
        (0..7u32)
            .map(|i| PreferenceRow {
                prompt: (0..1 + i % 3).map(|t| (t * 5 + i) % 32).collect(),
                chosen: (0..2 + i % 4).map(|t| (t * 3 + i) % 32).collect(),
                rejected: (0..1 + (i + 1) % 5).map(|t| (t * 7 + 2 * i) % 32).collect(),
                line: i as usize + 1,
            })
            .collect()
    }

    /// The worst relative difference of two gradients, over their tensors.
    fn worst_relative_diff(a: &[Tensor<f32>], b: &[Tensor<f32>]) -> f64 {
        a.iter()
            .zip(b)
            .map(|(x, y)| {
                let diff: f64 = x.iter().zip(y).map(|(p, q)| ((p - q) as f64).powi(2)).sum();
                let norm: f64 = y.iter().map(|q| (*q as f64).powi(2)).sum();
                (diff / norm.max(1e-30)).sqrt()
            })
            .fold(0.0, f64::max)
    }

    /// For each --grad-accum K, the K micro-batches' gradient and merged
    /// loss equal one backward pass over the whole batch.
    fn accumulation_matches_whole_batch<O: Objective>(objective: &mut O, rows: usize) {
        let model = model();
        let batch: Vec<usize> = (0..rows).rev().collect();
        let whole = step_gradient(objective, &model, &batch, 1, F32, 0, &SingleProcess).unwrap();
        for grad_accum in [2, 3, rows, rows + 2] {
            let split = step_gradient(
                objective,
                &model,
                &batch,
                grad_accum,
                F32,
                0,
                &SingleProcess,
            )
            .unwrap();
            let diff = worst_relative_diff(&split.grads, &whole.grads);
            assert!(
                diff < 1e-5,
                "--grad-accum {grad_accum}: gradient off by {diff:e}"
            );
            let loss_diff = (split.batch.loss - whole.batch.loss).abs();
            assert!(
                loss_diff < 1e-6 * whole.batch.loss.abs(),
                "--grad-accum {grad_accum}: loss"
            );
            assert_eq!(split.batch.tokens, whole.batch.tokens);
        }
    }

    #[test]
    fn dpo_gradient_accumulation_equals_the_whole_batch() {
        let loss = DpoLossConfig::new(LossType::Sigmoid, 0.5, 0.0);
        let reference = Model::<f32>::new(model().config().clone(), 11);
        let mut objective = DpoObjective::new(loss, pairs(), vec![], Some(&reference), 4);
        accumulation_matches_whole_batch(&mut objective, 7);
        let merged = step_gradient(
            &mut objective,
            &model(),
            &[0, 1, 2, 3, 4],
            2,
            F32,
            0,
            &SingleProcess,
        )
        .unwrap()
        .batch;
        assert_eq!(
            merged.metrics.value("num_pairs"),
            Some(MetricValue::Count(5))
        );
    }

    #[test]
    fn sft_gradient_accumulation_weights_micro_batches_by_scored_tokens() {
        let rows: Vec<SftRow> = pairs()
            .into_iter()
            .map(|p| SftRow {
                prompt: p.prompt,
                completion: p.chosen,
                line: p.line,
                completion_mask: None,
            })
            .collect();
        let mut objective = SftObjective::new(rows, vec![], 4);
        accumulation_matches_whole_batch(&mut objective, 7);
    }

    #[test]
    fn one_rank_one_micro_batch_scales_nothing() {
        let model = model();
        let rows: Vec<SftRow> = (0..3)
            .map(|i| SftRow {
                prompt: vec![1, 2],
                completion: vec![3 + i, 4],
                line: 1,
                completion_mask: None,
            })
            .collect();
        let mut objective = SftObjective::new(rows.clone(), vec![], 4);
        let step = step_gradient(
            &mut objective,
            &model,
            &[0, 1, 2],
            1,
            F32,
            0,
            &SingleProcess,
        )
        .unwrap();
        // The plain step of the loop before data parallelism.
        let tape = Tape::<f32>::new();
        let params = model.bind(&tape);
        let out = objective.batch_loss(&model, &tape, &params, &[0, 1, 2]);
        let mut store = tape.backward(&out.loss);
        for (p, g) in params.iter().zip(&step.grads) {
            assert_eq!(&store.take_or_zeros(p), g);
        }
        assert_eq!(
            step.batch.loss.to_bits(),
            (out.loss.item() as f64).to_bits()
        );
    }

    #[test]
    fn records_cross_between_ranks_exactly() {
        let mut metrics = Metrics::new();
        metrics.set_mean("loss", 0.1 + 0.2);
        metrics.set("num_pairs", MetricValue::Count(3));
        metrics.set_mean("rewards/margins", f64::NAN);
        let part = PartRecord {
            share: 1.0 / 3.0,
            loss: f64::NAN,
            metrics,
            tokens: 7,
            padded_tokens: 9,
        };
        let bytes = serde_json::to_vec(&WirePart::from_part(&part)).unwrap();
        let back = serde_json::from_slice::<WirePart>(&bytes)
            .unwrap()
            .into_part();
        assert!(back.loss.is_nan());
        assert_eq!(back.share.to_bits(), part.share.to_bits());
        let bits = |m: &Metrics| -> Vec<(String, u64)> {
            m.iter()
                .map(|(n, v)| (n.to_string(), v.as_f64().to_bits()))
                .collect()
        };
        assert_eq!(bits(&back.metrics), bits(&part.metrics));
        assert_eq!((back.tokens, back.padded_tokens), (7, 9));
    }

    #[test]
    fn batch_level_losses_are_refused_on_split_batches_only() {
        use crate::trainer::{OptimizerKind, ScheduleKind};
        use dpo::objective::KtoObjective;
        let mut hyper = TrainHyper {
            steps: 1,
            batch_size: 4,
            grad_accum: 1,
            lr: 0.1,
            optimizer: OptimizerKind::Sgd,
            weight_decay: 0.0,
            max_grad_norm: 0.0,
            warmup_steps: 0,
            schedule: ScheduleKind::Constant,
            seed: 0,
        };
        let kto = || Some(KtoObjective::SPLIT_REFUSAL.to_string());
        assert!(check_split(kto(), &hyper, &SingleProcess).is_ok());
        hyper.grad_accum = 2;
        let error = check_split(kto(), &hyper, &SingleProcess).unwrap_err();
        assert!(error.to_string().contains("KL estimate"), "{error}");
        assert!(check_split(None, &hyper, &SingleProcess).is_ok());
        // DPO: refused for a term over the whole batch, not for per-pair losses.
        let dpo = |names: &str, bco_running_mean: bool| {
            let loss = DpoLossConfig {
                losses: names
                    .split(',')
                    .map(|name| WeightedLoss {
                        loss_type: name.parse().unwrap(),
                        weight: 1.0,
                    })
                    .collect(),
                bco_running_mean,
                ..DpoLossConfig::new(LossType::Sigmoid, 0.1, 0.0)
            };
            DpoObjective::split_refusal_of(&loss)
        };
        assert_eq!(dpo("sigmoid,ipo,hinge,simpo,nca_pair", true), None);
        assert_eq!(dpo("bco_pair", false), None);
        for batch_level in [
            "bco_pair",
            "aot",
            "aot_unpaired",
            "sft",
            "orpo",
            "sigmoid,sft",
        ] {
            let refusal = dpo(batch_level, true);
            assert!(refusal.is_some(), "{batch_level}");
            assert!(check_split(refusal, &hyper, &SingleProcess).is_err());
        }
    }
}
