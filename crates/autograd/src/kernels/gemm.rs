//! Matrix multiply on matrixmultiply's sgemm/dgemm, with strides.
//!
//! `C = alpha * A @ B + beta * C` where every operand is an ndarray view: a
//! transposed operand (`w.t()`) is the same buffer with swapped strides, so no
//! transposed copy is ever made. Large products are split over rayon by
//! blocks of rows of C (or of columns, when C is wide and short); each element
//! of C is computed by the same sequence of operations whatever the split, so
//! the result does not depend on the number of threads.

use ndarray::{ArrayView2, ArrayViewMut2, Axis};

use crate::float::Float;
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
const PAR_MIN_FLOPS: usize = 1 << 20;

/// Rows (or columns) of C per parallel task are a multiple of this, the
/// micro-kernel's tile, so tasks never split a tile.
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
    let tasks = rayon::current_num_threads();
    if tasks <= 1 || m * n * k < PAR_MIN_FLOPS {
        return gemm_serial(alpha, a, b, beta, c);
    }
    if m >= n {
        let rows = (m.div_ceil(tasks)).div_ceil(TILE) * TILE;
        let mut c = c;
        let c_blocks: Vec<_> = c.axis_chunks_iter_mut(Axis(0), rows).collect();
        let a_blocks: Vec<_> = a.axis_chunks_iter(Axis(0), rows).collect();
        rayon::scope(|s| {
            for (a_blk, c_blk) in a_blocks.into_iter().zip(c_blocks) {
                s.spawn(move |_| gemm_serial(alpha, a_blk, b, beta, c_blk));
            }
        });
    } else {
        let cols = (n.div_ceil(tasks)).div_ceil(TILE) * TILE;
        let mut c = c;
        let c_blocks: Vec<_> = c.axis_chunks_iter_mut(Axis(1), cols).collect();
        let b_blocks: Vec<_> = b.axis_chunks_iter(Axis(1), cols).collect();
        rayon::scope(|s| {
            for (b_blk, c_blk) in b_blocks.into_iter().zip(c_blocks) {
                s.spawn(move |_| gemm_serial(alpha, a, b_blk, beta, c_blk));
            }
        });
    }
}

/// One call to matrixmultiply on the calling thread.
pub fn gemm_serial<T: Float>(
    alpha: T,
    a: ArrayView2<'_, T>,
    b: ArrayView2<'_, T>,
    beta: T,
    mut c: ArrayViewMut2<'_, T>,
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
        T::gemm(
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
