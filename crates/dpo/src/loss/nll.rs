//! The negative log-likelihood terms: the mean token NLL of the chosen
//! sequences of the whole batch (one number per batch, as PyTorch's
//! `cross_entropy` over all their tokens, not a mean of per-row means).
//!
//! ```text
//! sft:       nll = -sum_i pi_c_i / sum_i n_c_i                  the chosen responses (TRL DPOTrainer's "sft"; --rpo-alpha)
//! orpo:      nll = -sum_i (p_i + pi_c_i) / sum_i (m_i + n_c_i)  prompt + chosen response (TRL's ORPOTrainer)
//! dnll/dpi_c_i = dnll/dp_i = -1 / (the token count of the denominator)
//! ```
//!
//! with `p_i`, `m_i` the log-prob and the scored-token count of the prompt
//! tokens of chosen sequence `i` (every prompt token but the first, which
//! nothing predicts).

/// The NLL of the chosen responses and `dnll/dpi_c` (the same for every pair).
pub fn sft_nll(policy_chosen: &[f64], n_chosen: &[usize]) -> (f64, f64) {
    let tokens: usize = n_chosen.iter().sum();
    let total: f64 = policy_chosen.iter().sum();
    (-total / tokens as f64, -1.0 / tokens as f64)
}

/// The NLL of the whole chosen sequences (prompt and response) and its
/// derivative with respect to each `pi_c_i` and each `p_i` (the same for all).
pub fn orpo_nll(
    policy_chosen: &[f64],
    n_chosen: &[usize],
    prompt_chosen: &[f64],
    n_prompt: &[usize],
) -> (f64, f64) {
    let tokens: usize = n_chosen.iter().chain(n_prompt).sum();
    let total: f64 = policy_chosen.iter().chain(prompt_chosen).sum();
    (-total / tokens as f64, -1.0 / tokens as f64)
}
