//! A data file made ready to train on: loaded, validated and fitted into the
//! block, by the same tested functions whatever the kind of row.

use std::path::Path;

use transformer::Tokenizer;

use super::{
    load_preferences, load_sft, truncate_preferences, truncate_sft_rows, DataError, LoadReport,
    PreferenceRow, SftRow, TruncationReport,
};

/// A kind of row a data file holds: preference pairs or supervised rows.
pub trait TrainingRow: Clone + Send + Sync + Sized {
    /// Reads and validates a file of such rows ([`load_preferences`], [`load_sft`]).
    fn load(
        path: &Path,
        tokenizer: &dyn Tokenizer,
        vocab_size: usize,
        skip_invalid: bool,
    ) -> Result<(Vec<Self>, LoadReport), DataError>;

    /// Fits rows into the block ([`truncate_preferences`], [`truncate_sft_rows`]).
    fn truncate(
        rows: &[Self],
        block_size: usize,
        max_prompt_length: usize,
        skip_invalid: bool,
    ) -> Result<(Vec<Self>, TruncationReport), DataError>;

    /// The length of the row's longest sequence: what it adds to the padded
    /// length of a batch (the key of length-grouped batching).
    fn padded_len(&self) -> usize;
}

impl TrainingRow for PreferenceRow {
    fn load(
        path: &Path,
        tokenizer: &dyn Tokenizer,
        vocab_size: usize,
        skip_invalid: bool,
    ) -> Result<(Vec<Self>, LoadReport), DataError> {
        load_preferences(path, tokenizer, vocab_size, skip_invalid)
    }

    fn truncate(
        rows: &[Self],
        block_size: usize,
        max_prompt_length: usize,
        skip_invalid: bool,
    ) -> Result<(Vec<Self>, TruncationReport), DataError> {
        truncate_preferences(rows, block_size, max_prompt_length, skip_invalid)
    }

    fn padded_len(&self) -> usize {
        self.max_sequence_len()
    }
}

impl TrainingRow for SftRow {
    fn load(
        path: &Path,
        tokenizer: &dyn Tokenizer,
        vocab_size: usize,
        skip_invalid: bool,
    ) -> Result<(Vec<Self>, LoadReport), DataError> {
        load_sft(path, tokenizer, vocab_size, skip_invalid)
    }

    fn truncate(
        rows: &[Self],
        block_size: usize,
        max_prompt_length: usize,
        skip_invalid: bool,
    ) -> Result<(Vec<Self>, TruncationReport), DataError> {
        truncate_sft_rows(rows, block_size, max_prompt_length, skip_invalid)
    }

    fn padded_len(&self) -> usize {
        self.sequence_len()
    }
}

/// The rows of a file, ready to train on, and what preparing them did.
#[derive(Debug, Clone)]
pub struct PreparedRows<R> {
    /// The rows, validated and truncated, in file order.
    pub rows: Vec<R>,
    /// Rows read and bad rows skipped.
    pub load: LoadReport,
    /// Rows truncated, and rows skipped for having no scored token left.
    pub truncation: TruncationReport,
}

/// Loads `path` ([`TrainingRow::load`]), then truncates every row into
/// `block_size` with a prompt budget of `max_prompt_length`
/// ([`TrainingRow::truncate`]). A file left with no row is an error.
pub fn prepare_rows<R: TrainingRow>(
    path: &Path,
    tokenizer: &dyn Tokenizer,
    vocab_size: usize,
    block_size: usize,
    max_prompt_length: usize,
    skip_invalid: bool,
) -> Result<PreparedRows<R>, DataError> {
    let (rows, load) = R::load(path, tokenizer, vocab_size, skip_invalid)?;
    let (rows, truncation) = R::truncate(&rows, block_size, max_prompt_length, skip_invalid)?;
    if rows.is_empty() {
        return Err(DataError::NoRows {
            path: path.display().to_string(),
            skipped: load.skipped + truncation.skipped,
        });
    }
    Ok(PreparedRows {
        rows,
        load,
        truncation,
    })
}
