//! Gradient checks of the Llama-family ops (f64, central differences), and
//! each fused op against the same computation built from primitive ops.

use autograd::gradcheck::{
    gradcheck, gradcheck_at, gradcheck_with, random_input_transposed, random_inputs,
    GradcheckOptions,
};
use autograd::{Llama3RopeScaling, RopeFrequencies, Tape, Tensor, Var};

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

// ---------------------------------------------------------------- RoPE

fn freqs(head_dim: usize) -> RopeFrequencies {
    RopeFrequencies::new(10000.0, head_dim)
}

#[test]
fn rope_gradients() {
    // (N, NH * hd): head size 2 (one pair), odd row counts, one head and three
    gradcheck(&[&[1, 2]], |t, x| t.rope(&x[0], &[0], &freqs(2), 2));
    gradcheck(&[&[3, 2]], |t, x| {
        t.rope(&x[0], &[5, 0, 9999], &freqs(2), 2)
    });
    gradcheck(&[&[5, 3 * 6]], |t, x| {
        t.rope(&x[0], &[0, 1, 2, 1, 700], &freqs(6), 6)
    });
    // (B, T, NH * hd) with the same positions in both sequences
    gradcheck(&[&[2, 3, 2 * 4]], |t, x| {
        t.rope(&x[0], &[0, 1, 2, 0, 1, 2], &freqs(4), 4)
    });
    // llama3 frequencies, and an input not in standard layout
    let scaling = Llama3RopeScaling {
        factor: 32.0,
        low_freq_factor: 1.0,
        high_freq_factor: 4.0,
        original_max_position_embeddings: 64,
    };
    let f = RopeFrequencies::llama3(500000.0, 8, &scaling);
    gradcheck_at(vec![random_input_transposed(&[3, 16], 6)], |t, x| {
        t.rope(&x[0], &[3, 100, 4000], &f, 8)
    });
}

#[test]
fn rope_gradients_in_the_parallel_path() {
    let positions: Vec<usize> = (0..200).map(|i| i % 50).collect();
    let report = gradcheck_with(
        random_inputs(&[&[200, 4 * 64]], 9),
        &GradcheckOptions {
            max_entries_per_input: 80,
            ..Default::default()
        },
        |t, x| t.rope(&x[0], &positions, &freqs(64), 64),
    );
    assert!(report.max_error < 1e-6, "{report:?}");
}

/// transformers' formula, with primitive ops: x * cat(cos, cos) + rotate_half(x) * cat(sin, sin).
#[test]
fn rope_matches_rotate_half_with_primitive_ops() {
    let (n, nh, hd) = (3, 2, 6);
    let positions = [4, 0, 31];
    let f = freqs(hd);
    let (cos, sin) = f.cos_sin::<f64>(&positions);
    let half = hd / 2;
    let table = |t: &[f64]| {
        // (N, 1, hd): the halves repeated, broadcast over heads
        Tensor::from_shape_fn(vec![n, 1, hd], |ix| t[ix[0] * half + ix[2] % half])
    };
    let (cos, sin) = (table(&cos), table(&sin));
    assert_same_as(
        &[&[n, nh * hd]],
        1e-14,
        |t, x| t.rope(&x[0], &positions, &f, hd),
        |t, x| {
            let heads = t.reshape(&x[0], &[n, nh, hd]);
            let halves = t.split(&heads, 2, &[half, half]);
            let rotated = t.concat(&[&t.neg(&halves[1]), &halves[0]], 2);
            let y = t.add(
                &t.mul(&heads, &t.constant(cos.clone())),
                &t.mul(&rotated, &t.constant(sin.clone())),
            );
            t.reshape(&y, &[n, nh * hd])
        },
    );
}

#[test]
fn rope_at_position_zero_is_the_identity() {
    let x = random_inputs(&[&[2, 12]], 1).remove(0);
    let tape = Tape::<f64>::no_grad();
    let y = tape.rope(&tape.constant(x.clone()), &[0, 0], &freqs(4), 4);
    assert_eq!(y.value(), &x);
}

#[test]
fn llama_ops_record_nothing_without_grad() {
    let tape = Tape::<f64>::no_grad();
    let x = tape.leaf(random_inputs(&[&[2, 8]], 2).remove(0));
    let w = tape.leaf(Tensor::ones(ndarray::IxDyn(&[8])));
    let h = tape.rms_norm(&x, &w, 1e-6);
    let h = tape.rope(&h, &[0, 1], &freqs(4), 4);
    let y = tape.swiglu(&tape.silu(&h), &h);
    assert!(!y.requires_grad());
    assert_eq!(tape.len(), 0);
}

#[test]
#[should_panic(expected = "rope: 1 positions for 2 rows")]
fn rope_refuses_a_position_count_that_is_not_the_row_count() {
    let tape = Tape::<f64>::new();
    let x = tape.leaf(Tensor::zeros(ndarray::IxDyn(&[2, 4])));
    tape.rope(&x, &[0], &freqs(4), 4);
}

#[test]
#[should_panic(expected = "rope: head size 8 does not match 2 frequencies")]
fn rope_refuses_a_head_size_that_is_not_the_frequencies() {
    let tape = Tape::<f64>::new();
    let x = tape.leaf(Tensor::zeros(ndarray::IxDyn(&[1, 8])));
    tape.rope(&x, &[0], &freqs(4), 8);
}

#[test]
fn llama_ops_are_bitwise_the_same_for_any_thread_count() {
    let xs: Vec<Tensor<f32>> = random_inputs(&[&[300, 130], &[130], &[300, 130]], 2)
        .into_iter()
        .map(|x| x.mapv(|v| v as f32))
        .collect();
    let positions: Vec<usize> = (0..300).map(|i| i % 100).collect();
    let f = RopeFrequencies::new(100000.0, 10);
    let run = || {
        let tape = Tape::<f32>::new();
        let v: Vec<_> = xs.iter().map(|x| tape.leaf(x.clone())).collect();
        let h = tape.rms_norm(&v[0], &v[1], 1e-5);
        let h = tape.rope(&h, &positions, &f, 10);
        let y = tape.swiglu(&h, &v[2]);
        let loss = tape.sum_all(&tape.mul(&y, &y));
        let value = loss.item();
        let grads = tape.backward(&loss);
        let grads: Vec<Tensor<f32>> = v.iter().map(|x| grads.get_or_zeros(x)).collect();
        (value, grads)
    };
    let pool = |n| {
        rayon::ThreadPoolBuilder::new()
            .num_threads(n)
            .build()
            .unwrap()
    };
    let one = pool(1).install(run);
    let three = pool(3).install(run);
    assert_eq!(one.0.to_bits(), three.0.to_bits());
    for (a, b) in one.1.iter().zip(&three.1) {
        assert!(a
            .iter()
            .zip(b.iter())
            .all(|(x, y)| x.to_bits() == y.to_bits()));
    }
}
