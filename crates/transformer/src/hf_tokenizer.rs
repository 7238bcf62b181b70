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

use std::collections::BTreeMap;
use std::ops::Range;
use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::chat_template::{ChatTemplate, ChatTemplateError};

use crate::checkpoint::{read_bounded, CheckpointError};
use crate::gguf::CHAT_TEMPLATE_FILE;
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
    CHAT_TEMPLATE_FILE,
];
/// The largest tokenizer file read: 64 MiB (GPT-2's `tokenizer.json` is 1.4 MB,
/// the largest common ones about 20 MB).
pub const MAX_TOKENIZER_BYTES: u64 = 64 << 20;

/// A `tokenizer.json` tokenizer with its EOS token and chat template.
pub struct HfTokenizer {
    inner: tokenizers::Tokenizer,
    eos_id: Option<u32>,
    /// The chat template, or why there is none (absent, or does not compile:
    /// an error only when a conversation is rendered, as in transformers).
    chat_template: Result<ChatTemplate, ChatTemplateError>,
    /// `bos_token`, `eos_token`, ... as strings: what a template may write.
    special_tokens: BTreeMap<String, String>,
}

impl std::fmt::Debug for HfTokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HfTokenizer")
            .field("vocab_size", &self.vocab_size())
            .field("eos_id", &self.eos_id)
            .field("chat_template", &self.chat_template.is_ok())
            .finish()
    }
}

fn format_error(path: &Path, message: String) -> CheckpointError {
    CheckpointError::Format {
        path: path.to_path_buf(),
        message,
    }
}

/// The special tokens a chat template may write, under the names
/// transformers gives them.
const SPECIAL_TOKEN_NAMES: [&str; 4] = ["bos_token", "eos_token", "unk_token", "pad_token"];

impl HfTokenizer {
    /// The tokenizer of a set of tokenizer files, `(name, bytes)` as
    /// [`tokenizer_files`] returns them (a directory's, or those a GGUF file
    /// describes): `tokenizer.json`, with the special tokens of
    /// `tokenizer_config.json`, else `special_tokens_map.json`, and the chat
    /// template of `chat_template.jinja`, else `tokenizer_config.json`'s
    /// `chat_template` (a string, or a list of named templates of which
    /// `default` is used). `model_eos_id` (a `config.json`'s `eos_token_id`)
    /// is the EOS where the files name none. `None` without a
    /// `tokenizer.json`; `dir` names the files in errors.
    pub fn from_files(
        files: &[(&str, Vec<u8>)],
        model_eos_id: Option<u32>,
        dir: &Path,
    ) -> Result<Option<HfTokenizer>, CheckpointError> {
        let file = |name: &str| files.iter().find(|(n, _)| *n == name).map(|(_, b)| b);
        let Some(tokenizer_bytes) = file(TOKENIZER_FILE) else {
            return Ok(None);
        };
        let path = dir.join(TOKENIZER_FILE);
        let inner = tokenizers::Tokenizer::from_bytes(tokenizer_bytes)
            .map_err(|e| format_error(&path, format!("not a tokenizers file: {e}")))?;
        let json_file = |name: &str| -> Result<Value, CheckpointError> {
            match file(name) {
                None => Ok(Value::Null),
                Some(bytes) => serde_json::from_slice(bytes)
                    .map_err(|e| format_error(&dir.join(name), format!("not JSON: {e}"))),
            }
        };
        let config = json_file(TOKENIZER_CONFIG_FILE)?;
        let special_map = json_file(SPECIAL_TOKENS_FILE)?;
        let mut special_tokens = BTreeMap::new();
        for name in SPECIAL_TOKEN_NAMES {
            let token = match special_token(&config, name, &dir.join(TOKENIZER_CONFIG_FILE))? {
                Some(token) => Some(token),
                None => special_token(&special_map, name, &dir.join(SPECIAL_TOKENS_FILE))?,
            };
            if let Some(token) = token {
                special_tokens.insert(name.to_string(), token);
            }
        }
        let eos_id = match special_tokens.get("eos_token") {
            Some(token) => Some(inner.token_to_id(token).ok_or_else(|| {
                format_error(
                    &path,
                    format!("the eos_token {token:?} is not in the vocabulary"),
                )
            })?),
            None => model_eos_id.filter(|&id| (id as usize) < inner.get_vocab_size(true)),
        };
        if let (None, Some(id)) = (special_tokens.get("eos_token"), eos_id) {
            if let Some(token) = inner.id_to_token(id) {
                special_tokens.insert("eos_token".to_string(), token);
            }
        }
        let source = match file(CHAT_TEMPLATE_FILE) {
            Some(bytes) => Some(
                String::from_utf8(bytes.clone())
                    .map_err(|_| format_error(&dir.join(CHAT_TEMPLATE_FILE), "not UTF-8".into()))?,
            ),
            None => config_chat_template(&config, &dir.join(TOKENIZER_CONFIG_FILE))?,
        };
        let chat_template = match source {
            Some(source) => ChatTemplate::new(&source, special_tokens.clone()),
            None => Err(ChatTemplateError::Missing),
        };
        Ok(Some(HfTokenizer {
            inner,
            eos_id,
            chat_template,
            special_tokens,
        }))
    }

    /// The tokenizer of the files of `dir` (see [`HfTokenizer::from_files`]),
    /// with `config.json`'s `eos_token_id` as the EOS where they name none
    /// (GPT-2's own files name it only there); `None` when `dir` has no
    /// `tokenizer.json`.
    pub fn from_dir(dir: &Path) -> Result<Option<HfTokenizer>, CheckpointError> {
        let files = tokenizer_files(dir)?;
        let model_eos = model_eos_id(&dir.join(crate::checkpoint::CONFIG_FILE))?;
        HfTokenizer::from_files(&files, model_eos, dir)
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

/// The special token `name` (`eos_token`, ...) of a parsed
/// `tokenizer_config.json` or `special_tokens_map.json`: a string, or an
/// object with a `content` string; none when absent or null.
fn special_token(file: &Value, name: &str, path: &Path) -> Result<Option<String>, CheckpointError> {
    match file.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(Value::Object(o)) => match o.get("content") {
            Some(Value::String(s)) => Ok(Some(s.clone())),
            _ => Err(format_error(path, format!("{name} has no content string"))),
        },
        Some(other) => Err(format_error(
            path,
            format!("{name} {other} is not a string"),
        )),
    }
}

/// `chat_template` of a parsed `tokenizer_config.json`: a string, or a list
/// of `{"name", "template"}` of which the one named `default` is used.
fn config_chat_template(config: &Value, path: &Path) -> Result<Option<String>, CheckpointError> {
    match config.get("chat_template") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(Value::Array(named)) => {
            let default = named
                .iter()
                .find(|t| t.get("name").and_then(Value::as_str) == Some("default"));
            match default
                .and_then(|t| t.get("template"))
                .and_then(Value::as_str)
            {
                Some(template) => Ok(Some(template.to_string())),
                None => Err(format_error(
                    path,
                    "chat_template is a list of named templates without one named \"default\""
                        .into(),
                )),
            }
        }
        Some(_) => Err(format_error(
            path,
            "chat_template is neither a string nor a list of named templates".into(),
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

    fn encode_with_offsets(&self, text: &str) -> (Vec<u32>, Vec<Range<usize>>) {
        match self.inner.encode(text, false) {
            Ok(encoding) => (
                encoding.get_ids().to_vec(),
                encoding.get_offsets().iter().map(|&(a, b)| a..b).collect(),
            ),
            Err(_) => (Vec::new(), Vec::new()),
        }
    }

    fn chat_template(&self) -> Result<&ChatTemplate, ChatTemplateError> {
        self.chat_template.as_ref().map_err(Clone::clone)
    }

    fn set_chat_template(&mut self, source: &str) -> Result<(), ChatTemplateError> {
        self.chat_template = Ok(ChatTemplate::new(source, self.special_tokens.clone())?);
        Ok(())
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
