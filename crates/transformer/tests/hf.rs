//! Hugging Face GPT-2 checkpoints and tokenizers against the goldens of
//! `tests/golden/make_hf_golden.py` (transformers, tokenizers and TRL 1.16):
//! loading (single file, shards, F16), the logits, the token ids of test
//! strings (non-ASCII included), per-sequence log-probs, the round trip
//! through both formats, and one clear error for what is not supported.

use std::fs;
use std::path::{Path, PathBuf};

use autograd::Tape;
use safetensors::SafeTensors;
use serde_json::Value;
use transformer::hf::load_hf;
use transformer::{detect_format, load_config, CheckpointFormat, HfTokenizer, Model, Tokenizer};

/// rtol of f32 comparisons against the goldens (and atol for values near 0).
const RTOL: f64 = 1e-4;
const ATOL: f64 = 1e-5;

fn golden() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/golden/hf")
}

fn read_json(name: &str) -> Value {
    serde_json::from_str(&fs::read_to_string(golden().join(name)).unwrap()).unwrap()
}

fn close(a: f64, e: f64) -> bool {
    (a - e).abs() <= ATOL + RTOL * e.abs()
}

fn numbers(v: &Value) -> Vec<f64> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect()
}

fn ids(v: &Value) -> Vec<u32> {
    numbers(v).into_iter().map(|x| x as u32).collect()
}

/// The logits (T, V) of one sequence.
fn logits(model: &Model<f32>, ids: &[u32]) -> Vec<Vec<f32>> {
    let tape = Tape::no_grad();
    let params = model.bind(&tape);
    let ids: Vec<usize> = ids.iter().map(|&i| i as usize).collect();
    let out = model.forward(&tape, &params, &ids, 1, ids.len());
    let v = model.config().vocab_size;
    let flat: Vec<f32> = out.value().iter().copied().collect();
    flat.chunks(v).map(<[f32]>::to_vec).collect()
}

/// The summed log-probs of `completion` after `prompt` (f64 log-softmax of f32 logits).
fn completion_logp(model: &Model<f32>, prompt: &[u32], completion: &[u32]) -> f64 {
    let seq: Vec<u32> = prompt.iter().chain(completion).copied().collect();
    let rows = logits(model, &seq);
    (prompt.len()..seq.len())
        .map(|t| {
            let row = &rows[t - 1];
            let max = row.iter().fold(f32::NEG_INFINITY, |m, &x| m.max(x)) as f64;
            let lse = max
                + row
                    .iter()
                    .map(|&x| (x as f64 - max).exp())
                    .sum::<f64>()
                    .ln();
            row[seq[t] as usize] as f64 - lse
        })
        .sum()
}

fn assert_same_params(a: &Model<f32>, b: &Model<f32>) {
    assert_eq!(a.config(), b.config());
    for ((name, x), (_, y)) in a.named_params().zip(b.named_params()) {
        assert_eq!(x.shape(), y.shape(), "{name}");
        assert!(
            x.iter()
                .zip(y.iter())
                .all(|(p, q)| p.to_bits() == q.to_bits()),
            "{name} differs"
        );
    }
}

#[test]
fn save_pretrained_directories_load_with_transformers_logits() {
    let cases = read_json("logits.json");
    for (dir, key) in [
        ("policy", "policy"),
        ("policy_sharded", "policy"),
        ("policy_f16", "policy_f16"),
    ] {
        let path = golden().join(dir);
        assert_eq!(detect_format(&path).unwrap(), CheckpointFormat::Hf);
        let model = Model::<f32>::load(&path).unwrap();
        assert_eq!(load_config(&path).unwrap(), model.config().clone());
        for case in cases[key].as_array().unwrap() {
            let got = logits(&model, &ids(&case["ids"]));
            let last = got.last().unwrap();
            let expected = numbers(&case["last_logits"]);
            assert_eq!(last.len(), expected.len());
            for (i, (&a, &e)) in last.iter().zip(&expected).enumerate() {
                assert!(close(a as f64, e), "{dir} logit {i}: {a} vs {e}");
            }
        }
    }
    // The shards hold the same tensors as the single file.
    assert_same_params(
        &Model::load(&golden().join("policy")).unwrap(),
        &Model::load(&golden().join("policy_sharded")).unwrap(),
    );
}

#[test]
fn byte_level_bpe_gives_the_ids_of_the_tokenizers_library() {
    let golden_tokens = read_json("tokens.json");
    let tokenizer = HfTokenizer::from_dir(&golden().join("policy"))
        .unwrap()
        .expect("policy/ has a tokenizer.json");
    assert_eq!(
        tokenizer.eos_id(),
        Some(golden_tokens["eos_id"].as_u64().unwrap() as u32)
    );
    for case in golden_tokens["cases"].as_array().unwrap() {
        let text = case["text"].as_str().unwrap();
        let got = tokenizer.encode(text);
        assert_eq!(got, ids(&case["ids"]), "{text:?}");
        assert_eq!(tokenizer.decode(&got), text, "decode of {text:?}");
    }
}

#[test]
fn the_eos_falls_back_to_special_tokens_map_then_the_model_config() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    fs::copy(
        golden().join("policy/tokenizer.json"),
        dir.join("tokenizer.json"),
    )
    .unwrap();
    let eos = || HfTokenizer::from_dir(dir).unwrap().unwrap().eos_id();
    assert_eq!(eos(), None);
    // GPT-2's own files: only config.json names it.
    fs::write(dir.join("config.json"), r#"{"eos_token_id": 0}"#).unwrap();
    assert_eq!(eos(), Some(0));
    fs::write(dir.join("config.json"), r#"{"eos_token_id": 50256}"#).unwrap();
    assert_eq!(eos(), None, "an id outside the tokenizer is no EOS");
    fs::write(
        dir.join("special_tokens_map.json"),
        r#"{"eos_token": {"content": "<|endoftext|>"}}"#,
    )
    .unwrap();
    assert_eq!(eos(), Some(0));
}

#[test]
fn sequence_log_probs_match_transformers() {
    let policy = Model::<f32>::load(&golden().join("policy")).unwrap();
    let reference = Model::<f32>::load(&golden().join("ref")).unwrap();
    for pair in read_json("logps.json")["pairs"].as_array().unwrap() {
        let prompt = ids(&pair["prompt_ids"]);
        for (name, model) in [("policy", &policy), ("ref", &reference)] {
            for side in ["chosen", "rejected"] {
                let got = completion_logp(model, &prompt, &ids(&pair[format!("{side}_ids")]));
                let expected = pair[name][side].as_f64().unwrap();
                assert!(close(got, expected), "{name} {side}: {got} vs {expected}");
            }
        }
    }
}

/// The tensors of a safetensors file: name -> (dtype, shape, bytes).
fn tensors(path: &Path) -> Vec<(String, String, Vec<usize>, Vec<u8>)> {
    let bytes = fs::read(path).unwrap();
    let file = SafeTensors::deserialize(&bytes).unwrap();
    let mut out: Vec<_> = file
        .tensors()
        .into_iter()
        .map(|(n, v)| {
            (
                n,
                format!("{:?}", v.dtype()),
                v.shape().to_vec(),
                v.data().to_vec(),
            )
        })
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

#[test]
fn round_trip_through_nanogpt_is_exact() {
    let tmp = tempfile::tempdir().unwrap();
    let original = Model::<f32>::load(&golden().join("policy")).unwrap();
    let nano = tmp.path().join("nano");
    original.save_as(&nano, CheckpointFormat::NanoGpt).unwrap();
    assert_eq!(detect_format(&nano).unwrap(), CheckpointFormat::NanoGpt);
    let back = Model::<f32>::load(&nano).unwrap();
    assert_same_params(&original, &back);
    let hf = tmp.path().join("hf");
    back.save_as(&hf, CheckpointFormat::Hf).unwrap();
    assert_same_params(&original, &load_hf(&hf).unwrap());
    // The written file holds exactly the tensors transformers wrote (names,
    // dtype, [in, out] shapes, bytes), so transformers computes the same logits.
    assert_eq!(
        tensors(&hf.join("model.safetensors")),
        tensors(&golden().join("policy/model.safetensors"))
    );
}

/// Copies `policy/` into a temporary directory, edits its config, and
/// returns the load error's one line.
fn error_with_config(edit: impl FnOnce(&mut serde_json::Map<String, Value>)) -> String {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("m");
    fs::create_dir(&dir).unwrap();
    fs::copy(
        golden().join("policy/model.safetensors"),
        dir.join("model.safetensors"),
    )
    .unwrap();
    let mut config = read_json("policy/config.json");
    edit(config.as_object_mut().unwrap());
    fs::write(dir.join("config.json"), config.to_string()).unwrap();
    let err = Model::<f32>::load(&dir).unwrap_err().to_string();
    assert!(!err.contains('\n'), "one line: {err}");
    err
}

#[test]
fn what_the_model_does_not_implement_is_one_clear_line() {
    for (key, value, expected) in [
        (
            "model_type",
            Value::from("mistral"),
            "model_type \"mistral\" is not supported",
        ),
        (
            "layer_norm_epsilon",
            Value::from(1e-6),
            "layer_norm_epsilon",
        ),
        (
            "activation_function",
            Value::from("relu"),
            "activation_function",
        ),
        ("n_inner", Value::from(17), "n_inner"),
        (
            "tie_word_embeddings",
            Value::from(false),
            "tie_word_embeddings",
        ),
        (
            "scale_attn_by_inverse_layer_idx",
            Value::from(true),
            "scale_attn",
        ),
        ("n_layer", Value::from(3), "missing"),
        ("n_embd", Value::from(32), "shape"),
        ("n_positions", Value::from(1u64 << 40), "parameters"),
    ] {
        let err = error_with_config(|c| {
            c.insert(key.into(), value.clone());
        });
        assert!(err.contains(expected), "{key}: {err}");
    }
}

#[test]
fn mask_buffers_are_ignored_and_a_different_head_is_refused() {
    use safetensors::tensor::TensorView;
    use safetensors::Dtype;
    let tmp = tempfile::tempdir().unwrap();
    let model = Model::<f32>::load(&golden().join("policy")).unwrap();
    let c = model.config().n_embd;
    let v = model.config().vocab_size;
    let wte: Vec<u8> = model
        .params()
        .wte
        .iter()
        .flat_map(|x| x.to_le_bytes())
        .collect();
    let other: Vec<u8> = vec![0u8; wte.len()];
    let mask: Vec<u8> = vec![1u8; 4 * 4];
    for (head, ok) in [(&wte, true), (&other, false)] {
        // A GPT2Model-style file: no transformer. prefix, with buffers and a head.
        let mut named: Vec<(String, Vec<usize>, Vec<u8>)> =
            tensors(&golden().join("policy/model.safetensors"))
                .into_iter()
                .map(|(n, _, s, b)| (n.trim_start_matches("transformer.").to_string(), s, b))
                .collect();
        named.push(("h.0.attn.bias".into(), vec![1, 1, 2, 2], mask.clone()));
        named.push((
            "h.1.attn.masked_bias".into(),
            vec![1, 1, 2, 2],
            mask.clone(),
        ));
        named.push(("lm_head.weight".into(), vec![v, c], head.clone()));
        let views: Vec<(String, TensorView<'_>)> = named
            .iter()
            .map(|(n, s, b)| {
                (
                    n.clone(),
                    TensorView::new(Dtype::F32, s.clone(), b).unwrap(),
                )
            })
            .collect();
        let dir = tmp.path().join(format!("m-{ok}"));
        fs::create_dir(&dir).unwrap();
        fs::write(
            dir.join("model.safetensors"),
            safetensors::serialize(views, &None).unwrap(),
        )
        .unwrap();
        fs::copy(golden().join("policy/config.json"), dir.join("config.json")).unwrap();
        match Model::<f32>::load(&dir) {
            Ok(loaded) => {
                assert!(ok);
                assert_same_params(&model, &loaded);
            }
            Err(e) => {
                assert!(!ok);
                assert!(e.to_string().contains("lm_head.weight: differs"), "{e}");
            }
        }
    }
}

/// A tensor as BF16: name, shape, the BF16 bytes, and the f32 values they stand for.
type Halved = (String, Vec<usize>, Vec<u8>, Vec<f32>);

#[test]
fn bf16_tensors_widen_exactly_and_shard_names_stay_in_the_directory() {
    use safetensors::tensor::TensorView;
    use safetensors::Dtype;
    let tmp = tempfile::tempdir().unwrap();
    let original = tensors(&golden().join("policy/model.safetensors"));
    // BF16 is the top half of an f32: these f32 values are exactly what it stands for.
    let halves: Vec<Halved> = original
        .iter()
        .map(|(name, _, shape, bytes)| {
            let tops: Vec<u16> = bytes
                .chunks_exact(4)
                .map(|b| (u32::from_le_bytes([b[0], b[1], b[2], b[3]]) >> 16) as u16)
                .collect();
            let widened = tops
                .iter()
                .map(|&t| f32::from_bits(u32::from(t) << 16))
                .collect();
            let data = tops.iter().flat_map(|t| t.to_le_bytes()).collect();
            (name.clone(), shape.clone(), data, widened)
        })
        .collect();
    let views: Vec<(String, TensorView<'_>)> = halves
        .iter()
        .map(|(n, s, b, _)| {
            (
                n.clone(),
                TensorView::new(Dtype::BF16, s.clone(), b).unwrap(),
            )
        })
        .collect();
    let dir = tmp.path().join("bf16");
    fs::create_dir(&dir).unwrap();
    fs::write(
        dir.join("model.safetensors"),
        safetensors::serialize(views, &None).unwrap(),
    )
    .unwrap();
    fs::copy(golden().join("policy/config.json"), dir.join("config.json")).unwrap();
    // The same values written as F32 load to the same model, bit for bit.
    let f32_bytes: Vec<Vec<u8>> = halves
        .iter()
        .map(|(_, _, _, widened)| widened.iter().flat_map(|x| x.to_le_bytes()).collect())
        .collect();
    let views: Vec<(String, TensorView<'_>)> = halves
        .iter()
        .zip(&f32_bytes)
        .map(|((n, s, _, _), b)| {
            (
                n.clone(),
                TensorView::new(Dtype::F32, s.clone(), b).unwrap(),
            )
        })
        .collect();
    let f32_dir = tmp.path().join("f32");
    fs::create_dir(&f32_dir).unwrap();
    fs::write(
        f32_dir.join("model.safetensors"),
        safetensors::serialize(views, &None).unwrap(),
    )
    .unwrap();
    fs::copy(
        golden().join("policy/config.json"),
        f32_dir.join("config.json"),
    )
    .unwrap();
    assert_same_params(
        &Model::<f32>::load(&dir).unwrap(),
        &Model::<f32>::load(&f32_dir).unwrap(),
    );

    // An index naming a shard outside the directory is refused.
    let sharded = tmp.path().join("sharded");
    fs::create_dir(&sharded).unwrap();
    fs::copy(
        golden().join("policy/config.json"),
        sharded.join("config.json"),
    )
    .unwrap();
    fs::write(
        sharded.join("model.safetensors.index.json"),
        r#"{"weight_map": {"transformer.wte.weight": "../model.safetensors"}}"#,
    )
    .unwrap();
    let err = Model::<f32>::load(&sharded).unwrap_err().to_string();
    assert!(err.contains("not a plain file name"), "{err}");
}
