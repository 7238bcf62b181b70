//! The bf16 GEMM: `C = alpha * bf16(A) @ bf16(B) + beta * C`, accumulated in f32.
//!
//! The inputs are f32 views (any strides); each is rounded to bf16 once, as
//! it is packed, and the products are summed in f32 on one of two paths:
//!
//! - [`avx512`]: `vdpbf16ps` on [`MR`] x [`NR`] tiles, operands packed as
//!   pairs of bf16 ([`pack`]), on CPUs with AVX512_BF16 (runtime detection);
//! - the f32 GEMM's microkernels ([`super::sgemm`], AVX-512, AVX2 + FMA or
//!   plain Rust) on operands rounded to bf16, on CPUs without it, and on
//!   those where `vdpbf16ps` is the slower of the two ([`select`] measures
//!   it: Intel's Xeons of cpu family 6, model 207, for one).
//!
//! `vdpbf16ps` adds, in each lane, the product of the odd `k` of a pair and
//! then the even one, each as an f32 FMA; the f32 path takes the `k` in that
//! order (`k = 1, 0, 3, 2, ...`), and runs with denormal sums flushed to
//! zero as `vdpbf16ps` does, so the two give the same bits.
//!
//! **Loops of the `vdpbf16ps` path** ([`super::packed`]; the FMA path has
//! the f32 GEMM's). `K` is cut into blocks of [`KC_PAIRS`]
//! pairs, so that a B micro-panel (48 columns x 768 `k` = 72 KiB of bf16)
//! stays in L2 while every A panel passes over it. One block covers `K =
//! 768` (GPT-2's width), so the largest GEMM, the LM head's `h @ wte^T`,
//! needs no carried sums. Each element of C is summed by one task in one
//! fixed order, so the result does not depend on the number of threads.
//!
//! **FLOPs.** One tile and one pair is 8 x 48 x 2 x 2 = 1536 FLOP in 24
//! `vdpbf16ps`; docs/bf16.md compares the measured rate with the peak.

pub mod avx512;
pub mod convert;
pub mod pack;
pub mod pack_avx512;
pub mod select;

use ndarray::{ArrayView2, ArrayViewMut2};

use super::packed::gemm_packed;
use super::sgemm::{self, sgemm_with, Rounding};

pub use super::packed::Packed;
pub use convert::{bf16_to_f32, f32_to_bf16, round_to_bf16, Bf16};
pub use pack::{pack_a, pack_a_scalar, pack_b, pack_b_scalar, MR, NR};
pub use select::force;

/// Pairs of `k` per block of the K loop (768 values of `k`).
pub const KC_PAIRS: usize = 384;

/// Products smaller than this many multiply-adds run on one thread.
const PAR_MIN_FLOPS: usize = 1 << 20;

/// Which microkernel computes the tiles.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Microkernel {
    /// `vdpbf16ps` ([`avx512`]).
    Avx512Bf16,
    /// The f32 GEMM's microkernels ([`super::sgemm`]: AVX-512, AVX2 + FMA
    /// or plain Rust) on operands rounded to bf16 and taken in
    /// `vdpbf16ps`'s order: the same bits (sums below 2^-126 flushed to
    /// zero, as `vdpbf16ps` does).
    Fma,
}

impl Microkernel {
    /// The microkernel this CPU runs faster ([`select`]: measured once per
    /// process), or the one [`force`]d.
    pub fn detect() -> Microkernel {
        select::chosen()
    }

    /// `acc += a_panel . b_panel` over the pairs of the two slices, on
    /// `vdpbf16ps` (the FMA path does not pack pair words).
    fn run(self, a: &[u32], b: &[u32], acc: &mut [f32]) {
        let acc: &mut [f32; MR * NR] = acc.try_into().expect("a bf16 tile is 8 x 48");
        match self {
            #[cfg(target_arch = "x86_64")]
            // SAFETY: `Avx512Bf16` is only chosen where the CPU has the feature
            // (`detect`, or a caller that checked `avx512::available`).
            Microkernel::Avx512Bf16 => unsafe { avx512::microkernel(a, b, acc) },
            _ => unreachable!("the FMA path runs on the f32 GEMM's loops"),
        }
    }
}

/// `c = alpha * bf16(a) @ bf16(b) + beta * c`, accumulated in f32, on the
/// fastest microkernel.   a: (M, K), b: (K, N), c: (M, N)
pub fn gemm_bf16(
    alpha: f32,
    a: ArrayView2<'_, f32>,
    b: ArrayView2<'_, f32>,
    beta: f32,
    c: ArrayViewMut2<'_, f32>,
) {
    gemm_bf16_with(Microkernel::detect(), alpha, a, b, beta, c)
}

/// [`gemm_bf16`] on a given microkernel (tests compare the two).
///
/// # Panics
/// If the shapes do not match, or `Avx512Bf16` is asked for on a CPU without it.
pub fn gemm_bf16_with(
    kernel: Microkernel,
    alpha: f32,
    a: ArrayView2<'_, f32>,
    b: ArrayView2<'_, f32>,
    beta: f32,
    c: ArrayViewMut2<'_, f32>,
) {
    let (m, k) = a.dim();
    let (k2, n) = b.dim();
    assert_eq!(
        k,
        k2,
        "gemm_bf16: inner dimensions differ: {:?} @ {:?}",
        a.dim(),
        b.dim()
    );
    assert_eq!(
        c.dim(),
        (m, n),
        "gemm_bf16: output is {:?}, expected {:?}",
        c.dim(),
        (m, n)
    );
    assert!(
        kernel == Microkernel::Fma || avx512::available(),
        "gemm_bf16: this CPU has no AVX512_BF16"
    );
    if m == 0 || n == 0 {
        return;
    }
    let parallel = m * n * k >= PAR_MIN_FLOPS && rayon::current_num_threads() > 1;
    if kernel == Microkernel::Fma {
        let fma = sgemm::Microkernel::detect();
        return sgemm_with(fma, Rounding::Bf16, alpha, a, b, beta, c, parallel);
    }
    let (a, b) = if parallel {
        rayon::join(|| pack_a(a), || pack_b(b))
    } else {
        (pack_a(a), pack_b(b))
    };
    gemm_packed(
        |a, b, acc| kernel.run(a, b, acc),
        KC_PAIRS,
        alpha,
        &a,
        &b,
        beta,
        c,
        parallel,
    );
}
