use crate::float::Float;
use crate::kernels::elementwise::sum_squares_f64;
use crate::tape::Tensor;

/// The L2 norm of all gradients taken together, `sqrt(sum_i ||g_i||^2)`
/// (accumulated in f64).
pub fn global_grad_norm<T: Float>(grads: &[Tensor<T>]) -> f64 {
    grads
        .iter()
        .map(|g| match g.as_slice() {
            Some(s) => sum_squares_f64(s),
            None => g.iter().map(|&v| v.as_f64() * v.as_f64()).sum(),
        })
        .sum::<f64>()
        .sqrt()
}

/// Scales all gradients so that their global norm is at most `max_norm`, as
/// `torch.nn.utils.clip_grad_norm_` does (`coef = max_norm / (norm + 1e-6)`,
/// applied only when below 1). Returns the norm before clipping.
pub fn clip_grad_norm<T: Float>(grads: &mut [Tensor<T>], max_norm: f64) -> f64 {
    let norm = global_grad_norm(grads);
    let coef = max_norm / (norm + 1e-6);
    if coef < 1.0 {
        let c = T::cast(coef);
        for g in grads.iter_mut() {
            g.mapv_inplace(|v| v * c);
        }
    }
    norm
}
