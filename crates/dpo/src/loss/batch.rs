//! The loss of a batch: the requested terms, weighted and summed, with the
//! gradient with respect to every policy log-prob; and the fused op that
//! puts it on the tape.
//!
//! ```text
//! loss = sum_k w_k L_k,   L_k = mean_i loss_k(pair i)     (sft and orpo's NLL: one number per batch)
//! dloss/dpi_c_i = sum_k w_k dL_k/dpi_c_i,  the same for pi_r_i (and ORPO's prompt log-probs)
//! ```

use autograd::ops::elementwise::logsigmoid;
use autograd::{Float, Tape, Tensor, Var};
use ndarray::IxDyn;
use serde::{Deserialize, Serialize};

use super::margin::{
    discopop_loss, exo_pair_loss, hinge_loss, ipo_loss, robust_loss, sigmoid_loss,
    sigmoid_norm_loss,
};
use super::nll::{orpo_nll, sft_nll};
use super::reference_free::{orpo_log_odds, orpo_odds_ratio_loss, simpo_loss};
use super::separate::{apo_down_loss, apo_zero_loss, bco_pair_loss, nca_pair_loss, sppo_hard_loss};
use super::sorted::{aot_losses, aot_unpaired_losses};
use super::{DpoLossConfig, LossType, Pair, PairLoss};

/// The log-probs of one batch of pairs, in f64.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PairLogps {
    /// Policy log-probs of the chosen responses (B).
    pub policy_chosen: Vec<f64>,
    /// Policy log-probs of the rejected responses (B).
    pub policy_rejected: Vec<f64>,
    /// Reference log-probs of the chosen responses (B); zeros when reference-free.
    pub ref_chosen: Vec<f64>,
    /// Reference log-probs of the rejected responses (B).
    pub ref_rejected: Vec<f64>,
    /// Scored tokens of each chosen response (B).
    pub n_chosen: Vec<usize>,
    /// Scored tokens of each rejected response (B).
    pub n_rejected: Vec<usize>,
    /// ORPO only (else empty): policy log-probs of the prompt tokens of each
    /// chosen sequence, every prompt token but the first (B).
    pub prompt_chosen: Vec<f64>,
    /// ORPO only: how many prompt tokens `prompt_chosen` sums (B).
    pub n_prompt: Vec<usize>,
}

impl PairLogps {
    /// From the batch layout `[chosen..., rejected...]` of the policy and
    /// reference log-probs and the scored-token counts (2B each); no prompt log-probs.
    pub fn from_flat(policy: &[f64], reference: &[f64], scored: &[usize]) -> Self {
        let n = policy.len();
        assert!(
            n.is_multiple_of(2) && reference.len() == n && scored.len() == n,
            "PairLogps: {n} policy log-probs, {} reference log-probs and {} counts do not match (expected 2B each)",
            reference.len(),
            scored.len()
        );
        let b = n / 2;
        PairLogps {
            policy_chosen: policy[..b].to_vec(),
            policy_rejected: policy[b..].to_vec(),
            ref_chosen: reference[..b].to_vec(),
            ref_rejected: reference[b..].to_vec(),
            n_chosen: scored[..b].to_vec(),
            n_rejected: scored[b..].to_vec(),
            prompt_chosen: Vec::new(),
            n_prompt: Vec::new(),
        }
    }

    /// B: the number of pairs.
    pub fn num_pairs(&self) -> usize {
        self.policy_chosen.len()
    }

    /// Pair `i`.
    pub fn pair(&self, i: usize) -> Pair {
        Pair {
            policy_chosen: self.policy_chosen[i],
            policy_rejected: self.policy_rejected[i],
            ref_chosen: self.ref_chosen[i],
            ref_rejected: self.ref_rejected[i],
            n_chosen: self.n_chosen[i] as f64,
            n_rejected: self.n_rejected[i] as f64,
        }
    }

    /// The mean of the batch's 2B rewards `beta (pi - ref)`, chosen and
    /// rejected together: what bco_pair's running mean averages.
    pub fn mean_reward(&self, beta: f64) -> f64 {
        let b = self.num_pairs();
        (0..b)
            .map(|i| {
                let p = self.pair(i);
                beta * (p.logratio_chosen() + p.logratio_rejected())
            })
            .sum::<f64>()
            / (2 * b) as f64
    }
}

/// bco_pair's running mean of the rewards: the mean of the batches' mean
/// rewards so far (TRL's `RunningMoments`, updated with one number per
/// batch). Part of the trainer state, so that `--resume` continues it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct RunningMean {
    /// The mean so far.
    pub mean: f64,
    /// Batches averaged.
    pub count: u64,
}

impl RunningMean {
    /// Adds one batch's mean reward; returns the mean including it (the
    /// shift `delta` of that batch: TRL updates before it reads).
    pub fn update(&mut self, batch_mean: f64) -> f64 {
        self.count += 1;
        self.mean += (batch_mean - self.mean) / self.count as f64;
        self.mean
    }
}

/// The loss of a batch, its gradient and the metrics only some losses have.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LossValues {
    /// The batch loss.
    pub loss: f64,
    /// `dloss/dpi` in the batch layout `[chosen..., rejected...]` (2B).
    pub dpolicy: Vec<f64>,
    /// `dloss/dp_i` of ORPO's prompt log-probs (B); empty otherwise.
    pub dprompt: Vec<f64>,
    /// The NLL term (sft, orpo), before its weight.
    pub nll_loss: Option<f64>,
    /// ORPO: mean over pairs of `logsigmoid(log_odds)`.
    pub log_odds_ratio: Option<f64>,
    /// ORPO: mean over pairs of `log_odds`.
    pub log_odds_chosen: Option<f64>,
}

/// The per-pair losses of `loss_type` (every type but `sft`).
fn pair_losses(
    config: &DpoLossConfig,
    loss_type: LossType,
    pairs: &[Pair],
    bco_delta: f64,
) -> Vec<PairLoss> {
    let (beta, e) = (config.beta, config.label_smoothing);
    let each = |f: &dyn Fn(&Pair) -> PairLoss| pairs.iter().map(f).collect();
    match loss_type {
        LossType::Sigmoid => each(&|p| sigmoid_loss(p, beta, e)),
        LossType::Hinge => each(&|p| hinge_loss(p, beta)),
        LossType::Ipo => each(&|p| ipo_loss(p, beta)),
        LossType::Robust => each(&|p| robust_loss(p, beta, e)),
        LossType::ExoPair => each(&|p| exo_pair_loss(p, beta, e)),
        LossType::Discopop => each(&|p| discopop_loss(p, beta, config.discopop_tau)),
        LossType::SigmoidNorm => each(&|p| sigmoid_norm_loss(p, beta)),
        LossType::NcaPair => each(&|p| nca_pair_loss(p, beta)),
        LossType::BcoPair => each(&|p| bco_pair_loss(p, beta, bco_delta)),
        LossType::SppoHard => each(&|p| sppo_hard_loss(p, beta)),
        LossType::ApoZero => each(&|p| apo_zero_loss(p, beta)),
        LossType::ApoDown => each(&|p| apo_down_loss(p, beta)),
        LossType::Aot => aot_losses(pairs, beta, e),
        LossType::AotUnpaired => aot_unpaired_losses(pairs, beta, e),
        LossType::Simpo => each(&|p| simpo_loss(p, beta, config.simpo_gamma, e)),
        LossType::Orpo => each(&|p| orpo_odds_ratio_loss(p, beta)),
        LossType::Sft => unreachable!("sft is a batch term"),
    }
}

/// The loss of a batch and its gradient. `bco_delta` is bco_pair's reward
/// shift for this batch (see [`RunningMean`]); other losses ignore it.
pub fn loss_values(config: &DpoLossConfig, logps: &PairLogps, bco_delta: f64) -> LossValues {
    let b = logps.num_pairs();
    assert!(b > 0, "loss_values: no pairs");
    let pairs: Vec<Pair> = (0..b).map(|i| logps.pair(i)).collect();
    let mut out = LossValues {
        dpolicy: vec![0.0; 2 * b],
        ..Default::default()
    };
    for term in &config.losses {
        let w = term.weight;
        if term.loss_type == LossType::Sft {
            let (nll, dnll) = sft_nll(&logps.policy_chosen, &logps.n_chosen);
            out.loss += w * nll;
            out.dpolicy[..b].iter_mut().for_each(|d| *d += w * dnll);
            out.nll_loss = Some(nll);
            continue;
        }
        let per_pair = pair_losses(config, term.loss_type, &pairs, bco_delta);
        let mean = per_pair.iter().map(|l| l.loss).sum::<f64>() / b as f64;
        out.loss += w * mean;
        for (i, l) in per_pair.iter().enumerate() {
            out.dpolicy[i] += w * l.dchosen / b as f64;
            out.dpolicy[b + i] += w * l.drejected / b as f64;
        }
        if term.loss_type == LossType::Orpo {
            assert_eq!(
                (logps.prompt_chosen.len(), logps.n_prompt.len()),
                (b, b),
                "loss_values: orpo needs the prompt log-probs of the chosen sequences"
            );
            let (nll, dnll) = orpo_nll(
                &logps.policy_chosen,
                &logps.n_chosen,
                &logps.prompt_chosen,
                &logps.n_prompt,
            );
            out.loss += w * nll;
            out.dpolicy[..b].iter_mut().for_each(|d| *d += w * dnll);
            out.dprompt = vec![w * dnll; b];
            out.nll_loss = Some(nll);
            let log_odds: Vec<f64> = pairs.iter().map(orpo_log_odds).collect();
            out.log_odds_ratio =
                Some(log_odds.iter().map(|&z| logsigmoid(z)).sum::<f64>() / b as f64);
            out.log_odds_chosen = Some(log_odds.iter().sum::<f64>() / b as f64);
        }
    }
    out
}

/// The batch loss as one op on the tape.
///
/// policy_logps: (2B) = [chosen..., rejected...] summed response log-probs;
/// prompt_logps: (B), ORPO only, the chosen sequences' prompt log-probs;
/// `logps` their values (with the reference log-probs and the counts).
/// Returns the scalar loss and what [`loss_values`] computed.
pub fn preference_loss<T: Float>(
    tape: &Tape<T>,
    policy_logps: &Var<T>,
    prompt_logps: Option<&Var<T>>,
    logps: &PairLogps,
    bco_delta: f64,
    config: &DpoLossConfig,
) -> (Var<T>, LossValues) {
    let b = logps.num_pairs();
    assert_eq!(
        policy_logps.value().len(),
        2 * b,
        "preference_loss: policy log-probs {:?} for {b} pairs",
        policy_logps.shape()
    );
    assert_eq!(
        prompt_logps.is_some(),
        config.needs_prompt_logps(),
        "preference_loss: the prompt log-probs are needed by orpo and only by it"
    );
    let values = loss_values(config, logps, bco_delta);
    let loss = Tensor::from_elem(IxDyn(&[]), T::cast(values.loss));
    let (dpolicy, dprompt) = (values.dpolicy.clone(), values.dprompt.clone());
    let scaled = move |g: f64, d: &[f64]| {
        let grad = d.iter().map(|&v| T::cast(g * v)).collect();
        Some(Tensor::from_shape_vec(IxDyn(&[d.len()]), grad).unwrap())
    };
    let inputs: Vec<&Var<T>> = std::iter::once(policy_logps).chain(prompt_logps).collect();
    let var = tape.record("preference_loss", loss, &inputs, move |dloss| {
        let g = dloss.iter().next().unwrap().as_f64();
        let mut grads = vec![scaled(g, &dpolicy)];
        if !dprompt.is_empty() {
            grads.push(scaled(g, &dprompt));
        }
        grads
    });
    (var, values)
}

/// The loss of a batch of pairs as one op on the tape, for the losses that
/// need no prompt log-probs (all but orpo): policy_logps (2B) =
/// [chosen..., rejected...]; `reference` has the same layout (all zeros
/// reference-free); `scored` the scored tokens per sequence (2B).
/// bco_pair's shift is this batch's mean reward (a run's first batch).
pub fn dpo_loss<T: Float>(
    tape: &Tape<T>,
    policy_logps: &Var<T>,
    reference: &[f64],
    scored: &[usize],
    config: &DpoLossConfig,
) -> Var<T> {
    let policy: Vec<f64> = policy_logps.value().iter().map(|v| v.as_f64()).collect();
    let logps = PairLogps::from_flat(&policy, reference, scored);
    let delta = if config.bco_running_mean {
        logps.mean_reward(config.beta)
    } else {
        0.0
    };
    preference_loss(tape, policy_logps, None, &logps, delta, config).0
}
