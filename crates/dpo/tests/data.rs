//! The data layer against docs/spec.md section 3: every kind of bad line with
//! its line number, the implicit-prompt rule, gzip, `skip_invalid`,
//! truncation (checked against `shared/vectors/truncate`), the collated
//! target layout, and the seeded splits and batchers.
//!
//! The tests named `shared_*` and `hh_rlhf_*` read `../shared` beside the
//! repository (the PyTorch test vectors, the HH-RLHF file), which a plain
//! clone does not have: they are `#[ignore]`d, `.ci/run` runs them with
//! `--ignored` when `../shared` exists, and run without it they fail saying
//! what is missing. `DPO_SHARED_DIR` points them at another folder.

use dpo::data::{
    check_max_prompt_length, collate_pairs, collate_sft, default_max_prompt_length, eval_split,
    length_grouped_batches, load_preferences, load_sft, padding_share, scored_tokens,
    shuffled_batches, truncate_row, truncate_rows, BadLine, DataError, LoadReport, PreferenceRow,
    SftRow, IGNORE_INDEX,
};
use serde_json::Value;
use std::collections::HashSet;
use std::io::Write;
use std::path::{Path, PathBuf};
use transformer::{ByteTokenizer, Tokenizer};

/// `../shared` beside the repository, or the folder named by `DPO_SHARED_DIR`.
fn shared_dir() -> PathBuf {
    match std::env::var_os("DPO_SHARED_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared"),
    }
}

/// `relative` inside the shared folder; a test that needs it fails loudly
/// where it is absent (it must not pass by checking nothing).
fn shared_path(relative: &str) -> PathBuf {
    let path = shared_dir().join(relative);
    assert!(
        path.exists(),
        "{} not found: this test needs ../shared beside the repository \
         (or DPO_SHARED_DIR); it is #[ignore]d for that reason and run by .ci/run",
        path.display()
    );
    path
}

// ----------------------------------------------------------------------------
// helpers
// ----------------------------------------------------------------------------

/// A temporary data file holding `text`; the directory lives as long as the guard.
fn data_file(name: &str, text: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(name);
    std::fs::write(&path, text).unwrap();
    (dir, path)
}

fn prefs(text: &str) -> Result<(Vec<PreferenceRow>, LoadReport), DataError> {
    prefs_vocab(text, 256)
}

fn prefs_vocab(text: &str, vocab: usize) -> Result<(Vec<PreferenceRow>, LoadReport), DataError> {
    let (_dir, path) = data_file("prefs.jsonl", text);
    load_preferences(&path, &ByteTokenizer, vocab, false)
}

fn sft(text: &str) -> Result<(Vec<SftRow>, LoadReport), DataError> {
    let (_dir, path) = data_file("sft.jsonl", text);
    load_sft(&path, &ByteTokenizer, 256, false)
}

/// The bad line of a failed load: its number and problem; checks the one-line
/// `path:LINE: message` display on the way.
fn bad_line<T: std::fmt::Debug>(result: Result<T, DataError>) -> (usize, BadLine) {
    let err = result.expect_err("expected a bad line");
    let shown = err.to_string();
    assert!(!shown.contains('\n'), "error is not one line: {shown}");
    match err {
        DataError::BadLine {
            line,
            problem,
            path,
        } => {
            assert!(shown.starts_with(&format!("{path}:{line}: ")), "{shown}");
            (line, problem)
        }
        other => panic!("expected a bad line, got {other}"),
    }
}

const GOOD: &str = r#"{"prompt": "a", "chosen": "bc", "rejected": "d"}"#;
const GOOD_SFT: &str = r#"{"prompt": "a", "completion": "bc"}"#;

/// Three good preference lines, then `bad`, then a good one: the bad line is line 4.
fn with_bad_at_4(bad: &str) -> String {
    format!("{GOOD}\n{GOOD}\n{GOOD}\n{bad}\n{GOOD}\n")
}

fn bytes(text: &str) -> Vec<u32> {
    text.bytes().map(u32::from).collect()
}

fn pair(prompt: &[u32], chosen: &[u32], rejected: &[u32]) -> PreferenceRow {
    PreferenceRow {
        prompt: prompt.to_vec(),
        chosen: chosen.to_vec(),
        rejected: rejected.to_vec(),
        line: 1,
    }
}

fn read_json(path: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn ids_of(value: &Value) -> Vec<u32> {
    value
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap() as u32)
        .collect()
}

/// `shared/vectors`, the PyTorch test vectors (fails where they are absent).
fn vectors_dir() -> PathBuf {
    shared_path("vectors/MANIFEST.json");
    shared_dir().join("vectors")
}

// ----------------------------------------------------------------------------
// good rows
// ----------------------------------------------------------------------------

#[test]
fn text_rows_are_byte_tokenized_and_id_rows_used_verbatim() {
    let text = concat!(
        r#"{"prompt": "2+2=", "chosen": "4", "rejected": "5"}"#,
        "\n",
        r#"{"prompt_ids": [5, 17, 3], "chosen_ids": [9, 2], "rejected_ids": [4, 4, 1], "extra": 1}"#,
        "\n",
        r#"{"prompt": "Köln ", "chosen": "€", "rejected": "x"}"#,
        "\n"
    );
    let (rows, report) = prefs(text).unwrap();
    assert_eq!(
        report,
        LoadReport {
            rows: 3,
            ..LoadReport::default()
        }
    );
    assert_eq!(
        rows[0],
        PreferenceRow {
            prompt: bytes("2+2="),
            chosen: bytes("4"),
            rejected: bytes("5"),
            line: 1
        }
    );
    assert_eq!(
        rows[1],
        PreferenceRow {
            prompt: vec![5, 17, 3],
            chosen: vec![9, 2],
            rejected: vec![4, 4, 1],
            line: 2
        }
    );
    assert_eq!(rows[2].prompt, bytes("Köln "));
    assert_eq!(rows[2].chosen, vec![0xE2, 0x82, 0xAC]);
    assert_eq!(rows[2].line, 3);
}

#[test]
fn rows_of_both_forms_in_one_file_are_accepted() {
    let text = format!(
        "{GOOD}\n{}\n",
        r#"{"prompt_ids": [1], "chosen_ids": [2], "rejected_ids": [3]}"#
    );
    assert_eq!(prefs(&text).unwrap().0.len(), 2);
}

#[test]
fn blank_lines_are_skipped_but_counted() {
    let text = format!("\n{GOOD}\n   \n\t\n{GOOD}\r\n\n{{\"prompt\": 1}}\n");
    let (line, problem) = bad_line(prefs(&text));
    assert_eq!(line, 7);
    assert_eq!(problem, BadLine::NotString { field: "prompt" });
    let (rows, _) = prefs(&format!("\n{GOOD}\n\n{GOOD}\n\n")).unwrap();
    assert_eq!(rows.iter().map(|r| r.line).collect::<Vec<_>>(), vec![2, 4]);
}

#[test]
fn utf8_byte_order_mark_on_the_first_line_is_ignored() {
    let (rows, _) = prefs(&format!("\u{feff}{GOOD}\n")).unwrap();
    assert_eq!(rows[0].prompt, bytes("a"));
}

#[test]
fn id_equal_to_vocab_size_minus_one_is_fine() {
    let text = r#"{"prompt_ids": [60], "chosen_ids": [0], "rejected_ids": [60]}"#;
    assert_eq!(prefs_vocab(text, 61).unwrap().0[0].rejected, vec![60]);
}

// ----------------------------------------------------------------------------
// bad lines, each with its line number
// ----------------------------------------------------------------------------

#[test]
fn not_json_is_a_bad_line() {
    let (line, problem) = bad_line(prefs(&with_bad_at_4(r#"{"prompt": "a", "chosen": "b"#)));
    assert_eq!(line, 4);
    assert!(matches!(problem, BadLine::NotJson(_)), "{problem}");
    assert!(!problem.to_string().contains("line 1"), "{problem}");
}

#[test]
fn json_that_is_not_an_object_is_a_bad_line() {
    for bad in ["[1, 2]", "\"text\"", "42", "null"] {
        assert_eq!(
            bad_line(prefs(&with_bad_at_4(bad))),
            (4, BadLine::NotObject)
        );
    }
}

#[test]
fn invalid_utf8_is_a_bad_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("prefs.jsonl");
    let mut bytes = format!("{GOOD}\n{GOOD}\n").into_bytes();
    bytes.extend_from_slice(b"{\"prompt\": \"\xff\", \"chosen\": \"b\", \"rejected\": \"c\"}\n");
    std::fs::write(&path, bytes).unwrap();
    assert_eq!(
        bad_line(load_preferences(&path, &ByteTokenizer, 256, false)),
        (3, BadLine::NotUtf8)
    );
}

#[test]
fn missing_fields_are_bad_lines() {
    let cases = [
        (r#"{"prompt": "a", "chosen": "b"}"#, "rejected"),
        (r#"{"prompt": "a", "rejected": "b"}"#, "chosen"),
        (r#"{"prompt_ids": [1], "chosen_ids": [2]}"#, "rejected"),
        (r#"{}"#, "prompt"),
        (r#"{"other": "x"}"#, "prompt"),
        // implicit-prompt rows
        (r#"{"chosen": "ab"}"#, "rejected"),
        (r#"{"rejected": "ab"}"#, "chosen"),
        (r#"{"chosen_ids": [1, 2]}"#, "rejected"),
    ];
    for (bad, field) in cases {
        assert_eq!(
            bad_line(prefs(&with_bad_at_4(bad))),
            (4, BadLine::MissingField { field }),
            "{bad}"
        );
    }
}

#[test]
fn text_and_ids_fields_mixed_in_one_row_are_bad_lines() {
    let cases = [
        r#"{"prompt": "a", "prompt_ids": [97], "chosen": "b", "rejected": "c"}"#,
        r#"{"prompt": "a", "chosen_ids": [98], "rejected": "c"}"#,
        r#"{"prompt_ids": [97], "chosen_ids": [98], "rejected": "c"}"#,
        r#"{"chosen": "ab", "rejected_ids": [97, 99]}"#,
    ];
    for bad in cases {
        let (line, problem) = bad_line(prefs(&with_bad_at_4(bad)));
        assert_eq!(line, 4, "{bad}");
        assert!(
            matches!(problem, BadLine::MixedForm { .. }),
            "{bad}: {problem}"
        );
    }
}

#[test]
fn wrong_types_are_bad_lines() {
    let cases = [
        (
            r#"{"prompt": 5, "chosen": "b", "rejected": "c"}"#,
            BadLine::NotString { field: "prompt" },
        ),
        (
            r#"{"prompt": null, "chosen": "b", "rejected": "c"}"#,
            BadLine::NotString { field: "prompt" },
        ),
        (
            r#"{"prompt": "a", "chosen": ["b"], "rejected": "c"}"#,
            BadLine::NotString { field: "chosen" },
        ),
        (
            r#"{"prompt_ids": "abc", "chosen_ids": [1], "rejected_ids": [2]}"#,
            BadLine::NotIdList { field: "prompt" },
        ),
        (
            r#"{"prompt_ids": [1.5], "chosen_ids": [1], "rejected_ids": [2]}"#,
            BadLine::NotIdList { field: "prompt" },
        ),
        (
            r#"{"prompt_ids": [1.0], "chosen_ids": [1], "rejected_ids": [2]}"#,
            BadLine::NotIdList { field: "prompt" },
        ),
        (
            r#"{"prompt_ids": [1], "chosen_ids": [true], "rejected_ids": [2]}"#,
            BadLine::NotIdList { field: "chosen" },
        ),
        (
            r#"{"prompt_ids": [1], "chosen_ids": [1], "rejected_ids": ["2"]}"#,
            BadLine::NotIdList { field: "rejected" },
        ),
        (
            r#"{"prompt_ids": [1], "chosen_ids": [1], "rejected_ids": [[2]]}"#,
            BadLine::NotIdList { field: "rejected" },
        ),
    ];
    for (bad, expected) in cases {
        assert_eq!(bad_line(prefs(&with_bad_at_4(bad))), (4, expected), "{bad}");
    }
}

#[test]
fn ids_out_of_range_are_bad_lines() {
    let good = r#"{"prompt_ids": [60], "chosen_ids": [0], "rejected_ids": [59]}"#;
    let at_3 = |chosen: &str| {
        let bad = format!(r#"{{"prompt_ids": [1], "chosen_ids": {chosen}, "rejected_ids": [2]}}"#);
        format!("{good}\n{good}\n{bad}\n{good}\n")
    };
    let at_vocab = bad_line(prefs_vocab(&at_3("[3, 61]"), 61));
    assert_eq!(
        at_vocab,
        (
            3,
            BadLine::IdOutOfRange {
                field: "chosen",
                id: 61,
                vocab_size: 61
            }
        )
    );
    let negative = bad_line(prefs_vocab(&at_3("[-1]"), 61));
    assert_eq!(
        negative,
        (
            3,
            BadLine::IdOutOfRange {
                field: "chosen",
                id: -1,
                vocab_size: 61
            }
        )
    );
    let huge = bad_line(prefs_vocab(&at_3("[18446744073709551615]"), 61));
    assert_eq!(
        huge,
        (
            3,
            BadLine::IdOutOfRange {
                field: "chosen",
                id: u64::MAX as i128,
                vocab_size: 61
            }
        )
    );
    // Text is checked too: bytes >= vocab_size cannot be fed to a small model.
    let text = with_bad_at_4(r#"{"prompt": "a", "chosen": "~", "rejected": "c"}"#);
    let (line, problem) = bad_line(prefs_vocab(&text, 120));
    assert_eq!(
        (line, problem),
        (
            4,
            BadLine::IdOutOfRange {
                field: "chosen",
                id: 126,
                vocab_size: 120
            }
        )
    );
}

#[test]
fn responses_with_no_scored_token_are_bad_lines() {
    let cases = [
        (
            r#"{"prompt": "a", "chosen": "", "rejected": "c"}"#,
            "chosen",
        ),
        (
            r#"{"prompt": "a", "chosen": "b", "rejected": ""}"#,
            "rejected",
        ),
        (
            r#"{"prompt": "", "chosen": "b", "rejected": "cd"}"#,
            "chosen",
        ),
        (
            r#"{"prompt_ids": [], "chosen_ids": [1, 2], "rejected_ids": [3]}"#,
            "rejected",
        ),
    ];
    for (bad, field) in cases {
        assert_eq!(
            bad_line(prefs(&with_bad_at_4(bad))),
            (4, BadLine::NoScoredToken { field }),
            "{bad}"
        );
    }
    // An empty prompt with two-token responses scores one token each: fine.
    let (rows, _) =
        prefs(r#"{"prompt_ids": [], "chosen_ids": [1, 2], "rejected_ids": [3, 4]}"#).unwrap();
    assert_eq!(scored_tokens(&rows[0].prompt, &rows[0].chosen), 1);
}

#[test]
fn the_first_bad_line_is_the_one_reported() {
    let text = format!("{GOOD}\n{{\n{GOOD}\n{{\"prompt\": \"a\"}}\n");
    assert_eq!(bad_line(prefs(&text)).0, 2);
}

#[test]
fn empty_files_are_errors() {
    for text in ["", "\n\n  \n"] {
        let err = prefs(text).unwrap_err();
        assert!(matches!(err, DataError::NoRows { skipped: 0, .. }), "{err}");
        assert!(matches!(sft(text).unwrap_err(), DataError::NoRows { .. }));
    }
}

#[test]
fn a_missing_file_is_an_error_naming_it() {
    let err = load_preferences(
        Path::new("/nonexistent/prefs.jsonl"),
        &ByteTokenizer,
        256,
        false,
    )
    .unwrap_err();
    assert!(matches!(err, DataError::Open { .. }));
    assert!(
        err.to_string().starts_with("/nonexistent/prefs.jsonl: "),
        "{err}"
    );
}

// ----------------------------------------------------------------------------
// implicit-prompt rows
// ----------------------------------------------------------------------------

#[test]
fn implicit_prompt_is_the_common_prefix_by_character() {
    // "é" = C3 A9 and "è" = C3 A8: bytewise the common prefix would end inside
    // the character; by character it ends before it.
    let text =
        r#"{"chosen": "Human: café? Assistant: oui", "rejected": "Human: cafè? Assistant: non"}"#;
    let (rows, _) = prefs(text).unwrap();
    assert_eq!(rows[0].prompt, bytes("Human: caf"));
    assert_eq!(rows[0].chosen, bytes("é? Assistant: oui"));
    assert_eq!(rows[0].rejected, bytes("è? Assistant: non"));
    // Differ at once: empty prompt, a one-character two-byte response still scores a token.
    let (rows, _) = prefs(r#"{"chosen": "é", "rejected": "è"}"#).unwrap();
    assert_eq!(
        (
            rows[0].prompt.len(),
            rows[0].chosen.len(),
            rows[0].rejected.len()
        ),
        (0, 2, 2)
    );
    // Common prefix ends right after a multibyte character.
    let (rows, _) = prefs(r#"{"chosen": "東京!", "rejected": "東大"}"#).unwrap();
    assert_eq!(rows[0].prompt, bytes("東"));
    assert_eq!(rows[0].chosen, bytes("京!"));
}

#[test]
fn implicit_prompt_of_id_rows_is_the_common_prefix_by_id() {
    let (rows, _) = prefs(r#"{"chosen_ids": [1, 2, 3, 4], "rejected_ids": [1, 2, 5]}"#).unwrap();
    assert_eq!(
        rows[0],
        PreferenceRow {
            prompt: vec![1, 2],
            chosen: vec![3, 4],
            rejected: vec![5],
            line: 1
        }
    );
}

#[test]
fn implicit_prompt_rows_whose_response_is_empty_are_bad_lines() {
    let cases = [
        (
            r#"{"chosen": "Human: hi Assistant: hello", "rejected": "Human: hi Assistant: hello there"}"#,
            "chosen",
        ),
        (
            r#"{"chosen": "Human: hi Assistant: hello there", "rejected": "Human: hi Assistant: hello"}"#,
            "rejected",
        ),
        (r#"{"chosen": "same", "rejected": "same"}"#, "chosen"),
        (
            r#"{"chosen_ids": [1, 2], "rejected_ids": [1, 2, 3]}"#,
            "chosen",
        ),
    ];
    for (bad, field) in cases {
        assert_eq!(
            bad_line(prefs(&with_bad_at_4(bad))),
            (4, BadLine::EmptyImplicitResponse { field }),
            "{bad}"
        );
    }
    // Different at the first character and one byte each: nothing is scored.
    let (line, problem) = bad_line(prefs(&with_bad_at_4(r#"{"chosen": "a", "rejected": "b"}"#)));
    assert_eq!(
        (line, problem),
        (4, BadLine::NoScoredToken { field: "chosen" })
    );
}

// ----------------------------------------------------------------------------
// gzip and skip_invalid
// ----------------------------------------------------------------------------

#[test]
fn gzip_files_are_read_through_the_decoder() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("prefs.jsonl.gz");
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    encoder.write_all(with_bad_at_4(GOOD).as_bytes()).unwrap();
    std::fs::write(&path, encoder.finish().unwrap()).unwrap();
    let (rows, _) = load_preferences(&path, &ByteTokenizer, 256, false).unwrap();
    assert_eq!(rows.len(), 5);
    assert_eq!(rows[4].chosen, bytes("bc"));

    let bad = dir.path().join("bad.jsonl.gz");
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    encoder.write_all(with_bad_at_4("{").as_bytes()).unwrap();
    std::fs::write(&bad, encoder.finish().unwrap()).unwrap();
    assert_eq!(
        bad_line(load_preferences(&bad, &ByteTokenizer, 256, false)).0,
        4
    );
    let (rows, _) = load_sft(&path, &ByteTokenizer, 256, false).unwrap();
    assert_eq!(rows.len(), 5);
}

#[test]
fn skip_invalid_skips_and_counts_bad_rows() {
    let text = format!("{GOOD}\n{{\n{GOOD}\n\n{{\"prompt\": \"a\"}}\n[]\n{GOOD}\n");
    let (_dir, path) = data_file("prefs.jsonl", &text);
    let (rows, report) = load_preferences(&path, &ByteTokenizer, 256, true).unwrap();
    assert_eq!(rows.len(), 3);
    assert_eq!(
        rows.iter().map(|r| r.line).collect::<Vec<_>>(),
        vec![1, 3, 7]
    );
    assert_eq!((report.rows, report.skipped), (3, 3));
    assert_eq!(report.first_skipped_lines, vec![2, 5, 6]);
    assert_eq!(report.first_skipped_reasons.len(), 3);
    assert_eq!(
        report.to_string(),
        "3 rows, 3 bad rows skipped (lines 2, 5, 6)"
    );
    // Without it, the first bad line stops the load.
    assert_eq!(
        bad_line(load_preferences(&path, &ByteTokenizer, 256, false)).0,
        2
    );
}

#[test]
fn skip_invalid_keeps_only_the_first_line_numbers() {
    let text = "{\n".repeat(25) + GOOD + "\n";
    let (_dir, path) = data_file("prefs.jsonl", &text);
    let (_, report) = load_preferences(&path, &ByteTokenizer, 256, true).unwrap();
    assert_eq!(report.skipped, 25);
    assert_eq!(report.first_skipped_lines, (1..=10).collect::<Vec<_>>());
}

#[test]
fn a_file_of_only_bad_rows_is_an_error_even_when_skipping() {
    let (_dir, path) = data_file("prefs.jsonl", "{\n[]\n");
    let err = load_preferences(&path, &ByteTokenizer, 256, true).unwrap_err();
    assert!(matches!(err, DataError::NoRows { skipped: 2, .. }), "{err}");
}

// ----------------------------------------------------------------------------
// SFT rows
// ----------------------------------------------------------------------------

#[test]
fn sft_rows_of_every_form() {
    let text = concat!(
        r#"{"prompt": "x=", "completion": "42"}"#,
        "\n",
        r#"{"text": "hello"}"#,
        "\n",
        r#"{"text_ids": [7, 8]}"#,
        "\n",
        r#"{"prompt_ids": [1], "completion_ids": [2]}"#,
        "\n",
        r#"{"prompt": "p", "chosen": "good", "rejected": "bad"}"#,
        "\n",
        r#"{"chosen": "Q: A: yes", "rejected": "Q: A: no"}"#,
        "\n",
    );
    let (rows, report) = sft(text).unwrap();
    assert_eq!(report.rows, 6);
    let got: Vec<(Vec<u32>, Vec<u32>)> = rows
        .iter()
        .map(|r| (r.prompt.clone(), r.completion.clone()))
        .collect();
    assert_eq!(
        got,
        vec![
            (bytes("x="), bytes("42")),
            (vec![], bytes("hello")),
            (vec![], vec![7, 8]),
            (vec![1], vec![2]),
            (bytes("p"), bytes("good")),
            (bytes("Q: A: "), bytes("yes")),
        ]
    );
}

#[test]
fn bad_sft_lines() {
    let at_4 = |bad: &str| format!("{GOOD_SFT}\n{GOOD_SFT}\n{GOOD_SFT}\n{bad}\n{GOOD_SFT}\n");
    let cases = [
        (
            r#"{"prompt": "x="}"#,
            BadLine::MissingField {
                field: "completion",
            },
        ),
        (
            r#"{"completion": "x"}"#,
            BadLine::MissingField { field: "prompt" },
        ),
        (
            r#"{"text_ids": [60]}"#,
            BadLine::NoScoredToken { field: "text" },
        ),
        (r#"{"text": "a"}"#, BadLine::NoScoredToken { field: "text" }),
        (r#"{"text": ""}"#, BadLine::NoScoredToken { field: "text" }),
        (
            r#"{"prompt": "a", "completion": ""}"#,
            BadLine::NoScoredToken {
                field: "completion",
            },
        ),
        (
            r#"{"prompt": "", "completion": "b"}"#,
            BadLine::NoScoredToken {
                field: "completion",
            },
        ),
        (
            r#"{"text": "abc", "prompt": "a"}"#,
            BadLine::TextRowWithOtherField {
                field: "prompt".into(),
            },
        ),
        (
            r#"{"text_ids": [1, 2], "completion": "a"}"#,
            BadLine::TextRowWithOtherField {
                field: "completion".into(),
            },
        ),
        (
            r#"{"text_ids": [1, 2, 256]}"#,
            BadLine::IdOutOfRange {
                field: "text",
                id: 256,
                vocab_size: 256,
            },
        ),
        (r#"{"text": 3}"#, BadLine::NotString { field: "text" }),
        (
            r#"{"prompt": "a", "chosen": "bc"}"#,
            BadLine::MissingField { field: "rejected" },
        ),
        (
            r#"{"chosen": "same", "rejected": "same"}"#,
            BadLine::EmptyImplicitResponse { field: "chosen" },
        ),
    ];
    for (bad, expected) in cases {
        assert_eq!(bad_line(sft(&at_4(bad))), (4, expected), "{bad}");
    }
    for bad in [
        r#"{"text": "ab", "text_ids": [1, 2]}"#,
        r#"{"prompt": "a", "completion_ids": [1]}"#,
    ] {
        let (line, problem) = bad_line(sft(&at_4(bad)));
        assert_eq!(line, 4);
        assert!(
            matches!(problem, BadLine::MixedForm { .. }),
            "{bad}: {problem}"
        );
    }
}

// ----------------------------------------------------------------------------
// the shared test vectors and the HH-RLHF file
// ----------------------------------------------------------------------------

#[test]
#[ignore = "needs ../shared/vectors: run by .ci/run"]
fn shared_bad_files_report_the_manifest_line() {
    let vectors = vectors_dir();
    let manifest = read_json(&vectors.join("MANIFEST.json"));
    let mut seen = HashSet::new();
    for check in manifest["checks"].as_array().unwrap() {
        if check["kind"] != "error" {
            continue;
        }
        let argv: Vec<&str> = check["argv"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a.as_str().unwrap())
            .collect();
        let flag = |name: &str| argv[argv.iter().position(|a| *a == name).unwrap() + 1];
        let data = flag("--data");
        if !seen.insert(data.to_string()) {
            continue;
        }
        let model = if argv[0] == "sft" {
            flag("--init")
        } else {
            flag("--policy")
        };
        let vocab = read_json(&vectors.join(model).join("config.json"))["vocab_size"]
            .as_u64()
            .unwrap() as usize;
        let path = vectors.join(data);
        let line = check["bad_line"].as_u64().unwrap() as usize;
        let err = if argv[0] == "sft" {
            load_sft(&path, &ByteTokenizer, vocab, false)
                .map(|_| ())
                .unwrap_err()
        } else {
            load_preferences(&path, &ByteTokenizer, vocab, false)
                .map(|_| ())
                .unwrap_err()
        };
        assert_eq!(err.line(), Some(line), "{data}: {err}");
        assert!(err.to_string().contains(&format!(":{line}: ")), "{err}");
        // Skipping gets past exactly that line.
        let skipped = if argv[0] == "sft" {
            load_sft(&path, &ByteTokenizer, vocab, true).unwrap().1
        } else {
            load_preferences(&path, &ByteTokenizer, vocab, true)
                .unwrap()
                .1
        };
        assert_eq!(skipped.first_skipped_lines, vec![line], "{data}");
    }
    assert_eq!(seen.len(), 7, "expected the 7 bad files");
}

#[test]
#[ignore = "needs ../shared/vectors: run by .ci/run"]
fn shared_good_files_load_with_the_manifest_row_counts() {
    let vectors = vectors_dir();
    let manifest = read_json(&vectors.join("MANIFEST.json"));
    for case in ["ids", "stress", "text", "truncate"] {
        let vocab = manifest["cases"][case]["config"]["vocab_size"]
            .as_u64()
            .unwrap() as usize;
        let (rows, report) = load_preferences(
            &vectors.join(case).join("prefs.jsonl"),
            &ByteTokenizer,
            vocab,
            false,
        )
        .unwrap();
        assert_eq!(
            rows.len() as u64,
            manifest["cases"][case]["rows"].as_u64().unwrap(),
            "{case}"
        );
        assert_eq!(report.skipped, 0);
    }
}

#[test]
#[ignore = "needs ../shared/vectors: run by .ci/run"]
fn shared_sft_file_truncates_and_scores_as_the_reference() {
    let vectors = vectors_dir();
    let case = &read_json(&vectors.join("MANIFEST.json"))["cases"]["sft"];
    let expected = read_json(&vectors.join("sft/sft_loss.json"));
    let vocab = case["config"]["vocab_size"].as_u64().unwrap() as usize;
    let block_size = case["config"]["block_size"].as_u64().unwrap() as usize;
    let (rows, _) = load_sft(&vectors.join("sft/sft.jsonl"), &ByteTokenizer, vocab, false).unwrap();
    assert_eq!(rows.len() as u64, expected["rows"].as_u64().unwrap());
    let (rows, report) = truncate_rows(
        &rows,
        block_size,
        default_max_prompt_length(block_size),
        false,
    )
    .unwrap();
    assert_eq!(
        report.truncated as u64,
        expected["truncated_rows"].as_u64().unwrap()
    );
    let batch = collate_sft(&rows);
    assert!(batch.seq_len <= block_size);
    let scored: usize = batch.scored_tokens.iter().sum();
    assert_eq!(scored as u64, expected["scored_tokens"].as_u64().unwrap());
    assert_eq!(
        batch.targets.iter().filter(|&&t| t != IGNORE_INDEX).count(),
        scored
    );
}

#[test]
#[ignore = "needs ../shared/vectors: run by .ci/run"]
fn shared_truncate_case_matches_the_reference_row_by_row() {
    let vectors = vectors_dir();
    let dir = vectors.join("truncate");
    let config = &read_json(&vectors.join("MANIFEST.json"))["cases"]["truncate"]["config"];
    let vocab = config["vocab_size"].as_u64().unwrap() as usize;
    let block_size = config["block_size"].as_u64().unwrap() as usize;
    assert_eq!(block_size, 16);
    let (rows, _) =
        load_preferences(&dir.join("prefs.jsonl"), &ByteTokenizer, vocab, false).unwrap();
    let expected_rows = read_json(&dir.join("truncated_rows.json"));
    let variants = [
        (
            default_max_prompt_length(block_size),
            "default_max_prompt_length_8",
            "eval_sigmoid.json",
        ),
        (5, "max_prompt_length_5", "eval_sigmoid_mpl5.json"),
    ];
    for (max_prompt_length, key, eval_file) in variants {
        for (row, expected) in rows.iter().zip(expected_rows.as_array().unwrap()) {
            let want = &expected[key];
            let (cut, truncated) = truncate_row(row, block_size, max_prompt_length);
            let what = format!(
                "row {} ({}), P = {max_prompt_length}",
                expected["row"], expected["tests"]
            );
            assert_eq!(cut.prompt, ids_of(&want["prompt_ids"]), "{what}");
            assert_eq!(cut.chosen, ids_of(&want["chosen_ids"]), "{what}");
            assert_eq!(cut.rejected, ids_of(&want["rejected_ids"]), "{what}");
            assert_eq!(truncated, want["truncated"].as_bool().unwrap(), "{what}");
            assert_eq!(cut.line, row.line);
        }
        let (cut_rows, report) =
            truncate_rows(&rows, block_size, max_prompt_length, false).unwrap();
        assert_eq!(cut_rows.len(), rows.len());
        let eval = read_json(&dir.join(eval_file));
        assert_eq!(
            report.truncated as u64,
            eval["truncated_rows"].as_u64().unwrap(),
            "{eval_file}"
        );
        assert!(cut_rows.iter().all(|r| r.max_sequence_len() <= block_size));
    }
}

#[test]
#[ignore = "needs ../shared/datasets: run by .ci/run"]
fn hh_rlhf_harmless_test_split_has_five_bad_rows() {
    // 2312 rows, ~0.7 MB gzipped: well under a second in a debug build.
    let path = shared_path("datasets/hh-rlhf-harmless-base-test.jsonl.gz");
    let (rows, report) = load_preferences(&path, &ByteTokenizer, 256, true).unwrap();
    assert_eq!(report.skipped, 5);
    assert_eq!(report.rows, rows.len());
    assert_eq!(rows.len() + report.skipped, 2312);
    assert!(rows
        .iter()
        .all(|r| !r.chosen.is_empty() && !r.rejected.is_empty()));
    assert!(rows.iter().all(|r| r
        .prompt
        .starts_with(b"\n\nHuman: ".map(u32::from).as_slice())));
    let (line, problem) = bad_line(load_preferences(&path, &ByteTokenizer, 256, false));
    assert_eq!(line, report.first_skipped_lines[0]);
    assert!(
        matches!(problem, BadLine::EmptyImplicitResponse { .. }),
        "{problem}"
    );
}

// ----------------------------------------------------------------------------
// truncation, each branch
// ----------------------------------------------------------------------------

#[test]
fn truncation_branches() {
    let seq = |n: u32, from: u32| (from..from + n).collect::<Vec<u32>>();
    let block = 10;
    let p = default_max_prompt_length(block);
    assert_eq!(p, 5);
    // Fits exactly: untouched even with a prompt longer than P.
    let row = pair(&seq(7, 0), &seq(3, 100), &seq(1, 200));
    assert_eq!(truncate_row(&row, block, p), (row.clone(), false));
    // Long prompt, short responses: the prompt keeps its last P tokens.
    let row = pair(&seq(9, 0), &seq(3, 100), &seq(2, 200));
    let (cut, truncated) = truncate_row(&row, block, p);
    assert!(truncated);
    assert_eq!(cut, pair(&seq(5, 4), &seq(3, 100), &seq(2, 200)));
    // Short prompt kept whole, the long response cut from the right.
    let row = pair(&seq(3, 0), &seq(20, 100), &seq(2, 200));
    assert_eq!(
        truncate_row(&row, block, p).0,
        pair(&seq(3, 0), &seq(7, 100), &seq(2, 200))
    );
    // Both cut, and both responses see the same prompt.
    let row = pair(&seq(8, 0), &seq(20, 100), &seq(30, 200));
    assert_eq!(
        truncate_row(&row, block, p).0,
        pair(&seq(5, 3), &seq(5, 100), &seq(5, 200))
    );
    // Empty prompt: a response cut to the block.
    let row = pair(&[], &seq(12, 100), &seq(3, 200));
    assert_eq!(
        truncate_row(&row, block, p).0,
        pair(&[], &seq(10, 100), &seq(3, 200))
    );

    // SFT: the completion is the one response; a text row is cut from the right.
    let text = SftRow {
        prompt: vec![],
        completion: seq(15, 0),
        line: 3,
        completion_mask: None,
    };
    let (cut, truncated) = truncate_row(&text, block, p);
    assert!(truncated);
    assert_eq!(
        cut,
        SftRow {
            prompt: vec![],
            completion: seq(10, 0),
            line: 3,
            completion_mask: None
        }
    );
    let row = SftRow {
        prompt: seq(8, 0),
        completion: seq(4, 100),
        line: 1,
        completion_mask: None,
    };
    assert_eq!(
        truncate_row(&row, block, p).0,
        SftRow {
            prompt: seq(5, 3),
            completion: seq(4, 100),
            line: 1,
            completion_mask: None
        }
    );
    let row = SftRow {
        prompt: seq(2, 0),
        completion: seq(8, 100),
        line: 1,
        completion_mask: None,
    };
    assert_eq!(truncate_row(&row, block, p), (row.clone(), false));
}

#[test]
fn max_prompt_length_must_be_below_block_size() {
    assert!(check_max_prompt_length(16, 15).is_ok());
    let err = check_max_prompt_length(16, 16).unwrap_err();
    assert!(matches!(
        err,
        DataError::MaxPromptLength {
            max_prompt_length: 16,
            block_size: 16
        }
    ));
    assert!(truncate_rows(&[pair(&[1], &[2], &[3])], 8, 8, false).is_err());
}

#[test]
fn a_row_left_without_a_scored_token_is_refused_or_skipped() {
    // With P = 0 the prompt is cut to nothing, and a 1-token response then has no predictor.
    let mut bad = pair(&[1; 12], &[2], &[3; 10]);
    bad.line = 7;
    let good = pair(&[1; 2], &[2, 2], &[3; 3]);
    let rows = [good.clone(), bad];
    let err = truncate_rows(&rows, 8, 0, false).unwrap_err();
    assert_eq!(err.line(), Some(7));
    assert!(
        matches!(
            err,
            DataError::NoScoredTokenAfterTruncation {
                field: "chosen",
                ..
            }
        ),
        "{err}"
    );
    let (kept, report) = truncate_rows(&rows, 8, 0, true).unwrap();
    assert_eq!(kept, vec![good]);
    assert_eq!(
        (
            report.truncated,
            report.skipped,
            report.first_skipped_lines.clone()
        ),
        (1, 1, vec![7])
    );
    // The same row with P >= 1 keeps one prompt token and is fine.
    assert_eq!(truncate_rows(&rows, 8, 1, false).unwrap().0.len(), 2);
    let sft_rows = [SftRow {
        prompt: vec![1; 9],
        completion: vec![5],
        line: 2,
        completion_mask: None,
    }];
    assert_eq!(
        truncate_rows(&sft_rows, 4, 0, false).unwrap_err().line(),
        Some(2)
    );
}

// ----------------------------------------------------------------------------
// collation
// ----------------------------------------------------------------------------

#[test]
fn collated_pairs_follow_the_target_convention() {
    let rows = [
        pair(&[10, 11], &[20, 21, 22], &[30]),
        pair(&[], &[40, 41], &[50, 51, 52, 53]),
    ];
    let batch = collate_pairs(&rows);
    let t = batch.seq_len;
    assert_eq!((batch.num_pairs, t), (2, 5));
    let n = IGNORE_INDEX;
    // rows 0..B: prompt + chosen, rows B..2B: prompt + rejected, padded with 0
    let ids: Vec<&[usize]> = batch.ids.chunks(t).collect();
    assert_eq!(
        ids,
        vec![
            &[10, 11, 20, 21, 22][..],
            &[40, 41, 0, 0, 0],
            &[10, 11, 30, 0, 0],
            &[50, 51, 52, 53, 0]
        ]
    );
    // targets[s, t] = label of position t + 1; the first token of a sequence is never a target
    let targets: Vec<&[i64]> = batch.targets.chunks(t).collect();
    assert_eq!(
        targets,
        vec![
            &[n, 20, 21, 22, n][..],
            &[41, n, n, n, n],
            &[n, 30, n, n, n],
            &[51, 52, 53, n, n]
        ]
    );
    assert_eq!(batch.scored_tokens, vec![3, 1, 1, 3]);
    for (s, (p, r)) in rows
        .iter()
        .map(|r| (&r.prompt, &r.chosen))
        .chain(rows.iter().map(|r| (&r.prompt, &r.rejected)))
        .enumerate()
    {
        assert_eq!(batch.scored_tokens[s], scored_tokens(p, r));
        assert_eq!(
            targets[s].iter().filter(|&&x| x != n).count(),
            batch.scored_tokens[s]
        );
    }
}

#[test]
fn collated_sft_follows_the_target_convention() {
    let rows = [
        SftRow {
            prompt: vec![1, 2, 3],
            completion: vec![4],
            line: 1,
            completion_mask: None,
        },
        SftRow {
            prompt: vec![],
            completion: vec![7, 8, 9],
            line: 2,
            completion_mask: None,
        },
    ];
    let batch = collate_sft(&rows);
    assert_eq!((batch.batch, batch.seq_len), (2, 4));
    assert_eq!(batch.ids, vec![1, 2, 3, 4, 7, 8, 9, 0]);
    let n = IGNORE_INDEX;
    assert_eq!(batch.targets, vec![n, n, 4, n, 8, 9, n, n]);
    assert_eq!(batch.scored_tokens, vec![1, 2]);
}

// ----------------------------------------------------------------------------
// splits and batchers
// ----------------------------------------------------------------------------

#[test]
fn eval_split_is_disjoint_complete_and_seeded() {
    let rows: Vec<usize> = (0..100).collect();
    let (train, eval) = eval_split(rows.clone(), 0.1, 7);
    assert_eq!((train.len(), eval.len()), (90, 10));
    let mut all: Vec<usize> = train.iter().chain(&eval).copied().collect();
    all.sort_unstable();
    assert_eq!(all, rows);
    assert!(train.windows(2).all(|w| w[0] < w[1]) && eval.windows(2).all(|w| w[0] < w[1]));
    assert_eq!(eval_split(rows.clone(), 0.1, 7), (train, eval.clone()));
    assert_ne!(eval_split(rows.clone(), 0.1, 8).1, eval);
    assert_eq!(eval_split(rows.clone(), 0.0, 7).1.len(), 0);
    assert_eq!(eval_split(rows, 1.0, 7).0.len(), 0);
}

fn assert_partition(batches: &[Vec<usize>], n: usize, batch_size: usize) {
    let mut all: Vec<usize> = batches.iter().flatten().copied().collect();
    all.sort_unstable();
    assert_eq!(all, (0..n).collect::<Vec<_>>());
    assert!(batches
        .iter()
        .all(|b| !b.is_empty() && b.len() <= batch_size));
}

#[test]
fn shuffled_batches_cover_every_index_once_and_change_per_epoch() {
    let a = shuffled_batches(23, 4, 1, 0);
    assert_partition(&a, 23, 4);
    assert_eq!(a.len(), 6);
    assert_eq!(shuffled_batches(23, 4, 1, 0), a);
    assert_ne!(shuffled_batches(23, 4, 1, 1), a);
    assert_ne!(shuffled_batches(23, 4, 2, 0), a);
    assert!(shuffled_batches(0, 4, 1, 0).is_empty());
}

#[test]
fn length_grouped_batches_cover_every_index_once_and_pad_less() {
    let mut state = 12345u64;
    let lengths: Vec<usize> = (0..1000)
        .map(|_| {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            8 + (state >> 33) as usize % 500
        })
        .collect();
    for batch_size in [1, 3, 8, 64] {
        let grouped = length_grouped_batches(&lengths, batch_size, 3);
        assert_partition(&grouped, lengths.len(), batch_size);
        assert_eq!(length_grouped_batches(&lengths, batch_size, 3), grouped);
    }
    let grouped = length_grouped_batches(&lengths, 8, 3);
    let plain = shuffled_batches(lengths.len(), 8, 3, 0);
    let (grouped_share, plain_share) = (
        padding_share(&grouped, &lengths),
        padding_share(&plain, &lengths),
    );
    assert!(
        grouped_share < 0.1 && plain_share > 0.2,
        "{grouped_share} vs {plain_share}"
    );
    assert_ne!(length_grouped_batches(&lengths, 8, 4), grouped);
    assert!(length_grouped_batches(&[], 8, 3).is_empty());
    assert_eq!(padding_share(&[vec![0, 1]], &[2, 4]), 0.25);
    assert_eq!(padding_share(&[], &[]), 0.0);
}

#[test]
#[ignore = "needs ../shared/datasets: run by .ci/run"]
fn hh_rlhf_converts_to_conversations_that_a_chatml_template_tokenizes() {
    // The chat recipe's first step on the published file: every row converts,
    // and every pair renders through SmolLM2's template (the chat goldens'
    // tokenizer) with its prompt a prefix of both sequences.
    let dir = tempfile::tempdir().unwrap();
    let converted = dir.path().join("hh-chat.jsonl");
    let input = shared_path("datasets/hh-rlhf-harmless-base-test.jsonl.gz");
    let report = dpo::data::convert_hh_rlhf(&input, &converted, false).unwrap();
    assert_eq!((report.rows, report.skipped), (2312, 0));
    let golden = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/golden/chat/smollm2");
    let tokenizer = transformer::HfTokenizer::from_dir(&golden)
        .unwrap()
        .unwrap();
    // The four rows whose response is empty still render a whole turn.
    let (rows, report) =
        load_preferences(&converted, &tokenizer, tokenizer.vocab_size(), false).unwrap();
    assert_eq!(rows.len(), 2312);
    assert_eq!(report.prompt_not_prefix, 0);
}
