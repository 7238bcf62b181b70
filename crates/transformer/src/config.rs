//! The model's hyper-parameters: nanoGPT's `GPTConfig`, stored as `config.json`.

use serde::{Deserialize, Serialize};

/// Sizes of a GPT-2 / nanoGPT decoder (docs/spec.md section 1; field names as in
/// nanoGPT's `GPTConfig`, so a `config.json` reads the same in both).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
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
    /// missing `bias` key in `config.json` means true.
    #[serde(default = "default_bias")]
    pub bias: bool,
}

fn default_bias() -> bool {
    true
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
        if !self.n_embd.is_multiple_of(self.n_head) {
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

    /// Head size hs = n_embd / n_head.
    pub fn head_size(&self) -> usize {
        self.n_embd / self.n_head
    }

    /// The named presets: `tiny` (tests and quick demos), `small` (the default
    /// training size), `medium`, and `gpt2` (the 124M GPT-2, for reference).
    /// All use the byte vocabulary (256) except `medium` (512) and `gpt2` (GPT-2's BPE).
    pub fn preset(name: &str) -> Option<ModelConfig> {
        let (vocab_size, block_size, n_layer, n_head, n_embd) = match name {
            "tiny" => (256, 64, 2, 2, 32),
            "small" => (256, 128, 4, 4, 128),
            "medium" => (512, 256, 6, 8, 256),
            "gpt2" => (50257, 1024, 12, 12, 768),
            _ => return None,
        };
        Some(ModelConfig {
            vocab_size,
            block_size,
            n_layer,
            n_head,
            n_embd,
            bias: true,
        })
    }

    /// The names [`ModelConfig::preset`] knows.
    pub const PRESETS: [&'static str; 4] = ["tiny", "small", "medium", "gpt2"];
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
            let mut config = small;
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
