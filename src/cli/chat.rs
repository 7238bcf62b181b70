//! `dpo chat`: a conversation with a chat model in the terminal.
//!
//! Each line read from stdin is a user message. The whole conversation goes
//! through the model's chat template and is encoded again every turn (no
//! cache is kept across turns: the prompt of a turn is exactly what
//! `dpo generate --messages` would make of the same conversation, so the
//! two give the same reply). The reply is printed to stdout as its tokens
//! come ([`TextStream`]: whole characters only), until an end-of-sequence
//! token, `--max-new-tokens`, or the end of the model's context; it then
//! joins the conversation as the assistant's message.
//!
//! Prompts (`> `, when stdin is a terminal) and notices go to stderr, so
//! stdout holds the replies alone, one after another, each ending with a
//! newline.

use std::io::{BufRead, IsTerminal, Write};
use std::ops::ControlFlow;

use anyhow::{anyhow, Context, Result};
use transformer::sampling::{generate_streaming, Finish, SamplingOptions};
use transformer::{Model, TextStream, Tokenizer};

use super::args::ChatArgs;
use super::conversation::{chat_prompt, ChatPrompt, Conversation};
use super::generate::{check_max_new_tokens, check_prompt, sampling_options};
use crate::trainer::setup::load_checkpoint;

/// What the help line at the start and after an unknown command says.
const COMMANDS: &str = "/reset starts over, /system TEXT sets the system message, Ctrl-D leaves";

/// `dpo chat`: reads messages until the end of stdin (Ctrl-D).
pub fn run_chat(a: &ChatArgs) -> Result<()> {
    let loaded = load_checkpoint(&a.model, "model")?;
    loaded
        .tokenizer
        .chat_template()
        .map_err(|e| anyhow!("model {}: {e}", a.model.display()))?;
    check_max_new_tokens(a.max_new_tokens)?;
    let chat = Chat {
        model: &loaded.model,
        tokenizer: loaded.tokenizer.as_ref(),
        eos: loaded.eos_ids(),
        options: sampling_options(&a.sampling)?,
        max_new_tokens: a.max_new_tokens,
    };
    let mut conversation = Conversation::new(a.system.clone());
    let interactive = std::io::stdin().is_terminal();
    if interactive {
        eprintln!("dpo chat with {}: {COMMANDS}", a.model.display());
    }
    let mut input = std::io::stdin().lock();
    loop {
        if interactive {
            eprint!("> ");
        }
        let Some(line) = read_line(&mut input)? else {
            if interactive {
                eprintln!();
            }
            return Ok(());
        };
        match Input::parse(&line) {
            Input::Empty => {}
            Input::Reset => {
                conversation.reset();
                eprintln!("(new conversation)");
            }
            Input::System(system) => {
                let said = match &system {
                    Some(_) => "(system message set; new conversation)",
                    None => "(system message removed; new conversation)",
                };
                conversation.set_system(system);
                eprintln!("{said}");
            }
            Input::Unknown(command) => eprintln!("(unknown command {command}: {COMMANDS})"),
            Input::Message(text) => chat.reply(&mut conversation, text)?,
        }
    }
}

/// One line of stdin without its line end, or `None` at the end of input.
/// Bytes that are not UTF-8 become U+FFFD.
fn read_line(input: &mut impl BufRead) -> Result<Option<String>> {
    let mut bytes = Vec::new();
    if input.read_until(b'\n', &mut bytes).context("stdin")? == 0 {
        return Ok(None);
    }
    let line = String::from_utf8_lossy(&bytes);
    Ok(Some(line.trim_end_matches(['\n', '\r']).to_string()))
}

/// What a line of input asks for.
#[derive(Debug, PartialEq, Eq)]
enum Input<'a> {
    /// Nothing (blank): ignored.
    Empty,
    /// A message to the model.
    Message(&'a str),
    /// `/reset`.
    Reset,
    /// `/system TEXT` (`/system` alone: `None`).
    System(Option<String>),
    /// A line starting with `/` that is no command.
    Unknown(&'a str),
}

impl<'a> Input<'a> {
    fn parse(line: &'a str) -> Input<'a> {
        let trimmed = line.trim();
        if trimmed.is_empty() {
            return Input::Empty;
        }
        if !trimmed.starts_with('/') {
            return Input::Message(line);
        }
        let (command, rest) = trimmed
            .split_once(char::is_whitespace)
            .unwrap_or((trimmed, ""));
        let rest = rest.trim();
        match command {
            "/reset" if rest.is_empty() => Input::Reset,
            "/system" if rest.is_empty() => Input::System(None),
            "/system" => Input::System(Some(rest.to_string())),
            _ => Input::Unknown(command),
        }
    }
}

/// The model and how it replies.
struct Chat<'a> {
    model: &'a Model<f32>,
    tokenizer: &'a dyn Tokenizer,
    /// The ids that end a reply.
    eos: Vec<u32>,
    options: SamplingOptions,
    max_new_tokens: usize,
}

impl Chat<'_> {
    /// The model's context: the most tokens of prompt and reply together.
    fn context(&self) -> usize {
        self.model.config().block_size
    }

    /// Adds `text` to the conversation, streams the model's reply to stdout
    /// and adds it too. A message the template refuses is taken back, with
    /// the template's error on stderr. A conversation that no longer fits
    /// the context starts over from this message.
    fn reply(&self, conversation: &mut Conversation, text: &str) -> Result<()> {
        conversation.push_user(text);
        let Some(prompt) = self.prompt_that_fits(conversation)? else {
            return Ok(());
        };
        let room = self.context() - prompt.ids.len();
        let max_new_tokens = self.max_new_tokens.min(room);
        let mut stdout = std::io::stdout().lock();
        let mut stream = TextStream::new(self.tokenizer);
        let mut write_error = None;
        let streamed = generate_streaming(
            self.model,
            &prompt.ids,
            max_new_tokens,
            self.options,
            &self.eos,
            |new| {
                let piece = stream.push(*new.last().expect("a new token"));
                match stdout
                    .write_all(piece.as_bytes())
                    .and_then(|()| stdout.flush())
                {
                    Ok(()) => ControlFlow::Continue(()),
                    Err(e) => {
                        write_error = Some(e);
                        ControlFlow::Break(())
                    }
                }
            },
        )?;
        if let Some(e) = write_error {
            return Err(e).context("stdout");
        }
        writeln!(stdout, "{}", stream.finish())
            .and_then(|()| stdout.flush())
            .context("stdout")?;
        if streamed.finish == Finish::Length {
            if max_new_tokens < self.max_new_tokens {
                eprintln!(
                    "(the reply was cut at the end of the model's context of {} tokens)",
                    self.context()
                );
            } else {
                eprintln!("(the reply was cut at --max-new-tokens {max_new_tokens})");
            }
        }
        conversation.push_assistant(&self.tokenizer.decode(&streamed.tokens));
        Ok(())
    }

    /// The prompt of the conversation (whose last message is the user's),
    /// with room for at least one token of reply. When the conversation has
    /// outgrown the context, it starts over from its last message; when
    /// even that does not fit, or the template refuses the conversation, the
    /// message is taken back and `None` returned, with a notice.
    fn prompt_that_fits(&self, conversation: &mut Conversation) -> Result<Option<ChatPrompt>> {
        let mut prompt = match self.prompt(conversation)? {
            Some(prompt) => prompt,
            None => return Ok(None),
        };
        if prompt.ids.len() >= self.context() && conversation.turns() > 1 {
            eprintln!(
                "(the conversation no longer fits the model's context of {} tokens: a new one starts from your last message)",
                self.context()
            );
            conversation.keep_last();
            prompt = match self.prompt(conversation)? {
                Some(prompt) => prompt,
                None => return Ok(None),
            };
        }
        if prompt.ids.len() >= self.context() {
            eprintln!(
                "(your message makes a prompt of {} tokens, with no room for a reply in the model's context of {} tokens: it was dropped)",
                prompt.ids.len(),
                self.context()
            );
            conversation.pop();
            return Ok(None);
        }
        Ok(Some(prompt))
    }

    /// The prompt of the conversation; `None` (the last message taken back,
    /// the template's error on stderr) when the template refuses it.
    fn prompt(&self, conversation: &mut Conversation) -> Result<Option<ChatPrompt>> {
        match chat_prompt(self.tokenizer, &conversation.messages()) {
            Ok(prompt) => {
                check_prompt(&prompt.ids, self.model.config().vocab_size)?;
                Ok(Some(prompt))
            }
            Err(e) => {
                eprintln!("error: {e}");
                conversation.pop();
                Ok(None)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_messages_commands_or_nothing() {
        assert_eq!(Input::parse(""), Input::Empty);
        assert_eq!(Input::parse("  \t"), Input::Empty);
        assert_eq!(Input::parse("Hi there"), Input::Message("Hi there"));
        assert_eq!(Input::parse("/reset"), Input::Reset);
        assert_eq!(Input::parse(" /reset "), Input::Reset);
        assert_eq!(
            Input::parse("/system Be brief.  "),
            Input::System(Some("Be brief.".into()))
        );
        assert_eq!(Input::parse("/system"), Input::System(None));
        assert_eq!(Input::parse("/reset now"), Input::Unknown("/reset"));
        assert_eq!(Input::parse("/quit"), Input::Unknown("/quit"));
    }

    #[test]
    fn lines_lose_their_line_end_only() {
        let mut input: &[u8] = b"a b \r\nsecond\nlast";
        assert_eq!(read_line(&mut input).unwrap().as_deref(), Some("a b "));
        assert_eq!(read_line(&mut input).unwrap().as_deref(), Some("second"));
        assert_eq!(read_line(&mut input).unwrap().as_deref(), Some("last"));
        assert_eq!(read_line(&mut input).unwrap(), None);
    }
}
