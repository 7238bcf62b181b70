//! Throughput of the autograd hot spots, each next to its hardware reference:
//!
//! - `linear` (x @ W^T on the whole thread pool) vs one bare
//!   `matrixmultiply::sgemm` call on the calling thread, at the shapes of a
//!   small GPT's MLP and attention projections; throughput in FLOP
//!   (criterion prints it as `elem/s`: 2 M K N per product);
//! - row softmax and GELU over a (2048, 512) activation vs a plain copy of the
//!   same bytes (read + write), in bytes per second.
//!
//! Every benchmark is short (10 samples): `cargo bench --bench autograd`
//! runs in well under two minutes.

use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use autograd::{Tape, Tensor};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use ndarray::IxDyn;

/// Deterministic pseudo-random values in [-2, 2).
fn tensor(shape: &[usize], seed: u32) -> Arc<Tensor<f32>> {
    let mut state = seed.wrapping_mul(2654435761).wrapping_add(1);
    Arc::new(Tensor::from_shape_fn(IxDyn(shape), |_| {
        state ^= state << 13;
        state ^= state >> 17;
        state ^= state << 5;
        (state >> 8) as f32 / (1u32 << 24) as f32 * 4.0 - 2.0
    }))
}

fn short<'a>(
    c: &'a mut Criterion,
    name: &str,
) -> criterion::BenchmarkGroup<'a, criterion::measurement::WallTime> {
    let mut group = c.benchmark_group(name);
    group
        .sample_size(10)
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_millis(1500));
    group
}

fn bench_linear(c: &mut Criterion) {
    eprintln!("{}", autograd::cpu::describe());
    // Reuse freed buffers, as the `dpo` binary does (no page faults per iteration).
    autograd::keep_freed_memory();
    let mut group = short(c, "linear_f32");
    for (m, k, n) in [(2048, 128, 384), (2048, 512, 128), (128, 2048, 128)] {
        let label = format!("{m}x{k}x{n}");
        group.throughput(Throughput::Elements((2 * m * k * n) as u64));
        let x = tensor(&[m, k], 1); // (M, K)
        let w = tensor(&[n, k], 2); // (N, K), nn.Linear layout
        group.bench_function(BenchmarkId::new("linear", &label), |bench| {
            let tape = Tape::<f32>::no_grad();
            let (xv, wv) = (tape.constant(x.clone()), tape.constant(w.clone()));
            bench.iter(|| black_box(tape.linear(&xv, &wv, None)));
        });
        group.bench_function(BenchmarkId::new("sgemm_1thread", &label), |bench| {
            let mut y = vec![0f32; m * n];
            let (xs, ws) = (x.as_slice().unwrap(), w.as_slice().unwrap());
            bench.iter(|| {
                // y (M, N) = x (M, K) @ w^T: w read with swapped strides.
                // SAFETY: the strides describe the three buffers exactly.
                unsafe {
                    matrixmultiply::sgemm(
                        m,
                        k,
                        n,
                        1.0,
                        xs.as_ptr(),
                        k as isize,
                        1,
                        ws.as_ptr(),
                        1,
                        k as isize,
                        0.0,
                        y.as_mut_ptr(),
                        n as isize,
                        1,
                    )
                };
                black_box(&y);
            });
        });
    }
    group.finish();
}

fn bench_rowwise(c: &mut Criterion) {
    // Reuse freed buffers, as the `dpo` binary does (no page faults per iteration).
    autograd::keep_freed_memory();
    let (rows, cols) = (2048, 512);
    let x = tensor(&[rows, cols], 3);
    let mut group = short(c, "rowwise_2048x512_f32");
    // Each op reads the input once and writes the output once.
    group.throughput(Throughput::Bytes((2 * rows * cols * 4) as u64));
    let tape = Tape::<f32>::no_grad();
    let xv = tape.constant(x.clone());
    group.bench_function("copy", |bench| {
        let mut out = vec![0f32; rows * cols];
        bench.iter(|| {
            out.copy_from_slice(x.as_slice().unwrap());
            black_box(&out);
        })
    });
    group.bench_function("softmax_last_axis", |bench| {
        bench.iter(|| black_box(tape.softmax(&xv, 1)))
    });
    group.bench_function("softmax_first_axis", |bench| {
        bench.iter(|| black_box(tape.softmax(&xv, 0)))
    });
    group.bench_function("log_softmax_last_axis", |bench| {
        bench.iter(|| black_box(tape.log_softmax(&xv, 1)))
    });
    group.bench_function("gelu", |bench| bench.iter(|| black_box(tape.gelu(&xv))));
    group.bench_function("gelu_forward_backward", |bench| {
        bench.iter(|| {
            let tape = Tape::<f32>::new();
            let xv = tape.leaf(x.clone());
            let y = tape.gelu(&xv);
            black_box(tape.backward_with(&y, x.as_ref().clone()))
        })
    });
    group.finish();
}

criterion_group!(benches, bench_linear, bench_rowwise);
criterion_main!(benches);
