//! Shape ops: reshape, transpose/permute, narrow (slicing), concat/split.
//!
//! A value is an owned array behind an `Arc`, so an output cannot share its
//! input's buffer: every output here is materialised as a fresh tensor in
//! standard (row-major) layout, whatever the layout of the input. Inputs may
//! have any layout (a transposed or permuted array is fine). Each backward
//! moves the gradient's elements back to where they came from, exactly: no
//! arithmetic except the sums of `concat`'s and `split`'s zero padding.

use ndarray::{Axis, IxDyn, Slice};

use super::check_axis;
use crate::float::Float;
use crate::kernels::concat::{concat_rows, split_rows};
use crate::tape::{Tape, Tensor, Var};

/// `t` in standard layout (no copy when it already is).
pub(crate) fn into_standard_layout<T: Float>(t: Tensor<T>) -> Tensor<T> {
    if t.is_standard_layout() {
        t
    } else {
        t.as_standard_layout().into_owned()
    }
}

/// The elements of `t` in row-major (logical) order.
fn row_major_data<T: Float>(t: &Tensor<T>) -> Vec<T> {
    match t.as_slice() {
        Some(s) => s.to_vec(),
        None => t.iter().copied().collect(),
    }
}

/// The inverse of a permutation: `inverse[axes[i]] = i`.
fn inverse_permutation(axes: &[usize]) -> Vec<usize> {
    let mut inverse = vec![0; axes.len()];
    for (i, &a) in axes.iter().enumerate() {
        inverse[a] = i;
    }
    inverse
}

impl<T: Float> Tape<T> {
    /// Same elements in row-major order, new shape:
    ///
    /// ```text
    /// y = x viewed as `shape`     (flat index i of y is flat index i of x)
    /// dx = dy viewed as x's shape
    /// ```
    ///
    /// # Panics
    /// If `shape` does not hold exactly as many elements as `x`.
    pub fn reshape(&self, x: &Var<T>, shape: &[usize]) -> Var<T> {
        let n: usize = shape.iter().product();
        assert!(
            n == x.value().len(),
            "reshape: cannot reshape {:?} ({} elements) into {shape:?} ({n} elements)",
            x.shape(),
            x.value().len()
        );
        let y = Tensor::from_shape_vec(IxDyn(shape), row_major_data(x.value())).unwrap();
        let x_shape = x.value().raw_dim();
        self.record("reshape", y, &[x], move |dy| {
            vec![Some(
                Tensor::from_shape_vec(x_shape, row_major_data(dy)).unwrap(),
            )]
        })
    }

    /// Swaps two axes:
    ///
    /// ```text
    /// y[.., j, .., i, ..] = x[.., i, .., j, ..]      (axes a0 and a1 swapped)
    /// dx = dy with the same two axes swapped back
    /// ```
    ///
    /// # Panics
    /// If an axis is out of range.
    pub fn transpose(&self, x: &Var<T>, a0: usize, a1: usize) -> Var<T> {
        check_axis("transpose", a0, x.shape());
        check_axis("transpose", a1, x.shape());
        let mut axes: Vec<usize> = (0..x.ndim()).collect();
        axes.swap(a0, a1);
        self.permute(x, &axes)
    }

    /// Reorders the axes: output axis `i` is input axis `axes[i]` (as
    /// `torch.permute`):
    ///
    /// ```text
    /// y[i_axes[0], .., i_axes[n-1]] = x[i_0, .., i_n-1]
    /// dx = permute(dy, inverse of axes)
    /// ```
    ///
    /// # Panics
    /// If `axes` is not a permutation of `0..x.ndim()`.
    pub fn permute(&self, x: &Var<T>, axes: &[usize]) -> Var<T> {
        let mut seen = vec![false; x.ndim()];
        let is_permutation = axes.len() == x.ndim()
            && axes
                .iter()
                .all(|&a| a < seen.len() && !std::mem::replace(&mut seen[a], true));
        assert!(
            is_permutation,
            "permute: axes {axes:?} are not a permutation of the axes of shape {:?}",
            x.shape()
        );
        let y = x
            .value()
            .view()
            .permuted_axes(IxDyn(axes))
            .as_standard_layout()
            .into_owned();
        let inverse = inverse_permutation(axes);
        self.record("permute", y, &[x], move |dy| {
            let dx = dy.view().permuted_axes(IxDyn(&inverse));
            vec![Some(dx.as_standard_layout().into_owned())]
        })
    }

    /// The slice `start..start + len` of `axis` (as `torch.narrow`):
    ///
    /// ```text
    /// y[.., i, ..] = x[.., start + i, ..]       0 <= i < len
    /// dx[.., start + i, ..] = dy[.., i, ..], zero elsewhere
    /// ```
    ///
    /// # Panics
    /// If `axis` is out of range or the slice does not fit in it.
    pub fn narrow(&self, x: &Var<T>, axis: usize, start: usize, len: usize) -> Var<T> {
        check_axis("narrow", axis, x.shape());
        let size = x.shape()[axis];
        assert!(
            start.checked_add(len).is_some_and(|end| end <= size),
            "narrow: slice {start}..{} out of range for axis {axis} of shape {:?}",
            start.saturating_add(len),
            x.shape()
        );
        let range = Slice::from(start..start + len);
        let y = x
            .value()
            .slice_axis(Axis(axis), range)
            .as_standard_layout()
            .into_owned();
        let x_shape = x.value().raw_dim();
        self.record("narrow", y, &[x], move |dy| {
            let mut dx = Tensor::zeros(x_shape);
            dx.slice_axis_mut(Axis(axis), range).assign(dy);
            vec![Some(dx)]
        })
    }

    /// Joins tensors along `axis` (as `torch.cat`); all other sizes must agree:
    ///
    /// ```text
    /// y = [x_0 | x_1 | ... ]  along axis      (x_k: (.., n_k, ..) -> y: (.., sum_k n_k, ..))
    /// dx_k = the slice of dy that x_k filled
    /// ```
    ///
    /// # Panics
    /// If `xs` is empty, `axis` is out of range, or the shapes differ
    /// outside `axis`.
    pub fn concat(&self, xs: &[&Var<T>], axis: usize) -> Var<T> {
        assert!(!xs.is_empty(), "concat: no inputs");
        let first = xs[0].shape();
        check_axis("concat", axis, first);
        for x in xs {
            let same_elsewhere = x.ndim() == first.len()
                && (0..first.len()).all(|a| a == axis || x.shape()[a] == first[a]);
            assert!(
                same_elsewhere,
                "concat: shapes {:?} differ outside axis {axis}",
                xs.iter().map(|x| x.shape().to_vec()).collect::<Vec<_>>()
            );
        }
        // Row-major, the tensors are matrices of `rows` rows (the axes before
        // `axis`), each input's rows `shape[axis] * inner` wide.
        let rows: usize = first[..axis].iter().product();
        let inner: usize = first[axis + 1..].iter().product();
        let sizes: Vec<usize> = xs.iter().map(|x| x.shape()[axis]).collect();
        let widths: Vec<usize> = sizes.iter().map(|n| n * inner).collect();
        let standard: Vec<_> = xs.iter().map(|x| x.value().as_standard_layout()).collect();
        let parts: Vec<&[T]> = standard.iter().map(|s| s.as_slice().unwrap()).collect();
        let mut shape = first.to_vec();
        shape[axis] = sizes.iter().sum();
        let mut y = vec![T::zero(); rows * widths.iter().sum::<usize>()];
        concat_rows(&parts, &widths, &mut y);
        let y = Tensor::from_shape_vec(IxDyn(&shape), y).unwrap();
        let part_shapes: Vec<Vec<usize>> = xs.iter().map(|x| x.shape().to_vec()).collect();
        self.record("concat", y, xs, move |dy| {
            let dy = dy.as_standard_layout();
            split_rows(dy.as_slice().unwrap(), &widths)
                .into_iter()
                .zip(&part_shapes)
                .map(|(part, shape)| Some(Tensor::from_shape_vec(IxDyn(shape), part).unwrap()))
                .collect()
        })
    }

    /// Cuts `x` along `axis` into consecutive pieces of the given `sizes`
    /// (as `torch.split` with a list): piece k is
    /// `narrow(x, axis, sizes[0] + .. + sizes[k-1], sizes[k])`, and its
    /// gradient flows back into its own slice of `dx`.
    ///
    /// # Panics
    /// If `axis` is out of range or the sizes do not add up to the axis length.
    pub fn split(&self, x: &Var<T>, axis: usize, sizes: &[usize]) -> Vec<Var<T>> {
        check_axis("split", axis, x.shape());
        let total: usize = sizes.iter().sum();
        assert!(
            total == x.shape()[axis],
            "split: sizes {sizes:?} add up to {total}, but axis {axis} of shape {:?} has {}",
            x.shape(),
            x.shape()[axis]
        );
        let mut start = 0;
        sizes
            .iter()
            .map(|&n| {
                let piece = self.narrow(x, axis, start, n);
                start += n;
                piece
            })
            .collect()
    }
}
