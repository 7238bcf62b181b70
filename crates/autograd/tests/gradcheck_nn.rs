//! Gradient checks of the fused nn ops (f64, central differences), and their
//! forward values against plain reference loops.

use autograd::gradcheck::{gradcheck, random_inputs};
use autograd::kernels::attention::AttentionHeads;
use autograd::{Tape, Tensor};

#[test]
fn embedding_gradients_scatter_add() {
    // repeated ids: their rows of dtable must accumulate
    gradcheck(&[&[5, 3]], |t, x| {
        t.embedding(&x[0], &[4, 0, 4, 2], &[2, 2])
    });
    gradcheck(&[&[1, 1]], |t, x| t.embedding(&x[0], &[0], &[1]));
    gradcheck(&[&[7, 4]], |t, x| t.embedding(&x[0], &[6, 6, 6], &[3]));
    gradcheck(&[&[3, 5]], |t, x| {
        t.embedding(&x[0], &[1, 2, 0, 1, 1, 2], &[2, 1, 3])
    });
}

#[test]
fn embedding_forward_gathers_rows() {
    let tape = Tape::<f64>::no_grad();
    let table = tape.constant(random_inputs(&[&[4, 3]], 1).remove(0));
    let y = tape.embedding(&table, &[3, 1], &[2]);
    assert_eq!(y.shape(), &[2, 3]);
    for j in 0..3 {
        assert_eq!(y.value()[[0, j]], table.value()[[3, j]]);
        assert_eq!(y.value()[[1, j]], table.value()[[1, j]]);
    }
}

#[test]
#[should_panic(expected = "embedding: id 5")]
fn embedding_refuses_out_of_range_ids() {
    let tape = Tape::<f64>::new();
    let table = tape.leaf(Tensor::zeros(ndarray::IxDyn(&[5, 2])));
    tape.embedding(&table, &[0, 5], &[2]);
}

#[test]
fn layer_norm_gradients() {
    for shape in [&[1usize, 1][..], &[3, 5], &[2, 3, 7], &[1, 4], &[33, 3]] {
        let c = *shape.last().unwrap();
        gradcheck(&[shape, &[c], &[c]], |t, x| {
            t.layer_norm(&x[0], &x[1], Some(&x[2]), 1e-5)
        });
        gradcheck(&[shape, &[c]], |t, x| {
            t.layer_norm(&x[0], &x[1], None, 1e-5)
        });
    }
}

#[test]
fn layer_norm_gradients_in_the_parallel_path() {
    // enough rows for several blocks of partial dweight/dbias sums on rayon
    let shape: &[usize] = &[300, 130];
    let report = autograd::gradcheck::gradcheck_with(
        random_inputs(&[shape, &[130], &[130]], 3),
        &autograd::gradcheck::GradcheckOptions {
            max_entries_per_input: 60,
            ..Default::default()
        },
        |t, x| t.layer_norm(&x[0], &x[1], Some(&x[2]), 1e-5),
    );
    assert!(report.max_error < 1e-6, "{report:?}");
}

#[test]
fn layer_norm_forward_matches_reference_loop() {
    let (n, c) = (4, 6);
    let xs = random_inputs(&[&[n, c], &[c], &[c]], 7);
    let tape = Tape::<f64>::no_grad();
    let vars: Vec<_> = xs.iter().map(|x| tape.constant(x.clone())).collect();
    let y = tape.layer_norm(&vars[0], &vars[1], Some(&vars[2]), 1e-5);
    for i in 0..n {
        let row: Vec<f64> = (0..c).map(|j| xs[0][[i, j]]).collect();
        let mean = row.iter().sum::<f64>() / c as f64;
        let var = row.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / c as f64;
        for j in 0..c {
            let expected = (row[j] - mean) / (var + 1e-5).sqrt() * xs[1][j] + xs[2][j];
            assert!((y.value()[[i, j]] - expected).abs() < 1e-12);
        }
    }
}

#[test]
fn causal_attention_gradients() {
    for (b, t, c, nh) in [
        (1, 1, 1, 1),
        (1, 3, 2, 1),
        (2, 4, 6, 3),
        (2, 5, 8, 2),
        (1, 7, 3, 1),
        // several row blocks of the causal products (32 rows each), the last partial
        (1, 64, 2, 1),
        (1, 70, 4, 2),
    ] {
        let heads = AttentionHeads::multi_head(nh, c);
        gradcheck(&[&[b, t, 3 * c]], |tape, x| {
            tape.causal_attention(&x[0], heads)
        });
    }
}

#[test]
fn grouped_query_causal_attention_gradients() {
    for (b, t, n_head, n_kv_head, head_dim) in [
        (2, 5, 4, 2, 3),
        (1, 4, 3, 1, 2),
        (1, 1, 2, 1, 1),
        // several row blocks (32 rows each), the last partial
        (1, 70, 4, 2, 1),
    ] {
        let heads = AttentionHeads {
            n_head,
            n_kv_head,
            head_dim,
        };
        gradcheck(&[&[b, t, heads.qkv_width()]], |tape, x| {
            tape.causal_attention(&x[0], heads)
        });
    }
}

#[test]
fn causal_attention_gradients_in_the_parallel_path() {
    let report = autograd::gradcheck::gradcheck_with(
        random_inputs(&[&[2, 40, 3 * 16]], 5),
        &autograd::gradcheck::GradcheckOptions {
            max_entries_per_input: 150,
            ..Default::default()
        },
        |t, x| t.causal_attention(&x[0], AttentionHeads::multi_head(4, 16)),
    );
    assert!(report.max_error < 1e-6, "{report:?}");
}

#[test]
fn cross_entropy_gradients_with_ignored_rows() {
    gradcheck(&[&[4, 5]], |t, x| t.cross_entropy(&x[0], &[1, -100, 4, 0]));
    gradcheck(&[&[1, 1]], |t, x| t.cross_entropy(&x[0], &[0]));
    gradcheck(&[&[2, 3, 7]], |t, x| {
        t.cross_entropy(&x[0], &[6, 0, -100, 3, 3, 1])
    });
    gradcheck(&[&[3, 4]], |t, x| {
        t.cross_entropy_sum(&x[0], &[2, 2, -100], false).0
    });
}

#[test]
fn cross_entropy_values() {
    let logits = random_inputs(&[&[3, 4]], 9).remove(0);
    let tape = Tape::<f64>::new();
    let x = tape.leaf(logits.clone());
    let (loss, n_valid) = tape.cross_entropy_sum(&x, &[3, -100, 0], true);
    assert_eq!(n_valid, 2);
    let nll = |i: usize, y: usize| {
        let lse = (0..4).map(|j| logits[[i, j]].exp()).sum::<f64>().ln();
        lse - logits[[i, y]]
    };
    assert!((loss.item() - (nll(0, 3) + nll(2, 0)) / 2.0).abs() < 1e-12);
    // huge logits stay finite (stable log-sum-exp)
    let tape = Tape::<f32>::no_grad();
    let big = tape.constant(ndarray::arr2(&[[1e4f32, -1e4, 0.0]]).into_dyn());
    assert!(tape.cross_entropy(&big, &[1]).item().is_finite());
}

#[test]
fn cross_entropy_with_every_row_ignored_is_zero() {
    let tape = Tape::<f64>::new();
    let x = tape.leaf(random_inputs(&[&[2, 3]], 1).remove(0));
    let loss = tape.cross_entropy(&x, &[-100, -100]);
    assert_eq!(loss.item(), 0.0);
    let grads = tape.backward(&loss);
    assert!(grads.get(&x).unwrap().iter().all(|&g| g == 0.0));
}

#[test]
#[should_panic(expected = "cross_entropy: target 5")]
fn cross_entropy_refuses_out_of_range_targets() {
    let tape = Tape::<f64>::new();
    let x = tape.leaf(Tensor::zeros(ndarray::IxDyn(&[1, 5])));
    tape.cross_entropy(&x, &[5]);
}

#[test]
fn fused_ops_compose() {
    // embedding -> layer_norm -> attention -> cross_entropy, all at once
    gradcheck(&[&[6, 6], &[6], &[6]], |t, x| {
        let h = t.embedding(&x[0], &[1, 5, 2, 0, 3, 3], &[1, 6]);
        let h = t.layer_norm(&h, &x[1], Some(&x[2]), 1e-5);
        let y = t.causal_attention(&h, AttentionHeads::multi_head(2, 2)); // (1, 6, 2)
        t.cross_entropy(&y, &[0, 1, -100, 1, 0, 0])
    });
}

#[test]
fn fused_ops_are_bitwise_the_same_for_any_thread_count() {
    let xs: Vec<Tensor<f32>> = random_inputs(&[&[300, 130], &[130], &[130], &[4, 64, 3 * 32]], 2)
        .into_iter()
        .map(|x| x.mapv(|v| v as f32))
        .collect();
    let run = || {
        let tape = Tape::<f32>::new();
        let v: Vec<_> = xs.iter().map(|x| tape.leaf(x.clone())).collect();
        let ln = tape.layer_norm(&v[0], &v[1], Some(&v[2]), 1e-5);
        let att = tape.causal_attention(&v[3], AttentionHeads::multi_head(4, 32));
        let targets: Vec<i64> = (0..300).map(|i| (i * 7 % 130) as i64).collect();
        let loss_ln = tape.cross_entropy(&ln, &targets);
        let loss_att = tape.cross_entropy(&att, &vec![3; 4 * 64]);
        let loss = tape.add(&loss_ln, &loss_att);
        let value = loss.item();
        let grads = tape.backward(&loss);
        let grads: Vec<Tensor<f32>> = v.iter().map(|x| grads.get_or_zeros(x)).collect();
        (value, grads)
    };
    let one = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .unwrap()
        .install(run);
    let three = rayon::ThreadPoolBuilder::new()
        .num_threads(3)
        .build()
        .unwrap()
        .install(run);
    assert_eq!(one.0.to_bits(), three.0.to_bits());
    for (a, b) in one.1.iter().zip(&three.1) {
        assert!(a
            .iter()
            .zip(b.iter())
            .all(|(x, y)| x.to_bits() == y.to_bits()));
    }
}
