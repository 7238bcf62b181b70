//! The FMA GEMM: `C = alpha * A @ B + beta * C` in f32 arithmetic, each
//! element of C one chain of fused multiply-adds in `k` order:
//!
//! ```text
//! acc = 0
//! for k in 0..K:  acc = fma(A[i, k], B[k, j], acc)          one rounding per k
//! C[i, j] = alpha * acc + beta * C[i, j]                    (C not read when beta = 0)
//! ```
//!
//! The operands are copied block by block into panels ([`pack`]), and the
//! tiles of C are computed by a microkernel; [`blocked`] has the loops, cut
//! for the caches as BLIS cuts them. The microkernels:
//!
//! - [`avx512`]: an 8 x 48 tile in 24 512-bit registers, on CPUs with
//!   AVX512F (runtime detection): Zen 4 and 5, Intel's server CPUs;
//! - [`avx2`]: a 6 x 16 tile in 12 256-bit registers, on CPUs with AVX2 and
//!   FMA but no AVX-512: Zen 3 and earlier, Intel's desktop CPUs;
//! - [`portable`]: the same arithmetic in plain Rust (`f32::mul_add`),
//!   everywhere else.
//!
//! (On Zen 4 a 512-bit FMA runs as two 256-bit halves, so both SIMD kernels
//! have the same peak there; the 512-bit one needs fewer loads per FMA.)
//!
//! Every element is summed by one chain in one order, whatever the tile, the
//! blocking over `k` (sums carried exactly) or the number of threads, and an
//! FMA rounds once: so every kernel and every thread count gives the same
//! bits.
//!
//! **What it computes.** Every f32 product of the model
//! ([`super::gemm::gemm`]), with [`Rounding::Keep`], and the bf16 GEMM on
//! CPUs without AVX512_BF16 ([`super::bf16`]), with [`Rounding::Bf16`]. On
//! one core of a Zen 3, at the shapes of a GPT-2 and a SmolLM2 step, it ran
//! at 70-91 GFLOP/s where matrixmultiply's sgemm, which the f32 products
//! used before, ran at 65-88 in the same runs (its microkernel alone
//! reaches 95-100 in L1; docs/bf16.md has the tables against matrixmultiply
//! and MKL, `cargo run --release --example gemm -p autograd` prints them).
//!
//! **bf16 operands.** With [`Rounding::Bf16`], each value is rounded to bf16
//! as it is packed and each pair of `k` is taken odd one first (`k = 1, 0, 3,
//! 2, ...`, an odd `K` padded with a zero): the FMA chain is then exactly
//! what `vdpbf16ps` computes ([`super::bf16`]), on CPUs without it.
//! `vdpbf16ps` also flushes a sum that falls below 2^-126 to zero (an FMA
//! would keep the denormal), so the bf16 path runs its microkernels with the
//! flush-to-zero bit of MXCSR set ([`flushing_denormals`]): the same bits.

pub mod avx2;
pub mod avx512;
pub mod blocked;
pub mod pack;
pub mod portable;
pub mod transpose_avx2;

use ndarray::{ArrayView2, ArrayViewMut2};

pub use blocked::{with_loops, Loops, BLOCK_STEPS};
pub use pack::Rounding;

use blocked::gemm_blocked;

/// The largest tile of C any microkernel computes (8 x 48).
const MAX_TILE: usize = avx512::MR * avx512::NR;

/// What a microkernel does with the tile of C it is given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Update {
    /// The sums start at zero and overwrite the tile.
    Set,
    /// The sums start from the tile's values (the chain of an earlier block
    /// of `k` goes on) and overwrite it.
    Continue,
    /// The sums start at zero and are added to the tile: `C += A @ B`
    /// (`alpha = beta = 1`), one rounding more per element.
    Add,
}

/// Which microkernel computes the tiles.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Microkernel {
    /// 512-bit FMAs ([`avx512`]).
    Avx512,
    /// 256-bit FMAs ([`avx2`]).
    Avx2Fma,
    /// Plain Rust, the same bits ([`portable`]).
    Portable,
}

impl Microkernel {
    /// The fastest microkernel this CPU runs.
    pub fn detect() -> Microkernel {
        if avx512::available() {
            Microkernel::Avx512
        } else if avx2::available() {
            Microkernel::Avx2Fma
        } else {
            Microkernel::Portable
        }
    }

    /// Rows of A and columns of B per tile.
    pub fn tile(self) -> (usize, usize) {
        match self {
            Microkernel::Avx512 => (avx512::MR, avx512::NR),
            Microkernel::Avx2Fma | Microkernel::Portable => (avx2::MR, avx2::NR),
        }
    }

    /// Whether this CPU runs it.
    pub fn available(self) -> bool {
        match self {
            Microkernel::Avx512 => avx512::available(),
            Microkernel::Avx2Fma => avx2::available(),
            Microkernel::Portable => true,
        }
    }

    /// The tile of C at `c` (rows `ldc` apart) updated with `steps` steps of
    /// the panels `a` and `b`, as `update` says.
    ///
    /// # Safety
    /// The CPU must run this kernel ([`Microkernel::available`]); the
    /// pointers as the kernels' (e.g. [`avx2::microkernel`]) say.
    pub(crate) unsafe fn run(
        self,
        steps: usize,
        a: *const f32,
        b: *const f32,
        c: *mut f32,
        ldc: usize,
        update: Update,
    ) {
        let (mr, nr) = self.tile();
        // SAFETY: this function's contract is the kernels'.
        unsafe {
            match self {
                #[cfg(target_arch = "x86_64")]
                Microkernel::Avx512 => avx512::microkernel(steps, a, b, c, ldc, update),
                #[cfg(target_arch = "x86_64")]
                Microkernel::Avx2Fma => avx2::microkernel(steps, a, b, c, ldc, update),
                _ => portable::microkernel(mr, nr, steps, a, b, c, ldc, update),
            }
        }
    }
}

/// `c = alpha * a @ b + beta * c` on the fastest microkernel, the tiles split
/// over rayon when `parallel`.   a: (M, K), b: (K, N), c: (M, N)
pub fn sgemm(
    alpha: f32,
    a: ArrayView2<'_, f32>,
    b: ArrayView2<'_, f32>,
    beta: f32,
    c: ArrayViewMut2<'_, f32>,
    parallel: bool,
) {
    sgemm_with(
        Microkernel::detect(),
        Rounding::Keep,
        alpha,
        a,
        b,
        beta,
        c,
        parallel,
    )
}

/// [`sgemm`] on a given microkernel, with the operands rounded as asked.
///
/// # Panics
/// If the shapes do not match, or the CPU does not run `kernel`.
#[allow(clippy::too_many_arguments)]
pub fn sgemm_with(
    kernel: Microkernel,
    rounding: Rounding,
    alpha: f32,
    a: ArrayView2<'_, f32>,
    b: ArrayView2<'_, f32>,
    beta: f32,
    c: ArrayViewMut2<'_, f32>,
    parallel: bool,
) {
    let (m, k) = a.dim();
    let (k2, n) = b.dim();
    assert_eq!(
        k,
        k2,
        "sgemm: inner dimensions differ: {:?} @ {:?}",
        a.dim(),
        b.dim()
    );
    assert_eq!(
        c.dim(),
        (m, n),
        "sgemm: output is {:?}, expected {:?}",
        c.dim(),
        (m, n)
    );
    assert!(kernel.available(), "sgemm: this CPU cannot run {kernel:?}");
    if m == 0 || n == 0 {
        return;
    }
    if rounding == Rounding::Bf16 {
        flushing_denormals(|| gemm_blocked(kernel, rounding, alpha, a, b, beta, c, parallel))
    } else {
        gemm_blocked(kernel, rounding, alpha, a, b, beta, c, parallel)
    }
}

/// Runs `f` with MXCSR's flush-to-zero bit set on this thread, then restores
/// MXCSR: SSE/AVX arithmetic whose result is below 2^-126 gives a zero of
/// its sign, as `vdpbf16ps` does. (On other architectures `f` runs as it is,
/// and a sum below 2^-126 stays a denormal.)
pub fn flushing_denormals<R>(f: impl FnOnce() -> R) -> R {
    #[cfg(target_arch = "x86_64")]
    {
        /// MXCSR's flush-to-zero bit.
        const FTZ: u32 = 1 << 15;
        let mut saved = 0u32;
        // SAFETY: `stmxcsr` stores MXCSR into the 4 bytes of `saved`.
        unsafe { std::arch::asm!("stmxcsr [{}]", in(reg) &mut saved, options(nostack)) };
        let flushing = saved | FTZ;
        // SAFETY: `ldmxcsr` loads a valid MXCSR (the current one, one more
        // control bit set) from the 4 bytes of `flushing`.
        unsafe { std::arch::asm!("ldmxcsr [{}]", in(reg) &flushing, options(nostack)) };
        let result = f();
        // SAFETY: as above, the saved MXCSR.
        unsafe { std::arch::asm!("ldmxcsr [{}]", in(reg) &saved, options(nostack)) };
        result
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        f()
    }
}
