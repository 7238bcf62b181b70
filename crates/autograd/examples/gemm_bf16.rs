//! GFLOP/s of the bf16 GEMM and of matrixmultiply's sgemm at the GEMM shapes
//! of a GPT-2 (124M) training step with B*T = 256 rows, and of the
//! microkernel alone on operands that stay in L1 (its peak).
//!
//! `cargo run --release --example gemm_bf16 -p autograd [threads]` (default 1)

use std::time::Instant;

use autograd::kernels::bf16::{self, avx512, gemm_bf16, Microkernel, MR, NR};
use autograd::kernels::gemm::gemm;
use ndarray::Array2;

/// Median seconds of `reps` runs of `f` (after one warm-up run).
fn median_secs(reps: usize, mut f: impl FnMut()) -> f64 {
    f();
    let mut times: Vec<f64> = (0..reps)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed().as_secs_f64()
        })
        .collect();
    times.sort_by(|a, b| a.partial_cmp(b).unwrap());
    times[reps / 2]
}

fn main() {
    let threads: usize = std::env::args().nth(1).map_or(1, |s| s.parse().unwrap());
    autograd::set_num_threads(threads).unwrap();
    println!("threads {threads}, microkernel {:?}", Microkernel::detect());
    if avx512::available() {
        // The microkernel alone: one 8 x 48 tile over 192 pairs, operands in L1.
        let a = vec![0x3F80_3F80u32; MR * 192];
        let b = vec![0x3F80_3F80u32; NR * 192];
        let mut acc = [0.0f32; MR * NR];
        let calls = 20_000;
        let secs = median_secs(5, || {
            for _ in 0..calls {
                // SAFETY: checked by `avx512::available`.
                unsafe { avx512::microkernel(&a, &b, &mut acc) };
            }
        });
        let flops = (calls * MR * NR * 2 * 192 * 2) as f64;
        println!("microkernel in L1: {:.1} GFLOP/s", flops / secs / 1e9);
        std::hint::black_box(acc);
    }
    let rows = 256;
    // (name, M, K, N, A stored transposed, B stored transposed): the
    // operands as the ops pass them (a weight W (out, in) is B = W^T in the
    // forward, B = W for dx; dW = dy^T @ x).
    let shapes = [
        ("attn.c_attn  x@W^T", rows, 768, 2304, false, true),
        ("attn.c_proj  x@W^T", rows, 768, 768, false, true),
        ("mlp.c_fc     x@W^T", rows, 768, 3072, false, true),
        ("mlp.c_proj   x@W^T", rows, 3072, 768, false, true),
        ("mlp.c_fc     dy@W", rows, 3072, 768, false, false),
        ("mlp.c_proj   dy@W", rows, 768, 3072, false, false),
        ("mlp.c_fc     dy^T@x", 3072, rows, 768, true, false),
        ("lm_head      h@wte^T", rows, 768, 50257, false, true),
        ("lm_head      dz@wte", rows, 50257, 768, false, false),
        ("lm_head      dz^T@h", 50257, rows, 768, true, false),
    ];
    println!(
        "{:<22} {:>16} {:>9} {:>9} {:>6} {:>8}",
        "GEMM", "M x K x N", "bf16", "sgemm", "ratio", "packing"
    );
    for (name, m, k, n, a_t, b_t) in shapes {
        let fill = |r: usize, c: usize| {
            Array2::from_shape_fn((r, c), |(i, j)| ((i * 7 + j * 3) % 13) as f32 * 0.1)
        };
        let a_store = if a_t { fill(k, m) } else { fill(m, k) };
        let b_store = if b_t { fill(n, k) } else { fill(k, n) };
        let a = if a_t { a_store.t() } else { a_store.view() };
        let b = if b_t { b_store.t() } else { b_store.view() };
        let mut c = Array2::<f32>::zeros((m, n));
        let reps = if m * n * k > 1 << 30 { 3 } else { 7 };
        let flops = (2 * m * n * k) as f64;
        let t_bf16 = median_secs(reps, || gemm_bf16(1.0, a, b, 0.0, c.view_mut()));
        let t_pack = median_secs(reps, || {
            std::hint::black_box((bf16::pack_a(a), bf16::pack_b(b)));
        });
        let t_f32 = median_secs(reps, || gemm(1.0, a, b, 0.0, c.view_mut()));
        println!(
            "{name:<22} {:>16} {:>7.1} G {:>7.1} G {:>6.2} {:>5.1} ms",
            format!("{m}x{k}x{n}"),
            flops / t_bf16 / 1e9,
            flops / t_f32 / 1e9,
            t_f32 / t_bf16,
            t_pack * 1e3,
        );
    }
}
