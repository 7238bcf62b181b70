//! Chat templates and conversational rows against transformers and TRL 1.16
//! (`tests/golden/make_chat_golden.py` wrote the goldens): five template
//! styles, each in one of the places transformers reads a template from,
//! rendered over conversations with system messages, several turns,
//! unicode, empty content and roles a template refuses; and the ids TRL's
//! `DPOTrainer`, `SFTTrainer` and `KTOTrainer` give conversational rows.

use std::path::{Path, PathBuf};

use dpo::data::{
    load_preferences, load_sft, load_sft_with, load_unpaired, BadLine, DataError, LoadOptions,
    SftRow,
};
use serde_json::Value;
use transformer::{tokenize_with_assistant_mask, ChatTemplateError, HfTokenizer, Tokenizer};

fn golden_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/golden/chat")
}

fn read_json(name: &str) -> Value {
    let text = std::fs::read_to_string(golden_dir().join(name)).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn tokenizer(style: &str) -> HfTokenizer {
    HfTokenizer::from_dir(&golden_dir().join(style))
        .unwrap()
        .expect("the style's directory has a tokenizer.json")
}

fn conversations() -> serde_json::Map<String, Value> {
    // The script's CONVERSATIONS, as render.json names them; rebuilt from the
    // row files would lose the refused ones, so they are listed here too.
    let text = std::fs::read_to_string(golden_dir().join("conversations.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

/// The template styles of data.json (its other key holds the assistant-only rows).
fn styles(data: &Value) -> impl Iterator<Item = (&String, &Value)> {
    data.as_object()
        .unwrap()
        .iter()
        .filter(|(key, _)| *key != "assistant_only")
}

fn ids(value: &Value) -> Vec<u32> {
    value
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap() as u32)
        .collect()
}

#[test]
fn templates_render_as_transformers_renders_them() {
    let render = read_json("render.json");
    let conversations = conversations();
    let mut checked = 0;
    for (style, cases) in render.as_object().unwrap() {
        let tokenizer = tokenizer(style);
        let template = tokenizer.chat_template().unwrap();
        for case in cases.as_array().unwrap() {
            let name = case["conversation"].as_str().unwrap();
            let messages = conversations[name].as_array().unwrap();
            let add_generation_prompt = case["add_generation_prompt"].as_bool().unwrap();
            let what = format!("{style} {name} add_generation_prompt={add_generation_prompt}");
            let result = template.render(messages, add_generation_prompt, false);
            if let Some(error) = case.get("error") {
                assert_eq!(
                    result.unwrap_err(),
                    ChatTemplateError::Refused(error.as_str().unwrap().to_string()),
                    "{what}"
                );
                checked += 1;
                continue;
            }
            let rendered = result.unwrap_or_else(|e| panic!("{what}: {e}"));
            assert_eq!(rendered.text, case["text"].as_str().unwrap(), "{what}");
            assert_eq!(
                tokenizer.encode(&rendered.text),
                ids(&case["ids"]),
                "{what}"
            );
            if let Some(mask) = case.get("assistant_masks") {
                let expected: Vec<bool> = mask
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|m| m.as_u64() == Some(1))
                    .collect();
                let (_, got) = tokenize_with_assistant_mask(&tokenizer, &rendered);
                assert_eq!(got, expected, "{what}");
                assert!(template.has_generation_blocks());
            }
            checked += 1;
        }
    }
    assert_eq!(checked, 5 * 8 * 2, "every style, conversation and flag");
}

#[test]
fn conversational_preference_rows_match_trl_dpo_trainer() {
    let data = read_json("data.json");
    for (style, expected) in styles(&data) {
        let tokenizer = tokenizer(style);
        for file in ["preference", "preference_implicit"] {
            let path = golden_dir().join(format!("rows/{file}.jsonl"));
            let (rows, report) =
                load_preferences(&path, &tokenizer, tokenizer.vocab_size(), false).unwrap();
            let expected = expected[file].as_array().unwrap();
            assert_eq!(rows.len(), expected.len(), "{style} {file}");
            for (row, trl) in rows.iter().zip(expected) {
                let what = format!("{style} {file} line {}", row.line);
                assert_eq!(row.prompt, ids(&trl["prompt_ids"]), "{what}");
                assert_eq!(row.chosen, ids(&trl["chosen_ids"]), "{what}");
                assert_eq!(row.rejected, ids(&trl["rejected_ids"]), "{what}");
            }
            assert_eq!(report.prompt_not_prefix, 0, "{style} {file}");
        }
    }
}

/// TRL's SFT labels as this project's rows: the sequence is `prompt +
/// completion`, and a token is a target exactly when its label is not -100
/// (the first token of a sequence is never one: nothing predicts it).
fn assert_sft_row_matches(row: &SftRow, trl: &Value, what: &str) {
    let sequence: Vec<u32> = row.prompt.iter().chain(&row.completion).copied().collect();
    assert_eq!(sequence, ids(&trl["input_ids"]), "{what}");
    let labels = trl["labels"].as_array().unwrap();
    let p = row.prompt.len();
    for (t, label) in labels.iter().enumerate().skip(1) {
        let trained = label.as_i64() != Some(-100);
        let target = t >= p && row.completion_mask.as_ref().is_none_or(|mask| mask[t - p]);
        assert_eq!(trained, target, "{what}: token {t}");
    }
}

#[test]
fn conversational_sft_rows_match_trl_sft_trainer() {
    let data = read_json("data.json");
    for (style, expected) in styles(&data) {
        let tokenizer = tokenizer(style);
        for file in ["sft_messages", "sft_prompt_completion"] {
            let path = golden_dir().join(format!("rows/{file}.jsonl"));
            let (rows, _) = load_sft(&path, &tokenizer, tokenizer.vocab_size(), false).unwrap();
            let expected = expected[file].as_array().unwrap();
            assert_eq!(rows.len(), expected.len(), "{style} {file}");
            for (row, trl) in rows.iter().zip(expected) {
                assert_sft_row_matches(row, trl, &format!("{style} {file} line {}", row.line));
            }
        }
    }
}

#[test]
fn conversational_kto_rows_match_trl_kto_trainer() {
    let data = read_json("data.json");
    for (style, expected) in styles(&data) {
        let tokenizer = tokenizer(style);
        let path = golden_dir().join("rows/kto.jsonl");
        let (rows, _) = load_unpaired(&path, &tokenizer, tokenizer.vocab_size(), false).unwrap();
        let expected = expected["kto"].as_array().unwrap();
        assert_eq!(rows.len(), expected.len(), "{style}");
        for (row, trl) in rows.iter().zip(expected) {
            let what = format!("{style} kto line {}", row.line);
            assert_eq!(row.prompt, ids(&trl["prompt_ids"]), "{what}");
            assert_eq!(row.completion, ids(&trl["completion_ids"]), "{what}");
        }
    }
}

const ASSISTANT_ONLY: LoadOptions = LoadOptions {
    skip_invalid: false,
    assistant_only_loss: true,
};

#[test]
fn assistant_only_loss_matches_trl_sft_trainer() {
    let data = read_json("data.json");
    let tokenizer = tokenizer("smollm2_training");
    for file in ["sft_messages", "sft_prompt_completion"] {
        let path = golden_dir().join(format!("rows/{file}.jsonl"));
        let (rows, _) =
            load_sft_with(&path, &tokenizer, tokenizer.vocab_size(), &ASSISTANT_ONLY).unwrap();
        let expected = data["assistant_only"][file].as_array().unwrap();
        assert_eq!(rows.len(), expected.len(), "{file}");
        for (row, trl) in rows.iter().zip(expected) {
            assert!(row.completion_mask.is_some());
            assert_sft_row_matches(
                row,
                trl,
                &format!("assistant-only {file} line {}", row.line),
            );
        }
    }
}

#[test]
fn assistant_only_loss_refuses_what_it_cannot_mask() {
    let bad_line = |style: &str, file: &str| {
        let tokenizer = tokenizer(style);
        let path = golden_dir().join(format!("rows/{file}.jsonl"));
        match load_sft_with(&path, &tokenizer, tokenizer.vocab_size(), &ASSISTANT_ONLY) {
            Err(DataError::BadLine { problem, .. }) => problem,
            other => panic!("{style} {file}: {other:?}"),
        }
    };
    // A template without generation blocks, and rows that are not conversations.
    assert_eq!(
        bad_line("smollm2", "sft_messages"),
        BadLine::NoGenerationBlocks
    );
    let dir = tempfile::tempdir().unwrap();
    let text_rows = dir.path().join("text.jsonl");
    std::fs::write(&text_rows, "{\"prompt\": \"a\", \"completion\": \"b\"}\n").unwrap();
    let tokenizer = tokenizer("smollm2_training");
    let err = load_sft_with(
        &text_rows,
        &tokenizer,
        tokenizer.vocab_size(),
        &ASSISTANT_ONLY,
    );
    assert!(
        matches!(
            err,
            Err(DataError::BadLine {
                problem: BadLine::AssistantOnlyNeedsMessages,
                ..
            })
        ),
        "{err:?}"
    );
}
