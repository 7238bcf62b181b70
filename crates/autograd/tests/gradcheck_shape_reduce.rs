//! Gradient checks of reductions and shape ops (f64, central differences),
//! on several shapes: size-1 axes, odd sizes, every axis, broadcasts, and
//! inputs stored in a non-standard layout.

use autograd::gradcheck::{gradcheck, gradcheck_at, random_input_transposed, random_inputs};
use autograd::Tensor;

/// A (2, 3, 4) input stored with permuted axes (neither row- nor column-major).
fn permuted_2x3x4() -> Tensor<f64> {
    let stored = random_inputs(&[&[3, 4, 2]], 9).remove(0); // (3, 4, 2)
    let t = stored.permuted_axes(vec![2, 0, 1]); // (2, 3, 4)
    assert!(!t.is_standard_layout());
    t
}

#[test]
fn sum_and_mean_over_axes() {
    let cases: &[(&[usize], &[usize])] = &[
        (&[5], &[0]),
        (&[1], &[0]),
        (&[3, 4], &[0]),
        (&[3, 4], &[1]),
        (&[3, 4], &[0, 1]),
        (&[3, 4], &[]),
        (&[2, 3, 5], &[1]),
        (&[2, 3, 5], &[2, 0]),
        (&[2, 1, 5], &[1]),
        (&[1, 7, 1], &[0, 2]),
    ];
    for &(shape, axes) in cases {
        for keepdim in [false, true] {
            gradcheck(&[shape], |t, x| t.sum(&x[0], axes, keepdim));
            gradcheck(&[shape], |t, x| t.mean(&x[0], axes, keepdim));
        }
    }
}

#[test]
fn sum_keepdim_broadcasts_back() {
    // x - mean(x) along a non-last axis: the classic normalisation pattern.
    gradcheck(&[&[3, 4, 2]], |t, x| {
        let m = t.mean(&x[0], &[1], true);
        let centered = t.sub(&x[0], &m);
        t.mul(&centered, &centered)
    });
}

#[test]
fn reductions_of_non_contiguous_inputs() {
    gradcheck_at(vec![random_input_transposed(&[3, 5], 1)], |t, x| {
        t.sum(&x[0], &[1], false)
    });
    gradcheck_at(vec![random_input_transposed(&[3, 5], 1)], |t, x| {
        t.mean(&x[0], &[0], true)
    });
    gradcheck_at(vec![permuted_2x3x4()], |t, x| t.sum(&x[0], &[0, 2], false));
    gradcheck_at(vec![permuted_2x3x4()], |t, x| t.sum_all(&x[0]));
    gradcheck_at(vec![permuted_2x3x4()], |t, x| t.mean_all(&x[0]));
}

#[test]
fn reshape() {
    gradcheck(&[&[3, 4]], |t, x| t.reshape(&x[0], &[2, 6]));
    gradcheck(&[&[2, 3, 4]], |t, x| t.reshape(&x[0], &[24]));
    gradcheck(&[&[1]], |t, x| t.reshape(&x[0], &[1, 1, 1]));
    gradcheck(&[&[5]], |t, x| t.reshape(&x[0], &[5, 1]));
    // Row-major order of a transposed input, not its memory order.
    gradcheck_at(vec![random_input_transposed(&[3, 4], 2)], |t, x| {
        t.reshape(&x[0], &[4, 3])
    });
    gradcheck_at(vec![permuted_2x3x4()], |t, x| t.reshape(&x[0], &[6, 4]));
}

#[test]
fn reshape_keeps_row_major_order() {
    let tape = autograd::Tape::<f64>::new();
    let stored = ndarray::array![[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]].into_dyn();
    let x = tape.leaf(stored.reversed_axes()); // logically [[1, 4], [2, 5], [3, 6]]
    let y = tape.reshape(&x, &[6]);
    assert_eq!(
        y.value().as_slice().unwrap(),
        &[1.0, 4.0, 2.0, 5.0, 3.0, 6.0]
    );
}

#[test]
fn transpose_and_permute() {
    gradcheck(&[&[3, 4]], |t, x| t.transpose(&x[0], 0, 1));
    gradcheck(&[&[2, 3, 5]], |t, x| t.transpose(&x[0], 0, 2));
    gradcheck(&[&[2, 3, 5]], |t, x| t.transpose(&x[0], 1, 1));
    gradcheck(&[&[2, 3, 4, 5]], |t, x| t.permute(&x[0], &[0, 2, 1, 3]));
    gradcheck(&[&[2, 3, 4]], |t, x| t.permute(&x[0], &[2, 0, 1]));
    gradcheck(&[&[1, 1]], |t, x| t.permute(&x[0], &[1, 0]));
    gradcheck_at(vec![permuted_2x3x4()], |t, x| t.permute(&x[0], &[1, 2, 0]));
    gradcheck_at(vec![random_input_transposed(&[3, 4], 3)], |t, x| {
        t.transpose(&x[0], 0, 1)
    });
}

#[test]
fn narrow_on_every_axis() {
    gradcheck(&[&[7]], |t, x| t.narrow(&x[0], 0, 2, 3));
    gradcheck(&[&[3, 5]], |t, x| t.narrow(&x[0], 0, 1, 2));
    gradcheck(&[&[3, 5]], |t, x| t.narrow(&x[0], 1, 4, 1));
    gradcheck(&[&[3, 5]], |t, x| t.narrow(&x[0], 1, 0, 5));
    gradcheck(&[&[2, 3, 5]], |t, x| t.narrow(&x[0], 1, 1, 2));
    gradcheck_at(vec![permuted_2x3x4()], |t, x| t.narrow(&x[0], 2, 1, 2));
    // The same input read twice through overlapping slices accumulates.
    gradcheck(&[&[6]], |t, x| {
        t.mul(&t.narrow(&x[0], 0, 0, 4), &t.narrow(&x[0], 0, 2, 4))
    });
}

#[test]
fn concat_on_every_axis() {
    gradcheck(&[&[2], &[3]], |t, x| t.concat(&[&x[0], &x[1]], 0));
    gradcheck(&[&[2, 3], &[1, 3], &[4, 3]], |t, x| {
        t.concat(&[&x[0], &x[1], &x[2]], 0)
    });
    gradcheck(&[&[2, 3], &[2, 1]], |t, x| t.concat(&[&x[0], &x[1]], 1));
    gradcheck(&[&[2, 3, 4], &[2, 5, 4]], |t, x| {
        t.concat(&[&x[0], &x[1]], 1)
    });
    // The same Var twice.
    gradcheck(&[&[2, 3]], |t, x| t.concat(&[&x[0], &x[0]], 1));
    gradcheck_at(
        vec![permuted_2x3x4(), random_inputs(&[&[2, 3, 1]], 4).remove(0)],
        |t, x| t.concat(&[&x[0], &x[1]], 2),
    );
}

#[test]
fn split_on_every_axis() {
    // Each piece goes through its own op so that a mixed-up piece would show.
    gradcheck(&[&[7, 2]], |t, x| {
        let p = t.split(&x[0], 0, &[2, 4, 1]);
        t.concat(
            &[&t.tanh(&p[0]), &t.exp(&p[1]), &t.mul_scalar(&p[2], 3.0)],
            0,
        )
    });
    gradcheck(&[&[2, 9]], |t, x| {
        let p = t.split(&x[0], 1, &[3, 3, 3]);
        t.add(&t.mul(&p[0], &p[1]), &p[2])
    });
    gradcheck(&[&[2, 3, 4]], |t, x| {
        let p = t.split(&x[0], 1, &[1, 2]);
        t.mul(&p[0], &t.sum(&p[1], &[1], true))
    });
    gradcheck_at(vec![permuted_2x3x4()], |t, x| {
        let p = t.split(&x[0], 2, &[3, 1]);
        t.mul(&p[0], &p[1])
    });
}

#[test]
fn split_then_concat_is_identity() {
    let tape = autograd::Tape::<f64>::new();
    let x = tape.leaf(random_inputs(&[&[3, 10]], 5).remove(0));
    let pieces = tape.split(&x, 1, &[4, 0, 6]);
    assert_eq!(pieces[1].shape(), &[3, 0]);
    let refs: Vec<_> = pieces.iter().collect();
    let y = tape.concat(&refs, 1);
    assert_eq!(y.value(), x.value());
}

#[test]
fn shape_ops_feeding_broadcasts() {
    // Each output is combined with a tensor broadcast along one of its axes,
    // so that a gradient routed to the wrong position or axis would show.
    gradcheck(&[&[3, 4], &[1, 3]], |t, x| {
        t.mul(&t.transpose(&x[0], 0, 1), &x[1])
    });
    gradcheck(&[&[2, 3, 4], &[3, 1, 1]], |t, x| {
        t.add(&t.permute(&x[0], &[1, 2, 0]), &x[1])
    });
    gradcheck(&[&[2, 6], &[3]], |t, x| {
        t.mul(&t.reshape(&x[0], &[4, 3]), &x[1])
    });
    gradcheck(&[&[4, 5], &[4, 1]], |t, x| {
        t.mul(&t.narrow(&x[0], 1, 1, 3), &x[1])
    });
    gradcheck(&[&[2, 3], &[2, 2], &[1, 5]], |t, x| {
        t.div(
            &t.concat(&[&x[0], &x[1]], 1),
            &t.add_scalar(&t.mul(&x[2], &x[2]), 1.0),
        )
    });
    gradcheck(&[&[3, 4], &[4]], |t, x| {
        t.sub(&x[1], &t.sum(&x[0], &[0], false))
    });
}
