//! `dpo convert-data --from hh-rlhf`: HH-RLHF dialogues into TRL's
//! conversational preference rows, checked against TRL's own conversion
//! (`examples/datasets/hh-rlhf-helpful-base.py`'s `extract_dialogue`, run by
//! `tests/golden/make_llama_golden.py` on eight rows of the harmless-base
//! test split: `smollm2/trl_chat_eval/hh_source.jsonl` -> `pairs.jsonl`).

use crate::common;

use std::fs;
use std::path::Path;

use crate::common::dpo;
use serde_json::Value;

fn rows(path: &Path) -> Vec<Value> {
    fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect()
}

fn s(path: &Path) -> &str {
    path.to_str().unwrap()
}

#[test]
fn hh_rlhf_rows_become_trls_conversations() {
    let golden = common::golden_dir().join("smollm2/trl_chat_eval");
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("chat.jsonl");
    let run = dpo(&[
        "convert-data",
        "--from",
        "hh-rlhf",
        s(&golden.join("hh_source.jsonl")),
        s(&out),
    ]);
    let report = run.assert_ok().json();
    assert_eq!(report["rows"], 8);
    assert_eq!(report["skipped"], 0);
    assert_eq!(rows(&out), rows(&golden.join("pairs.jsonl")));
}

#[test]
fn a_row_off_the_layout_is_refused_with_its_line_and_nothing_is_written() {
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("hh.jsonl");
    let out = tmp.path().join("chat.jsonl");
    fs::write(
        &input,
        "{\"chosen\": \"\\n\\nHuman: a\\n\\nAssistant: b\", \"rejected\": \"\\n\\nHuman: a\\n\\nAssistant: c\"}\n\
         {\"chosen\": \"\\n\\nHuman: x\", \"rejected\": \"\\n\\nHuman: y\"}\n",
    )
    .unwrap();
    let args = ["convert-data", "--from", "hh-rlhf", s(&input), s(&out)];
    let run = dpo(&args);
    run.assert_one_line_error();
    assert!(
        run.stderr.contains(":2: not an HH-RLHF dialogue pair"),
        "{}",
        run.stderr
    );
    assert!(!out.exists());
    // --skip-invalid converts the rest.
    let mut skipping = args.to_vec();
    skipping.push("--skip-invalid");
    let report = dpo(&skipping).assert_ok().json();
    assert_eq!(
        (report["rows"].as_u64(), report["skipped"].as_u64()),
        (Some(1), Some(1))
    );
    assert_eq!(rows(&out).len(), 1);
}
