//! From a batch of token sequences to summed response log-probs.

use autograd::{Float, Tape, Var};
use transformer::{Gpt, GptParams};

use crate::data::{collate_pairs, PairBatch, PreferenceRow};
use crate::kernels::LmHeadLogprobs;

/// Summed log-prob of the scored tokens of each sequence.
///
/// ids, targets: S*T (targets: label of position t+1, or -100) -> (S)
pub fn sequence_logps<T: Float>(
    model: &Gpt<T>,
    tape: &Tape<T>,
    params: &GptParams<Var<T>>,
    ids: &[usize],
    targets: &[i64],
    seqs: usize,
    seq_len: usize,
) -> Var<T> {
    let hidden = model.hidden_states(tape, params, ids, seqs, seq_len); // (S, T, C)
    LmHeadLogprobs::default().apply(tape, &hidden, &params.wte, targets)
}

/// Policy log-probs of a batch of pairs: (2B) = [chosen..., rejected...].
pub fn pair_logps<T: Float>(
    model: &Gpt<T>,
    tape: &Tape<T>,
    params: &GptParams<Var<T>>,
    batch: &PairBatch,
) -> Var<T> {
    sequence_logps(
        model,
        tape,
        params,
        &batch.ids,
        &batch.targets,
        2 * batch.num_pairs,
        batch.seq_len,
    )
}

/// Log-probs of many pairs in no-grad mode, `batch_size` pairs at a time:
/// `(chosen, rejected)` per row, in f64.
pub fn pair_logps_no_grad<T: Float>(
    model: &Gpt<T>,
    rows: &[PreferenceRow],
    batch_size: usize,
) -> Vec<(f64, f64)> {
    let mut out = Vec::with_capacity(rows.len());
    for chunk in rows.chunks(batch_size.max(1)) {
        let batch = collate_pairs(chunk);
        let tape = Tape::<T>::no_grad();
        let params = model.bind(&tape);
        let logps = pair_logps(model, &tape, &params, &batch);
        let v: Vec<f64> = logps.value().iter().map(|x| x.as_f64()).collect();
        let b = batch.num_pairs;
        out.extend((0..b).map(|i| (v[i], v[b + i])));
    }
    out
}
