//! Gradient checks of the Llama-family ops (f64, central differences), and
//! each fused op against the same computation built from primitive ops.

use autograd::gradcheck::{
    gradcheck, gradcheck_at, gradcheck_with, random_input_transposed, random_inputs,
    GradcheckOptions,
};
use autograd::{Tape, Tensor, Var};

/// A function of input tensors, as the gradient checks take it.
type OpFn<'a> = &'a dyn Fn(&Tape<f64>, &[Var<f64>]) -> Var<f64>;

/// Values and input gradients of `fused` and `reference` agree to `tol`.
fn assert_same_as(
    shapes: &[&[usize]],
    tol: f64,
    fused: impl Fn(&Tape<f64>, &[Var<f64>]) -> Var<f64>,
    reference: impl Fn(&Tape<f64>, &[Var<f64>]) -> Var<f64>,
) {
    let inputs = random_inputs(shapes, 17);
    let run = |f: OpFn| {
        let tape = Tape::new();
        let vars: Vec<Var<f64>> = inputs.iter().map(|x| tape.leaf(x.clone())).collect();
        let y = f(&tape, &vars);
        let value = y.value().clone();
        let seed = random_inputs(&[y.shape()], 5).remove(0);
        let grads = tape.backward_with(&y, seed);
        let grads: Vec<Tensor<f64>> = vars.iter().map(|v| grads.get_or_zeros(v)).collect();
        (value, grads)
    };
    let (a, ga) = run(&fused);
    let (b, gb) = run(&reference);
    assert_eq!(a.shape(), b.shape());
    let close = |x: &Tensor<f64>, y: &Tensor<f64>| {
        x.iter()
            .zip(y.iter())
            .all(|(p, q)| (p - q).abs() <= tol * (1.0 + q.abs()))
    };
    assert!(close(&a, &b), "values differ:\n{a}\n{b}");
    for (i, (x, y)) in ga.iter().zip(&gb).enumerate() {
        assert!(close(x, y), "gradients of input {i} differ:\n{x}\n{y}");
    }
}

// ---------------------------------------------------------------- RMSNorm

#[test]
fn rms_norm_gradients() {
    for shape in [
        &[1usize, 1][..],
        &[1],
        &[3, 5],
        &[2, 3, 7],
        &[1, 4],
        &[33, 3],
    ] {
        let c = *shape.last().unwrap();
        gradcheck(&[shape, &[c]], |t, x| t.rms_norm(&x[0], &x[1], 1e-6));
    }
    // a large eps (the rstd term matters), and an input not in standard layout
    gradcheck(&[&[4, 5], &[5]], |t, x| t.rms_norm(&x[0], &x[1], 0.5));
    gradcheck_at(
        vec![
            random_input_transposed(&[5, 6], 3),
            random_inputs(&[&[6]], 4).remove(0),
        ],
        |t, x| t.rms_norm(&x[0], &x[1], 1e-6),
    );
}

#[test]
fn rms_norm_per_head_like_qwen3_q_norm() {
    // (N, NH * hd) viewed as (N, NH, hd), weight (hd): every head normalized alone
    gradcheck(&[&[3, 2 * 5], &[5]], |t, x| {
        let heads = t.reshape(&x[0], &[3, 2, 5]);
        t.rms_norm(&heads, &x[1], 1e-6)
    });
}

#[test]
fn rms_norm_gradients_in_the_parallel_path() {
    // enough rows for several blocks of partial dweight sums on rayon
    let report = gradcheck_with(
        random_inputs(&[&[300, 131], &[131]], 3),
        &GradcheckOptions {
            max_entries_per_input: 60,
            ..Default::default()
        },
        |t, x| t.rms_norm(&x[0], &x[1], 1e-6),
    );
    assert!(report.max_error < 1e-6, "{report:?}");
}

#[test]
fn rms_norm_matches_primitive_ops() {
    assert_same_as(
        &[&[3, 4, 7], &[7]],
        1e-12,
        |t, x| t.rms_norm(&x[0], &x[1], 1e-6),
        |t, x| {
            // x / sqrt(mean(x^2) + eps) * weight
            let ms = t.mean(&t.mul(&x[0], &x[0]), &[2], true);
            let rms = t.powf(&t.add_scalar(&ms, 1e-6), 0.5);
            t.mul(&t.div(&x[0], &rms), &x[1])
        },
    );
}

#[test]
#[should_panic(expected = "rms_norm: weight [4]")]
fn rms_norm_refuses_a_weight_of_the_wrong_size() {
    let tape = Tape::<f64>::new();
    let x = tape.leaf(Tensor::zeros(ndarray::IxDyn(&[2, 5])));
    let w = tape.leaf(Tensor::ones(ndarray::IxDyn(&[4])));
    tape.rms_norm(&x, &w, 1e-6);
}

// ---------------------------------------------------------------- SiLU, SwiGLU

#[test]
fn silu_gradients() {
    gradcheck(&[&[1]], |t, x| t.silu(&x[0]));
    gradcheck(&[&[3, 5]], |t, x| t.silu(&x[0]));
    gradcheck(&[&[2, 3, 7]], |t, x| t.silu(&x[0]));
}

#[test]
fn swiglu_gradients() {
    for shape in [&[1usize][..], &[1, 1], &[3, 5], &[2, 3, 7]] {
        gradcheck(&[shape, shape], |t, x| t.swiglu(&x[0], &x[1]));
    }
    // the same input as gate and up: both gradients accumulate
    gradcheck(&[&[4, 3]], |t, x| t.swiglu(&x[0], &x[0]));
    gradcheck_at(
        vec![
            random_input_transposed(&[4, 5], 1),
            random_input_transposed(&[4, 5], 2),
        ],
        |t, x| t.swiglu(&x[0], &x[1]),
    );
}

#[test]
fn swiglu_gradients_in_the_parallel_path() {
    let report = gradcheck_with(
        random_inputs(&[&[70, 513], &[70, 513]], 8),
        &GradcheckOptions {
            max_entries_per_input: 80,
            ..Default::default()
        },
        |t, x| t.swiglu(&x[0], &x[1]),
    );
    assert!(report.max_error < 1e-6, "{report:?}");
}

#[test]
fn swiglu_matches_primitive_ops() {
    assert_same_as(
        &[&[3, 11], &[3, 11]],
        1e-13,
        |t, x| t.swiglu(&x[0], &x[1]),
        |t, x| t.mul(&t.mul(&x[0], &t.sigmoid(&x[0])), &x[1]),
    );
    assert_same_as(
        &[&[2, 9]],
        1e-13,
        |t, x| t.silu(&x[0]),
        |t, x| t.mul(&x[0], &t.sigmoid(&x[0])),
    );
}

#[test]
fn silu_saturates_in_f32() {
    let tape = Tape::<f32>::new();
    let g = tape.leaf(ndarray::arr1(&[-1e4f32, -100.0, 0.0, 100.0, 1e4]).into_dyn());
    let u = tape.leaf(ndarray::arr1(&[1f32; 5]).into_dyn());
    let y = tape.swiglu(&g, &u);
    assert_eq!(y.value().as_slice().unwrap(), &[0.0, -0.0, 0.0, 100.0, 1e4]);
    let loss = tape.sum_all(&y);
    let grads = tape.backward(&loss);
    assert!(grads.get(&g).unwrap().iter().all(|v| v.is_finite()));
    assert!(grads.get(&u).unwrap().iter().all(|v| v.is_finite()));
}
