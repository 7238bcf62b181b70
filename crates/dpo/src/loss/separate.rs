//! Losses that score each response's log-ratio on its own, not only their
//! difference: `a = pi_c - ref_c`, `b = pi_r - ref_r`, rewards `beta a`,
//! `beta b`. With `ls = logsigmoid`, `s = sigmoid`: `ls'(z) = s(-z)`,
//! `s'(z) = s(z) s(-z)`.

use autograd::ops::elementwise::{logsigmoid, sigmoid};

use super::{Pair, PairLoss};

/// `s'(z) = s(z) s(-z)`.
fn dsigmoid(z: f64) -> f64 {
    sigmoid(z) * sigmoid(-z)
}

/// nca_pair (NCA, Chen et al. 2024): each reward against an absolute scale:
///
/// ```text
/// loss = -ls(beta a) - 1/2 ls(-beta a) - 1/2 ls(-beta b)
/// dloss/dpi_c = beta (-s(-beta a) + 1/2 s(beta a)),   dloss/dpi_r = beta/2 s(beta b)
/// ```
pub fn nca_pair_loss(pair: &Pair, beta: f64) -> PairLoss {
    let (rc, rr) = (
        beta * pair.logratio_chosen(),
        beta * pair.logratio_rejected(),
    );
    PairLoss {
        loss: -logsigmoid(rc) - 0.5 * logsigmoid(-rc) - 0.5 * logsigmoid(-rr),
        dchosen: beta * (-sigmoid(-rc) + 0.5 * sigmoid(rc)),
        drejected: beta * 0.5 * sigmoid(rr),
    }
}

/// bco_pair (BCO, Jung et al. 2024): a binary classifier of rewards, chosen
/// as 1 and rejected as 0, rewards shifted by `delta` (their running mean,
/// a constant of the step: no gradient flows into it):
///
/// ```text
/// loss = -ls(beta a - delta) - ls(-(beta b - delta))
/// dloss/dpi_c = -beta s(-(beta a - delta)),   dloss/dpi_r = beta s(beta b - delta)
/// ```
pub fn bco_pair_loss(pair: &Pair, beta: f64, delta: f64) -> PairLoss {
    let (uc, ur) = (
        beta * pair.logratio_chosen() - delta,
        beta * pair.logratio_rejected() - delta,
    );
    PairLoss {
        loss: -logsigmoid(uc) - logsigmoid(-ur),
        dchosen: -beta * sigmoid(-uc),
        drejected: beta * sigmoid(ur),
    }
}

/// sppo_hard (SPPO, Wu et al. 2024, with hard win probabilities 1 and 0):
///
/// ```text
/// loss = (a - 1/(2 beta))^2 + (b + 1/(2 beta))^2
/// dloss/dpi_c = 2 (a - 1/(2 beta)),   dloss/dpi_r = 2 (b + 1/(2 beta))
/// ```
pub fn sppo_hard_loss(pair: &Pair, beta: f64) -> PairLoss {
    let winner_gap = pair.logratio_chosen() - 0.5 / beta;
    let loser_gap = pair.logratio_rejected() + 0.5 / beta;
    PairLoss {
        loss: winner_gap * winner_gap + loser_gap * loser_gap,
        dchosen: 2.0 * winner_gap,
        drejected: 2.0 * loser_gap,
    }
}

/// apo_zero (APO, D'Oosterlinck et al. 2024, Eq. 7): for chosen responses
/// better than the model's own:
///
/// ```text
/// loss = 1 - s(beta a) + s(beta b)
/// dloss/dpi_c = -beta s'(beta a),   dloss/dpi_r = beta s'(beta b)
/// ```
pub fn apo_zero_loss(pair: &Pair, beta: f64) -> PairLoss {
    let (rc, rr) = (
        beta * pair.logratio_chosen(),
        beta * pair.logratio_rejected(),
    );
    PairLoss {
        loss: 1.0 - sigmoid(rc) + sigmoid(rr),
        dchosen: -beta * dsigmoid(rc),
        drejected: beta * dsigmoid(rr),
    }
}

/// apo_down (APO, Eq. 8): for chosen responses worse than the model's own:
/// lower both likelihoods, the rejected one more. With `z = beta (a - b)`:
///
/// ```text
/// loss = s(beta a) + 1 - s(z)
/// dloss/dpi_c = beta s'(beta a) - beta s'(z),   dloss/dpi_r = beta s'(z)
/// ```
pub fn apo_down_loss(pair: &Pair, beta: f64) -> PairLoss {
    let rc = beta * pair.logratio_chosen();
    let z = beta * (pair.logratio_chosen() - pair.logratio_rejected());
    PairLoss {
        loss: sigmoid(rc) + 1.0 - sigmoid(z),
        dchosen: beta * dsigmoid(rc) - beta * dsigmoid(z),
        drejected: beta * dsigmoid(z),
    }
}
