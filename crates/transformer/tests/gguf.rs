//! `transformer::gguf` against gguf-py and transformers.
//!
//! - `gguf_golden_*`: the small GGUF of `tests/golden/make_gguf_golden.py`
//!   (written by gguf-py's GGUFWriter): every dequantized type bitwise equal
//!   to gguf-py's numpy `dequantize`, shapes, metadata;
//! - `gguf_hostile_*`: truncated and corrupted files give one-line errors,
//!   never a panic or a huge allocation;
//! - `gguf_smollm2_*` (ignored): the real SmolLM2-135M-Instruct Q4_1 GGUF,
//!   against what transformers 5.24 loads from it
//!   (`tests/golden/make_gguf_tokenizer_golden.py`,
//!   `make_gguf_tensors_golden.py`). The file is outside the repository: its
//!   path comes from `DPO_SMOLLM2_GGUF`; `.ci/run` runs these with
//!   `--ignored`, and run without the file they fail saying what is missing.

use std::path::{Path, PathBuf};

use serde_json::Value;
use transformer::gguf::{
    hf_tensor_name, parse_checkpoint, read_checkpoint, reverse_permute, tensor_f32, GgufError,
    GgufFile, MetaValue,
};

fn golden_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/golden/gguf")
}

fn read_json(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap()
}

fn quants_bytes() -> (Vec<u8>, PathBuf) {
    let path = golden_dir().join("quants.gguf");
    (std::fs::read(&path).unwrap(), path)
}

#[test]
fn gguf_golden_dequantization_is_bitwise_gguf_py() {
    let (bytes, path) = quants_bytes();
    let file = GgufFile::parse(&bytes, &path).unwrap();
    let manifest = read_json(&golden_dir().join("quants.json"));
    let expected_bytes = std::fs::read(golden_dir().join("quants_expected.f32")).unwrap();
    let expected: Vec<f32> = expected_bytes
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
        .collect();
    let cases = manifest["tensors"].as_array().unwrap();
    assert_eq!(cases.len(), file.tensors.len());
    let mut types = Vec::new();
    for case in cases {
        let name = case["name"].as_str().unwrap();
        let tensor = file.tensor(name).unwrap();
        assert_eq!(tensor.ty.name(), case["type"].as_str().unwrap(), "{name}");
        let shape: Vec<usize> = case["shape"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d.as_u64().unwrap() as usize)
            .collect();
        assert_eq!(tensor.shape(), shape, "{name}");
        let values = tensor_f32(&bytes, tensor, &path).unwrap();
        let offset = case["offset"].as_u64().unwrap() as usize;
        let count = case["count"].as_u64().unwrap() as usize;
        let want = &expected[offset..offset + count];
        assert_eq!(values.len(), count, "{name}");
        for (i, (got, want)) in values.iter().zip(want).enumerate() {
            assert_eq!(
                got.to_bits(),
                want.to_bits(),
                "{name}[{i}]: {got:e} vs gguf-py's {want:e}"
            );
        }
        types.push(case["type"].as_str().unwrap().to_string());
    }
    for ty in [
        "F32", "F16", "BF16", "Q8_0", "Q4_0", "Q4_1", "Q4_K", "Q5_K", "Q6_K",
    ] {
        assert!(types.iter().any(|t| t == ty), "no {ty} case in the golden");
    }
}

#[test]
fn gguf_golden_metadata_and_layout() {
    let (bytes, path) = quants_bytes();
    let file = GgufFile::parse(&bytes, &path).unwrap();
    assert_eq!(file.version, 3);
    assert_eq!(file.alignment, 32);
    assert_eq!(file.data_offset % 32, 0);
    assert_eq!(
        file.get("general.architecture").and_then(MetaValue::as_str),
        Some("llama")
    );
    assert_eq!(file.get("golden.f64"), Some(&MetaValue::F64(0.125)));
    assert_eq!(file.get("golden.bool"), Some(&MetaValue::Bool(true)));
    let array: Vec<i128> = file
        .get("golden.array")
        .and_then(MetaValue::as_array)
        .unwrap()
        .iter()
        .map(|v| v.as_i128().unwrap())
        .collect();
    assert_eq!(array, [1, 2, 3]);
    assert_eq!(file.tensor("f32_3d").unwrap().ne, [4, 3, 2]);
    assert_eq!(file.tensor("f32_3d").unwrap().shape(), [2, 3, 4]);
    // Version 2 has the same layout for a little-endian file.
    let mut v2 = bytes.clone();
    v2[4..8].copy_from_slice(&2u32.to_le_bytes());
    assert_eq!(GgufFile::parse(&v2, &path).unwrap().version, 2);
}

#[test]
fn gguf_hf_names() {
    for (gguf, hf) in [
        ("token_embd.weight", "model.embed_tokens.weight"),
        ("output_norm.weight", "model.norm.weight"),
        ("output.weight", "lm_head.weight"),
        (
            "blk.0.attn_q.weight",
            "model.layers.0.self_attn.q_proj.weight",
        ),
        ("blk.1.attn_k.bias", "model.layers.1.self_attn.k_proj.bias"),
        (
            "blk.2.attn_v.weight",
            "model.layers.2.self_attn.v_proj.weight",
        ),
        (
            "blk.3.attn_output.weight",
            "model.layers.3.self_attn.o_proj.weight",
        ),
        (
            "blk.4.attn_q_norm.weight",
            "model.layers.4.self_attn.q_norm.weight",
        ),
        (
            "blk.5.attn_k_norm.weight",
            "model.layers.5.self_attn.k_norm.weight",
        ),
        (
            "blk.6.ffn_gate.weight",
            "model.layers.6.mlp.gate_proj.weight",
        ),
        ("blk.7.ffn_up.weight", "model.layers.7.mlp.up_proj.weight"),
        (
            "blk.8.ffn_down.weight",
            "model.layers.8.mlp.down_proj.weight",
        ),
        (
            "blk.9.attn_norm.weight",
            "model.layers.9.input_layernorm.weight",
        ),
        (
            "blk.10.ffn_norm.weight",
            "model.layers.10.post_attention_layernorm.weight",
        ),
    ] {
        assert_eq!(hf_tensor_name(gguf).as_deref(), Some(hf), "{gguf}");
    }
    for name in [
        "rope_freqs.weight",
        "blk.x.attn_q.weight",
        "blk.0.attn_qkv.weight",
        "output",
    ] {
        assert_eq!(hf_tensor_name(name), None, "{name}");
    }
}

/// llama.cpp's `permute` (convert_hf_to_gguf.py: reshape (n_head, 2, dim,
/// ...), swap axes 1 and 2), which [`reverse_permute`] must undo.
fn llama_cpp_permute(w: &[f32], rows: usize, cols: usize, n_head: usize) -> Vec<f32> {
    let dim = rows / n_head / 2;
    let mut out = vec![0f32; w.len()];
    for h in 0..n_head {
        for b in 0..2 {
            for a in 0..dim {
                let hf = h * 2 * dim + b * dim + a;
                let gguf = h * 2 * dim + 2 * a + b;
                out[gguf * cols..(gguf + 1) * cols].copy_from_slice(&w[hf * cols..(hf + 1) * cols]);
            }
        }
    }
    out
}

#[test]
fn gguf_reverse_permute_undoes_llama_cpp() {
    let (rows, cols, n_head) = (24, 3, 3);
    let hf: Vec<f32> = (0..rows * cols).map(|i| i as f32).collect();
    let permuted = llama_cpp_permute(&hf, rows, cols, n_head);
    assert_ne!(permuted, hf);
    assert_eq!(reverse_permute(&permuted, rows, cols, n_head), hf);
    // Head 0, dim 4: GGUF rows 0..8 hold HF rows 0, 4, 1, 5, 2, 6, 3, 7.
    let rows_of =
        |w: &[f32]| -> Vec<usize> { w.chunks(cols).map(|r| r[0] as usize / cols).collect() };
    assert_eq!(rows_of(&permuted)[..8], [0, 4, 1, 5, 2, 6, 3, 7]);
}

// ---- tiny models against transformers ------------------------------------

/// The config keys transformers' config and ours must agree on (a key absent
/// from ours must be null or absent in transformers').
const CONFIG_KEYS: [&str; 17] = [
    "model_type",
    "vocab_size",
    "hidden_size",
    "intermediate_size",
    "num_hidden_layers",
    "num_attention_heads",
    "num_key_value_heads",
    "head_dim",
    "rms_norm_eps",
    "max_position_embeddings",
    "tie_word_embeddings",
    "bos_token_id",
    "eos_token_id",
    "pad_token_id",
    "unk_token_id",
    "hidden_act",
    "rope_theta",
];

fn assert_config_matches(got: &Value, want: &Value, what: &str) {
    for key in CONFIG_KEYS {
        let want = if key == "rope_theta" {
            &want["rope_parameters"]["rope_theta"]
        } else {
            want.get(key).unwrap_or(&Value::Null)
        };
        let got = got.get(key).unwrap_or(&Value::Null);
        assert_eq!(got, want, "{what}: config {key}");
    }
}

#[test]
fn gguf_tiny_models_match_transformers() {
    for arch in ["llama", "qwen2", "qwen3"] {
        let path = golden_dir().join(format!("tiny_{arch}.gguf"));
        let checkpoint = read_checkpoint(&path).unwrap();
        let golden = read_json(&golden_dir().join(format!("tiny_{arch}.json")));
        let values_bytes = std::fs::read(golden_dir().join(format!("tiny_{arch}.f32"))).unwrap();
        let expected: Vec<f32> = values_bytes
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
            .collect();

        assert_config_matches(&checkpoint.config, &golden["config"], arch);
        assert_eq!(
            checkpoint.config["architectures"][0].as_str().unwrap(),
            match arch {
                "llama" => "LlamaForCausalLM",
                "qwen2" => "Qwen2ForCausalLM",
                _ => "Qwen3ForCausalLM",
            }
        );
        // transformers 5.24 reads no rope scaling from a qwen2 GGUF; we do.
        if arch == "qwen2" {
            assert_eq!(
                checkpoint.config["rope_scaling"],
                serde_json::json!({"rope_type": "yarn", "factor": 4.0,
                                   "original_max_position_embeddings": 32})
            );
        } else {
            assert!(checkpoint.config.get("rope_scaling").is_none());
        }

        let tied = checkpoint.config["tie_word_embeddings"] == Value::Bool(true);
        let mut n_checked = 0;
        for case in golden["tensors"].as_array().unwrap() {
            let name = case["name"].as_str().unwrap();
            let offset = case["offset"].as_u64().unwrap() as usize;
            let count = case["count"].as_u64().unwrap() as usize;
            let want = &expected[offset..offset + count];
            let wanted_name = if name == "lm_head.weight" && tied {
                // transformers' tied head is the embedding; we leave it out.
                assert!(
                    checkpoint.tensors.iter().all(|(n, _, _)| n != name),
                    "{arch}"
                );
                "model.embed_tokens.weight"
            } else {
                name
            };
            let (_, shape, values) = checkpoint
                .tensors
                .iter()
                .find(|(n, _, _)| n == wanted_name)
                .unwrap_or_else(|| panic!("{arch}: {name} missing"));
            let want_shape: Vec<usize> = case["shape"]
                .as_array()
                .unwrap()
                .iter()
                .map(|d| d.as_u64().unwrap() as usize)
                .collect();
            assert_eq!(*shape, want_shape, "{arch}: {name}");
            let same = values
                .iter()
                .zip(want)
                .all(|(a, b)| a.to_bits() == b.to_bits());
            assert!(
                same && values.len() == want.len(),
                "{arch}: {name} values differ"
            );
            n_checked += 1;
        }
        assert_eq!(
            checkpoint.tensors.len() + usize::from(tied),
            n_checked,
            "{arch}: tensors beyond transformers' state dict"
        );

        let tokenizer = &checkpoint.tokenizer;
        assert_eq!(
            tokenizer.get_vocab_size(true) as u64,
            golden["vocab_size"].as_u64().unwrap(),
            "{arch}"
        );
        assert_eq!(
            checkpoint.chat_template.as_deref(),
            golden["chat_template"].as_str()
        );
        for case in golden["texts"].as_array().unwrap() {
            assert_tokenizes_as_transformers(tokenizer, case, arch);
        }
    }
}

/// The fuzz target's seeds and regressions (fuzz/seeds/gguf,
/// fuzz/regressions/gguf) through the same calls as fuzz/fuzz_targets/gguf.rs.
#[test]
fn gguf_fuzz_inputs_load_or_are_refused() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz");
    let mut n = 0;
    for kind in ["seeds", "regressions"] {
        let Ok(entries) = std::fs::read_dir(root.join(kind).join("gguf")) else {
            continue;
        };
        for entry in entries {
            let path = entry.unwrap().path();
            let bytes = std::fs::read(&path).unwrap();
            n += 1;
            let Ok(file) = GgufFile::parse(&bytes, &path) else {
                continue;
            };
            for tensor in &file.tensors {
                if let Ok(values) = tensor_f32(&bytes, tensor, &path) {
                    assert_eq!(values.len(), tensor.n_values());
                }
            }
            if let Ok(checkpoint) = parse_checkpoint(&bytes, &path) {
                for (_, shape, values) in &checkpoint.tensors {
                    assert_eq!(values.len(), shape.iter().product::<usize>());
                }
            }
        }
    }
    assert!(n >= 2, "the gguf fuzz seeds are missing");
}

// ---- hostile input -------------------------------------------------------

fn assert_one_line_error(result: Result<GgufFile, GgufError>, what: &str) -> String {
    let message = match result {
        Ok(_) => panic!("{what}: accepted"),
        Err(e) => e.to_string(),
    };
    assert!(message.starts_with("bad.gguf: "), "{what}: {message}");
    assert!(!message.contains('\n'), "{what}: {message}");
    message
}

#[test]
fn gguf_hostile_every_truncation_is_an_error() {
    let (bytes, _) = quants_bytes();
    let path = Path::new("bad.gguf");
    let full = GgufFile::parse(&bytes, path).unwrap();
    let end = full
        .tensors
        .iter()
        .map(|t| t.start + t.n_bytes)
        .max()
        .unwrap();
    // Every prefix short of the end of the last tensor is refused.
    for len in 0..end {
        let result = GgufFile::parse(&bytes[..len], path);
        assert_one_line_error(result, &format!("the first {len} bytes"));
    }
}

/// The byte offsets of the header fields of the golden file.
const N_TENSORS_AT: usize = 8;
const N_KV_AT: usize = 16;

#[test]
fn gguf_hostile_corrupted_headers_are_errors() {
    let (bytes, _) = quants_bytes();
    let path = Path::new("bad.gguf");
    let patched = |at: usize, value: &[u8]| {
        let mut b = bytes.clone();
        b[at..at + value.len()].copy_from_slice(value);
        GgufFile::parse(&b, path)
    };
    let m = assert_one_line_error(patched(0, b"GGUX"), "bad magic");
    assert!(m.contains("not a GGUF file"), "{m}");
    let m = assert_one_line_error(patched(4, &1u32.to_le_bytes()), "version 1");
    assert!(m.contains("version 1"), "{m}");
    let m = assert_one_line_error(patched(4, &u32::MAX.to_le_bytes()), "version max");
    assert!(m.contains("version"), "{m}");
    let m = assert_one_line_error(patched(N_TENSORS_AT, &u64::MAX.to_le_bytes()), "tensors");
    assert!(m.contains("tensors"), "{m}");
    let m = assert_one_line_error(patched(N_KV_AT, &u64::MAX.to_le_bytes()), "kv count");
    assert!(m.contains("metadata"), "{m}");
    // Counts under the caps but past what the file holds: errors, no huge allocation.
    assert_one_line_error(
        patched(N_TENSORS_AT, &60_000u64.to_le_bytes()),
        "many tensors",
    );
    assert_one_line_error(patched(N_KV_AT, &60_000u64.to_le_bytes()), "many kvs");
    // The first key's length: huge, then past the file.
    let m = assert_one_line_error(patched(24, &u64::MAX.to_le_bytes()), "key length");
    assert!(m.contains("string"), "{m}");
    assert_one_line_error(patched(24, &1_000_000u64.to_le_bytes()), "key past the end");
}

/// The position of the tensor info of `name` in the golden file: its name's
/// length prefix.
fn tensor_info_at(bytes: &[u8], name: &str) -> usize {
    let mut needle = (name.len() as u64).to_le_bytes().to_vec();
    needle.extend_from_slice(name.as_bytes());
    needle.extend_from_slice(&2u32.to_le_bytes()); // n_dims of a 2-D tensor
    bytes
        .windows(needle.len())
        .position(|w| w == needle)
        .unwrap_or_else(|| panic!("no tensor info of {name}"))
}

#[test]
fn gguf_hostile_corrupted_tensor_infos_are_errors() {
    let (bytes, _) = quants_bytes();
    let path = Path::new("bad.gguf");
    let at = tensor_info_at(&bytes, "q4_k") + 8 + 4; // dims
    let dims = at + 4;
    let ty = dims + 16;
    let offset = ty + 4;
    let patched = |at: usize, value: &[u8]| {
        let mut b = bytes.clone();
        b[at..at + value.len()].copy_from_slice(value);
        GgufFile::parse(&b, path)
    };
    let m = assert_one_line_error(patched(ty, &99u32.to_le_bytes()), "unknown type");
    assert!(m.contains("tensor q4_k: unknown ggml type 99"), "{m}");
    let m = assert_one_line_error(patched(at, &9u32.to_le_bytes()), "n_dims");
    assert!(m.contains("tensor q4_k: 9 dimensions"), "{m}");
    let m = assert_one_line_error(patched(dims + 8, &(1u64 << 62).to_le_bytes()), "overflow");
    assert!(m.contains("tensor q4_k") && m.contains("overflow"), "{m}");
    let m = assert_one_line_error(patched(dims + 8, &1000u64.to_le_bytes()), "past the end");
    assert!(
        m.contains("tensor q4_k") && m.contains("past the end"),
        "{m}"
    );
    let m = assert_one_line_error(patched(dims, &100u64.to_le_bytes()), "partial block");
    assert!(m.contains("multiple of the Q4_K block size 256"), "{m}");
    let m = assert_one_line_error(patched(offset, &u64::MAX.to_le_bytes()), "offset");
    assert!(m.contains("tensor q4_k"), "{m}");
    let m = assert_one_line_error(patched(offset, &1u64.to_le_bytes()), "unaligned");
    assert!(m.contains("alignment"), "{m}");
}

#[test]
fn gguf_hostile_not_a_model_is_an_error() {
    // The golden file parses as GGUF, but holds no tokenizer and tensors of
    // no HF name: loading it as a model is one clear error.
    let (bytes, _) = quants_bytes();
    let e = parse_checkpoint(&bytes, Path::new("bad.gguf"))
        .unwrap_err()
        .to_string();
    assert!(e.starts_with("bad.gguf: ") && !e.contains('\n'), "{e}");
    let e = read_checkpoint(Path::new("/nonexistent/model.gguf"))
        .unwrap_err()
        .to_string();
    assert!(e.starts_with("/nonexistent/model.gguf: "), "{e}");
}

#[test]
fn gguf_hostile_random_header_mutations_are_errors_or_models() {
    use rand::{Rng, SeedableRng};
    // A poor man's fuzzer for machines without `cargo fuzz`: random bytes
    // overwritten in the header, metadata and tensor infos of the seeds
    // (the tensor data only changes values), through the fuzz target's calls.
    let mut rng = rand::rngs::StdRng::seed_from_u64(20261206);
    for name in ["quants.gguf", "tiny_llama.gguf"] {
        let path = golden_dir().join(name);
        let bytes = std::fs::read(&path).unwrap();
        let header_len = GgufFile::parse(&bytes, &path).unwrap().data_offset;
        for _ in 0..300 {
            let mut mutated = bytes.clone();
            for _ in 0..rng.gen_range(1..=4) {
                let at = rng.gen_range(0..header_len);
                mutated[at] = match rng.gen_range(0..4) {
                    0 => 0,
                    1 => 0xFF,
                    2 => mutated[at] ^ (1 << rng.gen_range(0..8)),
                    _ => rng.gen(),
                };
            }
            let Ok(file) = GgufFile::parse(&mutated, Path::new("bad.gguf")) else {
                continue;
            };
            for tensor in &file.tensors {
                assert!(tensor.start + tensor.n_bytes <= mutated.len());
                let _ = tensor_f32(&mutated, tensor, &path);
            }
            let _ = parse_checkpoint(&mutated, &path);
        }
    }
}

/// A metadata value to write: (gguf type, bytes).
enum W<'a> {
    U32(u32),
    Str(&'a str),
    Strs(Vec<&'a str>),
    I32s(Vec<i32>),
}

/// A GGUF v3 file of the key/values `kv` and one F32 tensor per
/// (name, ne) of `tensors` (zeros).
fn write_gguf(kv: &[(&str, W)], tensors: &[(&str, Vec<u64>)]) -> Vec<u8> {
    fn string(out: &mut Vec<u8>, s: &str) {
        out.extend((s.len() as u64).to_le_bytes());
        out.extend(s.as_bytes());
    }
    let mut out = b"GGUF".to_vec();
    out.extend(3u32.to_le_bytes());
    out.extend((tensors.len() as u64).to_le_bytes());
    out.extend((kv.len() as u64).to_le_bytes());
    for (key, value) in kv {
        string(&mut out, key);
        match value {
            W::U32(v) => {
                out.extend(4u32.to_le_bytes());
                out.extend(v.to_le_bytes());
            }
            W::Str(v) => {
                out.extend(8u32.to_le_bytes());
                string(&mut out, v);
            }
            W::Strs(v) => {
                out.extend(9u32.to_le_bytes());
                out.extend(8u32.to_le_bytes());
                out.extend((v.len() as u64).to_le_bytes());
                for s in v {
                    string(&mut out, s);
                }
            }
            W::I32s(v) => {
                out.extend(9u32.to_le_bytes());
                out.extend(5u32.to_le_bytes());
                out.extend((v.len() as u64).to_le_bytes());
                for x in v {
                    out.extend(x.to_le_bytes());
                }
            }
        }
    }
    let mut offset = 0u64;
    for (name, ne) in tensors {
        string(&mut out, name);
        out.extend((ne.len() as u32).to_le_bytes());
        for d in ne {
            out.extend(d.to_le_bytes());
        }
        out.extend(0u32.to_le_bytes()); // F32
        out.extend(offset.to_le_bytes());
        offset += (ne.iter().product::<u64>() * 4).div_ceil(32) * 32;
    }
    out.resize(out.len().div_ceil(32) * 32, 0);
    out.resize(out.len() + offset as usize, 0);
    out
}

/// A tiny llama file whose tokenizer metadata is `tokenizer` (on top of a
/// valid model: hidden 4, 2 heads, 1 layer, vocab 3).
fn tiny_llama_with(tokenizer: Kv) -> Vec<u8> {
    let mut kv = vec![
        ("general.architecture", W::Str("llama")),
        ("llama.context_length", W::U32(8)),
        ("llama.block_count", W::U32(1)),
        ("llama.feed_forward_length", W::U32(8)),
        ("llama.embedding_length", W::U32(4)),
        ("llama.attention.head_count", W::U32(2)),
        ("llama.attention.head_count_kv", W::U32(1)),
        ("llama.attention.layer_norm_rms_epsilon", W::U32(0)),
    ];
    kv.extend(tokenizer);
    write_gguf(
        &kv,
        &[
            ("token_embd.weight", vec![4, 3]),
            ("blk.0.attn_q.weight", vec![4, 4]),
            ("blk.0.attn_k.weight", vec![4, 2]),
        ],
    )
}

type Kv = Vec<(&'static str, W<'static>)>;

fn good_tokenizer() -> Kv {
    vec![
        ("tokenizer.ggml.model", W::Str("gpt2")),
        ("tokenizer.ggml.tokens", W::Strs(vec!["a", "b", "ab"])),
        ("tokenizer.ggml.merges", W::Strs(vec!["a b"])),
    ]
}

/// The tiny llama with the good tokenizer changed by `f`.
fn tokenizer_with(f: &dyn Fn(&mut Kv)) -> Result<tokenizers::Tokenizer, GgufError> {
    let mut kv = good_tokenizer();
    f(&mut kv);
    parse_checkpoint(&tiny_llama_with(kv), Path::new("bad.gguf")).map(|c| c.tokenizer)
}

fn tokenizer_error(f: &dyn Fn(&mut Kv), want: &str) {
    let e = tokenizer_with(f).map(|_| ()).unwrap_err().to_string();
    assert!(e.starts_with("bad.gguf: ") && e.contains(want), "{e}");
}

#[test]
fn gguf_hostile_tokenizer_metadata_is_an_error_or_a_tokenizer() {
    let path = Path::new("bad.gguf");
    let checkpoint = parse_checkpoint(&tiny_llama_with(good_tokenizer()), path).unwrap();
    assert_eq!(
        checkpoint.tokenizer.encode("ab", false).unwrap().get_ids(),
        [2]
    );
    assert_eq!(checkpoint.config["tie_word_embeddings"], Value::Bool(true));
    assert_eq!(checkpoint.tensors[1].1, [4, 4]);

    tokenizer_error(&|kv| kv[0].1 = W::Str("llama"), "not supported");
    tokenizer_error(&|kv| kv[1].1 = W::U32(3), "tokenizer.ggml.tokens");
    tokenizer_error(&|kv| kv[2].1 = W::Strs(vec!["a b c"]), "is not two tokens");
    tokenizer_error(
        &|kv| kv.push(("tokenizer.ggml.bos_token_id", W::U32(3))),
        "not a token id below 3",
    );
    tokenizer_error(
        &|kv| kv.push(("tokenizer.ggml.token_type", W::I32s(vec![1, 1]))),
        "3 integers",
    );
    tokenizer_error(
        &|kv| kv.push(("tokenizer.ggml.add_bos_token", W::U32(1))),
        "not a bool",
    );
    tokenizer_error(
        &|kv| kv.push(("tokenizer.chat_template", W::U32(1))),
        "not a string",
    );
    // Odd but loadable (or refused by the tokenizers crate): never a panic.
    let _ = tokenizer_with(&|kv| kv[2].1 = W::Strs(vec!["x y"]));
    let _ = tokenizer_with(&|kv| kv[1].1 = W::Strs(vec!["", "", "ab"]));
    let _ = tokenizer_with(&|kv| {
        kv[1].1 = W::Strs(vec!["", "a", "a"]);
        kv.push(("tokenizer.ggml.token_type", W::I32s(vec![3, 3, 4])));
    });
    let _ = tokenizer_with(&|kv| kv.push(("tokenizer.ggml.pre", W::Str("qwen2"))));
}

#[test]
fn gguf_hostile_model_metadata_is_an_error() {
    let path = Path::new("bad.gguf");
    let mut bytes = tiny_llama_with(good_tokenizer());
    // "llama" -> "llamb": an unsupported architecture.
    let at = bytes.windows(5).position(|w| w == b"llama").unwrap();
    bytes[at + 4] = b'b';
    let e = parse_checkpoint(&bytes, path).unwrap_err().to_string();
    assert!(e.contains("architecture \"llamb\" is not supported"), "{e}");
    // A head count that does not divide the q rows.
    let bytes = write_gguf(
        &[
            ("general.architecture", W::Str("llama")),
            ("llama.context_length", W::U32(8)),
            ("llama.block_count", W::U32(1)),
            ("llama.feed_forward_length", W::U32(8)),
            ("llama.embedding_length", W::U32(4)),
            ("llama.attention.head_count", W::U32(3)),
            ("llama.attention.head_count_kv", W::U32(1)),
            ("llama.attention.layer_norm_rms_epsilon", W::U32(0)),
            ("tokenizer.ggml.model", W::Str("gpt2")),
            ("tokenizer.ggml.tokens", W::Strs(vec!["a", "b", "ab"])),
            ("tokenizer.ggml.merges", W::Strs(vec!["a b"])),
        ],
        &[
            ("blk.0.attn_q.weight", vec![4, 4]),
            ("blk.0.attn_qkv.weight", vec![4]),
        ],
    );
    let e = parse_checkpoint(&bytes, path).unwrap_err().to_string();
    assert!(
        e.contains("tensor blk.0.attn_q.weight: 4 rows do not split into 3 heads"),
        "{e}"
    );
    // A missing hyper-parameter.
    let bytes = write_gguf(&[("general.architecture", W::Str("qwen2"))], &[]);
    let e = parse_checkpoint(&bytes, path).unwrap_err().to_string();
    assert!(
        e.contains("metadata \"qwen2.context_length\" is missing"),
        "{e}"
    );
}

/// `case["text"]` encodes to `case["ids"]` (special tokens added as
/// transformers adds them) and those ids decode to `case["decoded"]`;
/// returns the ids.
fn assert_tokenizes_as_transformers(
    tokenizer: &tokenizers::Tokenizer,
    case: &Value,
    what: &str,
) -> Vec<u32> {
    let text = case["text"].as_str().unwrap();
    let want: Vec<u32> = case["ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap() as u32)
        .collect();
    let got = tokenizer.encode(text, true).unwrap().get_ids().to_vec();
    assert_eq!(got, want, "{what}: ids of {text:?}");
    let decoded = tokenizer.decode(&want, false).unwrap();
    assert_eq!(
        decoded,
        case["decoded"].as_str().unwrap(),
        "{what}: decode of {text:?}"
    );
    want
}

// ---- the real SmolLM2 (ignored) -------------------------------------------

fn smollm2_path() -> PathBuf {
    transformer::gguf::smollm2_for_tests()
}

#[test]
#[ignore = "needs the real SmolLM2 GGUF (DPO_SMOLLM2_GGUF): run by .ci/run"]
fn gguf_smollm2_tokenizer() {
    let checkpoint = read_checkpoint(&smollm2_path()).unwrap();
    let golden = read_json(&golden_dir().join("smollm2_tokenizer.json"));
    let tokenizer = &checkpoint.tokenizer;
    assert_eq!(
        tokenizer.get_vocab_size(true) as u64,
        golden["vocab_size"].as_u64().unwrap()
    );
    assert_eq!(
        checkpoint.chat_template.as_deref(),
        golden["chat_template"].as_str()
    );
    assert_eq!(
        checkpoint.bos_id.map(u64::from),
        golden["bos_token_id"].as_u64()
    );
    assert_eq!(
        checkpoint.eos_id.map(u64::from),
        golden["eos_token_id"].as_u64()
    );
    assert_eq!(
        checkpoint.pad_id.map(u64::from),
        golden["pad_token_id"].as_u64()
    );
    let cases = golden["cases"].as_array().unwrap();
    assert!(cases.len() >= 55);
    for case in cases {
        let want = assert_tokenizes_as_transformers(tokenizer, case, "SmolLM2");
        let text = case["text"].as_str().unwrap();
        let decoded = tokenizer.decode(&want, true).unwrap();
        assert_eq!(
            decoded,
            case["decoded_skip_special"].as_str().unwrap(),
            "decode (skipping special tokens) of {text:?}"
        );
    }
}

#[test]
#[ignore = "needs the real SmolLM2 GGUF (DPO_SMOLLM2_GGUF): run by .ci/run"]
fn gguf_smollm2_config_and_tensors() {
    let checkpoint = read_checkpoint(&smollm2_path()).unwrap();
    let golden = read_json(&golden_dir().join("smollm2_tensors.json"));

    assert_config_matches(&checkpoint.config, &golden["config"], "SmolLM2");
    assert_eq!(
        checkpoint.config["rope_parameters"],
        golden["config"]["rope_parameters"]
    );
    let got = checkpoint.config.as_object().unwrap();

    // Every parameter transformers has (but the tied head), with its shape.
    let tensors: std::collections::HashMap<&str, (&Vec<usize>, &Vec<f32>)> = checkpoint
        .tensors
        .iter()
        .map(|(name, shape, values)| (name.as_str(), (shape, values)))
        .collect();
    let state = golden["state_dict"].as_object().unwrap();
    let as_shape = |v: &Value| -> Vec<usize> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|d| d.as_u64().unwrap() as usize)
            .collect()
    };
    for (name, shape) in state {
        if name == "lm_head.weight" && got["tie_word_embeddings"] == Value::Bool(true) {
            assert!(!tensors.contains_key(name.as_str()));
            continue;
        }
        let (got_shape, values) = tensors
            .get(name.as_str())
            .unwrap_or_else(|| panic!("{name} missing"));
        assert_eq!(**got_shape, as_shape(shape), "{name}");
        assert_eq!(values.len(), got_shape.iter().product::<usize>(), "{name}");
    }
    assert_eq!(
        tensors.len(),
        state.len() - usize::from(state.contains_key("lm_head.weight")),
        "tensors beyond transformers' parameters"
    );

    // The sampled tensors' values.
    let as_f32s = |v: &Value| -> Vec<f32> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_f64().unwrap() as f32)
            .collect()
    };
    for (name, want) in golden["tensors"].as_object().unwrap() {
        let (shape, values) = tensors[name.as_str()];
        assert_eq!(*shape, as_shape(&want["shape"]), "{name}");
        assert_eq!(
            values[..8],
            as_f32s(&want["first"])[..],
            "{name} first values"
        );
        assert_eq!(
            values[values.len() - 8..],
            as_f32s(&want["last"])[..],
            "{name} last values"
        );
        if shape.len() == 2 {
            let col0: Vec<f32> = values
                .chunks(shape[1])
                .take(256)
                .map(|row| row[0])
                .collect();
            assert_eq!(
                col0,
                as_f32s(&want["col0"]),
                "{name} first column (row order)"
            );
        }
        let sum: f64 = values.iter().map(|&v| f64::from(v)).sum();
        let sum_sq: f64 = values.iter().map(|&v| f64::from(v) * f64::from(v)).sum();
        let close = |a: f64, b: f64| (a - b).abs() <= 1e-9 * b.abs().max(1.0);
        assert!(
            close(sum, want["sum"].as_f64().unwrap()),
            "{name} sum {sum} vs {}",
            want["sum"]
        );
        assert!(
            close(sum_sq, want["sum_sq"].as_f64().unwrap()),
            "{name} sum of squares {sum_sq} vs {}",
            want["sum_sq"]
        );
    }
}
