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
use crate::data::{scored_tokens, PreferenceRow};

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

/// What the loss of a batch of pairs needs besides the policy's log-probs:
/// the reference's log-probs and the scored-token counts.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PairContext {
    /// Reference log-probs `(chosen, rejected)` of each pair (B); zeros when reference-free.
    pub reference: Vec<(f64, f64)>,
    /// Scored tokens of each chosen response (B).
    pub n_chosen: Vec<usize>,
    /// Scored tokens of each rejected response (B).
    pub n_rejected: Vec<usize>,
    /// ORPO only (else empty): prompt tokens scored in each chosen sequence,
    /// every one but the first (B).
    pub n_prompt: Vec<usize>,
}

impl PairContext {
    /// The context of `rows` with their reference log-probs; the prompt
    /// counts when `with_prompts` (ORPO).
    pub fn of_rows(rows: &[PreferenceRow], reference: &[(f64, f64)], with_prompts: bool) -> Self {
        assert_eq!(
            rows.len(),
            reference.len(),
            "PairContext: one reference pair per row"
        );
        PairContext {
            reference: reference.to_vec(),
            n_chosen: rows
                .iter()
                .map(|r| scored_tokens(&r.prompt, &r.chosen))
                .collect(),
            n_rejected: rows
                .iter()
                .map(|r| scored_tokens(&r.prompt, &r.rejected))
                .collect(),
            n_prompt: if with_prompts {
                rows.iter()
                    .map(|r| r.prompt.len().saturating_sub(1))
                    .collect()
            } else {
                Vec::new()
            },
        }
    }

    /// From the batch layout `[chosen..., rejected...]` of the reference
    /// log-probs and the scored-token counts (2B each); no prompts.
    pub fn from_flat(reference: &[f64], scored: &[usize]) -> Self {
        let n = reference.len();
        assert!(
            n.is_multiple_of(2) && scored.len() == n,
            "PairContext: {n} reference log-probs and {} counts do not match (expected 2B each)",
            scored.len()
        );
        let b = n / 2;
        PairContext {
            reference: (0..b).map(|i| (reference[i], reference[b + i])).collect(),
            n_chosen: scored[..b].to_vec(),
            n_rejected: scored[b..].to_vec(),
            n_prompt: Vec::new(),
        }
    }

    /// The full log-probs of the batch: this context with the policy's
    /// `(chosen, rejected)` log-probs and, for ORPO, its prompts' (else empty).
    pub fn with_policy(&self, policy: &[(f64, f64)], prompts: &[f64]) -> PairLogps {
        assert_eq!(
            policy.len(),
            self.reference.len(),
            "PairContext: one policy pair per reference pair"
        );
        PairLogps {
            policy_chosen: policy.iter().map(|p| p.0).collect(),
            policy_rejected: policy.iter().map(|p| p.1).collect(),
            ref_chosen: self.reference.iter().map(|r| r.0).collect(),
            ref_rejected: self.reference.iter().map(|r| r.1).collect(),
            n_chosen: self.n_chosen.clone(),
            n_rejected: self.n_rejected.clone(),
            prompt_chosen: prompts.to_vec(),
            n_prompt: self.n_prompt.clone(),
        }
    }
}

impl PairLogps {
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

/// Where bco_pair's reward shift `delta` of a batch comes from.
#[derive(Debug)]
pub enum BcoShift<'a> {
    /// The batch's own mean reward (`dpo eval`, a run's first batch).
    BatchMean,
    /// The running mean of training, after this batch's mean reward is
    /// added (TRL updates before it reads).
    Running(&'a mut RunningMean),
    /// A given value (the held-out metrics read training's running mean).
    Fixed(f64),
}

/// bco_pair's reward shift for a batch with log-probs `logps`; 0 when the
/// loss does not shift (no bco_pair, or `bco_running_mean` off), except a
/// [`BcoShift::Fixed`] value, which is taken as it is.
pub fn bco_shift(config: &DpoLossConfig, logps: &PairLogps, shift: BcoShift<'_>) -> f64 {
    match shift {
        BcoShift::Fixed(delta) => delta,
        _ if !config.shifts_bco() => 0.0,
        BcoShift::BatchMean => logps.mean_reward(config.beta),
        BcoShift::Running(running) => running.update(logps.mean_reward(config.beta)),
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

/// The loss of a batch of pairs as one op on the tape. It reads the policy's
/// log-probs off the tape itself: `policy_logps` (2B) =
/// `[chosen..., rejected...]`, and ORPO's chosen prompts `prompt_logps` (B);
/// `context` has the rest. bco_pair's shift is [`bco_shift`] of `shift`. Returns the loss, the batch's log-probs in f64 (for the
/// metrics) and the loss values.
///
/// ```text
/// forward:  loss = sum_k w_k L_k(policy, context)           (loss_values)
/// backward: dpolicy_i = dloss * dL/dpi_i,  dprompt_i = dloss * dL/dp_i
/// ```
pub fn preference_loss<T: Float>(
    tape: &Tape<T>,
    policy_logps: &Var<T>,
    prompt_logps: Option<&Var<T>>,
    context: &PairContext,
    shift: BcoShift<'_>,
    config: &DpoLossConfig,
) -> (Var<T>, PairLogps, LossValues) {
    let b = context.reference.len();
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
    let values_of = |v: &Var<T>| v.value().iter().map(|x| x.as_f64()).collect::<Vec<f64>>();
    let flat = values_of(policy_logps);
    let policy: Vec<(f64, f64)> = (0..b).map(|i| (flat[i], flat[b + i])).collect();
    let prompts = prompt_logps.map(values_of).unwrap_or_default();
    let logps = context.with_policy(&policy, &prompts);
    let delta = bco_shift(config, &logps, shift);
    let values = loss_values(config, &logps, delta);
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
    (var, logps, values)
}

/// [`preference_loss`] of a batch given flat: `reference` and `scored` in the
/// layout `[chosen..., rejected...]` (2B each), no prompts, bco_pair's shift
/// the batch's own mean reward. The form the tests and gradient checks use.
pub fn dpo_loss<T: Float>(
    tape: &Tape<T>,
    policy_logps: &Var<T>,
    reference: &[f64],
    scored: &[usize],
    config: &DpoLossConfig,
) -> Var<T> {
    let context = PairContext::from_flat(reference, scored);
    preference_loss(
        tape,
        policy_logps,
        None,
        &context,
        BcoShift::BatchMean,
        config,
    )
    .0
}
