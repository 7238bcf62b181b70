//! Fused kernels of DPO: sequence log-probabilities.
//!
//! DPO needs, for every sequence, one number: the summed log-probability of
//! its response tokens. Computing `log_softmax` over the whole `[B, T, V]`
//! logits and then gathering one entry per row materialises a tensor as large
//! as the logits (and PyTorch keeps several for the backward). These kernels
//! compute the same sums in one pass per row with a running max and
//! log-sum-exp, and write the gradient straight into one buffer.
//!
//! As in `autograd::kernels`, each kernel is a pair of slice-level
//! `*_forward` / `*_backward` functions, and its op only wires them to the
//! tape:
//!
//! | module | kernels | op |
//! |---|---|---|
//! | [`sequence_logprobs`] | log-probs of the targets from logits `(S, T, V)` | [`sequence_logprobs::sequence_logprobs`] |
//! | [`lm_head_logprobs`] | the LM head (`h @ wte^T`) fused with them, chunked over the vocabulary | [`LmHeadLogprobs::apply`] |

pub mod lm_head_logprobs;
pub mod sequence_logprobs;

pub use lm_head_logprobs::{
    lm_head_logprobs_backward, lm_head_logprobs_forward, LmHeadDims, LmHeadLogprobs,
};
pub use sequence_logprobs::{sequence_logprobs_backward, sequence_logprobs_forward};
