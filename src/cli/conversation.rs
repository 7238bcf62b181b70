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
use serde_json::{json, Value};
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

/// The running conversation of `dpo chat`: an optional system message and
/// the turns after it.
#[derive(Debug, Clone, Default)]
pub struct Conversation {
    system: Option<String>,
    turns: Vec<Value>,
}

impl Conversation {
    /// An empty conversation that starts with `system`, if any.
    pub fn new(system: Option<String>) -> Self {
        Conversation {
            system,
            turns: Vec::new(),
        }
    }

    /// All its messages, the system message first, as a template takes them.
    pub fn messages(&self) -> Vec<Value> {
        let system = self
            .system
            .iter()
            .map(|text| json!({"role": "system", "content": text}));
        system.chain(self.turns.iter().cloned()).collect()
    }

    /// How many user and assistant messages it holds.
    pub fn turns(&self) -> usize {
        self.turns.len()
    }

    /// Adds a message of the user.
    pub fn push_user(&mut self, text: &str) {
        self.turns.push(json!({"role": "user", "content": text}));
    }

    /// Adds the assistant's reply.
    pub fn push_assistant(&mut self, text: &str) {
        self.turns
            .push(json!({"role": "assistant", "content": text}));
    }

    /// Takes back the last message (one the template refused).
    pub fn pop(&mut self) {
        self.turns.pop();
    }

    /// Starts over: no turns, the system message kept.
    pub fn reset(&mut self) {
        self.turns.clear();
    }

    /// Starts over with only its last message (and the system message).
    pub fn keep_last(&mut self) {
        let start = self.turns.len().saturating_sub(1);
        self.turns.drain(..start);
    }

    /// Sets the system message (`None` removes it) and starts over.
    pub fn set_system(&mut self, system: Option<String>) {
        self.system = system;
        self.reset();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_put_the_system_message_first_and_survive_a_reset() {
        let mut conversation = Conversation::new(Some("Be brief.".into()));
        conversation.push_user("Hi");
        conversation.push_assistant("Hello");
        conversation.push_user("Bye");
        let roles: Vec<Value> = conversation
            .messages()
            .iter()
            .map(|m| m["role"].clone())
            .collect();
        assert_eq!(roles, ["system", "user", "assistant", "user"]);
        conversation.keep_last();
        assert_eq!(
            conversation.messages(),
            [
                json!({"role": "system", "content": "Be brief."}),
                json!({"role": "user", "content": "Bye"}),
            ]
        );
        conversation.reset();
        assert_eq!(conversation.messages().len(), 1);
        conversation.set_system(None);
        assert!(conversation.messages().is_empty());
    }

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
