//! Optimizers, gradient clipping and learning-rate schedules.
//!
//! Parameters are `Arc<Tensor>`s owned by the model (a step's tape holds
//! clones of the `Arc`s, not copies); once the tape is gone the optimizer
//! updates them in place through `Arc::make_mut`, which copies nothing when
//! the model is the only owner.

mod adamw;
mod clip;
mod schedule;
mod sgd;

pub use adamw::AdamW;
pub use clip::{clip_grad_norm, global_grad_norm};
pub use schedule::LrSchedule;
pub use sgd::Sgd;

use std::sync::Arc;

use crate::float::Float;
use crate::tape::Tensor;

/// One update rule over a list of parameters and their gradients (same order,
/// same shapes).
pub trait Optimizer<T: Float> {
    /// Applies one update with learning rate `lr`. `params` is any list of
    /// the parameters in the order of `grads`: a `&mut Vec<Arc<Tensor<T>>>`,
    /// or a model's parameters (e.g. `model.params_mut()`, which iterates
    /// them in its canonical order).
    fn step<'a>(
        &mut self,
        params: impl IntoIterator<Item = &'a mut Arc<Tensor<T>>>,
        grads: &[Tensor<T>],
        lr: f64,
    ) where
        T: 'a;

    /// The optimizer's state tensors, by name suffix, lent for checkpointing
    /// (e.g. AdamW's `exp_avg`/`exp_avg_sq`, one tensor a parameter; a save
    /// writes them from here, with no copy); empty for stateless optimizers.
    fn state(&self) -> Vec<(&'static str, &[Tensor<T>])> {
        Vec::new()
    }

    /// The number of steps taken so far.
    fn steps_taken(&self) -> u64;
}

/// The parameters of one step as a list, checked to pair up with `grads`
/// (`who` names the optimizer in the panic message).
pub(crate) fn paired_with<'a, T: Float>(
    params: impl IntoIterator<Item = &'a mut Arc<Tensor<T>>>,
    grads: &[Tensor<T>],
    who: &str,
) -> Vec<&'a mut Arc<Tensor<T>>> {
    let params: Vec<&mut Arc<Tensor<T>>> = params.into_iter().collect();
    assert_eq!(
        params.len(),
        grads.len(),
        "{who}: {} params, {} grads",
        params.len(),
        grads.len()
    );
    params
}

/// The mutable data of a parameter (copy-on-write if a tape still shares it).
pub(crate) fn param_slice<T: Float>(p: &mut Arc<Tensor<T>>) -> &mut [T] {
    let t = Arc::make_mut(p);
    if !t.is_standard_layout() {
        *t = t.as_standard_layout().into_owned();
    }
    t.as_slice_mut().unwrap()
}
