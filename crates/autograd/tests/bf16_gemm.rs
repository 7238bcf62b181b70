//! The bf16 GEMM against an f64 reference on the bf16-rounded inputs, and the
//! `vdpbf16ps` microkernel against the portable one (bit for bit).
//!
//! Bound. The products of two bf16 values are exact in f32, so the only
//! errors are the roundings of the f32 sums: `K` additions (one per `k`,
//! pairs included), then `alpha *` and `+ beta * c`. The classic
//! recursive-summation bound gives
//!
//! ```text
//! |c - c_exact| <= (K + 2) u (|alpha| sum_k |a_ik b_kj| + |beta c_ij|)      u = 2^-24
//! ```
//!
//! (to first order; the test allows 1% on top).

use autograd::kernels::bf16::{
    avx512, gemm_bf16, gemm_bf16_with, pack_a, pack_a_scalar, pack_b, pack_b_scalar, round_to_bf16,
    Microkernel,
};
use autograd::testing::skip;
use ndarray::{s, Array2, ArrayView2};
use rand::{Rng, SeedableRng};

fn random(rows: usize, cols: usize, seed: u64) -> Array2<f32> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    Array2::from_shape_fn((rows, cols), |_| rng.gen_range(-2.0f32..2.0))
}

/// Checks `c = alpha bf16(a) @ bf16(b) + beta c0` against f64 within the bound.
fn check_against_f64(
    kernel: Microkernel,
    a: ArrayView2<'_, f32>,
    b: ArrayView2<'_, f32>,
    alpha: f32,
    beta: f32,
) {
    let (m, k) = a.dim();
    let n = b.ncols();
    let c0 = random(m, n, 99);
    let mut c = c0.clone();
    gemm_bf16_with(kernel, alpha, a, b, beta, c.view_mut());
    let u = 2f64.powi(-24);
    for i in 0..m {
        for j in 0..n {
            let (mut exact, mut magnitude) = (0.0f64, 0.0f64);
            for kk in 0..k {
                let p = round_to_bf16(a[[i, kk]]) as f64 * round_to_bf16(b[[kk, j]]) as f64;
                exact += p;
                magnitude += p.abs();
            }
            let c_beta = beta as f64 * c0[[i, j]] as f64;
            let exact = alpha as f64 * exact + c_beta;
            let bound =
                1.01 * (k as f64 + 2.0) * u * (alpha.abs() as f64 * magnitude + c_beta.abs());
            let err = (c[[i, j]] as f64 - exact).abs();
            assert!(
                err <= bound,
                "{kernel:?} ({m}x{k} @ {k}x{n}) c[{i},{j}] = {} exact {exact} err {err:e} > bound {bound:e}",
                c[[i, j]]
            );
        }
    }
}

fn kernels() -> Vec<Microkernel> {
    let mut kernels = vec![Microkernel::Fma];
    if avx512::available() {
        kernels.push(Microkernel::Avx512Bf16);
    }
    kernels
}

#[test]
fn odd_shapes_match_f64_within_the_f32_summation_bound() {
    let sizes = [1, 3, 17, 33, 65];
    for kernel in kernels() {
        for (s, &m) in sizes.iter().enumerate() {
            for &k in &sizes {
                for &n in &[1, 17, 65] {
                    let seed = (s * 100 + k * 10 + n) as u64;
                    let (a, b) = (random(m, k, seed), random(k, n, seed + 1));
                    check_against_f64(kernel, a.view(), b.view(), 1.0, 0.0);
                }
            }
        }
        // K over two blocks (768 k each), and both alpha and beta.
        let (a, b) = (random(19, 1801, 5), random(1801, 50, 6));
        check_against_f64(kernel, a.view(), b.view(), 1.0, 1.0);
        check_against_f64(kernel, a.view(), b.view(), -0.5, 2.0);
    }
}

#[test]
fn transposed_and_strided_operands() {
    for kernel in kernels() {
        // a = at^T (column-major), b = every other row and column of a wider matrix
        let at = random(70, 33, 1);
        let wide = random(140, 2 * 49, 2);
        let b = wide.slice(s![..;2, 1..;2]);
        check_against_f64(kernel, at.t(), b, 1.0, 0.0);
        // the backward orientations of a linear layer: dy^T @ x and dy @ W
        let (dy, x, w) = (random(65, 17, 3), random(65, 33, 4), random(17, 33, 5));
        check_against_f64(kernel, dy.t(), x.view(), 1.0, 0.0);
        check_against_f64(kernel, dy.view(), w.view(), 1.0, 1.0);
        check_against_f64(kernel, x.view(), w.t(), 1.0, 0.0);
    }
}

/// One row `[1, 0, 2^-23, 2^-24] @ ones`: the pairs are (1, 0) and
/// (2^-23, 2^-24). Summed high-first, as `vdpbf16ps` does, `1 + 2^-24`
/// rounds to 1 (tie to even) and then `+ 2^-23` gives `1 + 2^-23`;
/// low-first would give `1 + 2^-22`.
#[test]
fn each_pair_adds_its_odd_k_first() {
    let a = Array2::from_shape_vec((1, 4), vec![1.0, 0.0, 2f32.powi(-23), 2f32.powi(-24)]).unwrap();
    let b = Array2::<f32>::ones((4, 1));
    for kernel in kernels() {
        let mut c = Array2::<f32>::zeros((1, 1));
        gemm_bf16_with(kernel, 1.0, a.view(), b.view(), 0.0, c.view_mut());
        assert_eq!(c[[0, 0]], 1.0 + 2f32.powi(-23), "{kernel:?}");
    }
}

/// A sum that falls below 2^-126 becomes zero, as `vdpbf16ps` flushes it:
/// the row `[0, 2^-64] @ [0, 2^-64]^T` adds `2^-64 * 2^-64 = 2^-128` (odd k
/// first), a denormal an FMA alone would keep.
#[test]
fn sums_below_2_pow_minus_126_flush_to_zero() {
    let a = Array2::from_shape_vec((1, 2), vec![0.0, 2f32.powi(-64)]).unwrap();
    let b = Array2::from_shape_vec((2, 1), vec![0.0, 2f32.powi(-64)]).unwrap();
    for kernel in kernels() {
        let mut c = Array2::<f32>::from_elem((1, 1), 1.0);
        gemm_bf16_with(kernel, 1.0, a.view(), b.view(), 0.0, c.view_mut());
        assert_eq!(c[[0, 0]].to_bits(), 0, "{kernel:?}: {:e}", c[[0, 0]]);
    }
    // and MXCSR is back as it was: an f32 denormal survives again
    let tiny = std::hint::black_box(2f32.powi(-64));
    assert_eq!(tiny * tiny, 2f32.powi(-128));
}

/// The `vdpbf16ps` microkernel gives the bits of the portable one, on random
/// and on wide-range inputs (sums that round, cancel and tie).
///
/// On a CPU without the instructions there is nothing to compare: the test
/// writes a `SKIPPED` line to the terminal ([`skip`]) and passes, and
/// `.ci/run` lists the AVX-512 BF16 tests as skipped in its summary.
#[test]
fn avx512_and_portable_agree_bitwise() {
    if !avx512::available() {
        skip(
            "avx512_and_portable_agree_bitwise",
            "this CPU has no AVX512_BF16: only the portable microkernel runs here",
        );
        return;
    }
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    // mixed magnitudes (2^-60 .. 2^60), so that sums round, cancel and tie
    let mut wide_range = |rows: usize, cols: usize| {
        Array2::from_shape_fn((rows, cols), |_| {
            let x: f32 = rng.gen_range(-1.0..1.0);
            x * 2f32.powi(rng.gen_range(-60..60))
        })
    };
    for (m, k, n) in [
        (1, 1, 1),
        (9, 3, 49),
        (33, 385, 97),
        (64, 800, 96),
        (17, 65, 200),
    ] {
        for (a, b) in [
            (random(m, k, 11), random(k, n, 12)),
            (wide_range(m, k), wide_range(k, n)),
        ] {
            let mut c_avx = Array2::<f32>::zeros((m, n));
            let mut c_portable = Array2::<f32>::zeros((m, n));
            gemm_bf16_with(
                Microkernel::Avx512Bf16,
                1.0,
                a.view(),
                b.view(),
                0.0,
                c_avx.view_mut(),
            );
            gemm_bf16_with(
                Microkernel::Fma,
                1.0,
                a.view(),
                b.view(),
                0.0,
                c_portable.view_mut(),
            );
            for (x, y) in c_avx.iter().zip(&c_portable) {
                assert_eq!(x.to_bits(), y.to_bits(), "({m}x{k} @ {k}x{n}): {x} != {y}");
            }
        }
    }
}

/// The AVX-512 packing loops write the same words as the scalar ones: both
/// layouts of each operand (k contiguous, index contiguous, and a strided
/// view that neither covers), shapes around the blocks of 16 pairs and the
/// panel widths, and values that exercise the rounding (ties, NaN,
/// infinities, denormals, signed zeros).
///
/// On a CPU without the instructions there is nothing to compare: the test
/// writes a `SKIPPED` line to the terminal ([`skip`]) and passes, and
/// `.ci/run` lists the AVX-512 BF16 tests as skipped in its summary.
#[test]
fn avx512_and_scalar_packing_agree_bitwise() {
    if !autograd::kernels::bf16::pack_avx512::available() {
        skip(
            "avx512_and_scalar_packing_agree_bitwise",
            "this CPU has no AVX-512 BF16: only the scalar packing runs here",
        );
        return;
    }
    let mut rng = rand::rngs::StdRng::seed_from_u64(5);
    let specials = [
        f32::NAN,
        -f32::NAN,
        f32::from_bits(0x7F80_0001), // signalling NaN
        f32::INFINITY,
        f32::NEG_INFINITY,
        f32::MAX,
        f32::MIN_POSITIVE,
        f32::from_bits(1),            // the smallest denormal
        -f32::from_bits(0x007F_FFFF), // the largest negative denormal
        0.0,
        -0.0,
        f32::from_bits(0x3F80_8000), // a tie, rounds down to even
        f32::from_bits(0x3F81_8000), // a tie, rounds up to even
        f32::from_bits(0x7F7F_FFFF), // rounds up to infinity
    ];
    let mut matrix = |rows: usize, cols: usize| {
        Array2::from_shape_fn((rows, cols), |_| {
            if rng.gen_range(0..8) == 0 {
                specials[rng.gen_range(0..specials.len())]
            } else {
                f32::from_bits(rng.gen::<u32>() & 0xBFFF_FFFF) // any sign, mantissa, most exponents
            }
        })
    };
    let same =
        |x: &autograd::kernels::bf16::Packed, y: &autograd::kernels::bf16::Packed, what: &str| {
            assert_eq!(x.words.len(), y.words.len(), "{what}");
            for (i, (a, b)) in x.words.iter().zip(&y.words).enumerate() {
                assert_eq!(a, b, "{what}: word {i}: {a:#010x} != {b:#010x}");
            }
        };
    for (rows, cols) in [
        (1, 1),
        (8, 32),
        (7, 33),
        (48, 64),
        (47, 31),
        (49, 97),
        (97, 130),
        (16, 300),
        (300, 16),
    ] {
        let stored = matrix(rows, cols);
        let strided = matrix(rows, 2 * cols);
        let strided = strided.slice(s![.., ..;2]);
        for view in [stored.view(), stored.t(), strided, strided.t()] {
            let what = format!("{:?} strides {:?}", view.dim(), view.strides());
            same(&pack_a(view), &pack_a_scalar(view), &format!("A {what}"));
            same(&pack_b(view), &pack_b_scalar(view), &format!("B {what}"));
        }
    }
}

#[test]
fn result_does_not_depend_on_the_number_of_threads() {
    let (a, b) = (random(300, 1700, 21), random(1700, 130, 22));
    let run = |threads: usize| {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        pool.install(|| {
            let mut c = Array2::<f32>::zeros((300, 130));
            gemm_bf16(1.0, a.view(), b.view(), 0.0, c.view_mut());
            c
        })
    };
    let one = run(1);
    for threads in [2, 3] {
        let many = run(threads);
        assert!(one
            .iter()
            .zip(&many)
            .all(|(x, y)| x.to_bits() == y.to_bits()));
    }
}
