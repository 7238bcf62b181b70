//! One JSON object -> one validated token row, and the two file loaders.
//!
//! The rules of docs/spec.md section 3; the PyTorch reference
//! `tests/golden/torch_reference.py` reads the same rows (`load_prefs`,
//! `load_sft`, `field_ids`, `scored`, `common_prefix`).

use super::conversation::{self, Tokenized};
use super::jsonl::{read_rows, read_rows_from, JsonRow};
use super::prepare::{LoadOptions, TrainingRow};
use super::{BadLine, DataError, LoadReport, PreferenceRow, SftRow};
use serde_json::Value;
use std::io::BufRead;
use std::path::Path;
use transformer::Tokenizer;

/// Number of `response` tokens that get a log-prob in the sequence
/// `prompt + response`: all of them, except the first token of the sequence,
/// which nothing predicts (so with an empty prompt, one fewer).
pub fn scored_tokens(prompt: &[u32], response: &[u32]) -> usize {
    let unscored = usize::from(prompt.is_empty());
    response.len().saturating_sub(unscored)
}

/// Refuses a response that would add nothing to the log-prob sum.
pub(super) fn check_scored(
    prompt: &[u32],
    response: &[u32],
    field: &'static str,
) -> Result<(), BadLine> {
    if scored_tokens(prompt, response) < 1 {
        return Err(BadLine::NoScoredToken { field });
    }
    Ok(())
}

/// A row is all text fields or all `_ids` fields (the reference's `_check_form`).
pub(super) fn check_form(row: &JsonRow, fields: &[&'static str]) -> Result<(), BadLine> {
    let text: Vec<&str> = fields
        .iter()
        .copied()
        .filter(|f| row.contains_key(*f))
        .collect();
    let ids: Vec<String> = fields
        .iter()
        .map(|f| format!("{f}_ids"))
        .filter(|f| row.contains_key(f))
        .collect();
    if !text.is_empty() && !ids.is_empty() {
        return Err(BadLine::MixedForm {
            text: text.join(", "),
            ids: ids.join(", "),
        });
    }
    Ok(())
}

/// Checks that every id is in `[0, vocab_size)`.
pub(super) fn check_range(
    ids: &[u32],
    field: &'static str,
    vocab_size: usize,
) -> Result<(), BadLine> {
    match ids.iter().find(|&&id| id as usize >= vocab_size) {
        Some(&id) => Err(BadLine::IdOutOfRange {
            field,
            id: i128::from(id),
            vocab_size,
        }),
        None => Ok(()),
    }
}

/// Tokenizes one text piece and checks its ids against the model's vocabulary.
fn tokenize(
    text: &str,
    field: &'static str,
    tokenizer: &dyn Tokenizer,
    vocab_size: usize,
) -> Result<Vec<u32>, BadLine> {
    let ids = tokenizer.encode(text);
    check_range(&ids, field, vocab_size)?;
    Ok(ids)
}

/// TRL's tokenization of a text row (`DPOTrainer` of trl 1.16; its
/// `SFTTrainer` does the same for a completion): the prompt is tokenized
/// alone and together with each response; each response gets the EOS token
/// appended when the tokenizer has one (unless it already ends with it); the
/// prompt's ids are those it shares with every `prompt + response`, and each
/// response is the rest. Where the prompt ends on a token boundary (always
/// for the byte tokenizer) this is the prompt and each response tokenized on
/// their own; where a token would straddle the boundary (a prompt ending in
/// a space before a word), the straddling token goes to the responses.
pub(super) fn tokenize_row<const N: usize>(
    prompt: &str,
    responses: [(&'static str, &str); N],
    tokenizer: &dyn Tokenizer,
    vocab_size: usize,
) -> Result<(Vec<u32>, [Vec<u32>; N]), BadLine> {
    let prompt_ids = tokenize(prompt, "prompt", tokenizer, vocab_size)?;
    let mut joint: [Vec<u32>; N] = std::array::from_fn(|_| Vec::new());
    for (ids, (field, response)) in joint.iter_mut().zip(responses) {
        *ids = tokenize(&format!("{prompt}{response}"), field, tokenizer, vocab_size)?;
        if let Some(eos) = tokenizer.eos_id() {
            if ids.last() != Some(&eos) {
                ids.push(eos);
                check_range(ids, field, vocab_size)?;
            }
        }
    }
    let shared = joint
        .iter()
        .map(|ids| common_prefix_ids(&prompt_ids, ids))
        .min()
        .unwrap_or(prompt_ids.len());
    let responses = joint.map(|ids| ids[shared..].to_vec());
    Ok((prompt_ids[..shared].to_vec(), responses))
}

/// `prompt` and `completion` of a row: text tokenized by [`tokenize_row`],
/// `_ids` verbatim.
pub(super) fn prompt_and_completion(
    row: &JsonRow,
    tokenizer: &dyn Tokenizer,
    vocab_size: usize,
) -> Result<(Vec<u32>, Vec<u32>), BadLine> {
    match (text_field(row, "prompt"), text_field(row, "completion")) {
        (Ok(Some(prompt)), Ok(Some(completion))) => {
            let (prompt, [completion]) =
                tokenize_row(prompt, [("completion", completion)], tokenizer, vocab_size)?;
            Ok((prompt, completion))
        }
        _ => Ok((
            field_ids(row, "prompt", tokenizer, vocab_size)?,
            field_ids(row, "completion", tokenizer, vocab_size)?,
        )),
    }
}

/// A `<field>_ids` value: a list of JSON integers (not floats, not bools),
/// each in `[0, vocab_size)`.
fn parse_ids(value: &Value, field: &'static str, vocab_size: usize) -> Result<Vec<u32>, BadLine> {
    let items = value.as_array().ok_or(BadLine::NotIdList { field })?;
    // Pass 1: every item an integer (as i128, so u64 and negative i64 both fit).
    let mut wide = Vec::with_capacity(items.len());
    for item in items {
        let id = match item {
            Value::Number(n) => n.as_i64().map(i128::from).or(n.as_u64().map(i128::from)),
            _ => None,
        };
        wide.push(id.ok_or(BadLine::NotIdList { field })?);
    }
    // Pass 2: every integer a token id.
    wide.iter()
        .map(|&id| {
            if (0..vocab_size as i128).contains(&id) {
                Ok(id as u32)
            } else {
                Err(BadLine::IdOutOfRange {
                    field,
                    id,
                    vocab_size,
                })
            }
        })
        .collect()
}

/// A text field's string, `None` when absent.
fn text_field<'a>(row: &'a JsonRow, field: &'static str) -> Result<Option<&'a str>, BadLine> {
    match row.get(field) {
        None => Ok(None),
        Some(Value::String(text)) => Ok(Some(text)),
        Some(_) => Err(BadLine::NotString { field }),
    }
}

/// `<field>_ids` used verbatim, else `<field>` tokenized (the reference's `_field_ids`).
pub(super) fn field_ids(
    row: &JsonRow,
    field: &'static str,
    tokenizer: &dyn Tokenizer,
    vocab_size: usize,
) -> Result<Vec<u32>, BadLine> {
    if let Some(value) = row.get(&format!("{field}_ids")) {
        return parse_ids(value, field, vocab_size);
    }
    match text_field(row, field)? {
        Some(text) => tokenize(text, field, tokenizer, vocab_size),
        None => Err(BadLine::MissingField { field }),
    }
}

/// Byte offset where `a` and `b` first differ, compared character by
/// character: the end of their longest common prefix, always a char boundary
/// of both (a byte-wise prefix could end inside a multibyte character).
fn common_prefix_bytes(a: &str, b: &str) -> usize {
    a.char_indices()
        .zip(b.chars())
        .find(|((_, ca), cb)| ca != cb)
        .map_or(a.len().min(b.len()), |((at, _), _)| at)
}

/// Number of leading ids `a` and `b` share.
fn common_prefix_ids(a: &[u32], b: &[u32]) -> usize {
    a.iter().zip(b).take_while(|(x, y)| x == y).count()
}

/// The implicit-prompt form (`{"chosen", "rejected"}` only, HH-RLHF style):
/// the prompt is the longest common prefix of the two, by Unicode character
/// for text (each piece then tokenized on its own) and by id for `_ids` rows,
/// with no further adjustment.
fn split_implicit_prompt(
    row: &JsonRow,
    line: usize,
    tokenizer: &dyn Tokenizer,
    vocab_size: usize,
) -> Result<PreferenceRow, BadLine> {
    let (prompt, chosen, rejected) = if row.contains_key("chosen_ids")
        || row.contains_key("rejected_ids")
    {
        let chosen = field_ids(row, "chosen", tokenizer, vocab_size)?;
        let rejected = field_ids(row, "rejected", tokenizer, vocab_size)?;
        let k = common_prefix_ids(&chosen, &rejected);
        (
            chosen[..k].to_vec(),
            chosen[k..].to_vec(),
            rejected[k..].to_vec(),
        )
    } else {
        let chosen = text_field(row, "chosen")?.ok_or(BadLine::MissingField { field: "chosen" })?;
        let rejected =
            text_field(row, "rejected")?.ok_or(BadLine::MissingField { field: "rejected" })?;
        let k = common_prefix_bytes(chosen, rejected);
        // An empty response is refused before the EOS would fill it.
        if k == chosen.len() {
            return Err(BadLine::EmptyImplicitResponse { field: "chosen" });
        }
        if k == rejected.len() {
            return Err(BadLine::EmptyImplicitResponse { field: "rejected" });
        }
        let (prompt, [chosen, rejected]) = tokenize_row(
            &chosen[..k],
            [("chosen", &chosen[k..]), ("rejected", &rejected[k..])],
            tokenizer,
            vocab_size,
        )?;
        (prompt, chosen, rejected)
    };
    if chosen.is_empty() {
        return Err(BadLine::EmptyImplicitResponse { field: "chosen" });
    }
    if rejected.is_empty() {
        return Err(BadLine::EmptyImplicitResponse { field: "rejected" });
    }
    Ok(PreferenceRow {
        prompt,
        chosen,
        rejected,
        line,
    })
}

/// Whether the row has any of `keys`.
fn has_any(row: &JsonRow, keys: &[&str]) -> bool {
    keys.iter().any(|k| row.contains_key(*k))
}

const PROMPT_KEYS: [&str; 2] = ["prompt", "prompt_ids"];
const RESPONSE_KEYS: [&str; 4] = ["chosen", "chosen_ids", "rejected", "rejected_ids"];
const COMPLETION_KEYS: [&str; 2] = ["completion", "completion_ids"];

/// A conversational preference row's ids: `prompt` with `chosen` and
/// `rejected` (lists of messages), or, without a `prompt`, the messages the
/// two share from the start as the prompt (module [`conversation`]).
fn conversational_pair(
    row: &JsonRow,
    tokenizer: &dyn Tokenizer,
    vocab_size: usize,
    prompt_not_prefix: &mut usize,
) -> Result<(Vec<u32>, [Vec<u32>; 2]), BadLine> {
    let chosen = conversation::required_messages(row, "chosen")?;
    let rejected = conversation::required_messages(row, "rejected")?;
    let (prompt, chosen, rejected) = match conversation::messages(row, "prompt")? {
        Some(prompt) => (prompt, chosen, rejected),
        None => conversation::split_implicit_prompt(chosen, rejected)?,
    };
    let tokenized = conversation::tokenize_conversation(
        prompt,
        [("chosen", chosen), ("rejected", rejected)],
        tokenizer,
        vocab_size,
    )?;
    Ok(count_divergence(tokenized, prompt_not_prefix))
}

/// A conversational `prompt` + `completion` row's ids (SFT and KTO).
pub(super) fn conversational_completion(
    row: &JsonRow,
    tokenizer: &dyn Tokenizer,
    vocab_size: usize,
    prompt_not_prefix: &mut usize,
) -> Result<(Vec<u32>, Vec<u32>), BadLine> {
    let prompt = conversation::required_messages(row, "prompt")?;
    let completion = conversation::required_messages(row, "completion")?;
    completion_ids(prompt, completion, tokenizer, vocab_size, prompt_not_prefix)
}

/// The ids of a conversational prompt and completion (lists of messages).
fn completion_ids(
    prompt: &[Value],
    completion: &[Value],
    tokenizer: &dyn Tokenizer,
    vocab_size: usize,
    prompt_not_prefix: &mut usize,
) -> Result<(Vec<u32>, Vec<u32>), BadLine> {
    let tokenized = conversation::tokenize_conversation(
        prompt,
        [("completion", completion)],
        tokenizer,
        vocab_size,
    )?;
    let (prompt, [completion]) = count_divergence(tokenized, prompt_not_prefix);
    Ok((prompt, completion))
}

/// The ids of a tokenized conversation, counting it when its prompt was
/// not a prefix of its sequences.
fn count_divergence<const N: usize>(
    tokenized: Tokenized<N>,
    prompt_not_prefix: &mut usize,
) -> (Vec<u32>, [Vec<u32>; N]) {
    *prompt_not_prefix += usize::from(tokenized.prompt_not_prefix);
    (tokenized.prompt, tokenized.responses)
}

/// One preference row: `{"prompt", "chosen", "rejected"}`, its `_ids` form, or
/// the implicit-prompt form. `line` is stored in the row.
fn parse_preference(
    row: &JsonRow,
    line: usize,
    tokenizer: &dyn Tokenizer,
    vocab_size: usize,
    prompt_not_prefix: &mut usize,
) -> Result<PreferenceRow, BadLine> {
    if conversation::is_conversational(row) {
        let (prompt, [chosen, rejected]) =
            conversational_pair(row, tokenizer, vocab_size, prompt_not_prefix)?;
        let pair = PreferenceRow {
            prompt,
            chosen,
            rejected,
            line,
        };
        check_scored(&pair.prompt, &pair.chosen, "chosen")?;
        check_scored(&pair.prompt, &pair.rejected, "rejected")?;
        return Ok(pair);
    }
    check_form(row, &["prompt", "chosen", "rejected"])?;
    let implicit = !has_any(row, &PROMPT_KEYS) && has_any(row, &RESPONSE_KEYS);
    let texts = ["prompt", "chosen", "rejected"].map(|f| text_field(row, f));
    let pair = if implicit {
        split_implicit_prompt(row, line, tokenizer, vocab_size)?
    } else if let [Ok(Some(prompt)), Ok(Some(chosen)), Ok(Some(rejected))] = texts {
        let (prompt, [chosen, rejected]) = tokenize_row(
            prompt,
            [("chosen", chosen), ("rejected", rejected)],
            tokenizer,
            vocab_size,
        )?;
        PreferenceRow {
            prompt,
            chosen,
            rejected,
            line,
        }
    } else {
        PreferenceRow {
            prompt: field_ids(row, "prompt", tokenizer, vocab_size)?,
            chosen: field_ids(row, "chosen", tokenizer, vocab_size)?,
            rejected: field_ids(row, "rejected", tokenizer, vocab_size)?,
            line,
        }
    };
    check_scored(&pair.prompt, &pair.chosen, "chosen")?;
    check_scored(&pair.prompt, &pair.rejected, "rejected")?;
    Ok(pair)
}

/// One SFT row: `{"prompt", "completion"}`, `{"text"}` (all target, empty
/// prompt), their `_ids` forms, or a preference row (trained on prompt + chosen).
fn parse_sft(
    row: &JsonRow,
    line: usize,
    tokenizer: &dyn Tokenizer,
    vocab_size: usize,
    assistant_only: bool,
    prompt_not_prefix: &mut usize,
) -> Result<SftRow, BadLine> {
    if conversation::is_conversational(row) {
        return parse_conversational_sft(
            row,
            line,
            tokenizer,
            vocab_size,
            assistant_only,
            prompt_not_prefix,
        );
    }
    if assistant_only {
        return Err(BadLine::AssistantOnlyNeedsMessages);
    }
    if has_any(row, &["text", "text_ids"]) {
        let others = PROMPT_KEYS
            .iter()
            .chain(&COMPLETION_KEYS)
            .chain(&RESPONSE_KEYS);
        if let Some(field) = others.into_iter().find(|k| row.contains_key(**k)) {
            return Err(BadLine::TextRowWithOtherField {
                field: field.to_string(),
            });
        }
        check_form(row, &["text"])?;
        let mut text = field_ids(row, "text", tokenizer, vocab_size)?;
        // A text row is all response: it ends with the EOS too (as in TRL's SFTTrainer).
        if let (Ok(Some(_)), Some(eos)) = (text_field(row, "text"), tokenizer.eos_id()) {
            if text.last() != Some(&eos) {
                text.push(eos);
                check_range(&text, "text", vocab_size)?;
            }
        }
        check_scored(&[], &text, "text")?;
        return Ok(SftRow {
            prompt: Vec::new(),
            completion: text,
            line,
            completion_mask: None,
        });
    }
    if !has_any(row, &COMPLETION_KEYS) && has_any(row, &RESPONSE_KEYS) {
        let pair = parse_preference(row, line, tokenizer, vocab_size, prompt_not_prefix)?;
        return Ok(SftRow {
            prompt: pair.prompt,
            completion: pair.chosen,
            line,
            completion_mask: None,
        });
    }
    check_form(row, &["prompt", "completion"])?;
    let (prompt, completion) = prompt_and_completion(row, tokenizer, vocab_size)?;
    check_scored(&prompt, &completion, "completion")?;
    Ok(SftRow {
        prompt,
        completion,
        line,
        completion_mask: None,
    })
}

/// A conversational SFT row: `{"messages"}` (the whole conversation is the
/// target, as TRL's language-modeling rows: every token but the first),
/// `{"prompt", "completion"}` (the completion is the target), or a
/// preference row (trained on prompt + chosen). With `assistant_only`, only
/// the tokens inside the template's generation blocks are targets (TRL's
/// `assistant_only_loss`; for a completion, those of it inside a block).
fn parse_conversational_sft(
    row: &JsonRow,
    line: usize,
    tokenizer: &dyn Tokenizer,
    vocab_size: usize,
    assistant_only: bool,
    prompt_not_prefix: &mut usize,
) -> Result<SftRow, BadLine> {
    let (prompt, completion, completion_mask) = if let Some(messages) =
        conversation::messages(row, "messages")?
    {
        let others = ["prompt", "completion", "chosen", "rejected"];
        if let Some(field) = others.iter().find(|k| row.contains_key(**k)) {
            return Err(BadLine::TextRowWithOtherField {
                field: field.to_string(),
            });
        }
        if assistant_only {
            let (ids, mask) =
                conversation::render_with_mask(messages, "messages", tokenizer, vocab_size)?;
            (Vec::new(), ids, Some(mask))
        } else {
            let ids = conversation::render_ids(messages, false, "messages", tokenizer, vocab_size)?;
            (Vec::new(), ids, None)
        }
    } else {
        let prompt = conversation::messages(row, "prompt")?;
        let completion = conversation::messages(row, "completion")?;
        let (prompt, completion) = match (prompt, completion) {
            (Some(prompt), Some(completion)) => (prompt, completion),
            (prompt, None) if !row.contains_key("completion") => {
                let chosen = conversation::required_messages(row, "chosen")?;
                let rejected = conversation::required_messages(row, "rejected")?;
                match prompt {
                    Some(prompt) => (prompt, chosen),
                    None => {
                        let (prompt, chosen, _) =
                            conversation::split_implicit_prompt(chosen, rejected)?;
                        (prompt, chosen)
                    }
                }
            }
            (None, _) => return Err(BadLine::MissingMessages { field: "prompt" }),
            (_, None) => {
                return Err(BadLine::MissingMessages {
                    field: "completion",
                })
            }
        };
        let (prompt_ids, completion_ids) =
            completion_ids(prompt, completion, tokenizer, vocab_size, prompt_not_prefix)?;
        let mask = if assistant_only {
            let conversation: Vec<Value> = prompt.iter().chain(completion).cloned().collect();
            let (_, mask) =
                conversation::render_with_mask(&conversation, "completion", tokenizer, vocab_size)?;
            Some(mask[prompt_ids.len()..].to_vec())
        } else {
            None
        };
        (prompt_ids, completion_ids, mask)
    };
    let row = SftRow {
        prompt,
        completion,
        completion_mask,
        line,
    };
    if row.scored()[0].1 < 1 {
        return Err(if assistant_only {
            BadLine::NoAssistantTokens
        } else {
            BadLine::NoScoredToken {
                field: "completion",
            }
        });
    }
    Ok(row)
}

/// Runs a loader with a counter of the conversational rows whose prompt was
/// not a prefix of their sequences, and puts the count in its report.
pub(super) fn counting_divergence<R>(
    load: impl FnOnce(&mut usize) -> Result<(Vec<R>, LoadReport), DataError>,
) -> Result<(Vec<R>, LoadReport), DataError> {
    let mut count = 0;
    let (rows, mut report) = load(&mut count)?;
    report.prompt_not_prefix = count;
    Ok((rows, report))
}

/// Loads a preference JSONL file (`.gz` read through gzip).
///
/// Rows: `{"prompt", "chosen", "rejected"}` (text, tokenized by `tokenizer`),
/// `{"prompt_ids", "chosen_ids", "rejected_ids"}` (used verbatim), or the
/// implicit-prompt `{"chosen", "rejected"}` / `{"chosen_ids", "rejected_ids"}`.
/// Every bad line (not JSON, not an object, a missing field, text and `_ids`
/// mixed, an id outside `[0, vocab_size)`, a response with no scored token)
/// is an error naming it; with `skip_invalid` it is skipped and counted in
/// the report. A file with no rows is an error.
pub fn load_preferences(
    path: &Path,
    tokenizer: &dyn Tokenizer,
    vocab_size: usize,
    skip_invalid: bool,
) -> Result<(Vec<PreferenceRow>, LoadReport), DataError> {
    counting_divergence(|count| {
        read_rows(path, skip_invalid, |row, line| {
            parse_preference(row, line, tokenizer, vocab_size, count)
        })
    })
}

/// [`load_preferences`] from any reader of JSON lines (plain text, no gzip);
/// `name` stands for the file in errors. The entry point of the data fuzzer.
pub fn read_preferences(
    reader: impl BufRead,
    name: &str,
    tokenizer: &dyn Tokenizer,
    vocab_size: usize,
    skip_invalid: bool,
) -> Result<(Vec<PreferenceRow>, LoadReport), DataError> {
    counting_divergence(|count| {
        read_rows_from(reader, name, skip_invalid, |row, line| {
            parse_preference(row, line, tokenizer, vocab_size, count)
        })
    })
}

/// [`load_sft`] from any reader of JSON lines, as [`read_preferences`].
pub fn read_sft(
    reader: impl BufRead,
    name: &str,
    tokenizer: &dyn Tokenizer,
    vocab_size: usize,
    skip_invalid: bool,
) -> Result<(Vec<SftRow>, LoadReport), DataError> {
    counting_divergence(|count| {
        read_rows_from(reader, name, skip_invalid, |row, line| {
            parse_sft(row, line, tokenizer, vocab_size, false, count)
        })
    })
}

/// Loads a supervised JSONL file (`.gz` read through gzip): `{"prompt",
/// "completion"}`, `{"text"}` (empty prompt: every token but the first is a
/// target), their `_ids` forms, or preference rows (any form accepted by
/// [`load_preferences`], trained on prompt + chosen). Bad lines as in
/// [`load_preferences`]; a `text` row also having a prompt, completion,
/// chosen or rejected field is bad.
pub fn load_sft(
    path: &Path,
    tokenizer: &dyn Tokenizer,
    vocab_size: usize,
    skip_invalid: bool,
) -> Result<(Vec<SftRow>, LoadReport), DataError> {
    let options = LoadOptions {
        skip_invalid,
        assistant_only_loss: false,
    };
    load_sft_with(path, tokenizer, vocab_size, &options)
}

/// [`load_sft`] with every option: `assistant_only_loss` trains on the
/// assistant's tokens only (conversational rows and a template with
/// generation blocks needed; each row's [`SftRow::completion_mask`]).
pub fn load_sft_with(
    path: &Path,
    tokenizer: &dyn Tokenizer,
    vocab_size: usize,
    options: &LoadOptions,
) -> Result<(Vec<SftRow>, LoadReport), DataError> {
    counting_divergence(|count| {
        read_rows(path, options.skip_invalid, |row, line| {
            parse_sft(
                row,
                line,
                tokenizer,
                vocab_size,
                options.assistant_only_loss,
                count,
            )
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn common_prefix_stops_at_char_boundary() {
        // 'é' = C3 A9 and 'è' = C3 A8 share their first byte.
        assert_eq!(common_prefix_bytes("café", "cafè"), 3);
        assert_eq!(common_prefix_bytes("ab", "abc"), 2);
        assert_eq!(common_prefix_bytes("abc", "ab"), 2);
        assert_eq!(common_prefix_bytes("x", "y"), 0);
        assert_eq!(common_prefix_ids(&[1, 2, 3], &[1, 2, 4]), 2);
    }

    #[test]
    fn scored_tokens_skip_the_first_token_of_a_sequence() {
        assert_eq!(scored_tokens(&[], &[1]), 0);
        assert_eq!(scored_tokens(&[], &[1, 2]), 1);
        assert_eq!(scored_tokens(&[5], &[1]), 1);
        assert_eq!(scored_tokens(&[5], &[]), 0);
    }
}
