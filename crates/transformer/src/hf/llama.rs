//! The `config.json` of the Llama family's transformers classes
//! (`LlamaForCausalLM`, `Qwen2ForCausalLM`, `Qwen3ForCausalLM`), read into a
//! [`ModelConfig`] and written back.
//!
//! What the three classes leave out takes transformers' defaults. Whatever
//! the decoder does not implement (another activation than SiLU, sliding
//! windows, a rope type other than the default and `llama3`) is refused with
//! one line. The rotary parameters are read from transformers 5's
//! `rope_parameters` or from the older `rope_theta` + `rope_scaling`.

use serde_json::{json, Map, Value};

use crate::config::{
    Llama3Scaling, LlamaConfig, LlamaType, ModelConfig, RopeConfig, SpecialTokens,
};

/// The `ModelConfig` of a Llama-family `config.json` (`value`, of `model_type`).
pub fn parse(value: &Value, model_type: LlamaType) -> Result<ModelConfig, String> {
    let object = value.as_object().ok_or("not a JSON object")?;
    let get = |key: &str| object.get(key).filter(|v| !v.is_null());
    let size = |key: &str, default: Option<usize>| -> Result<usize, String> {
        match get(key) {
            Some(v) => v
                .as_u64()
                .map(|n| n as usize)
                .ok_or_else(|| format!("{key} {v} is not a non-negative integer")),
            None => default.ok_or_else(|| format!("no {key}")),
        }
    };
    let float = |key: &str, default: f64| -> Result<f64, String> {
        match get(key) {
            Some(v) => v
                .as_f64()
                .ok_or_else(|| format!("{key} {v} is not a number")),
            None => Ok(default),
        }
    };
    let flag = |key: &str, default: bool| -> Result<bool, String> {
        match get(key) {
            Some(v) => v
                .as_bool()
                .ok_or_else(|| format!("{key} {v} is not a boolean")),
            None => Ok(default),
        }
    };
    let n_embd = size("hidden_size", None)?;
    let n_head = size("num_attention_heads", None)?;
    if n_head == 0 {
        return Err("num_attention_heads must be positive".into());
    }
    let head_dim_default = match model_type {
        LlamaType::Qwen3 => 128,
        LlamaType::Llama | LlamaType::Qwen2 => n_embd / n_head,
    };
    let activation = get("hidden_act").and_then(Value::as_str).unwrap_or("silu");
    if activation != "silu" {
        return Err(format!(
            "hidden_act {activation:?} is not supported (only \"silu\")"
        ));
    }
    if flag("use_sliding_window", false)? {
        return Err("use_sliding_window true is not supported (full attention only)".into());
    }
    if let Some(types) = get("layer_types").and_then(Value::as_array) {
        if let Some(other) = types.iter().find(|t| t.as_str() != Some("full_attention")) {
            return Err(format!(
                "layer_types {other} is not supported (full_attention only)"
            ));
        }
    }
    // Llama and Qwen3: `attention_bias` puts biases on q, k, v and o; Qwen2
    // always has them on q, k, v and never on o.
    let attention_bias = flag("attention_bias", false)?;
    let (qkv_bias, o_bias) = match model_type {
        LlamaType::Qwen2 => (true, false),
        LlamaType::Llama | LlamaType::Qwen3 => (attention_bias, attention_bias),
    };
    let llama = LlamaConfig {
        model_type,
        n_kv_head: size("num_key_value_heads", Some(n_head))?,
        head_dim: size("head_dim", Some(head_dim_default))?,
        intermediate_size: size("intermediate_size", None)?,
        rms_norm_eps: float("rms_norm_eps", 1e-6)?,
        rope: rope(object)?,
        qkv_bias,
        o_bias,
        mlp_bias: model_type == LlamaType::Llama && flag("mlp_bias", false)?,
        qk_norm: model_type == LlamaType::Qwen3,
        tie_word_embeddings: flag("tie_word_embeddings", false)?,
        special: SpecialTokens {
            bos: token_id(get("bos_token_id"), "bos_token_id")?,
            eos: match get("eos_token_id") {
                None => vec![],
                Some(Value::Array(ids)) => ids
                    .iter()
                    .map(|id| token_id(Some(id), "eos_token_id").map(Option::unwrap))
                    .collect::<Result<_, _>>()?,
                Some(id) => vec![token_id(Some(id), "eos_token_id")?.unwrap()],
            },
            pad: token_id(get("pad_token_id"), "pad_token_id")?,
        },
    };
    let default_positions = match model_type {
        LlamaType::Llama => 2048,
        LlamaType::Qwen2 | LlamaType::Qwen3 => 32768,
    };
    let config = ModelConfig {
        vocab_size: size("vocab_size", None)?,
        block_size: size("max_position_embeddings", Some(default_positions))?,
        n_layer: size("num_hidden_layers", None)?,
        n_head,
        n_embd,
        bias: false,
        llama: Some(llama),
    };
    config.validate()?;
    Ok(config)
}

/// A token id of the config, if it names one.
fn token_id(value: Option<&Value>, key: &str) -> Result<Option<u32>, String> {
    value
        .map(|v| {
            v.as_u64()
                .and_then(|id| u32::try_from(id).ok())
                .ok_or_else(|| format!("{key} {v} is not a token id"))
        })
        .transpose()
}

/// The rotary parameters: `rope_parameters` (transformers 5) or `rope_theta`
/// and `rope_scaling`.
fn rope(object: &Map<String, Value>) -> Result<RopeConfig, String> {
    let parameters = object
        .get("rope_parameters")
        .or_else(|| object.get("rope_scaling"))
        .filter(|v| !v.is_null());
    let theta = parameters
        .and_then(|p| p.get("rope_theta"))
        .or_else(|| object.get("rope_theta"))
        .map(|v| v.as_f64().ok_or(format!("rope_theta {v} is not a number")))
        .transpose()?
        .unwrap_or(10000.0);
    let Some(parameters) = parameters else {
        return Ok(RopeConfig {
            theta,
            llama3: None,
        });
    };
    let rope_type = parameters
        .get("rope_type")
        .or_else(|| parameters.get("type"))
        .and_then(Value::as_str)
        .unwrap_or("default");
    let number = |key: &str| {
        parameters
            .get(key)
            .and_then(Value::as_f64)
            .ok_or_else(|| format!("rope {rope_type}: no number {key}"))
    };
    let llama3 = match rope_type {
        "default" => None,
        "llama3" => Some(Llama3Scaling {
            factor: number("factor")?,
            low_freq_factor: number("low_freq_factor")?,
            high_freq_factor: number("high_freq_factor")?,
            original_max_position_embeddings: number("original_max_position_embeddings")? as usize,
        }),
        other => {
            return Err(format!(
                "rope_type {other:?} is not supported (only \"default\" and \"llama3\")"
            ))
        }
    };
    Ok(RopeConfig { theta, llama3 })
}

/// The `config.json` transformers 5 writes for a model of `config` (which
/// must be of the Llama family).
pub fn config_json(config: &ModelConfig) -> Value {
    let llama = config.llama.as_ref().expect("a Llama-family config");
    let special = &llama.special;
    let eos = match &special.eos[..] {
        [] => Value::Null,
        [id] => json!(id),
        ids => json!(ids),
    };
    let model_type = llama.model_type;
    let mut rope_parameters = json!({
        "rope_theta": llama.rope.theta,
        "rope_type": "default",
    });
    if let Some(s) = llama.rope.llama3 {
        rope_parameters = json!({
            "factor": s.factor,
            "high_freq_factor": s.high_freq_factor,
            "low_freq_factor": s.low_freq_factor,
            "original_max_position_embeddings": s.original_max_position_embeddings,
            "rope_theta": llama.rope.theta,
            "rope_type": "llama3",
        });
    }
    let architecture = match model_type {
        LlamaType::Llama => "LlamaForCausalLM",
        LlamaType::Qwen2 => "Qwen2ForCausalLM",
        LlamaType::Qwen3 => "Qwen3ForCausalLM",
    };
    let mut value = json!({
        "architectures": [architecture],
        "attention_dropout": 0.0,
        "bos_token_id": special.bos,
        "eos_token_id": eos,
        "pad_token_id": special.pad,
        "head_dim": llama.head_dim,
        "hidden_act": "silu",
        "hidden_size": config.n_embd,
        "initializer_range": 0.02,
        "intermediate_size": llama.intermediate_size,
        "max_position_embeddings": config.block_size,
        "model_type": model_type.name(),
        "num_attention_heads": config.n_head,
        "num_hidden_layers": config.n_layer,
        "num_key_value_heads": llama.n_kv_head,
        "rms_norm_eps": llama.rms_norm_eps,
        "rope_parameters": rope_parameters,
        "tie_word_embeddings": llama.tie_word_embeddings,
        "use_cache": true,
        "vocab_size": config.vocab_size,
    });
    let object = value.as_object_mut().unwrap();
    match model_type {
        LlamaType::Llama => {
            object.insert("attention_bias".into(), json!(llama.o_bias));
            object.insert("mlp_bias".into(), json!(llama.mlp_bias));
        }
        LlamaType::Qwen2 => {
            object.insert("use_sliding_window".into(), json!(false));
        }
        LlamaType::Qwen3 => {
            object.insert("attention_bias".into(), json!(llama.o_bias));
            object.insert("use_sliding_window".into(), json!(false));
        }
    }
    value
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every preset of the family survives `config.json` and back.
    #[test]
    fn presets_round_trip_through_config_json() {
        for name in ["llama-tiny", "qwen2-tiny", "qwen3-tiny"] {
            let mut config = ModelConfig::preset(name).unwrap();
            config.llama.as_mut().unwrap().special = SpecialTokens {
                bos: Some(1),
                eos: vec![2, 7],
                pad: None,
            };
            let llama = config.llama.as_ref().unwrap();
            let value = config_json(&config);
            assert_eq!(parse(&value, llama.model_type).unwrap(), config, "{name}");
        }
    }

    /// A transformers 4 file: `rope_theta` and `rope_scaling` at the top
    /// level, defaults for what it leaves out, one EOS id.
    #[test]
    fn older_rope_keys_and_defaults() {
        let value = json!({
            "model_type": "llama", "vocab_size": 10, "hidden_size": 8,
            "intermediate_size": 12, "num_hidden_layers": 1, "num_attention_heads": 2,
            "rope_theta": 500000.0, "eos_token_id": 3,
            "rope_scaling": {"rope_type": "llama3", "factor": 32.0, "low_freq_factor": 1.0,
                             "high_freq_factor": 4.0, "original_max_position_embeddings": 8192},
        });
        let config = parse(&value, LlamaType::Llama).unwrap();
        let llama = config.llama.unwrap();
        assert_eq!((llama.n_kv_head, llama.head_dim), (2, 4));
        assert_eq!(llama.rope.theta, 500000.0);
        assert_eq!(
            llama.rope.llama3.unwrap().original_max_position_embeddings,
            8192
        );
        assert_eq!(llama.special.eos, vec![3]);
        assert!(!llama.tie_word_embeddings && !llama.qkv_bias && !llama.qk_norm);
        assert_eq!(config.block_size, 2048);
    }

    #[test]
    fn what_the_decoder_does_not_implement_is_one_line() {
        let base = json!({
            "vocab_size": 10, "hidden_size": 8, "intermediate_size": 12,
            "num_hidden_layers": 1, "num_attention_heads": 2,
        });
        for (key, value, expected) in [
            ("hidden_act", json!("gelu"), "hidden_act \"gelu\""),
            ("use_sliding_window", json!(true), "use_sliding_window"),
            (
                "rope_parameters",
                json!({"rope_type": "yarn", "factor": 4.0}),
                "\"yarn\"",
            ),
            ("num_key_value_heads", json!(3), "not divisible"),
            ("hidden_size", json!(-1), "hidden_size -1"),
            ("intermediate_size", json!(null), "no intermediate_size"),
        ] {
            let mut config = base.clone();
            config[key] = value;
            let err = parse(&config, LlamaType::Qwen2).unwrap_err();
            assert!(
                err.contains(expected) && !err.contains('\n'),
                "{key}: {err}"
            );
        }
    }
}
