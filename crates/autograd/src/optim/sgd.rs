use std::sync::Arc;

use super::{paired_with, param_slice, Optimizer};
use crate::float::Float;
use crate::tape::{contiguous, Tensor};

/// Plain stochastic gradient descent with decoupled weight decay:
///
/// ```text
/// w <- w - lr * wd * w - lr * g          (= w - lr * g when wd = 0)
/// ```
#[derive(Debug, Clone, Default)]
pub struct Sgd {
    /// Decoupled weight decay (0 for none).
    pub weight_decay: f64,
    steps: u64,
}

impl Sgd {
    /// SGD with the given decoupled weight decay.
    pub fn new(weight_decay: f64) -> Self {
        Sgd {
            weight_decay,
            steps: 0,
        }
    }

    /// Sets the step counter (when resuming a run).
    pub fn set_steps_taken(&mut self, steps: u64) {
        self.steps = steps;
    }
}

impl<T: Float> Optimizer<T> for Sgd {
    fn step<'a>(
        &mut self,
        params: impl IntoIterator<Item = &'a mut Arc<Tensor<T>>>,
        grads: &[Tensor<T>],
        lr: f64,
    ) where
        T: 'a,
    {
        let params = paired_with(params, grads, "sgd");
        let lr_t = T::cast(lr);
        let decay = T::cast(1.0 - lr * self.weight_decay);
        for (p, g) in params.into_iter().zip(grads) {
            assert_eq!(p.shape(), g.shape(), "sgd: param and grad shapes differ");
            let g = contiguous(g);
            let w = param_slice(p);
            if self.weight_decay == 0.0 {
                w.iter_mut()
                    .zip(g.iter())
                    .for_each(|(w, &g)| *w -= lr_t * g);
            } else {
                w.iter_mut()
                    .zip(g.iter())
                    .for_each(|(w, &g)| *w = *w * decay - lr_t * g);
            }
        }
        self.steps += 1;
    }

    fn steps_taken(&self) -> u64 {
        self.steps
    }
}
