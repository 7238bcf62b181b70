//! Reductions: sums and means over all elements or over chosen axes.
//!
//! The backward of a reduction is a broadcast: every input element that was
//! summed into an output element receives that element's gradient.

use ndarray::{Axis, IxDyn};

use super::check_axis;
use crate::float::Float;
use crate::kernels::elementwise as k;
use crate::tape::{Tape, Tensor, Var};

/// The axes to reduce, sorted, after checking that each is in range and
/// appears once.
fn reduced_axes(op: &str, axes: &[usize], shape: &[usize]) -> Vec<usize> {
    let mut sorted = axes.to_vec();
    sorted.sort_unstable();
    for (i, &axis) in sorted.iter().enumerate() {
        check_axis(op, axis, shape);
        assert!(
            i == 0 || sorted[i - 1] != axis,
            "{op}: axis {axis} repeated in {axes:?} for shape {shape:?}"
        );
    }
    sorted
}

/// `scale * sum of x over axes`, with the reduced axes kept as size 1, in
/// standard layout.
fn sum_keepdim<T: Float>(x: &Tensor<T>, axes: &[usize], scale: T) -> Tensor<T> {
    let mut highest_first = axes.iter().rev();
    let mut y = match highest_first.next() {
        Some(&axis) => x.sum_axis(Axis(axis)).insert_axis(Axis(axis)),
        None => x.to_owned(),
    };
    for &axis in highest_first {
        y = y.sum_axis(Axis(axis)).insert_axis(Axis(axis));
    }
    if scale != T::one() {
        y.mapv_inplace(|v| v * scale);
    }
    super::shape::into_standard_layout(y)
}

/// `scale * dy` broadcast back to `x_shape` (dy has the kept-dims shape).
fn broadcast_back<T: Float>(
    dy: &Tensor<T>,
    keep_shape: &[usize],
    x_shape: &[usize],
    scale: T,
) -> Tensor<T> {
    let dy = dy.to_shape(IxDyn(keep_shape)).unwrap();
    let dx = dy.broadcast(IxDyn(x_shape)).unwrap();
    if scale == T::one() {
        dx.as_standard_layout().into_owned()
    } else {
        dx.mapv(|d| d * scale)
    }
}

impl<T: Float> Tape<T> {
    /// y = sum_i x_i   (a scalar)          dx_i = dy
    pub fn sum_all(&self, x: &Var<T>) -> Var<T> {
        let total = match x.value().as_slice() {
            Some(s) => k::sum(s),
            None => x.value().iter().copied().sum(),
        };
        let shape = x.value().raw_dim();
        self.record(
            "sum_all",
            Tensor::from_elem(IxDyn(&[]), total),
            &[x],
            move |dy| {
                let d = *dy.iter().next().unwrap();
                vec![Some(Tensor::from_elem(shape, d))]
            },
        )
    }

    /// y = (1/n) sum_i x_i   (a scalar)    dx_i = dy / n
    pub fn mean_all(&self, x: &Var<T>) -> Var<T> {
        let n = T::cast(x.value().len() as f64);
        let total = self.sum_all(x);
        self.mul_scalar(&total, T::one() / n)
    }

    /// Sum over `axes`:
    ///
    /// ```text
    /// y[kept] = sum over the reduced axes of x     x: (.., A, ..) -> y: (.., 1, ..) or (.., ..)
    /// dx[i]   = dy[i with the reduced axes dropped] (a broadcast of dy back to x's shape)
    /// ```
    ///
    /// With `keepdim` the reduced axes stay as size 1 (ready to broadcast
    /// against `x`), otherwise they are removed. An empty `axes` reduces
    /// nothing (use [`Tape::sum_all`] for the sum of everything).
    ///
    /// # Panics
    /// If an axis is out of range or repeated.
    pub fn sum(&self, x: &Var<T>, axes: &[usize], keepdim: bool) -> Var<T> {
        self.scaled_sum("sum", x, axes, keepdim, false)
    }

    /// Mean over `axes`:
    ///
    /// ```text
    /// y  = (1/n) sum over the reduced axes of x      n = product of the reduced sizes
    /// dx = dy / n, broadcast back to x's shape
    /// ```
    ///
    /// `keepdim` as in [`Tape::sum`].
    ///
    /// # Panics
    /// If an axis is out of range or repeated.
    pub fn mean(&self, x: &Var<T>, axes: &[usize], keepdim: bool) -> Var<T> {
        self.scaled_sum("mean", x, axes, keepdim, true)
    }

    fn scaled_sum(
        &self,
        op: &str,
        x: &Var<T>,
        axes: &[usize],
        keepdim: bool,
        mean: bool,
    ) -> Var<T> {
        let x_shape = x.shape().to_vec();
        let axes = reduced_axes(op, axes, &x_shape);
        let count: usize = axes.iter().map(|&a| x_shape[a]).product();
        let scale = if mean {
            T::one() / T::cast(count as f64)
        } else {
            T::one()
        };
        let keep_shape: Vec<usize> = (0..x_shape.len())
            .map(|a| if axes.contains(&a) { 1 } else { x_shape[a] })
            .collect();
        let out_shape: Vec<usize> = if keepdim {
            keep_shape.clone()
        } else {
            (0..x_shape.len())
                .filter(|a| !axes.contains(a))
                .map(|a| x_shape[a])
                .collect()
        };
        // (keep_shape) -> (out_shape): the same elements in the same order
        let y = sum_keepdim(x.value(), &axes, scale)
            .into_shape_with_order(IxDyn(&out_shape))
            .unwrap();
        self.record(op, y, &[x], move |dy| {
            vec![Some(broadcast_back(dy, &keep_shape, &x_shape, scale))]
        })
    }
}
