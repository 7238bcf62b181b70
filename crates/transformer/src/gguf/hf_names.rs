//! llama.cpp's tensor names and metadata keys in Hugging Face terms, for the
//! decoders `llama`, `qwen2` and `qwen3`, as transformers maps them when it
//! loads a GGUF (`modeling_gguf_pytorch_utils.py`, `integrations/ggml.py`).

use serde_json::{json, Map, Value};

use super::reader::{GgufFile, MetaValue};

/// The architectures (`general.architecture`) this module maps.
pub const SUPPORTED_ARCHS: [&str; 3] = ["llama", "qwen2", "qwen3"];

/// The HF module path of a per-layer GGUF tensor stem (`attn_q` in
/// `blk.N.attn_q.weight`).
fn layer_module(stem: &str) -> Option<&'static str> {
    Some(match stem {
        "attn_q" => "self_attn.q_proj",
        "attn_k" => "self_attn.k_proj",
        "attn_v" => "self_attn.v_proj",
        "attn_output" => "self_attn.o_proj",
        "attn_q_norm" => "self_attn.q_norm",
        "attn_k_norm" => "self_attn.k_norm",
        "ffn_gate" => "mlp.gate_proj",
        "ffn_up" => "mlp.up_proj",
        "ffn_down" => "mlp.down_proj",
        "attn_norm" => "input_layernorm",
        "ffn_norm" => "post_attention_layernorm",
        _ => return None,
    })
}

/// The Hugging Face name of the GGUF tensor `name` (`blk.3.attn_output.weight`
/// -> `model.layers.3.self_attn.o_proj.weight`), or `None` for a name with no
/// HF counterpart.
pub fn hf_tensor_name(name: &str) -> Option<String> {
    let (stem, suffix) = name.rsplit_once('.')?;
    if suffix != "weight" && suffix != "bias" {
        return None;
    }
    let hf_stem = match stem {
        "token_embd" => "model.embed_tokens".to_string(),
        "output_norm" => "model.norm".to_string(),
        "output" => "lm_head".to_string(),
        _ => {
            let rest = stem.strip_prefix("blk.")?;
            let (layer, module) = rest.split_once('.')?;
            let layer: usize = layer.parse().ok()?;
            format!("model.layers.{layer}.{}", layer_module(module)?)
        }
    };
    Some(format!("{hf_stem}.{suffix}"))
}

/// Undoes llama.cpp's `permute` of a llama q/k projection (weight or bias),
/// which interleaves the two halves of each head's rotary dimensions:
/// `rows` = n_head * 2 * dim rows of `cols` values; HF row `h*2dim + b*dim + a`
/// is GGUF row `h*2dim + 2a + b` (transformers' `_reverse_permute_weights`:
/// reshape (n_head, dim, 2, ...), swap axes 1 and 2).
pub fn reverse_permute(data: &[f32], rows: usize, cols: usize, n_head: usize) -> Vec<f32> {
    assert_eq!(data.len(), rows * cols);
    assert!(n_head > 0 && rows.is_multiple_of(2) && (rows / 2).is_multiple_of(n_head));
    let dim = rows / n_head / 2;
    let mut out = vec![0f32; data.len()];
    for h in 0..n_head {
        for a in 0..dim {
            for b in 0..2 {
                let hf = h * 2 * dim + b * dim + a;
                let gguf = h * 2 * dim + 2 * a + b;
                out[hf * cols..(hf + 1) * cols]
                    .copy_from_slice(&data[gguf * cols..(gguf + 1) * cols]);
            }
        }
    }
    out
}

fn number(value: &MetaValue) -> Option<Value> {
    match value {
        MetaValue::Array(_) | MetaValue::String(_) | MetaValue::Bool(_) => None,
        other => Some(other.to_json()),
    }
}

/// The HF `config.json` transformers builds from the metadata of `file`, an
/// `arch` model (one of [`SUPPORTED_ARCHS`]); `Err` names a missing or
/// ill-typed key. `tie_word_embeddings` is true when the file has no
/// `output.weight` (llama.cpp writes the head only when it is not the
/// embedding). Beyond transformers: `head_dim` also from `qwen3`'s
/// `attention.key_length`, and `rope_scaling` from `{arch}.rope.scaling.*`.
pub fn hf_config(file: &GgufFile, arch: &str) -> Result<Value, String> {
    let key = |name: &str| format!("{arch}.{name}");
    let required = |name: &str| -> Result<Value, String> {
        let k = key(name);
        let v = file
            .get(&k)
            .ok_or_else(|| format!("metadata {k:?} is missing"))?;
        number(v).ok_or_else(|| format!("metadata {k:?} is {v:?}, not a number"))
    };
    let optional = |k: &str| -> Result<Option<Value>, String> {
        match file.get(k) {
            None => Ok(None),
            Some(v) => number(v)
                .map(Some)
                .ok_or_else(|| format!("metadata {k:?} is {v:?}, not a number")),
        }
    };

    let mut config = Map::new();
    config.insert("model_type".into(), json!(arch));
    let class = match arch {
        "llama" => "LlamaForCausalLM",
        "qwen2" => "Qwen2ForCausalLM",
        _ => "Qwen3ForCausalLM",
    };
    config.insert("architectures".into(), json!([class]));
    for (gguf, hf) in [
        ("context_length", "max_position_embeddings"),
        ("block_count", "num_hidden_layers"),
        ("feed_forward_length", "intermediate_size"),
        ("embedding_length", "hidden_size"),
        ("attention.head_count", "num_attention_heads"),
        ("attention.head_count_kv", "num_key_value_heads"),
        ("attention.layer_norm_rms_epsilon", "rms_norm_eps"),
    ] {
        config.insert(hf.into(), required(gguf)?);
    }
    let theta = match optional(&key("rope.freq_base"))? {
        Some(theta) => theta,
        // llama.cpp's default when the key is absent.
        None => json!(10000.0),
    };
    config.insert("rope_theta".into(), theta.clone());
    let head_dim_key = if arch == "qwen3" {
        "attention.key_length"
    } else if arch == "llama" {
        "rope.dimension_count"
    } else {
        ""
    };
    if !head_dim_key.is_empty() {
        if let Some(head_dim) = optional(&key(head_dim_key))? {
            config.insert("head_dim".into(), head_dim);
        }
    }
    let vocab_size = match optional(&key("vocab_size"))? {
        Some(v) => v,
        None => match file
            .get("tokenizer.ggml.tokens")
            .and_then(MetaValue::as_array)
        {
            Some(tokens) => json!(tokens.len()),
            None => return Err("neither vocab_size nor tokenizer.ggml.tokens is given".into()),
        },
    };
    config.insert("vocab_size".into(), vocab_size);
    config.insert("hidden_act".into(), json!("silu"));
    config.insert(
        "tie_word_embeddings".into(),
        json!(file.tensor("output.weight").is_none()),
    );
    for (gguf, hf) in [
        ("bos_token_id", "bos_token_id"),
        ("eos_token_id", "eos_token_id"),
        ("padding_token_id", "pad_token_id"),
        ("unknown_token_id", "unk_token_id"),
    ] {
        if let Some(id) = optional(&format!("tokenizer.ggml.{gguf}"))? {
            config.insert(hf.into(), id);
        }
    }

    let mut rope_parameters = Map::new();
    rope_parameters.insert("rope_theta".into(), theta);
    match file
        .get(&key("rope.scaling.type"))
        .and_then(MetaValue::as_str)
    {
        None | Some("none") => {
            rope_parameters.insert("rope_type".into(), json!("default"));
        }
        Some(kind) => {
            let mut scaling = Map::new();
            scaling.insert("rope_type".into(), json!(kind));
            if let Some(factor) = optional(&key("rope.scaling.factor"))? {
                scaling.insert("factor".into(), factor);
            }
            if let Some(original) = optional(&key("rope.scaling.original_context_length"))? {
                scaling.insert("original_max_position_embeddings".into(), original);
            }
            rope_parameters.extend(scaling.clone());
            config.insert("rope_scaling".into(), Value::Object(scaling));
        }
    }
    config.insert("rope_parameters".into(), Value::Object(rope_parameters));
    Ok(Value::Object(config))
}
