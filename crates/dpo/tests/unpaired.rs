//! Unpaired (KTO) rows against docs/spec.md section 3: both forms, gzip,
//! every bad line with its number, `skip_invalid`, truncation, the KL
//! sequences, and `prepare_rows` for the new row type.

use std::io::Write;
use std::path::PathBuf;

use dpo::data::{
    kl_partners, kl_sequences, load_unpaired, prepare_rows, truncate_rows, BadLine, DataError,
    LoadOptions, UnpairedRow,
};
use transformer::ByteTokenizer;

fn data_file(name: &str, bytes: &[u8]) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(name);
    std::fs::write(&path, bytes).unwrap();
    (dir, path)
}

fn load(text: &str, vocab: usize, skip_invalid: bool) -> Result<Vec<UnpairedRow>, DataError> {
    let (_dir, path) = data_file("unpaired.jsonl", text.as_bytes());
    load_unpaired(&path, &ByteTokenizer, vocab, skip_invalid).map(|(rows, _)| rows)
}

fn bytes(text: &str) -> Vec<u32> {
    text.bytes().map(u32::from).collect()
}

/// The line and problem of a refused file; the message is one line `path:LINE: why`.
fn bad_line(text: &str) -> (usize, BadLine) {
    let err = load(text, 256, false).expect_err("expected a bad line");
    let shown = err.to_string();
    assert!(!shown.contains('\n'), "{shown}");
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

const GOOD: &str = r#"{"prompt": "a", "completion": "bc", "label": true}"#;

fn with_bad_at_3(bad: &str) -> String {
    format!("{GOOD}\n{GOOD}\n{bad}\n{GOOD}\n")
}

fn row(prompt: &[u32], completion: &[u32], desirable: bool, line: usize) -> UnpairedRow {
    UnpairedRow {
        prompt: prompt.to_vec(),
        completion: completion.to_vec(),
        desirable,
        line,
    }
}

#[test]
fn text_and_id_rows_load_with_their_labels() {
    let text = concat!(
        r#"{"prompt": "Café ", "completion": "crème", "label": true}"#,
        "\n",
        r#"{"prompt_ids": [1, 2], "completion_ids": [3], "label": false}"#,
        "\n",
        r#"{"prompt": "", "completion": "xy", "label": false}"#,
        "\n",
    );
    let rows = load(text, 256, false).unwrap();
    assert_eq!(rows[0], row(&bytes("Café "), &bytes("crème"), true, 1));
    assert_eq!(rows[1], row(&[1, 2], &[3], false, 2));
    assert_eq!(rows[2], row(&[], &bytes("xy"), false, 3));
}

#[test]
fn gzip_files_are_read_through_the_decoder() {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    encoder.write_all(with_bad_at_3(GOOD).as_bytes()).unwrap();
    let (_dir, path) = data_file("unpaired.jsonl.gz", &encoder.finish().unwrap());
    let (rows, report) = load_unpaired(&path, &ByteTokenizer, 256, false).unwrap();
    assert_eq!((rows.len(), report.rows), (4, 4));
}

/// A bad line and the check of the reason it is refused for.
type BadCase = (&'static str, fn(&BadLine) -> bool);

#[test]
fn bad_lines_are_refused_with_their_number() {
    let cases: [BadCase; 8] = [
        (r#"{"prompt": "a", "completion": "b"}"#, |p| {
            *p == BadLine::MissingLabel
        }),
        (r#"{"prompt": "a", "completion": "b", "label": 1}"#, |p| {
            *p == BadLine::LabelNotBool("1".into())
        }),
        (
            r#"{"prompt": "a", "completion": "b", "label": "true"}"#,
            |p| *p == BadLine::LabelNotBool("\"true\"".into()),
        ),
        (r#"{"prompt": "a", "label": true}"#, |p| {
            *p == BadLine::MissingField {
                field: "completion",
            }
        }),
        (r#"{"completion": "a", "label": true}"#, |p| {
            *p == BadLine::MissingField { field: "prompt" }
        }),
        (
            r#"{"prompt": "a", "completion_ids": [3], "label": true}"#,
            |p| matches!(p, BadLine::MixedForm { .. }),
        ),
        // an empty prompt leaves a 1-token completion nothing to score
        (r#"{"prompt": "", "completion": "b", "label": true}"#, |p| {
            *p == BadLine::NoScoredToken {
                field: "completion",
            }
        }),
        (r#"{"prompt": "a", "completion": "b", "label": tru"#, |p| {
            matches!(p, BadLine::NotJson(_))
        }),
    ];
    for (bad, expected) in cases {
        let (line, problem) = bad_line(&with_bad_at_3(bad));
        assert_eq!(line, 3, "{bad}");
        assert!(expected(&problem), "{bad}: {problem:?}");
    }
    let message = bad_line(&with_bad_at_3(r#"{"prompt": "a", "completion": "b"}"#))
        .1
        .to_string();
    assert_eq!(
        message,
        "missing field 'label' (true: a desirable completion, false: an undesirable one)"
    );
    // An id outside the vocabulary.
    let text = r#"{"prompt_ids": [1], "completion_ids": [40], "label": true}"#;
    assert!(matches!(
        load(text, 40, false),
        Err(DataError::BadLine {
            problem: BadLine::IdOutOfRange { id: 40, .. },
            ..
        })
    ));
}

#[test]
fn skip_invalid_skips_and_counts_bad_rows() {
    let text = with_bad_at_3(r#"{"prompt": "a", "completion": "b", "label": null}"#);
    let (_dir, path) = data_file("unpaired.jsonl", text.as_bytes());
    let (rows, report) = load_unpaired(&path, &ByteTokenizer, 256, true).unwrap();
    assert_eq!(rows.len(), 3);
    assert_eq!(report.skipped, 1);
    assert_eq!(report.first_skipped_lines, vec![3]);
    assert_eq!(
        report.first_skipped_reasons,
        vec!["label must be true or false, got null"]
    );
}

#[test]
fn truncation_keeps_the_end_of_the_prompt_and_cuts_the_completion() {
    // block 8, prompt budget 3: a 6-token prompt keeps its last 3, the completion 5.
    let rows = [
        row(&[1, 2, 3, 4, 5, 6], &[7, 8, 9, 10, 11, 12, 13], false, 1),
        row(&[1, 2], &[3, 4, 5], true, 2),
    ];
    let (cut, report) = truncate_rows(&rows, 8, 3, false).unwrap();
    assert_eq!(cut[0], row(&[4, 5, 6], &[7, 8, 9, 10, 11], false, 1));
    assert_eq!(cut[1], rows[1]);
    assert_eq!(report.truncated, 1);
    // A prompt budget of 0 leaves an empty prompt before a 1-token completion: refused, or skipped.
    let rows = [
        row(&[1, 2, 3, 4, 5, 6, 7, 8], &[9], true, 4),
        rows[1].clone(),
    ];
    assert!(matches!(
        truncate_rows(&rows, 8, 0, false),
        Err(DataError::NoScoredTokenAfterTruncation { line: 4, .. })
    ));
    let (kept, report) = truncate_rows(&rows, 8, 0, true).unwrap();
    assert_eq!((kept.len(), report.skipped), (1, 1));
}

#[test]
fn kl_sequences_pair_each_prompt_with_the_previous_completion_of_its_chunk() {
    let rows = [
        row(&[1], &[10, 11], true, 1),
        row(&[2, 2], &[20], false, 2),
        row(&[3, 3, 3, 3, 3], &[30, 31, 32, 33], true, 3),
        row(&[4], &[40], false, 4),
    ];
    assert_eq!(kl_partners(4, 3), vec![2, 0, 1, 3]);
    // Chunks {0, 1, 2} and {3}; block 8 leaves room for every completion here.
    let kl = kl_sequences(&rows, 3, 8);
    let pairs: Vec<(Vec<u32>, Vec<u32>)> = kl
        .iter()
        .map(|s| (s.prompt.clone(), s.completion.clone()))
        .collect();
    assert_eq!(
        pairs,
        vec![
            (vec![1], vec![30, 31, 32, 33]),
            (vec![2, 2], vec![10, 11]),
            (vec![3, 3, 3, 3, 3], vec![20]),
            (vec![4], vec![40]), // a chunk of one: its own completion
        ]
    );
    // A completion longer than the room after the prompt is cut from the right.
    let tight = [row(&[5, 5, 5, 5, 5, 5], &[1], true, 1), rows[2].clone()];
    let kl = kl_sequences(&tight, 2, 8);
    assert_eq!(kl[0].completion, vec![30, 31]);
}

#[test]
fn prepare_rows_loads_and_truncates_unpaired_files() {
    let text = format!(
        "{GOOD}\n{}\n",
        r#"{"prompt": "a long prompt that will be cut", "completion": "yes", "label": false}"#
    );
    let (_dir, path) = data_file("unpaired.jsonl", text.as_bytes());
    let prepared =
        prepare_rows::<UnpairedRow>(&path, &ByteTokenizer, 256, 16, 8, &LoadOptions::default())
            .unwrap();
    assert_eq!(prepared.rows.len(), 2);
    assert_eq!(prepared.truncation.truncated, 1);
    // 30 + 3 tokens in a block of 16: the prompt keeps its last 8 tokens.
    assert_eq!(prepared.rows[1].prompt, bytes("l be cut"));
    assert_eq!(prepared.rows[1].completion, bytes("yes"));
    assert!(!prepared.rows[1].desirable);
}
