//! From a batch of token sequences to summed response log-probs.

use autograd::{Float, Precision, Tape, Var};
use transformer::{Gpt, GptParams};

use crate::data::{PairBatch, PairInputs, PairLayout, PreferenceRow, SharedPairBatch};
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

/// Policy log-probs of a batch of pairs laid out one row per pair,
/// `[prompt | chosen | rejected]` (prefix sharing): (2B) = [chosen...,
/// rejected...], the same as [`pair_logps`] of the separate layout. The LM
/// head reads the one hidden state twice, with the chosen and the rejected
/// targets (the last prompt position predicts the first token of both).
pub fn shared_pair_logps<T: Float>(
    model: &Gpt<T>,
    tape: &Tape<T>,
    params: &GptParams<Var<T>>,
    batch: &SharedPairBatch,
) -> Var<T> {
    let hidden = shared_hidden_states(model, tape, params, batch); // (B, T, C)
    let head = LmHeadLogprobs::default();
    let chosen = head.apply(tape, &hidden, &params.wte, &batch.chosen_targets); // (B)
    let rejected = head.apply(tape, &hidden, &params.wte, &batch.rejected_targets); // (B)
    tape.concat(&[&chosen, &rejected], 0)
}

/// The output of `ln_f` for a shared batch: (B, T, C).
fn shared_hidden_states<T: Float>(
    model: &Gpt<T>,
    tape: &Tape<T>,
    params: &GptParams<Var<T>>,
    batch: &SharedPairBatch,
) -> Var<T> {
    model.hidden_states_segmented(
        tape,
        params,
        &batch.ids,
        &batch.positions,
        &batch.lengths,
        &batch.key_gaps,
        batch.seq_len,
    )
}

/// Policy log-probs of a batch of pairs in either layout: (2B) = [chosen..., rejected...].
pub fn pair_inputs_logps<T: Float>(
    model: &Gpt<T>,
    tape: &Tape<T>,
    params: &GptParams<Var<T>>,
    inputs: &PairInputs,
) -> Var<T> {
    match inputs {
        PairInputs::Separate(batch) => pair_logps(model, tape, params, batch),
        PairInputs::Shared(batch) => shared_pair_logps(model, tape, params, batch),
    }
}

/// [`pair_and_prompt_logps`] in either layout, the prompt targets from
/// [`PairInputs::prompt_targets`] of the same `rows`: (2B) and (B).
pub fn pair_inputs_and_prompt_logps<T: Float>(
    model: &Gpt<T>,
    tape: &Tape<T>,
    params: &GptParams<Var<T>>,
    inputs: &PairInputs,
    rows: &[PreferenceRow],
) -> (Var<T>, Var<T>) {
    let prompt_targets = inputs.prompt_targets(rows);
    let batch = match inputs {
        PairInputs::Separate(batch) => {
            return pair_and_prompt_logps(model, tape, params, batch, &prompt_targets)
        }
        PairInputs::Shared(batch) => batch,
    };
    let hidden = shared_hidden_states(model, tape, params, batch); // (B, T, C)
    let head = LmHeadLogprobs::default();
    let chosen = head.apply(tape, &hidden, &params.wte, &batch.chosen_targets); // (B)
    let rejected = head.apply(tape, &hidden, &params.wte, &batch.rejected_targets); // (B)
    let response = tape.concat(&[&chosen, &rejected], 0); // (2B)
    let prompt = if prompt_targets.iter().all(|&t| t < 0) {
        // No prompt token to score (every prompt has at most one token).
        tape.constant(autograd::Tensor::zeros(ndarray::IxDyn(&[batch.num_pairs])))
    } else {
        head.apply(tape, &hidden, &params.wte, &prompt_targets) // (B)
    };
    (response, prompt)
}

/// Policy log-probs of a batch of pairs (2B) = [chosen..., rejected...], and
/// the log-probs of the prompt tokens of its chosen sequences (B) (ORPO's NLL
/// counts them), from one pass through the model: the LM-head kernel reads
/// the same hidden states twice, with two sets of targets.
pub fn pair_and_prompt_logps<T: Float>(
    model: &Gpt<T>,
    tape: &Tape<T>,
    params: &GptParams<Var<T>>,
    batch: &PairBatch,
    prompt_targets: &[i64],
) -> (Var<T>, Var<T>) {
    let (seqs, b) = (2 * batch.num_pairs, batch.num_pairs);
    let hidden = model.hidden_states(tape, params, &batch.ids, seqs, batch.seq_len); // (2B, T, C)
    let head = LmHeadLogprobs::default();
    let response = head.apply(tape, &hidden, &params.wte, &batch.targets); // (2B)
    let prompt = if prompt_targets.iter().all(|&t| t < 0) {
        // No prompt token to score (every prompt has at most one token).
        tape.constant(autograd::Tensor::zeros(ndarray::IxDyn(&[b])))
    } else {
        let all = head.apply(tape, &hidden, &params.wte, prompt_targets); // (2B), rejected rows 0
        tape.narrow(&all, 0, 0, b)
    };
    (response, prompt)
}

/// [`pair_and_prompt_logps`] of many pairs in no-grad mode, `batch_size`
/// pairs at a time in `layout`: `(chosen, rejected)` per row, and the
/// chosen prompt's log-prob per row, in f64.
pub fn pair_and_prompt_logps_no_grad<T: Float>(
    model: &Gpt<T>,
    rows: &[PreferenceRow],
    batch_size: usize,
    layout: PairLayout,
) -> (Vec<(f64, f64)>, Vec<f64>) {
    let (mut pairs, mut prompts) = (
        Vec::with_capacity(rows.len()),
        Vec::with_capacity(rows.len()),
    );
    for chunk in rows.chunks(batch_size.max(1)) {
        let inputs = PairInputs::collate(chunk, layout);
        let tape = Tape::<T>::no_grad();
        let params = model.bind(&tape);
        let (response, prompt) =
            pair_inputs_and_prompt_logps(model, &tape, &params, &inputs, chunk);
        let v: Vec<f64> = response.value().iter().map(|x| x.as_f64()).collect();
        let b = inputs.num_pairs();
        pairs.extend((0..b).map(|i| (v[i], v[b + i])));
        prompts.extend(prompt.value().iter().map(|x| x.as_f64()));
    }
    (pairs, prompts)
}

/// Log-probs of many pairs in no-grad mode, `batch_size` pairs at a time in
/// `layout`: `(chosen, rejected)` per row, in f64.
pub fn pair_logps_no_grad<T: Float>(
    model: &Gpt<T>,
    rows: &[PreferenceRow],
    batch_size: usize,
    layout: PairLayout,
) -> Vec<(f64, f64)> {
    pair_logps_no_grad_in(model, rows, batch_size, layout, Precision::F32)
}

/// [`pair_logps_no_grad`] with the GEMMs in `precision` (the reference of a
/// bf16 run is run in bf16, as the policy, so that a policy equal to its
/// reference has rewards of exactly 0; f64 ignores it).
pub fn pair_logps_no_grad_in<T: Float>(
    model: &Gpt<T>,
    rows: &[PreferenceRow],
    batch_size: usize,
    layout: PairLayout,
    precision: Precision,
) -> Vec<(f64, f64)> {
    let mut out = Vec::with_capacity(rows.len());
    for chunk in rows.chunks(batch_size.max(1)) {
        let inputs = PairInputs::collate(chunk, layout);
        let tape = Tape::<T>::no_grad().with_precision(precision);
        let params = model.bind(&tape);
        let logps = pair_inputs_logps(model, &tape, &params, &inputs);
        let v: Vec<f64> = logps.value().iter().map(|x| x.as_f64()).collect();
        let b = inputs.num_pairs();
        out.extend((0..b).map(|i| (v[i], v[b + i])));
    }
    out
}
