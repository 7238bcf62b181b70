//! The tokenizer a GGUF describes in its `tokenizer.ggml.*` metadata, as a
//! `tokenizers::Tokenizer`, built the way transformers builds it
//! (`integrations/gguf/gguf_tokenizer_mapping.py`): byte-level BPE
//! (`tokenizer.ggml.model` = "gpt2") with the file's vocabulary and merges,
//! GPT-2's pre-tokenizer or the split regex `tokenizer.ggml.pre` names,
//! control tokens as special added tokens, user-defined ones as plain added
//! tokens, and BOS / EOS added only where `add_bos_token` / `add_eos_token`
//! say so.

use std::collections::HashSet;

use serde_json::{json, Map, Value};

use super::reader::{GgufFile, MetaValue};

/// llama.cpp's `LLAMA_TOKEN_TYPE_CONTROL`.
const TOKEN_CONTROL: i128 = 3;
/// llama.cpp's `LLAMA_TOKEN_TYPE_USER_DEFINED`.
const TOKEN_USER_DEFINED: i128 = 4;

const LLAMA3_SPLIT: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
const QWEN2_SPLIT: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
const QWEN35_SPLIT: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?[\p{L}\p{M}]+|\p{N}| ?[^\s\p{L}\p{M}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
const TEKKEN_SPLIT: &str = r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+";
const GPT4O_SPLIT: &str = r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// The split regex of the pre-tokenizer named `pre` (`tokenizer.ggml.pre`),
/// transformers' `GGUF_PRE_TOKENIZER_SPLITS`; `None` keeps GPT-2's
/// byte-level regex (as for "smollm", "gpt2", "default").
pub fn split_regex(pre: &str) -> Option<&'static str> {
    Some(match pre {
        "llama3" | "llama-v3" | "llama-bpe" | "falcon3" | "falcon-h1" | "pixtral" | "midm-2.0"
        | "lfm2" | "jina-v5-nano" | "dbrx" | "smaug-bpe" => LLAMA3_SPLIT,
        "tekken" => TEKKEN_SPLIT,
        "qwen2" | "deepseek-r1-qwen" | "kormo" | "f2llmv2" | "megrez" => QWEN2_SPLIT,
        "qwen35" => QWEN35_SPLIT,
        "gpt-4o" | "llama4" | "kanana2" | "talkie" | "minimax-m2" => GPT4O_SPLIT,
        _ => return None,
    })
}

/// GPT-2's `bytes_to_unicode`: the printable character standing for each byte.
fn bytes_to_unicode() -> [char; 256] {
    let mut table = ['\0'; 256];
    let mut n = 0u32;
    for b in 0..=255u8 {
        let printable = matches!(b, b'!'..=b'~' | 0xA1..=0xAC | 0xAE..=0xFF);
        table[b as usize] = if printable {
            char::from(b)
        } else {
            n += 1;
            char::from_u32(255 + n).unwrap()
        };
    }
    table
}

/// What the tokenizer section of the metadata gives besides the tokenizer.
#[derive(Debug, Clone, PartialEq)]
pub struct GgufTokenizerInfo {
    /// `tokenizer.ggml.bos_token_id`.
    pub bos_id: Option<u32>,
    /// `tokenizer.ggml.eos_token_id`.
    pub eos_id: Option<u32>,
    /// `tokenizer.ggml.padding_token_id`.
    pub pad_id: Option<u32>,
    /// `tokenizer.chat_template`.
    pub chat_template: Option<String>,
}

fn token_id(file: &GgufFile, key: &str, n_tokens: usize) -> Result<Option<u32>, String> {
    match file.get(key) {
        None => Ok(None),
        Some(v) => match v.as_i128() {
            Some(id) if (0..n_tokens as i128).contains(&id) => Ok(Some(id as u32)),
            _ => Err(format!(
                "metadata {key:?} is {v:?}, not a token id below {n_tokens}"
            )),
        },
    }
}

fn flag(file: &GgufFile, key: &str) -> Result<bool, String> {
    match file.get(key) {
        None => Ok(false),
        Some(MetaValue::Bool(b)) => Ok(*b),
        Some(v) => Err(format!("metadata {key:?} is {v:?}, not a bool")),
    }
}

fn strings<'a>(file: &'a GgufFile, key: &str) -> Result<Option<Vec<&'a str>>, String> {
    let Some(v) = file.get(key) else {
        return Ok(None);
    };
    let err = || format!("metadata {key:?} is not an array of strings");
    let array = v.as_array().ok_or_else(err)?;
    array
        .iter()
        .map(|s| s.as_str().ok_or_else(err))
        .collect::<Result<Vec<_>, _>>()
        .map(Some)
}

/// The ids and chat template of the metadata of `file` (no tokenizer
/// needed).
pub fn tokenizer_info(file: &GgufFile) -> Result<GgufTokenizerInfo, String> {
    let n_tokens = file
        .get("tokenizer.ggml.tokens")
        .and_then(MetaValue::as_array)
        .map_or(u32::MAX as usize, <[MetaValue]>::len);
    let chat_template = match file.get("tokenizer.chat_template") {
        None => None,
        Some(MetaValue::String(s)) => Some(s.clone()),
        Some(_) => return Err("metadata \"tokenizer.chat_template\" is not a string".into()),
    };
    Ok(GgufTokenizerInfo {
        bos_id: token_id(file, "tokenizer.ggml.bos_token_id", n_tokens)?,
        eos_id: token_id(file, "tokenizer.ggml.eos_token_id", n_tokens)?,
        pad_id: token_id(file, "tokenizer.ggml.padding_token_id", n_tokens)?,
        chat_template,
    })
}

/// The `tokenizer.json` (as JSON) of the tokenizer the metadata of `file`
/// describes; `Err` says what is missing or unsupported.
pub fn tokenizer_json(file: &GgufFile) -> Result<Value, String> {
    let model = file
        .get("tokenizer.ggml.model")
        .and_then(MetaValue::as_str)
        .ok_or("metadata \"tokenizer.ggml.model\" is missing or not a string")?;
    if model != "gpt2" {
        return Err(format!(
            "tokenizer.ggml.model {model:?} is not supported (only \"gpt2\", byte-level BPE)"
        ));
    }
    let tokens = strings(file, "tokenizer.ggml.tokens")?
        .ok_or("metadata \"tokenizer.ggml.tokens\" is missing")?;
    let merges = strings(file, "tokenizer.ggml.merges")?
        .ok_or("metadata \"tokenizer.ggml.merges\" is missing")?;
    let token_types: Vec<i128> = match file.get("tokenizer.ggml.token_type") {
        None => Vec::new(),
        Some(v) => v
            .as_array()
            .and_then(|a| a.iter().map(MetaValue::as_i128).collect::<Option<Vec<_>>>())
            .filter(|t| t.len() == tokens.len())
            .ok_or(format!(
                "metadata \"tokenizer.ggml.token_type\" is not {} integers",
                tokens.len()
            ))?,
    };

    // A token outside the byte alphabet is spelled in it (transformers'
    // `byte_level_tokenizer`); a later duplicate wins, as in a Python dict.
    let spelling = bytes_to_unicode();
    let alphabet: HashSet<char> = spelling.iter().copied().collect();
    let in_alphabet = |t: &str| t.chars().all(|c| alphabet.contains(&c));
    let mut vocab = Map::new();
    for (id, &token) in tokens.iter().enumerate() {
        let key = if in_alphabet(token) {
            token.to_string()
        } else {
            token.bytes().map(|b| spelling[b as usize]).collect()
        };
        vocab.insert(key, json!(id));
    }
    let merges: Vec<Value> = merges
        .iter()
        .map(|m| {
            m.split_once(' ')
                .filter(|(_, b)| !b.contains(' '))
                .map(|(a, b)| json!([a, b]))
                .ok_or_else(|| format!("merge {m:?} is not two tokens"))
        })
        .collect::<Result<_, _>>()?;

    // Added tokens: control ones spelled in the byte alphabet and the named
    // BOS / EOS / UNK / PAD as special, user-defined ones as plain.
    let n = tokens.len();
    let mut added: Vec<(u64, &str, bool)> = Vec::new();
    let mut seen = HashSet::new();
    let mut add = |token: &str, special: bool| {
        if let Some(id) = vocab.get(token).and_then(Value::as_u64) {
            if seen.insert(token.to_string()) {
                added.push((id, tokens[id as usize], special));
            }
        }
    };
    for (token, &ty) in tokens.iter().zip(&token_types) {
        if ty == TOKEN_CONTROL && in_alphabet(token) {
            add(token, true);
        }
    }
    for key in [
        "bos_token_id",
        "eos_token_id",
        "unknown_token_id",
        "padding_token_id",
    ] {
        if let Some(id) = token_id(file, &format!("tokenizer.ggml.{key}"), n)? {
            add(tokens[id as usize], true);
        }
    }
    for (token, &ty) in tokens.iter().zip(&token_types) {
        if ty == TOKEN_USER_DEFINED {
            add(token, false);
        }
    }
    added.sort_by_key(|&(id, _, _)| id);
    let added_tokens: Vec<Value> = added
        .iter()
        .map(|&(id, content, special)| {
            json!({"id": id, "content": content, "single_word": false, "lstrip": false,
                   "rstrip": false, "normalized": false, "special": special})
        })
        .collect();

    let pre = file.get("tokenizer.ggml.pre").and_then(MetaValue::as_str);
    let pre_tokenizer = match pre.and_then(split_regex) {
        None => json!({"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true,
                       "use_regex": true}),
        Some(regex) => json!({"type": "Sequence", "pretokenizers": [
            {"type": "Split", "pattern": {"Regex": regex}, "behavior": "Isolated", "invert": false},
            {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true,
             "use_regex": false}]}),
    };

    let info = tokenizer_info(file)?;
    let mut single = Vec::new();
    let mut specials = Map::new();
    let mut special = |name: &str, id: Option<u32>| -> Result<Option<Value>, String> {
        let id = id.ok_or(format!(
            "tokenizer.ggml.add_{name}_token is set but there is no {name} id"
        ))?;
        let token = tokens[id as usize];
        specials.insert(
            token.into(),
            json!({"id": token, "ids": [id], "tokens": [token]}),
        );
        Ok(Some(json!({"SpecialToken": {"id": token, "type_id": 0}})))
    };
    let bos = if flag(file, "tokenizer.ggml.add_bos_token")? {
        special("bos", info.bos_id)?
    } else {
        None
    };
    let eos = if flag(file, "tokenizer.ggml.add_eos_token")? {
        special("eos", info.eos_id)?
    } else {
        None
    };
    let with_type = |v: &Option<Value>, type_id: u32| {
        v.clone().map(|mut v| {
            v["SpecialToken"]["type_id"] = json!(type_id);
            v
        })
    };
    single.extend(bos.clone());
    single.push(json!({"Sequence": {"id": "A", "type_id": 0}}));
    single.extend(eos.clone());
    let mut pair = single.clone();
    pair.extend(with_type(&bos, 1));
    pair.push(json!({"Sequence": {"id": "B", "type_id": 1}}));
    pair.extend(with_type(&eos, 1));

    Ok(json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": added_tokens,
        "normalizer": null,
        "pre_tokenizer": pre_tokenizer,
        "post_processor": {"type": "TemplateProcessing", "single": single, "pair": pair,
                           "special_tokens": specials},
        "decoder": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true,
                    "use_regex": true},
        "model": {"type": "BPE", "dropout": null, "unk_token": null,
                  "continuing_subword_prefix": "", "end_of_word_suffix": "", "fuse_unk": false,
                  "byte_fallback": false, "ignore_merges": false, "vocab": vocab,
                  "merges": merges},
    }))
}

/// The tokenizer the metadata of `file` describes (see the module docs).
pub fn build_tokenizer(file: &GgufFile) -> Result<tokenizers::Tokenizer, String> {
    let json = tokenizer_json(file)?;
    json.to_string()
        .parse::<tokenizers::Tokenizer>()
        .map_err(|e| format!("the tokenizer it describes does not load: {e}"))
}
