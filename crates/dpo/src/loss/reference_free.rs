//! The reference-free losses: SimPO (TRL's `CPOTrainer`, `loss_type="simpo"`)
//! and ORPO's odds-ratio term (TRL's `ORPOTrainer`). Both score the
//! policy's per-token mean log-probs `u_c = pi_c / n_c`, `u_r = pi_r / n_r`
//! (the log of the geometric-mean token probability); no reference model.
//! ORPO's NLL term is in [`super::nll`].

use autograd::ops::elementwise::{logsigmoid, sigmoid};

use super::{Pair, PairLoss};

/// simpo (SimPO, Meng et al. 2024): the sigmoid loss of the per-token mean
/// margin minus a target margin `gamma` (with label smoothing `e`, as TRL's
/// CPOTrainer):
///
/// ```text
/// z    = beta (u_c - u_r) - gamma
/// loss = -(1-e) ls(z) - e ls(-z)
/// dloss/dpi_c = beta (-(1-e) s(-z) + e s(z)) / n_c,   dloss/dpi_r = -beta (...) / n_r
/// ```
pub fn simpo_loss(pair: &Pair, beta: f64, gamma: f64, e: f64) -> PairLoss {
    let (u_c, u_r) = (
        pair.policy_chosen / pair.n_chosen,
        pair.policy_rejected / pair.n_rejected,
    );
    let z = beta * (u_c - u_r) - gamma;
    let loss = -(1.0 - e) * logsigmoid(z) - e * logsigmoid(-z);
    let dloss_du = beta * (-(1.0 - e) * sigmoid(-z) + e * sigmoid(z));
    PairLoss {
        loss,
        dchosen: dloss_du / pair.n_chosen,
        drejected: -dloss_du / pair.n_rejected,
    }
}

/// `log(1 - exp(x))` for `x < 0`, without cancellation: `log1p(-exp(x))`
/// far from 0, `log(-expm1(x))` near it (the branch at `-ln 2` of Mächler
/// 2012, as TRL's `log1mexp`).
pub fn log1mexp(x: f64) -> f64 {
    if x < -std::f64::consts::LN_2 {
        (-x.exp()).ln_1p()
    } else {
        (-x.exp_m1()).ln()
    }
}

/// ORPO's log odds ratio of a pair, from the per-token mean log-probs:
/// `log(odds(y_c) / odds(y_r))`, `odds(y) = P(y) / (1 - P(y))`, `P(y) = exp(u)`:
///
/// ```text
/// log_odds = (u_c - u_r) - (log(1 - exp(u_c)) - log(1 - exp(u_r)))
/// ```
pub fn orpo_log_odds(pair: &Pair) -> f64 {
    let (u_c, u_r) = (
        pair.policy_chosen / pair.n_chosen,
        pair.policy_rejected / pair.n_rejected,
    );
    (u_c - u_r) - (log1mexp(u_c) - log1mexp(u_r))
}

/// orpo, the odds-ratio term (ORPO, Hong et al. 2024, Eqs. 4-7), `lambda` = `beta`:
///
/// ```text
/// loss = -beta ls(log_odds)
/// d log_odds / d u_c = 1 + exp(u_c)/(1 - exp(u_c)) = 1/(1 - exp(u_c)),   d/d u_r = -1/(1 - exp(u_r))
/// dloss/dpi_c = -beta s(-log_odds) / (1 - exp(u_c)) / n_c
/// dloss/dpi_r =  beta s(-log_odds) / (1 - exp(u_r)) / n_r
/// ```
///
/// The per-token means must be below 0 (a response of probability 1 has
/// infinite odds); `1 - exp(u) = -expm1(u)`.
pub fn orpo_odds_ratio_loss(pair: &Pair, beta: f64) -> PairLoss {
    let (u_c, u_r) = (
        pair.policy_chosen / pair.n_chosen,
        pair.policy_rejected / pair.n_rejected,
    );
    let log_odds = orpo_log_odds(pair);
    let dloss_dlog_odds = -beta * sigmoid(-log_odds);
    PairLoss {
        loss: -beta * logsigmoid(log_odds),
        dchosen: dloss_dlog_odds / -u_c.exp_m1() / pair.n_chosen,
        drejected: -dloss_dlog_odds / -u_r.exp_m1() / pair.n_rejected,
    }
}
