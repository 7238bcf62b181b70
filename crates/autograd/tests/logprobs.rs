//! The log-prob ops and the fused LM-head kernel against finite differences
//! (f64) and against the same computation built from primitive autograd ops.

use autograd::gradcheck::{gradcheck, gradcheck_with, random_inputs, GradcheckOptions};
use autograd::kernels::lm_head_logprobs::{
    lm_head_logprobs_backward, lm_head_logprobs_forward, HeadWeight, LmHeadDims,
};
use autograd::{LmHeadLogprobs, IGNORE_INDEX};
use autograd::{Precision, Tape, Tensor, Var};
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
            tape.sequence_logprobs(&x[0], &targets)
        });
    }
    // A fully masked sequence and a length-1 response.
    let mut targets = random_targets(3, 4, 6, &[1], 9);
    targets[8..12].copy_from_slice(&[IGNORE_INDEX, 2, IGNORE_INDEX, IGNORE_INDEX]);
    gradcheck(&[&[3, 4, 6]], |tape, x| {
        tape.sequence_logprobs(&x[0], &targets)
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
            |tape, x| tape.sequence_logprobs(x, &targets),
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
    let y = tape.sequence_logprobs(&x, &targets);
    assert!(y.value().iter().all(|v| v.is_finite()));
    compare_values_and_grads(
        &logits,
        |tape, x| tape.sequence_logprobs(x, &targets),
        |tape, x| composed_logprobs(tape, x, &mask),
    );
    // And in f32, where a naive exp would overflow.
    let tape = Tape::<f32>::new();
    let x = tape.leaf(logits.mapv(|v| v as f32));
    let y = tape.sequence_logprobs(&x, &targets);
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

/// The LM-head kernels written out plainly (f64, no chunks): on R scored rows,
/// z = h @ wte^T, logp = z[y] - lse(z), dz = g (onehot(y) - softmax(z)),
/// dh = dz @ wte, dwte = dz^T @ h.
fn lm_head_reference(
    h: &[f64],
    wte: &[f64],
    targets: &[usize],
    dlogp: &[f64],
    c: usize,
) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
    let (r, v) = (targets.len(), wte.len() / c);
    let mut logp = vec![0.0; r];
    let mut dh = vec![0.0; r * c];
    let mut dwte = vec![0.0; v * c];
    for i in 0..r {
        let z: Vec<f64> = (0..v)
            .map(|j| (0..c).map(|k| h[i * c + k] * wte[j * c + k]).sum())
            .collect();
        let max = z.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        let lse = max + z.iter().map(|&zj| (zj - max).exp()).sum::<f64>().ln();
        logp[i] = z[targets[i]] - lse;
        for j in 0..v {
            let onehot = if j == targets[i] { 1.0 } else { 0.0 };
            let dz = dlogp[i] * (onehot - (z[j] - lse).exp());
            for k in 0..c {
                dh[i * c + k] += dz * wte[j * c + k];
                dwte[j * c + k] += dz * h[i * c + k];
            }
        }
    }
    (logp, dh, dwte)
}

fn assert_close(name: &str, got: &[f64], want: &[f64]) {
    assert_eq!(got.len(), want.len(), "{name}: lengths differ");
    for (i, (a, b)) in got.iter().zip(want).enumerate() {
        assert!(
            (a - b).abs() <= 1e-12 * (1.0 + b.abs()),
            "{name}[{i}]: {a} vs {b}"
        );
    }
}

#[test]
fn lm_head_logprobs_kernels_match_a_plain_reference_for_any_chunking() {
    let (r, c, v) = (6, 3, 11);
    let inputs = random_inputs(&[&[r, c], &[v, c], &[r]], 4);
    let (h, wte, dlogp) = (
        inputs[0].as_slice().unwrap(),
        inputs[1].as_slice().unwrap(),
        inputs[2].as_slice().unwrap(),
    );
    let mut rng = StdRng::seed_from_u64(8);
    let targets: Vec<usize> = (0..r).map(|_| rng.gen_range(0..v)).collect();
    let (ref_logp, ref_dh, ref_dwte) = lm_head_reference(h, wte, &targets, dlogp, c);
    // One chunk (the forward keeps the logits), several with a short last one, one row each.
    for vc in [v, 4, 1] {
        let dims = LmHeadDims {
            r,
            c,
            v,
            vc,
            precision: Precision::F32,
        };
        let (mut logp, mut lse) = (vec![f64::NAN; r], vec![f64::NAN; r]);
        let logits = lm_head_logprobs_forward(
            &mut logp,
            &mut lse,
            h,
            HeadWeight::Values(wte),
            &targets,
            dims,
        );
        assert_eq!(logits.is_some(), vc >= v, "vc = {vc}");
        assert_close("logp", &logp, &ref_logp);
        // dh is accumulated into, dwte overwritten.
        let (mut dh, mut dwte) = (vec![0.0; r * c], vec![f64::NAN; v * c]);
        lm_head_logprobs_backward(
            &mut dh,
            Some(&mut dwte),
            dlogp,
            h,
            HeadWeight::Values(wte),
            &targets,
            &lse,
            logits,
            dims,
        );
        assert_close("dh", &dh, &ref_dh);
        assert_close("dwte", &dwte, &ref_dwte);
        // A frozen head (no dwte asked for) gives the same dh.
        let logits = lm_head_logprobs_forward(
            &mut logp,
            &mut lse,
            h,
            HeadWeight::Values(wte),
            &targets,
            dims,
        );
        let mut dh_frozen = vec![0.0; r * c];
        lm_head_logprobs_backward(
            &mut dh_frozen,
            None,
            dlogp,
            h,
            HeadWeight::Values(wte),
            &targets,
            &lse,
            logits,
            dims,
        );
        assert_eq!(dh_frozen, dh);
    }
}

#[test]
fn lm_head_logprobs_backward_from_kept_logits_equals_recomputed() {
    let (r, c, v) = (5, 4, 9);
    let inputs = random_inputs(&[&[r, c], &[v, c], &[r]], 6);
    let (h, wte, dlogp) = (
        inputs[0].as_slice().unwrap(),
        inputs[1].as_slice().unwrap(),
        inputs[2].as_slice().unwrap(),
    );
    let targets: Vec<usize> = (0..r).map(|i| (i * 5) % v).collect();
    let dims = LmHeadDims {
        r,
        c,
        v,
        vc: v,
        precision: Precision::F32,
    };
    let (mut logp, mut lse) = (vec![0.0; r], vec![0.0; r]);
    let logits = lm_head_logprobs_forward(
        &mut logp,
        &mut lse,
        h,
        HeadWeight::Values(wte),
        &targets,
        dims,
    );
    assert!(logits.is_some());
    let backward = |logits| {
        let (mut dh, mut dwte) = (vec![0.0; r * c], vec![0.0; v * c]);
        lm_head_logprobs_backward(
            &mut dh,
            Some(&mut dwte),
            dlogp,
            h,
            HeadWeight::Values(wte),
            &targets,
            &lse,
            logits,
            dims,
        );
        (dh, dwte)
    };
    assert_eq!(backward(logits), backward(None));
}

#[test]
fn lm_head_logprobs_op_is_its_kernels_on_the_scored_rows() {
    // f32, bitwise: the op only gathers the scored rows, sums each sequence's
    // log-probs in row order and scatters dh back.
    let (s, t, c, v) = (3, 5, 4, 40);
    let targets = random_targets(s, t, v, &[1], 12);
    let inputs = random_inputs(&[&[s, t, c], &[v, c]], 13);
    let (hidden, wte) = (inputs[0].mapv(|x| x as f32), inputs[1].mapv(|x| x as f32));
    let seed = Tensor::from_shape_fn(IxDyn(&[s]), |i| 0.5 + i[0] as f32);

    let tape = Tape::<f32>::new();
    let (hv, wv) = (tape.leaf(hidden.clone()), tape.leaf(wte.clone()));
    let op_logp = LmHeadLogprobs::default().apply(&tape, &hv, &wv, &targets);
    let op_value = op_logp.value().clone();
    let grads = tape.backward_with(&op_logp, seed.clone());

    let scored: Vec<usize> = (0..s * t).filter(|&i| targets[i] != IGNORE_INDEX).collect();
    let r = scored.len();
    let hidden_flat = hidden.as_slice().unwrap();
    let h: Vec<f32> = scored
        .iter()
        .flat_map(|&i| hidden_flat[i * c..(i + 1) * c].to_vec())
        .collect();
    let row_targets: Vec<usize> = scored.iter().map(|&i| targets[i] as usize).collect();
    let dims = LmHeadDims {
        r,
        c,
        v,
        vc: v,
        precision: Precision::F32,
    }; // the op's chunking at this size
    let (mut row_logp, mut lse) = (vec![0.0; r], vec![0.0; r]);
    let logits = lm_head_logprobs_forward(
        &mut row_logp,
        &mut lse,
        &h,
        HeadWeight::Values(wte.as_slice().unwrap()),
        &row_targets,
        dims,
    );
    let mut seq_logp = vec![0f32; s];
    for (&i, &lp) in scored.iter().zip(&row_logp) {
        seq_logp[i / t] += lp;
    }
    assert_eq!(op_value.as_slice().unwrap(), &seq_logp[..]);

    let drow_logp: Vec<f32> = scored.iter().map(|&i| seed[i / t]).collect();
    let (mut dh, mut dwte) = (vec![0.0; r * c], vec![0.0; v * c]);
    lm_head_logprobs_backward(
        &mut dh,
        Some(&mut dwte),
        &drow_logp,
        &h,
        HeadWeight::Values(wte.as_slice().unwrap()),
        &row_targets,
        &lse,
        logits,
        dims,
    );
    let mut dhidden = vec![0f32; s * t * c];
    for (k, &i) in scored.iter().enumerate() {
        dhidden[i * c..(i + 1) * c].copy_from_slice(&dh[k * c..(k + 1) * c]);
    }
    assert_eq!(grads.get(&hv).unwrap().as_slice().unwrap(), &dhidden[..]);
    assert_eq!(grads.get(&wv).unwrap().as_slice().unwrap(), &dwte[..]);
}
