//! Matrix products: `matmul` (2-D and batched) and `linear` (PyTorch's
//! `nn.Linear`, weight stored `[out, in]`).
//!
//! Every product runs through [`crate::kernels::gemm::gemm_with`] with the
//! operands' strides, so the transposes in the backward formulas are free,
//! in the tape's [`crate::Precision`] (forward and backward alike).

use ndarray::{Array2, Array3, ArrayView2, ArrayView3, ArrayViewMut2, Axis, Ix2, IxDyn};
use rayon::prelude::*;
use std::sync::Arc;

use crate::bf16_matrix::Bf16Matrix;
use crate::float::Float;
use crate::kernels::gemm::gemm_with;
use crate::precision::Precision;
use crate::tape::{Tape, Tensor, Var};

/// Views a tensor of shape (..., R, C) as (batch, R, C).
fn as_batch<T: Float>(t: &Tensor<T>) -> ArrayView3<'_, T> {
    let nd = t.ndim();
    let (r, c) = (t.shape()[nd - 2], t.shape()[nd - 1]);
    let batch: usize = t.shape()[..nd - 2].iter().product();
    t.view()
        .into_shape_with_order((batch, r, c))
        .expect("matmul: operand must be contiguous in its batch axes")
}

/// The (rows, cols) view of a 2-D tensor.
fn view2<T: Float>(t: &Tensor<T>) -> ArrayView2<'_, T> {
    t.view().into_dimensionality::<Ix2>().unwrap()
}

/// `a @ b` for 2-D or batched operands (same batch shape, or `b` 2-D and
/// shared by the whole batch), with optional transposes of the last two axes.
/// A matrix, or its transpose (the same buffer with swapped strides).
fn matrix<T: Float>(m: ArrayView2<'_, T>, transposed: bool) -> ArrayView2<'_, T> {
    if transposed {
        m.reversed_axes()
    } else {
        m
    }
}

fn batched_product<T: Float>(
    precision: Precision,
    a: &Tensor<T>,
    ta: bool,
    b: &Tensor<T>,
    tb: bool,
) -> Tensor<T> {
    let (a3, b3) = (as_batch(a), as_batch(b));
    let m = matrix(a3.index_axis(Axis(0), 0), ta).nrows();
    let n = matrix(b3.index_axis(Axis(0), 0), tb).ncols();
    let batch = a3.len_of(Axis(0)).max(b3.len_of(Axis(0)));
    let mut out = Array3::<T>::zeros((batch, m, n));
    let product = |i: usize, c: ArrayViewMut2<'_, T>| {
        let am = matrix(a3.index_axis(Axis(0), i.min(a3.len_of(Axis(0)) - 1)), ta);
        let bm = matrix(b3.index_axis(Axis(0), i.min(b3.len_of(Axis(0)) - 1)), tb);
        gemm_with(precision, T::one(), am, bm, T::zero(), c);
    };
    if batch > 1 {
        out.outer_iter_mut()
            .into_par_iter()
            .enumerate()
            .for_each(|(i, c)| product(i, c));
    } else {
        product(0, out.index_axis_mut(Axis(0), 0));
    }
    let mut shape = if a.ndim() > 2 { a.shape() } else { b.shape() }.to_vec();
    let nd = shape.len();
    shape[nd - 2] = m;
    shape[nd - 1] = n;
    out.into_shape_with_order(IxDyn(&shape)).unwrap()
}

/// `y = x @ W^T + b` with the rows of every leading axis of x folded into
/// one GEMM in `precision`: the forward of [`Tape::linear`] and
/// [`Tape::linear_bf16`]. Returns y (..., OUT) and the number of rows.
fn linear_forward<T: Float>(
    precision: Precision,
    x: &Var<T>,
    w: ArrayView2<'_, T>,
    b: Option<&Var<T>>,
) -> (Tensor<T>, usize) {
    let sx = x.shape();
    let (n_out, n_in) = w.dim();
    assert!(
        !sx.is_empty() && sx[sx.len() - 1] == n_in,
        "linear: input {sx:?} does not match weight ({n_out}, {n_in}) (expected (..., {n_in}))"
    );
    if let Some(b) = b {
        assert!(
            b.shape() == [n_out],
            "linear: bias shape {:?} != [{n_out}] for weight ({n_out}, {n_in})",
            b.shape()
        );
    }
    let rows = x.value().len() / n_in.max(1);
    let x_std = x.value().as_standard_layout();
    let x2 = x_std.view().into_shape_with_order((rows, n_in)).unwrap();
    let (mut y, beta) = match b {
        Some(b) => {
            // y starts as the bias in every row (written once, not zeroed
            // first), then gemm adds x @ W^T.
            let bias = b.value().as_slice().unwrap();
            let mut values = Vec::with_capacity(rows * n_out);
            for _ in 0..rows {
                values.extend_from_slice(bias);
            }
            (
                Array2::from_shape_vec((rows, n_out), values).unwrap(),
                T::one(),
            )
        }
        None => (Array2::<T>::zeros((rows, n_out)), T::zero()),
    };
    gemm_with(precision, T::one(), x2, w.t(), beta, y.view_mut());
    let mut out_shape = sx.to_vec();
    *out_shape.last_mut().unwrap() = n_out;
    (y.into_shape_with_order(IxDyn(&out_shape)).unwrap(), rows)
}

impl<T: Float> Tape<T> {
    /// y = a @ b        a: (..., M, K), b: (..., K, N) or (K, N) -> y: (..., M, N)
    ///
    /// da = dy @ b^T    db = a^T @ dy   (summed over the batch when `b` is shared)
    pub fn matmul(&self, a: &Var<T>, b: &Var<T>) -> Var<T> {
        let (sa, sb) = (a.shape().to_vec(), b.shape().to_vec());
        assert!(
            sa.len() >= 2 && sb.len() >= 2,
            "matmul: operands must have at least 2 axes, got {sa:?} and {sb:?}"
        );
        let k = sa[sa.len() - 1];
        let (k2, _n) = (sb[sb.len() - 2], sb[sb.len() - 1]);
        assert!(
            k == k2,
            "matmul: inner dimensions differ: {sa:?} @ {sb:?} ({k} != {k2})"
        );
        let batch_a = &sa[..sa.len() - 2];
        let batch_b = &sb[..sb.len() - 2];
        assert!(
            batch_a == batch_b || batch_b.is_empty(),
            "matmul: batch shapes differ: {sa:?} @ {sb:?} (b must have a's batch shape or be 2-D)"
        );
        // The batch views below need row-major batch axes: copy other layouts once.
        let standard = |v: &Var<T>| match v.value().is_standard_layout() {
            true => v.value_arc(),
            false => std::sync::Arc::new(v.value().as_standard_layout().into_owned()),
        };
        let (a_saved, b_saved) = (standard(a), standard(b));
        let precision = self.precision();
        let y = batched_product(precision, &a_saved, false, &b_saved, false);
        self.record("matmul", y, &[a, b], move |dy| {
            let da = batched_product(precision, dy, false, &b_saved, true);
            let db = if b_saved.ndim() == 2 && a_saved.ndim() > 2 {
                // Shared b: db = sum over the batch of a_i^T @ dy_i = A^T @ DY
                // with the batch folded into the rows.
                let rows: usize = a_saved.len() / k;
                let a2 = a_saved.view().into_shape_with_order((rows, k)).unwrap();
                let n = dy.shape()[dy.ndim() - 1];
                let dy2 = dy.view().into_shape_with_order((rows, n)).unwrap();
                let mut db = Array2::zeros((k, n));
                gemm_with(precision, T::one(), a2.t(), dy2, T::zero(), db.view_mut());
                db.into_dyn()
            } else {
                batched_product(precision, &a_saved, true, dy, false)
            };
            vec![Some(da), Some(db)]
        })
    }

    /// y = x @ W^T + b      x: (..., IN), W: (OUT, IN), b: (OUT) -> y: (..., OUT)
    ///
    /// dx = dy @ W          dW = dy^T @ x          db = sum over rows of dy
    ///
    /// The rows of every leading axis are folded into one GEMM, and the two
    /// backward GEMMs (dx and dW) run side by side on the thread pool. In a
    /// [`crate::Precision::Bf16`] tape the three GEMMs take bf16-rounded
    /// inputs and sum in f32; the bias and db stay f32.
    pub fn linear(&self, x: &Var<T>, w: &Var<T>, b: Option<&Var<T>>) -> Var<T> {
        let sw = w.shape().to_vec();
        assert!(
            sw.len() == 2,
            "linear: weight must be (OUT, IN), got {sw:?}"
        );
        let (n_out, n_in) = (sw[0], sw[1]);
        let precision = self.precision();
        let (y, rows) = linear_forward(precision, x, view2(w.value()), b);
        let (need_x, need_w) = (x.requires_grad(), w.requires_grad());
        // x is needed for dW only: a frozen weight (LoRA's base) keeps no copy of its input alive.
        let x_saved = need_w.then(|| x.value_arc());
        let w_saved = w.value_arc();
        let x_shape = x.shape().to_vec();
        let inputs: Vec<&Var<T>> = match b {
            Some(b) => vec![x, w, b],
            None => vec![x, w],
        };
        let has_bias = b.is_some();
        let need_b = b.is_some_and(|b| b.requires_grad());
        self.record("linear", y, &inputs, move |dy| {
            let dy_std = dy.as_standard_layout();
            let dy2 = dy_std.view().into_shape_with_order((rows, n_out)).unwrap();
            let (dx, dw) = rayon::join(
                || {
                    need_x.then(|| {
                        let mut dx = Array2::<T>::zeros((rows, n_in));
                        let w = view2(&w_saved);
                        gemm_with(precision, T::one(), dy2, w, T::zero(), dx.view_mut());
                        dx.into_shape_with_order(IxDyn(&x_shape)).unwrap()
                    })
                },
                || {
                    x_saved.map(|x_saved| {
                        let x_std = x_saved.as_standard_layout();
                        let x2 = x_std.view().into_shape_with_order((rows, n_in)).unwrap();
                        let mut dw = Array2::<T>::zeros((n_out, n_in));
                        gemm_with(precision, T::one(), dy2.t(), x2, T::zero(), dw.view_mut());
                        dw.into_dyn()
                    })
                },
            );
            let mut grads = vec![dx, dw];
            if has_bias {
                grads.push(need_b.then(|| dy2.sum_axis(Axis(0)).into_dyn()));
            }
            grads
        })
    }

    /// y = x @ W^T + b      x: (..., IN), W: (OUT, IN) stored as bf16, b: (OUT) -> y: (..., OUT)
    ///
    /// dx = dy @ W          db = sum over rows of dy          (W is frozen: no dW)
    ///
    /// [`Tape::linear`] for a frozen weight kept as bf16 ([`Bf16Matrix`]):
    /// W is widened for each GEMM and dropped after it, and both GEMMs run
    /// in [`Precision::Bf16`] whatever the tape's precision (bf16 inputs, f32
    /// sums), so the result is [`Tape::linear`]'s on a bf16 tape with W's
    /// f32 values rounded to bf16, bit for bit. `f64` tapes compute exactly.
    pub fn linear_bf16(&self, x: &Var<T>, w: &Arc<Bf16Matrix>, b: Option<&Var<T>>) -> Var<T> {
        let (n_out, n_in) = w.dim();
        let (y, rows) = linear_forward(Precision::Bf16, x, w.to_array::<T>().view(), b);
        let w_saved = w.clone();
        let x_shape = x.shape().to_vec();
        let need_x = x.requires_grad();
        let inputs: Vec<&Var<T>> = std::iter::once(x).chain(b).collect();
        let has_bias = b.is_some();
        let need_b = b.is_some_and(|b| b.requires_grad());
        self.record("linear_bf16", y, &inputs, move |dy| {
            let dy_std = dy.as_standard_layout();
            let dy2 = dy_std.view().into_shape_with_order((rows, n_out)).unwrap();
            let dx = need_x.then(|| {
                let mut dx = Array2::<T>::zeros((rows, n_in));
                let w = w_saved.to_array::<T>();
                gemm_with(
                    Precision::Bf16,
                    T::one(),
                    dy2,
                    w.view(),
                    T::zero(),
                    dx.view_mut(),
                );
                dx.into_shape_with_order(IxDyn(&x_shape)).unwrap()
            });
            let mut grads = vec![dx];
            if has_bias {
                grads.push(need_b.then(|| dy2.sum_axis(Axis(0)).into_dyn()));
            }
            grads
        })
    }
}
