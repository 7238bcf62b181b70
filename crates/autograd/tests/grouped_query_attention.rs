//! Grouped-query attention against its definition by `repeat_kv` (Hugging
//! Face transformers): GQA over `qkv` is multi-head attention over a qkv
//! whose k and v heads were each repeated G times (query head h reading
//! copy h of kv head h / G), and its dk, dv are the multi-head dk, dv with
//! the G copies of each kv head summed back. Both kernels (plain and
//! blocked, the latter with key gaps and padding) are checked against the
//! plain multi-head kernel on the repeated input; and bad head counts panic
//! with a clear message.

use autograd::gradcheck::random_inputs;
use autograd::kernels::attention::{blocked, plain, AttentionDims, AttentionHeads, KeyGap};
use autograd::{Tape, Tensor};
use ndarray::IxDyn;

/// `qkv: (B, T, (NH + 2 NKV) hs)` -> `(B, T, 3 NH hs)`: q as is, each k and
/// v head repeated G times in place (`repeat_kv`).
fn repeat_kv(qkv: &[f64], rows: usize, heads: AttentionHeads) -> Vec<f64> {
    let (hs, nh, g) = (heads.head_dim, heads.n_head, heads.group());
    let (q_w, kv_w) = (heads.q_width(), heads.kv_width());
    let mut out = Vec::with_capacity(rows * 3 * q_w);
    for row in qkv.chunks(heads.qkv_width()) {
        out.extend_from_slice(&row[..q_w]);
        for part in [&row[q_w..q_w + kv_w], &row[q_w + kv_w..]] {
            for h in 0..nh {
                out.extend_from_slice(&part[(h / g) * hs..][..hs]);
            }
        }
    }
    assert_eq!(out.len(), rows * 3 * q_w);
    out
}

/// The adjoint of [`repeat_kv`]: `(B, T, 3 NH hs)` -> `(B, T, (NH + 2 NKV) hs)`,
/// the G copies of each k and v head summed.
fn sum_repeated_kv(dqkv_mha: &[f64], heads: AttentionHeads) -> Vec<f64> {
    let (hs, nh, g) = (heads.head_dim, heads.n_head, heads.group());
    let (q_w, kv_w) = (heads.q_width(), heads.kv_width());
    let mut out = Vec::new();
    for row in dqkv_mha.chunks(3 * q_w) {
        out.extend_from_slice(&row[..q_w]);
        for part in [&row[q_w..2 * q_w], &row[2 * q_w..]] {
            let mut summed = vec![0.0; kv_w];
            for h in 0..nh {
                for (s, &d) in summed[(h / g) * hs..][..hs]
                    .iter_mut()
                    .zip(&part[h * hs..][..hs])
                {
                    *s += d;
                }
            }
            out.extend_from_slice(&summed);
        }
    }
    out
}

fn max_abs_diff(a: &[f64], b: &[f64]) -> f64 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f64::max)
}

fn heads(n_head: usize, n_kv_head: usize, head_dim: usize) -> AttentionHeads {
    AttentionHeads {
        n_head,
        n_kv_head,
        head_dim,
    }
}

#[test]
fn grouped_query_attention_is_multi_head_attention_over_repeated_kv_heads() {
    let pair_gap = |prompt, chosen| KeyGap::new(prompt, prompt + chosen, usize::MAX);
    for (b, t, heads, gaps) in [
        (2, 5, heads(4, 2, 3), vec![KeyGap::NONE; 2]),
        (1, 7, heads(3, 1, 2), vec![KeyGap::NONE]),
        (1, 1, heads(2, 1, 1), vec![KeyGap::NONE]),
        (1, 1, heads(1, 1, 1), vec![KeyGap::NONE]),
        // the group's heads are consecutive: head h reads kv head h / G, not h % NKV
        (1, 6, heads(6, 2, 2), vec![KeyGap::NONE]),
        // gaps, padding, several row blocks, the parallel path
        (
            3,
            9,
            heads(4, 2, 2),
            vec![pair_gap(3, 2), KeyGap::NONE, KeyGap::new(1, 4, 7)],
        ),
        (
            2,
            70,
            heads(8, 2, 4),
            vec![pair_gap(10, 30), KeyGap::new(0, 5, 50)],
        ),
    ] {
        let causal = gaps.iter().all(|g| *g == KeyGap::NONE);
        let (q_w, nh) = (heads.q_width(), heads.n_head);
        let inputs = random_inputs(&[&[b, t, heads.qkv_width()], &[b, t, q_w]], 17);
        let qkv: Vec<f64> = inputs[0].iter().copied().collect();
        let dout: Vec<f64> = inputs[1].iter().copied().collect();
        let qkv_mha = repeat_kv(&qkv, b * t, heads);
        let mha = AttentionHeads::multi_head(nh, q_w);

        // multi-head reference: the blocked kernel with the same gaps (it
        // equals the plain one for multi-head attention, see
        // plain_attention.rs); the plain kernel as well when causal
        let reference = |gqa: bool, use_plain: bool| {
            let (heads, qkv) = if gqa { (heads, &qkv) } else { (mha, &qkv_mha) };
            let dims = AttentionDims { b, t, heads };
            let mut out = vec![0.0; b * t * q_w];
            let mut att = vec![0.0; b * nh * t * t];
            let mut dqkv = vec![0.0; qkv.len()];
            if use_plain {
                plain::attention_forward(&mut out, &mut att, qkv, dims);
                plain::attention_backward(&mut dqkv, &dout, qkv, &att, dims);
            } else {
                blocked::attention_forward(&mut out, &mut att, qkv, dims, &gaps);
                blocked::attention_backward(&mut dqkv, &dout, qkv, &att, dims, &gaps);
            }
            (out, att, dqkv)
        };
        let kernels: &[bool] = if causal { &[true, false] } else { &[false] };
        for &use_plain in kernels {
            let (out_mha, att_mha, dqkv_mha) = reference(false, use_plain);
            let (out, att, dqkv) = reference(true, use_plain);
            let kernel = if use_plain { "plain" } else { "blocked" };
            let dqkv_expected = sum_repeated_kv(&dqkv_mha, heads);
            for (name, got, expected) in [
                ("out", &out, &out_mha),
                ("att", &att, &att_mha),
                ("dqkv", &dqkv, &dqkv_expected),
            ] {
                let err = max_abs_diff(got, expected);
                assert!(
                    err < 1e-12,
                    "{kernel} {heads:?} {gaps:?}: {name} differs from repeat_kv multi-head attention by {err:.3e}"
                );
            }
        }
    }
}

/// The same through the tape: `causal_attention` with grouped-query heads
/// against `causal_attention` over the repeated qkv, gradient included.
#[test]
fn grouped_query_tape_op_is_multi_head_over_repeated_kv_heads() {
    let heads = heads(6, 3, 2);
    let (b, t) = (2, 11);
    let qkv = random_inputs(&[&[b, t, heads.qkv_width()]], 4).remove(0);
    let dy = random_inputs(&[&[b, t, heads.q_width()]], 5).remove(0);
    let run = |qkv: Tensor<f64>, heads: AttentionHeads| {
        let tape = Tape::<f64>::new();
        let x = tape.leaf(qkv);
        let y = tape.causal_attention(&x, heads);
        let loss = tape.sum(&tape.mul(&y, &tape.constant(dy.clone())), &[0, 1, 2], false);
        let grads = tape.backward(&loss);
        let y: Vec<f64> = y.value().iter().copied().collect();
        let dx: Vec<f64> = grads.get_or_zeros(&x).iter().copied().collect();
        (y, dx)
    };
    let flat: Vec<f64> = qkv.iter().copied().collect();
    let repeated = Tensor::from_shape_vec(
        IxDyn(&[b, t, 3 * heads.q_width()]),
        repeat_kv(&flat, b * t, heads),
    )
    .unwrap();
    let (y, dx) = run(qkv, heads);
    let (y_mha, dx_mha) = run(
        repeated,
        AttentionHeads::multi_head(heads.n_head, heads.q_width()),
    );
    assert!(max_abs_diff(&y, &y_mha) < 1e-12);
    assert!(max_abs_diff(&dx, &sum_repeated_kv(&dx_mha, heads)) < 1e-12);
}

#[test]
fn attention_heads_widths() {
    let h = heads(8, 2, 16);
    assert_eq!(
        (h.q_width(), h.kv_width(), h.qkv_width(), h.group()),
        (128, 32, 192, 4)
    );
    assert_eq!(AttentionHeads::multi_head(12, 768), heads(12, 12, 64));
    assert!(h.check().is_ok());
    assert!(heads(4, 3, 2).check().is_err());
    assert!(heads(4, 0, 2).check().is_err());
    assert!(heads(4, 2, 0).check().is_err());
}

#[test]
#[should_panic(
    expected = "causal_attention: attention heads: 4 query heads, 3 key/value heads of size 2"
)]
fn kv_heads_that_do_not_divide_the_query_heads_panic() {
    let tape = Tape::<f64>::new();
    let x = tape.leaf(Tensor::zeros(IxDyn(&[1, 2, 20])));
    tape.causal_attention(&x, heads(4, 3, 2));
}

#[test]
#[should_panic(expected = "segment_attention: qkv must be (B, T, (NH + 2 NKV) hs) = (B, T, 16)")]
fn qkv_of_the_wrong_width_panics() {
    let tape = Tape::<f64>::new();
    let x = tape.leaf(Tensor::zeros(IxDyn(&[1, 2, 24])));
    tape.segment_attention(&x, heads(4, 2, 2), &[KeyGap::NONE]);
}

#[test]
#[should_panic(expected = "attention heads: 5 channels do not split into 2 heads")]
fn multi_head_of_indivisible_channels_panics() {
    AttentionHeads::multi_head(2, 5);
}
