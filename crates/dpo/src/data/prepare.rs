//! A data file made ready to train on: loaded, validated and fitted into the
//! block, by the same tested functions whatever the kind of row.

use std::path::Path;

use transformer::Tokenizer;

use super::{
    load_preferences, load_sft, truncate_preferences, truncate_sft_rows, DataError, LoadReport,
    PreferenceRow, SftRow, TruncationReport,
};

/// Reads and validates a file of rows: `(path, tokenizer, vocab_size,
/// skip_invalid)` -> the rows and what was skipped.
pub type LoadFn<R> =
    fn(&Path, &dyn Tokenizer, usize, bool) -> Result<(Vec<R>, LoadReport), DataError>;

/// Fits rows into the block: `(rows, block_size, max_prompt_length,
/// skip_invalid)` -> the rows and what was cut or skipped.
pub type TruncateFn<R> =
    fn(&[R], usize, usize, bool) -> Result<(Vec<R>, TruncationReport), DataError>;

/// A kind of row a data file holds: preference pairs or supervised rows.
pub trait TrainingRow: Clone + Send + Sync + Sized {
    /// How a file of such rows is read ([`load_preferences`], [`load_sft`]).
    const LOAD: LoadFn<Self>;

    /// How such rows are fitted into the block ([`truncate_preferences`],
    /// [`truncate_sft_rows`]).
    const TRUNCATE: TruncateFn<Self>;

    /// The length of the row's longest sequence: what it adds to the padded
    /// length of a batch (the key of length-grouped batching).
    fn padded_len(&self) -> usize;
}

impl TrainingRow for PreferenceRow {
    const LOAD: LoadFn<Self> = load_preferences;
    const TRUNCATE: TruncateFn<Self> = truncate_preferences;

    fn padded_len(&self) -> usize {
        self.max_sequence_len()
    }
}

impl TrainingRow for SftRow {
    const LOAD: LoadFn<Self> = load_sft;
    const TRUNCATE: TruncateFn<Self> = truncate_sft_rows;

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

/// Loads `path` ([`TrainingRow::LOAD`]), then truncates every row into
/// `block_size` with a prompt budget of `max_prompt_length`
/// ([`TrainingRow::TRUNCATE`]). A file left with no row is an error.
pub fn prepare_rows<R: TrainingRow>(
    path: &Path,
    tokenizer: &dyn Tokenizer,
    vocab_size: usize,
    block_size: usize,
    max_prompt_length: usize,
    skip_invalid: bool,
) -> Result<PreparedRows<R>, DataError> {
    let (rows, load) = R::LOAD(path, tokenizer, vocab_size, skip_invalid)?;
    let (rows, truncation) = R::TRUNCATE(&rows, block_size, max_prompt_length, skip_invalid)?;
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
