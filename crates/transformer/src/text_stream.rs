//! Text of a growing token sequence, handed out piece by piece: what prints
//! a model's reply as its tokens come.
//!
//! A token is not always a whole piece of text: byte-level tokenizers split
//! a character of several UTF-8 bytes (an accent, a CJK character, an emoji)
//! over several tokens, and the text of the first of them alone decodes to
//! U+FFFD, the replacement character. So each piece is cut from the text of
//! *all* the tokens so far, `decode(ids)`: the part past what was handed out
//! already, less a trailing U+FFFD, which waits for the tokens that complete
//! its character. At the end, [`TextStream::finish`] hands out what was held
//! back (a character that never completed stays U+FFFD, as `decode` gives it).
//!
//! This relies on the decoded text of a longer sequence extending the text
//! of a shorter one, which holds for the tokenizers this crate reads apart
//! from the incomplete characters above. Should a tokenizer break it (text
//! that changes before the cut), nothing printed is taken back: the pieces
//! continue from the new text past the same length.

use crate::tokenizer::Tokenizer;

/// The replacement character a decoder writes for bytes that are not (yet) a
/// whole UTF-8 character.
const REPLACEMENT: char = '\u{FFFD}';

/// Token ids in, new text out (see the module documentation).
pub struct TextStream<'a> {
    tokenizer: &'a dyn Tokenizer,
    ids: Vec<u32>,
    /// Bytes of the decoded text handed out so far.
    handed_out: usize,
}

impl<'a> TextStream<'a> {
    /// An empty stream decoding with `tokenizer`.
    pub fn new(tokenizer: &'a dyn Tokenizer) -> Self {
        TextStream {
            tokenizer,
            ids: Vec::new(),
            handed_out: 0,
        }
    }

    /// Adds one token; returns the text it completes (often empty while a
    /// character is incomplete).
    pub fn push(&mut self, id: u32) -> String {
        self.ids.push(id);
        let text = self.tokenizer.decode(&self.ids);
        self.take_from(text.trim_end_matches(REPLACEMENT))
    }

    /// The text held back at the end (an incomplete character, as U+FFFD),
    /// after which everything `decode` gives for the tokens was handed out.
    pub fn finish(&mut self) -> String {
        let text = self.tokenizer.decode(&self.ids);
        self.take_from(&text)
    }

    /// The tokens pushed so far.
    pub fn ids(&self) -> &[u32] {
        &self.ids
    }

    /// The part of `text` past what was handed out, now handed out too.
    fn take_from(&mut self, text: &str) -> String {
        if text.len() <= self.handed_out || !text.is_char_boundary(self.handed_out) {
            return String::new();
        }
        let piece = text[self.handed_out..].to_string();
        self.handed_out = text.len();
        piece
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tokenizer::ByteTokenizer;

    /// The pieces a stream hands out for `ids`, `finish` last.
    fn pieces(ids: &[u32]) -> Vec<String> {
        let mut stream = TextStream::new(&ByteTokenizer);
        let mut out: Vec<String> = ids.iter().map(|&id| stream.push(id)).collect();
        out.push(stream.finish());
        out
    }

    #[test]
    fn ascii_comes_out_one_token_at_a_time() {
        assert_eq!(
            pieces(b"Hi!".map(u32::from).as_slice()),
            ["H", "i", "!", ""]
        );
    }

    #[test]
    fn a_character_split_over_tokens_waits_until_it_is_whole() {
        // "é" is two bytes, "你" three, "🙂" four: one token each per byte.
        let text = "aé你🙂b";
        let ids: Vec<u32> = text.bytes().map(u32::from).collect();
        let got = pieces(&ids);
        assert_eq!(
            got,
            ["a", "", "é", "", "", "你", "", "", "", "🙂", "b", ""],
            "each character appears once, when its last byte comes"
        );
        assert_eq!(got.concat(), text);
    }

    #[test]
    fn an_incomplete_character_at_the_end_comes_out_as_decode_gives_it() {
        // The first two of the three bytes of "你": never completed.
        let ids = [u32::from(b'x'), 0xE4, 0xBD];
        let got = pieces(&ids);
        assert_eq!(got, ["x", "", "", "\u{FFFD}"]);
        assert_eq!(got.concat(), ByteTokenizer.decode(&ids));
    }

    #[test]
    fn a_replacement_character_is_handed_out_once_text_follows_it() {
        // A lone continuation byte is invalid for good: U+FFFD, then "z".
        let ids = [0x80, u32::from(b'z')];
        assert_eq!(pieces(&ids), ["", "\u{FFFD}z", ""]);
    }
}
