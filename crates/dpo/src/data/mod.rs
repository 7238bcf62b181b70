//! Preference and SFT data: JSON Lines or Parquet files -> validated token rows ->
//! truncated rows -> padded token batches (docs/spec.md section 3).
//!
//! The pipeline, in the order the trainer runs it:
//!
//! 1. [`load_preferences`] / [`load_sft`] / [`load_unpaired`] (KTO) read a
//!    `.jsonl` (or `.jsonl.gz`) file, a `.parquet` file or a directory of
//!    Parquet shards, tokenize text fields, and refuse every bad line (or
//!    row) with its 1-based number before anything is trained
//!    ([`DataError`] prints `path:LINE: message`). With `skip_invalid` the
//!    bad rows are skipped and counted in a [`LoadReport`] instead.
//! 2. [`truncate_rows`] (per row: [`truncate_row`]) fits each row into the
//!    block with the contract's keep-the-end-of-the-prompt rule, through the
//!    row trait [`TrainingRow`] (a prompt and the responses scored after it).
//!    [`prepare_rows`] runs steps 1 and 2 for any kind of row.
//! 3. [`eval_split`] holds rows out; [`epoch_batches`] ([`shuffled_batches`]
//!    or [`length_grouped_batches`]) chooses which rows go together.
//! 4. [`collate_pairs`] / [`collate_sft`] lay a batch out as right-padded ids
//!    and shifted targets (`-100` where nothing is scored), the layout the
//!    fused log-prob kernels read; [`collate_shared_pairs`] lays each pair out
//!    as one sequence `[prompt | chosen | rejected]` (prefix sharing,
//!    [`PairLayout`]).
//!
//! The PyTorch reference is `tests/golden/torch_reference.py` (`load_prefs`,
//! `load_sft`, `truncate_row`, `batch`, `get_log_probs`).

mod batch;
mod collect;
mod conversation;
mod hh_rlhf;
mod jsonl;
mod parquet_rows;
mod prepare;
mod rows;
mod shared_batch;
mod split;
mod truncate;
mod unpaired;

pub use batch::{
    chosen_prompt_targets, collate_pairs, collate_sft, PairBatch, SftTokens, IGNORE_INDEX,
};
pub use hh_rlhf::{convert_hh_rlhf, hh_rlhf_to_messages, HhRlhfError};
pub use jsonl::MAX_LINE_BYTES;
pub use parquet_rows::{read_parquet_objects, ParquetObject, MAX_PAGE_BYTES};
pub use prepare::{prepare_rows, LoadOptions, PreparedRows, TrainingRow};
pub use rows::{
    load_preferences, load_sft, load_sft_with, read_preferences, read_sft, scored_tokens,
};
pub use shared_batch::{collate_shared_pairs, PairInputs, PairLayout, SharedPairBatch};
pub use split::{
    epoch_batches, eval_split, length_grouped_batches, padding_share, shuffled_batches, BatchOrder,
};
pub use truncate::{
    check_max_prompt_length, default_max_prompt_length, truncate_row, truncate_rows,
    TruncationReport,
};
pub use unpaired::{kl_partners, kl_sequences, load_unpaired, UnpairedRow};

use std::fmt;

/// How many skipped line numbers a report keeps (the rest are only counted).
pub const MAX_REPORTED_LINES: usize = 10;

/// One preference pair, tokenized: the sequences `prompt + chosen` and
/// `prompt + rejected` share the prompt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PreferenceRow {
    /// Prompt ids (empty for an implicit-prompt row whose texts differ at once).
    pub prompt: Vec<u32>,
    /// Ids of the preferred response.
    pub chosen: Vec<u32>,
    /// Ids of the dispreferred response.
    pub rejected: Vec<u32>,
    /// 1-based line of the row in its file (for error messages).
    pub line: usize,
}

impl PreferenceRow {
    /// Length of the longer of the row's two sequences, `prompt + max(chosen, rejected)`:
    /// what the row adds to a batch's padded length.
    pub fn max_sequence_len(&self) -> usize {
        self.prompt.len() + self.chosen.len().max(self.rejected.len())
    }
}

/// One supervised row, tokenized: the target is `completion`, scored after `prompt`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SftRow {
    /// Prompt ids (empty for a `{"text": ...}` row).
    pub prompt: Vec<u32>,
    /// Ids of the completion: every one is a target except the first token of
    /// the sequence (which nothing predicts).
    pub completion: Vec<u32>,
    /// Which completion tokens are targets, where not all are: with
    /// `--assistant-only-loss`, those inside the chat template's generation
    /// blocks (TRL's `assistant_masks`). `None`: every completion token.
    pub completion_mask: Option<Vec<bool>>,
    /// 1-based line of the row in its file (for error messages).
    pub line: usize,
}

impl SftRow {
    /// Length of the sequence `prompt + completion`.
    pub fn sequence_len(&self) -> usize {
        self.prompt.len() + self.completion.len()
    }
}

/// What a loader read: rows kept, rows skipped (only with `skip_invalid`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LoadReport {
    /// Number of rows loaded.
    pub rows: usize,
    /// Number of bad rows skipped.
    pub skipped: usize,
    /// Line numbers of the first [`MAX_REPORTED_LINES`] skipped rows.
    pub first_skipped_lines: Vec<usize>,
    /// Why the first skipped rows were bad (same order as `first_skipped_lines`).
    pub first_skipped_reasons: Vec<String>,
    /// Conversational rows whose prompt, rendered alone, is not a prefix of
    /// prompt + response: their responses start where the two diverge (TRL's
    /// rule, with its warning).
    pub prompt_not_prefix: usize,
}

impl LoadReport {
    /// Counts a skipped row, keeping its line and reason if it is among the first few.
    pub(crate) fn skip(&mut self, line: usize, reason: String) {
        self.skipped += 1;
        if self.first_skipped_lines.len() < MAX_REPORTED_LINES {
            self.first_skipped_lines.push(line);
            self.first_skipped_reasons.push(reason);
        }
    }
}

impl fmt::Display for LoadReport {
    /// One line, e.g. `2307 rows, 5 bad rows skipped (lines 87, 517, 926, 1104, 1610)`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} rows", self.rows)?;
        if self.skipped > 0 {
            write!(f, ", {} bad rows skipped", self.skipped)?;
            write_lines(f, &self.first_skipped_lines, self.skipped)?;
        }
        Ok(())
    }
}

/// Writes ` (lines 3, 8, ...)` for the first line numbers of `count` rows.
pub(crate) fn write_lines(
    f: &mut fmt::Formatter<'_>,
    lines: &[usize],
    count: usize,
) -> fmt::Result {
    let listed: Vec<String> = lines.iter().map(|l| l.to_string()).collect();
    let more = if count > lines.len() { ", ..." } else { "" };
    let word = if lines.len() == 1 { "line" } else { "lines" };
    write!(f, " ({word} {}{more})", listed.join(", "))
}

/// Why one line of a data file is refused (docs/spec.md section 3).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BadLine {
    /// The line's bytes are not UTF-8.
    #[error("not valid UTF-8")]
    NotUtf8,
    /// A string value of a Parquet row whose bytes are not UTF-8.
    #[error("column {column} is not valid UTF-8")]
    ValueNotUtf8 {
        /// The top-level column that holds it.
        column: String,
    },
    /// The line does not parse as JSON.
    #[error("not valid JSON: {0}")]
    NotJson(String),
    /// The line is JSON but not an object.
    #[error("not a JSON object")]
    NotObject,
    /// Text fields and `_ids` fields in one row (a row is all text or all ids).
    #[error("row mixes text fields ({text}) and _ids fields ({ids})")]
    MixedForm {
        /// The text fields present, comma-separated.
        text: String,
        /// The `_ids` fields present, comma-separated.
        ids: String,
    },
    /// A required field is absent in both its text and `_ids` forms.
    #[error("missing field '{field}' (or '{field}_ids')")]
    MissingField {
        /// The field's text name.
        field: &'static str,
    },
    /// A text field that is not a JSON string.
    #[error("{field} must be a string")]
    NotString {
        /// The field's text name.
        field: &'static str,
    },
    /// An `_ids` field that is not a list of integers.
    #[error("{field}_ids must be a list of integers")]
    NotIdList {
        /// The field's text name.
        field: &'static str,
    },
    /// A token id outside `[0, vocab_size)` (from `_ids`, or from the tokenizer).
    #[error("token id {id} in {field} out of range [0, {vocab_size})")]
    IdOutOfRange {
        /// The field's text name.
        field: &'static str,
        /// The offending id.
        id: i128,
        /// The model's vocabulary size.
        vocab_size: usize,
    },
    /// A response (or completion, or text) that would contribute no log-prob.
    #[error(
        "{field} has no scored token (a response needs at least one token, \
         two when the prompt is empty)"
    )]
    NoScoredToken {
        /// The field's text name.
        field: &'static str,
    },
    /// Implicit-prompt row in which one response is a prefix of the other.
    #[error(
        "{field} is empty once the common prefix of chosen and rejected is taken \
         as the prompt (implicit-prompt row)"
    )]
    EmptyImplicitResponse {
        /// `chosen` or `rejected`.
        field: &'static str,
    },
    /// A conversational field that is not a list of messages.
    #[error("{field} must be a list of messages, objects with a \"role\" string (a row's fields are all messages or all text)")]
    NotMessages {
        /// The field's name.
        field: &'static str,
    },
    /// A conversational row without a field it needs.
    #[error("missing field '{field}' (a list of messages)")]
    MissingMessages {
        /// The field's name.
        field: &'static str,
    },
    /// The chat template is missing, or failed on the row's messages.
    #[error("{0}")]
    ChatTemplate(String),
    /// A `text` row that also has prompt/completion/chosen/rejected fields.
    #[error("a text row cannot also have {field}")]
    TextRowWithOtherField {
        /// The extra field's name as written in the row.
        field: String,
    },
    /// `--assistant-only-loss` on a row that is not a conversation.
    #[error("--assistant-only-loss needs conversational rows (lists of messages), as TRL's assistant_only_loss")]
    AssistantOnlyNeedsMessages,
    /// `--assistant-only-loss` with a template that marks no assistant text.
    #[error("--assistant-only-loss needs a chat template that marks the assistant's text with {{% generation %}} ... {{% endgeneration %}} (give one with --chat-template FILE)")]
    NoGenerationBlocks,
    /// `--assistant-only-loss` on a row with no assistant token to train on.
    #[error("no assistant token to train on (--assistant-only-loss): the row has no assistant message, or the template's generation blocks are empty")]
    NoAssistantTokens,
    /// An HH-RLHF row whose dialogues do not follow its layout.
    #[error("not an HH-RLHF dialogue pair: {0}")]
    NotHhRlhf(hh_rlhf::HhRlhfError),
    /// An unpaired (KTO) row without its `label`.
    #[error("missing field 'label' (true: a desirable completion, false: an undesirable one)")]
    MissingLabel,
    /// An unpaired (KTO) row whose `label` is not a JSON boolean.
    #[error("label must be true or false, got {0}")]
    LabelNotBool(String),
}

/// Every way loading or preparing data can fail. `Display` is one line.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    /// The file cannot be opened.
    #[error("{path}: cannot open: {error}")]
    Open {
        /// The file as given.
        path: String,
        /// The I/O error (in the message, not a `source()`, so that a
        /// printed error chain says it once).
        error: std::io::Error,
    },
    /// Reading failed part-way (a truncated or corrupt `.gz`, a disk error).
    #[error("{path}:{line}: cannot read: {error}")]
    Read {
        /// The file as given.
        path: String,
        /// The line being read.
        line: usize,
        /// The I/O error (in the message, not a `source()`, so that a
        /// printed error chain says it once).
        error: std::io::Error,
    },
    /// A line longer than [`MAX_LINE_BYTES`]: refused before it fills the memory.
    #[error("{path}:{line}: the line is longer than {} MiB, the most a data line may hold", .max_bytes >> 20)]
    LineTooLong {
        /// The file as given.
        path: String,
        /// 1-based line number.
        line: usize,
        /// The cap, in bytes.
        max_bytes: usize,
    },
    /// An output file could not be written.
    #[error("{path}: cannot write: {message}")]
    Write {
        /// The file as given.
        path: String,
        /// What went wrong.
        message: String,
    },
    /// A bad line (see [`BadLine`]), reported as `path:LINE: why`.
    #[error("{path}:{line}: {problem}")]
    BadLine {
        /// The file as given.
        path: String,
        /// 1-based line number.
        line: usize,
        /// What is wrong with it.
        problem: BadLine,
    },
    /// The file holds no row (empty, blank, or every row skipped).
    #[error("{path}: no data rows{}", if *.skipped > 0 { format!(" ({} bad rows skipped)", .skipped) } else { String::new() })]
    NoRows {
        /// The file as given.
        path: String,
        /// Bad rows skipped on the way (with `skip_invalid`).
        skipped: usize,
    },
    /// A Parquet file that cannot be read: not Parquet, truncated, corrupt,
    /// or declaring a size past the file or past [`MAX_PAGE_BYTES`].
    #[error("{path}: cannot read as Parquet: {reason}")]
    Parquet {
        /// The file as given (a shard, for a directory).
        path: String,
        /// What is wrong, one line.
        reason: String,
    },
    /// A directory given as data that holds no `.parquet` file.
    #[error("{path}: a directory with no .parquet file in it")]
    NoParquetFiles {
        /// The directory as given.
        path: String,
    },
    /// `--max-prompt-length` not below `block_size`.
    #[error("max prompt length {max_prompt_length} must be below the block size {block_size}")]
    MaxPromptLength {
        /// The requested prompt budget.
        max_prompt_length: usize,
        /// The model's context length.
        block_size: usize,
    },
    /// Truncation left a response with nothing to score (only possible with a
    /// max prompt length of 0 and a 1-token response).
    #[error(
        "line {line}: {field} has no scored token after truncation \
         (prompt cut to {prompt_len} tokens by max prompt length {max_prompt_length})"
    )]
    NoScoredTokenAfterTruncation {
        /// 1-based line of the row in its file.
        line: usize,
        /// `chosen`, `rejected` or `completion`.
        field: &'static str,
        /// Prompt length after truncation.
        prompt_len: usize,
        /// The prompt budget used.
        max_prompt_length: usize,
    },
}

impl DataError {
    /// The 1-based line the error is about, if it is about one line.
    pub fn line(&self) -> Option<usize> {
        match self {
            DataError::Read { line, .. }
            | DataError::BadLine { line, .. }
            | DataError::LineTooLong { line, .. }
            | DataError::NoScoredTokenAfterTruncation { line, .. } => Some(*line),
            _ => None,
        }
    }
}
