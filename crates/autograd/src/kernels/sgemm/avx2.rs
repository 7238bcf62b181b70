//! The f32 microkernel on 256-bit FMAs (AVX2 + FMA).
//!
//! A tile of C of [`MR`] x [`NR`] = 6 x 16 f32 lives in 12 ymm registers
//! (6 rows x 2 registers of 8 lanes). For each step `s` (one `k`):
//!
//! ```text
//! b0, b1 = the 16 values of step s of the B panel             (2 loads)
//! for i in 0..6:
//!     a = A panel (row i, step s), broadcast to 8 lanes       (1 load)
//!     acc[i][v] = fma(a, b_v, acc[i][v])          v = 0, 1
//! ```
//!
//! 12 FMAs of 8 lanes (192 FLOP) for 8 loads; with the 2 B registers and a
//! broadcast, 15 of the 16 registers are in use. Twelve independent sums
//! cover the FMA's latency (4 cycles) on two FMA pipes. The arithmetic is
//! spelled out in [`super::portable`], which computes the same bits.

#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

#[cfg(target_arch = "x86_64")]
use super::Update;

/// Rows of A per panel and per tile.
pub const MR: usize = 6;

/// Columns of B per panel and per tile: two 8-lane registers.
pub const NR: usize = 16;

/// Whether this CPU has AVX2 and FMA.
pub fn available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// [`super::portable::microkernel`] on 256-bit FMAs: the tile of C at `c`
/// (rows `ldc` floats apart) is updated with `A panel . B panel` over
/// `steps` steps, as `update` says.
///
/// # Safety
/// The CPU must have AVX2 and FMA ([`available`]); `a` and `b` must hold
/// `steps` steps of their panels (`MR` and `NR` floats a step), and `c`
/// must point at `MR` rows of `NR` floats, `ldc` apart, that nothing else
/// touches during the call.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
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
        let mut acc = [[_mm256_setzero_ps(); 2]; MR];
        if update == Update::Continue {
            for (i, row) in acc.iter_mut().enumerate() {
                for (v, reg) in row.iter_mut().enumerate() {
                    *reg = _mm256_loadu_ps(c.add(i * ldc + 8 * v));
                }
            }
        }
        for s in 0..steps {
            let b_s = b.add(s * NR);
            let (b0, b1) = (_mm256_loadu_ps(b_s), _mm256_loadu_ps(b_s.add(8)));
            for (i, row) in acc.iter_mut().enumerate() {
                let a_i = _mm256_broadcast_ss(&*a.add(s * MR + i));
                row[0] = _mm256_fmadd_ps(a_i, b0, row[0]);
                row[1] = _mm256_fmadd_ps(a_i, b1, row[1]);
            }
        }
        for (i, row) in acc.iter().enumerate() {
            for (v, reg) in row.iter().enumerate() {
                let at = c.add(i * ldc + 8 * v);
                if update == Update::Add {
                    _mm256_storeu_ps(at, _mm256_add_ps(_mm256_loadu_ps(at), *reg));
                } else {
                    _mm256_storeu_ps(at, *reg);
                }
            }
        }
    }
}
