//! The f32 microkernel on 512-bit FMAs (AVX512F), for CPUs with full-width
//! 512-bit units (Zen 5, Intel since Skylake-SP), where it doubles the 256-bit
//! kernel's peak; on Zen 4, which splits a 512-bit instruction into two
//! halves, it runs at the same peak as [`super::avx2`] with fewer loads.
//!
//! A tile of C of [`MR`] x [`NR`] = 8 x 48 f32 lives in 24 zmm registers
//! (8 rows x 3 registers of 16 lanes). For each step `s` (one `k`):
//!
//! ```text
//! b0, b1, b2 = the 48 values of step s of the B panel         (3 loads)
//! for i in 0..8:
//!     a = A panel (row i, step s), broadcast to 16 lanes      (1 load)
//!     acc[i][v] = fma(a, b_v, acc[i][v])          v = 0, 1, 2
//! ```
//!
//! 24 FMAs of 16 lanes (768 FLOP) for 11 loads: the layout of the bf16
//! kernel ([`super::super::bf16::avx512`]), one `k` a step instead of a pair.
//! The arithmetic is [`super::portable`]'s, bit for bit.

#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

#[cfg(target_arch = "x86_64")]
use super::Update;

/// Rows of A per panel and per tile.
pub const MR: usize = 8;

/// Columns of B per panel and per tile: three 16-lane registers.
pub const NR: usize = 48;

/// 16-lane registers per row of the tile.
const VECS: usize = NR / 16;

/// Whether this CPU has AVX512F.
pub fn available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        is_x86_feature_detected!("avx512f")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// [`super::portable::microkernel`] on 512-bit FMAs: the tile of C at `c`
/// (rows `ldc` floats apart) is updated with `A panel . B panel` over
/// `steps` steps, as `update` says.
///
/// # Safety
/// The CPU must have AVX512F ([`available`]); `a` and `b` must hold `steps`
/// steps of their panels (`MR` and `NR` floats a step), and `c` must point
/// at `MR` rows of `NR` floats, `ldc` apart, that nothing else touches
/// during the call.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
pub unsafe fn microkernel(
    steps: usize,
    a: *const f32,
    b: *const f32,
    c: *mut f32,
    ldc: usize,
    update: Update,
) {
    // SAFETY: the CPU has the instructions, and every pointer stays inside
    // the panels and the tile (this function's contract).
    unsafe {
        let mut acc = [[_mm512_setzero_ps(); VECS]; MR];
        if update == Update::Continue {
            for (i, row) in acc.iter_mut().enumerate() {
                for (v, reg) in row.iter_mut().enumerate() {
                    *reg = _mm512_loadu_ps(c.add(i * ldc + 16 * v));
                }
            }
        }
        for s in 0..steps {
            let b_s = b.add(s * NR);
            let mut bv = [_mm512_setzero_ps(); VECS];
            for (v, reg) in bv.iter_mut().enumerate() {
                *reg = _mm512_loadu_ps(b_s.add(16 * v));
            }
            for (i, row) in acc.iter_mut().enumerate() {
                let a_i = _mm512_set1_ps(*a.add(s * MR + i));
                for (reg, b_reg) in row.iter_mut().zip(&bv) {
                    *reg = _mm512_fmadd_ps(a_i, *b_reg, *reg);
                }
            }
        }
        for (i, row) in acc.iter().enumerate() {
            for (v, reg) in row.iter().enumerate() {
                let at = c.add(i * ldc + 16 * v);
                if update == Update::Add {
                    _mm512_storeu_ps(at, _mm512_add_ps(_mm512_loadu_ps(at), *reg));
                } else {
                    _mm512_storeu_ps(at, *reg);
                }
            }
        }
    }
}
