//! Chat templates: a conversation -> the text a chat model reads, rendered as
//! transformers' `apply_chat_template` renders it.
//!
//! A template is Jinja source that a model's tokenizer carries
//! (`chat_template.jinja`, `tokenizer_config.json`'s `chat_template`, or a
//! GGUF file's `tokenizer.chat_template`). transformers renders it with
//! Jinja2 in a sandbox with `trim_blocks` and `lstrip_blocks`, the
//! `loopcontrols` extension, and these names:
//!
//! - `messages`: the conversation, a list of `{"role", "content", ...}` objects;
//! - `add_generation_prompt`: whether to open the assistant's turn at the end;
//! - `tools`, `documents`: none (this project has no tool calls);
//! - the tokenizer's special tokens as strings: `bos_token`, `eos_token`,
//!   `unk_token`, `pad_token` (those it has);
//! - `raise_exception(message)`: the template refuses the conversation;
//! - `strftime_now(format)`: the current date (UTC here);
//! - a `tojson` filter that writes as Python's `json.dumps` does (object keys
//!   in sorted order here: rows are parsed into sorted maps).
//!
//! Here the engine is `minijinja`, the Jinja implementation Rust inference
//! servers use, with `minijinja-contrib`'s Python compatibility for the
//! string, dict and list methods templates call (`.strip()`, `.startswith()`,
//! `.split()`, `.items()`, `.get()`...). The tests compare rendered strings
//! with transformers' for SmolLM2's template and other common styles
//! (`tests/golden/make_chat_golden.py`).
//!
//! **Generation blocks.** Templates written for assistant-only training mark
//! the assistant's text with `{% generation %}...{% endgeneration %}`
//! (transformers' `AssistantTracker` extension): [`ChatTemplate::render`]
//! returns the byte ranges of the text inside them, as transformers'
//! `return_assistant_tokens_mask` does. minijinja has no custom tags, so the
//! tags become a filter block (`{% filter ... %}`) that wraps its text in two
//! Unicode noncharacters, with the tags' whitespace control kept; the
//! marks are taken out of the output again, their places recorded.
//!
//! **Bounds.** A template is untrusted input: rendering stops with an error
//! after [`FUEL`] instructions (a loop that never ends), at a recursion depth
//! of [`MAX_DEPTH`] (a macro that calls itself), and when its output passes
//! [`MAX_OUTPUT_BYTES`].

use std::collections::BTreeMap;
use std::ops::Range;

use minijinja::value::{Kwargs, Value};
use minijinja::{Environment, Error, ErrorKind};

use crate::tokenizer::Tokenizer;

/// The instructions one rendering may run: far more than any real
/// template needs for a long conversation (SmolLM2's runs about 30 per
/// message, templates that scan the conversation twice a few hundred), few
/// enough that a loop that never ends fails in a fraction of a second.
pub const FUEL: u64 = 2_000_000;
/// The deepest nesting of macro calls and includes.
pub const MAX_DEPTH: usize = 64;
/// The longest text one rendering may produce: 64 MiB.
pub const MAX_OUTPUT_BYTES: usize = 64 << 20;

/// Where a generation block starts and ends in the raw output (noncharacters,
/// which no text exchanged between programs may hold).
const GENERATION_START: char = '\u{FDD0}';
const GENERATION_END: char = '\u{FDD1}';
/// The filter a `{% generation %}` block becomes.
const GENERATION_FILTER: &str = "__generation_block";
const TEMPLATE_NAME: &str = "chat_template";

/// Why a template cannot be used or a conversation cannot be rendered; one line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChatTemplateError {
    /// The template does not parse.
    #[error("the chat template does not parse: {0}")]
    Syntax(String),
    /// The template called `raise_exception(message)`: it refuses the conversation.
    #[error("the chat template refused the conversation: {0}")]
    Refused(String),
    /// Rendering failed (an undefined operation, a loop over its budget, too deep).
    #[error("the chat template failed: {0}")]
    Render(String),
    /// The tokenizer has no chat template.
    #[error("the model has no chat template (chat_template.jinja, tokenizer_config.json's chat_template, or a GGUF's tokenizer.chat_template)")]
    Missing,
    /// The model reads bytes: no tokenizer files to carry a template with.
    #[error("a chat template needs the model's tokenizer.json (this model reads bytes)")]
    NoTokenizerFile,
    /// The conversation is not one a template can be given.
    #[error("{0}")]
    BadConversation(String),
}

/// What one rendering produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rendered {
    /// The text.
    pub text: String,
    /// Byte ranges of `text` inside `{% generation %}` blocks (empty when the
    /// template has none).
    pub generation: Vec<Range<usize>>,
}

/// A compiled chat template with the special tokens it is rendered with.
pub struct ChatTemplate {
    env: Environment<'static>,
    source: String,
    special_tokens: BTreeMap<String, String>,
    has_generation_blocks: bool,
}

impl std::fmt::Debug for ChatTemplate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChatTemplate")
            .field("source_bytes", &self.source.len())
            .field("special_tokens", &self.special_tokens)
            .finish()
    }
}

impl ChatTemplate {
    /// Compiles `source`; `special_tokens` maps names (`bos_token`,
    /// `eos_token`, ...) to the token strings the template may write.
    pub fn new(
        source: &str,
        special_tokens: BTreeMap<String, String>,
    ) -> Result<ChatTemplate, ChatTemplateError> {
        let mut env = Environment::new();
        env.set_trim_blocks(true);
        env.set_lstrip_blocks(true);
        env.set_fuel(Some(FUEL));
        env.set_recursion_limit(MAX_DEPTH);
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_function("raise_exception", raise_exception);
        env.add_function("strftime_now", strftime_now);
        env.add_filter("tojson", tojson);
        env.add_filter(GENERATION_FILTER, |text: String| {
            format!("{GENERATION_START}{text}{GENERATION_END}")
        });
        let compiled = with_generation_filter(source);
        let has_generation_blocks = compiled != source;
        env.add_template_owned(TEMPLATE_NAME, compiled)
            .map_err(|e| ChatTemplateError::Syntax(one_line(&e)))?;
        Ok(ChatTemplate {
            env,
            source: source.to_string(),
            special_tokens,
            has_generation_blocks,
        })
    }

    /// The Jinja source, as it was given.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// Whether the template marks the assistant's text with
    /// `{% generation %}` blocks (what `--assistant-only-loss` needs).
    pub fn has_generation_blocks(&self) -> bool {
        self.has_generation_blocks
    }

    /// Renders `messages` (a list of message objects): with
    /// `add_generation_prompt`, the text ends where the assistant's answer
    /// would begin; with `continue_final_message`, it ends with the last
    /// message's content, left open for more (transformers' rule: the text
    /// is cut after the last place that content appears).
    pub fn render(
        &self,
        messages: &[serde_json::Value],
        add_generation_prompt: bool,
        continue_final_message: bool,
    ) -> Result<Rendered, ChatTemplateError> {
        if add_generation_prompt && continue_final_message {
            return Err(ChatTemplateError::BadConversation(
                "add_generation_prompt and continue_final_message cannot both be set".into(),
            ));
        }
        if messages_contain_marks(messages) {
            return Err(ChatTemplateError::BadConversation(
                "a message holds a Unicode noncharacter (U+FDD0 or U+FDD1)".into(),
            ));
        }
        let template = self
            .env
            .get_template(TEMPLATE_NAME)
            .expect("the template was added in new()");
        let mut context: BTreeMap<&str, Value> = self
            .special_tokens
            .iter()
            .map(|(name, token)| (name.as_str(), Value::from(token.as_str())))
            .collect();
        context.insert("messages", Value::from_serialize(messages));
        context.insert("add_generation_prompt", Value::from(add_generation_prompt));
        context.insert("tools", Value::from(()));
        context.insert("documents", Value::from(()));
        let raw = template.render(context).map_err(|e| render_error(&e))?;
        if raw.len() > MAX_OUTPUT_BYTES {
            return Err(ChatTemplateError::Render(format!(
                "the rendered text is longer than {} MiB",
                MAX_OUTPUT_BYTES >> 20
            )));
        }
        let mut rendered = strip_generation_marks(&raw);
        if continue_final_message {
            rendered = cut_after_final_message(rendered, messages)?;
        }
        Ok(rendered)
    }
}

/// The ids of a rendered text and, for each, whether it is the assistant's
/// (inside a generation block), as transformers'
/// `return_assistant_tokens_mask`: each block marks the tokens from the one
/// holding its first byte to the one holding its last.
pub fn tokenize_with_assistant_mask(
    tokenizer: &dyn Tokenizer,
    rendered: &Rendered,
) -> (Vec<u32>, Vec<bool>) {
    let (ids, offsets) = tokenizer.encode_with_offsets(&rendered.text);
    let token_at = |byte: usize| offsets.iter().position(|o| o.start <= byte && byte < o.end);
    let mut mask = vec![false; ids.len()];
    for block in &rendered.generation {
        let Some(first) = token_at(block.start) else {
            break;
        };
        // transformers marks to the end of the text when the last byte's token is
        // unknown, or is the first token (a falsy index in Python).
        let last = match block.end.checked_sub(1).and_then(token_at) {
            Some(last) if last > 0 => last,
            _ => ids.len().saturating_sub(1),
        };
        for flag in mask.iter_mut().take(last + 1).skip(first) {
            *flag = true;
        }
    }
    (ids, mask)
}

/// The template with each `{% generation %}` / `{% endgeneration %}` tag
/// (any whitespace control, `{%- generation -%}`) replaced by the opening
/// and closing tags of a filter block with the same whitespace control.
fn with_generation_filter(source: &str) -> String {
    let mut out = String::with_capacity(source.len());
    let mut rest = source;
    while let Some(at) = rest.find("{%") {
        out.push_str(&rest[..at]);
        let tag = &rest[at..];
        match parse_generation_tag(tag) {
            Some((len, open_ws, closing, close_ws)) => {
                let body = if closing {
                    "endfilter".to_string()
                } else {
                    format!("filter {GENERATION_FILTER}")
                };
                out.push_str(&format!("{{%{open_ws} {body} {close_ws}%}}"));
                rest = &tag[len..];
            }
            None => {
                out.push_str("{%");
                rest = &tag[2..];
            }
        }
    }
    out.push_str(rest);
    out
}

/// `Some((length, opening whitespace control, is endgeneration, closing
/// whitespace control))` when `tag` starts with a generation tag.
fn parse_generation_tag(tag: &str) -> Option<(usize, &str, bool, &str)> {
    fn control(s: &str) -> &str {
        match s.as_bytes().first() {
            Some(b'-' | b'+') => &s[..1],
            _ => "",
        }
    }
    let body = tag.strip_prefix("{%")?;
    let open_ws = control(body);
    let body = &body[open_ws.len()..];
    let trimmed = body.trim_start();
    let (closing, after) = if let Some(after) = trimmed.strip_prefix("endgeneration") {
        (true, after)
    } else {
        (false, trimmed.strip_prefix("generation")?)
    };
    let after_ws = after.trim_start();
    if after_ws.len() == after.len() && !after.starts_with(['-', '+', '%']) {
        return None; // `generations` or another word that starts the same
    }
    let close_ws = control(after_ws);
    let end = after_ws[close_ws.len()..].strip_prefix("%}")?;
    Some((tag.len() - end.len(), open_ws, closing, close_ws))
}

/// Whether any string in the messages holds a generation mark.
fn messages_contain_marks(messages: &[serde_json::Value]) -> bool {
    fn has_marks(value: &serde_json::Value) -> bool {
        match value {
            serde_json::Value::String(s) => s.contains([GENERATION_START, GENERATION_END]),
            serde_json::Value::Array(items) => items.iter().any(has_marks),
            serde_json::Value::Object(map) => map
                .iter()
                .any(|(k, v)| k.contains([GENERATION_START, GENERATION_END]) || has_marks(v)),
            _ => false,
        }
    }
    messages.iter().any(has_marks)
}

/// The output without its generation marks, and the byte ranges they enclosed.
fn strip_generation_marks(raw: &str) -> Rendered {
    let mut text = String::with_capacity(raw.len());
    let mut generation = Vec::new();
    let mut starts = Vec::new();
    for c in raw.chars() {
        match c {
            GENERATION_START => starts.push(text.len()),
            GENERATION_END => {
                if let Some(start) = starts.pop() {
                    if starts.is_empty() {
                        generation.push(start..text.len());
                    }
                }
            }
            c => text.push(c),
        }
    }
    Rendered { text, generation }
}

/// transformers' `continue_final_message`: the text up to the end of the
/// last place the final message's content appears.
fn cut_after_final_message(
    mut rendered: Rendered,
    messages: &[serde_json::Value],
) -> Result<Rendered, ChatTemplateError> {
    let no_text = || {
        ChatTemplateError::BadConversation(
            "continue_final_message needs a final message with text content".into(),
        )
    };
    let final_message = messages.last().ok_or_else(no_text)?;
    let content = final_message
        .get("content")
        .and_then(|c| c.as_str())
        .ok_or_else(no_text)?;
    let stripped = content.trim_matches(char::is_whitespace);
    let at = rendered.text.rfind(stripped).ok_or_else(|| {
        ChatTemplateError::BadConversation(
            "the final message does not appear in the rendered chat (continue_final_message)"
                .into(),
        )
    })?;
    // The template kept the content as it is (no leading whitespace to lose):
    // keep its trailing whitespace too; else only the stripped content.
    let kept_whole =
        !content.starts_with(char::is_whitespace) && rendered.text[at..].starts_with(content);
    let end = at
        + if kept_whole {
            content.len()
        } else {
            stripped.len()
        };
    rendered.text.truncate(end);
    rendered.generation.retain_mut(|range| {
        range.end = range.end.min(end);
        range.start < range.end
    });
    Ok(rendered)
}

/// One line of a minijinja error: its kind, detail and template line.
fn one_line(error: &Error) -> String {
    let mut message = match error.detail() {
        Some(detail) => format!("{}: {detail}", error.kind()),
        None => error.kind().to_string(),
    };
    if let Some(line) = error.line() {
        message.push_str(&format!(" (template line {line})"));
    }
    message.replace('\n', " ")
}

fn render_error(error: &Error) -> ChatTemplateError {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(e) = source {
        if let Some(raised) = e.downcast_ref::<Error>().and_then(raised_message) {
            return ChatTemplateError::Refused(raised);
        }
        source = e.source();
    }
    ChatTemplateError::Render(one_line(error))
}

/// The message of an error made by `raise_exception`.
fn raised_message(error: &Error) -> Option<String> {
    let detail = error.detail()?;
    detail.strip_prefix(RAISED).map(str::to_string)
}

const RAISED: &str = "raise_exception: ";

/// `raise_exception(message)`: the template refuses the conversation.
fn raise_exception(message: String) -> Result<Value, Error> {
    Err(Error::new(
        ErrorKind::InvalidOperation,
        format!("{RAISED}{message}"),
    ))
}

/// `strftime_now(format)`: the current UTC time in a `strftime` format
/// (`%Y %m %d %H %M %S %y %b %B %a %A %j %p %I %e %%`).
fn strftime_now(format: String) -> Result<String, Error> {
    let seconds = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    strftime(&format, seconds)
}

/// `format` applied to the UTC time `seconds` after the Unix epoch.
pub fn strftime(format: &str, seconds: i64) -> Result<String, Error> {
    const MONTHS: [&str; 12] = [
        "January",
        "February",
        "March",
        "April",
        "May",
        "June",
        "July",
        "August",
        "September",
        "October",
        "November",
        "December",
    ];
    const DAYS: [&str; 7] = [
        "Monday",
        "Tuesday",
        "Wednesday",
        "Thursday",
        "Friday",
        "Saturday",
        "Sunday",
    ];
    let days = seconds.div_euclid(86_400);
    let secs = seconds.rem_euclid(86_400);
    let (year, month, day) = civil_from_days(days);
    let weekday = (days + 3).rem_euclid(7) as usize; // 1970-01-01 was a Thursday
    let day_of_year = days - days_from_civil(year, 1, 1) + 1;
    let (hour, minute, second) = (secs / 3600, secs / 60 % 60, secs % 60);
    let mut out = String::new();
    let mut chars = format.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        let piece = match chars.next() {
            Some('Y') => year.to_string(),
            Some('y') => format!("{:02}", year.rem_euclid(100)),
            Some('m') => format!("{month:02}"),
            Some('d') => format!("{day:02}"),
            Some('e') => format!("{day:>2}"),
            Some('H') => format!("{hour:02}"),
            Some('I') => format!("{:02}", (hour + 11) % 12 + 1),
            Some('p') => (if hour < 12 { "AM" } else { "PM" }).to_string(),
            Some('M') => format!("{minute:02}"),
            Some('S') => format!("{second:02}"),
            Some('j') => format!("{day_of_year:03}"),
            Some('B') => MONTHS[month as usize - 1].to_string(),
            Some('b') => MONTHS[month as usize - 1][..3].to_string(),
            Some('A') => DAYS[weekday].to_string(),
            Some('a') => DAYS[weekday][..3].to_string(),
            Some('%') => "%".to_string(),
            other => {
                return Err(Error::new(
                    ErrorKind::InvalidOperation,
                    format!(
                        "strftime_now: unsupported directive %{}",
                        other.map_or(String::new(), String::from)
                    ),
                ))
            }
        };
        out.push_str(&piece);
    }
    Ok(out)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The date `days` after 1970-01-01: (year, month 1-12, day 1-31).
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(month <= 2), month, day)
}

/// transformers' `tojson` filter: Python's `json.dumps(value,
/// ensure_ascii=False, indent=indent, separators=separators, sort_keys=sort_keys)`.
fn tojson(value: Value, kwargs: Kwargs) -> Result<Value, Error> {
    let indent: Option<usize> = kwargs.get("indent")?;
    let sort_keys: Option<bool> = kwargs.get("sort_keys")?;
    let separators: Option<Vec<String>> = kwargs.get("separators")?;
    kwargs.assert_all_used()?;
    let mut json = serde_json::to_value(&value).map_err(|e| {
        Error::new(
            ErrorKind::InvalidOperation,
            format!("tojson: cannot serialize: {e}"),
        )
    })?;
    if sort_keys.unwrap_or(false) {
        json = sorted(json);
    }
    let (item, key) = match separators.as_deref() {
        Some([item, key]) => (item.clone(), key.clone()),
        Some(_) => {
            return Err(Error::new(
                ErrorKind::InvalidOperation,
                "tojson: separators must be two strings",
            ))
        }
        None if indent.is_some() => (",".to_string(), ": ".to_string()),
        None => (", ".to_string(), ": ".to_string()),
    };
    let mut out = String::new();
    write_python_json(&json, indent, 0, &item, &key, &mut out);
    Ok(Value::from_safe_string(out))
}

fn sorted(value: serde_json::Value) -> serde_json::Value {
    match value {
        serde_json::Value::Object(map) => {
            let mut entries: Vec<_> = map.into_iter().collect();
            entries.sort_by(|a, b| a.0.cmp(&b.0));
            serde_json::Value::Object(entries.into_iter().map(|(k, v)| (k, sorted(v))).collect())
        }
        serde_json::Value::Array(items) => {
            serde_json::Value::Array(items.into_iter().map(sorted).collect())
        }
        other => other,
    }
}

/// Writes `value` as Python's `json.dumps` does with `ensure_ascii=False`.
fn write_python_json(
    value: &serde_json::Value,
    indent: Option<usize>,
    depth: usize,
    item_separator: &str,
    key_separator: &str,
    out: &mut String,
) {
    let newline = |out: &mut String, depth: usize| {
        if let Some(width) = indent {
            out.push('\n');
            out.push_str(&" ".repeat(width * depth));
        }
    };
    match value {
        serde_json::Value::Array(items) if !items.is_empty() => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(item_separator);
                }
                newline(out, depth + 1);
                write_python_json(item, indent, depth + 1, item_separator, key_separator, out);
            }
            newline(out, depth);
            out.push(']');
        }
        serde_json::Value::Object(map) if !map.is_empty() => {
            out.push('{');
            for (i, (key, item)) in map.iter().enumerate() {
                if i > 0 {
                    out.push_str(item_separator);
                }
                newline(out, depth + 1);
                out.push_str(&python_string(key));
                out.push_str(key_separator);
                write_python_json(item, indent, depth + 1, item_separator, key_separator, out);
            }
            newline(out, depth);
            out.push('}');
        }
        serde_json::Value::String(s) => out.push_str(&python_string(s)),
        serde_json::Value::Number(n) if n.is_f64() => {
            let x = n.as_f64().unwrap_or(0.0);
            // Python writes floats with their shortest repr, always with a dot or exponent.
            let text = format!("{x:?}");
            out.push_str(&text);
        }
        other => out.push_str(&other.to_string()),
    }
}

/// A JSON string as Python writes it with `ensure_ascii=False`: only `"`,
/// `\` and control characters escaped.
fn python_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{08}' => out.push_str("\\b"),
            '\u{0c}' => out.push_str("\\f"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn template(source: &str) -> ChatTemplate {
        ChatTemplate::new(source, BTreeMap::new()).unwrap()
    }

    #[test]
    fn generation_tags_become_filter_blocks_with_their_whitespace_control() {
        assert_eq!(
            with_generation_filter("a{%- generation -%}b{% endgeneration %}c{% generations %}"),
            format!("a{{%- filter {GENERATION_FILTER} -%}}b{{% endfilter %}}c{{% generations %}}")
        );
        assert!(!template("{{ 1 }}").has_generation_blocks());
    }

    #[test]
    fn generation_blocks_give_byte_ranges() {
        let t = template(
            "{% for m in messages %}<{{ m.role }}>{% if m.role == 'assistant' %}{% generation %}{{ m.content }}!{% endgeneration %}{% else %}{{ m.content }}{% endif %}{% endfor %}",
        );
        let messages = [
            json!({"role": "user", "content": "hé"}),
            json!({"role": "assistant", "content": "yo"}),
        ];
        let r = t.render(&messages, false, false).unwrap();
        assert_eq!(r.text, "<user>hé<assistant>yo!");
        assert_eq!(&r.text[r.generation[0].clone()], "yo!");
    }

    #[test]
    fn raise_exception_is_a_refusal() {
        let t = template("{{ raise_exception('only user and assistant roles') }}");
        let err = t.render(&[], false, false).unwrap_err();
        assert_eq!(
            err,
            ChatTemplateError::Refused("only user and assistant roles".into())
        );
    }

    #[test]
    fn endless_loops_and_deep_recursion_fail_quickly() {
        let t = template(
            "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}",
        );
        assert!(matches!(
            t.render(&[], false, false),
            Err(ChatTemplateError::Render(_))
        ));
        let t = template("{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}");
        assert!(matches!(
            t.render(&[], false, false),
            Err(ChatTemplateError::Render(_))
        ));
        assert!(matches!(
            ChatTemplate::new("{% for %}", BTreeMap::new()),
            Err(ChatTemplateError::Syntax(_))
        ));
    }

    #[test]
    fn strftime_matches_known_dates() {
        // 2024-02-29 13:05:09 UTC, a Thursday.
        let t = 1_709_211_909;
        assert_eq!(
            strftime("%d %b %Y %H:%M:%S %A %j %%", t).unwrap(),
            "29 Feb 2024 13:05:09 Thursday 060 %"
        );
        assert_eq!(strftime("%Y-%m-%d", 0).unwrap(), "1970-01-01");
        assert_eq!(
            strftime("%B %e, %y %I %p", 951_782_400).unwrap(),
            "February 29, 00 12 AM"
        );
    }

    #[test]
    fn tojson_writes_as_python_json_dumps() {
        let t = template("{{ x | tojson }}|{{ x | tojson(indent=2) }}");
        // Keys come in sorted order: a row's JSON objects are parsed into sorted maps.
        let mut env_value = BTreeMap::new();
        env_value.insert("x", json!({"b": [1, 2.5, "é\n"], "a": {}}));
        let out = t
            .env
            .render_str(&with_generation_filter(t.source()), env_value)
            .unwrap();
        assert_eq!(
            out,
            "{\"a\": {}, \"b\": [1, 2.5, \"é\\n\"]}|{\n  \"a\": {},\n  \"b\": [\n    1,\n    2.5,\n    \"é\\n\"\n  ]\n}"
        );
    }

    #[test]
    fn continue_final_message_cuts_after_its_content() {
        let t = template(
            "{% for m in messages %}<{{ m.role }}>{{ m.content | trim }}</s>\n{% endfor %}",
        );
        let messages = [
            json!({"role": "user", "content": "hi"}),
            json!({"role": "assistant", "content": "The answer is "}),
        ];
        let r = t.render(&messages, false, true).unwrap();
        assert_eq!(r.text, "<user>hi</s>\n<assistant>The answer is");
    }
}
