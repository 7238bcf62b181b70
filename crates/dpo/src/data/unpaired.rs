//! Unpaired rows for KTO: one completion per line, labelled desirable or not,
//! and the mismatched "KL" sequences KTO estimates its KL term from.
//!
//! ```json
//! {"prompt": "2+2=", "completion": "4", "label": true}
//! {"prompt_ids": [50, 43, 50, 61], "completion_ids": [53], "label": false}
//! ```
//!
//! Conversational rows have `prompt` and `completion` lists of messages
//! (module `conversation`). Loading, bad lines, `--skip-invalid` and truncation follow the rules of
//! every other row (docs/spec.md section 3): the completion is the one
//! response, truncated like an SFT completion.

use super::conversation::is_conversational;
use super::jsonl::{read_rows, JsonRow};
use super::prepare::{LoadFn, TrainingRow};
use super::rows::{
    check_form, check_scored, conversational_completion, counting_divergence, prompt_and_completion,
};
use super::{BadLine, DataError, LoadReport, SftRow};
use serde_json::Value;
use std::path::Path;
use transformer::Tokenizer;

/// One unpaired row, tokenized: a completion after a prompt, and whether a
/// person marked it desirable (thumbs up) or undesirable (thumbs down).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnpairedRow {
    /// Prompt ids (may be empty).
    pub prompt: Vec<u32>,
    /// Ids of the completion, the scored part of the sequence.
    pub completion: Vec<u32>,
    /// `label`: true for a desirable completion, false for an undesirable one.
    pub desirable: bool,
    /// 1-based line of the row in its file (for error messages).
    pub line: usize,
}

impl UnpairedRow {
    /// Length of the sequence `prompt + completion`.
    pub fn sequence_len(&self) -> usize {
        self.prompt.len() + self.completion.len()
    }

    /// The row as the sequence `prompt + completion` (the label dropped).
    pub fn to_sequence(&self) -> SftRow {
        SftRow {
            prompt: self.prompt.clone(),
            completion: self.completion.clone(),
            line: self.line,
            completion_mask: None,
        }
    }
}

/// The `label` field: a JSON boolean.
fn parse_label(row: &JsonRow) -> Result<bool, BadLine> {
    match row.get("label") {
        Some(Value::Bool(desirable)) => Ok(*desirable),
        Some(other) => Err(BadLine::LabelNotBool(other.to_string())),
        None => Err(BadLine::MissingLabel),
    }
}

/// One unpaired row: `{"prompt", "completion", "label"}` or its `_ids` form.
fn parse_unpaired(
    row: &JsonRow,
    line: usize,
    tokenizer: &dyn Tokenizer,
    vocab_size: usize,
    prompt_not_prefix: &mut usize,
) -> Result<UnpairedRow, BadLine> {
    let (prompt, completion) = if is_conversational(row) {
        conversational_completion(row, tokenizer, vocab_size, prompt_not_prefix)?
    } else {
        check_form(row, &["prompt", "completion"])?;
        prompt_and_completion(row, tokenizer, vocab_size)?
    };
    let desirable = parse_label(row)?;
    check_scored(&prompt, &completion, "completion")?;
    Ok(UnpairedRow {
        prompt,
        completion,
        desirable,
        line,
    })
}

/// Loads an unpaired JSONL file (`.gz` read through gzip): `{"prompt",
/// "completion", "label"}` rows (text, tokenized by `tokenizer`) or
/// `{"prompt_ids", "completion_ids", "label"}` (used verbatim), `label` a
/// JSON boolean. Bad lines as in [`super::load_preferences`], plus a missing
/// or non-boolean `label`.
pub fn load_unpaired(
    path: &Path,
    tokenizer: &dyn Tokenizer,
    vocab_size: usize,
    skip_invalid: bool,
) -> Result<(Vec<UnpairedRow>, LoadReport), DataError> {
    counting_divergence(|count| {
        read_rows(path, skip_invalid, |row, line| {
            parse_unpaired(row, line, tokenizer, vocab_size, count)
        })
    })
}

impl TrainingRow for UnpairedRow {
    const LOAD: LoadFn<Self> = |path, tokenizer, vocab_size, options| {
        load_unpaired(path, tokenizer, vocab_size, options.skip_invalid)
    };

    fn prompt(&self) -> &[u32] {
        &self.prompt
    }

    fn responses(&self) -> Vec<(&'static str, &[u32])> {
        vec![("completion", &self.completion)]
    }

    fn cut(&self, prompt_start: usize, keep: usize) -> Self {
        UnpairedRow {
            prompt: self.prompt[prompt_start..].to_vec(),
            completion: self.completion[..keep.min(self.completion.len())].to_vec(),
            desirable: self.desirable,
            line: self.line,
        }
    }

    fn line(&self) -> usize {
        self.line
    }
}

/// Whose completion the KL sequence of each row gets, as TRL's `KTOTrainer`
/// builds its KL dataset: the rows, in order, are cut into chunks of
/// `batch_size` (the last may be shorter), and within each chunk the
/// completions are rotated by one, `(x_1, y_m), (x_2, y_1), ..., (x_m, y_{m-1})`.
/// A chunk of one row pairs it with its own completion.
///
/// Panics if `batch_size` is 0.
pub fn kl_partners(rows: usize, batch_size: usize) -> Vec<usize> {
    assert!(batch_size > 0, "kl_partners: batch_size must be positive");
    let mut partners = Vec::with_capacity(rows);
    for start in (0..rows).step_by(batch_size) {
        let m = batch_size.min(rows - start);
        partners.extend((0..m).map(|k| start + (k + m - 1) % m));
    }
    partners
}

/// The KL sequence of every row: its own prompt followed by its partner's
/// completion ([`kl_partners`]), the completion cut from the right to fit
/// `block_size` after the prompt. A KL sequence may score no token (an empty
/// prompt before a 1-token completion): it then adds 0 to both log-probs.
///
/// Panics if `batch_size` is 0 or a prompt does not leave room in the block
/// (rows come out of [`super::truncate_rows`] with room for a completion).
pub fn kl_sequences(rows: &[UnpairedRow], batch_size: usize, block_size: usize) -> Vec<SftRow> {
    kl_partners(rows.len(), batch_size)
        .into_iter()
        .zip(rows)
        .map(|(partner, row)| {
            assert!(
                row.prompt.len() < block_size,
                "kl_sequences: line {}: a prompt of {} tokens leaves no room in a block of {block_size}",
                row.line,
                row.prompt.len()
            );
            let completion = &rows[partner].completion;
            let keep = completion.len().min(block_size - row.prompt.len());
            SftRow {
                prompt: row.prompt.clone(),
                completion: completion[..keep].to_vec(),
                line: row.line, completion_mask: None }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partners_rotate_within_chunks() {
        assert_eq!(kl_partners(5, 2), vec![1, 0, 3, 2, 4]);
        assert_eq!(kl_partners(3, 8), vec![2, 0, 1]);
        assert_eq!(kl_partners(0, 4), Vec::<usize>::new());
    }
}
