//! Fused kernels of DPO: sequence log-probabilities.
//!
//! DPO needs, for every sequence, one number: the summed log-probability of
//! its response tokens. Computing `log_softmax` over the whole `[B, T, V]`
//! logits and then gathering one entry per row materialises a tensor as large
//! as the logits (and PyTorch keeps several for the backward). These kernels
//! compute the same sums in one pass per row with a running max and
//! log-sum-exp, and write the gradient straight into one buffer.

pub mod lm_head_logprobs;
pub mod sequence_logprobs;

pub use lm_head_logprobs::LmHeadLogprobs;
pub use sequence_logprobs::{sequence_logprobs_backward, sequence_logprobs_forward};
