//! The test oracle of the model's loss: supervised fine-tuning the plain
//! way, the full logits `(B, T, V)` then [`autograd::Tape::cross_entropy`].
//! The trainer scores the same tokens with the fused LM-head op
//! (`dpo::scoring::score`); tests check the model and that path against this.
//!
//! A sequence is `prompt + completion`. Its labels are -100 on the prompt and
//! the completion's own ids on the completion; the logits at position `t`
//! score the label at `t + 1`, so the first token of a sequence is never
//! scored (a sequence with an empty prompt scores one completion token fewer).
//! The loss is PyTorch's
//! `F.cross_entropy(logits[:, :-1], labels[:, 1:], ignore_index=-100)`:
//! the mean over every scored token of the batch.

#![allow(dead_code)] // each test file uses a part of it

use autograd::kernels::attention::KeyGap;
use autograd::{Float, Tape, Var};
use transformer::{Model, ModelConfig, ModelParams};

/// The target of a position that is not scored: [`autograd::IGNORE_INDEX`].
pub use autograd::IGNORE_INDEX as IGNORE;

/// A right-padded batch of sequences with shifted targets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SftBatch {
    /// Token ids (B*T, row-major), right-padded with id 0.
    pub ids: Vec<usize>,
    /// `targets[b*T + t]` is the label of position `t + 1` of sequence `b`
    /// (what the logits at `t` must predict), -100 where not scored: on the
    /// prompt, on padding, and at `t = T - 1`.
    pub targets: Vec<i64>,
    /// B
    pub batch: usize,
    /// T: the length of the longest sequence.
    pub seq_len: usize,
}

impl SftBatch {
    /// A batch from `(prompt_ids, completion_ids)` pairs (already truncated
    /// to the model's block size).
    ///
    /// # Panics
    /// If `sequences` is empty or every sequence is empty.
    pub fn from_sequences<P: AsRef<[usize]>, C: AsRef<[usize]>>(sequences: &[(P, C)]) -> SftBatch {
        assert!(!sequences.is_empty(), "SftBatch: no sequences");
        let batch = sequences.len();
        let seq_len = sequences
            .iter()
            .map(|(p, c)| p.as_ref().len() + c.as_ref().len())
            .max()
            .unwrap();
        assert!(seq_len > 0, "SftBatch: every sequence is empty");
        let mut ids = vec![0; batch * seq_len];
        let mut targets = vec![IGNORE; batch * seq_len];
        for (b, (prompt, completion)) in sequences.iter().enumerate() {
            let (prompt, completion) = (prompt.as_ref(), completion.as_ref());
            let row = &mut ids[b * seq_len..(b + 1) * seq_len];
            row[..prompt.len()].copy_from_slice(prompt);
            row[prompt.len()..prompt.len() + completion.len()].copy_from_slice(completion);
            // label of position p = completion[p - prompt.len()]; target[t] = label[t + 1]
            for (j, &id) in completion.iter().enumerate() {
                let position = prompt.len() + j;
                if position >= 1 {
                    targets[b * seq_len + position - 1] = id as i64;
                }
            }
        }
        SftBatch {
            ids,
            targets,
            batch,
            seq_len,
        }
    }

    /// Number of scored tokens.
    pub fn num_scored(&self) -> usize {
        self.targets.iter().filter(|&&t| t != IGNORE).count()
    }
}

/// Mean token cross-entropy over every scored token of `batch` (0 if none).
pub fn sft_loss<T: Float>(
    model: &Model<T>,
    tape: &Tape<T>,
    params: &ModelParams<Var<T>>,
    batch: &SftBatch,
) -> Var<T> {
    let logits = model.forward(tape, params, &batch.ids, batch.batch, batch.seq_len); // (B, T, V)
    tape.cross_entropy(&logits, &batch.targets)
}

/// A Llama-family preset shrunk to gradcheck size: V 11, C 6, 4 query heads
/// and 2 key/value heads of 4 (6 for Qwen3), an MLP 10 wide, 2 layers.
pub fn shrunk(preset: &str) -> ModelConfig {
    let mut config = ModelConfig::preset(preset).unwrap();
    config.vocab_size = 11;
    config.block_size = 8;
    config.n_embd = 6;
    let llama = config.llama.as_mut().unwrap();
    llama.head_dim = if preset == "qwen3-tiny" { 6 } else { 4 };
    llama.intermediate_size = 10;
    if let Some(scaling) = &mut llama.rope.llama3 {
        // positions 0..7 turn the low frequencies far enough to matter
        scaling.original_max_position_embeddings = 4;
    }
    config
}

/// [`sft_loss`] of two short sequences (ids below 12): a prompt of 3 and of 1.
pub fn two_sequence_loss<T: Float>(
    model: &Model<T>,
    tape: &Tape<T>,
    params: &ModelParams<Var<T>>,
) -> Var<T> {
    let batch = SftBatch::from_sequences(&[
        (vec![1, 2, 3], vec![4, 5, 6, 7, 8]),
        (vec![9], vec![10, 11, 0, 3, 2]),
    ]);
    sft_loss(model, tape, params, &batch)
}

/// Two sequences of 9 positions in the prefix-shared layout (ids below 23):
/// each a prompt then two responses at the same positions, kept apart by a
/// key gap; the second one 6 long and padded.
pub struct SegmentedBatch {
    /// Token ids (2*9).
    pub ids: Vec<usize>,
    /// The position of each token.
    pub positions: Vec<usize>,
    /// Real tokens of each sequence.
    pub lengths: [usize; 2],
    /// Each sequence's key gap.
    pub gaps: [KeyGap; 2],
    /// 9.
    pub seq_len: usize,
    /// Next-token targets, -100 at each sequence's last token and on padding.
    pub targets: Vec<i64>,
}

impl SegmentedBatch {
    /// The batch.
    pub fn new() -> SegmentedBatch {
        let seq_len = 9;
        let ids: Vec<usize> = (0..2 * seq_len).map(|i| (i * 7 + 3) % 23).collect();
        let positions = [
            vec![0, 1, 2, 3, 4, 2, 3, 4, 5],
            vec![0, 1, 2, 3, 2, 3, 0, 0, 0],
        ]
        .concat();
        let lengths = [9, 6];
        let gap = |end, len| KeyGap { start: 2, end, len };
        let mut targets: Vec<i64> = ids.iter().skip(1).map(|&i| i as i64).collect();
        targets.push(IGNORE);
        for (s, &len) in lengths.iter().enumerate() {
            for t in len - 1..seq_len {
                targets[s * seq_len + t] = IGNORE;
            }
        }
        SegmentedBatch {
            ids,
            positions,
            lengths,
            gaps: [gap(5, 9), gap(4, 6)],
            seq_len,
            targets,
        }
    }

    /// The model's final hidden states of the batch: (2, 9, C).
    pub fn hidden<T: Float>(
        &self,
        model: &Model<T>,
        tape: &Tape<T>,
        params: &ModelParams<Var<T>>,
    ) -> Var<T> {
        let SegmentedBatch {
            ids,
            positions,
            lengths,
            gaps,
            seq_len,
            ..
        } = self;
        model.hidden_states_segmented(tape, params, ids, positions, lengths, gaps, *seq_len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_are_shifted_completion_labels() {
        let batch = SftBatch::from_sequences(&[(vec![1, 2], vec![3, 4]), (vec![], vec![5, 6, 7])]);
        assert_eq!(batch.seq_len, 4);
        assert_eq!(batch.ids, vec![1, 2, 3, 4, 5, 6, 7, 0]);
        assert_eq!(batch.targets, vec![-100, 3, 4, -100, 6, 7, -100, -100]);
        assert_eq!(batch.num_scored(), 4);
    }
}
