//! AOT (Melnyk et al. 2024, alignment via optimal transport): the sigmoid
//! loss applied not pair by pair but to the *sorted* margins of the batch,
//! which makes the policy's margin distribution dominate the reference's
//! (first-order stochastic dominance) instead of each margin being pushed on
//! its own.
//!
//! For the `k`-th smallest values, with `l(z) = -(1-e) ls(z) - e ls(-z)`:
//!
//! ```text
//! aot:           x_i = pi_c_i - pi_r_i,  y_i = ref_c_i - ref_r_i    delta_k = sort(x)_k - sort(y)_k
//! aot_unpaired:  x_i = a_i (chosen log-ratios), y_i = b_i (rejected)  delta_k = sort(x)_k - sort(y)_k
//! loss = mean_k l(beta delta_k)
//! ```
//!
//! Sorting only permutes: the gradient of `l(beta delta_k)` goes back to the
//! element that was sorted into place `k` (`beta l'` to `x`, and for
//! aot_unpaired `-beta l'` to the rejected log-prob of the `y` element; for
//! aot, `x_i = pi_c_i - pi_r_i`, so `pi_r_i` gets `-beta l'`). The reference
//! side `y` is a constant.

use autograd::ops::elementwise::{logsigmoid, sigmoid};

use super::{Pair, PairLoss};

/// The order that sorts `values` ascending (ties by index).
fn argsort(values: &[f64]) -> Vec<usize> {
    let mut order: Vec<usize> = (0..values.len()).collect();
    order.sort_by(|&i, &j| values[i].total_cmp(&values[j]).then(i.cmp(&j)));
    order
}

/// `l(z) = -(1-e) ls(z) - e ls(-z)` and `l'(z)`.
fn smoothed_sigmoid(z: f64, e: f64) -> (f64, f64) {
    (
        -(1.0 - e) * logsigmoid(z) - e * logsigmoid(-z),
        -(1.0 - e) * sigmoid(-z) + e * sigmoid(z),
    )
}

/// The sorted-margin loss of `x` against `y`: the `PairLoss` of each pair
/// (its share of the loss, and the gradient of the batch's summed loss with
/// respect to its `pi_c` and `pi_r`). `rejected_follows_y`: the gradient of
/// `delta_k` with respect to `pi_r` goes to the pair sorted into place `k`
/// of `y` (aot_unpaired), else to that of `x` (aot).
fn sorted_loss(x: &[f64], y: &[f64], beta: f64, e: f64, rejected_follows_y: bool) -> Vec<PairLoss> {
    let (order_x, order_y) = (argsort(x), argsort(y));
    let mut out = vec![
        PairLoss {
            loss: 0.0,
            dchosen: 0.0,
            drejected: 0.0,
        };
        x.len()
    ];
    for (&i, &j) in order_x.iter().zip(&order_y) {
        let (loss, dloss_dz) = smoothed_sigmoid(beta * (x[i] - y[j]), e);
        out[i].loss = loss;
        out[i].dchosen = beta * dloss_dz;
        let rejected = if rejected_follows_y { j } else { i };
        out[rejected].drejected = -beta * dloss_dz;
    }
    out
}

/// aot: sorted policy margins `pi_c - pi_r` against sorted reference margins.
pub fn aot_losses(pairs: &[Pair], beta: f64, e: f64) -> Vec<PairLoss> {
    let x: Vec<f64> = pairs
        .iter()
        .map(|p| p.policy_chosen - p.policy_rejected)
        .collect();
    let y: Vec<f64> = pairs
        .iter()
        .map(|p| p.ref_chosen - p.ref_rejected)
        .collect();
    sorted_loss(&x, &y, beta, e, false)
}

/// aot_unpaired: sorted chosen log-ratios against sorted rejected log-ratios.
pub fn aot_unpaired_losses(pairs: &[Pair], beta: f64, e: f64) -> Vec<PairLoss> {
    let x: Vec<f64> = pairs.iter().map(Pair::logratio_chosen).collect();
    let y: Vec<f64> = pairs.iter().map(Pair::logratio_rejected).collect();
    sorted_loss(&x, &y, beta, e, true)
}
