//! Softmax and log-softmax along any axis, numerically stable.
//!
//! The loops live in [`crate::kernels::softmax`]; the last axis takes a fast
//! path with whole rows in parallel. Both backward passes need only the
//! forward's output, which is shared with the returned `Var` (no copy).

use std::sync::Arc;

use super::check_axis;
use crate::float::Float;
use crate::kernels::softmax::{softmax_backward_strided, softmax_forward_strided, SoftmaxKind};
use crate::tape::{Tape, Tensor, Var};

/// `(n, inner)` of a softmax along `axis`: the axis length and the number of
/// elements after it (the tensor is `(outer, n, inner)`).
fn axis_layout(shape: &[usize], axis: usize) -> (usize, usize) {
    (shape[axis], shape[axis + 1..].iter().product())
}

impl<T: Float> Tape<T> {
    /// Softmax along `axis`:
    ///
    /// ```text
    /// y_i = e^(x_i - m) / sum_j e^(x_j - m)      m = max_j x_j  (any m gives the same y;
    ///                                                            the max keeps e^. <= 1)
    /// dx_i = y_i (dy_i - sum_j dy_j y_j)          (dy . J with J_ij = y_i (d_ij - y_j))
    /// ```
    ///
    /// The output is in standard layout whatever the layout of `x`.
    ///
    /// # Panics
    /// If `axis` is out of range.
    pub fn softmax(&self, x: &Var<T>, axis: usize) -> Var<T> {
        self.softmax_along("softmax", x, axis, SoftmaxKind::Softmax)
    }

    /// Log-softmax along `axis`:
    ///
    /// ```text
    /// y_i = x_i - m - log sum_j e^(x_j - m)      m = max_j x_j  (log-sum-exp: no overflow,
    ///                                                            and the sum is >= 1, no log 0)
    /// dx_i = dy_i - softmax_i sum_j dy_j          softmax_i = e^(y_i)
    /// ```
    ///
    /// The output is in standard layout whatever the layout of `x`.
    ///
    /// # Panics
    /// If `axis` is out of range.
    pub fn log_softmax(&self, x: &Var<T>, axis: usize) -> Var<T> {
        self.softmax_along("log_softmax", x, axis, SoftmaxKind::LogSoftmax)
    }

    fn softmax_along(&self, op: &str, x: &Var<T>, axis: usize, kind: SoftmaxKind) -> Var<T> {
        check_axis(op, axis, x.shape());
        let (n, inner) = axis_layout(x.shape(), axis);
        let x_std = x.value().as_standard_layout();
        let mut out = vec![T::zero(); x.value().len()];
        softmax_forward_strided(&mut out, x_std.as_slice().unwrap(), n, inner, kind);
        let y = Arc::new(Tensor::from_shape_vec(x.value().raw_dim(), out).unwrap());
        let y_saved = y.clone();
        self.record(op, y, &[x], move |dy| {
            let dy_std = dy.as_standard_layout();
            let mut dx = vec![T::zero(); dy.len()];
            let y_data = y_saved.as_slice().unwrap();
            softmax_backward_strided(&mut dx, dy_std.as_slice().unwrap(), y_data, n, inner, kind);
            vec![Some(Tensor::from_shape_vec(y_saved.raw_dim(), dx).unwrap())]
        })
    }
}
