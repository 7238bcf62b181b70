//! KTO: a policy trained on unpaired, labelled completions against a frozen
//! reference ([`crate::loss::kto`]).
//!
//! Every row comes with a KL sequence: its prompt followed by another row's
//! completion, the pairing TRL builds ([`crate::data::kl_partners`]: the
//! completions rotated by one within each chunk of `batch_size` rows, in
//! order). The reference never changes, so its log-probs of both sequences
//! of every row are computed once, in no-grad mode, when the objective is
//! built. A training step runs the policy on the batch's completions (on the
//! tape) and on their KL sequences (no tape: the KL estimate is a constant).

use autograd::{Float, Precision, Tape, Var};
use transformer::{Model, ModelParams};

use super::{BatchLoss, Metrics, Objective};
use crate::data::{kl_sequences, SftRow, UnpairedRow};
use crate::loss::kto::{batch_kl, kto_loss, KtoConfig, KtoMetricSums, KtoMetrics, UnpairedLogps};
use crate::scoring::{score, score_sequences, ScoringBatch};

/// Unpaired rows laid out for KTO: the two sequences of each row, its label,
/// and (once computed) the reference's log-probs of both.
struct KtoRows {
    /// `prompt + completion` of each row.
    sequences: Vec<SftRow>,
    /// `prompt + the partner's completion` of each row.
    kl_sequences: Vec<SftRow>,
    /// The labels.
    desirable: Vec<bool>,
    /// The reference's log-prob of each row's completion.
    reference: Vec<f64>,
    /// The reference's log-prob of each row's KL completion.
    reference_kl: Vec<f64>,
}

impl KtoRows {
    /// The rows, their KL pairing in chunks of `kl_batch_size`, and the
    /// reference's log-probs of both sequences (`eval_batch_size` sequences
    /// per no-grad forward).
    fn new<T: Float>(
        rows: &[UnpairedRow],
        kl_batch_size: usize,
        reference: &Model<T>,
        eval_batch_size: usize,
    ) -> Self {
        let block_size = reference.config().block_size;
        let sequences: Vec<SftRow> = rows.iter().map(UnpairedRow::to_sequence).collect();
        let kl_sequences = kl_sequences(rows, kl_batch_size, block_size);
        KtoRows {
            reference: score_sequences(reference, &sequences, eval_batch_size, Precision::F32),
            reference_kl: score_sequences(
                reference,
                &kl_sequences,
                eval_batch_size,
                Precision::F32,
            ),
            desirable: rows.iter().map(|r| r.desirable).collect(),
            sequences,
            kl_sequences,
        }
    }

    fn len(&self) -> usize {
        self.sequences.len()
    }

    /// The metrics of `policy` on every row, one KL estimate per chunk of
    /// `kl_batch_size` rows (the chunks the KL sequences were paired in).
    fn metrics<T: Float>(
        &self,
        policy: &Model<T>,
        config: &KtoConfig,
        kl_batch_size: usize,
        eval_batch_size: usize,
    ) -> KtoMetrics {
        let policy_logps =
            score_sequences(policy, &self.sequences, eval_batch_size, Precision::F32);
        let policy_kl =
            score_sequences(policy, &self.kl_sequences, eval_batch_size, Precision::F32);
        let mut sums = KtoMetricSums::default();
        for start in (0..self.len()).step_by(kl_batch_size.max(1)) {
            let chunk = start..(start + kl_batch_size.max(1)).min(self.len());
            sums.add_batch(
                &UnpairedLogps {
                    policy: policy_logps[chunk.clone()].to_vec(),
                    reference: self.reference[chunk.clone()].to_vec(),
                    policy_kl: policy_kl[chunk.clone()].to_vec(),
                    reference_kl: self.reference_kl[chunk.clone()].to_vec(),
                    desirable: self.desirable[chunk].to_vec(),
                },
                config,
            );
        }
        sums.metrics()
    }
}

/// The KTO metrics of every row of `rows` under `policy` against
/// `reference` (no tape): the KL sequences are paired in chunks of
/// `batch_size` rows, in order, and each chunk is one batch with its own KL
/// estimate. Run in f64, the metrics are those of the stored weights.
pub fn evaluate_unpaired<T: Float>(
    policy: &Model<T>,
    reference: &Model<T>,
    rows: &[UnpairedRow],
    config: &KtoConfig,
    batch_size: usize,
) -> KtoMetrics {
    let batch_size = batch_size.max(1);
    KtoRows::new(rows, batch_size, reference, batch_size)
        .metrics(policy, config, batch_size, batch_size)
}

/// KTO over unpaired rows, against a cached reference.
pub struct KtoObjective {
    config: KtoConfig,
    train: KtoRows,
    held_out: KtoRows,
    /// The chunk size of the KL pairing: the training batch size.
    kl_batch_size: usize,
    eval_batch_size: usize,
}

impl KtoObjective {
    /// Why a KTO batch cannot be split over ranks or micro-batches.
    pub const SPLIT_REFUSAL: &'static str =
        "--loss kto: its KL estimate is one number over the whole batch, not a sum over its rows";

    /// KTO with `config` on `train`, evaluated on `held_out`. The KL
    /// sequences are paired in chunks of `batch_size` rows (the training
    /// batch size, as TRL does, for both sets); the reference's log-probs of
    /// every sequence are computed here, once, `eval_batch_size` per forward.
    pub fn new(
        config: KtoConfig,
        train: &[UnpairedRow],
        held_out: &[UnpairedRow],
        reference: &Model<f32>,
        batch_size: usize,
        eval_batch_size: usize,
    ) -> Self {
        let eval_batch_size = eval_batch_size.max(1);
        let kl_batch_size = batch_size.max(1);
        KtoObjective {
            config,
            train: KtoRows::new(train, kl_batch_size, reference, eval_batch_size),
            held_out: KtoRows::new(held_out, kl_batch_size, reference, eval_batch_size),
            kl_batch_size,
            eval_batch_size,
        }
    }

    /// Training rows plus held-out rows.
    pub fn num_rows(&self) -> usize {
        self.train.len() + self.held_out.len()
    }
}

impl Objective for KtoObjective {
    const STAGE: &'static str = "kto";

    fn split_refusal(&self) -> Option<String> {
        Some(Self::SPLIT_REFUSAL.into())
    }

    fn train_lengths(&self) -> Vec<usize> {
        self.train
            .sequences
            .iter()
            .map(SftRow::sequence_len)
            .collect()
    }

    fn batch_loss(
        &mut self,
        model: &Model<f32>,
        tape: &Tape<f32>,
        params: &ModelParams<Var<f32>>,
        batch: &[usize],
    ) -> BatchLoss {
        let rows = &self.train;
        let pick = |values: &[f64]| batch.iter().map(|&i| values[i]).collect::<Vec<f64>>();
        let sequences: Vec<SftRow> = batch.iter().map(|&i| rows.sequences[i].clone()).collect();
        let kl_sequences: Vec<SftRow> = batch
            .iter()
            .map(|&i| rows.kl_sequences[i].clone())
            .collect();
        let desirable: Vec<bool> = batch.iter().map(|&i| rows.desirable[i]).collect();
        let (reference, reference_kl) = (pick(&rows.reference), pick(&rows.reference_kl));

        // The KL sequences: policy log-probs without a tape (the estimate is detached).
        let policy_kl = score_sequences(model, &kl_sequences, batch.len(), tape.precision());
        let kl = batch_kl(&policy_kl, &reference_kl);

        let scoring = ScoringBatch::sequences(&sequences);
        let logps = score(model, tape, params, &scoring).responses; // (B)
        let loss = kto_loss(tape, &logps, &reference, &desirable, kl, &self.config);

        let policy: Vec<f64> = logps.value().iter().map(|&v| v as f64).collect();
        let mut sums = KtoMetricSums::default();
        sums.add_batch(
            &UnpairedLogps {
                policy,
                reference,
                policy_kl,
                reference_kl,
                desirable,
            },
            &self.config,
        );
        let longest_kl = kl_sequences
            .iter()
            .map(SftRow::sequence_len)
            .max()
            .unwrap_or(0);
        BatchLoss {
            loss,
            metrics: sums.metrics().to_record(),
            tokens: sequences
                .iter()
                .chain(&kl_sequences)
                .map(SftRow::sequence_len)
                .sum(),
            padded_tokens: scoring.padded_tokens() + batch.len() * longest_kl,
        }
    }

    fn evaluate(&mut self, model: &Model<f32>) -> Option<Metrics> {
        if self.held_out.len() == 0 {
            return None;
        }
        let metrics = self.held_out.metrics(
            model,
            &self.config,
            self.kl_batch_size,
            self.eval_batch_size,
        );
        Some(metrics.to_record())
    }

    fn describe(&self, metrics: &Metrics) -> String {
        let mut line = format!(
            "loss {:.4}, kl {:.4}",
            metrics.get("loss"),
            metrics.get("kl")
        );
        if metrics.contains("rewards/margins") {
            line += &format!(", rewards/margins {:.4}", metrics.get("rewards/margins"));
        }
        line
    }
}
