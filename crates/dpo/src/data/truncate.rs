//! Per-row truncation into the model's block (docs/spec.md section 3; the
//! reference's `truncate_row`), the behaviour of the original DPO code and of
//! TRL's `DPOTrainer` up to 0.28 with `truncation_mode="keep_end"`.

use super::prepare::TrainingRow;
use super::{write_lines, DataError, MAX_REPORTED_LINES};
use std::fmt;

/// The default prompt budget: `block_size / 2` (integer division).
pub fn default_max_prompt_length(block_size: usize) -> usize {
    block_size / 2
}

/// A prompt budget must leave room for a response: `max_prompt_length < block_size`.
pub fn check_max_prompt_length(
    block_size: usize,
    max_prompt_length: usize,
) -> Result<(), DataError> {
    if max_prompt_length >= block_size {
        return Err(DataError::MaxPromptLength {
            max_prompt_length,
            block_size,
        });
    }
    Ok(())
}

/// The cut for one row, `None` when it fits: (first prompt token kept,
/// response tokens kept).
///
/// With P = `max_prompt_length`: if `prompt_len + longest_response > block_size`,
/// the prompt keeps its last P tokens (all of them if it has no more), then
/// each response is cut from the right to `block_size - len(prompt)`.
fn plan_cut(
    prompt_len: usize,
    longest_response: usize,
    block_size: usize,
    max_prompt_length: usize,
) -> Option<(usize, usize)> {
    assert!(
        max_prompt_length < block_size,
        "truncate: max_prompt_length {max_prompt_length} must be below block_size {block_size} \
         (validate with check_max_prompt_length)"
    );
    if prompt_len + longest_response <= block_size {
        return None;
    }
    let prompt_start = prompt_len.saturating_sub(max_prompt_length);
    let response_keep = block_size - (prompt_len - prompt_start);
    Some((prompt_start, response_keep))
}

/// Fits a row into `block_size` by the rule of `plan_cut` (above), applied to its
/// prompt and its longest response. A preference row is cut as a whole:
/// chosen and rejected keep the same prompt (the partition function cancels
/// only for the same prompt); an SFT or unpaired row's one response is its
/// completion, so a `text` row (empty prompt) is cut from the right to
/// `block_size`. Returns the row and whether anything was cut.
///
/// Panics if `max_prompt_length >= block_size` (see [`check_max_prompt_length`]).
pub fn truncate_row<R: TrainingRow>(
    row: &R,
    block_size: usize,
    max_prompt_length: usize,
) -> (R, bool) {
    let longest = row
        .responses()
        .iter()
        .map(|(_, r)| r.len())
        .max()
        .unwrap_or(0);
    match plan_cut(row.prompt().len(), longest, block_size, max_prompt_length) {
        None => (row.clone(), false),
        Some((prompt_start, keep)) => (row.cut(prompt_start, keep), true),
    }
}

/// What truncating a data set did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TruncationReport {
    /// Rows in which anything was cut (the contract's `truncated_rows`).
    pub truncated: usize,
    /// Rows dropped because a response lost its last scored token (only with
    /// `skip_invalid`; possible only with a prompt budget of 0).
    pub skipped: usize,
    /// File lines of the first skipped rows.
    pub first_skipped_lines: Vec<usize>,
}

impl TruncationReport {
    pub(super) fn skip(&mut self, line: usize) {
        self.skipped += 1;
        if self.first_skipped_lines.len() < MAX_REPORTED_LINES {
            self.first_skipped_lines.push(line);
        }
    }
}

impl fmt::Display for TruncationReport {
    /// One line, e.g. `3 rows truncated`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = if self.truncated == 1 { "" } else { "s" };
        write!(f, "{} row{s} truncated", self.truncated)?;
        if self.skipped > 0 {
            write!(
                f,
                ", {} rows skipped with no scored token left",
                self.skipped
            )?;
            write_lines(f, &self.first_skipped_lines, self.skipped)?;
        }
        Ok(())
    }
}

/// A truncated row must still score a token in every response. With a
/// prompt budget of at least 1 this always holds; with 0, a prompt cut to
/// nothing in front of a 1-token response breaks it, and the row is refused
/// (the reference's `_check_scored_after_truncation`).
pub(super) fn check_scored_after_truncation(
    line: usize,
    prompt_len: usize,
    scored: &[(&'static str, usize)],
    max_prompt_length: usize,
) -> Result<(), DataError> {
    for &(field, count) in scored {
        if count < 1 {
            return Err(DataError::NoScoredTokenAfterTruncation {
                line,
                field,
                prompt_len,
                max_prompt_length,
            });
        }
    }
    Ok(())
}

/// Truncates every row ([`truncate_row`]) and counts the cut rows. A row
/// left with an unscored response is an error, or with `skip_invalid` is
/// dropped and counted (so the result can be empty: the caller decides).
pub fn truncate_rows<R: TrainingRow>(
    rows: &[R],
    block_size: usize,
    max_prompt_length: usize,
    skip_invalid: bool,
) -> Result<(Vec<R>, TruncationReport), DataError> {
    check_max_prompt_length(block_size, max_prompt_length)?;
    let mut report = TruncationReport::default();
    let mut kept = Vec::with_capacity(rows.len());
    for row in rows {
        let (row, truncated) = truncate_row(row, block_size, max_prompt_length);
        report.truncated += usize::from(truncated);
        let checked = check_scored_after_truncation(
            row.line(),
            row.prompt().len(),
            &row.scored(),
            max_prompt_length,
        );
        match checked {
            Ok(()) => kept.push(row),
            Err(_) if skip_invalid => report.skip(row.line()),
            Err(e) => return Err(e),
        }
    }
    Ok((kept, report))
}
