//! Softmax and log-softmax: gradient checks along every axis, agreement with
//! the same function built from primitive ops, and extreme logits.

use autograd::gradcheck::{gradcheck, gradcheck_at, random_input_transposed, random_inputs};
use autograd::{Tape, Tensor, Var};
use ndarray::{array, Axis};

#[test]
fn gradcheck_along_every_axis() {
    let shapes: &[&[usize]] = &[&[1], &[5], &[1, 1], &[3, 4], &[1, 7], &[4, 1], &[2, 3, 5]];
    for &shape in shapes {
        for axis in 0..shape.len() {
            gradcheck(&[shape], |t, x| t.softmax(&x[0], axis));
            gradcheck(&[shape], |t, x| t.log_softmax(&x[0], axis));
        }
    }
}

#[test]
fn gradcheck_of_non_contiguous_inputs() {
    for axis in 0..2 {
        gradcheck_at(vec![random_input_transposed(&[3, 5], 1)], |t, x| {
            t.softmax(&x[0], axis)
        });
        gradcheck_at(vec![random_input_transposed(&[3, 5], 1)], |t, x| {
            t.log_softmax(&x[0], axis)
        });
    }
    let permuted = random_inputs(&[&[4, 2, 3]], 2)
        .remove(0)
        .permuted_axes(vec![1, 2, 0]);
    gradcheck_at(vec![permuted.clone()], |t, x| t.softmax(&x[0], 1));
    gradcheck_at(vec![permuted], |t, x| t.log_softmax(&x[0], 2));
}

#[test]
fn gradcheck_with_a_broadcast_afterwards() {
    // softmax output times a row vector broadcast over a non-last axis.
    gradcheck(&[&[3, 4], &[4]], |t, x| t.mul(&t.softmax(&x[0], 0), &x[1]));
    gradcheck(&[&[2, 3, 4], &[3, 1]], |t, x| {
        t.mul(&t.log_softmax(&x[0], 1), &x[1])
    });
}

/// softmax from primitives: exp(x) / sum(exp(x)) (fine for small logits).
fn softmax_reference(t: &Tape<f64>, x: &Var<f64>, axis: usize) -> Var<f64> {
    let e = t.exp(x);
    t.div(&e, &t.sum(&e, &[axis], true))
}

/// log-softmax from primitives: x - log(sum(exp(x))).
fn log_softmax_reference(t: &Tape<f64>, x: &Var<f64>, axis: usize) -> Var<f64> {
    let lse = t.log(&t.sum(&t.exp(x), &[axis], true));
    t.sub(x, &lse)
}

/// Values and gradients (seeded with `w`) of `f` at `x`.
fn value_and_grad(
    x: &Tensor<f64>,
    w: &Tensor<f64>,
    f: impl Fn(&Tape<f64>, &Var<f64>) -> Var<f64>,
) -> (Tensor<f64>, Tensor<f64>) {
    let tape = Tape::new();
    let xv = tape.leaf(x.clone());
    let y = f(&tape, &xv);
    let value = y.value().clone();
    let grads = tape.backward_with(&y, w.clone());
    (value, grads.get(&xv).unwrap().clone())
}

fn assert_close(a: &Tensor<f64>, b: &Tensor<f64>, tol: f64, what: &str) {
    assert_eq!(a.shape(), b.shape(), "{what}: shapes differ");
    for (x, y) in a.iter().zip(b.iter()) {
        assert!((x - y).abs() <= tol, "{what}: {x} vs {y}");
    }
}

#[test]
fn fused_kernels_match_primitive_ops() {
    for (shape, axis) in [
        (&[6usize, 33][..], 1),
        (&[4, 5, 3], 1),
        (&[4, 5, 3], 0),
        (&[2, 50], 0),
    ] {
        let x = random_inputs(&[shape], 3).remove(0);
        let w = random_inputs(&[shape], 4).remove(0);
        let (y, dx) = value_and_grad(&x, &w, |t, x| t.softmax(x, axis));
        let (y_ref, dx_ref) = value_and_grad(&x, &w, |t, x| softmax_reference(t, x, axis));
        assert_close(&y, &y_ref, 1e-14, "softmax value");
        assert_close(&dx, &dx_ref, 1e-13, "softmax grad");
        let (y, dx) = value_and_grad(&x, &w, |t, x| t.log_softmax(x, axis));
        let (y_ref, dx_ref) = value_and_grad(&x, &w, |t, x| log_softmax_reference(t, x, axis));
        assert_close(&y, &y_ref, 1e-13, "log_softmax value");
        assert_close(&dx, &dx_ref, 1e-13, "log_softmax grad");
    }
}

#[test]
fn rows_sum_to_one_in_f32_on_large_inputs() {
    // Big enough to take the parallel path.
    let (rows, c) = (300, 257);
    let x = Tensor::from_shape_fn(ndarray::IxDyn(&[rows, c]), |ix| {
        ((ix[0] * 31 + ix[1] * 17) % 101) as f32 * 0.1 - 5.0
    });
    let tape = Tape::<f32>::no_grad();
    let y = tape.softmax(&tape.constant(x.clone()), 1);
    for row in y.value().axis_iter(Axis(0)) {
        let s: f32 = row.sum();
        assert!((s - 1.0).abs() < 1e-5, "row sums to {s}");
    }
    let y0 = tape.softmax(&tape.constant(x), 0);
    for col in y0.value().axis_iter(Axis(1)) {
        let s: f32 = col.sum();
        assert!((s - 1.0).abs() < 1e-5, "column sums to {s}");
    }
}

#[test]
fn extreme_logits_stay_finite_and_exact() {
    // Logits of +-1e4 overflow exp() in any precision; the shifted forms do not.
    let x = array![[1e4, -1e4, 0.0], [1e4, 1e4 - 1.0, -1e4]].into_dyn();
    let w = array![[1.0, -2.0, 0.5], [0.25, 1.5, -1.0]].into_dyn();
    let (y, dx) = value_and_grad(&x, &w, |t, x| t.softmax(x, 1));
    assert!(y.iter().chain(dx.iter()).all(|v| v.is_finite()));
    let e1 = (-1.0f64).exp();
    let (p0, p1) = (1.0 / (1.0 + e1), e1 / (1.0 + e1));
    let expected = array![[1.0, 0.0, 0.0], [p0, p1, 0.0]].into_dyn();
    assert_close(&y, &expected, 1e-15, "softmax of +-1e4");
    // dx = y (w - sum(w y)): row 0 is all zeros (y is one-hot), row 1 as computed.
    let dot = 0.25 * p0 + 1.5 * p1;
    let expected_dx =
        array![[0.0, 0.0, 0.0], [p0 * (0.25 - dot), p1 * (1.5 - dot), 0.0]].into_dyn();
    assert_close(&dx, &expected_dx, 1e-15, "softmax grad at +-1e4");

    let (y, dx) = value_and_grad(&x, &w, |t, x| t.log_softmax(x, 1));
    assert!(y.iter().chain(dx.iter()).all(|v| v.is_finite()));
    let lse1 = 1e4 + (1.0 + e1).ln();
    let expected = array![
        [0.0, -2e4, -1e4],
        [1e4 - lse1, 1e4 - 1.0 - lse1, -1e4 - lse1]
    ]
    .into_dyn();
    assert_close(&y, &expected, 1e-12, "log_softmax of +-1e4");
    // dx = w - softmax * sum(w)
    let (s0, s1) = (w.row_sum(0), w.row_sum(1));
    let expected_dx =
        array![[1.0 - s0, -2.0, 0.5], [0.25 - p0 * s1, 1.5 - p1 * s1, -1.0]].into_dyn();
    // The backward reads softmax as e^y, and y = x - lse carries the rounding
    // of 1e4 (~1e-12 absolute): still 12 correct digits.
    assert_close(&dx, &expected_dx, 1e-11, "log_softmax grad at +-1e4");

    // f32 too, along a non-last axis.
    let tape = Tape::<f32>::new();
    let xf = tape.leaf(x.mapv(|v| v as f32).reversed_axes());
    let y = tape.log_softmax(&xf, 0);
    let loss = tape.sum_all(&tape.mul(&y, &tape.constant(w.mapv(|v| v as f32).reversed_axes())));
    assert!(loss.item().is_finite());
    let grads = tape.backward(&loss);
    assert!(grads.get(&xf).unwrap().iter().all(|v| v.is_finite()));
}

trait RowSum {
    fn row_sum(&self, r: usize) -> f64;
}

impl RowSum for Tensor<f64> {
    fn row_sum(&self, r: usize) -> f64 {
        self.index_axis(Axis(0), r).sum()
    }
}

#[test]
fn logsigmoid_at_extremes() {
    // log sigmoid(x) = -log(1 + e^-x): -e^-x-ish for large x, x for very negative x.
    let x = array![1e4, -1e4, 40.0, -40.0, 0.0].into_dyn();
    let w = Tensor::from_elem(ndarray::IxDyn(&[5]), 1.0);
    let (y, dx) = value_and_grad(&x, &w, |t, x| t.logsigmoid(x));
    let expected = [
        0.0,
        -1e4,
        -(-40f64).exp(),
        -40.0 - (-40f64).exp(),
        -(2f64.ln()),
    ];
    for (i, (&v, &e)) in y.iter().zip(&expected).enumerate() {
        assert!(
            (v - e).abs() <= 1e-15 * e.abs().max(1.0),
            "logsigmoid[{i}] = {v}, expected {e}"
        );
    }
    // d/dx log sigmoid(x) = sigmoid(-x)
    let expected_dx = [0.0, 1.0, (-40f64).exp(), 1.0, 0.5];
    for (i, (&d, &e)) in dx.iter().zip(&expected_dx).enumerate() {
        assert!(
            (d - e).abs() <= 1e-15 * e.abs().max(1e-300),
            "dlogsigmoid[{i}] = {d}, expected {e}"
        );
    }
    // For large positive x the value is the tiny -e^-x, not a rounded 0.
    assert!(y[2] < 0.0 && (y[2] / expected[2] - 1.0).abs() < 1e-14);

    let tape = Tape::<f32>::new();
    let xf = tape.leaf(x.mapv(|v| v as f32));
    let y = tape.logsigmoid(&xf);
    assert_eq!(y.value()[1], -1e4f32);
    let loss = tape.sum_all(&y);
    let grads = tape.backward(&loss);
    let dxf = grads.get(&xf).unwrap();
    assert!(dxf.iter().all(|v| v.is_finite()));
    assert_eq!(dxf[0], 0.0);
    assert_eq!(dxf[1], 1.0);
}
