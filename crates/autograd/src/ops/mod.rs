//! Differentiable ops, grouped by family. Each op is a method on
//! [`crate::Tape`]: the forward computation, then, right under it, the
//! backward closure that captures exactly what it needs.

pub mod elementwise;
pub mod llama;
pub mod logprobs;
pub mod matmul;
pub mod nn;
pub mod reduce;
pub mod rope;
pub mod shape;
pub mod softmax;

use crate::float::Float;
use crate::tape::Tensor;
use ndarray::{Axis, IxDyn};

/// The shape two operands broadcast to (NumPy rules), or a panic naming `op`.
pub fn broadcast_shape(op: &str, a: &[usize], b: &[usize]) -> Vec<usize> {
    let ndim = a.len().max(b.len());
    let mut out = vec![0; ndim];
    for i in 0..ndim {
        let da = if i + a.len() >= ndim {
            a[i + a.len() - ndim]
        } else {
            1
        };
        let db = if i + b.len() >= ndim {
            b[i + b.len() - ndim]
        } else {
            1
        };
        out[i] = match (da, db) {
            (x, y) if x == y => x,
            (1, y) => y,
            (x, 1) => x,
            _ => panic!("{op}: shapes {a:?} and {b:?} do not broadcast"),
        };
    }
    out
}

/// Sums `grad` down to `shape`: the backward of broadcasting `shape` up to
/// `grad.shape()` (leading axes summed away, size-1 axes summed and kept).
pub fn sum_to_shape<T: Float>(grad: &Tensor<T>, shape: &[usize]) -> Tensor<T> {
    if grad.shape() == shape {
        return grad.clone();
    }
    let lead = grad.ndim() - shape.len();
    let mut out = grad.clone();
    for _ in 0..lead {
        out = out.sum_axis(Axis(0));
    }
    for (axis, &size) in shape.iter().enumerate() {
        if size == 1 && out.shape()[axis] != 1 {
            out = out.sum_axis(Axis(axis)).insert_axis(Axis(axis));
        }
    }
    out.into_shape_with_order(IxDyn(shape))
        .expect("sum_to_shape: reduced gradient has the wrong size")
}

/// Panics unless `axis < ndim`, naming the op and the shape.
pub fn check_axis(op: &str, axis: usize, shape: &[usize]) {
    assert!(
        axis < shape.len(),
        "{op}: axis {axis} out of range for shape {shape:?}"
    );
}
