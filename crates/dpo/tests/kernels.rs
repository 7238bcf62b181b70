//! The fused DPO kernels against finite differences (f64) and against the
//! same computation built from primitive autograd ops.

use autograd::gradcheck::{gradcheck, gradcheck_with, random_inputs, GradcheckOptions};
use autograd::{Tape, Tensor, Var};
use dpo::kernels::sequence_logprobs::{sequence_logprobs, IGNORE_INDEX};
use dpo::kernels::LmHeadLogprobs;
use ndarray::IxDyn;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// Random targets for (S, T) with some masked positions; `masked_rows` lists
/// sequences that are fully masked.
fn random_targets(
    seqs: usize,
    seq_len: usize,
    vocab: usize,
    masked_seqs: &[usize],
    seed: u64,
) -> Vec<i64> {
    let mut rng = StdRng::seed_from_u64(seed);
    (0..seqs * seq_len)
        .map(|r| {
            let s = r / seq_len;
            if masked_seqs.contains(&s) || r % seq_len == seq_len - 1 || rng.gen_bool(0.3) {
                IGNORE_INDEX
            } else {
                rng.gen_range(0..vocab) as i64
            }
        })
        .collect()
}

/// The one-hot mask of the targets, (S, T, V): 1 at the target, 0 elsewhere and on masked rows.
fn onehot(targets: &[i64], seqs: usize, seq_len: usize, vocab: usize) -> Tensor<f64> {
    let mut m = Tensor::zeros(IxDyn(&[seqs, seq_len, vocab]));
    for (r, &y) in targets.iter().enumerate() {
        if y != IGNORE_INDEX {
            m[[r / seq_len, r % seq_len, y as usize]] = 1.0;
        }
    }
    m
}

/// The plain composition: sum over t and v of log_softmax(logits) * onehot -> (S).
fn composed_logprobs(tape: &Tape<f64>, logits: &Var<f64>, mask: &Tensor<f64>) -> Var<f64> {
    let logp = tape.log_softmax(logits, 2);
    let picked = tape.mul(&logp, &tape.constant(mask.clone()));
    tape.sum(&picked, &[1, 2], false)
}

const SHAPES: [(usize, usize, usize); 4] = [(2, 3, 5), (1, 1, 4), (3, 4, 7), (2, 2, 1)];

#[test]
fn sequence_logprobs_gradcheck() {
    for (i, &(s, t, v)) in SHAPES.iter().enumerate() {
        let targets = random_targets(s, t, v, &[], i as u64);
        gradcheck(&[&[s, t, v]], |tape, x| {
            sequence_logprobs(tape, &x[0], &targets)
        });
    }
    // A fully masked sequence and a length-1 response.
    let mut targets = random_targets(3, 4, 6, &[1], 9);
    targets[8..12].copy_from_slice(&[IGNORE_INDEX, 2, IGNORE_INDEX, IGNORE_INDEX]);
    gradcheck(&[&[3, 4, 6]], |tape, x| {
        sequence_logprobs(tape, &x[0], &targets)
    });
}

#[test]
fn sequence_logprobs_matches_composition() {
    for (i, &(s, t, v)) in SHAPES.iter().enumerate() {
        let targets = random_targets(s, t, v, &[0], 100 + i as u64);
        let mask = onehot(&targets, s, t, v);
        let logits = random_inputs(&[&[s, t, v]], i as u64).remove(0) * 3.0;
        compare_values_and_grads(
            &logits,
            |tape, x| sequence_logprobs(tape, x, &targets),
            |tape, x| composed_logprobs(tape, x, &mask),
        );
    }
}

#[test]
fn sequence_logprobs_is_stable_for_extreme_logits() {
    let (s, t, v) = (2, 3, 5);
    let targets = random_targets(s, t, v, &[], 7);
    let mask = onehot(&targets, s, t, v);
    let mut rng = StdRng::seed_from_u64(3);
    let logits = Tensor::from_shape_fn(IxDyn(&[s, t, v]), |_| {
        if rng.gen_bool(0.5) {
            1e4
        } else {
            -1e4
        }
    });
    let tape = Tape::<f64>::new();
    let x = tape.leaf(logits.clone());
    let y = sequence_logprobs(&tape, &x, &targets);
    assert!(y.value().iter().all(|v| v.is_finite()));
    compare_values_and_grads(
        &logits,
        |tape, x| sequence_logprobs(tape, x, &targets),
        |tape, x| composed_logprobs(tape, x, &mask),
    );
    // And in f32, where a naive exp would overflow.
    let tape = Tape::<f32>::new();
    let x = tape.leaf(logits.mapv(|v| v as f32));
    let y = sequence_logprobs(&tape, &x, &targets);
    assert!(y.value().iter().all(|v| v.is_finite()));
    let total = tape.sum_all(&y);
    let g = tape.backward(&total);
    assert!(g.get(&x).unwrap().iter().all(|v| v.is_finite()));
}

/// A function of one tape value.
type UnaryOp<'a> = dyn Fn(&Tape<f64>, &Var<f64>) -> Var<f64> + 'a;

/// Runs `fused` and `composed` on the same input and compares outputs and
/// gradients (weighted by the same random cotangent) to 1e-10.
fn compare_values_and_grads(
    input: &Tensor<f64>,
    fused: impl Fn(&Tape<f64>, &Var<f64>) -> Var<f64>,
    composed: impl Fn(&Tape<f64>, &Var<f64>) -> Var<f64>,
) {
    let run = |f: &UnaryOp<'_>| {
        let tape = Tape::new();
        let x = tape.leaf(input.clone());
        let y = f(&tape, &x);
        let value = y.value().clone();
        let seed = Tensor::from_shape_fn(y.value().raw_dim(), |i| 1.0 + i[0] as f64);
        let grads = tape.backward_with(&y, seed);
        (value, grads.get_or_zeros(&x))
    };
    let (v1, g1) = run(&fused);
    let (v2, g2) = run(&composed);
    for (a, b) in v1.iter().zip(v2.iter()) {
        assert!(
            (a - b).abs() <= 1e-10 * (1.0 + b.abs()),
            "values differ: {a} vs {b}"
        );
    }
    for (a, b) in g1.iter().zip(g2.iter()) {
        assert!(
            (a - b).abs() <= 1e-10 * (1.0 + b.abs()),
            "gradients differ: {a} vs {b}"
        );
    }
}

#[test]
fn lm_head_logprobs_gradcheck_with_one_and_many_chunks() {
    for chunk_elements in [1 << 22, 3] {
        let op = LmHeadLogprobs { chunk_elements };
        for (i, &(s, t, v)) in SHAPES.iter().enumerate() {
            let c = 3;
            let targets = random_targets(s, t, v, &[], 20 + i as u64);
            gradcheck(&[&[s, t, c], &[v, c]], |tape, x| {
                op.apply(tape, &x[0], &x[1], &targets)
            });
        }
    }
}

#[test]
fn lm_head_logprobs_matches_linear_then_log_softmax() {
    let (s, t, c, v) = (3, 5, 4, 600); // 600 > 256: several vocabulary chunks below
    let targets = random_targets(s, t, v, &[2], 5);
    let mask = onehot(&targets, s, t, v);
    let inputs = random_inputs(&[&[s, t, c], &[v, c]], 11);
    for chunk_elements in [1 << 22, 1000] {
        let op = LmHeadLogprobs { chunk_elements };
        let tape = Tape::<f64>::new();
        let (h, w) = (tape.leaf(inputs[0].clone()), tape.leaf(inputs[1].clone()));
        let fused = op.apply(&tape, &h, &w, &targets);
        let total = tape.sum_all(&fused);
        let g_fused = tape.backward(&total);
        let tape2 = Tape::<f64>::new();
        let (h2, w2) = (tape2.leaf(inputs[0].clone()), tape2.leaf(inputs[1].clone()));
        let logits = tape2.linear(&h2, &w2, None);
        let composed = composed_logprobs(&tape2, &logits, &mask);
        let total2 = tape2.sum_all(&composed);
        let g_comp = tape2.backward(&total2);
        for (a, b) in fused.value().iter().zip(composed.value().iter()) {
            assert!((a - b).abs() < 1e-10, "values differ: {a} vs {b}");
        }
        for (x, x2) in [(&h, &h2), (&w, &w2)] {
            for (a, b) in g_fused
                .get(x)
                .unwrap()
                .iter()
                .zip(g_comp.get(x2).unwrap().iter())
            {
                assert!((a - b).abs() < 1e-10, "gradients differ: {a} vs {b}");
            }
        }
    }
}

#[test]
fn lm_head_logprobs_all_masked_gives_zero() {
    let targets = vec![IGNORE_INDEX; 6];
    let report = gradcheck_with(
        random_inputs(&[&[2, 3, 4], &[5, 4]], 1),
        &GradcheckOptions::default(),
        |tape, x| LmHeadLogprobs::default().apply(tape, &x[0], &x[1], &targets),
    );
    assert!(report.max_error < 1e-9);
}
