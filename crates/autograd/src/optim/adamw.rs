use std::sync::Arc;

use rayon::prelude::*;

use super::{paired_with, param_slice, Optimizer};
use crate::float::Float;
use crate::tape::{contiguous, Tensor};

/// AdamW exactly as PyTorch's `torch.optim.AdamW` (default, non-amsgrad):
///
/// ```text
/// t  <- t + 1
/// w  <- w * (1 - lr * wd)                        decoupled weight decay
/// m  <- b1 m + (1 - b1) g
/// v  <- b2 v + (1 - b2) g^2
/// w  <- w - (lr / (1 - b1^t)) * m / (sqrt(v) / sqrt(1 - b2^t) + eps)
/// ```
#[derive(Debug, Clone)]
pub struct AdamW<T> {
    /// First-moment decay (PyTorch default 0.9).
    pub beta1: f64,
    /// Second-moment decay (PyTorch default 0.999).
    pub beta2: f64,
    /// Added to the denominator (PyTorch default 1e-8).
    pub eps: f64,
    /// Decoupled weight decay (PyTorch default 0.01).
    pub weight_decay: f64,
    steps: u64,
    exp_avg: Vec<Tensor<T>>,
    exp_avg_sq: Vec<Tensor<T>>,
}

impl<T: Float> AdamW<T> {
    /// AdamW with PyTorch's betas (0.9, 0.999) and eps 1e-8.
    pub fn new(weight_decay: f64) -> Self {
        AdamW {
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay,
            steps: 0,
            exp_avg: Vec::new(),
            exp_avg_sq: Vec::new(),
        }
    }

    /// Restores the moments and step count saved by [`Optimizer::state`].
    pub fn load_state(&mut self, steps: u64, exp_avg: Vec<Tensor<T>>, exp_avg_sq: Vec<Tensor<T>>) {
        assert_eq!(exp_avg.len(), exp_avg_sq.len());
        self.steps = steps;
        self.exp_avg = exp_avg;
        self.exp_avg_sq = exp_avg_sq;
    }
}

impl<T: Float> Optimizer<T> for AdamW<T> {
    fn step<'a>(
        &mut self,
        params: impl IntoIterator<Item = &'a mut Arc<Tensor<T>>>,
        grads: &[Tensor<T>],
        lr: f64,
    ) where
        T: 'a,
    {
        let params = paired_with(params, grads, "adamw");
        if self.exp_avg.is_empty() {
            self.exp_avg = params.iter().map(|p| Tensor::zeros(p.raw_dim())).collect();
            self.exp_avg_sq = params.iter().map(|p| Tensor::zeros(p.raw_dim())).collect();
        }
        self.steps += 1;
        let t = self.steps as i32;
        let bias_correction1 = 1.0 - self.beta1.powi(t);
        let bias_correction2_sqrt = (1.0 - self.beta2.powi(t)).sqrt();
        let step_size = T::cast(lr / bias_correction1);
        let decay = T::cast(1.0 - lr * self.weight_decay);
        let (b1, b2) = (T::cast(self.beta1), T::cast(self.beta2));
        let (one_b1, one_b2) = (T::cast(1.0 - self.beta1), T::cast(1.0 - self.beta2));
        let (bc2_sqrt, eps) = (T::cast(bias_correction2_sqrt), T::cast(self.eps));
        let update = |w: &mut [T], g: &[T], m: &mut [T], v: &mut [T]| {
            for i in 0..w.len() {
                w[i] *= decay;
                m[i] = b1 * m[i] + one_b1 * g[i];
                v[i] = b2 * v[i] + one_b2 * g[i] * g[i];
                let denom = v[i].sqrt() / bc2_sqrt + eps;
                w[i] -= step_size * m[i] / denom;
            }
        };
        const CHUNK: usize = 1 << 14;
        for ((p, g), (m, v)) in params
            .into_iter()
            .zip(grads)
            .zip(self.exp_avg.iter_mut().zip(self.exp_avg_sq.iter_mut()))
        {
            assert_eq!(p.shape(), g.shape(), "adamw: param and grad shapes differ");
            let g = contiguous(g);
            let w = param_slice(p);
            let (m, v) = (m.as_slice_mut().unwrap(), v.as_slice_mut().unwrap());
            if w.len() < 2 * CHUNK {
                update(w, &g, m, v);
            } else {
                w.par_chunks_mut(CHUNK)
                    .zip(g.par_chunks(CHUNK))
                    .zip(m.par_chunks_mut(CHUNK).zip(v.par_chunks_mut(CHUNK)))
                    .for_each(|((w, g), (m, v))| update(w, g, m, v));
            }
        }
    }

    fn state(&self) -> Vec<(&'static str, &[Tensor<T>])> {
        vec![("exp_avg", &self.exp_avg), ("exp_avg_sq", &self.exp_avg_sq)]
    }

    fn steps_taken(&self) -> u64 {
        self.steps
    }
}
