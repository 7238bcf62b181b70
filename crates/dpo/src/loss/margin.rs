//! Losses of the implicit reward margin `d = (pi_c - ref_c) - (pi_r - ref_r)`
//! (or, for ipo and sigmoid_norm, of its per-token form
//! `d' = (pi_c - ref_c)/n_c - (pi_r - ref_r)/n_r`).
//!
//! Each takes `z = beta d` (or `d`, `d'`) and returns the loss and
//! `dloss/dd`; `dloss/dpi_c = dloss/dd`, `dloss/dpi_r = -dloss/dd`. With
//! `ls = logsigmoid`, `s = sigmoid`: `ls'(z) = s(-z)`, `s'(z) = s(z) s(-z)`.

use autograd::ops::elementwise::{logsigmoid, sigmoid};

use super::{Pair, PairLoss};

/// sigmoid (DPO; cDPO with `e > 0`):
///
/// ```text
/// loss    = -(1-e) ls(beta d) - e ls(-beta d)
/// dloss/dd = beta (-(1-e) s(-beta d) + e s(beta d))
/// ```
pub fn sigmoid_loss(pair: &Pair, beta: f64, e: f64) -> PairLoss {
    let z = beta * (pair.logratio_chosen() - pair.logratio_rejected());
    let loss = -(1.0 - e) * logsigmoid(z) - e * logsigmoid(-z);
    let dloss_dz = -(1.0 - e) * sigmoid(-z) + e * sigmoid(z);
    PairLoss::of_margin(loss, beta * dloss_dz)
}

/// hinge (SLiC): `loss = relu(1 - beta d)`, `dloss/dd = -beta` where `beta d < 1`, else 0.
pub fn hinge_loss(pair: &Pair, beta: f64) -> PairLoss {
    let slack = 1.0 - beta * (pair.logratio_chosen() - pair.logratio_rejected());
    if slack > 0.0 {
        PairLoss::of_margin(slack, -beta)
    } else {
        PairLoss::of_margin(0.0, 0.0)
    }
}

/// robust DPO: an unbiased estimate of the clean sigmoid loss under flip rate `e < 0.5`:
///
/// ```text
/// loss    = ((1-e) (-ls(beta d)) + e ls(-beta d)) / (1 - 2e)
/// dloss/dd = beta (-(1-e) s(-beta d) - e s(beta d)) / (1 - 2e)
/// ```
pub fn robust_loss(pair: &Pair, beta: f64, e: f64) -> PairLoss {
    let z = beta * (pair.logratio_chosen() - pair.logratio_rejected());
    let loss = ((1.0 - e) * -logsigmoid(z) + e * logsigmoid(-z)) / (1.0 - 2.0 * e);
    let dloss_dz = (-(1.0 - e) * sigmoid(-z) - e * sigmoid(z)) / (1.0 - 2.0 * e);
    PairLoss::of_margin(loss, beta * dloss_dz)
}

/// ipo: the per-token margin regressed to `1/(2 beta)`:
///
/// ```text
/// d'   = (pi_c - ref_c)/n_c - (pi_r - ref_r)/n_r
/// loss = (d' - 1/(2 beta))^2
/// dloss/dpi_c = 2 (d' - 1/(2 beta)) / n_c,   dloss/dpi_r = -2 (d' - 1/(2 beta)) / n_r
/// ```
pub fn ipo_loss(pair: &Pair, beta: f64) -> PairLoss {
    let gap = pair.logratio_chosen() / pair.n_chosen
        - pair.logratio_rejected() / pair.n_rejected
        - 1.0 / (2.0 * beta);
    PairLoss {
        loss: gap * gap,
        dchosen: 2.0 * gap / pair.n_chosen,
        drejected: -2.0 * gap / pair.n_rejected,
    }
}

/// exo_pair (EXO, Eq. 16 of Ji et al. 2024): the KL from the policy's pair
/// probabilities `q = (s(z), s(-z))` to the smoothed labels `(1-e, e)`, `z = beta d`:
///
/// ```text
/// loss     = s(z) (ls(z) - log(1-e)) + s(-z) (ls(-z) - log e)
/// dloss/dz = s(z) s(-z) (ls(z) - ls(-z) - log(1-e) + log e) = s(z) s(-z) (z - log((1-e)/e))
/// ```
///
/// (the terms from differentiating the logs cancel: `s(z) s(-z) - s(-z) s(z)`).
pub fn exo_pair_loss(pair: &Pair, beta: f64, e: f64) -> PairLoss {
    let z = beta * (pair.logratio_chosen() - pair.logratio_rejected());
    let (log_pw, log_pl) = ((-e).ln_1p(), e.ln());
    let loss = sigmoid(z) * (logsigmoid(z) - log_pw) + sigmoid(-z) * (logsigmoid(-z) - log_pl);
    let dloss_dz = sigmoid(z) * sigmoid(-z) * (z - log_pw + log_pl);
    PairLoss::of_margin(loss, beta * dloss_dz)
}

/// discopop (DiscoPOP, Eq. 5 of Chris Lu et al. 2024): the logistic and the
/// exponential loss blended by `m = s(z / tau)`, `z = beta d`:
///
/// ```text
/// loss     = -ls(z) (1 - m) + exp(-z) m
/// dloss/dz = -s(-z) (1 - m) + ls(z) m' - exp(-z) m + exp(-z) m',   m' = s(z/tau) s(-z/tau) / tau
/// ```
pub fn discopop_loss(pair: &Pair, beta: f64, tau: f64) -> PairLoss {
    let z = beta * (pair.logratio_chosen() - pair.logratio_rejected());
    let m = sigmoid(z / tau);
    let dm_dz = sigmoid(z / tau) * sigmoid(-z / tau) / tau;
    let exp_component = (-z).exp();
    let loss = -logsigmoid(z) * (1.0 - m) + exp_component * m;
    let dloss_dz = -sigmoid(-z) * (1.0 - m) + logsigmoid(z) * dm_dz - exp_component * m
        + exp_component * dm_dz;
    PairLoss::of_margin(loss, beta * dloss_dz)
}

/// sigmoid_norm: the sigmoid loss of the per-token margin `d'` (TRL 1.x; no label smoothing):
///
/// ```text
/// loss = -ls(beta d')
/// dloss/dpi_c = -beta s(-beta d') / n_c,   dloss/dpi_r = beta s(-beta d') / n_r
/// ```
pub fn sigmoid_norm_loss(pair: &Pair, beta: f64) -> PairLoss {
    let d_per_token =
        pair.logratio_chosen() / pair.n_chosen - pair.logratio_rejected() / pair.n_rejected;
    let z = beta * d_per_token;
    let dloss_dd = -beta * sigmoid(-z);
    PairLoss {
        loss: -logsigmoid(z),
        dchosen: dloss_dd / pair.n_chosen,
        drejected: -dloss_dd / pair.n_rejected,
    }
}
