//! JSONL data rows: any bytes, read as a preference file and as an SFT file,
//! in each of the row forms, both refusing and skipping bad lines. Loading
//! must return rows or a `DataError`, never panic; the rows it returns must
//! hold ids inside the vocabulary and a response with a scored token.
#![no_main]

use dpo::data::{read_preferences, read_sft, scored_tokens};
use libfuzzer_sys::fuzz_target;
use transformer::ByteTokenizer;

fuzz_target!(|bytes: &[u8]| {
    // The first byte picks the vocabulary, so that `_ids` rows are tested
    // both inside and outside it; the rest is the file.
    let Some((&pick, file)) = bytes.split_first() else {
        return;
    };
    let vocab_size = 1 + pick as usize * 2;
    for skip_invalid in [false, true] {
        if let Ok((rows, report)) =
            read_preferences(file, "fuzz.jsonl", &ByteTokenizer, vocab_size, skip_invalid)
        {
            assert_eq!(rows.len(), report.rows);
            for row in &rows {
                for response in [&row.chosen, &row.rejected] {
                    assert!(scored_tokens(&row.prompt, response) > 0);
                }
                let ids = row.prompt.iter().chain(&row.chosen).chain(&row.rejected);
                for &id in ids {
                    assert!((id as usize) < vocab_size, "id {id} past the vocabulary");
                }
            }
        }
        if let Ok((rows, report)) =
            read_sft(file, "fuzz.jsonl", &ByteTokenizer, vocab_size, skip_invalid)
        {
            assert_eq!(rows.len(), report.rows);
            for row in &rows {
                assert!(scored_tokens(&row.prompt, &row.completion) > 0);
                assert!(row.prompt.iter().chain(&row.completion).all(|&id| (id as usize) < vocab_size));
            }
        }
    }
});
