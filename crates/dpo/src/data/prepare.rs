//! A data file made ready to train on: loaded, validated and fitted into the
//! block, by the same tested functions whatever the kind of row.

use std::path::Path;

use transformer::Tokenizer;

use super::{
    load_preferences, load_sft_with, scored_tokens, truncate_rows, DataError, LoadReport,
    PreferenceRow, SftRow, TruncationReport,
};

/// How a file of rows is read.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LoadOptions {
    /// Skip bad rows (counted in the report) instead of refusing the file.
    pub skip_invalid: bool,
    /// SFT rows: train only on the assistant's tokens, those inside the chat
    /// template's generation blocks (TRL's `assistant_only_loss`).
    pub assistant_only_loss: bool,
}

/// Reads and validates a file of rows: `(path, tokenizer, vocab_size,
/// options)` -> the rows and what was skipped.
pub type LoadFn<R> =
    fn(&Path, &dyn Tokenizer, usize, &LoadOptions) -> Result<(Vec<R>, LoadReport), DataError>;

/// A kind of row a data file holds: preference pairs, supervised rows or
/// unpaired (KTO) rows. Each is a prompt followed by one or more responses
/// scored after it; loading, truncation and batching read them through this.
pub trait TrainingRow: Clone + Send + Sync + Sized {
    /// How a file of such rows is read ([`load_preferences`], [`super::load_sft`],
    /// [`super::load_unpaired`]).
    const LOAD: LoadFn<Self>;

    /// The prompt's ids.
    fn prompt(&self) -> &[u32];

    /// Each response scored after the prompt, under its field name
    /// (`chosen` and `rejected`, or `completion`).
    fn responses(&self) -> Vec<(&'static str, &[u32])>;

    /// The row with its prompt from `prompt_start` on and each response cut
    /// to its first `keep` tokens (truncation).
    fn cut(&self, prompt_start: usize, keep: usize) -> Self;

    /// 1-based line of the row in its file (for error messages).
    fn line(&self) -> usize;

    /// Each response's number of target tokens (all of its tokens but the
    /// sequence's first, unless a mask says otherwise).
    fn scored(&self) -> Vec<(&'static str, usize)> {
        self.responses()
            .into_iter()
            .map(|(field, response)| (field, scored_tokens(self.prompt(), response)))
            .collect()
    }

    /// The length of the row's longest sequence, prompt + longest response:
    /// what it adds to the padded length of a batch (the key of
    /// length-grouped batching).
    fn padded_len(&self) -> usize {
        let longest = self.responses().iter().map(|(_, r)| r.len()).max();
        self.prompt().len() + longest.unwrap_or(0)
    }
}

impl TrainingRow for PreferenceRow {
    const LOAD: LoadFn<Self> = |path, tokenizer, vocab_size, options| {
        load_preferences(path, tokenizer, vocab_size, options.skip_invalid)
    };

    fn prompt(&self) -> &[u32] {
        &self.prompt
    }

    fn responses(&self) -> Vec<(&'static str, &[u32])> {
        vec![("chosen", &self.chosen), ("rejected", &self.rejected)]
    }

    fn cut(&self, prompt_start: usize, keep: usize) -> Self {
        PreferenceRow {
            prompt: self.prompt[prompt_start..].to_vec(),
            chosen: self.chosen[..keep.min(self.chosen.len())].to_vec(),
            rejected: self.rejected[..keep.min(self.rejected.len())].to_vec(),
            line: self.line,
        }
    }

    fn line(&self) -> usize {
        self.line
    }
}

impl TrainingRow for SftRow {
    const LOAD: LoadFn<Self> = load_sft_with;

    fn prompt(&self) -> &[u32] {
        &self.prompt
    }

    fn responses(&self) -> Vec<(&'static str, &[u32])> {
        vec![("completion", &self.completion)]
    }

    fn scored(&self) -> Vec<(&'static str, usize)> {
        let all = scored_tokens(&self.prompt, &self.completion);
        let count = match &self.completion_mask {
            None => all,
            // The first token of a sequence is never a target, masked or not.
            Some(mask) => mask
                .iter()
                .enumerate()
                .filter(|&(j, &trained)| trained && self.prompt.len() + j >= 1)
                .count(),
        };
        vec![("completion", count)]
    }

    fn cut(&self, prompt_start: usize, keep: usize) -> Self {
        let keep = keep.min(self.completion.len());
        SftRow {
            prompt: self.prompt[prompt_start..].to_vec(),
            completion: self.completion[..keep].to_vec(),
            line: self.line,
            completion_mask: self
                .completion_mask
                .as_ref()
                .map(|mask| mask[..keep].to_vec()),
        }
    }

    fn line(&self) -> usize {
        self.line
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
/// ([`truncate_rows`]). A file left with no row is an error.
pub fn prepare_rows<R: TrainingRow>(
    path: &Path,
    tokenizer: &dyn Tokenizer,
    vocab_size: usize,
    block_size: usize,
    max_prompt_length: usize,
    options: &LoadOptions,
) -> Result<PreparedRows<R>, DataError> {
    let (rows, load) = R::LOAD(path, tokenizer, vocab_size, options)?;
    let (rows, truncation) =
        truncate_rows(&rows, block_size, max_prompt_length, options.skip_invalid)?;
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
