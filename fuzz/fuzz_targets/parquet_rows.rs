//! Parquet data rows: any bytes as a Parquet file, read into the JSON
//! objects the loaders parse (`read_parquet_objects`), then each object as a
//! JSON line through the preference and SFT row parsers, both refusing and
//! skipping bad rows. Reading must return objects or a `DataError`, never
//! panic (a decoder of the parquet crate that panics on a corrupt page is
//! caught and refused); rows are numbered 1, 2, ...; the rows returned hold
//! ids inside the vocabulary and a response with a scored token.
#![no_main]

use dpo::data::{read_parquet_objects, read_preferences, read_sft, scored_tokens};
use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use transformer::ByteTokenizer;

fuzz_target!(|bytes: &[u8]| {
    // The first byte picks the vocabulary, as in `jsonl_rows`; the rest is the file.
    let Some((&pick, file)) = bytes.split_first() else {
        return;
    };
    let vocab_size = 1 + pick as usize * 2;
    let Ok(objects) = read_parquet_objects(file.to_vec(), "fuzz.parquet") else {
        return;
    };
    // One JSON line per row; a row without an object (bytes not UTF-8) is a
    // line that is not UTF-8 either, so the line numbers are the row numbers.
    let mut lines = Vec::new();
    for (i, (row, object)) in objects.into_iter().enumerate() {
        assert_eq!(row, i + 1, "rows are numbered from 1");
        match object {
            Ok(object) => lines.extend(Value::Object(object).to_string().into_bytes()),
            Err(_) => lines.push(0xff),
        }
        lines.push(b'\n');
    }
    for skip_invalid in [false, true] {
        let preferences = read_preferences(&lines[..], "fuzz", &ByteTokenizer, vocab_size, skip_invalid);
        if let Ok((rows, report)) = preferences {
            assert_eq!(rows.len(), report.rows);
            for row in &rows {
                assert!(scored_tokens(&row.prompt, &row.chosen) > 0);
                assert!(scored_tokens(&row.prompt, &row.rejected) > 0);
                let ids = row.prompt.iter().chain(&row.chosen).chain(&row.rejected);
                assert!(ids.into_iter().all(|&id| (id as usize) < vocab_size));
            }
        }
        if let Ok((rows, report)) = read_sft(&lines[..], "fuzz", &ByteTokenizer, vocab_size, skip_invalid) {
            assert_eq!(rows.len(), report.rows);
            for row in &rows {
                assert!(scored_tokens(&row.prompt, &row.completion) > 0);
                assert!(row.prompt.iter().chain(&row.completion).all(|&id| (id as usize) < vocab_size));
            }
        }
    }
});
