//! Matrix multiply with strides: the entry point of every GEMM of the ops.
//!
//! `C = alpha * A @ B + beta * C` where every operand is an ndarray view: a
//! transposed operand (`w.t()`) is the same buffer with swapped strides, so no
//! transposed copy is ever made. `f32` runs the project's GEMM
//! ([`super::sgemm`]), `f64` matrixmultiply's dgemm ([`dgemm`]); products
//! from [`PAR_MIN_FLOPS`] multiply-adds on are split over rayon, and each
//! element of C is computed by the same sequence of operations whatever the
//! split, so the result does not depend on the number of threads. A single
//! row of A against a transposed weight (generation's one-token steps) is a
//! dot product per column instead (`gemv`).

use ndarray::{ArrayView2, ArrayViewMut2, Axis};
use rayon::prelude::*;

use crate::float::Float;
use crate::kernels::simd::{dot_lanes, sum_lanes};
use crate::precision::Precision;

/// `c = alpha * a @ b + beta * c` in `precision`: [`gemm`] in
/// [`Precision::F32`], bf16 inputs with f32 sums ([`Float::gemm_bf16`],
/// [`crate::kernels::bf16`]) in [`Precision::Bf16`]. `f64` is always exact.
pub fn gemm_with<T: Float>(
    precision: Precision,
    alpha: T,
    a: ArrayView2<'_, T>,
    b: ArrayView2<'_, T>,
    beta: T,
    c: ArrayViewMut2<'_, T>,
) {
    match precision {
        Precision::F32 => gemm(alpha, a, b, beta, c),
        Precision::Bf16 => T::gemm_bf16(alpha, a, b, beta, c),
    }
}

/// Products smaller than this many multiply-adds run on one thread.
pub const PAR_MIN_FLOPS: usize = 1 << 20;

/// Rows (or columns) of C per parallel task of [`dgemm`] are a multiple of
/// this, a multiple of matrixmultiply's tile, so tasks never split a tile.
const TILE: usize = 16;

/// `c = alpha * a @ b + beta * c`.   a: (M, K), b: (K, N), c: (M, N)
pub fn gemm<T: Float>(
    alpha: T,
    a: ArrayView2<'_, T>,
    b: ArrayView2<'_, T>,
    beta: T,
    c: ArrayViewMut2<'_, T>,
) {
    let (m, k) = a.dim();
    let (k2, n) = b.dim();
    assert_eq!(
        k,
        k2,
        "gemm: inner dimensions differ: {:?} @ {:?}",
        a.dim(),
        b.dim()
    );
    assert_eq!(
        c.dim(),
        (m, n),
        "gemm: output is {:?}, expected {:?}",
        c.dim(),
        (m, n)
    );
    if m == 1 && a.strides()[1] == 1 && b.strides()[0] == 1 {
        return gemv(alpha, a, b, beta, c);
    }
    let parallel = rayon::current_num_threads() > 1 && m * n * k >= PAR_MIN_FLOPS;
    T::gemm(alpha, a, b, beta, c, parallel)
}

/// [`gemm`] on the calling thread (for callers that split the work
/// themselves, as attention does over heads and row blocks).
pub fn gemm_serial<T: Float>(
    alpha: T,
    a: ArrayView2<'_, T>,
    b: ArrayView2<'_, T>,
    beta: T,
    c: ArrayViewMut2<'_, T>,
) {
    T::gemm(alpha, a, b, beta, c, false)
}

/// `c = alpha * a @ b + beta * c` in f64 on matrixmultiply's dgemm, split
/// over rayon when `parallel` by blocks of rows of C (or of columns, when C
/// is wide and short).
pub fn dgemm(
    alpha: f64,
    a: ArrayView2<'_, f64>,
    b: ArrayView2<'_, f64>,
    beta: f64,
    c: ArrayViewMut2<'_, f64>,
    parallel: bool,
) {
    let (m, n) = c.dim();
    let tasks = rayon::current_num_threads();
    if !parallel || tasks <= 1 {
        return dgemm_serial(alpha, a, b, beta, c);
    }
    if m >= n {
        let rows = (m.div_ceil(tasks)).div_ceil(TILE) * TILE;
        let mut c = c;
        let c_blocks: Vec<_> = c.axis_chunks_iter_mut(Axis(0), rows).collect();
        let a_blocks: Vec<_> = a.axis_chunks_iter(Axis(0), rows).collect();
        rayon::scope(|s| {
            for (a_blk, c_blk) in a_blocks.into_iter().zip(c_blocks) {
                s.spawn(move |_| dgemm_serial(alpha, a_blk, b, beta, c_blk));
            }
        });
    } else {
        let cols = (n.div_ceil(tasks)).div_ceil(TILE) * TILE;
        let mut c = c;
        let c_blocks: Vec<_> = c.axis_chunks_iter_mut(Axis(1), cols).collect();
        let b_blocks: Vec<_> = b.axis_chunks_iter(Axis(1), cols).collect();
        rayon::scope(|s| {
            for (b_blk, c_blk) in b_blocks.into_iter().zip(c_blocks) {
                s.spawn(move |_| dgemm_serial(alpha, a, b_blk, beta, c_blk));
            }
        });
    }
}

/// Columns of C per parallel task of [`gemv`].
const GEMV_COLUMNS: usize = 64;

/// [`gemv`]s smaller than this many multiply-adds run on one thread. Lower
/// than [`PAR_MIN_FLOPS`]: a one-row product streams its weights from
/// memory once, so even a 576 x 576 Linear (1.3 MB) is worth splitting.
const GEMV_PAR_MIN_FLOPS: usize = 1 << 16;

/// `c = alpha * a @ b + beta * c` for one row `a` (1, K) with contiguous
/// values against `b` (K, N) with contiguous columns, as `b = W^T` of a
/// row-major weight W (N, K) is (every Linear, the LM head): one dot product
/// of `a` with each column, the columns split over threads in fixed blocks.
/// Generation's one-token steps have this shape; matrixmultiply would first
/// copy all of `b` into its panels, reading the weights twice for one use.
fn gemv<T: Float>(
    alpha: T,
    a: ArrayView2<'_, T>,
    b: ArrayView2<'_, T>,
    beta: T,
    mut c: ArrayViewMut2<'_, T>,
) {
    let (k, n) = b.dim();
    let x = a.row(0);
    let x = x.as_slice().expect("gemv: a's row is contiguous");
    let column = |j: usize| -> &[T] {
        b.column(j)
            .to_slice()
            .expect("gemv: b's columns are contiguous")
    };
    // Four columns per task item: four independent chains of sums.
    let block = |j0: usize| -> Vec<T> {
        let j1 = (j0 + 4).min(n);
        if j1 - j0 == 4 {
            dot4(
                x,
                [column(j0), column(j0 + 1), column(j0 + 2), column(j0 + 3)],
            )
            .to_vec()
        } else {
            (j0..j1).map(|j| dot_lanes(x, column(j))).collect()
        }
    };
    let dots: Vec<T> = if n * k < GEMV_PAR_MIN_FLOPS || rayon::current_num_threads() <= 1 {
        (0..n).step_by(4).flat_map(block).collect()
    } else {
        (0..n.div_ceil(4))
            .into_par_iter()
            .with_min_len(GEMV_COLUMNS / 4)
            .flat_map_iter(|i| block(4 * i))
            .collect()
    };
    for (out, dot) in c.row_mut(0).iter_mut().zip(dots) {
        // beta = 0 ignores what c held (NaN included), as the GEMMs do
        *out = if beta == T::zero() {
            alpha * dot
        } else {
            alpha * dot + beta * *out
        };
    }
}

/// Lanes of each of [`dot4`]'s sums: one 512-bit vector of f32.
const DOT_LANES: usize = 16;

/// `[x . c0, x . c1, x . c2, x . c3]`, each over [`DOT_LANES`] partial sums
/// (combined as [`crate::kernels::simd::sum_lanes`] does, then the last
/// `len % 16` products in order). One sum alone would wait out the latency
/// of every multiply-add before the next; four independent ones keep the
/// unit busy while the weights stream in.
fn dot4<T: Float>(x: &[T], columns: [&[T]; 4]) -> [T; 4] {
    let [c0, c1, c2, c3] = columns.map(|c| c.chunks_exact(DOT_LANES));
    let (mut a0, mut a1, mut a2, mut a3) = (
        [T::zero(); DOT_LANES],
        [T::zero(); DOT_LANES],
        [T::zero(); DOT_LANES],
        [T::zero(); DOT_LANES],
    );
    let xs = x.chunks_exact(DOT_LANES);
    let rest = xs.remainder();
    for ((((x, y0), y1), y2), y3) in xs.zip(c0).zip(c1).zip(c2).zip(c3) {
        for l in 0..DOT_LANES {
            a0[l] += x[l] * y0[l];
            a1[l] += x[l] * y1[l];
            a2[l] += x[l] * y2[l];
            a3[l] += x[l] * y3[l];
        }
    }
    let body = x.len() - rest.len();
    let mut dots = [
        sum_lanes(&a0),
        sum_lanes(&a1),
        sum_lanes(&a2),
        sum_lanes(&a3),
    ];
    for (dot, column) in dots.iter_mut().zip(columns) {
        for (&xi, &ci) in rest.iter().zip(&column[body..]) {
            *dot += xi * ci;
        }
    }
    dots
}

/// One call to matrixmultiply's dgemm on the calling thread.
fn dgemm_serial(
    alpha: f64,
    a: ArrayView2<'_, f64>,
    b: ArrayView2<'_, f64>,
    beta: f64,
    mut c: ArrayViewMut2<'_, f64>,
) {
    let (m, k) = a.dim();
    let n = b.dim().1;
    if m == 0 || n == 0 {
        return;
    }
    let [rsa, csa] = [a.strides()[0], a.strides()[1]];
    let [rsb, csb] = [b.strides()[0], b.strides()[1]];
    let [rsc, csc] = [c.strides()[0], c.strides()[1]];
    // SAFETY: the views guarantee that every (row, col) reached through these
    // strides is inside its buffer, and `c` is a unique mutable view.
    unsafe {
        matrixmultiply::dgemm(
            m,
            k,
            n,
            alpha,
            a.as_ptr(),
            rsa,
            csa,
            b.as_ptr(),
            rsb,
            csb,
            beta,
            c.as_mut_ptr(),
            rsc,
            csc,
        );
    }
}
