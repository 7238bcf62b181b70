//! Supervised fine-tuning, the usual first stage before DPO.
//!
//! The loss is the mean next-token cross-entropy over every scored completion
//! token of the batch (PyTorch's `cross_entropy(..., ignore_index=-100)`):
//!
//! ```text
//! loss = -(1/N) sum_{scored (s,t)} log softmax(logits[s,t])[y_{s,t}]  =  -(1/N) sum_s logp[s]
//! ```
//!
//! so it is [`crate::scoring::score`] of the completions, as for DPO: the
//! summed log-prob of each sequence, added up and divided by the number of
//! scored tokens.

use autograd::{Float, Tape, Var};
use transformer::{Model, ModelParams};

use super::{BatchLoss, Metrics, Objective};
use crate::data::{scored_tokens, SftRow, TrainingRow};
use crate::scoring::{score, ScoringBatch};

/// The SFT loss of a batch of rows on `tape`, and its number of scored tokens.
pub fn sft_batch_loss<T: Float>(
    model: &Model<T>,
    tape: &Tape<T>,
    params: &ModelParams<Var<T>>,
    rows: &[SftRow],
) -> (Var<T>, usize) {
    let scored: usize = rows
        .iter()
        .map(|r| scored_tokens(&r.prompt, &r.completion))
        .sum();
    let logps = score(model, tape, params, &ScoringBatch::sequences(rows)).responses; // (B)
    let total = tape.sum_all(&logps);
    let loss = tape.mul_scalar(&total, T::cast(-1.0 / scored.max(1) as f64));
    (loss, scored)
}

/// The mean token cross-entropy of `rows` (no tape), `batch_size` rows at a
/// time: every scored token weighs the same, whatever its batch.
pub fn sft_eval_loss(model: &Model<f32>, rows: &[SftRow], batch_size: usize) -> f64 {
    let (mut nll, mut tokens) = (0.0, 0usize);
    for chunk in rows.chunks(batch_size.max(1)) {
        let tape = Tape::<f32>::no_grad();
        let params = model.bind(&tape);
        let (loss, scored) = sft_batch_loss(model, &tape, &params, chunk);
        nll += loss.item() as f64 * scored as f64;
        tokens += scored;
    }
    nll / tokens.max(1) as f64
}

/// SFT over supervised rows (or the chosen side of preference rows).
pub struct SftObjective {
    train: Vec<SftRow>,
    held_out: Vec<SftRow>,
    eval_batch_size: usize,
}

impl SftObjective {
    /// SFT on `train`, evaluated on `held_out`, `eval_batch_size` rows per forward.
    pub fn new(train: Vec<SftRow>, held_out: Vec<SftRow>, eval_batch_size: usize) -> Self {
        SftObjective {
            train,
            held_out,
            eval_batch_size: eval_batch_size.max(1),
        }
    }
}

impl Objective for SftObjective {
    const STAGE: &'static str = "sft";

    fn train_lengths(&self) -> Vec<usize> {
        self.train.iter().map(SftRow::padded_len).collect()
    }

    /// The loss is a mean over the batch's scored tokens.
    fn batch_weight(&self, batch: &[usize]) -> f64 {
        batch
            .iter()
            .map(|&i| scored_tokens(&self.train[i].prompt, &self.train[i].completion))
            .sum::<usize>() as f64
    }

    fn batch_loss(
        &mut self,
        model: &Model<f32>,
        tape: &Tape<f32>,
        params: &ModelParams<Var<f32>>,
        batch: &[usize],
    ) -> BatchLoss {
        let rows: Vec<SftRow> = batch.iter().map(|&i| self.train[i].clone()).collect();
        let (loss, _) = sft_batch_loss(model, tape, params, &rows);
        let mut metrics = Metrics::new();
        metrics.set_mean("loss", loss.item() as f64);
        let longest = rows.iter().map(SftRow::sequence_len).max().unwrap_or(0);
        BatchLoss {
            loss,
            metrics,
            tokens: rows.iter().map(SftRow::sequence_len).sum(),
            padded_tokens: longest * rows.len(),
        }
    }

    fn evaluate(&mut self, model: &Model<f32>) -> Option<Metrics> {
        if self.held_out.is_empty() {
            return None;
        }
        let loss = sft_eval_loss(model, &self.held_out, self.eval_batch_size);
        let mut metrics = Metrics::new();
        metrics.set_mean("loss", loss);
        Some(metrics)
    }
}
