//! Results are bitwise identical for any number of threads: parallel loops
//! split work on fixed boundaries and never reduce in a thread-dependent order.

use autograd::gradcheck::random_inputs;
use autograd::{Tape, Tensor, Var};

fn in_pool<R: Send>(threads: usize, f: impl FnOnce() -> R + Send) -> R {
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .unwrap()
        .install(f)
}

/// Forward values and input gradients of a graph of large ops, in f32.
fn run(inputs: &[Tensor<f32>]) -> Vec<Tensor<f32>> {
    let tape = Tape::new();
    let vars: Vec<Var<f32>> = inputs.iter().map(|x| tape.leaf(x.clone())).collect();
    let (x, w, b) = (&vars[0], &vars[1], &vars[2]);
    let y = tape.linear(x, w, Some(b)); // (512, 384)
    let g = tape.gelu(&y);
    let m = tape.matmul(&g, w); // (512, 384) @ (384, 256)
    let s = tape.softmax(&m, 1);
    let s0 = tape.log_softmax(&m, 0);
    let big = tape.add(&tape.mul(&s, &s0), &tape.exp(&tape.mul_scalar(&m, 0.01)));
    let col = tape.sum(&big, &[0], false);
    let loss = tape.add(&tape.sum_all(&big), &tape.mean_all(&tape.mul(&col, &col)));
    let mut out = vec![
        y.value().clone(),
        m.value().clone(),
        s.value().clone(),
        loss.value().clone(),
    ];
    let grads = tape.backward(&loss);
    out.extend(vars.iter().map(|v| grads.get(v).unwrap().clone()));
    out
}

#[test]
fn same_bits_with_one_and_two_threads() {
    let inputs: Vec<Tensor<f32>> = random_inputs(&[&[512, 256], &[384, 256], &[384]], 7)
        .into_iter()
        .map(|t| t.mapv(|v| v as f32 * 0.1))
        .collect();
    let one = in_pool(1, || run(&inputs));
    let two = in_pool(2, || run(&inputs));
    let three = in_pool(3, || run(&inputs));
    for (i, ((a, b), c)) in one.iter().zip(&two).zip(&three).enumerate() {
        let bits = |t: &Tensor<f32>| t.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
        assert!(
            bits(a) == bits(b),
            "output {i} differs between 1 and 2 threads"
        );
        assert!(
            bits(a) == bits(c),
            "output {i} differs between 1 and 3 threads"
        );
    }
}

#[test]
fn big_sums_same_bits() {
    let n = 3_000_001;
    let x = Tensor::from_shape_fn(ndarray::IxDyn(&[n]), |i| {
        ((i[0] * 7919) % 1000) as f32 * 1e-3 + 1e-4
    });
    let sum = |threads| {
        in_pool(threads, || {
            let tape = Tape::no_grad();
            tape.sum_all(&tape.constant(x.clone())).item()
        })
    };
    assert_eq!(sum(1).to_bits(), sum(2).to_bits());
    assert_eq!(sum(1).to_bits(), sum(4).to_bits());
}
