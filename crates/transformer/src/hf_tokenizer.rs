//! Hugging Face tokenizers: a checkpoint directory's `tokenizer.json`.
//!
//! A checkpoint directory with a `tokenizer.json` (the format of the
//! `tokenizers` library, e.g. GPT-2's byte-level BPE) is tokenized with it;
//! one without is tokenized by bytes ([`crate::ByteTokenizer`]). The file is
//! run by the Rust `tokenizers` crate itself, built with its pure-Rust regex
//! engine (`fancy-regex`, no C library), so ids are those of the Python
//! `tokenizers` library (the tests check it on non-ASCII text too).
//!
//! The end-of-sequence token is `eos_token` of the `tokenizer_config.json`
//! beside it (a string, or an object with a `content`), as transformers
//! reads it, else that of `special_tokens_map.json`, else the model's
//! `eos_token_id` in `config.json` (GPT-2's own files name it only there:
//! transformers' `GPT2Tokenizer` defaults to `<|endoftext|>`); without any,
//! the tokenizer has no EOS.
//!
//! Texts are encoded without special tokens added around them (transformers'
//! `add_special_tokens=False`, as TRL encodes); special tokens written in a
//! text (`<|endoftext|>`) are still recognised as themselves.

use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::checkpoint::{read_bounded, CheckpointError};
use crate::tokenizer::{ByteTokenizer, Tokenizer};

/// The tokenizer itself.
pub const TOKENIZER_FILE: &str = "tokenizer.json";
/// Where transformers keeps the special tokens (`eos_token`).
pub const TOKENIZER_CONFIG_FILE: &str = "tokenizer_config.json";
/// The special tokens of older transformers files (`eos_token`).
pub const SPECIAL_TOKENS_FILE: &str = "special_tokens_map.json";
/// Every tokenizer file a checkpoint carries along when it is saved or
/// converted: the two above and the older files transformers may read.
pub const TOKENIZER_FILES: [&str; 6] = [
    TOKENIZER_FILE,
    TOKENIZER_CONFIG_FILE,
    SPECIAL_TOKENS_FILE,
    "vocab.json",
    "merges.txt",
    crate::gguf::CHAT_TEMPLATE_FILE,
];
/// The largest tokenizer file read: 64 MiB (GPT-2's `tokenizer.json` is 1.4 MB,
/// the largest common ones about 20 MB).
pub const MAX_TOKENIZER_BYTES: u64 = 64 << 20;

/// A `tokenizer.json` tokenizer with its EOS token.
pub struct HfTokenizer {
    inner: tokenizers::Tokenizer,
    eos_id: Option<u32>,
}

impl std::fmt::Debug for HfTokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HfTokenizer")
            .field("vocab_size", &self.vocab_size())
            .field("eos_id", &self.eos_id)
            .finish()
    }
}

fn format_error(path: &Path, message: String) -> CheckpointError {
    CheckpointError::Format {
        path: path.to_path_buf(),
        message,
    }
}

impl HfTokenizer {
    /// A tokenizer with its EOS id (e.g. one built from a GGUF file's metadata).
    pub fn new(inner: tokenizers::Tokenizer, eos_id: Option<u32>) -> HfTokenizer {
        HfTokenizer { inner, eos_id }
    }

    /// The tokenizer of the bytes of a `tokenizer.json` (`path` names it in
    /// errors) with the EOS token named `eos_token`, if any (it must be in
    /// the vocabulary).
    pub fn from_bytes(
        bytes: &[u8],
        eos_token: Option<&str>,
        path: &Path,
    ) -> Result<HfTokenizer, CheckpointError> {
        let inner = tokenizers::Tokenizer::from_bytes(bytes)
            .map_err(|e| format_error(path, format!("not a tokenizers file: {e}")))?;
        let eos_id = match eos_token {
            None => None,
            Some(token) => Some(inner.token_to_id(token).ok_or_else(|| {
                format_error(
                    path,
                    format!("the eos_token {token:?} is not in the vocabulary"),
                )
            })?),
        };
        Ok(HfTokenizer { inner, eos_id })
    }

    /// The tokenizer of `dir/tokenizer.json` with its EOS (see the module
    /// docs); `None` when `dir` has no `tokenizer.json`.
    pub fn from_dir(dir: &Path) -> Result<Option<HfTokenizer>, CheckpointError> {
        let path = dir.join(TOKENIZER_FILE);
        if !path.exists() {
            return Ok(None);
        }
        let bytes = read_bounded(&path, MAX_TOKENIZER_BYTES)?;
        let eos = match eos_token(&dir.join(TOKENIZER_CONFIG_FILE))? {
            Some(token) => Some(token),
            None => eos_token(&dir.join(SPECIAL_TOKENS_FILE))?,
        };
        let mut tokenizer = HfTokenizer::from_bytes(&bytes, eos.as_deref(), &path)?;
        if tokenizer.eos_id.is_none() {
            tokenizer.eos_id = model_eos_id(&dir.join(crate::checkpoint::CONFIG_FILE))?
                .filter(|&id| (id as usize) < tokenizer.vocab_size());
        }
        Ok(Some(tokenizer))
    }
}

/// `eos_token_id` of a model's `config.json`, if it is one integer.
fn model_eos_id(path: &Path) -> Result<Option<u32>, CheckpointError> {
    if !path.exists() {
        return Ok(None);
    }
    let bytes = read_bounded(path, crate::checkpoint::MAX_CONFIG_BYTES)?;
    let value: Value =
        serde_json::from_slice(&bytes).map_err(|e| format_error(path, format!("not JSON: {e}")))?;
    Ok(value
        .get("eos_token_id")
        .and_then(Value::as_u64)
        .and_then(|id| u32::try_from(id).ok()))
}

/// `eos_token` of a `tokenizer_config.json` or `special_tokens_map.json`
/// (none when the file is absent).
fn eos_token(path: &Path) -> Result<Option<String>, CheckpointError> {
    if !path.exists() {
        return Ok(None);
    }
    let bytes = read_bounded(path, MAX_TOKENIZER_BYTES)?;
    let value: Value =
        serde_json::from_slice(&bytes).map_err(|e| format_error(path, format!("not JSON: {e}")))?;
    match value.get("eos_token") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(Value::Object(o)) => match o.get("content") {
            Some(Value::String(s)) => Ok(Some(s.clone())),
            _ => Err(format_error(path, "eos_token has no content string".into())),
        },
        Some(other) => Err(format_error(
            path,
            format!("eos_token {other} is not a string"),
        )),
    }
}

impl Tokenizer for HfTokenizer {
    /// The ids of `text`, no special tokens added. (The GPT-2 pre-tokenizer
    /// cannot fail on any text; should a regex engine's limit ever be hit,
    /// the result is empty, which the data checks refuse as a bad row.)
    fn encode(&self, text: &str) -> Vec<u32> {
        self.inner
            .encode(text, false)
            .map(|e| e.get_ids().to_vec())
            .unwrap_or_default()
    }

    fn decode(&self, ids: &[u32]) -> String {
        self.inner.decode(ids, false).unwrap_or_default()
    }

    fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    fn eos_id(&self) -> Option<u32> {
        self.eos_id
    }
}

/// The tokenizer of a checkpoint directory: its `tokenizer.json`, else bytes.
pub fn load_tokenizer(dir: &Path) -> Result<Box<dyn Tokenizer>, CheckpointError> {
    Ok(match HfTokenizer::from_dir(dir)? {
        Some(tokenizer) => Box::new(tokenizer),
        None => Box::new(ByteTokenizer),
    })
}

/// The tokenizer files of `dir` ([`TOKENIZER_FILES`] that exist), `(name,
/// bytes)`, for a save or a conversion to carry along.
pub fn tokenizer_files(dir: &Path) -> Result<Vec<(&'static str, Vec<u8>)>, CheckpointError> {
    let mut files = Vec::new();
    for name in TOKENIZER_FILES {
        let path: PathBuf = dir.join(name);
        if path.is_file() {
            files.push((name, read_bounded(&path, MAX_TOKENIZER_BYTES)?));
        }
    }
    Ok(files)
}
