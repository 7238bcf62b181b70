//! Parquet input against files the `datasets` library wrote
//! (`tests/golden/make_parquet_golden.py`, datasets 5.2.0 / pyarrow 26):
//! every Parquet file reads as exactly the JSON objects of the JSON Lines
//! file it was made from, and the loaders give the same rows from both;
//! bad rows are refused with their file and row number, as bad lines are.

use std::path::{Path, PathBuf};

use dpo::data::{
    load_preferences, load_sft, load_unpaired, prepare_rows, read_parquet_objects, BadLine,
    DataError, LoadOptions, PreferenceRow,
};
use serde_json::{Map, Value};
use transformer::ByteTokenizer;

const CODECS: [&str; 3] = ["snappy", "zstd", "none"];
const TWINS: [&str; 5] = ["text_prefs", "ids_prefs", "kto", "chat_prefs", "chat_sft"];

fn golden(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/golden")
        .join(path)
}

fn parquet(path: &str) -> PathBuf {
    golden("parquet").join(path)
}

/// The objects of a JSON Lines file, one per line.
fn jsonl_objects(path: &Path) -> Vec<Map<String, Value>> {
    let text = std::fs::read_to_string(path).unwrap();
    text.lines()
        .map(|line| match serde_json::from_str(line).unwrap() {
            Value::Object(object) => object,
            other => panic!("not an object: {other}"),
        })
        .collect()
}

/// The objects of a Parquet file; every row must have one, numbered from 1.
fn parquet_objects(path: &Path) -> Vec<Map<String, Value>> {
    let bytes = std::fs::read(path).unwrap();
    let objects = read_parquet_objects(bytes, &path.display().to_string()).unwrap();
    objects
        .into_iter()
        .enumerate()
        .map(|(i, (row, object))| {
            assert_eq!(row, i + 1, "{}", path.display());
            object.unwrap()
        })
        .collect()
}

#[test]
fn every_codec_reads_as_its_jsonl_twin() {
    for twin in TWINS {
        let expected = jsonl_objects(&parquet(&format!("{twin}.jsonl")));
        assert!(expected.len() >= 3, "{twin}");
        for codec in CODECS {
            let file = parquet(&format!("{twin}.{codec}.parquet"));
            assert_eq!(parquet_objects(&file), expected, "{}", file.display());
        }
    }
}

#[test]
fn other_column_types_read_as_json() {
    // int32, float32, a list of lists, a map, a struct with a null field, a
    // null bool; data page v2 without a dictionary (written by pyarrow).
    let file = parquet("other_types.parquet");
    let expected = jsonl_objects(&parquet("other_types.jsonl"));
    assert_eq!(parquet_objects(&file), expected);
    assert!(!expected[1].contains_key("flag") && !expected[1].contains_key("struct"));
}

#[test]
fn a_null_column_is_a_missing_key() {
    // The implicit-prompt row has no prompt: a null in the Parquet column.
    let rows = parquet_objects(&parquet("text_prefs.snappy.parquet"));
    let implicit = rows.last().unwrap();
    assert!(!implicit.contains_key("prompt"), "{implicit:?}");
    assert!(rows[0].contains_key("prompt"));
    // The SFT golden mixes four row forms: each row has only its own keys.
    let sft = parquet_objects(&parquet("sft_golden.snappy.parquet"));
    assert_eq!(sft, jsonl_objects(&golden("sft/sft.jsonl")));
    assert!(sft.iter().any(|row| row.keys().eq(["text"])));
}

#[test]
fn conversational_rows_keep_their_messages() {
    let rows = parquet_objects(&parquet("chat_prefs.zstd.parquet"));
    let prompt = rows[0]["prompt"].as_array().unwrap();
    assert_eq!(prompt[0]["role"], "system");
    assert_eq!(prompt[1]["content"], "2+2?");
    assert_eq!(rows[1]["prompt"].as_array().unwrap().len(), 3);
    let messages = parquet_objects(&parquet("chat_sft.none.parquet"));
    assert_eq!(messages[1]["messages"][3]["content"], "6");
}

#[test]
fn conversational_rows_tokenize_the_same_from_parquet() {
    // Through a chat template (SmolLM2's, over the chat goldens' tokenizer).
    let tokenizer_dir = golden("chat/smollm2");
    let tokenizer = transformer::HfTokenizer::from_dir(&tokenizer_dir)
        .unwrap()
        .unwrap();
    let vocab = transformer::Tokenizer::vocab_size(&tokenizer);
    for codec in ["none", "snappy", "zstd"] {
        let (from_parquet, _) = load_preferences(
            &parquet(&format!("chat_prefs.{codec}.parquet")),
            &tokenizer,
            vocab,
            false,
        )
        .unwrap();
        let (from_jsonl, _) =
            load_preferences(&parquet("chat_prefs.jsonl"), &tokenizer, vocab, false).unwrap();
        assert_eq!(from_parquet, from_jsonl, "{codec}");
        let (from_parquet, _) = load_sft(
            &parquet(&format!("chat_sft.{codec}.parquet")),
            &tokenizer,
            vocab,
            false,
        )
        .unwrap();
        let (from_jsonl, _) =
            load_sft(&parquet("chat_sft.jsonl"), &tokenizer, vocab, false).unwrap();
        assert_eq!(from_parquet, from_jsonl, "{codec}");
    }
}

#[test]
fn the_cli_goldens_read_the_same_from_parquet() {
    for (case, jsonl) in [
        ("ids", "ids/prefs.jsonl"),
        ("text", "text/prefs.jsonl"),
        ("sft", "sft/sft.jsonl"),
    ] {
        let file = parquet(&format!("{case}_golden.snappy.parquet"));
        assert_eq!(
            parquet_objects(&file),
            jsonl_objects(&golden(jsonl)),
            "{case}"
        );
    }
    let from =
        |path: PathBuf, vocab| load_preferences(&path, &ByteTokenizer, vocab, false).unwrap();
    assert_eq!(
        from(parquet("ids_golden.snappy.parquet"), 40),
        from(golden("ids/prefs.jsonl"), 40)
    );
    assert_eq!(
        from(parquet("text_golden.snappy.parquet"), 256),
        from(golden("text/prefs.jsonl"), 256)
    );
    let sft = |path: PathBuf| load_sft(&path, &ByteTokenizer, 256, false).unwrap();
    assert_eq!(
        sft(parquet("sft_golden.snappy.parquet")),
        sft(golden("sft/sft.jsonl"))
    );
}

#[test]
fn the_loaders_give_the_same_rows_from_parquet() {
    for codec in CODECS {
        let file = |twin: &str| parquet(&format!("{twin}.{codec}.parquet"));
        let twin = |name: &str| parquet(&format!("{name}.jsonl"));
        for name in ["text_prefs", "ids_prefs"] {
            let (rows, report) = load_preferences(&file(name), &ByteTokenizer, 256, false).unwrap();
            let expected = load_preferences(&twin(name), &ByteTokenizer, 256, false).unwrap();
            assert_eq!((rows.clone(), report), expected, "{name} {codec}");
            assert_eq!(rows.last().unwrap().line, rows.len());
            let sft = load_sft(&file(name), &ByteTokenizer, 256, false).unwrap();
            assert_eq!(
                sft,
                load_sft(&twin(name), &ByteTokenizer, 256, false).unwrap()
            );
        }
        let kto = load_unpaired(&file("kto"), &ByteTokenizer, 256, false).unwrap();
        assert_eq!(
            kto,
            load_unpaired(&twin("kto"), &ByteTokenizer, 256, false).unwrap()
        );
        assert_eq!(kto.0.iter().filter(|row| row.desirable).count(), 3);
    }
}

#[test]
fn a_directory_of_shards_reads_as_one_file() {
    let dir = parquet("sharded");
    let jsonl = parquet("text_prefs.jsonl");
    let shard = |k: usize| dir.join(format!("data/train-0000{k}-of-00002.parquet"));
    let mut objects = parquet_objects(&shard(0));
    assert!(!objects.is_empty());
    objects.extend(parquet_objects(&shard(1)));
    assert_eq!(objects, jsonl_objects(&jsonl));
    // Row numbers count across the shards, as in the one file.
    let rows = load_preferences(&dir, &ByteTokenizer, 256, false).unwrap();
    assert_eq!(
        rows,
        load_preferences(&jsonl, &ByteTokenizer, 256, false).unwrap()
    );
    let prepared =
        prepare_rows::<PreferenceRow>(&dir, &ByteTokenizer, 256, 32, 16, &LoadOptions::default())
            .unwrap();
    assert_eq!(prepared.rows.len(), 7);
}

/// The path, row and problem of a refused file; its message is one line.
fn refused(path: &Path, skip_invalid: bool) -> (String, usize, BadLine) {
    let err = load_preferences(path, &ByteTokenizer, 256, skip_invalid).unwrap_err();
    let shown = err.to_string();
    assert!(!shown.contains('\n'), "{shown}");
    match err {
        DataError::BadLine {
            path,
            line,
            problem,
        } => {
            assert_eq!(shown, format!("{path}:{line}: {problem}"));
            (path, line, problem)
        }
        other => panic!("expected a bad row, got {other}"),
    }
}

#[test]
fn a_wrong_column_type_is_a_bad_row() {
    let file = parquet("bad/prompt_int.parquet");
    let (path, line, problem) = refused(&file, false);
    assert_eq!(path, file.display().to_string());
    assert_eq!((line, problem), (1, BadLine::NotString { field: "prompt" }));
    let err = load_preferences(&file, &ByteTokenizer, 256, true).unwrap_err();
    assert!(matches!(err, DataError::NoRows { skipped: 2, .. }), "{err}");
}

#[test]
fn bytes_that_are_not_utf8_are_a_bad_row() {
    let file = parquet("bad/not_utf8.parquet");
    let (_, line, problem) = refused(&file, false);
    assert_eq!(line, 2);
    assert_eq!(problem.to_string(), "column prompt is not valid UTF-8");
    let (rows, report) = load_preferences(&file, &ByteTokenizer, 256, true).unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(report.first_skipped_lines, vec![2]);
}

#[test]
fn bad_rows_are_refused_or_skipped_with_their_numbers() {
    let file = parquet("bad/bad_rows.parquet");
    let (_, line, problem) = refused(&file, false);
    assert_eq!(
        (line, problem),
        (3, BadLine::MissingField { field: "rejected" })
    );
    let (rows, report) = load_preferences(&file, &ByteTokenizer, 256, true).unwrap();
    let expected = load_preferences(&parquet("bad/bad_rows.jsonl"), &ByteTokenizer, 256, true);
    assert_eq!((rows.clone(), report.clone()), expected.unwrap());
    assert_eq!(report.first_skipped_lines, vec![3, 5]);
    assert_eq!(
        rows.iter().map(|r| r.line).collect::<Vec<_>>(),
        [1, 2, 4, 6]
    );
}

#[test]
fn a_bad_row_in_a_shard_names_the_shard() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir(&data).unwrap();
    let first = parquet("sharded/data/train-00000-of-00002.parquet");
    std::fs::copy(&first, data.join("train-00000-of-00002.parquet")).unwrap();
    let second = data.join("train-00001-of-00002.parquet");
    std::fs::copy(parquet("bad/bad_rows.parquet"), &second).unwrap();
    let (path, line, _) = refused(dir.path(), false);
    assert_eq!((path, line), (second.display().to_string(), 3));
    // Skipped rows are counted across the shards: the first holds 4 rows.
    let (rows, report) = load_preferences(dir.path(), &ByteTokenizer, 256, true).unwrap();
    assert_eq!(parquet_objects(&first).len(), 4);
    assert_eq!(report.first_skipped_lines, vec![7, 9]);
    assert_eq!(rows.last().unwrap().line, 10);
}

#[test]
fn a_file_of_zero_rows_has_no_data_rows() {
    let file = parquet("bad/empty.parquet");
    let err = load_preferences(&file, &ByteTokenizer, 256, false).unwrap_err();
    assert_eq!(err.to_string(), format!("{}: no data rows", file.display()));
}

#[test]
fn a_directory_without_parquet_files_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("rows.jsonl"), "{}\n").unwrap();
    let err = load_sft(dir.path(), &ByteTokenizer, 256, false).unwrap_err();
    assert!(matches!(err, DataError::NoParquetFiles { .. }), "{err}");
    assert!(err
        .to_string()
        .ends_with("a directory with no .parquet file in it"));
}
