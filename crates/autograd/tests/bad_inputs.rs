//! Programming errors panic with a message that names the op and the shapes.

use autograd::{Tape, Tensor};
use ndarray::IxDyn;

fn zeros(tape: &Tape<f32>, shape: &[usize]) -> autograd::Var<f32> {
    tape.leaf(Tensor::zeros(IxDyn(shape)))
}

#[test]
#[should_panic(expected = "add: shapes [2, 3] and [4] do not broadcast")]
fn add_shape_mismatch() {
    let t = Tape::new();
    t.add(&zeros(&t, &[2, 3]), &zeros(&t, &[4]));
}

#[test]
#[should_panic(expected = "mul: shapes [3, 2] and [2, 3] do not broadcast")]
fn mul_shape_mismatch() {
    let t = Tape::new();
    t.mul(&zeros(&t, &[3, 2]), &zeros(&t, &[2, 3]));
}

#[test]
#[should_panic(expected = "matmul: inner dimensions differ: [2, 3] @ [4, 5]")]
fn matmul_inner_mismatch() {
    let t = Tape::new();
    t.matmul(&zeros(&t, &[2, 3]), &zeros(&t, &[4, 5]));
}

#[test]
#[should_panic(expected = "matmul: operands must have at least 2 axes")]
fn matmul_of_a_vector() {
    let t = Tape::new();
    t.matmul(&zeros(&t, &[3]), &zeros(&t, &[3, 5]));
}

#[test]
#[should_panic(expected = "linear: input [2, 3] does not match weight (4, 5)")]
fn linear_weight_mismatch() {
    let t = Tape::new();
    t.linear(&zeros(&t, &[2, 3]), &zeros(&t, &[4, 5]), None);
}

#[test]
#[should_panic(expected = "linear: bias shape [5] != [4]")]
fn linear_bias_mismatch() {
    let t = Tape::new();
    let b = zeros(&t, &[5]);
    t.linear(&zeros(&t, &[2, 3]), &zeros(&t, &[4, 3]), Some(&b));
}

#[test]
#[should_panic(expected = "softmax: axis 2 out of range for shape [3, 4]")]
fn softmax_axis_out_of_range() {
    let t = Tape::new();
    t.softmax(&zeros(&t, &[3, 4]), 2);
}

#[test]
#[should_panic(expected = "log_softmax: axis 1 out of range for shape [3]")]
fn log_softmax_axis_out_of_range() {
    let t = Tape::new();
    t.log_softmax(&zeros(&t, &[3]), 1);
}

#[test]
#[should_panic(expected = "sum: axis 3 out of range for shape [1, 2, 3]")]
fn sum_axis_out_of_range() {
    let t = Tape::new();
    t.sum(&zeros(&t, &[1, 2, 3]), &[0, 3], false);
}

#[test]
#[should_panic(expected = "mean: axis 1 repeated in [1, 1] for shape [2, 3]")]
fn mean_repeated_axis() {
    let t = Tape::new();
    t.mean(&zeros(&t, &[2, 3]), &[1, 1], false);
}

#[test]
#[should_panic(expected = "transpose: axis 2 out of range for shape [2, 3]")]
fn transpose_axis_out_of_range() {
    let t = Tape::new();
    t.transpose(&zeros(&t, &[2, 3]), 0, 2);
}

#[test]
#[should_panic(
    expected = "permute: axes [0, 0, 1] are not a permutation of the axes of shape [2, 3, 4]"
)]
fn permute_not_a_permutation() {
    let t = Tape::new();
    t.permute(&zeros(&t, &[2, 3, 4]), &[0, 0, 1]);
}

#[test]
#[should_panic(expected = "reshape: cannot reshape [2, 3] (6 elements) into [4] (4 elements)")]
fn reshape_wrong_size() {
    let t = Tape::new();
    t.reshape(&zeros(&t, &[2, 3]), &[4]);
}

#[test]
#[should_panic(expected = "narrow: slice 2..5 out of range for axis 1 of shape [2, 4]")]
fn narrow_out_of_range() {
    let t = Tape::new();
    t.narrow(&zeros(&t, &[2, 4]), 1, 2, 3);
}

#[test]
#[should_panic(expected = "narrow: axis 2 out of range for shape [2, 4]")]
fn narrow_axis_out_of_range() {
    let t = Tape::new();
    t.narrow(&zeros(&t, &[2, 4]), 2, 0, 1);
}

#[test]
#[should_panic(expected = "concat: shapes [[2, 3], [2, 4]] differ outside axis 0")]
fn concat_shape_mismatch() {
    let t = Tape::new();
    t.concat(&[&zeros(&t, &[2, 3]), &zeros(&t, &[2, 4])], 0);
}

#[test]
#[should_panic(expected = "split: sizes [2, 2] add up to 4, but axis 0 of shape [5, 1] has 5")]
fn split_sizes_mismatch() {
    let t = Tape::new();
    t.split(&zeros(&t, &[5, 1]), 0, &[2, 2]);
}

#[test]
#[should_panic(expected = "backward: the loss must be a scalar, got shape [2, 3]")]
fn backward_of_a_non_scalar() {
    let t = Tape::new();
    let y = t.tanh(&zeros(&t, &[2, 3]));
    t.backward(&y);
}

#[test]
#[should_panic(expected = "add: input of shape [3] comes from another tape")]
fn var_from_another_tape() {
    let t1 = Tape::new();
    let t2 = Tape::new();
    let x1 = zeros(&t1, &[3]);
    let x2 = zeros(&t2, &[3]);
    t2.add(&x2, &x1);
}

#[test]
#[should_panic(expected = "backward: input of shape [] comes from another tape")]
fn backward_of_a_loss_from_another_tape() {
    let t1 = Tape::new();
    let t2 = Tape::<f32>::new();
    let loss = t1.sum_all(&zeros(&t1, &[3]));
    t2.backward(&loss);
}

#[test]
#[should_panic(expected = "item: expected a value with one element, got shape [2]")]
fn item_of_a_vector() {
    let t = Tape::new();
    zeros(&t, &[2]).item();
}
