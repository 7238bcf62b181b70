//! # transformer
//!
//! A GPT-2 / nanoGPT decoder on the `autograd` crate (see `docs/transformer.md`).

pub mod tokenizer;

pub use tokenizer::{ByteTokenizer, Tokenizer};
