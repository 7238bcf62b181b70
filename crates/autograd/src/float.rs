//! The element type of tensors: `f32` for training, `f64` for gradient checks.
//!
//! Everything in the crate is generic over [`Float`], so the same op code runs
//! in single precision (fast) and in double precision (exact enough that finite
//! differences can check the analytic gradients to ~1e-8).
//!
//! Where the two precisions need different code, the trait has a method and
//! each type its own implementation: [`Float::exp_fast`] and
//! [`Float::tanh_fast`] are vectorizable polynomials in `f32` and the exact
//! libm functions in `f64`; [`Float::gemm`] is the project's sgemm or
//! matrixmultiply's dgemm. Kernels never compare type names
//! ([`Float::NAME`] is for messages only).

use std::fmt::{Debug, Display};
use std::iter::Sum;
use std::ops::{AddAssign, DivAssign, MulAssign, SubAssign};

use ndarray::{ArrayView2, ArrayViewMut2};

use crate::kernels::bf16::gemm_bf16;
use crate::kernels::gemm::{dgemm, gemm};
use crate::kernels::sgemm::sgemm;
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

    /// `C = alpha * A @ B + beta * C` on strided views (a transposed
    /// operand is the same buffer with swapped strides, never a copy), on
    /// the calling thread or split over rayon when `parallel`: the project's
    /// [`crate::kernels::sgemm`] for `f32`, matrixmultiply's dgemm
    /// ([`crate::kernels::gemm::dgemm`]) for `f64`. Shapes are checked by
    /// the caller ([`crate::kernels::gemm::gemm`]).
    fn gemm(
        alpha: Self,
        a: ArrayView2<'_, Self>,
        b: ArrayView2<'_, Self>,
        beta: Self,
        c: ArrayViewMut2<'_, Self>,
        parallel: bool,
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
    fn gemm(
        alpha: f32,
        a: ArrayView2<'_, f32>,
        b: ArrayView2<'_, f32>,
        beta: f32,
        c: ArrayViewMut2<'_, f32>,
        parallel: bool,
    ) {
        sgemm(alpha, a, b, beta, c, parallel)
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
    fn gemm(
        alpha: f64,
        a: ArrayView2<'_, f64>,
        b: ArrayView2<'_, f64>,
        beta: f64,
        c: ArrayViewMut2<'_, f64>,
        parallel: bool,
    ) {
        dgemm(alpha, a, b, beta, c, parallel)
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
