//! The ops on frozen bf16 weights ([`Bf16Matrix`]): gradient checks in f64
//! (odd sizes, one row, one column, with and without bias), and, in f32, the
//! same bits as the ordinary op on a bf16 tape with the weight's f32 values
//! rounded to bf16 (the tape's GEMMs round their inputs the same way).

use std::sync::Arc;

use autograd::gradcheck::{gradcheck, random_inputs};
use autograd::kernels::bf16::round_to_bf16;
use autograd::ndarray::{Ix2, IxDyn};
use autograd::{Bf16Matrix, LmHeadLogprobs, Precision, Tape, Tensor, IGNORE_INDEX};

/// A random (rows, cols) matrix as bf16.
fn bf16_matrix(rows: usize, cols: usize, seed: u64) -> Arc<Bf16Matrix> {
    let values = random_inputs(&[&[rows, cols]], seed).remove(0);
    Arc::new(Bf16Matrix::from_values(
        values.view().into_dimensionality::<Ix2>().unwrap(),
    ))
}

/// f32 values of `n` elements, seeded, of a size where bf16 rounding shows.
fn values_f32(shape: &[usize], seed: u64) -> Tensor<f32> {
    random_inputs(&[shape], seed).remove(0).mapv(|x| x as f32)
}

#[test]
fn bf16_matrix_rounds_once_and_widens_exactly() {
    let values = values_f32(&[5, 7], 1);
    let m = Bf16Matrix::from_values(values.view().into_dimensionality::<Ix2>().unwrap());
    assert_eq!(m.dim(), (5, 7));
    let widened: autograd::ndarray::Array2<f32> = m.to_array();
    for (w, v) in widened.iter().zip(values.iter()) {
        assert_eq!(w.to_bits(), round_to_bf16(*v).to_bits());
    }
    let rows: autograd::ndarray::Array2<f64> = m.rows_as(2, 4);
    assert_eq!(rows.dim(), (2, 7));
    assert_eq!(rows[[1, 3]], widened[[3, 3]] as f64);
}

#[test]
fn linear_bf16_gradients() {
    for (x_shape, out, inp) in [
        (&[3, 5][..], 4, 5),
        (&[2, 3, 7][..], 1, 7),
        (&[1, 1][..], 1, 1),
        (&[1, 6][..], 9, 6),
    ] {
        let w = bf16_matrix(out, inp, 7);
        gradcheck(&[x_shape, &[out]], |tape, v| {
            tape.linear_bf16(&v[0], &w, Some(&v[1]))
        });
        gradcheck(&[x_shape], |tape, v| tape.linear_bf16(&v[0], &w, None));
    }
}

#[test]
fn linear_bf16_is_linear_on_a_bf16_tape_with_rounded_weights() {
    let (out, inp) = (37, 50);
    let w = values_f32(&[out, inp], 2);
    let w16 = Arc::new(Bf16Matrix::from_values(
        w.view().into_dimensionality::<Ix2>().unwrap(),
    ));
    let w_rounded = w.mapv(round_to_bf16);
    for precision in [Precision::F32, Precision::Bf16] {
        // The bf16 op ignores the tape's precision: its GEMMs are bf16.
        let tape = Tape::<f32>::new().with_precision(precision);
        let x = tape.leaf(values_f32(&[3, 11, inp], 3));
        let b = tape.leaf(values_f32(&[out], 4));
        let y = tape.linear_bf16(&x, &w16, Some(&b));
        let seed = values_f32(&[3, 11, out], 5);
        let mut grads = tape.backward_with(&y, seed.clone());

        let oracle = Tape::<f32>::new().with_precision(Precision::Bf16);
        let x2 = oracle.leaf(x.value().clone());
        let b2 = oracle.leaf(b.value().clone());
        let w2 = oracle.constant(w_rounded.clone());
        let y2 = oracle.linear(&x2, &w2, Some(&b2));
        let mut grads2 = oracle.backward_with(&y2, seed);
        assert_eq!(y.value(), y2.value(), "{precision:?}");
        assert_eq!(grads.take_or_zeros(&x), grads2.take_or_zeros(&x2));
        assert_eq!(grads.take_or_zeros(&b), grads2.take_or_zeros(&b2));
    }
}

#[test]
fn embedding_bf16_gathers_widened_rows() {
    let table = values_f32(&[6, 5], 6);
    let t16 = Bf16Matrix::from_values(table.view().into_dimensionality::<Ix2>().unwrap());
    let tape = Tape::<f32>::new();
    let y = tape.embedding_bf16(&t16, &[5, 0, 5, 2], &[2, 2]);
    assert_eq!(y.shape(), &[2, 2, 5]);
    assert!(!y.requires_grad(), "a frozen table gives a constant");
    let rounded = table.mapv(round_to_bf16);
    let oracle = tape.embedding(&tape.constant(rounded), &[5, 0, 5, 2], &[2, 2]);
    assert_eq!(y.value(), oracle.value());
}

#[test]
#[should_panic(expected = "embedding: id 6")]
fn embedding_bf16_refuses_out_of_range_ids() {
    let t16 = bf16_matrix(6, 2, 1);
    Tape::<f32>::new().embedding_bf16(&t16, &[0, 6], &[2]);
}

#[test]
fn lm_head_bf16_gradients() {
    // V 13, C 5; chunks of the vocabulary of 13 (one), 4 and 1 rows.
    let wte = bf16_matrix(13, 5, 9);
    let targets = [3, IGNORE_INDEX, 12, 0, 7, IGNORE_INDEX];
    for chunk_elements in [1 << 20, 12, 1] {
        let op = LmHeadLogprobs { chunk_elements };
        gradcheck(&[&[2, 3, 5]], |tape, v| {
            op.apply_bf16(tape, &v[0], &wte, &targets)
        });
    }
}

#[test]
fn lm_head_bf16_is_the_fused_head_on_a_bf16_tape_with_rounded_weights() {
    let (v, c) = (300, 24);
    let wte = values_f32(&[v, c], 10);
    let w16 = Arc::new(Bf16Matrix::from_values(
        wte.view().into_dimensionality::<Ix2>().unwrap(),
    ));
    let targets: Vec<i64> = (0..2 * 9)
        .map(|i| {
            if i % 5 == 4 {
                IGNORE_INDEX
            } else {
                (i * 37 % v) as i64
            }
        })
        .collect();
    // One chunk (the logits kept for the backward), and several.
    for chunk_elements in [1 << 24, 18 * 64] {
        let op = LmHeadLogprobs { chunk_elements };
        let tape = Tape::<f32>::new();
        let h = tape.leaf(values_f32(&[2, 9, c], 11));
        let logp = op.apply_bf16(&tape, &h, &w16, &targets);
        let mut grads = tape.backward_with(&logp, Tensor::from_elem(IxDyn(&[2]), 0.7));

        let oracle = Tape::<f32>::new().with_precision(Precision::Bf16);
        let h2 = oracle.leaf(h.value().clone());
        let w2 = oracle.constant(wte.mapv(round_to_bf16));
        let logp2 = op.apply(&oracle, &h2, &w2, &targets);
        let mut grads2 = oracle.backward_with(&logp2, Tensor::from_elem(IxDyn(&[2]), 0.7));
        assert_eq!(logp.value(), logp2.value(), "chunk {chunk_elements}");
        assert_eq!(grads.take_or_zeros(&h), grads2.take_or_zeros(&h2));
    }
}
