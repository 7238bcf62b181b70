//! GFLOP/s of the f32 and bf16 GEMMs at the shapes of a training step, of
//! matrixmultiply's sgemm for comparison, and of the microkernels alone on
//! operands that stay in L1 (their peak).
//!
//! The columns: `f32` is `kernels::gemm::gemm` (the project's FMA GEMM,
//! [`autograd::kernels::sgemm`]); `mm f32` is matrixmultiply's sgemm, which
//! the f32 products ran on before, on one thread (blank at more); `bf16` is
//! `kernels::bf16::gemm_bf16`; `packing` is the time to pack both operands
//! as pairs of bf16 (the `vdpbf16ps` layout), blank where the bf16 GEMM runs
//! on the FMA kernels (which pack inside their loops).
//!
//! ```text
//! cargo run --release --example gemm -p autograd [THREADS=1] [gpt2|smollm2] [--json]
//! ```
//!
//! `gpt2`: GPT-2 (124M) with B*T = 256 rows; `smollm2`: SmolLM2-135M with
//! 512 rows. The operands are laid out as the ops pass them: a weight W
//! (out, in) is `B = W^T` (a transposed view) in the forward, `B = W` for
//! `dx`, and `dW = dy^T @ x` reads `dy` transposed. Each shape is timed by
//! the fastest of several runs after one warm-up run. `--json` prints one
//! line per shape (benches/gemm_vs_torch.py reads them).

use std::time::Instant;

use autograd::kernels::bf16::{self, avx512, gemm_bf16, Microkernel, MR, NR};
use autograd::kernels::gemm::gemm;
use autograd::kernels::sgemm;
use ndarray::Array2;

/// The fastest of `reps` runs of `f` (after one warm-up run), in seconds:
/// other jobs on the machine only ever slow a run down.
fn fastest_secs(reps: usize, mut f: impl FnMut()) -> f64 {
    f();
    let mut times: Vec<f64> = (0..reps)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed().as_secs_f64()
        })
        .collect();
    times.sort_by(|a, b| a.partial_cmp(b).unwrap());
    times[0]
}

/// (name, M, K, N, A stored transposed, B stored transposed).
type Shape = (&'static str, usize, usize, usize, bool, bool);

/// The GEMMs of one layer and of the LM head, forward and backward.
fn shapes(model: &str) -> Vec<Shape> {
    match model {
        "gpt2" => {
            let r = 256;
            vec![
                ("attn.c_attn x@W^T", r, 768, 2304, false, true),
                ("attn.c_proj x@W^T", r, 768, 768, false, true),
                ("mlp.c_fc x@W^T", r, 768, 3072, false, true),
                ("mlp.c_proj x@W^T", r, 3072, 768, false, true),
                ("mlp.c_fc dy@W", r, 3072, 768, false, false),
                ("mlp.c_proj dy@W", r, 768, 3072, false, false),
                ("mlp.c_fc dy^T@x", 3072, r, 768, true, false),
                ("lm_head h@wte^T", r, 768, 50257, false, true),
                ("lm_head dz@wte", r, 50257, 768, false, false),
                ("lm_head dz^T@h", 50257, r, 768, true, false),
            ]
        }
        "smollm2" => {
            let r = 512;
            vec![
                ("q_proj x@W^T", r, 576, 576, false, true),
                ("k_proj x@W^T", r, 576, 192, false, true),
                ("gate_proj x@W^T", r, 576, 1536, false, true),
                ("down_proj x@W^T", r, 1536, 576, false, true),
                ("gate_proj dy@W", r, 1536, 576, false, false),
                ("down_proj dy@W", r, 576, 1536, false, false),
                ("gate_proj dy^T@x", 1536, r, 576, true, false),
                ("down_proj dy^T@x", 576, r, 1536, true, false),
                ("lm_head h@wte^T", r, 576, 49152, false, true),
                ("lm_head dz@wte", r, 49152, 576, false, false),
                ("lm_head dz^T@h", 49152, r, 576, true, false),
            ]
        }
        other => panic!("unknown model {other}: gpt2 or smollm2"),
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let json = args.iter().any(|a| a == "--json");
    let mut positional = args.iter().filter(|a| !a.starts_with("--"));
    let threads: usize = positional.next().map_or(1, |s| s.parse().unwrap());
    let model = positional.next().map_or("gpt2", |s| s.as_str());
    autograd::set_num_threads(threads).unwrap();
    // On a worker of the pool, as `dpo` runs its kernels.
    autograd::run_in_pool(|| measure(json, threads, model));
}

/// Prints the microkernels' and the GEMMs' rates.
fn measure(json: bool, threads: usize, model: &str) {
    if !json {
        println!("{}", autograd::cpu::describe());
        println!(
            "threads {threads}, bf16 microkernel {:?}",
            Microkernel::detect()
        );
    }
    if avx512::available() && !json {
        // The microkernel alone: one 8 x 48 tile over 192 pairs, operands in L1.
        let a = vec![0x3F80_3F80u32; MR * 192];
        let b = vec![0x3F80_3F80u32; NR * 192];
        let mut acc = [0.0f32; MR * NR];
        let calls = 20_000;
        let secs = fastest_secs(5, || {
            for _ in 0..calls {
                // SAFETY: checked by `avx512::available`.
                unsafe { avx512::microkernel(&a, &b, &mut acc) };
            }
        });
        let flops = (calls * MR * NR * 2 * 192 * 2) as f64;
        println!("bf16 microkernel in L1: {:.1} GFLOP/s", flops / secs / 1e9);
        std::hint::black_box(acc);
    }
    let f32_kernel = sgemm::Microkernel::detect();
    if f32_kernel != sgemm::Microkernel::Portable && !json {
        // The f32 microkernel the GEMM runs, alone: one tile over 256
        // steps, operands in L1.
        let (mr, nr) = f32_kernel.tile();
        let a = vec![1.0f32; mr * 256];
        let b = vec![1.0f32; nr * 256];
        let mut acc = vec![0.0f32; mr * nr];
        let calls = 20_000;
        let secs = fastest_secs(5, || {
            for _ in 0..calls {
                let (a, b, c) = (a.as_ptr(), b.as_ptr(), acc.as_mut_ptr());
                let update = sgemm::Update::Continue;
                // SAFETY: the CPU runs `f32_kernel` (`detect`); the panels
                // hold 256 steps, `acc` one tile.
                unsafe {
                    match f32_kernel {
                        sgemm::Microkernel::Avx512 => {
                            sgemm::avx512::microkernel(256, a, b, c, nr, update)
                        }
                        _ => sgemm::avx2::microkernel(256, a, b, c, nr, update),
                    }
                };
            }
        });
        let flops = (calls * mr * nr * 2 * 256) as f64;
        println!(
            "f32 microkernel ({f32_kernel:?}, {mr} x {nr}) in L1: {:.1} GFLOP/s",
            flops / secs / 1e9
        );
        std::hint::black_box(&acc);
    }
    if !json {
        println!(
            "{:<20} {:>16} {:>9} {:>9} {:>9} {:>8}",
            "GEMM", "M x K x N", "f32", "mm f32", "bf16", "packing"
        );
    }
    for (name, m, k, n, a_t, b_t) in shapes(model) {
        let fill = |r: usize, c: usize| {
            Array2::from_shape_fn((r, c), |(i, j)| ((i * 7 + j * 3) % 13) as f32 * 0.1)
        };
        let a_store = if a_t { fill(k, m) } else { fill(m, k) };
        let b_store = if b_t { fill(n, k) } else { fill(k, n) };
        let a = if a_t { a_store.t() } else { a_store.view() };
        let b = if b_t { b_store.t() } else { b_store.view() };
        let mut c = Array2::<f32>::zeros((m, n));
        let reps = if m * n * k > 1 << 30 { 5 } else { 15 };
        let flops = (2 * m * n * k) as f64;
        let t_f32 = fastest_secs(reps, || gemm(1.0, a, b, 0.0, c.view_mut()));
        let t_mm = (threads == 1).then(|| {
            fastest_secs(reps, || {
                let [rsa, csa] = [a.strides()[0], a.strides()[1]];
                let [rsb, csb] = [b.strides()[0], b.strides()[1]];
                // SAFETY: the views' pointers and strides describe m x k,
                // k x n and m x n matrices; c is its own buffer.
                unsafe {
                    matrixmultiply::sgemm(
                        m,
                        k,
                        n,
                        1.0,
                        a.as_ptr(),
                        rsa,
                        csa,
                        b.as_ptr(),
                        rsb,
                        csb,
                        0.0,
                        c.as_mut_ptr(),
                        n as isize,
                        1,
                    )
                }
            })
        });
        let t_bf16 = fastest_secs(reps, || gemm_bf16(1.0, a, b, 0.0, c.view_mut()));
        let t_pack = (Microkernel::detect() == Microkernel::Avx512Bf16).then(|| {
            fastest_secs(reps, || {
                std::hint::black_box((bf16::pack_a(a), bf16::pack_b(b)));
            })
        });
        let (f32_rate, bf16_rate) = (flops / t_f32 / 1e9, flops / t_bf16 / 1e9);
        let mm_rate = t_mm.map(|t| flops / t / 1e9);
        if json {
            println!(
                "{{\"name\": \"{name}\", \"m\": {m}, \"k\": {k}, \"n\": {n}, \"a_t\": {a_t}, \"b_t\": {b_t}, \
                 \"threads\": {threads}, \"f32_gflops\": {f32_rate:.2}, \"bf16_gflops\": {bf16_rate:.2}, \"matrixmultiply_gflops\": {}}}",
                mm_rate.map_or("null".to_string(), |r| format!("{r:.2}"))
            );
        } else {
            println!(
                "{name:<20} {:>16} {:>7.1} G {:>9} {:>7.1} G {:>8}",
                format!("{m}x{k}x{n}"),
                f32_rate,
                mm_rate.map_or(String::new(), |r| format!("{r:.1} G")),
                bf16_rate,
                t_pack.map_or(String::new(), |t| format!("{:.1} ms", t * 1e3)),
            );
        }
    }
}
