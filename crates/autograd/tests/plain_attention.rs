//! The plain attention kernel (`kernels::attention::plain`): f64 gradient
//! checks of its op, and the fast blocked kernel against it, forward and
//! backward, in f64 and f32.

use autograd::gradcheck::{gradcheck, gradcheck_at, random_input_transposed, random_inputs};
use autograd::kernels::attention::{blocked, plain, AttentionDims, KeyGap};
use autograd::Float;

#[test]
fn plain_attention_gradients() {
    for (b, t, c, nh) in [
        // every size 1
        (1, 1, 1, 1),
        (1, 3, 2, 1),
        // odd sizes, several heads, several sequences
        (2, 4, 6, 3),
        (3, 5, 9, 3),
        (1, 7, 3, 1),
        (2, 5, 8, 2),
        (1, 6, 12, 4),
    ] {
        gradcheck(&[&[b, t, 3 * c]], |tape, x| {
            tape.plain_causal_attention(&x[0], nh)
        });
    }
    // qkv not in standard layout
    gradcheck_at(vec![random_input_transposed(&[2, 3, 6], 7)], |t, x| {
        t.plain_causal_attention(&x[0], 2)
    });
}

/// (B, T, C, NH): one of each path of the blocked kernel: the serial and
/// the parallel (b, h) loop (parallel from B NH T^2 hs = 2^14), one row
/// block and several (`ROW_BLOCK` = 32 rows), the last one whole or partial.
fn shapes() -> Vec<(usize, usize, usize, usize)> {
    assert_eq!(
        blocked::ROW_BLOCK,
        32,
        "the shapes below assume 32-row blocks"
    );
    vec![
        (1, 1, 1, 1),
        (1, 1, 2, 1),
        (2, 5, 6, 3),
        (1, 31, 3, 1),
        // serial, two row blocks
        (1, 40, 3, 1),
        // parallel, two whole row blocks
        (2, 64, 4, 1),
        // parallel, a partial second block, four heads
        (3, 33, 16, 4),
        // parallel, four row blocks, the last partial
        (1, 97, 8, 2),
    ]
}

/// Forward out and att, and the backward's dqkv, of the plain and the
/// blocked kernel (no gaps) on the same random inputs.
struct BothKernels<T> {
    out: [Vec<T>; 2],
    att: [Vec<T>; 2],
    dqkv: [Vec<T>; 2],
}

fn run_both<T: Float>(b: usize, t: usize, c: usize, nh: usize) -> BothKernels<T> {
    let dims = AttentionDims { b, t, c, nh };
    let inputs = random_inputs(&[&[b, t, 3 * c], &[b, t, c]], 13);
    let to_vec = |x: &autograd::Tensor<f64>| x.iter().map(|&v| T::cast(v)).collect::<Vec<T>>();
    let (qkv, dout) = (to_vec(&inputs[0]), to_vec(&inputs[1]));
    let zeros = |n: usize| [vec![T::zero(); n], vec![T::zero(); n]];
    let (mut out, mut att, mut dqkv) = (
        zeros(b * t * c),
        zeros(b * nh * t * t),
        zeros(b * t * 3 * c),
    );
    let gaps = vec![KeyGap::NONE; b];
    plain::attention_forward(&mut out[0], &mut att[0], &qkv, dims);
    plain::attention_backward(&mut dqkv[0], &dout, &qkv, &att[0], dims);
    blocked::attention_forward(&mut out[1], &mut att[1], &qkv, dims, &gaps);
    blocked::attention_backward(&mut dqkv[1], &dout, &qkv, &att[1], dims, &gaps);
    BothKernels { out, att, dqkv }
}

/// The largest `|a - b|`, and the largest `|a|`.
fn max_diff<T: Float>(a: &[T], b: &[T]) -> (f64, f64) {
    assert_eq!(a.len(), b.len());
    let diff = a
        .iter()
        .zip(b)
        .map(|(x, y)| (x.as_f64() - y.as_f64()).abs());
    let size = a.iter().map(|x| x.as_f64().abs());
    (diff.fold(0.0, f64::max), size.fold(0.0, f64::max))
}

fn assert_kernels_agree<T: Float>(rel_tolerance: f64) {
    for (b, t, c, nh) in shapes() {
        let both = run_both::<T>(b, t, c, nh);
        for (name, [plain, blocked]) in [("out", both.out), ("att", both.att), ("dqkv", both.dqkv)]
        {
            let (diff, size) = max_diff(&plain, &blocked);
            assert!(
                diff <= rel_tolerance * size.max(1.0),
                "{} (B, T, C, NH) = {:?}: {name} of the blocked kernel differs from the plain one by {diff:.3e} (largest entry {size:.3e})",
                T::NAME,
                (b, t, c, nh)
            );
        }
    }
}

#[test]
fn blocked_attention_equals_plain_in_f64() {
    assert_kernels_agree::<f64>(1e-13);
}

#[test]
fn blocked_attention_equals_plain_in_f32() {
    assert_kernels_agree::<f32>(1e-5);
}
