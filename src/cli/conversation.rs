//! Conversations for a chat model: the one `dpo chat` holds, the one
//! `dpo generate --messages` reads, and the prompt a model's chat template
//! makes of either.
//!
//! A conversation is a list of messages, JSON objects with a `role`
//! (`system`, `user`, `assistant`) and a `content`, as transformers'
//! `apply_chat_template` takes them. Its prompt is the template's text with
//! the assistant's turn opened at the end (`add_generation_prompt`),
//! tokenized as transformers tokenizes it: the special tokens the template
//! writes (`<|im_start|>`) are read as themselves, and none are added.

use std::path::Path;

use anyhow::{bail, ensure, Context, Result};
use serde_json::Value;
use transformer::{ChatTemplateError, Tokenizer};

/// The largest `--messages @FILE` read: 64 MiB.
const MAX_MESSAGES_BYTES: u64 = 64 << 20;

/// The prompt of a conversation: the template's text and its token ids.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChatPrompt {
    /// The text the chat template wrote, ending where the reply begins.
    pub text: String,
    /// Its tokens.
    pub ids: Vec<u32>,
}

/// The prompt of `messages` by `tokenizer`'s chat template, with the
/// assistant's turn opened.
pub fn chat_prompt(
    tokenizer: &dyn Tokenizer,
    messages: &[Value],
) -> Result<ChatPrompt, ChatTemplateError> {
    let rendered = tokenizer.chat_template()?.render(messages, true, false)?;
    let ids = tokenizer.encode(&rendered.text);
    Ok(ChatPrompt {
        text: rendered.text,
        ids,
    })
}

/// The conversation of `--messages`: JSON text, or `@FILE` to read it from
/// a file. It must be a non-empty list of message objects, each with a
/// `role` string and a `content` (a string, or a list of parts for the
/// templates that take them).
pub fn read_messages(arg: &str) -> Result<Vec<Value>> {
    let text = match arg.strip_prefix('@') {
        Some(file) => read_messages_file(Path::new(file))?,
        None => arg.to_string(),
    };
    let value: Value = serde_json::from_str(&text).context("--messages is not JSON")?;
    let Value::Array(messages) = value else {
        bail!("--messages must be a JSON list of {{\"role\", \"content\"}} messages");
    };
    ensure!(!messages.is_empty(), "--messages holds no message");
    for (i, message) in messages.iter().enumerate() {
        let n = i + 1;
        ensure!(
            message.is_object(),
            "--messages: message {n} is not a {{\"role\", \"content\"}} object"
        );
        ensure!(
            message.get("role").is_some_and(Value::is_string),
            "--messages: message {n} has no \"role\" string"
        );
        ensure!(
            message
                .get("content")
                .is_some_and(|c| c.is_string() || c.is_array()),
            "--messages: message {n} has no \"content\" (a string, or a list of parts)"
        );
    }
    Ok(messages)
}

fn read_messages_file(path: &Path) -> Result<String> {
    let context = || format!("--messages @{}", path.display());
    let size = std::fs::metadata(path).with_context(context)?.len();
    ensure!(
        size <= MAX_MESSAGES_BYTES,
        "{}: {size} bytes, more than the {} MiB read",
        context(),
        MAX_MESSAGES_BYTES >> 20
    );
    std::fs::read_to_string(path).with_context(context)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn messages_must_be_a_list_of_role_and_content_objects() {
        let ok = read_messages(r#"[{"role":"user","content":"Hi"}]"#).unwrap();
        assert_eq!(ok, [json!({"role": "user", "content": "Hi"})]);
        for (bad, says) in [
            ("[{\"role\":", "not JSON"),
            (r#"{"role":"user","content":"Hi"}"#, "must be a JSON list"),
            ("[]", "no message"),
            (r#"["Hi"]"#, "message 1 is not"),
            (r#"[{"content":"Hi"}]"#, "message 1 has no \"role\""),
            (
                r#"[{"role":"user","content":"Hi"},{"role":"user"}]"#,
                "message 2 has no \"content\"",
            ),
            ("@/nonexistent/messages.json", "--messages @/nonexistent"),
        ] {
            let error = format!("{:#}", read_messages(bad).unwrap_err());
            assert!(error.contains(says), "{bad}: {error}");
        }
    }
}
