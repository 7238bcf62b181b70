//! Causal multi-head self-attention kernels:
//!
//! - [`blocked`]: what the model runs (`Tape::causal_attention`,
//!   `Tape::segment_attention`), forward and backward, optionally with a
//!   [`KeyGap`] per sequence (prefix sharing);
//! - [`cached`]: generation, forward only: the newest queries of one sequence
//!   against all its keys and values so far (kept by `transformer::KvCache`).
//!
//! Both read the output of the `c_attn` projection, `qkv: (B, T, 3C)`,
//! holding q, k and v in that order along the last axis: head `h` of q is
//! the column block `h*hs .. (h+1)*hs` (hs = C / NH), of k the same block
//! shifted by C, of v shifted by 2C.

pub mod blocked;
pub mod cached;

pub use blocked::KeyGap;

/// The sizes of one attention call.
#[derive(Debug, Clone, Copy)]
pub struct AttentionDims {
    /// Batch size B.
    pub b: usize,
    /// Sequence length T.
    pub t: usize,
    /// Channels C (= NH * hs).
    pub c: usize,
    /// Number of heads NH.
    pub nh: usize,
}

impl AttentionDims {
    /// Head size hs = C / NH.
    pub fn hs(&self) -> usize {
        self.c / self.nh
    }
}
