//! The model's hyper-parameters: nanoGPT's `GPTConfig`, stored as `config.json`.

use serde::{Deserialize, Serialize};

/// Sizes of a GPT-2 / nanoGPT decoder (docs/spec.md section 1; field names as in
/// nanoGPT's `GPTConfig`, so a `config.json` reads the same in both).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct GptConfig {
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

impl GptConfig {
    /// Checks the sizes: all non-zero, `n_embd` divisible by `n_head`.
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
        Ok(())
    }

    /// Head size hs = n_embd / n_head.
    pub fn head_size(&self) -> usize {
        self.n_embd / self.n_head
    }

    /// The named presets: `tiny` (tests and quick demos), `small` (the default
    /// training size), `medium`, and `gpt2` (the 124M GPT-2, for reference).
    /// All use the byte vocabulary (256) except `medium` (512) and `gpt2` (GPT-2's BPE).
    pub fn preset(name: &str) -> Option<GptConfig> {
        let (vocab_size, block_size, n_layer, n_head, n_embd) = match name {
            "tiny" => (256, 64, 2, 2, 32),
            "small" => (256, 128, 4, 4, 128),
            "medium" => (512, 256, 6, 8, 256),
            "gpt2" => (50257, 1024, 12, 12, 768),
            _ => return None,
        };
        Some(GptConfig {
            vocab_size,
            block_size,
            n_layer,
            n_head,
            n_embd,
            bias: true,
        })
    }

    /// The names [`GptConfig::preset`] knows.
    pub const PRESETS: [&'static str; 4] = ["tiny", "small", "medium", "gpt2"];
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presets_are_valid_and_json_round_trips() {
        for name in GptConfig::PRESETS {
            let c = GptConfig::preset(name).unwrap();
            c.validate().unwrap();
            let json = serde_json::to_string(&c).unwrap();
            assert_eq!(serde_json::from_str::<GptConfig>(&json).unwrap(), c);
        }
        assert!(GptConfig::preset("huge").is_none());
        let no_bias: GptConfig = serde_json::from_str(
            r#"{"vocab_size": 3, "block_size": 4, "n_layer": 1, "n_head": 2, "n_embd": 6}"#,
        )
        .unwrap();
        assert!(no_bias.bias);
        let bad = GptConfig {
            n_head: 4,
            ..no_bias
        };
        assert!(bad.validate().unwrap_err().contains("divisible"));
    }
}
