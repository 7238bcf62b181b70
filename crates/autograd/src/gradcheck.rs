//! Gradient checking: analytic gradients against central finite differences, in f64.
//!
//! For a function `f` from input tensors to an output tensor `y`, the check
//! contracts `y` with a fixed random weighting `w` (a plain sum would be blind
//! to ops whose outputs always sum to a constant, like softmax):
//!
//! ```text
//! L(x) = sum_i w_i y_i(x)
//! analytic:   dL/dx   from one backward pass seeded with dy = w
//! numeric:    (L(x + h e_j) - L(x - h e_j)) / 2h      for each input entry j
//! ```
//!
//! The error of an entry is `|analytic - numeric| / max(|analytic|, |numeric|, 1e-2)`:
//! relative for gradients of normal size, absolute (scaled by 100) for tiny ones,
//! where relative error means nothing. With `h = 1e-5` in f64 the truncation
//! error is ~1e-10 and the rounding error ~1e-11, so a correct gradient checks
//! to well below 1e-6, and a wrong factor or axis shows as an error near 1.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rand_distr::StandardNormal;

use crate::tape::{Tape, Tensor, Var};

/// The outcome of a gradient check.
#[derive(Debug, Clone)]
pub struct GradcheckReport {
    /// The largest error over all checked entries (see the module docs).
    pub max_error: f64,
    /// Where the largest error was: input number, flat index, both values.
    pub worst: String,
    /// How many entries were checked.
    pub checked: usize,
}

/// Options of [`gradcheck_with`].
#[derive(Debug, Clone)]
pub struct GradcheckOptions {
    /// Finite-difference step.
    pub step: f64,
    /// At most this many entries per input are checked (spread evenly); all if smaller.
    pub max_entries_per_input: usize,
    /// Seed of the output weighting.
    pub seed: u64,
}

impl Default for GradcheckOptions {
    fn default() -> Self {
        GradcheckOptions {
            step: 1e-5,
            max_entries_per_input: 400,
            seed: 0,
        }
    }
}

/// Random normal tensors of the given shapes (seeded).
pub fn random_inputs(shapes: &[&[usize]], seed: u64) -> Vec<Tensor<f64>> {
    let mut rng = StdRng::seed_from_u64(seed);
    shapes
        .iter()
        .map(|shape| Tensor::from_shape_fn(ndarray::IxDyn(shape), |_| rng.sample(StandardNormal)))
        .collect()
}

/// The largest error [`gradcheck`] and [`gradcheck_at`] accept.
pub const GRADCHECK_TOLERANCE: f64 = 1e-6;

/// Checks `f` on random normal inputs of the given shapes; panics with the
/// report if the error exceeds [`GRADCHECK_TOLERANCE`]. Returns the report.
///
/// ```
/// use autograd::gradcheck::gradcheck;
/// gradcheck(&[&[3, 4]], |t, x| t.tanh(&x[0]));
/// ```
pub fn gradcheck(
    shapes: &[&[usize]],
    f: impl Fn(&Tape<f64>, &[Var<f64>]) -> Var<f64>,
) -> GradcheckReport {
    gradcheck_at(random_inputs(shapes, 42), f)
}

/// Checks `f` at the given inputs (any values, any memory layout); panics
/// with the report if the error exceeds [`GRADCHECK_TOLERANCE`].
///
/// ```
/// use autograd::gradcheck::{gradcheck_at, random_input_transposed};
/// // A (3, 4) input stored column-major: ops must not assume row-major data.
/// gradcheck_at(vec![random_input_transposed(&[3, 4], 1)], |t, x| t.softmax(&x[0], 1));
/// ```
pub fn gradcheck_at(
    inputs: Vec<Tensor<f64>>,
    f: impl Fn(&Tape<f64>, &[Var<f64>]) -> Var<f64>,
) -> GradcheckReport {
    let report = gradcheck_with(inputs, &GradcheckOptions::default(), f);
    assert!(
        report.max_error < GRADCHECK_TOLERANCE,
        "gradcheck failed: max error {:.3e} at {} ({} entries checked)",
        report.max_error,
        report.worst,
        report.checked
    );
    report
}

/// A random normal tensor of `shape` stored with its axes reversed (for a
/// matrix: column-major), so that it is not in standard layout. Iterating it
/// still visits the elements in logical row-major order.
pub fn random_input_transposed(shape: &[usize], seed: u64) -> Tensor<f64> {
    let reversed: Vec<usize> = shape.iter().rev().copied().collect();
    let stored = random_inputs(&[&reversed], seed).remove(0);
    let t = stored.reversed_axes();
    debug_assert_eq!(t.shape(), shape);
    t
}

/// Checks the gradients of `f` at `inputs` and reports the worst error (does not panic).
pub fn gradcheck_with(
    inputs: Vec<Tensor<f64>>,
    options: &GradcheckOptions,
    f: impl Fn(&Tape<f64>, &[Var<f64>]) -> Var<f64>,
) -> GradcheckReport {
    // Analytic: one backward pass seeded with the weighting.
    let tape = Tape::new();
    let vars: Vec<Var<f64>> = inputs.iter().map(|x| tape.leaf(x.clone())).collect();
    let y = f(&tape, &vars);
    let mut rng = StdRng::seed_from_u64(options.seed);
    let weights = Tensor::from_shape_fn(y.value().raw_dim(), |_| {
        rng.sample::<f64, _>(StandardNormal)
    });
    let grads = tape.backward_with(&y, weights.clone());
    let analytic: Vec<Tensor<f64>> = vars.iter().map(|v| grads.get_or_zeros(v)).collect();

    // Numeric: central differences, evaluated without a tape.
    let weighted_output = |xs: &[Tensor<f64>]| -> f64 {
        let tape = Tape::no_grad();
        let vars: Vec<Var<f64>> = xs.iter().map(|x| tape.constant(x.clone())).collect();
        let y = f(&tape, &vars);
        y.value()
            .iter()
            .zip(weights.iter())
            .map(|(a, b)| a * b)
            .sum()
    };
    let mut report = GradcheckReport {
        max_error: 0.0,
        worst: "nothing checked".into(),
        checked: 0,
    };
    let mut xs = inputs;
    for input in 0..xs.len() {
        let n = xs[input].len();
        let stride = n.div_ceil(options.max_entries_per_input.max(1)).max(1);
        for flat in (0..n).step_by(stride) {
            let original = *xs[input].iter().nth(flat).unwrap();
            let h = options.step * original.abs().max(1.0);
            *xs[input].iter_mut().nth(flat).unwrap() = original + h;
            let plus = weighted_output(&xs);
            *xs[input].iter_mut().nth(flat).unwrap() = original - h;
            let minus = weighted_output(&xs);
            *xs[input].iter_mut().nth(flat).unwrap() = original;
            let numeric = (plus - minus) / (2.0 * h);
            let exact = *analytic[input].iter().nth(flat).unwrap();
            let error = (exact - numeric).abs() / exact.abs().max(numeric.abs()).max(1e-2);
            report.checked += 1;
            // A NaN error (a NaN gradient) is the worst, and stays so.
            let worse = error.is_nan() || error > report.max_error;
            if worse && !report.max_error.is_nan() {
                report.max_error = error;
                report.worst = format!(
                    "input {input} entry {flat} of shape {:?}: analytic {exact:.10e}, numeric {numeric:.10e}",
                    xs[input].shape()
                );
            }
        }
    }
    report
}
