//! Rows -> one right-padded batch of token ids and shifted targets.
//!
//! The reference's `build_batch` makes `labels[s, t]` (-100 on prompt and
//! padding, the response ids on the response) and `get_log_probs` scores
//! `labels[:, 1:]` with `logits[:, :-1]`. Here the shift is done once, at
//! collation: `targets[s, t] = labels[s, t + 1]` and the last position is
//! `-100`, so the logits at position `t` are scored against `targets[s, t]`
//! with no further index arithmetic, the layout the fused log-prob kernels
//! and the SFT cross-entropy read.

use super::{PreferenceRow, SftRow};

/// The target of a position that is not scored (prompt, padding, last
/// position), PyTorch's `ignore_index`.
pub use autograd::IGNORE_INDEX;

/// The id written into padding positions (never scored).
const PAD_ID: usize = 0;

/// One forward batch of `2B` sequences for `B` preference pairs: rows `0..B`
/// are `prompt + chosen`, rows `B..2B` are `prompt + rejected`, each
/// right-padded to the longest of the `2B`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PairBatch {
    /// Token ids, pad id 0. // (2B, T) row-major
    pub ids: Vec<usize>,
    /// `targets[s*T + t]` = the response token at position `t + 1`, or `-100`
    /// on prompt, padding and `t = T - 1`. // (2B, T)
    pub targets: Vec<i64>,
    /// B: the number of pairs.
    pub num_pairs: usize,
    /// T: the padded sequence length.
    pub seq_len: usize,
    /// Number of non-`-100` targets per sequence. // (2B,)
    pub scored_tokens: Vec<usize>,
}

/// One forward batch of SFT sequences `prompt + completion`, right-padded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SftTokens {
    /// Token ids, pad id 0. // (B, T)
    pub ids: Vec<usize>,
    /// Shifted targets, same convention as [`PairBatch::targets`]. // (B, T)
    pub targets: Vec<i64>,
    /// B: the number of sequences.
    pub batch: usize,
    /// T: the padded sequence length.
    pub seq_len: usize,
    /// Number of non-`-100` targets per sequence. // (B,)
    pub scored_tokens: Vec<usize>,
}

/// Lays out `(prompt, response)` sequences as padded ids and shifted targets.
/// Returns (ids, targets, T, scored tokens per sequence).
///
/// For sequence s = prompt ++ response, L = len(s), P = len(prompt):
///   ids[s, t]     = s[t] for t < L, else 0
///   targets[s, t] = s[t + 1] for P <= t + 1 < L, else -100
fn collate_sequences(sequences: &[(&[u32], &[u32])]) -> (Vec<usize>, Vec<i64>, usize, Vec<usize>) {
    let seq_len = sequences
        .iter()
        .map(|(p, r)| p.len() + r.len())
        .max()
        .unwrap_or(0);
    let mut ids = vec![PAD_ID; sequences.len() * seq_len]; // (N, T)
    let mut targets = vec![IGNORE_INDEX; sequences.len() * seq_len]; // (N, T)
    let mut scored = Vec::with_capacity(sequences.len());
    for (s, (prompt, response)) in sequences.iter().enumerate() {
        let ids_s = &mut ids[s * seq_len..(s + 1) * seq_len];
        let targets_s = &mut targets[s * seq_len..(s + 1) * seq_len];
        let p = prompt.len();
        for (t, &id) in prompt.iter().chain(response.iter()).enumerate() {
            ids_s[t] = id as usize;
        }
        // The response token at position p + j is predicted at position p + j - 1;
        // with an empty prompt the first response token has no predictor.
        let mut n = 0;
        for (j, &id) in response.iter().enumerate() {
            if p + j >= 1 {
                targets_s[p + j - 1] = i64::from(id);
                n += 1;
            }
        }
        scored.push(n);
    }
    (ids, targets, seq_len, scored)
}

/// Collates preference pairs into one batch of `2B` sequences (chosen first,
/// then rejected, both after the row's prompt).
///
/// Panics on an empty slice.
pub fn collate_pairs(rows: &[PreferenceRow]) -> PairBatch {
    assert!(!rows.is_empty(), "collate_pairs: no rows");
    let chosen = rows.iter().map(|r| (&r.prompt[..], &r.chosen[..]));
    let rejected = rows.iter().map(|r| (&r.prompt[..], &r.rejected[..]));
    let sequences: Vec<(&[u32], &[u32])> = chosen.chain(rejected).collect();
    let (ids, targets, seq_len, scored_tokens) = collate_sequences(&sequences);
    PairBatch {
        ids,
        targets,
        num_pairs: rows.len(),
        seq_len,
        scored_tokens,
    }
}

/// Collates SFT rows into one batch; the completion is the scored response.
///
/// Panics on an empty slice.
pub fn collate_sft(rows: &[SftRow]) -> SftTokens {
    assert!(!rows.is_empty(), "collate_sft: no rows");
    let sequences: Vec<(&[u32], &[u32])> = rows
        .iter()
        .map(|r| (&r.prompt[..], &r.completion[..]))
        .collect();
    let (ids, mut targets, seq_len, mut scored_tokens) = collate_sequences(&sequences);
    // A masked completion token is no target: the target predicting it goes.
    for (s, row) in rows.iter().enumerate() {
        let Some(mask) = &row.completion_mask else {
            continue;
        };
        for (j, &trained) in mask.iter().enumerate() {
            let t = row.prompt.len() + j;
            if !trained && t >= 1 {
                targets[s * seq_len + t - 1] = IGNORE_INDEX;
                scored_tokens[s] -= 1;
            }
        }
    }
    SftTokens {
        ids,
        targets,
        batch: rows.len(),
        seq_len,
        scored_tokens,
    }
}

/// Targets that score the prompt tokens of the chosen sequences of `batch`
/// (collated from `rows` by [`collate_pairs`]): rows `0..B` score every
/// prompt token but the first (nothing predicts it), rows `B..2B` nothing.
/// ORPO's NLL counts these besides the chosen response (as TRL's ORPOTrainer
/// does). Returns the targets (2B, T) and the scored prompt tokens per
/// chosen sequence (B).
///
///   targets[s, t] = prompt_s[t + 1] for s < B and t + 1 < len(prompt_s), else -100
pub fn chosen_prompt_targets(batch: &PairBatch, rows: &[PreferenceRow]) -> (Vec<i64>, Vec<usize>) {
    assert_eq!(
        rows.len(),
        batch.num_pairs,
        "chosen_prompt_targets: rows and batch differ"
    );
    let seq_len = batch.seq_len;
    let mut targets = vec![IGNORE_INDEX; 2 * batch.num_pairs * seq_len]; // (2B, T)
    let mut scored = Vec::with_capacity(rows.len());
    for (s, row) in rows.iter().enumerate() {
        for (t, &id) in row.prompt.iter().skip(1).enumerate() {
            targets[s * seq_len + t] = i64::from(id);
        }
        scored.push(row.prompt.len().saturating_sub(1));
    }
    (targets, scored)
}
