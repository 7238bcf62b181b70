//! No-grad mode records nothing and computes the same values.

use autograd::gradcheck::random_inputs;
use autograd::{Tape, Tensor, Var};

/// A small model touching every op family.
fn forward(t: &Tape<f64>, x: &Var<f64>, w: &Var<f64>, b: &Var<f64>) -> Vec<Var<f64>> {
    let h = t.gelu(&t.linear(x, w, Some(b))); // (2, 3, 6)
    let p = t.split(&h, 2, &[2, 4]);
    let s = t.softmax(&t.transpose(&p[1], 1, 2), 1); // (2, 4, 3)
    let ls = t.log_softmax(&t.reshape(&p[0], &[3, 4]), 0);
    let cat = t.concat(&[&t.narrow(&s, 1, 0, 2), &t.permute(&s, &[0, 1, 2])], 1);
    let m = t.matmul(&cat, &t.mean(&p[1], &[0], false)); // (2, 6, 3) @ (3, 4)
    let loss = t.add(
        &t.mean_all(&t.logsigmoid(&m)),
        &t.sum(&t.mul(&ls, &ls), &[0, 1], false),
    );
    vec![h, s, ls, cat, m, loss]
}

#[test]
fn no_grad_records_nothing_and_matches_grad_mode() {
    let inputs = random_inputs(&[&[2, 3, 5], &[6, 5], &[6]], 11);
    let run = |tape: &Tape<f64>| -> Vec<Tensor<f64>> {
        let vars: Vec<Var<f64>> = inputs.iter().map(|x| tape.leaf(x.clone())).collect();
        forward(tape, &vars[0], &vars[1], &vars[2])
            .iter()
            .map(|v| v.value().clone())
            .collect()
    };
    let with_grad = Tape::new();
    let values = run(&with_grad);
    assert!(with_grad.len() > 10);

    let no_grad = Tape::no_grad();
    assert!(!no_grad.grad_enabled());
    let values_no_grad = run(&no_grad);
    assert_eq!(no_grad.len(), 0);
    assert!(no_grad.is_empty());
    for (a, b) in values.iter().zip(&values_no_grad) {
        assert_eq!(a, b);
    }
}

#[test]
fn constants_need_no_record() {
    // Grad mode, but no input is tracked: nothing is recorded either.
    let tape = Tape::<f32>::new();
    let c = tape.constant(Tensor::ones(ndarray::IxDyn(&[3, 4])));
    let y = tape.softmax(&tape.sum(&c, &[1], true), 0);
    assert!(!y.requires_grad());
    assert_eq!(tape.len(), 0);
}
