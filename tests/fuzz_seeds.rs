//! The fuzzers' seeds and every input they ever crashed on, replayed through
//! the same loaders in a plain `cargo test` (the fuzzers themselves need
//! `cargo fuzz`; docs/fuzzing.md). Each file of `fuzz/seeds/TARGET/` and
//! `fuzz/regressions/TARGET/` must load or be refused with an error, never
//! panic, exactly as in the fuzz target `fuzz/fuzz_targets/TARGET.rs`.

use std::path::{Path, PathBuf};

use dpo::data::{read_parquet_objects, read_preferences, read_sft};
use serde_json::Value;
use transformer::{parse_config, ByteTokenizer, ChatTemplate, Model, ModelConfig};

/// Every file under `fuzz/seeds/TARGET` and `fuzz/regressions/TARGET`.
fn inputs(target: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
    let mut files = Vec::new();
    for kind in ["seeds", "regressions"] {
        let Ok(entries) = std::fs::read_dir(root.join(kind).join(target)) else {
            continue;
        };
        for entry in entries {
            let path = entry.unwrap().path();
            let bytes = std::fs::read(&path).unwrap();
            files.push((path, bytes));
        }
    }
    files.sort();
    files
}

/// Reads `file` (JSON lines) as preference and as SFT rows, refusing and
/// skipping bad lines; every id of a loaded pair must be inside the
/// vocabulary. Returns how many of the four loads gave rows.
fn load_as_rows(file: &[u8], vocab_size: usize, path: &Path) -> usize {
    let mut loaded = 0;
    for skip_invalid in [false, true] {
        let preferences = read_preferences(file, "seed", &ByteTokenizer, vocab_size, skip_invalid);
        let sft = read_sft(file, "seed", &ByteTokenizer, vocab_size, skip_invalid);
        loaded += usize::from(preferences.is_ok()) + usize::from(sft.is_ok());
        if let Ok((rows, _)) = preferences {
            for row in rows {
                let ids = row.prompt.iter().chain(&row.chosen).chain(&row.rejected);
                assert!(
                    ids.into_iter().all(|&id| (id as usize) < vocab_size),
                    "{}",
                    path.display()
                );
            }
        }
    }
    loaded
}

#[test]
fn jsonl_rows_inputs_load_or_are_refused() {
    let files = inputs("jsonl_rows");
    assert!(files.len() >= 10, "the seeds are missing");
    let mut loaded = 0;
    for (path, bytes) in files {
        let Some((&pick, file)) = bytes.split_first() else {
            continue;
        };
        let vocab_size = 1 + pick as usize * 2;
        loaded += load_as_rows(file, vocab_size, &path);
    }
    assert!(loaded > 0, "no seed is a loadable file");
}

#[test]
fn parquet_rows_inputs_load_or_are_refused() {
    let files = inputs("parquet_rows");
    assert!(files.len() >= 20, "the seeds are missing");
    let (mut loaded, mut refused) = (0, 0);
    for (path, bytes) in files {
        let Some((&pick, file)) = bytes.split_first() else {
            continue;
        };
        let vocab_size = 1 + pick as usize * 2;
        let objects = match read_parquet_objects(file.to_vec(), "seed") {
            Ok(objects) => objects,
            Err(err) => {
                assert!(!err.to_string().contains('\n'), "{}: {err}", path.display());
                refused += 1;
                continue;
            }
        };
        // As the fuzz target: one JSON line per row, a row without an object
        // a line that is not UTF-8.
        let mut lines = Vec::new();
        for (i, (row, object)) in objects.into_iter().enumerate() {
            assert_eq!(row, i + 1, "{}", path.display());
            match object {
                Ok(object) => lines.extend(Value::Object(object).to_string().into_bytes()),
                Err(_) => lines.push(0xff),
            }
            lines.push(b'\n');
        }
        loaded += load_as_rows(&lines, vocab_size, &path);
    }
    assert!(loaded > 0, "no seed is a loadable file");
    assert!(refused > 0, "the decoder-panic regression is not refused");
}

#[test]
fn config_json_inputs_parse_or_are_refused() {
    let files = inputs("config_json");
    assert!(!files.is_empty(), "the seeds are missing");
    for (path, bytes) in files {
        if let Ok(config) = parse_config(&bytes, &path) {
            assert!(config.num_params().unwrap() <= transformer::config::MAX_PARAMS);
        }
    }
}

#[test]
fn safetensors_inputs_load_or_are_refused() {
    let files = inputs("safetensors_checkpoint");
    assert!(!files.is_empty(), "the seeds are missing");
    let config = ModelConfig {
        vocab_size: 5,
        block_size: 3,
        n_layer: 1,
        n_head: 1,
        n_embd: 2,
        bias: true,
        llama: None,
    };
    let mut loaded = 0;
    for (path, bytes) in files {
        if let Ok(model) = Model::from_safetensors(config.clone(), &bytes, &path) {
            let count: usize = model.params().iter().map(|p| p.len()).sum();
            assert_eq!(count as u64, config.num_params().unwrap());
            loaded += 1;
        }
    }
    assert!(loaded > 0, "the valid seed does not load");
}

#[test]
fn chat_template_inputs_render_or_are_refused() {
    let files = inputs("chat_template");
    assert!(files.len() >= 10, "the seeds are missing");
    let mut rendered = 0;
    for (path, bytes) in files {
        let at = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
        let Ok(source) = std::str::from_utf8(&bytes[..at]) else {
            continue;
        };
        let conversation = bytes.get(at + 1..).unwrap_or_default();
        let messages: Vec<serde_json::Value> =
            serde_json::from_slice(conversation).unwrap_or_default();
        let special = [("eos_token".to_string(), "</s>".to_string())].into();
        let Ok(template) = ChatTemplate::new(source, special) else {
            continue;
        };
        for add_generation_prompt in [false, true] {
            if let Ok(out) = template.render(&messages, add_generation_prompt, false) {
                assert!(out.text.len() <= transformer::chat_template::MAX_OUTPUT_BYTES);
                assert!(
                    out.generation.iter().all(|r| r.end <= out.text.len()),
                    "{}",
                    path.display()
                );
                rendered += 1;
            }
        }
    }
    assert!(rendered > 0, "no seed renders");
}

#[test]
fn lora_adapter_inputs_load_or_are_refused() {
    let files = inputs("lora_adapter");
    assert!(files.len() >= 5, "the seeds are missing");
    let base =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/lora/llama/base/config.json");
    let model = transformer::hf::parse_hf_config(&std::fs::read(&base).unwrap(), &base).unwrap();
    let mut loaded = 0;
    for (path, bytes) in files {
        let at = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
        let (config, weights) = (&bytes[..at], bytes.get(at + 1..).unwrap_or_default());
        let result = transformer::Lora::from_bytes(
            (config, Path::new("adapter_config.json")),
            (weights, Path::new("adapter_model.safetensors")),
            &model,
        );
        match result {
            Ok(lora) => {
                assert!(lora
                    .pairs
                    .iter()
                    .flatten()
                    .all(|p| p.a.shape()[0] == lora.config.r));
                loaded += 1;
            }
            Err(e) => assert_eq!(e.to_string().lines().count(), 1, "{}", path.display()),
        }
    }
    assert!(loaded > 0, "the valid seed does not load");
}
