//! The plain attention kernel (`kernels::attention::plain`): f64 gradient
//! checks of its op, multi-head, grouped-query and multi-query, and the fast
//! blocked kernel against it, forward and backward, in f64 and f32, with and
//! without key gaps and padding.

use autograd::gradcheck::{gradcheck, gradcheck_at, random_input_transposed, random_inputs};
use autograd::kernels::attention::{blocked, plain, AttentionDims, AttentionHeads, KeyGap};
use autograd::Float;

fn heads(n_head: usize, n_kv_head: usize, head_dim: usize) -> AttentionHeads {
    AttentionHeads {
        n_head,
        n_kv_head,
        head_dim,
    }
}

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
        let heads = AttentionHeads::multi_head(nh, c);
        gradcheck(&[&[b, t, 3 * c]], |tape, x| {
            tape.plain_causal_attention(&x[0], heads)
        });
    }
    // qkv not in standard layout
    gradcheck_at(vec![random_input_transposed(&[2, 3, 6], 7)], |t, x| {
        t.plain_causal_attention(&x[0], AttentionHeads::multi_head(2, 2))
    });
}

#[test]
fn plain_grouped_query_attention_gradients() {
    for (b, t, heads) in [
        // two query heads per kv head, odd sizes
        (2, 5, heads(4, 2, 3)),
        // three per kv head
        (1, 4, heads(6, 2, 1)),
        // multi-query: one kv head for all
        (2, 4, heads(3, 1, 2)),
        (1, 6, heads(4, 1, 3)),
        // every size 1
        (1, 1, heads(1, 1, 1)),
        (1, 1, heads(2, 1, 1)),
    ] {
        gradcheck(&[&[b, t, heads.qkv_width()]], |tape, x| {
            tape.plain_causal_attention(&x[0], heads)
        });
    }
    // qkv not in standard layout: (B, T, (NH + 2 NKV) hs) = (2, 3, 8)
    gradcheck_at(vec![random_input_transposed(&[2, 3, 8], 9)], |t, x| {
        t.plain_causal_attention(&x[0], heads(4, 2, 1))
    });
}

/// (B, T, heads, gaps): one of each path of the blocked kernel: the serial
/// and the parallel loop (parallel from B NH T^2 hs = 2^14), one row block
/// and several (`ROW_BLOCK` = 32 rows), the last one whole or partial; each
/// with multi-head, grouped-query and multi-query heads; causal, with key
/// gaps and with padding.
type Case = (usize, usize, AttentionHeads, Vec<KeyGap>);

fn cases() -> Vec<Case> {
    assert_eq!(
        blocked::ROW_BLOCK,
        32,
        "the shapes below assume 32-row blocks"
    );
    let causal = |b| vec![KeyGap::NONE; b];
    let pair_gap = |prompt, chosen| KeyGap::new(prompt, prompt + chosen, usize::MAX);
    vec![
        // multi-head (GPT-2), causal
        (1, 1, heads(1, 1, 1), causal(1)),
        (1, 1, heads(1, 1, 2), causal(1)),
        (2, 5, heads(3, 3, 2), causal(2)),
        (1, 31, heads(1, 1, 3), causal(1)),
        // serial, two row blocks
        (1, 40, heads(1, 1, 3), causal(1)),
        // parallel, two whole row blocks
        (2, 64, heads(1, 1, 4), causal(2)),
        // parallel, a partial second block, four heads
        (3, 33, heads(4, 4, 4), causal(3)),
        // parallel, four row blocks, the last partial
        (1, 97, heads(2, 2, 4), causal(1)),
        // grouped-query and multi-query, causal: serial, then parallel
        (2, 5, heads(4, 2, 3), causal(2)),
        (1, 40, heads(3, 1, 2), causal(1)),
        (3, 33, heads(8, 2, 2), causal(3)),
        (1, 97, heads(4, 1, 2), causal(1)),
        // key gaps and padding, multi-head
        (
            3,
            9,
            heads(3, 3, 2),
            vec![pair_gap(3, 2), KeyGap::NONE, pair_gap(1, 4)],
        ),
        (
            2,
            9,
            heads(2, 2, 2),
            vec![KeyGap::new(2, 3, 7), KeyGap::new(0, 2, 9)],
        ),
        // key gaps and padding, grouped-query and multi-query
        (
            3,
            9,
            heads(4, 2, 3),
            vec![pair_gap(3, 2), KeyGap::NONE, pair_gap(1, 4)],
        ),
        (1, 5, heads(2, 1, 2), vec![pair_gap(0, 2)]),
        (
            2,
            9,
            heads(6, 3, 1),
            vec![KeyGap::new(2, 3, 7), KeyGap::new(0, 2, 9)],
        ),
        // the gap's end inside a row block, a gap on a block edge, padding
        // across blocks; serial and parallel
        (1, 75, heads(6, 3, 2), vec![pair_gap(20, 25)]),
        (
            2,
            70,
            heads(2, 1, 2),
            vec![pair_gap(10, 54), pair_gap(32, 32)],
        ),
        (1, 70, heads(3, 1, 2), vec![KeyGap::new(20, 30, 45)]),
        (
            2,
            40,
            heads(8, 2, 4),
            vec![pair_gap(7, 12), pair_gap(0, 30)],
        ),
    ]
}

/// Forward out and att, and the backward's dqkv, of the plain and the
/// blocked kernel on the same random inputs.
struct BothKernels<T> {
    out: [Vec<T>; 2],
    att: [Vec<T>; 2],
    dqkv: [Vec<T>; 2],
}

/// Outputs of [`plain_by_sequences`]: out, att, dqkv.
type Outputs<T> = (Vec<T>, Vec<T>, Vec<T>);

/// What the blocked kernel computes, from the plain causal kernel alone: in
/// sequence b, the queries before the gap's end are causal attention over
/// the positions `0..end`, the later ones causal attention over `0..start`
/// followed by `end..len` (the gap cut out), the padding ones from `len` on
/// 0. Each of those runs of plain attention gets the rows of `dout` of the
/// queries it stands for (0 for the others), and its dqkv is added back at
/// its positions. With no gap, this is plain attention over the sequence.
fn plain_by_sequences<T: Float>(
    qkv: &[T],
    dout: &[T],
    (b, t, heads): (usize, usize, AttentionHeads),
    gaps: &[KeyGap],
) -> Outputs<T> {
    let (qkv_w, q_w, nh) = (heads.qkv_width(), heads.q_width(), heads.n_head);
    let mut out = vec![T::zero(); b * t * q_w];
    let mut att = vec![T::zero(); b * nh * t * t];
    let mut dqkv = vec![T::zero(); b * t * qkv_w];
    for (bi, gap) in gaps.iter().enumerate() {
        let live = gap.len.min(t);
        let (start, end) = if gap.is_empty() {
            (live, live)
        } else {
            (gap.start, gap.end.min(live))
        };
        // (positions of the run, index in them of the first query it answers)
        let mut runs = vec![((0..end).collect::<Vec<usize>>(), 0)];
        if end < live {
            runs.push(((0..start).chain(end..live).collect(), start));
        }
        for (positions, first) in runs {
            let n = positions.len();
            if n == 0 {
                continue;
            }
            let row = |p: usize| bi * t + p;
            let mut sub_qkv = Vec::with_capacity(n * qkv_w);
            let mut sub_dout = vec![T::zero(); n * q_w];
            for (i, &p) in positions.iter().enumerate() {
                sub_qkv.extend_from_slice(&qkv[row(p) * qkv_w..][..qkv_w]);
                if i >= first {
                    sub_dout[i * q_w..][..q_w].copy_from_slice(&dout[row(p) * q_w..][..q_w]);
                }
            }
            let dims = AttentionDims { b: 1, t: n, heads };
            let mut sub_out = vec![T::zero(); n * q_w];
            let mut sub_att = vec![T::zero(); nh * n * n];
            let mut sub_dqkv = vec![T::zero(); n * qkv_w];
            plain::attention_forward(&mut sub_out, &mut sub_att, &sub_qkv, dims);
            plain::attention_backward(&mut sub_dqkv, &sub_dout, &sub_qkv, &sub_att, dims);
            for (i, &p) in positions.iter().enumerate() {
                for (d, &s) in dqkv[row(p) * qkv_w..][..qkv_w]
                    .iter_mut()
                    .zip(&sub_dqkv[i * qkv_w..][..qkv_w])
                {
                    *d += s;
                }
                if i < first {
                    continue;
                }
                out[row(p) * q_w..][..q_w].copy_from_slice(&sub_out[i * q_w..][..q_w]);
                for h in 0..nh {
                    for (j, &p2) in positions.iter().enumerate() {
                        att[((bi * nh + h) * t + p) * t + p2] = sub_att[(h * n + i) * n + j];
                    }
                }
            }
        }
    }
    (out, att, dqkv)
}

fn run_both<T: Float>(
    b: usize,
    t: usize,
    heads: AttentionHeads,
    gaps: &[KeyGap],
) -> BothKernels<T> {
    let dims = AttentionDims { b, t, heads };
    let (qkv_w, q_w) = (heads.qkv_width(), heads.q_width());
    let inputs = random_inputs(&[&[b, t, qkv_w], &[b, t, q_w]], 13);
    let to_vec = |x: &autograd::Tensor<f64>| x.iter().map(|&v| T::cast(v)).collect::<Vec<T>>();
    let (qkv, dout) = (to_vec(&inputs[0]), to_vec(&inputs[1]));
    let (plain_out, plain_att, plain_dqkv) = plain_by_sequences(&qkv, &dout, (b, t, heads), gaps);
    let mut out = vec![T::zero(); b * t * q_w];
    let mut att = vec![T::zero(); b * heads.n_head * t * t];
    let mut dqkv = vec![T::zero(); b * t * qkv_w];
    blocked::attention_forward(&mut out, &mut att, &qkv, dims, gaps);
    blocked::attention_backward(&mut dqkv, &dout, &qkv, &att, dims, gaps);
    BothKernels {
        out: [plain_out, out],
        att: [plain_att, att],
        dqkv: [plain_dqkv, dqkv],
    }
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
    for (b, t, heads, gaps) in cases() {
        let both = run_both::<T>(b, t, heads, &gaps);
        for (name, [plain, blocked]) in [("out", both.out), ("att", both.att), ("dqkv", both.dqkv)]
        {
            let (diff, size) = max_diff(&plain, &blocked);
            assert!(
                diff <= rel_tolerance * size.max(1.0),
                "{} (B, T) = {:?}, {heads:?}, {gaps:?}: {name} of the blocked kernel differs from the plain one by {diff:.3e} (largest entry {size:.3e})",
                T::NAME,
                (b, t)
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
