//! The blocks of the f32 GEMM's operands in panels ([`super::blocked`]):
//!
//! ```text
//! a_block[q][s][i] = A[i0 + q MR + i, k(s0 + s)]       [rows / MR][steps][MR]
//! b_block[q][s][j] = B[k(s0 + s), j0 + q NR + j]       [columns / NR][steps][NR]
//! ```
//!
//! with `k(s) = s` and `K` steps ([`Rounding::Keep`]), or, for the bf16 GEMM
//! ([`Rounding::Bf16`]), each value rounded to bf16 and the two `k` of each
//! pair swapped, `k(s) = s ^ 1`, over `2 ceil(K / 2)` steps (an odd `K`'s
//! missing partner is a zero): `vdpbf16ps`'s order. Rows and columns past the
//! edge of the last panel are zeros. Operands are strided matrices (a
//! transposed weight is a view); three loops, chosen by the strides so that
//! reads are sequential: 8 x 8 transposes in registers where `k` is
//! contiguous (a row of A, a row of W for `B = W^T`,
//! [`super::transpose_avx2`]), a copy per step where the indices are (a row
//! of a row-major B), one value at a time otherwise.

use super::transpose_avx2;
use crate::kernels::bf16::round_to_bf16;
use crate::kernels::packed::Strided;

/// How values are stored in the panels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rounding {
    /// As they are: the f32 GEMM.
    Keep,
    /// Rounded to bf16 (ties to even, denormals to zero), in pairs of `k`
    /// taken odd one first: the bf16 GEMM's products in `vdpbf16ps`'s order.
    Bf16,
}

impl Rounding {
    /// Steps along `k` of a panel: `K` for f32, `2 ceil(K / 2)` for bf16 pairs.
    pub fn steps(self, k: usize) -> usize {
        match self {
            Rounding::Keep => k,
            Rounding::Bf16 => 2 * k.div_ceil(2),
        }
    }

    /// The `k` that step `s` holds, or None for the zero partner of an odd
    /// K's last `k` (bf16).
    fn k_of(self, s: usize, k: usize) -> Option<usize> {
        let kk = match self {
            Rounding::Keep => s,
            Rounding::Bf16 => s ^ 1,
        };
        (kk < k).then_some(kk)
    }
}

/// Floats a block buffer holds past its panels: the 6-row transposes store
/// 8 lanes, the last two of them past the panel (overwritten by the next
/// step or panel, or landing here).
pub const PACK_SLACK: usize = 8;

/// Packs the block of indices `index0 .. index0 + count` (rows of A, or
/// columns of B) and steps `s0 .. s0 + steps` of the matrix `m` (inner
/// dimension `k`) into `dst`, in panels of `width`:
///
/// ```text
/// dst[q][s][i] = value(m[index0 + q width + i, k(s0 + s)])    0 past `count`
/// ```
///
/// with `value` and `k(s)` as [`Rounding`] says (the module docs). `s0` is
/// even for bf16. Panels are written in order, one after the other (but
/// for a matrix contiguous along the indices, written a step at a time).
///
/// # Safety
/// The block must lie inside the matrix, and `dst` must hold its panels
/// plus [`PACK_SLACK`] floats when `width` is not a multiple of 8.
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn pack_block(
    m: Strided,
    index0: usize,
    count: usize,
    k: usize,
    s0: usize,
    steps: usize,
    width: usize,
    rounding: Rounding,
    dst: &mut [f32],
) {
    let size = steps * width;
    let value_at = |index: usize, s: usize| -> f32 {
        match rounding.k_of(s0 + s, k) {
            // SAFETY: the index and k lie inside the matrix (the contract).
            Some(kk) => unsafe { m.at(index, kk) },
            None => 0.0,
        }
    };
    // Steps of the block whose k are in order inside the matrix (an odd K's
    // last bf16 pair is not).
    let body = match rounding {
        Rounding::Keep => k,
        Rounding::Bf16 => k & !1,
    }
    .clamp(s0, s0 + steps)
        - s0;
    let panels = count.div_ceil(width);
    let rows_of = |q: usize| width.min(count - q * width);
    let along_indices = m.index_stride == 1 && m.k_stride != 1;
    if along_indices {
        // Each step's values are contiguous along the indices (a row of a
        // row-major B): read one step of the whole block at a time, in
        // order, and deal it out to the panels. (Panel by panel, every
        // panel would walk `steps` rows far apart, one cache line from
        // each, which the prefetchers do not follow across pages.)
        for s in 0..steps {
            match rounding.k_of(s0 + s, k) {
                Some(kk) => {
                    // SAFETY: the block lies inside the matrix (the contract).
                    let line = unsafe { m.slice_along_index(index0, kk, count) };
                    for q in 0..panels {
                        let at = q * size + s * width;
                        dst[at..at + rows_of(q)]
                            .copy_from_slice(&line[q * width..q * width + rows_of(q)]);
                    }
                }
                None => {
                    for q in 0..panels {
                        let at = q * size + s * width;
                        dst[at..at + width].fill(0.0);
                    }
                }
            }
        }
    }
    for q in 0..panels {
        let rows = rows_of(q);
        let first = index0 + q * width;
        let panel = &mut dst[q * size..];
        if along_indices {
            // written above
        } else if m.k_stride == 1 && transpose_avx2::available() {
            // Whole groups of 8 rows (a 6-row panel only whole) go through
            // the transposes; the rows of a last panel past them, and the
            // steps past `done`, one value at a time.
            let grouped = if rows == width { rows } else { rows / 8 * 8 };
            // SAFETY: the CPU has AVX2; rows `first .. first + grouped` and
            // steps up to `body` lie inside the matrix with k contiguous;
            // the panel's stores stay in `dst` (its slack included).
            let done = unsafe {
                transpose_avx2::pack_lines(m, first, grouped, s0, body, width, rounding, panel)
            };
            let rest = |s: usize, from: usize, panel: &mut [f32]| {
                for (i, x) in panel[s * width + from..s * width + rows]
                    .iter_mut()
                    .enumerate()
                {
                    *x = value_at(first + from + i, s);
                }
            };
            if grouped < rows {
                (0..done).for_each(|s| rest(s, grouped, panel));
            }
            (done..steps).for_each(|s| rest(s, 0, panel));
        } else {
            for s in 0..steps {
                for (i, x) in panel[s * width..s * width + rows].iter_mut().enumerate() {
                    *x = value_at(first + i, s);
                }
            }
        }
        if rows < width {
            for s in 0..steps {
                panel[s * width + rows..(s + 1) * width].fill(0.0);
            }
        }
        if rounding == Rounding::Bf16 {
            for x in &mut panel[..size] {
                *x = round_to_bf16(*x);
            }
        }
    }
}
