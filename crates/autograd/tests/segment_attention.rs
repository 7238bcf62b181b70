//! The segment-masked attention of prefix sharing (`Tape::segment_attention`):
//! f64 gradient checks on the awkward layouts, values against the plain
//! causal kernel run on the sequences each row stands for, and the rows of a
//! shared `[prompt | chosen | rejected]` sequence against causal attention
//! over `prompt + chosen` and `prompt + rejected`.

use autograd::gradcheck::{gradcheck_at, gradcheck_with, random_inputs, GradcheckOptions};
use autograd::kernels::attention::blocked::attention_macs;
use autograd::kernels::attention::{AttentionHeads, KeyGap};
use autograd::{Tape, Tensor};
use ndarray::{s, Axis};

/// The gap of a pair laid out as `[prompt | chosen | rejected]`.
fn pair_gap(prompt: usize, chosen: usize) -> KeyGap {
    KeyGap::new(prompt, prompt + chosen, usize::MAX)
}

/// What the gaps mean, computed with the plain causal kernel: in sequence
/// `b`, the queries before the gap's end are causal attention over the
/// positions `0..end`, the later ones causal attention over the positions
/// `0..start` followed by `end..len` (the gap cut out), and the padding
/// queries from `len` on are 0.
fn attention_by_plain_sequences(
    qkv: &Tensor<f64>,
    heads: AttentionHeads,
    gaps: &[KeyGap],
) -> Tensor<f64> {
    let (b, t, c) = (qkv.shape()[0], qkv.shape()[1], heads.q_width());
    let tape = Tape::<f64>::no_grad();
    // causal attention over the given positions of sequence bi: (len, NH hs)
    let causal = |bi: usize, positions: Vec<usize>| {
        let seq = qkv.slice(s![bi..=bi, .., ..]).select(Axis(1), &positions); // (1, len, 3C)
        let y = tape.plain_causal_attention(&tape.constant(seq.into_dyn()), heads);
        y.value().index_axis(Axis(0), 0).to_owned()
    };
    let mut out = Tensor::zeros(ndarray::IxDyn(&[b, t, c]));
    for (bi, gap) in gaps.iter().enumerate() {
        let live = gap.len.min(t);
        let (start, end) = if gap.is_empty() {
            (live, live)
        } else {
            (gap.start, gap.end.min(live))
        };
        // queries 0..end see the keys 0..=i
        let before = causal(bi, (0..end).collect());
        out.slice_mut(s![bi, ..end, ..]).assign(&before);
        // queries end..live see the keys 0..start and end..=i
        if end < live {
            let after = causal(bi, (0..start).chain(end..live).collect());
            out.slice_mut(s![bi, end..live, ..])
                .assign(&after.slice(s![start.., ..]));
        }
    }
    out
}

fn heads(n_head: usize, n_kv_head: usize, head_dim: usize) -> AttentionHeads {
    AttentionHeads {
        n_head,
        n_kv_head,
        head_dim,
    }
}

/// (B, T, heads, gaps): the edge cases of shared-prefix batches (empty
/// prompt, length-1 responses, several pairs per batch, gaps across 32-row
/// blocks, padding), with multi-head, grouped-query and multi-query heads.
fn layouts() -> Vec<(usize, usize, AttentionHeads, Vec<KeyGap>)> {
    vec![
        // one pair, short
        (1, 6, heads(2, 2, 2), vec![pair_gap(2, 2)]),
        // empty prompt: the rejected tokens see only each other
        (1, 5, heads(1, 1, 2), vec![pair_gap(0, 2)]),
        // length-1 responses (and a length-1 prompt)
        (1, 3, heads(1, 1, 2), vec![pair_gap(1, 1)]),
        (1, 2, heads(1, 1, 2), vec![pair_gap(0, 1)]),
        // several pairs per batch, each its own gap, one row causal, padding after
        (
            3,
            9,
            heads(3, 3, 2),
            vec![pair_gap(3, 2), KeyGap::NONE, pair_gap(1, 4)],
        ),
        // the segment boundary (the gap's end) inside a 32-row block, with
        // blocks before and after it, and a gap that starts inside a block too
        (1, 75, heads(2, 2, 2), vec![pair_gap(20, 25)]),
        // the boundary exactly on a block edge, the gap spanning a whole block
        (
            2,
            70,
            heads(1, 1, 2),
            vec![pair_gap(10, 54), pair_gap(32, 32)],
        ),
        // padded sequences: queries from `len` on are skipped (zero)
        (
            2,
            9,
            heads(2, 2, 2),
            vec![KeyGap::new(2, 3, 7), KeyGap::new(0, 2, 9)],
        ),
        (1, 70, heads(1, 1, 2), vec![KeyGap::new(20, 30, 45)]),
        // grouped-query and multi-query heads
        (1, 6, heads(4, 2, 1), vec![pair_gap(2, 2)]),
        (
            3,
            9,
            heads(3, 1, 2),
            vec![pair_gap(3, 2), KeyGap::NONE, pair_gap(1, 4)],
        ),
        (
            2,
            9,
            heads(4, 2, 1),
            vec![KeyGap::new(2, 3, 7), KeyGap::new(0, 2, 9)],
        ),
        (1, 70, heads(2, 1, 1), vec![KeyGap::new(20, 30, 45)]),
    ]
}

#[test]
fn segment_attention_forward_matches_plain_attention_on_the_sequences_of_each_row() {
    for (b, t, heads, gaps) in layouts() {
        let qkv = random_inputs(&[&[b, t, heads.qkv_width()]], 11).remove(0);
        let tape = Tape::<f64>::no_grad();
        let y = tape.segment_attention(&tape.constant(qkv.clone()), heads, &gaps);
        let expected = attention_by_plain_sequences(&qkv, heads, &gaps);
        let err = (y.value() - &expected)
            .mapv(f64::abs)
            .fold(0.0, |a: f64, &b| a.max(b));
        assert!(
            err < 1e-12,
            "{heads:?}, {gaps:?}: attention differs from the plain kernel by {err}"
        );
    }
}

#[test]
fn segment_attention_gradients() {
    for (b, t, heads, gaps) in layouts() {
        let inputs = random_inputs(&[&[b, t, heads.qkv_width()]], 3);
        let report = gradcheck_with(
            inputs,
            &GradcheckOptions {
                max_entries_per_input: 300,
                ..Default::default()
            },
            |tape, x| tape.segment_attention(&x[0], heads, &gaps),
        );
        assert!(report.max_error < 1e-6, "{heads:?}, {gaps:?}: {report:?}");
    }
}

#[test]
fn segment_attention_gradients_in_the_parallel_path_and_on_transposed_input() {
    let gaps = [pair_gap(7, 12), pair_gap(0, 30)];
    let report = gradcheck_with(
        random_inputs(&[&[2, 40, 3 * 16]], 5),
        &GradcheckOptions {
            max_entries_per_input: 150,
            ..Default::default()
        },
        |t, x| t.segment_attention(&x[0], AttentionHeads::multi_head(4, 16), &gaps),
    );
    assert!(report.max_error < 1e-6, "{report:?}");
    // grouped-query: (NH + 2 NKV) hs = (8 + 2 * 2) 4 = 48, parallel over (b, kv head)
    let report = gradcheck_with(
        random_inputs(&[&[2, 40, 48]], 6),
        &GradcheckOptions {
            max_entries_per_input: 150,
            ..Default::default()
        },
        |t, x| t.segment_attention(&x[0], heads(8, 2, 4), &gaps),
    );
    assert!(report.max_error < 1e-6, "{report:?}");
    let x = random_inputs(&[&[6, 2, 1]], 8).remove(0); // (3C, T, B) -> permuted to (B, T, 3C)
    let x = x.permuted_axes(ndarray::IxDyn(&[2, 1, 0]));
    gradcheck_at(vec![x], |t, x| {
        t.segment_attention(&x[0], heads(1, 1, 2), &[pair_gap(0, 1)])
    });
}

#[test]
fn empty_gaps_are_causal_attention_bitwise() {
    let qkv = random_inputs(&[&[2, 70, 3 * 8]], 4)
        .remove(0)
        .mapv(|v| v as f32);
    let tape = Tape::<f32>::new();
    let x = tape.leaf(qkv);
    let causal = tape.causal_attention(&x, AttentionHeads::multi_head(2, 8));
    let masked = tape.segment_attention(&x, AttentionHeads::multi_head(2, 8), &[KeyGap::NONE; 2]);
    assert_eq!(causal.value(), masked.value());
}

/// The rows of a shared `[prompt | chosen | rejected]` sequence are those of
/// causal attention over `prompt + chosen` and over `prompt + rejected`.
#[test]
fn shared_rows_equal_the_two_causal_sequences() {
    let (p, ch, rj) = (37, 20, 14);
    let t = p + ch + rj;
    for heads in [
        AttentionHeads::multi_head(2, 8),
        heads(4, 2, 2),
        heads(3, 1, 2),
    ] {
        let qkv = random_inputs(&[&[1, t, heads.qkv_width()]], 21).remove(0);
        let tape = Tape::<f64>::no_grad();
        let shared = tape.segment_attention(&tape.constant(qkv.clone()), heads, &[pair_gap(p, ch)]);
        let chosen_seq = qkv.slice(s![.., ..p + ch, ..]).to_owned().into_dyn();
        let rejected_seq = ndarray::concatenate(
            Axis(1),
            &[qkv.slice(s![.., ..p, ..]), qkv.slice(s![.., p + ch.., ..])],
        )
        .unwrap()
        .into_dyn();
        let chosen = tape.causal_attention(&tape.constant(chosen_seq), heads);
        let rejected = tape.causal_attention(&tape.constant(rejected_seq), heads);
        let shared = shared.value();
        let err_c = (&shared.slice(s![.., ..p + ch, ..]) - &chosen.value().view())
            .mapv(f64::abs)
            .fold(0.0, |a: f64, &b| a.max(b));
        let err_r = (&shared.slice(s![.., p + ch.., ..])
            - &rejected.value().slice(s![.., p.., ..]))
            .mapv(f64::abs)
            .fold(0.0, |a: f64, &b| a.max(b));
        assert!(err_c < 1e-12 && err_r < 1e-12, "{heads:?}: {err_c} {err_r}");
    }
}

/// The products skip the hidden blocks: the count of multiply-adds.
#[test]
fn masked_blocks_are_skipped() {
    let hs = 16;
    // causal, one block: the full square (the triangle is masked inside it)
    assert_eq!(attention_macs(32, hs, KeyGap::NONE), 2 * hs * 32 * 32);
    // causal, two blocks: the second block needs all 64 keys, the first 32
    assert_eq!(
        attention_macs(64, hs, KeyGap::NONE),
        2 * hs * 32 * (32 + 64)
    );
    // a gap of 32 keys over the whole second block: the third block skips it
    let gap = pair_gap(32, 32);
    assert_eq!(
        attention_macs(96, hs, gap),
        2 * hs * 32 * (32 + 64 + (32 + 32))
    );
    // a gap ending inside a block splits it: rows 40..64 skip keys 20..40
    let gap = pair_gap(20, 20);
    assert_eq!(
        attention_macs(64, hs, gap),
        2 * hs * (32 * 32 + 8 * 40 + 24 * (20 + 24))
    );
}
