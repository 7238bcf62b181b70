//! The bf16 GEMM: `C = alpha * bf16(A) @ bf16(B) + beta * C`, accumulated in f32.
//!
//! The inputs are f32 views (any strides); each is rounded to bf16 once, as
//! it is packed ([`pack`]), and the products are summed in f32 by a
//! microkernel on [`MR`] x [`NR`] tiles of C:
//!
//! - [`avx512`]: `vdpbf16ps`, on CPUs with AVX512_BF16 (runtime detection);
//! - [`portable`]: the same arithmetic in plain Rust, everywhere else.
//!
//! Both sum in the same order (pairs of `k` in order, the odd one of each
//! pair first), so they give the same bits ([`portable`] states the one
//! exception, products below 2^-126).
//!
//! **Loops.** `K` is cut into blocks of [`KC_PAIRS`] pairs, so that a B
//! micro-panel (48 columns x 768 `k` = 72 KiB of bf16) stays in L2 while
//! every A panel passes over it. One block covers `K = 768` (GPT-2's width),
//! so the largest GEMM, the LM head's `h @ wte^T`, needs no carried sums. A tile's f32 sums are carried from one
//! block to the next exactly (stored and reloaded, no rounding), so the
//! blocking does not change the result. Within a block, the tiles of C are
//! independent tasks, split over rayon, in the order that reads the larger
//! packed operand once: column-panel major (every A panel passes over one B
//! panel, which stays in cache) unless A is the larger one; each
//! element of C is summed by one task in one fixed order, so the result does
//! not depend on the number of threads (the split is never over `k`).
//!
//! **FLOPs.** One tile and one pair is 8 x 48 x 2 x 2 = 1536 FLOP in 24
//! `vdpbf16ps`; docs/bf16.md compares the measured rate with the peak.

pub mod avx512;
pub mod convert;
pub mod pack;
pub mod pack_avx512;
pub mod portable;

use std::sync::atomic::{AtomicBool, Ordering};

use ndarray::{ArrayView2, ArrayViewMut2};
use rayon::prelude::*;

pub use convert::{bf16_to_f32, f32_to_bf16, round_to_bf16, Bf16};
pub use pack::{pack_a, pack_a_scalar, pack_b, pack_b_scalar, Packed, MR, NR};

/// Pairs of `k` per block of the K loop (768 values of `k`).
pub const KC_PAIRS: usize = 384;

/// Products smaller than this many multiply-adds run on one thread.
const PAR_MIN_FLOPS: usize = 1 << 20;

/// Which microkernel computes the tiles.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Microkernel {
    /// `vdpbf16ps` ([`avx512`]).
    Avx512Bf16,
    /// Plain Rust, the same bits ([`portable`]).
    Portable,
}

/// Set by [`force_portable`]: [`Microkernel::detect`] then answers `Portable`.
static FORCE_PORTABLE: AtomicBool = AtomicBool::new(false);

/// Makes every later [`gemm_bf16`] of the process run the portable
/// microkernel even where the CPU has AVX512_BF16 (`true`), or the fastest
/// one again (`false`): for comparisons of the two paths end to end.
pub fn force_portable(portable: bool) {
    FORCE_PORTABLE.store(portable, Ordering::Relaxed);
}

impl Microkernel {
    /// The fastest microkernel this CPU runs (the portable one after
    /// [`force_portable`]).
    pub fn detect() -> Microkernel {
        if avx512::available() && !FORCE_PORTABLE.load(Ordering::Relaxed) {
            Microkernel::Avx512Bf16
        } else {
            Microkernel::Portable
        }
    }

    /// `acc += a_panel . b_panel` over the pairs of the two slices.
    fn run(self, a: &[u32], b: &[u32], acc: &mut [f32; MR * NR]) {
        match self {
            #[cfg(target_arch = "x86_64")]
            // SAFETY: `Avx512Bf16` is only chosen where the CPU has the feature
            // (`detect`, or a caller that checked `avx512::available`).
            Microkernel::Avx512Bf16 => unsafe { avx512::microkernel(a, b, acc) },
            _ => portable::microkernel(a, b, acc),
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
        kernel == Microkernel::Portable || avx512::available(),
        "gemm_bf16: this CPU has no AVX512_BF16"
    );
    if m == 0 || n == 0 {
        return;
    }
    let parallel = m * n * k >= PAR_MIN_FLOPS && rayon::current_num_threads() > 1;
    let (a, b) = if parallel {
        rayon::join(|| pack_a(a), || pack_b(b))
    } else {
        (pack_a(a), pack_b(b))
    };
    gemm_packed(kernel, alpha, &a, &b, beta, c, parallel);
}

/// A raw pointer to C shared by the tile tasks, which write disjoint tiles.
#[derive(Clone, Copy)]
struct OutPtr(*mut f32);
// SAFETY: every task writes only the elements of its own tile, and C
// outlives the tasks (the GEMM returns after they end).
unsafe impl Send for OutPtr {}
// SAFETY: as for `Send`: no two tasks touch the same element.
unsafe impl Sync for OutPtr {}

impl OutPtr {
    /// The element `offset` elements past the start (a method, so that
    /// closures capture the whole `OutPtr`, not its raw field).
    ///
    /// # Safety
    /// `offset` must be inside C.
    unsafe fn at(self, offset: isize) -> *mut f32 {
        // SAFETY: `offset` is inside C (this function's contract).
        unsafe { self.0.offset(offset) }
    }
}

/// The tiles of C from packed operands: block by block over `k`, tile by
/// tile within a block (the panels of the larger operand in the outer
/// loop); the last block writes `c = alpha * acc + beta * c` (`c` not read
/// when `beta == 0`).
fn gemm_packed(
    kernel: Microkernel,
    alpha: f32,
    a: &Packed,
    b: &Packed,
    beta: f32,
    mut c: ArrayViewMut2<'_, f32>,
    parallel: bool,
) {
    let (m, n) = (a.len, b.len);
    let (a_panels, b_panels) = (a.panels(), b.panels());
    let tiles = a_panels * b_panels;
    let pairs = a.pairs();
    // Tile t is (A panel, B panel) = (t % a_panels, t / a_panels), or
    // (t / b_panels, t % b_panels) when A is the larger operand.
    let a_major = a.words.len() > b.words.len();
    let panels_of = move |t: usize| {
        if a_major {
            (t / b_panels, t % b_panels)
        } else {
            (t % a_panels, t / a_panels)
        }
    };
    let [rsc, csc] = [c.strides()[0], c.strides()[1]];
    let out = OutPtr(c.as_mut_ptr());
    // Writes tile `t`'s sums into C.
    let write = move |t: usize, acc: &[f32; MR * NR]| {
        let (qa, qb) = panels_of(t);
        let rows = MR.min(m - qa * MR);
        let cols = NR.min(n - qb * NR);
        if csc == 1 {
            // rows of C are contiguous: whole-row loops that vectorize
            for i in 0..rows {
                let row = (qa * MR + i) as isize * rsc + (qb * NR) as isize;
                // SAFETY: the row's `cols` elements are inside C, and only this task writes them.
                let dst = unsafe { std::slice::from_raw_parts_mut(out.at(row), cols) };
                let sums = &acc[i * NR..i * NR + cols];
                if beta == 0.0 {
                    dst.iter_mut().zip(sums).for_each(|(c, &s)| *c = alpha * s);
                } else {
                    dst.iter_mut()
                        .zip(sums)
                        .for_each(|(c, &s)| *c = alpha * s + beta * *c);
                }
            }
            return;
        }
        for i in 0..rows {
            for j in 0..cols {
                let (row, col) = ((qa * MR + i) as isize, (qb * NR + j) as isize);
                // SAFETY: (row, col) is inside C, and only this task writes it.
                unsafe {
                    let dst = out.at(row * rsc + col * csc);
                    let sum = alpha * acc[i * NR + j];
                    *dst = if beta == 0.0 { sum } else { sum + beta * *dst };
                }
            }
        }
    };
    // `acc += ` tile `t`'s products over the pairs `p0..p1`.
    let accumulate = |t: usize, p0: usize, p1: usize, acc: &mut [f32; MR * NR]| {
        let (qa, qb) = panels_of(t);
        let a_panel = &a.panel(qa)[p0 * MR..p1 * MR];
        let b_panel = &b.panel(qb)[p0 * NR..p1 * NR];
        kernel.run(a_panel, b_panel, acc);
    };
    if pairs <= KC_PAIRS {
        // One block: each tile's sums stay in a local array.
        let tile = |t: usize| {
            let mut acc = [0.0f32; MR * NR];
            accumulate(t, 0, pairs, &mut acc);
            write(t, &acc);
        };
        if parallel {
            (0..tiles).into_par_iter().with_min_len(4).for_each(tile);
        } else {
            (0..tiles).for_each(tile);
        }
        return;
    }
    // Several blocks: the sums of every tile are carried in `sums`.
    let mut sums = vec![[0.0f32; MR * NR]; tiles];
    let blocks = pairs.div_ceil(KC_PAIRS);
    for block in 0..blocks {
        let (p0, p1) = (block * KC_PAIRS, ((block + 1) * KC_PAIRS).min(pairs));
        let last = block + 1 == blocks;
        let tile = |(t, acc): (usize, &mut [f32; MR * NR])| {
            accumulate(t, p0, p1, acc);
            if last {
                write(t, acc);
            }
        };
        if parallel {
            sums.par_iter_mut()
                .enumerate()
                .with_min_len(4)
                .for_each(tile);
        } else {
            sums.iter_mut().enumerate().for_each(tile);
        }
    }
}
