//! HH-RLHF as published (Anthropic's `{"chosen", "rejected"}` dialogues
//! written as `\n\nHuman: ...\n\nAssistant: ...`) turned into conversational
//! preference rows, as TRL's `examples/datasets/hh-rlhf-helpful-base.py`
//! turns it into `trl-lib/hh-rlhf-helpful-base`:
//!
//! 1. the prompt is the text `chosen` and `rejected` share from the start,
//!    cut back to end with the last `\n\nAssistant: ` in it;
//! 2. each response is the rest of its dialogue, one assistant message;
//! 3. the prompt is split at every `\n\nHuman: ` and `\n\nAssistant: ` into
//!    user and assistant messages.
//!
//! TRL's script keeps whatever comes out of a row that does not follow the
//! layout (a shared part with no `\n\nAssistant: `, text before the first
//! turn); here such a row is refused with its line number. None of the
//! 2,312 rows of the harmless-base test split is.

use std::path::Path;

use serde_json::{json, Value};

use super::jsonl::{read_rows, JsonRow};
use super::{BadLine, DataError, LoadReport};

const HUMAN: &str = "\n\nHuman: ";
const ASSISTANT: &str = "\n\nAssistant: ";

/// Why one HH-RLHF dialogue pair does not convert.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HhRlhfError {
    /// The shared start holds no assistant turn to cut the prompt at.
    #[error("chosen and rejected share no \"\\n\\nAssistant: \" turn: no prompt to take")]
    NoSharedAssistantTurn,
    /// The dialogue does not open with a turn.
    #[error("the dialogue does not start with \"\\n\\nHuman: \" or \"\\n\\nAssistant: \"")]
    NoOpeningTurn,
}

/// The byte length of the longest common prefix of `a` and `b`, compared
/// character by character (Python's `zip` over two strings).
fn common_start(a: &str, b: &str) -> usize {
    a.char_indices()
        .zip(b.chars())
        .find(|((_, ca), cb)| ca != cb)
        .map_or(a.len().min(b.len()), |((at, _), _)| at)
}

/// One dialogue pair as `{"prompt": [...], "chosen": [...], "rejected": [...]}`.
pub fn hh_rlhf_to_messages(chosen: &str, rejected: &str) -> Result<Value, HhRlhfError> {
    let shared = &chosen[..common_start(chosen, rejected)];
    let prompt_end = if shared.ends_with(ASSISTANT) {
        shared.len()
    } else {
        shared
            .rfind(ASSISTANT)
            .ok_or(HhRlhfError::NoSharedAssistantTurn)?
            + ASSISTANT.len()
    };
    let prompt_text = &chosen[..prompt_end - ASSISTANT.len()];
    let mut prompt = Vec::new();
    let mut rest = prompt_text;
    let mut role = None;
    loop {
        // The next turn marker, whichever comes first.
        let next = [(HUMAN, "user"), (ASSISTANT, "assistant")]
            .into_iter()
            .filter_map(|(marker, name)| rest.find(marker).map(|at| (at, marker, name)))
            .min_by_key(|&(at, _, _)| at);
        let content_end = next.map_or(rest.len(), |(at, _, _)| at);
        match role {
            Some(role) => prompt.push(json!({"role": role, "content": &rest[..content_end]})),
            None if content_end > 0 => return Err(HhRlhfError::NoOpeningTurn),
            None => {}
        }
        let Some((at, marker, name)) = next else {
            break;
        };
        role = Some(name);
        rest = &rest[at + marker.len()..];
    }
    let message = |text: &str| json!([{"role": "assistant", "content": text}]);
    Ok(json!({
        "prompt": prompt,
        "chosen": message(&chosen[prompt_end..]),
        "rejected": message(&rejected[prompt_end..]),
    }))
}

/// One row of an HH-RLHF file, converted.
fn convert_row(row: &JsonRow) -> Result<Value, BadLine> {
    let text = |field: &'static str| match row.get(field) {
        Some(Value::String(text)) => Ok(text.as_str()),
        Some(_) => Err(BadLine::NotString { field }),
        None => Err(BadLine::MissingField { field }),
    };
    hh_rlhf_to_messages(text("chosen")?, text("rejected")?).map_err(BadLine::NotHhRlhf)
}

/// Converts the HH-RLHF file `input` (JSONL, `.gz` read through gzip) into a
/// conversational preference JSONL file `output`, written whole or not at
/// all (a temporary file renamed into place). Bad rows refuse the file, or
/// with `skip_invalid` are skipped and counted.
pub fn convert_hh_rlhf(
    input: &Path,
    output: &Path,
    skip_invalid: bool,
) -> Result<LoadReport, DataError> {
    let (rows, report) = read_rows(input, skip_invalid, |row, _| convert_row(row))?;
    let mut text = Vec::new();
    for row in &rows {
        serde_json::to_writer(&mut text, row).expect("a JSON value serializes");
        text.push(b'\n');
    }
    transformer::write_atomic(output, &text).map_err(|e| DataError::Write {
        path: output.display().to_string(),
        message: e.to_string(),
    })?;
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_multi_turn_dialogue_becomes_messages() {
        let chosen = "\n\nHuman: Hi\n\nAssistant: Hello.\n\nHuman: A joke?\n\nAssistant: Why not.";
        let rejected = "\n\nHuman: Hi\n\nAssistant: Hello.\n\nHuman: A joke?\n\nAssistant: No.";
        let row = hh_rlhf_to_messages(chosen, rejected).unwrap();
        assert_eq!(
            row,
            json!({
                "prompt": [
                    {"role": "user", "content": "Hi"},
                    {"role": "assistant", "content": "Hello."},
                    {"role": "user", "content": "A joke?"},
                ],
                "chosen": [{"role": "assistant", "content": "Why not."}],
                "rejected": [{"role": "assistant", "content": "No."}],
            })
        );
    }

    #[test]
    fn responses_sharing_a_start_keep_it() {
        // The shared "It" is cut back to the last assistant turn, as TRL's script does.
        let row = hh_rlhf_to_messages(
            "\n\nHuman: é?\n\nAssistant: It is.",
            "\n\nHuman: é?\n\nAssistant: It isn't.",
        )
        .unwrap();
        assert_eq!(row["chosen"][0]["content"], "It is.");
        assert_eq!(row["rejected"][0]["content"], "It isn't.");
        assert_eq!(row["prompt"], json!([{"role": "user", "content": "é?"}]));
    }

    #[test]
    fn rows_off_the_layout_are_refused() {
        assert_eq!(
            hh_rlhf_to_messages("\n\nHuman: a", "\n\nHuman: b"),
            Err(HhRlhfError::NoSharedAssistantTurn)
        );
        assert_eq!(
            hh_rlhf_to_messages("Hi\n\nAssistant: a", "Hi\n\nAssistant: b"),
            Err(HhRlhfError::NoOpeningTurn)
        );
    }
}
