//! Conversational rows: fields that hold lists of messages
//! (`[{"role": "user", "content": "..."}, ...]`), TRL's conversational
//! dataset formats, tokenized through the model's chat template as TRL 1.16
//! tokenizes them (`DPOTrainer`, `SFTTrainer`, `KTOTrainer`).
//!
//! ```json
//! {"prompt": [{"role": "user", "content": "2+2?"}],
//!  "chosen": [{"role": "assistant", "content": "4"}],
//!  "rejected": [{"role": "assistant", "content": "5"}]}
//! {"chosen": [{"role": "user", "content": "2+2?"}, {"role": "assistant", "content": "4"}],
//!  "rejected": [{"role": "user", "content": "2+2?"}, {"role": "assistant", "content": "5"}]}
//! {"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"},
//!               {"role": "assistant", "content": "Hello."}]}
//! {"prompt": [{"role": "user", "content": "2+2?"}], "completion": [{"role": "assistant", "content": "4"}], "label": true}
//! ```
//!
//! The rule, the same for every trainer: the prompt is rendered alone with
//! the generation prompt (`add_generation_prompt=True`), and rendered again
//! followed by each response; each rendering is tokenized (no special tokens
//! added: the template writes them). The prompt's ids are those every
//! `prompt + response` starts with, and each response is the rest of its
//! sequence. Where the prompt alone is not a prefix of `prompt + response`
//! (a template that renders the open assistant turn differently, or tokens
//! that merge across the boundary), the response starts where they diverge:
//! TRL warns once and trains so; the loaders count such rows
//! ([`super::LoadReport::prompt_not_prefix`]) and the commands warn.
//! No EOS is appended: the template ends each turn with its own marker.
//!
//! Where a preference row has no `prompt`, the prompt is the messages that
//! `chosen` and `rejected` share from the start (TRL's `extract_prompt`).

use serde_json::Value;
use transformer::{tokenize_with_assistant_mask, Tokenizer};

use super::jsonl::JsonRow;
use super::rows::check_range;
use super::BadLine;

/// The fields a conversational row may hold lists of messages in.
const MESSAGE_FIELDS: [&str; 5] = ["prompt", "chosen", "rejected", "completion", "messages"];

/// Whether a row is conversational: one of its fields is a non-empty list
/// whose first item is an object with a `role` (TRL's `is_conversational`).
pub(super) fn is_conversational(row: &JsonRow) -> bool {
    MESSAGE_FIELDS.iter().any(|field| {
        row.get(*field)
            .and_then(Value::as_array)
            .and_then(|messages| messages.first())
            .and_then(Value::as_object)
            .is_some_and(|message| message.contains_key("role"))
    })
}

/// The messages of `field`: a list of objects, each with a string `role`.
/// `None` when the row has no such field.
pub(super) fn messages<'a>(
    row: &'a JsonRow,
    field: &'static str,
) -> Result<Option<&'a [Value]>, BadLine> {
    let Some(value) = row.get(field) else {
        return Ok(None);
    };
    let list = value.as_array().ok_or(BadLine::NotMessages { field })?;
    for message in list {
        let role = message.as_object().and_then(|m| m.get("role"));
        if !matches!(role, Some(Value::String(_))) {
            return Err(BadLine::NotMessages { field });
        }
    }
    Ok(Some(list))
}

/// `field`'s messages, which the row must have.
pub(super) fn required_messages<'a>(
    row: &'a JsonRow,
    field: &'static str,
) -> Result<&'a [Value], BadLine> {
    messages(row, field)?.ok_or(BadLine::MissingMessages { field })
}

/// A prompt and the two responses of a pair, as lists of messages.
pub(super) type PromptAndResponses<'a> = (&'a [Value], &'a [Value], &'a [Value]);

/// TRL's `extract_prompt` for conversational rows: the prompt is the
/// messages `chosen` and `rejected` share from the start, up to the first
/// that differs. Where neither list differs within the shorter one's length,
/// TRL's loop ends on that length minus one, and so does this.
pub(super) fn split_implicit_prompt<'a>(
    chosen: &'a [Value],
    rejected: &'a [Value],
) -> Result<PromptAndResponses<'a>, BadLine> {
    let shared_len = chosen.len().min(rejected.len());
    if shared_len == 0 {
        let field = if chosen.is_empty() {
            "chosen"
        } else {
            "rejected"
        };
        return Err(BadLine::EmptyImplicitResponse { field });
    }
    let prompt_len = (0..shared_len)
        .find(|&i| chosen[i] != rejected[i])
        .unwrap_or(shared_len - 1);
    Ok((
        &chosen[..prompt_len],
        &chosen[prompt_len..],
        &rejected[prompt_len..],
    ))
}

/// What tokenizing one conversational row gave.
pub(super) struct Tokenized<const N: usize> {
    /// The prompt's ids: those every `prompt + response` starts with.
    pub prompt: Vec<u32>,
    /// Each response's ids: the rest of its sequence.
    pub responses: [Vec<u32>; N],
    /// Whether the prompt rendered alone is longer than the part it shares
    /// with the sequences (TRL's warning).
    pub prompt_not_prefix: bool,
}

/// `messages` through the chat template, tokenized and checked against the
/// vocabulary (`field` names the row's field in errors).
pub(super) fn render_ids(
    messages: &[Value],
    add_generation_prompt: bool,
    field: &'static str,
    tokenizer: &dyn Tokenizer,
    vocab_size: usize,
) -> Result<Vec<u32>, BadLine> {
    let template = tokenizer
        .chat_template()
        .map_err(|e| BadLine::ChatTemplate(e.to_string()))?;
    let rendered = template
        .render(messages, add_generation_prompt, false)
        .map_err(|e| BadLine::ChatTemplate(e.to_string()))?;
    let ids = tokenizer.encode(&rendered.text);
    check_range(&ids, field, vocab_size)?;
    Ok(ids)
}

/// `messages` through the chat template (no generation prompt), tokenized,
/// with the mask of the assistant's tokens: those inside the template's
/// generation blocks (transformers' `return_assistant_tokens_mask`).
pub(super) fn render_with_mask(
    messages: &[Value],
    field: &'static str,
    tokenizer: &dyn Tokenizer,
    vocab_size: usize,
) -> Result<(Vec<u32>, Vec<bool>), BadLine> {
    let template = tokenizer
        .chat_template()
        .map_err(|e| BadLine::ChatTemplate(e.to_string()))?;
    if !template.has_generation_blocks() {
        return Err(BadLine::NoGenerationBlocks);
    }
    let rendered = template
        .render(messages, false, false)
        .map_err(|e| BadLine::ChatTemplate(e.to_string()))?;
    let (ids, mask) = tokenize_with_assistant_mask(tokenizer, &rendered);
    check_range(&ids, field, vocab_size)?;
    Ok((ids, mask))
}

/// The module's rule: the prompt rendered with the generation prompt, each
/// `prompt + response` rendered whole, the prompt's ids being what all
/// sequences share with it.
pub(super) fn tokenize_conversation<const N: usize>(
    prompt: &[Value],
    responses: [(&'static str, &[Value]); N],
    tokenizer: &dyn Tokenizer,
    vocab_size: usize,
) -> Result<Tokenized<N>, BadLine> {
    let prompt_ids = render_ids(prompt, true, "prompt", tokenizer, vocab_size)?;
    let mut sequences: [Vec<u32>; N] = std::array::from_fn(|_| Vec::new());
    for (ids, (field, response)) in sequences.iter_mut().zip(responses) {
        let conversation: Vec<Value> = prompt.iter().chain(response).cloned().collect();
        *ids = render_ids(&conversation, false, field, tokenizer, vocab_size)?;
    }
    let shared = sequences
        .iter()
        .map(|ids| {
            prompt_ids
                .iter()
                .zip(ids)
                .take_while(|(a, b)| a == b)
                .count()
        })
        .min()
        .unwrap_or(prompt_ids.len());
    Ok(Tokenized {
        prompt_not_prefix: shared < prompt_ids.len(),
        prompt: prompt_ids[..shared].to_vec(),
        responses: sequences.map(|ids| ids[shared..].to_vec()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn row(value: Value) -> JsonRow {
        value.as_object().unwrap().clone()
    }

    #[test]
    fn conversational_rows_are_told_by_their_first_message() {
        assert!(is_conversational(&row(
            json!({"messages": [{"role": "user", "content": "hi"}]})
        )));
        assert!(is_conversational(&row(
            json!({"prompt": "x", "chosen": [{"role": "assistant", "content": "a"}]})
        )));
        assert!(!is_conversational(&row(
            json!({"prompt": "x", "chosen": "a", "rejected": "b"})
        )));
        assert!(!is_conversational(&row(
            json!({"chosen": [], "rejected": [1]})
        )));
    }

    #[test]
    fn implicit_prompt_is_the_shared_messages() {
        let u = json!({"role": "user", "content": "q"});
        let a = json!({"role": "assistant", "content": "a"});
        let b = json!({"role": "assistant", "content": "b"});
        let chosen = [u.clone(), a.clone()];
        let rejected = [u.clone(), b.clone()];
        let (prompt, c, r) = split_implicit_prompt(&chosen, &rejected).unwrap();
        assert_eq!((prompt, c, r), (&chosen[..1], &chosen[1..], &rejected[1..]));
        // No message differs: TRL's loop stops one short of the shorter list.
        let same = [u.clone(), a.clone()];
        let (prompt, c, r) = split_implicit_prompt(&same, &same).unwrap();
        assert_eq!((prompt.len(), c.len(), r.len()), (1, 1, 1));
        assert!(split_implicit_prompt(&[], &same).is_err());
    }
}
