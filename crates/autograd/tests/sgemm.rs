//! The f32 GEMM ([`autograd::kernels::sgemm`]) against its definition, one
//! FMA chain per element in `k` order, bit for bit: on every microkernel
//! this CPU runs, both loop nests, operand layout, block count along `k`
//! and thread count.

use autograd::kernels::bf16::round_to_bf16;
use autograd::kernels::sgemm::{sgemm_with, with_loops, Loops, Microkernel, Rounding, BLOCK_STEPS};
use autograd::testing::skip;
use ndarray::{s, Array2, ArrayView2};
use rand::{Rng, SeedableRng};

fn random(rows: usize, cols: usize, seed: u64) -> Array2<f32> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    Array2::from_shape_fn((rows, cols), |_| rng.gen_range(-2.0f32..2.0))
}

/// The definition: `acc = fma(a[i,k], b[k,j], acc)` for each `k` in order
/// (bf16: the values rounded, each pair odd `k` first), then `alpha acc +
/// beta c`.
fn definition(
    rounding: Rounding,
    alpha: f32,
    a: ArrayView2<'_, f32>,
    b: ArrayView2<'_, f32>,
    beta: f32,
    c0: &Array2<f32>,
) -> Array2<f32> {
    let (m, k) = a.dim();
    let n = b.ncols();
    let order: Vec<usize> = match rounding {
        Rounding::Keep => (0..k).collect(),
        Rounding::Bf16 => (0..2 * k.div_ceil(2))
            .map(|s| s ^ 1)
            .filter(|&kk| kk < k)
            .collect(),
    };
    let value = |x: f32| match rounding {
        Rounding::Keep => x,
        Rounding::Bf16 => round_to_bf16(x),
    };
    Array2::from_shape_fn((m, n), |(i, j)| {
        // (an odd K's zero partner adds 0 * 0 = +0 before the last k: it
        // changes only a sum of -0, which random values never give)
        let mut acc = 0.0f32;
        for &kk in &order {
            acc = value(a[[i, kk]]).mul_add(value(b[[kk, j]]), acc);
        }
        let sum = alpha * acc;
        if beta == 0.0 {
            sum
        } else {
            sum + beta * c0[[i, j]]
        }
    })
}

/// The microkernels this CPU runs; a SKIPPED line (once a process) for
/// each it cannot.
fn kernels() -> Vec<Microkernel> {
    static REPORTED: std::sync::Once = std::sync::Once::new();
    let all = [
        Microkernel::Portable,
        Microkernel::Avx2Fma,
        Microkernel::Avx512,
    ];
    REPORTED.call_once(|| {
        for kernel in all.iter().filter(|k| !k.available()) {
            skip(
                &format!("sgemm: the {kernel:?} microkernel"),
                "this CPU does not have its instructions",
            );
        }
    });
    all.into_iter().filter(|k| k.available()).collect()
}

/// Runs every kernel, serial and parallel, and compares with the definition bit for bit.
fn check(
    rounding: Rounding,
    alpha: f32,
    a: ArrayView2<'_, f32>,
    b: ArrayView2<'_, f32>,
    beta: f32,
) {
    let (m, k) = a.dim();
    let n = b.ncols();
    let c0 = random(m, n, 99);
    let expected = definition(rounding, alpha, a, b, beta, &c0);
    for kernel in kernels() {
        for loops in [Loops::Goto, Loops::WholeA] {
            for parallel in [false, true] {
                let mut c = c0.clone();
                with_loops(loops, || {
                    sgemm_with(kernel, rounding, alpha, a, b, beta, c.view_mut(), parallel)
                });
                for ((idx, x), y) in c.indexed_iter().zip(&expected) {
                    assert_eq!(
                        x.to_bits(),
                        y.to_bits(),
                        "{kernel:?} {loops:?} {rounding:?} parallel {parallel} ({m}x{k} @ {k}x{n}) c{idx:?} = {x}, expected {y}"
                    );
                }
            }
        }
    }
}

#[test]
fn odd_shapes_equal_the_fma_chain_bitwise() {
    let sizes = [1, 3, 7, 17, 33];
    for rounding in [Rounding::Keep, Rounding::Bf16] {
        for (s, &m) in sizes.iter().enumerate() {
            for &k in &sizes {
                for &n in &[1, 5, 16, 17, 40] {
                    let seed = (s * 100 + k * 10 + n) as u64;
                    let (a, b) = (random(m, k, seed), random(k, n, seed + 1));
                    check(rounding, 1.0, a.view(), b.view(), 0.0);
                }
            }
        }
    }
}

#[test]
fn k_over_several_blocks_with_alpha_and_beta() {
    // more than two blocks for every kernel's panel width
    let k = 2 * BLOCK_STEPS + 37;
    let (a, b) = (random(19, k, 5), random(k, 50, 6));
    // B = W^T: the transposing pack, over several blocks of k
    let w = random(50, k, 7);
    for rounding in [Rounding::Keep, Rounding::Bf16] {
        check(rounding, 1.0, a.view(), b.view(), 1.0);
        check(rounding, -0.5, a.view(), b.view(), 2.0);
        check(rounding, 1.0, a.view(), w.t(), 0.0);
        check(rounding, 0.5, a.view(), w.t(), 0.0);
    }
}

#[test]
fn transposed_and_strided_operands() {
    // a = at^T (column-major), b = every other row and column of a wider matrix
    let at = random(70, 33, 1);
    let wide = random(140, 2 * 49, 2);
    let b = wide.slice(s![..;2, 1..;2]);
    check(Rounding::Keep, 1.0, at.t(), b, 0.0);
    // the orientations of a linear layer: x @ W^T, dy @ W, dy^T @ x
    let (dy, x, w) = (random(65, 17, 3), random(65, 33, 4), random(17, 33, 5));
    // K a multiple of 8: a 6-row panel's last transposed store spills onto
    // the next panel (M = 13) or past the last one (M = 12)
    for m in [12, 13] {
        let (x, w) = (random(m, 32, 6), random(17, 32, 7));
        check(Rounding::Keep, 1.0, x.view(), w.t(), 0.0);
        check(Rounding::Bf16, 1.0, x.view(), w.t(), 0.0);
    }
    // a last panel of B = W^T that holds whole groups of 8 rows and a rest
    // (N = 41: 40 + 1 for 48 columns, 8 + 1 for 16), K not a multiple of 8
    let (x9, w41) = (random(9, 35, 8), random(41, 35, 9));
    for rounding in [Rounding::Keep, Rounding::Bf16] {
        check(rounding, 1.0, x9.view(), w41.t(), 0.0);
    }
    for rounding in [Rounding::Keep, Rounding::Bf16] {
        check(rounding, 1.0, x.view(), w.t(), 0.0);
        check(rounding, 1.0, dy.view(), w.view(), 1.0);
        check(rounding, 1.0, dy.t(), x.view(), 0.0);
    }
}

/// `beta = 0` ignores what C held, NaN included.
#[test]
fn beta_zero_overwrites_nan() {
    let (a, b) = (random(7, 9, 1), random(9, 20, 2));
    let mut c = Array2::<f32>::from_elem((7, 20), f32::NAN);
    sgemm_with(
        Microkernel::detect(),
        Rounding::Keep,
        1.0,
        a.view(),
        b.view(),
        0.0,
        c.view_mut(),
        false,
    );
    assert!(c.iter().all(|x| x.is_finite()));
}

#[test]
fn result_does_not_depend_on_the_number_of_threads() {
    let (a, b) = (random(300, 700, 21), random(700, 130, 22));
    let run = |threads: usize, loops: Loops| {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        pool.install(|| {
            let mut c = Array2::<f32>::zeros((300, 130));
            with_loops(loops, || {
                autograd::kernels::gemm::gemm(1.0, a.view(), b.view(), 0.0, c.view_mut())
            });
            c
        })
    };
    let one = run(1, Loops::Goto);
    for loops in [Loops::Goto, Loops::WholeA] {
        for threads in [1, 2, 3, 5] {
            let many = run(threads, loops);
            assert!(
                one.iter()
                    .zip(&many)
                    .all(|(x, y)| x.to_bits() == y.to_bits()),
                "{loops:?} on {threads} threads differs from Goto's on 1"
            );
        }
    }
}
