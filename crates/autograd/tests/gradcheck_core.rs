//! Gradient checks of the core ops (f64, central differences).

use autograd::gradcheck::gradcheck;

#[test]
fn elementwise_binary_with_broadcasting() {
    for (sa, sb) in [
        (&[3usize, 4][..], &[3usize, 4][..]),
        (&[2, 3, 5], &[5]),
        (&[2, 1, 5], &[3, 1]),
        (&[1], &[4, 3]),
    ] {
        gradcheck(&[sa, sb], |t, x| t.add(&x[0], &x[1]));
        gradcheck(&[sa, sb], |t, x| t.sub(&x[0], &x[1]));
        gradcheck(&[sa, sb], |t, x| t.mul(&x[0], &x[1]));
        gradcheck(&[sa, sb], |t, x| {
            let positive = t.add_scalar(&t.mul(&x[1], &x[1]), 0.5);
            t.div(&x[0], &positive)
        });
    }
}

#[test]
fn unary_ops() {
    for shape in [&[1usize][..], &[7], &[3, 5], &[2, 3, 4]] {
        gradcheck(&[shape], |t, x| t.exp(&x[0]));
        gradcheck(&[shape], |t, x| t.tanh(&x[0]));
        gradcheck(&[shape], |t, x| t.sigmoid(&x[0]));
        gradcheck(&[shape], |t, x| t.logsigmoid(&x[0]));
        gradcheck(&[shape], |t, x| t.gelu(&x[0]));
        gradcheck(&[shape], |t, x| t.neg(&x[0]));
        gradcheck(&[shape], |t, x| {
            t.mul_scalar(&t.add_scalar(&x[0], 2.0), -3.0)
        });
        gradcheck(&[shape], |t, x| {
            t.log(&t.add_scalar(&t.mul(&x[0], &x[0]), 0.1))
        });
        gradcheck(&[shape], |t, x| {
            t.powf(&t.add_scalar(&t.mul(&x[0], &x[0]), 0.1), 1.5)
        });
    }
}

#[test]
fn matmul_2d_and_batched() {
    gradcheck(&[&[3, 4], &[4, 5]], |t, x| t.matmul(&x[0], &x[1]));
    gradcheck(&[&[1, 1], &[1, 1]], |t, x| t.matmul(&x[0], &x[1]));
    gradcheck(&[&[2, 3, 4], &[2, 4, 5]], |t, x| t.matmul(&x[0], &x[1]));
    gradcheck(&[&[2, 3, 4], &[4, 5]], |t, x| t.matmul(&x[0], &x[1]));
    gradcheck(&[&[2, 2, 3, 1], &[2, 2, 1, 5]], |t, x| {
        t.matmul(&x[0], &x[1])
    });
}

#[test]
fn linear_with_and_without_bias() {
    gradcheck(&[&[5, 3], &[4, 3], &[4]], |t, x| {
        t.linear(&x[0], &x[1], Some(&x[2]))
    });
    gradcheck(&[&[2, 3, 7], &[1, 7], &[1]], |t, x| {
        t.linear(&x[0], &x[1], Some(&x[2]))
    });
    gradcheck(&[&[1, 1], &[3, 1]], |t, x| t.linear(&x[0], &x[1], None));
}

#[test]
fn reductions() {
    gradcheck(&[&[3, 4]], |t, x| t.sum_all(&x[0]));
    gradcheck(&[&[1]], |t, x| t.mean_all(&x[0]));
}

#[test]
fn value_used_twice_accumulates() {
    gradcheck(&[&[4]], |t, x| {
        let y = t.tanh(&x[0]);
        t.mul(&t.add(&y, &x[0]), &y)
    });
}

mod non_contiguous {
    //! The same ops on inputs stored in a non-standard layout (a transposed
    //! or permuted array): no op may assume row-major data.

    use autograd::gradcheck::{gradcheck_at, random_input_transposed, random_inputs};
    use autograd::Tensor;

    fn permuted(shape_after: [usize; 3], seed: u64) -> Tensor<f64> {
        // stored as (d1, d2, d0), viewed as (d0, d1, d2)
        let [d0, d1, d2] = shape_after;
        let t = random_inputs(&[&[d1, d2, d0]], seed)
            .remove(0)
            .permuted_axes(vec![2, 0, 1]);
        assert!(!t.is_standard_layout());
        t
    }

    #[test]
    fn elementwise() {
        let x = || random_input_transposed(&[3, 4], 1);
        let y = || random_input_transposed(&[3, 4], 2);
        gradcheck_at(vec![x(), y()], |t, v| t.add(&v[0], &v[1]));
        gradcheck_at(vec![x(), random_inputs(&[&[3, 4]], 3).remove(0)], |t, v| {
            t.add(&v[0], &v[1])
        });
        gradcheck_at(vec![x(), y()], |t, v| t.sub(&v[0], &v[1]));
        gradcheck_at(vec![x(), y()], |t, v| t.mul(&v[0], &v[1]));
        gradcheck_at(vec![x(), random_input_transposed(&[1, 4], 4)], |t, v| {
            t.mul(&v[0], &v[1])
        });
        gradcheck_at(vec![x()], |t, v| t.gelu(&v[0]));
        gradcheck_at(vec![x()], |t, v| t.tanh(&v[0]));
        gradcheck_at(vec![x()], |t, v| t.logsigmoid(&v[0]));
        gradcheck_at(vec![permuted([2, 3, 4], 5)], |t, v| t.exp(&v[0]));
        gradcheck_at(
            vec![
                permuted([2, 3, 4], 5),
                random_inputs(&[&[3, 1]], 6).remove(0),
            ],
            |t, v| t.sub(&v[0], &v[1]),
        );
    }

    #[test]
    fn matmul_and_linear() {
        gradcheck_at(
            vec![
                random_input_transposed(&[3, 4], 1),
                random_input_transposed(&[4, 5], 2),
            ],
            |t, v| t.matmul(&v[0], &v[1]),
        );
        gradcheck_at(
            vec![permuted([2, 3, 4], 3), random_input_transposed(&[4, 5], 4)],
            |t, v| t.matmul(&v[0], &v[1]),
        );
        gradcheck_at(
            vec![
                permuted([2, 3, 4], 5),
                random_input_transposed(&[5, 4], 6),
                random_inputs(&[&[5]], 7).remove(0),
            ],
            |t, v| t.linear(&v[0], &v[1], Some(&v[2])),
        );
    }
}
