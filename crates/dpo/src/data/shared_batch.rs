//! Prefix sharing: one row per pair, `[prompt | chosen | rejected]`.
//!
//! The unshared layout ([`super::collate_pairs`]) runs every prompt twice,
//! once before each response. Here a pair is one sequence:
//!
//! ```text
//! ids        p0 .. p(P-1) | c0 .. c(C-1)     | r0 .. r(R-1)     | pad
//! positions  0  .. P-1    | P  .. P+C-1      | P  .. P+R-1      | 0
//! sees       causal       | prompt, earlier c | prompt, earlier r (never c)
//! ```
//!
//! The rejected position ids restart at `P`, and the attention hides the
//! chosen keys `P..P+C` from every later query (the row's
//! [`KeyGap`]), so each response sees exactly what it sees after the prompt
//! alone, and its log-probs are those of the unshared layout. The first
//! rejected token is predicted from the last prompt position, like the first
//! chosen one: that position carries two targets, so the chosen and the
//! rejected targets are two arrays over the same rows.

use autograd::kernels::attention::KeyGap;

use super::batch::{collate_pairs, PairBatch, IGNORE_INDEX};
use super::PreferenceRow;

/// The id written into padding positions (never scored).
const PAD_ID: usize = 0;

/// How the pairs of a batch go through the model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PairLayout {
    /// Two sequences per pair, `prompt + chosen` and `prompt + rejected`.
    Separate,
    /// One sequence per pair, `[prompt | chosen | rejected]` (the default).
    #[default]
    SharedPrefix,
}

/// One forward batch of `B` pairs, one sequence each, right-padded to the
/// longest `P + C + R` of the batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SharedPairBatch {
    /// Token ids, pad id 0. // (B, T) row-major
    pub ids: Vec<usize>,
    /// Position ids (the rejected span restarts at `P`; padding 0). // (B, T)
    pub positions: Vec<usize>,
    /// The chosen span `P..P+C` of each row, hidden from the rejected tokens. // (B,)
    pub key_gaps: Vec<KeyGap>,
    /// `P + C + R` of each row: its real (non-padding) tokens. // (B,)
    pub lengths: Vec<usize>,
    /// `chosen_targets[b, t]`: the chosen token predicted at position `t`, or -100. // (B, T)
    pub chosen_targets: Vec<i64>,
    /// `rejected_targets[b, t]`: the rejected token predicted at position `t`, or -100. // (B, T)
    pub rejected_targets: Vec<i64>,
    /// B: the number of pairs.
    pub num_pairs: usize,
    /// T: the padded sequence length (may pass `block_size`; positions do not).
    pub seq_len: usize,
}

/// Collates preference pairs into one batch of `B` shared sequences.
///
/// For row b with prompt length P, chosen length C, rejected length R:
///   chosen token j   (at P + j)     is predicted at P + j - 1
///   rejected token j (at P + C + j) is predicted at P + C + j - 1, and j = 0 at P - 1
/// (with an empty prompt the first token of each response has no predictor).
///
/// Panics on an empty slice.
pub fn collate_shared_pairs(rows: &[PreferenceRow]) -> SharedPairBatch {
    assert!(!rows.is_empty(), "collate_shared_pairs: no rows");
    let seq_len = rows
        .iter()
        .map(|r| r.prompt.len() + r.chosen.len() + r.rejected.len())
        .max()
        .unwrap_or(0);
    let n = rows.len() * seq_len;
    let mut ids = vec![PAD_ID; n]; // (B, T)
    let mut positions = vec![0; n]; // (B, T)
    let mut chosen_targets = vec![IGNORE_INDEX; n]; // (B, T)
    let mut rejected_targets = vec![IGNORE_INDEX; n]; // (B, T)
    let mut key_gaps = Vec::with_capacity(rows.len());
    for (b, row) in rows.iter().enumerate() {
        let (p, c) = (row.prompt.len(), row.chosen.len());
        let at = |t: usize| b * seq_len + t;
        let tokens = row.prompt.iter().chain(&row.chosen).chain(&row.rejected);
        for (t, &id) in tokens.enumerate() {
            ids[at(t)] = id as usize;
            // the rejected span restarts at P
            positions[at(t)] = if t < p + c { t } else { t - c };
        }
        for (j, &id) in row.chosen.iter().enumerate() {
            if p + j >= 1 {
                chosen_targets[at(p + j - 1)] = i64::from(id);
            }
        }
        for (j, &id) in row.rejected.iter().enumerate() {
            let predictor = if j == 0 {
                p.checked_sub(1)
            } else {
                Some(p + c + j - 1)
            };
            if let Some(t) = predictor {
                rejected_targets[at(t)] = i64::from(id);
            }
        }
        let len = p + c + row.rejected.len();
        key_gaps.push(KeyGap::new(p, p + c, len));
    }
    SharedPairBatch {
        ids,
        positions,
        key_gaps,
        lengths: rows
            .iter()
            .map(|r| r.prompt.len() + r.chosen.len() + r.rejected.len())
            .collect(),
        chosen_targets,
        rejected_targets,
        num_pairs: rows.len(),
        seq_len,
    }
}

/// A batch of pairs collated in either layout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PairInputs {
    /// [`PairLayout::Separate`]: (2B, T) sequences.
    Separate(PairBatch),
    /// [`PairLayout::SharedPrefix`]: (B, T) sequences.
    Shared(SharedPairBatch),
}

impl PairInputs {
    /// Collates `rows` in `layout`. Panics on an empty slice.
    pub fn collate(rows: &[PreferenceRow], layout: PairLayout) -> PairInputs {
        match layout {
            PairLayout::Separate => PairInputs::Separate(collate_pairs(rows)),
            PairLayout::SharedPrefix => PairInputs::Shared(collate_shared_pairs(rows)),
        }
    }

    /// B: the number of pairs.
    pub fn num_pairs(&self) -> usize {
        match self {
            PairInputs::Separate(batch) => batch.num_pairs,
            PairInputs::Shared(batch) => batch.num_pairs,
        }
    }

    /// Positions through the model, padding included.
    pub fn padded_tokens(&self) -> usize {
        match self {
            PairInputs::Separate(batch) => 2 * batch.num_pairs * batch.seq_len,
            PairInputs::Shared(batch) => batch.num_pairs * batch.seq_len,
        }
    }

    /// Targets that score the prompt tokens of the chosen sequences (ORPO's
    /// NLL): every prompt token but the first, at its own position. (2B, T)
    /// unshared (rejected rows unscored), (B, T) shared.
    ///
    ///   targets[b, t] = prompt_b[t + 1] for t + 1 < len(prompt_b), else -100
    pub fn prompt_targets(&self, rows: &[PreferenceRow]) -> Vec<i64> {
        match self {
            PairInputs::Separate(batch) => super::chosen_prompt_targets(batch, rows).0,
            PairInputs::Shared(batch) => {
                let seq_len = batch.seq_len;
                let mut targets = vec![IGNORE_INDEX; batch.num_pairs * seq_len]; // (B, T)
                for (b, row) in rows.iter().enumerate() {
                    for (t, &id) in row.prompt.iter().skip(1).enumerate() {
                        targets[b * seq_len + t] = i64::from(id);
                    }
                }
                targets
            }
        }
    }
}
