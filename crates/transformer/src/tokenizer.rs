//! Tokenizers: text to token ids and back.
//!
//! The default is [`ByteTokenizer`]: one token per UTF-8 byte, ids 0..255, so
//! any text round-trips and no vocabulary file is needed. Other tokenizers can
//! be added behind the [`Tokenizer`] trait.

use std::ops::Range;

use crate::chat_template::{ChatTemplate, ChatTemplateError};

/// Maps text to token ids and back.
pub trait Tokenizer: Send + Sync {
    /// The ids of `text`.
    fn encode(&self, text: &str) -> Vec<u32>;
    /// The text of `ids` (lossy where ids do not form valid text).
    fn decode(&self, ids: &[u32]) -> String;
    /// Number of distinct ids this tokenizer produces.
    fn vocab_size(&self) -> usize;
    /// The end-of-sequence token, if the tokenizer has one: generation stops
    /// there, and training appends it to each response.
    fn eos_id(&self) -> Option<u32> {
        None
    }
    /// The ids of `text` with the byte range of `text` each came from (what
    /// maps a chat template's generation blocks to tokens).
    fn encode_with_offsets(&self, text: &str) -> (Vec<u32>, Vec<Range<usize>>);
    /// The chat template that turns a conversation into this tokenizer's
    /// text, or why there is none.
    fn chat_template(&self) -> Result<&ChatTemplate, ChatTemplateError> {
        Err(ChatTemplateError::Missing)
    }
    /// Replaces the chat template with the Jinja `source` (TRL's
    /// `chat_template_path`), rendered with this tokenizer's special tokens.
    fn set_chat_template(&mut self, source: &str) -> Result<(), ChatTemplateError> {
        let _ = source;
        Err(ChatTemplateError::NoTokenizerFile)
    }
}

/// One token per UTF-8 byte.
#[derive(Debug, Clone, Copy, Default)]
pub struct ByteTokenizer;

impl Tokenizer for ByteTokenizer {
    fn encode(&self, text: &str) -> Vec<u32> {
        text.bytes().map(u32::from).collect()
    }

    fn decode(&self, ids: &[u32]) -> String {
        let bytes: Vec<u8> = ids.iter().map(|&id| id.min(255) as u8).collect();
        String::from_utf8_lossy(&bytes).into_owned()
    }

    fn vocab_size(&self) -> usize {
        256
    }

    fn encode_with_offsets(&self, text: &str) -> (Vec<u32>, Vec<Range<usize>>) {
        let ids = self.encode(text);
        let offsets = (0..ids.len()).map(|i| i..i + 1).collect();
        (ids, offsets)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_round_trip_including_non_ascii() {
        let text = "héllo, wörld → 你好";
        let ids = ByteTokenizer.encode(text);
        assert_eq!(ids.len(), text.len());
        assert!(ids.iter().all(|&id| id < 256));
        assert_eq!(ByteTokenizer.decode(&ids), text);
    }
}
