//! The element type of tensors: `f32` for training, `f64` for gradient checks.
//!
//! Everything in the crate is generic over [`Float`], so the same op code runs
//! in single precision (fast) and in double precision (exact enough that finite
//! differences can check the analytic gradients to ~1e-8).
//!
//! Where the two precisions need different code, the trait has a method and
//! each type its own implementation: [`Float::exp_fast`] and
//! [`Float::tanh_fast`] are vectorizable polynomials in `f32` and the exact
//! libm functions in `f64`; [`Float::gemm`] is `sgemm` or `dgemm`. Kernels
//! never compare type names ([`Float::NAME`] is for messages only).

use std::fmt::{Debug, Display};
use std::iter::Sum;
use std::ops::{AddAssign, DivAssign, MulAssign, SubAssign};

use ndarray::{ArrayView2, ArrayViewMut2};

use crate::kernels::bf16::gemm_bf16;
use crate::kernels::gemm::gemm;
use crate::kernels::simd::{exp_f32, tanh_f32};

/// A real scalar type the engine can compute with (`f32` or `f64`).
pub trait Float:
    num_traits::Float
    + ndarray::LinalgScalar
    + ndarray::ScalarOperand
    + Send
    + Sync
    + Debug
    + Display
    + Default
    + Sum
    + AddAssign
    + SubAssign
    + MulAssign
    + DivAssign
    + 'static
{
    /// `"f32"` or `"f64"`, for messages.
    const NAME: &'static str;

    /// Converts from `f64` (rounding for `f32`).
    fn cast(x: f64) -> Self;

    /// Widens to `f64`.
    fn as_f64(self) -> f64;

    /// `e^x` for the kernels' loops (softmax, attention, log-probs, `exp`).
    /// `f32`: the branch-free polynomial [`exp_f32`], which vectorizes
    /// (under 2 ulp; results below 1.2e-38 flush to 0). `f64`: the exact
    /// `exp`, so gradient checks see the true function.
    fn exp_fast(self) -> Self;

    /// `tanh(x)` for the GELU loops. `f32`: the branch-free rational
    /// approximation [`tanh_f32`], which vectorizes (a few ulp). `f64`: the
    /// exact `tanh`.
    fn tanh_fast(self) -> Self;

    /// `C = alpha * A @ B + beta * C` on raw strided buffers (matrixmultiply's
    /// sgemm/dgemm). Strides are in elements, so a transposed operand is just
    /// swapped strides: no copy is ever made.
    ///
    /// # Safety
    /// The pointers and strides must describe valid `m x k`, `k x n` and
    /// `m x n` matrices; `c` must not alias `a` or `b`.
    #[allow(clippy::too_many_arguments)]
    unsafe fn gemm(
        m: usize,
        k: usize,
        n: usize,
        alpha: Self,
        a: *const Self,
        rsa: isize,
        csa: isize,
        b: *const Self,
        rsb: isize,
        csb: isize,
        beta: Self,
        c: *mut Self,
        rsc: isize,
        csc: isize,
    );

    /// `C = alpha * bf16(A) @ bf16(B) + beta * C` with f32 sums
    /// ([`crate::kernels::bf16::gemm_bf16`]) for `f32`. `f64` ignores the
    /// precision and runs the exact [`crate::kernels::gemm::gemm`], so
    /// gradient checks stay exact.
    fn gemm_bf16(
        alpha: Self,
        a: ArrayView2<'_, Self>,
        b: ArrayView2<'_, Self>,
        beta: Self,
        c: ArrayViewMut2<'_, Self>,
    );
}

impl Float for f32 {
    const NAME: &'static str = "f32";
    fn cast(x: f64) -> Self {
        x as f32
    }
    fn as_f64(self) -> f64 {
        self as f64
    }
    #[inline(always)]
    fn exp_fast(self) -> f32 {
        exp_f32(self)
    }
    #[inline(always)]
    fn tanh_fast(self) -> f32 {
        tanh_f32(self)
    }
    unsafe fn gemm(
        m: usize,
        k: usize,
        n: usize,
        alpha: f32,
        a: *const f32,
        rsa: isize,
        csa: isize,
        b: *const f32,
        rsb: isize,
        csb: isize,
        beta: f32,
        c: *mut f32,
        rsc: isize,
        csc: isize,
    ) {
        // SAFETY: matrixmultiply's contract is this function's (`# Safety` of
        // `Float::gemm`), which the caller keeps.
        unsafe {
            matrixmultiply::sgemm(m, k, n, alpha, a, rsa, csa, b, rsb, csb, beta, c, rsc, csc)
        }
    }
    fn gemm_bf16(
        alpha: f32,
        a: ArrayView2<'_, f32>,
        b: ArrayView2<'_, f32>,
        beta: f32,
        c: ArrayViewMut2<'_, f32>,
    ) {
        gemm_bf16(alpha, a, b, beta, c)
    }
}

impl Float for f64 {
    const NAME: &'static str = "f64";
    fn cast(x: f64) -> Self {
        x
    }
    fn as_f64(self) -> f64 {
        self
    }
    #[inline(always)]
    fn exp_fast(self) -> f64 {
        self.exp()
    }
    #[inline(always)]
    fn tanh_fast(self) -> f64 {
        self.tanh()
    }
    unsafe fn gemm(
        m: usize,
        k: usize,
        n: usize,
        alpha: f64,
        a: *const f64,
        rsa: isize,
        csa: isize,
        b: *const f64,
        rsb: isize,
        csb: isize,
        beta: f64,
        c: *mut f64,
        rsc: isize,
        csc: isize,
    ) {
        // SAFETY: matrixmultiply's contract is this function's (`# Safety` of
        // `Float::gemm`), which the caller keeps.
        unsafe {
            matrixmultiply::dgemm(m, k, n, alpha, a, rsa, csa, b, rsb, csb, beta, c, rsc, csc)
        }
    }
    fn gemm_bf16(
        alpha: f64,
        a: ArrayView2<'_, f64>,
        b: ArrayView2<'_, f64>,
        beta: f64,
        c: ArrayViewMut2<'_, f64>,
    ) {
        gemm(alpha, a, b, beta, c)
    }
}
