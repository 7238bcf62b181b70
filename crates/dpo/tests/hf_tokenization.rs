//! Text rows tokenized by a Hugging Face `tokenizer.json` give the ids TRL
//! 1.16's `DPOTrainer` gives them (prompt, prompt + response, EOS appended;
//! `tests/golden/hf/logps.json`, written by `tests/golden/make_hf_golden.py`).

use std::path::{Path, PathBuf};

use dpo::data::load_preferences;
use serde_json::Value;
use transformer::HfTokenizer;

fn golden() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/golden/hf")
}

fn ids(v: &Value) -> Vec<u32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as u32)
        .collect()
}

#[test]
fn text_rows_get_trls_ids() {
    let tokenizer = HfTokenizer::from_dir(&golden().join("policy"))
        .unwrap()
        .unwrap();
    let (rows, _) =
        load_preferences(&golden().join("pairs.jsonl"), &tokenizer, 420, false).unwrap();
    let expected: Value =
        serde_json::from_str(&std::fs::read_to_string(golden().join("logps.json")).unwrap())
            .unwrap();
    let pairs = expected["pairs"].as_array().unwrap();
    assert_eq!(rows.len(), pairs.len());
    for (row, pair) in rows.iter().zip(pairs) {
        assert_eq!(row.prompt, ids(&pair["prompt_ids"]), "line {}", row.line);
        assert_eq!(row.chosen, ids(&pair["chosen_ids"]), "line {}", row.line);
        assert_eq!(
            row.rejected,
            ids(&pair["rejected_ids"]),
            "line {}",
            row.line
        );
    }
}
