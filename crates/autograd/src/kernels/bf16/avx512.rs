//! The bf16 microkernel on `vdpbf16ps` (AVX512_BF16).
//!
//! A tile of C of [`MR`] x [`NR`] = 8 x 48 f32 lives in 24 zmm registers
//! (8 rows x 3 registers of 16 lanes). For each pair `p` of `k`:
//!
//! ```text
//! b0, b1, b2 = the 48 words of pair p of the B panel         (3 loads)
//! for i in 0..8:
//!     a = the word (row i, pair p) of the A panel, broadcast to 16 lanes
//!     acc[i][v] = vdpbf16ps(acc[i][v], a, b_v)        v = 0, 1, 2
//! ```
//!
//! 24 instructions per pair, each 16 lanes x 2 multiply-adds = 64 FLOP:
//! 1536 FLOP for 3 loads and 8 broadcasts. The f32 kernels of
//! [`super::super::sgemm`] compute the same bits on CPUs without it.

#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

use super::pack::{MR, NR};

/// 16-lane registers per row of the tile.
const VECS: usize = NR / 16;

/// Whether this CPU has AVX512_BF16 (and AVX512F).
pub fn available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        is_x86_feature_detected!("avx512f") && is_x86_feature_detected!("avx512bf16")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// `acc += A panel . B panel` on `vdpbf16ps`.
///
/// # Safety
/// The CPU must have AVX512F and AVX512_BF16 ([`available`]).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bf16")]
pub unsafe fn microkernel(a: &[u32], b: &[u32], acc: &mut [f32; MR * NR]) {
    let pairs = (a.len() / MR).min(b.len() / NR);
    // SAFETY: the CPU has the instructions (this function's contract). Every
    // pointer stays inside its slice: `acc` holds MR rows of NR = 16 VECS
    // floats; the B panel holds NR words per pair and the A panel MR, for
    // each of the `pairs` pairs, which is at most what both slices hold.
    unsafe {
        let mut c = [[_mm512_setzero_ps(); VECS]; MR];
        for (i, row) in c.iter_mut().enumerate() {
            for (v, reg) in row.iter_mut().enumerate() {
                *reg = _mm512_loadu_ps(acc.as_ptr().add(i * NR + 16 * v));
            }
        }
        let (a_ptr, b_ptr) = (a.as_ptr(), b.as_ptr());
        for p in 0..pairs {
            let b_p = b_ptr.add(p * NR);
            let mut bv = [_mm512_setzero_si512(); VECS];
            for (v, reg) in bv.iter_mut().enumerate() {
                *reg = _mm512_loadu_si512(b_p.add(16 * v) as *const __m512i);
            }
            for (i, row) in c.iter_mut().enumerate() {
                let a_word = _mm512_set1_epi32(*a_ptr.add(p * MR + i) as i32);
                for (reg, b_reg) in row.iter_mut().zip(&bv) {
                    *reg = _mm512_dpbf16_ps(*reg, as_bh(a_word), as_bh(*b_reg));
                }
            }
        }
        for (i, row) in c.iter().enumerate() {
            for (v, reg) in row.iter().enumerate() {
                _mm512_storeu_ps(acc.as_mut_ptr().add(i * NR + 16 * v), *reg);
            }
        }
    }
}

/// The same 512 bits seen as 32 bf16 values.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
fn as_bh(x: __m512i) -> __m512bh {
    // SAFETY: both are plain 512-bit vectors, and every bit pattern is a
    // valid value of either.
    unsafe { std::mem::transmute::<__m512i, __m512bh>(x) }
}
