//! The model's hyper-parameters: nanoGPT's `GPTConfig` (stored as its
//! `config.json`), and for the Llama family the few ways its decoder differs
//! from GPT-2's ([`LlamaConfig`], read from and written to Hugging Face
//! `config.json` files by [`crate::hf`]).

use autograd::kernels::attention::AttentionHeads;
use serde::{Deserialize, Serialize};

/// Sizes of a decoder (docs/spec.md section 1; field names as in nanoGPT's
/// `GPTConfig`, so a GPT-2 `config.json` reads the same in both), and its
/// architecture.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelConfig {
    /// Number of token ids (256 for the byte tokenizer).
    pub vocab_size: usize,
    /// Longest sequence the model can see (rows of the position table).
    pub block_size: usize,
    /// Number of transformer blocks.
    pub n_layer: usize,
    /// Attention heads per block; must divide `n_embd`.
    pub n_head: usize,
    /// Width of the residual stream C.
    pub n_embd: usize,
    /// Whether Linear and LayerNorm layers have biases (GPT-2: true). A
    /// missing `bias` key in `config.json` means true. The Llama family says
    /// which of its layers have biases in its [`LlamaConfig`] (this is false).
    #[serde(default = "default_bias")]
    pub bias: bool,
    /// GPT-2 when absent; a Llama-family decoder otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub llama: Option<LlamaConfig>,
}

fn default_bias() -> bool {
    true
}

/// Where a Llama-family decoder (Llama 3.2, SmolLM2, Qwen2.5, Qwen3) differs
/// from GPT-2 (docs/spec.md section 8):
///
/// | | GPT-2 | Llama family |
/// |---|---|---|
/// | positions | learned table `wpe` added to the tokens | rotary ([`RopeConfig`]) on q and k in every block |
/// | norms | LayerNorm (weight, bias) | RMSNorm (weight), eps `rms_norm_eps` |
/// | q, k, v | one `c_attn` (C -> 3C), NH heads of C / NH | `q_proj`, `k_proj`, `v_proj`; `n_kv_head` key/value heads shared by groups of query heads, of `head_dim` each |
/// | q, k | as projected | Qwen3: each head RMS-normed (`q_norm`, `k_norm`) before the rotation |
/// | MLP | `c_proj(gelu(c_fc(x)))`, 4C wide | `down_proj(silu(gate_proj(x)) * up_proj(x))`, `intermediate_size` wide |
/// | LM head | tied to `wte` | tied or its own `lm_head` |
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LlamaConfig {
    /// Which transformers class the files are for (names the config it writes).
    pub model_type: LlamaType,
    /// Key/value heads; divides `n_head` (grouped-query attention).
    pub n_kv_head: usize,
    /// Size of each head (Qwen3's is not `n_embd / n_head`).
    pub head_dim: usize,
    /// Width of the MLP's hidden layer.
    pub intermediate_size: usize,
    /// RMSNorm epsilon.
    pub rms_norm_eps: f64,
    /// The rotary embedding's frequencies.
    pub rope: RopeConfig,
    /// Whether `q_proj`, `k_proj`, `v_proj` have biases (Qwen2: yes).
    pub qkv_bias: bool,
    /// Whether `o_proj` has a bias (Llama's `attention_bias`).
    pub o_bias: bool,
    /// Whether the MLP's projections have biases (Llama's `mlp_bias`).
    pub mlp_bias: bool,
    /// Whether each query and key head is RMS-normed before the rotation (Qwen3).
    pub qk_norm: bool,
    /// Whether the LM head is the token table (no `lm_head.weight`).
    pub tie_word_embeddings: bool,
    /// The special token ids of its `config.json` (generation stops at EOS).
    #[serde(default)]
    pub special: SpecialTokens,
}

/// The special token ids a `config.json` names.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SpecialTokens {
    /// `bos_token_id`.
    pub bos: Option<u32>,
    /// `eos_token_id`: none, one, or several (Llama 3's instruct models end a
    /// turn with either of two).
    pub eos: Vec<u32>,
    /// `pad_token_id`.
    pub pad: Option<u32>,
}

/// The transformers model classes of the Llama family this crate reads and writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LlamaType {
    /// `LlamaForCausalLM` (Llama 3.x, SmolLM2).
    Llama,
    /// `Qwen2ForCausalLM` (Qwen2.5).
    Qwen2,
    /// `Qwen3ForCausalLM`.
    Qwen3,
}

impl LlamaType {
    /// The `model_type` of its `config.json`.
    pub fn name(self) -> &'static str {
        match self {
            LlamaType::Llama => "llama",
            LlamaType::Qwen2 => "qwen2",
            LlamaType::Qwen3 => "qwen3",
        }
    }

    /// The type of a `model_type`, if it is one of the family.
    pub fn from_name(name: &str) -> Option<LlamaType> {
        [LlamaType::Llama, LlamaType::Qwen2, LlamaType::Qwen3]
            .into_iter()
            .find(|t| t.name() == name)
    }
}

/// The rotary embedding: `theta` (`rope_theta`) and, for Llama 3.x, the
/// `llama3` rescaling of the low frequencies.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct RopeConfig {
    /// The base of the frequencies, `theta^(-2i/d)`.
    pub theta: f64,
    /// `rope_scaling` / `rope_parameters` of `rope_type` `llama3`.
    pub llama3: Option<Llama3Scaling>,
}

/// The `llama3` rope scaling of Llama 3.1 / 3.2.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Llama3Scaling {
    /// How much slower the lowest frequencies turn.
    pub factor: f64,
    /// Wavelengths above `original_max_position_embeddings / low_freq_factor` are scaled.
    pub low_freq_factor: f64,
    /// Wavelengths below `original_max_position_embeddings / high_freq_factor` are kept.
    pub high_freq_factor: f64,
    /// The context the model was first trained for.
    pub original_max_position_embeddings: usize,
}

/// The most parameters a config may have: 2^34 (about 17 billion, 64 GiB
/// of f32 weights), far past what a CPU trains, yet small enough that every
/// size computed from a valid config fits in a `usize` with room to spare.
pub const MAX_PARAMS: u64 = 1 << 34;

impl ModelConfig {
    /// The number of parameters, or `None` when it overflows a `u64`:
    /// `V C + T C + L (12 C^2 + 13 C) + 2 C` with biases, `V C + T C + L (12 C^2 + 4 C) + C`
    /// without (LayerNorm without a bias has only its weight).
    pub fn num_params(&self) -> Option<u64> {
        if let Some(llama) = &self.llama {
            return self.llama_num_params(llama);
        }
        let [v, t, l, c] =
            [self.vocab_size, self.block_size, self.n_layer, self.n_embd].map(|n| n as u64);
        // Per block: c_attn C x 3C, attn c_proj C x C, c_fc C x 4C, mlp c_proj 4C x C.
        let block_weights = c.checked_mul(c)?.checked_mul(12)?;
        let (block_vectors, final_vectors) = if self.bias {
            // ln_1, ln_2 (2C each), c_attn 3C, attn c_proj C, c_fc 4C, mlp c_proj C.
            (13 * c, 2 * c)
        } else {
            (2 * c, c)
        };
        let per_block = block_weights.checked_add(block_vectors)?;
        v.checked_mul(c)?
            .checked_add(t.checked_mul(c)?)?
            .checked_add(l.checked_mul(per_block)?)?
            .checked_add(final_vectors)
    }

    /// The Llama family's count: `V C` (twice untied) `+ L (C (NH + 2 KV) hd +
    /// NH hd C + 3 C I + 2 C + biases + q/k norms) + C`.
    fn llama_num_params(&self, llama: &LlamaConfig) -> Option<u64> {
        let [v, l, c, nh] =
            [self.vocab_size, self.n_layer, self.n_embd, self.n_head].map(|n| n as u64);
        let [kv, hd, i] =
            [llama.n_kv_head, llama.head_dim, llama.intermediate_size].map(|n| n as u64);
        let q_width = nh.checked_mul(hd)?;
        let kv_width = kv.checked_mul(hd)?;
        let qkv_width = q_width.checked_add(kv_width.checked_mul(2)?)?;
        let mut per_block = c
            .checked_mul(qkv_width)?
            .checked_add(q_width.checked_mul(c)?)?
            .checked_add(c.checked_mul(i)?.checked_mul(3)?)?
            .checked_add(2 * c)?;
        if llama.qkv_bias {
            per_block = per_block.checked_add(qkv_width)?;
        }
        if llama.o_bias {
            per_block = per_block.checked_add(c)?;
        }
        if llama.mlp_bias {
            per_block = per_block.checked_add(i.checked_mul(2)?.checked_add(c)?)?;
        }
        if llama.qk_norm {
            per_block = per_block.checked_add(2 * hd)?;
        }
        let tables = if llama.tie_word_embeddings { 1 } else { 2 };
        v.checked_mul(c)?
            .checked_mul(tables)?
            .checked_add(l.checked_mul(per_block)?)?
            .checked_add(c)
    }

    /// Checks the sizes: all non-zero, `n_embd` divisible by `n_head`, token
    /// ids that fit in a `u32`, and at most [`MAX_PARAMS`] parameters, so that
    /// an absurd config is refused before anything is allocated for it.
    pub fn validate(&self) -> Result<(), String> {
        for (name, value) in [
            ("vocab_size", self.vocab_size),
            ("block_size", self.block_size),
            ("n_layer", self.n_layer),
            ("n_head", self.n_head),
            ("n_embd", self.n_embd),
        ] {
            if value == 0 {
                return Err(format!("config: {name} must be positive"));
            }
        }
        if let Some(llama) = &self.llama {
            for (name, value) in [
                ("num_key_value_heads", llama.n_kv_head),
                ("head_dim", llama.head_dim),
                ("intermediate_size", llama.intermediate_size),
            ] {
                if value == 0 {
                    return Err(format!("config: {name} must be positive"));
                }
            }
            if !self.n_head.is_multiple_of(llama.n_kv_head) {
                return Err(format!(
                    "config: num_attention_heads {} is not divisible by num_key_value_heads {}",
                    self.n_head, llama.n_kv_head
                ));
            }
            if !llama.head_dim.is_multiple_of(2) {
                return Err(format!(
                    "config: head_dim {} is odd (rotary embeddings turn pairs of channels)",
                    llama.head_dim
                ));
            }
            if !(llama.rms_norm_eps > 0.0 && llama.rope.theta > 1.0) {
                return Err(format!(
                    "config: rms_norm_eps {} must be positive and rope_theta {} above 1",
                    llama.rms_norm_eps, llama.rope.theta
                ));
            }
        } else if !self.n_embd.is_multiple_of(self.n_head) {
            return Err(format!(
                "config: n_embd {} is not divisible by n_head {}",
                self.n_embd, self.n_head
            ));
        }
        if self.vocab_size as u64 > u64::from(u32::MAX) + 1 {
            return Err(format!(
                "config: vocab_size {} is more than 2^32 (token ids are 32-bit)",
                self.vocab_size
            ));
        }
        match self.num_params() {
            Some(n) if n <= MAX_PARAMS => Ok(()),
            n => Err(format!(
                "config: {} parameters (vocab_size {}, block_size {}, n_layer {}, n_embd {}) are more than the {} billion this trainer can hold",
                n.map_or_else(|| "over 2^64".to_string(), |n| n.to_string()),
                self.vocab_size,
                self.block_size,
                self.n_layer,
                self.n_embd,
                MAX_PARAMS / 1_000_000_000
            )),
        }
    }

    /// Head size hs: `n_embd / n_head` for GPT-2, `head_dim` for the Llama family.
    pub fn head_size(&self) -> usize {
        match &self.llama {
            Some(llama) => llama.head_dim,
            None => self.n_embd / self.n_head,
        }
    }

    /// The attention's heads: NH query heads, and as many key/value heads
    /// (GPT-2) or `n_kv_head` of them (the Llama family), of [`Self::head_size`].
    pub fn attention_heads(&self) -> AttentionHeads {
        AttentionHeads {
            n_head: self.n_head,
            n_kv_head: self.llama.as_ref().map_or(self.n_head, |l| l.n_kv_head),
            head_dim: self.head_size(),
        }
    }

    /// The named presets: `tiny` (tests and quick demos), `small` (the default
    /// training size), `medium`, and `gpt2` (the 124M GPT-2, for reference),
    /// all GPT-2; and three tiny Llama-family decoders on the byte vocabulary
    /// (tests, and training one from scratch), each with what sets its
    /// family apart: `llama-tiny` (grouped-query attention, `llama3` rope
    /// scaling, an untied head), `qwen2-tiny` (q/k/v biases, tied),
    /// `qwen3-tiny` (q/k norms, a head size other than C / NH).
    /// The GPT-2 presets use the byte vocabulary (256) except `medium` (512)
    /// and `gpt2` (GPT-2's BPE).
    pub fn preset(name: &str) -> Option<ModelConfig> {
        let (vocab_size, block_size, n_layer, n_head, n_embd) = match name {
            "tiny" => (256, 64, 2, 2, 32),
            "small" => (256, 128, 4, 4, 128),
            "medium" => (512, 256, 6, 8, 256),
            "gpt2" => (50257, 1024, 12, 12, 768),
            "llama-tiny" | "qwen2-tiny" | "qwen3-tiny" => return Some(Self::tiny_llama(name)),
            _ => return None,
        };
        Some(ModelConfig {
            vocab_size,
            block_size,
            n_layer,
            n_head,
            n_embd,
            bias: true,
            llama: None,
        })
    }

    fn tiny_llama(name: &str) -> ModelConfig {
        let model_type = match name {
            "llama-tiny" => LlamaType::Llama,
            "qwen2-tiny" => LlamaType::Qwen2,
            _ => LlamaType::Qwen3,
        };
        let llama = LlamaConfig {
            model_type,
            n_kv_head: 2,
            head_dim: if model_type == LlamaType::Qwen3 {
                12
            } else {
                8
            },
            intermediate_size: 88,
            rms_norm_eps: 1e-6,
            rope: RopeConfig {
                theta: 10000.0,
                llama3: (model_type == LlamaType::Llama).then_some(Llama3Scaling {
                    factor: 8.0,
                    low_freq_factor: 1.0,
                    high_freq_factor: 4.0,
                    original_max_position_embeddings: 32,
                }),
            },
            qkv_bias: model_type == LlamaType::Qwen2,
            o_bias: false,
            mlp_bias: false,
            qk_norm: model_type == LlamaType::Qwen3,
            tie_word_embeddings: model_type == LlamaType::Qwen2,
            special: SpecialTokens::default(),
        };
        ModelConfig {
            vocab_size: 256,
            block_size: 64,
            n_layer: 2,
            n_head: 4,
            n_embd: 32,
            bias: false,
            llama: Some(llama),
        }
    }

    /// The names [`ModelConfig::preset`] knows.
    pub const PRESETS: [&'static str; 7] = [
        "tiny",
        "small",
        "medium",
        "gpt2",
        "llama-tiny",
        "qwen2-tiny",
        "qwen3-tiny",
    ];
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presets_are_valid_and_json_round_trips() {
        for name in ModelConfig::PRESETS {
            let c = ModelConfig::preset(name).unwrap();
            c.validate().unwrap();
            let json = serde_json::to_string(&c).unwrap();
            assert_eq!(serde_json::from_str::<ModelConfig>(&json).unwrap(), c);
        }
        assert!(ModelConfig::preset("huge").is_none());
        let no_bias: ModelConfig = serde_json::from_str(
            r#"{"vocab_size": 3, "block_size": 4, "n_layer": 1, "n_head": 2, "n_embd": 6}"#,
        )
        .unwrap();
        assert!(no_bias.bias);
        let bad = ModelConfig {
            n_head: 4,
            ..no_bias
        };
        assert!(bad.validate().unwrap_err().contains("divisible"));
    }

    #[test]
    fn absurd_sizes_are_refused_by_their_parameter_count() {
        let small = ModelConfig::preset("small").unwrap();
        for (field, value) in [
            ("vocab_size", 10_000_000_000usize),
            ("n_embd", 10_000_000),
            ("block_size", 1 << 40),
            ("n_layer", 100_000_000),
            ("n_layer", usize::MAX),
        ] {
            let mut config = small.clone();
            match field {
                "vocab_size" => config.vocab_size = value,
                "n_embd" => config.n_embd = value,
                "block_size" => config.block_size = value,
                _ => config.n_layer = value,
            }
            let err = config.validate().unwrap_err();
            assert!(
                err.contains("parameters") || err.contains("32-bit"),
                "{field} {value}: {err}"
            );
        }
        for name in ModelConfig::PRESETS {
            for bias in [true, false] {
                let config = ModelConfig {
                    bias,
                    ..ModelConfig::preset(name).unwrap()
                };
                let counted: usize = crate::params::param_specs(&config)
                    .iter()
                    .map(|(_, shape)| shape.iter().product::<usize>())
                    .sum();
                assert_eq!(
                    config.num_params(),
                    Some(counted as u64),
                    "{name} bias {bias}"
                );
            }
        }
        // GPT-2 124M: the well-known count (with the tied head counted once).
        let gpt2 = ModelConfig::preset("gpt2").unwrap();
        assert_eq!(gpt2.num_params(), Some(124_439_808));
    }
}
