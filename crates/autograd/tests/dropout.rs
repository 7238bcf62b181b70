//! Inverted dropout: exact gradients (the mask is a function of the seed),
//! the drop rate and the mean it keeps, and the same mask on any number of
//! threads and in the backward pass as in the forward one.

use autograd::gradcheck::{gradcheck, random_inputs};
use autograd::{Tape, Tensor};

#[test]
fn dropout_gradients() {
    for shape in [&[1usize][..], &[3, 5], &[2, 3, 7], &[40_000]] {
        gradcheck(&[shape], |t, x| t.dropout(&x[0], 0.3, 7));
    }
    gradcheck(&[&[4, 4]], |t, x| t.dropout(&x[0], 0.0, 1));
}

/// With p = 0.25 about a quarter of the elements are 0 and the others are
/// scaled by 4/3, so the sum is kept on average; the mask depends on the
/// seed, and is the same in the backward pass.
#[test]
fn dropout_drops_a_share_p_and_keeps_the_mean() {
    let n = 1 << 18;
    let ones = Tensor::<f64>::ones(ndarray::IxDyn(&[n]));
    let tape = Tape::<f64>::new();
    let x = tape.leaf(ones);
    let y = tape.dropout(&x, 0.25, 42);
    let zeros = y.value().iter().filter(|&&v| v == 0.0).count() as f64 / n as f64;
    assert!((zeros - 0.25).abs() < 0.005, "dropped {zeros}");
    assert!(y.value().iter().all(|&v| v == 0.0 || v == 4.0 / 3.0));
    let mean = y.value().sum() / n as f64;
    assert!((mean - 1.0).abs() < 0.01, "mean {mean}");
    let y_value = y.value().clone();
    let grads = tape.backward_with(&y, Tensor::ones(ndarray::IxDyn(&[n])));
    assert_eq!(
        grads.get(&x).unwrap(),
        &y_value,
        "the backward pass used another mask"
    );

    let other = Tape::<f64>::new();
    let z = other.dropout(&other.leaf(Tensor::ones(ndarray::IxDyn(&[n]))), 0.25, 43);
    assert_ne!(z.value(), &y_value);
}

#[test]
fn dropout_mask_does_not_depend_on_the_thread_count() {
    let x = random_inputs(&[&[300, 257]], 3).remove(0);
    let run = |threads: usize| {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        pool.install(|| {
            let tape = Tape::<f64>::no_grad();
            tape.dropout(&tape.constant(x.clone()), 0.1, 5)
                .value()
                .clone()
        })
    };
    assert_eq!(run(1), run(4));
}
