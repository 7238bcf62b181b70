//! How the matrix products of a step are computed: [`Precision`].
//!
//! In [`Precision::Bf16`] the GEMMs of `linear`, `matmul` and the LM head
//! round their two inputs to bfloat16 and accumulate in f32 (the
//! `torch.autocast(dtype=torch.bfloat16)` recipe on CPU); everything else
//! (master weights, gradients, the optimizer, LayerNorm, softmax, GELU, the
//! log-prob kernels, the losses) stays f32. docs/bf16.md has the details.
//!
//! The precision belongs to a [`crate::Tape`] ([`crate::Tape::with_precision`]):
//! the ops read it when they run, forward and backward. `f64` tapes ignore
//! it, so gradient checks stay exact.

use std::fmt;
use std::str::FromStr;

/// The arithmetic of the GEMMs on a tape.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hash)]
pub enum Precision {
    /// f32 inputs, f32 accumulation (matrixmultiply's sgemm).
    #[default]
    F32,
    /// bf16 inputs (round-to-nearest-even from f32), f32 accumulation
    /// ([`crate::kernels::bf16`]).
    Bf16,
}

impl Precision {
    /// `"f32"` or `"bf16"`, as on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Precision::F32 => "f32",
            Precision::Bf16 => "bf16",
        }
    }
}

impl fmt::Display for Precision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Precision {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "f32" | "fp32" => Ok(Precision::F32),
            "bf16" => Ok(Precision::Bf16),
            other => Err(format!(
                "unknown precision {other:?} (expected f32 or bf16)"
            )),
        }
    }
}
