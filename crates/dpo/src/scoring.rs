//! Scoring: from a batch of token sequences to the summed log-prob of each
//! response, the one path every objective takes (SFT's completions, each
//! pair's chosen and rejected responses and ORPO's prompts, KTO's
//! completions and KL completions, the reference cache).
//!
//! [`score`] runs the model once over a [`ScoringBatch`] and reads the final
//! hidden states with the fused LM-head log-prob op
//! ([`autograd::Tape::lm_head_logprobs`]) once per set of targets:
//!
//! ```text
//! hidden = model(ids)                                        (N, T, C)   one forward pass
//! logp_k[n] = sum_t log softmax(hidden[n,t] @ wte^T)[y_k[n,t]]    (N)    for each target set y_k
//! responses = concat_k logp_k                                            (K*N)
//! ```
//!
//! With gradient or without (a no-grad tape), in the tape's precision, in
//! either pair layout: the batch says what to score and how the sequences
//! attend; [`score`] does the rest.

use autograd::{Float, Precision, Tape, Var};
use transformer::{Model, ModelParams};

use autograd::kernels::attention::KeyGap;

use crate::data::{collate_sft, PairInputs, PairLayout, PreferenceRow, SftRow};

/// How the sequences of a batch attend.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Attention {
    /// Each sequence causally, from position 0.
    Causal,
    /// Each row `[prompt | chosen | rejected]` with the chosen span hidden
    /// from the rejected tokens (prefix sharing, [`PairLayout::SharedPrefix`]).
    Segmented {
        /// Position of each token (N, T): the rejected span restarts after the prompt.
        positions: Vec<usize>,
        /// Real length of each row (N).
        lengths: Vec<usize>,
        /// The chosen span of each row, hidden from its rejected tokens (N).
        key_gaps: Vec<KeyGap>,
    },
}

/// Token sequences for one forward pass, and the targets to score in them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScoringBatch {
    /// Token ids (N, T), right-padded.
    pub ids: Vec<usize>,
    /// N: sequences through the model.
    pub seqs: usize,
    /// T: the padded length.
    pub seq_len: usize,
    /// How the sequences attend.
    pub attention: Attention,
    /// The target sets of the responses, (N, T) each (`-100` where not
    /// scored): [`Scores::responses`] is their (N) log-probs, concatenated.
    pub responses: Vec<Vec<i64>>,
    /// Targets that score the prompt tokens of the chosen sequences (ORPO's
    /// NLL), (N, T), with the number of prompts: [`Scores::prompts`] is the
    /// first `num_prompts` of their (N) log-probs.
    pub prompts: Option<(Vec<i64>, usize)>,
}

/// What [`score`] returns.
pub struct Scores<T: Float> {
    /// Summed log-prob of each response: (N) for sequences, (2B) =
    /// `[chosen..., rejected...]` for pairs, in either layout.
    pub responses: Var<T>,
    /// Summed log-prob of each chosen prompt (every prompt token but the
    /// first): (B), when the batch asks for them.
    pub prompts: Option<Var<T>>,
}

impl ScoringBatch {
    /// SFT rows (or KTO's sequences): each `prompt + completion`, the
    /// completion scored. [`Scores::responses`] is (N).
    pub fn sequences(rows: &[SftRow]) -> Self {
        let batch = collate_sft(rows);
        ScoringBatch {
            ids: batch.ids,
            seqs: batch.batch,
            seq_len: batch.seq_len,
            attention: Attention::Causal,
            responses: vec![batch.targets],
            prompts: None,
        }
    }

    /// Preference pairs in `layout`, with the chosen prompts scored too when
    /// `with_prompts` (ORPO). [`Scores::responses`] is (2B) =
    /// `[chosen..., rejected...]` in both layouts.
    pub fn pairs(rows: &[PreferenceRow], layout: PairLayout, with_prompts: bool) -> Self {
        let inputs = PairInputs::collate(rows, layout);
        let prompts = with_prompts.then(|| (inputs.prompt_targets(rows), rows.len()));
        match inputs {
            // (2B, T): chosen sequences, then rejected ones; one target set.
            PairInputs::Separate(batch) => ScoringBatch {
                ids: batch.ids,
                seqs: 2 * batch.num_pairs,
                seq_len: batch.seq_len,
                attention: Attention::Causal,
                responses: vec![batch.targets],
                prompts,
            },
            // (B, T): one row per pair, read twice: chosen targets, then rejected.
            PairInputs::Shared(batch) => ScoringBatch {
                ids: batch.ids,
                seqs: batch.num_pairs,
                seq_len: batch.seq_len,
                attention: Attention::Segmented {
                    positions: batch.positions,
                    lengths: batch.lengths,
                    key_gaps: batch.key_gaps,
                },
                responses: vec![batch.chosen_targets, batch.rejected_targets],
                prompts,
            },
        }
    }

    /// Positions through the model, padding included.
    pub fn padded_tokens(&self) -> usize {
        self.seqs * self.seq_len
    }
}

/// The summed log-probs of a batch's responses (and prompts, when asked)
/// under `model`, on `tape`: one forward pass, then the fused LM-head op
/// once per target set.
pub fn score<T: Float>(
    model: &Model<T>,
    tape: &Tape<T>,
    params: &ModelParams<Var<T>>,
    batch: &ScoringBatch,
) -> Scores<T> {
    let hidden = match &batch.attention {
        Attention::Causal => {
            model.hidden_states(tape, params, &batch.ids, batch.seqs, batch.seq_len)
        }
        Attention::Segmented {
            positions,
            lengths,
            key_gaps,
        } => model.hidden_states_segmented(
            tape,
            params,
            &batch.ids,
            positions,
            lengths,
            key_gaps,
            batch.seq_len,
        ),
    }; // (N, T, C)
    let logps = |targets: &[i64]| model.lm_head_logprobs(tape, params, &hidden, targets); // (N)
    let per_set: Vec<Var<T>> = batch.responses.iter().map(|t| logps(t)).collect();
    let responses = match per_set.as_slice() {
        [one] => one.clone(),
        many => tape.concat(&many.iter().collect::<Vec<_>>(), 0),
    };
    let prompts = batch.prompts.as_ref().map(|(targets, num_prompts)| {
        let all = logps(targets); // (N)
        if *num_prompts == batch.seqs {
            all
        } else {
            tape.narrow(&all, 0, 0, *num_prompts)
        }
    });
    Scores { responses, prompts }
}

/// [`score`] on a no-grad tape with its GEMMs in `precision`, the values
/// widened to f64: (responses, prompts or empty).
pub fn score_values<T: Float>(
    model: &Model<T>,
    batch: &ScoringBatch,
    precision: Precision,
) -> (Vec<f64>, Vec<f64>) {
    let tape = Tape::<T>::no_grad().with_precision(precision);
    let params = model.bind(&tape);
    let scores = score(model, &tape, &params, batch);
    let values = |v: &Var<T>| v.value().iter().map(|x| x.as_f64()).collect::<Vec<f64>>();
    let prompts = scores.prompts.as_ref().map(values).unwrap_or_default();
    (values(&scores.responses), prompts)
}

/// The `(chosen, rejected)` log-probs of many pairs, and the chosen prompts'
/// when `with_prompts` (else empty), `batch_size` pairs per no-grad forward
/// pass in `layout`, returned in the order of `rows`.
///
/// The passes take the rows shortest first, so that each batch holds rows
/// of about one length and pads little (on real data, padding to the
/// longest row of a file-order batch is about half the tokens). A row's
/// log-probs do not depend on the rows beside it.
pub fn score_pairs<T: Float>(
    model: &Model<T>,
    rows: &[PreferenceRow],
    batch_size: usize,
    layout: PairLayout,
    precision: Precision,
    with_prompts: bool,
) -> (Vec<(f64, f64)>, Vec<f64>) {
    let mut by_length: Vec<usize> = (0..rows.len()).collect();
    by_length
        .sort_by_key(|&i| rows[i].prompt.len() + rows[i].chosen.len() + rows[i].rejected.len());
    let mut pairs = vec![(0.0, 0.0); rows.len()];
    let mut prompts = vec![0.0; if with_prompts { rows.len() } else { 0 }];
    for indices in by_length.chunks(batch_size.max(1)) {
        let chunk: Vec<PreferenceRow> = indices.iter().map(|&i| rows[i].clone()).collect();
        let batch = ScoringBatch::pairs(&chunk, layout, with_prompts);
        let (responses, chunk_prompts) = score_values(model, &batch, precision);
        let b = chunk.len();
        for (k, &i) in indices.iter().enumerate() {
            pairs[i] = (responses[k], responses[b + k]);
            if with_prompts {
                prompts[i] = chunk_prompts[k];
            }
        }
    }
    (pairs, prompts)
}

/// The completion log-prob of each of many sequences, `batch_size` per
/// no-grad forward pass.
pub fn score_sequences<T: Float>(
    model: &Model<T>,
    rows: &[SftRow],
    batch_size: usize,
    precision: Precision,
) -> Vec<f64> {
    rows.chunks(batch_size.max(1))
        .flat_map(|chunk| score_values(model, &ScoringBatch::sequences(chunk), precision).0)
        .collect()
}
