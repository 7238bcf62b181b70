//! The operands of the f32 GEMM in panels of f32 words ([`super::super::packed`]):
//!
//! ```text
//! a_packed[q][s][i] = A[q MR + i, k(s)]          [M/MR][steps][MR]
//! b_packed[q][s][j] = B[k(s), q NR + j]          [N/NR][steps][NR]
//! ```
//!
//! with `k(s) = s` and `K` steps ([`Rounding::Keep`]), or, for the bf16 GEMM
//! ([`Rounding::Bf16`]), each value rounded to bf16 and the two `k` of each
//! pair swapped, `k(s) = s ^ 1`, over `2 ceil(K / 2)` steps (an odd `K`'s
//! missing partner is a zero): `vdpbf16ps`'s order. Rows and columns past the
//! edge of the last panel are zeros. Operands are ndarray views with any
//! strides (a transposed weight is a view), read once.

use ndarray::ArrayView2;
use rayon::prelude::*;

use crate::kernels::bf16::round_to_bf16;
use crate::kernels::packed::{take_buffer, Packed, Strided, PAR_MIN_WORDS};

/// How values are stored in the panels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rounding {
    /// As they are: the f32 GEMM.
    Keep,
    /// Rounded to bf16 (ties to even, denormals to zero), in pairs of `k`
    /// taken odd one first: the bf16 GEMM's products in `vdpbf16ps`'s order.
    Bf16,
}

/// Steps per block of the transposing loop (along `k`): the block's part of
/// eight rows, 8 x 256 values, stays in L1.
const STEP_BLOCK: usize = 256;

/// Rows of the transposing loop written together: eight words, 32 bytes.
const ROW_GROUP: usize = 8;

/// Packs `a` (M x K) in row panels of `width`; in parallel over panels when
/// `parallel` and large.
pub fn pack_a(a: ArrayView2<'_, f32>, width: usize, rounding: Rounding, parallel: bool) -> Packed {
    let (m, k) = a.dim();
    let [rs, cs] = [a.strides()[0], a.strides()[1]];
    // SAFETY: the view guarantees that (i, kk) with i < m, kk < k is in its buffer.
    unsafe { pack(a.as_ptr(), rs, cs, m, k, width, rounding, parallel) }
}

/// Packs `b` (K x N) in column panels of `width`.
pub fn pack_b(b: ArrayView2<'_, f32>, width: usize, rounding: Rounding, parallel: bool) -> Packed {
    let (k, n) = b.dim();
    let [rs, cs] = [b.strides()[0], b.strides()[1]];
    // SAFETY: as in `pack_a`, with the roles of the strides swapped.
    unsafe { pack(b.as_ptr(), cs, rs, n, k, width, rounding, parallel) }
}

/// Packs the `len x k` matrix at `ptr` (strides in elements) in panels of
/// `width`. Two loop orders, chosen by the strides so that reads are
/// sequential: along `k` for each index when `k` is the smaller stride (a row
/// of A, a column of a transposed weight), along the indices for each `k`
/// otherwise (a row of a row-major B).
///
/// # Safety
/// `ptr` and the strides must describe a valid `len x k` matrix.
#[allow(clippy::too_many_arguments)]
unsafe fn pack(
    ptr: *const f32,
    index_stride: isize,
    k_stride: isize,
    len: usize,
    k: usize,
    width: usize,
    rounding: Rounding,
    parallel: bool,
) -> Packed {
    let m = Strided::new(ptr, index_stride, k_stride);
    let steps = match rounding {
        Rounding::Keep => k,
        Rounding::Bf16 => 2 * k.div_ceil(2),
    };
    // The `k` of step `s`, or None for the zero partner of an odd K's last k.
    let k_of = move |s: usize| -> Option<usize> {
        let kk = match rounding {
            Rounding::Keep => s,
            Rounding::Bf16 => s ^ 1,
        };
        (kk < k).then_some(kk)
    };
    let value = move |x: f32| -> u32 {
        match rounding {
            Rounding::Keep => x.to_bits(),
            Rounding::Bf16 => round_to_bf16(x).to_bits(),
        }
    };
    let along_k = k_stride.unsigned_abs() <= index_stride.unsigned_abs();
    let size = steps * width;
    // Steps 0..body take their k from inside the matrix (k(s) < K); an odd
    // K's bf16 panel has two more, the zero partner and the last k.
    let body = match rounding {
        Rounding::Keep => k,
        Rounding::Bf16 => k & !1,
    };
    let fill = |q: usize, panel: &mut [u32]| {
        let rows = width.min(len - q * width);
        let index0 = q * width;
        if along_k && k_stride == 1 {
            // A transpose. Eight rows at a time, each a contiguous line
            // along k, go into eight adjacent words of each step (one
            // 32-byte store), in blocks of steps that keep the lines' cache
            // lines in L1.
            for s0 in (0..body).step_by(STEP_BLOCK) {
                let s1 = (s0 + STEP_BLOCK).min(body);
                for i0 in (0..rows).step_by(ROW_GROUP) {
                    let group = ROW_GROUP.min(rows - i0);
                    // SAFETY: index0 + i < len, and k from s0 to s1 <= K are
                    // contiguous (k_stride == 1).
                    let lines: [&[f32]; ROW_GROUP] = std::array::from_fn(|r| unsafe {
                        let i = index0 + i0 + r.min(group - 1);
                        std::slice::from_raw_parts(
                            m.ptr.offset(i as isize * index_stride + s0 as isize),
                            s1 - s0,
                        )
                    });
                    for s in s0..s1 {
                        // s0 is even, so a bf16 pair's swapped k stays in the block
                        let at = match rounding {
                            Rounding::Keep => s - s0,
                            Rounding::Bf16 => (s ^ 1) - s0,
                        };
                        let mut words = [0u32; ROW_GROUP];
                        for (word, line) in words.iter_mut().zip(&lines) {
                            *word = value(line[at]);
                        }
                        let start = s * width + i0;
                        panel[start..start + group].copy_from_slice(&words[..group]);
                    }
                }
            }
        } else if !along_k && index_stride == 1 {
            // Each step's `rows` values are contiguous: a copy per step.
            for s in 0..body {
                let kk = k_of(s).expect("a body step is inside K");
                // SAFETY: indices index0 .. index0 + rows < len are
                // contiguous (index_stride == 1), and kk < K.
                let src = unsafe {
                    std::slice::from_raw_parts(
                        m.ptr.offset(index0 as isize + kk as isize * k_stride),
                        rows,
                    )
                };
                let dst = &mut panel[s * width..s * width + rows];
                match rounding {
                    Rounding::Keep => {
                        for (word, &x) in dst.iter_mut().zip(src) {
                            *word = x.to_bits();
                        }
                    }
                    Rounding::Bf16 => {
                        for (word, &x) in dst.iter_mut().zip(src) {
                            *word = round_to_bf16(x).to_bits();
                        }
                    }
                }
            }
        } else {
            for s in 0..body {
                let kk = k_of(s).expect("a body step is inside K");
                for i in 0..rows {
                    // SAFETY: index0 + i < len, kk < K.
                    panel[s * width + i] = value(unsafe { m.at(index0 + i, kk) });
                }
            }
        }
        for s in body..steps {
            for i in 0..rows {
                panel[s * width + i] = match k_of(s) {
                    // SAFETY: index0 + i < len, kk < K.
                    Some(kk) => value(unsafe { m.at(index0 + i, kk) }),
                    None => 0,
                };
            }
        }
        if rows < width {
            // the indices past the edge of the last panel are zeros
            for s in 0..steps {
                panel[s * width + rows..(s + 1) * width].fill(0);
            }
        }
    };
    let mut words = take_buffer(len.div_ceil(width) * size);
    if size > 0 {
        if parallel && words.len() >= PAR_MIN_WORDS {
            words
                .par_chunks_mut(size)
                .enumerate()
                .for_each(|(q, panel)| fill(q, panel));
        } else {
            words
                .chunks_mut(size)
                .enumerate()
                .for_each(|(q, panel)| fill(q, panel));
        }
    }
    Packed {
        words,
        len,
        k,
        steps,
        width,
    }
}
