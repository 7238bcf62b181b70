//! The operands of the bf16 GEMM, rounded and laid out the way `vdpbf16ps`
//! reads them.
//!
//! `vdpbf16ps acc, x, y` multiplies, in each of its 16 f32 lanes, a *pair*
//! of bf16 values of `x` by the pair in the same 32-bit slot of `y` and adds
//! both products to the lane. So both operands are packed as 32-bit words
//! holding two consecutive `k`: `(v[k = 2p], v[k = 2p + 1])`, low half first
//! ([`pair`]). An odd `K` gets a zero in the last word's high half (it adds
//! `0 * 0`).
//!
//! **B** (K x N) is cut into panels of [`NR`] columns (three registers of 16
//! lanes); panel `q` stores, for each pair `p` in order, the `NR` words of
//! columns `q NR .. q NR + NR`:
//!
//! ```text
//! b_packed[q][p][j] = pair(B[2p, qNR + j], B[2p + 1, qNR + j])      [N/NR][K/2][NR]
//! ```
//!
//! i.e. the `[k/2][n][2]` interleave, one panel at a time, so the
//! microkernel streams one contiguous panel. **A** (M x K) is cut into panels
//! of [`MR`] rows, the words of each pair `p` side by side; the microkernel
//! broadcasts one word (row `i`, pair `p`) to all 16 lanes:
//!
//! ```text
//! a_packed[q][p][i] = pair(A[qMR + i, 2p], A[qMR + i, 2p + 1])      [M/MR][K/2][MR]
//! ```
//!
//! Rows and columns past the edge of the last panel are zeros. Operands are
//! ndarray views with any strides (a transposed weight is a view), read once.

use ndarray::ArrayView2;

use rayon::prelude::*;

use super::convert::pair;
use super::pack_avx512;
use crate::kernels::packed::{take_buffer, Packed, Strided, PAR_MIN_WORDS};

/// Rows of A per panel (and per microkernel tile).
pub const MR: usize = 8;

/// Columns of B per panel (and per microkernel tile): three 16-lane registers.
pub const NR: usize = 48;

/// Pairs per block of the along-`k` packing loop (`width` x 64 words: 12 KiB for B).
const PAIR_BLOCK: usize = 64;

/// Panels of 8 indices packed together from a row-major matrix (64 indices:
/// four cache lines of each row).
const PANEL_GROUP: usize = 8;

/// Packs `a` (M x K) in row panels of [`MR`].
pub fn pack_a(a: ArrayView2<'_, f32>) -> Packed {
    pack_a_with(a, avx512_packing())
}

/// Packs `b` (K x N) in column panels of [`NR`].
pub fn pack_b(b: ArrayView2<'_, f32>) -> Packed {
    pack_b_with(b, avx512_packing())
}

/// [`pack_a`] on the scalar loops alone, on any CPU: the same words (the
/// tests compare the two).
pub fn pack_a_scalar(a: ArrayView2<'_, f32>) -> Packed {
    pack_a_with(a, false)
}

/// [`pack_b`] on the scalar loops alone, on any CPU.
pub fn pack_b_scalar(b: ArrayView2<'_, f32>) -> Packed {
    pack_b_with(b, false)
}

fn pack_a_with(a: ArrayView2<'_, f32>, simd: bool) -> Packed {
    let (m, k) = a.dim();
    let [rs, cs] = [a.strides()[0], a.strides()[1]];
    // SAFETY: the view guarantees that (i, kk) with i < m, kk < k is in its
    // buffer; `simd` is true only where the CPU has the AVX-512 loops' features
    // (the callers pass `avx512_packing()` or false).
    unsafe { pack(Strided::new(a.as_ptr(), rs, cs), m, k, MR, simd) }
}

fn pack_b_with(b: ArrayView2<'_, f32>, simd: bool) -> Packed {
    let (k, n) = b.dim();
    let [rs, cs] = [b.strides()[0], b.strides()[1]];
    // SAFETY: as in `pack_a_with`, with the roles of the strides swapped.
    unsafe { pack(Strided::new(b.as_ptr(), cs, rs), n, k, NR, simd) }
}

/// `dst[j] = pair(lo[j], hi[j])` for `j < W`.
#[inline(always)]
fn pair_slices<const W: usize>(dst: &mut [u32], lo: &[f32], hi: &[f32]) {
    let (dst, lo, hi) = (&mut dst[..W], &lo[..W], &hi[..W]);
    for j in 0..W {
        dst[j] = pair(lo[j], hi[j]);
    }
}

/// Whether [`pack`] runs its AVX-512 loops: where the CPU has them.
fn avx512_packing() -> bool {
    pack_avx512::available()
}

/// Packs the `len x k` matrix `m` in panels of `width`, in parallel over
/// panels when it is large. Two loop orders, chosen by the strides so that
/// reads are sequential: along `k` when `k` is contiguous (a row of A, a
/// column of a transposed weight), along the index otherwise (two rows of
/// a row-major B at a time).
///
/// `simd` runs the AVX-512 loops ([`pack_avx512`]) on the blocks they
/// cover; the caller checks that the CPU has them.
///
/// # Safety
/// `m` must describe a valid `len x k` matrix, and `simd` be true only where
/// the CPU has the AVX-512 loops' features ([`pack_avx512::available`]).
unsafe fn pack(m: Strided, len: usize, k: usize, width: usize, simd: bool) -> Packed {
    let pairs = k.div_ceil(2);
    let panels = len.div_ceil(width);
    let mut words = take_buffer(panels * pairs * width);
    let along_k = m.k_stride.unsigned_abs() <= m.index_stride.unsigned_abs();
    // An odd K: the last k of panel q's `rows` indices alone, with a zero partner.
    let last_odd_k = |q: usize, rows: usize, panel: &mut [u32]| {
        if k % 2 == 1 {
            let p = k / 2;
            for i in 0..rows {
                // SAFETY: index q * width + i < len and k = 2p < K: inside `m`.
                let x = unsafe { m.at(q * width + i, 2 * p) };
                panel[p * width + i] = pair(x, 0.0);
            }
        }
    };
    let fill = |q: usize, panel: &mut [u32]| {
        let rows = width.min(len - q * width);
        let full_pairs = k / 2;
        if along_k && m.k_stride == 1 {
            // Each index's k values are a contiguous line. The AVX-512 loop
            // packs whole blocks of 16 pairs; the scalar one the rest.
            #[cfg(target_arch = "x86_64")]
            let first_pair = if simd {
                // SAFETY: the CPU has the features (`avx512_packing`); each
                // line holds `k` values; the panel holds `pairs * width` words.
                unsafe {
                    pack_avx512::pack_lines(
                        |i| m.ptr(q * width + i, 0),
                        rows,
                        full_pairs,
                        width,
                        panel,
                    )
                }
            } else {
                0
            };
            #[cfg(not(target_arch = "x86_64"))]
            let first_pair = 0;
            // Blocks of `PAIR_BLOCK` pairs keep the words written (strided
            // by `width`) in L1 while every line of the panel passes over
            // them. Each block of a line is converted into contiguous words
            // first (a loop that vectorizes), then spread out.
            let mut block = [0u32; PAIR_BLOCK];
            for p0 in (first_pair..full_pairs).step_by(PAIR_BLOCK) {
                let p1 = (p0 + PAIR_BLOCK).min(full_pairs);
                let block = &mut block[..p1 - p0];
                for i in 0..rows {
                    // SAFETY: index q * width + i < len, and k from 2 p0 to
                    // 2 p1 <= K, contiguous (`k_stride == 1`).
                    let line = unsafe { m.line(q * width + i, 2 * p0, 2 * (p1 - p0)) };
                    for (word, two) in block.iter_mut().zip(line.chunks_exact(2)) {
                        *word = pair(two[0], two[1]);
                    }
                    for (p, &word) in (p0..p1).zip(block.iter()) {
                        panel[p * width + i] = word;
                    }
                }
            }
        } else if !along_k && m.index_stride == 1 {
            // the panel's indices are contiguous for each kk: two slices per
            // pair; the AVX-512 loop packs whole groups of 16 indices of a
            // 48-wide panel (8-wide ones come grouped, `fill_group`), the
            // scalar one the rest
            #[cfg(target_arch = "x86_64")]
            let first = if simd {
                // SAFETY: the CPU has the features; each kk's row holds the
                // panel's `rows` indices; the panel holds `pairs * width` words.
                unsafe {
                    pack_avx512::pack_rows(
                        |kk| m.ptr(q * width, kk),
                        rows,
                        full_pairs,
                        width,
                        panel,
                    )
                }
            } else {
                0
            };
            #[cfg(not(target_arch = "x86_64"))]
            let first = 0;
            for p in (0..full_pairs).filter(|_| first < rows) {
                // SAFETY: the indices q * width + first .. q * width + rows
                // are < len and contiguous (`index_stride == 1`); k = 2p + 1 < K.
                let (lo, hi) = unsafe {
                    (
                        m.slice_along_index(q * width + first, 2 * p, rows - first),
                        m.slice_along_index(q * width + first, 2 * p + 1, rows - first),
                    )
                };
                let dst = &mut panel[p * width + first..p * width + rows];
                match rows - first {
                    // fixed lengths, so that the loop is whole vectors
                    MR => pair_slices::<MR>(dst, lo, hi),
                    NR => pair_slices::<NR>(dst, lo, hi),
                    _ => {
                        for ((word, &x0), &x1) in dst.iter_mut().zip(lo).zip(hi) {
                            *word = pair(x0, x1);
                        }
                    }
                }
            }
        } else {
            for p in 0..full_pairs {
                for i in 0..rows {
                    let index = q * width + i;
                    // SAFETY: index < len and k = 2p + 1 < K: inside `m`.
                    let (x0, x1) = unsafe { (m.at(index, 2 * p), m.at(index, 2 * p + 1)) };
                    panel[p * width + i] = pair(x0, x1);
                }
            }
        }
        last_odd_k(q, rows, panel);
        if rows < width {
            // the indices past the edge of the last panel are zeros
            for p in 0..pairs {
                panel[p * width + rows..(p + 1) * width].fill(0);
            }
        }
    };
    let size = pairs * width;
    // Narrow panels of a row-major matrix (A = dy^T, 8 indices a panel) read
    // only 32 bytes of each row per panel, rows that are often a multiple of
    // 4 KiB apart and so fight over the same L1 set: the AVX-512 loop packs
    // `PANEL_GROUP` panels at once, whole cache lines of each row.
    let grouped = simd && !along_k && m.index_stride == 1 && width == MR;
    let group = if grouped { PANEL_GROUP } else { 1 };
    let fill_group = |g: usize, chunk: &mut [u32]| {
        let panels = chunk.len() / size;
        #[cfg(target_arch = "x86_64")]
        let first = if grouped {
            // the group's full panels (the last panel of the matrix may be narrower)
            let full = panels.min((len - g * group * width) / width);
            // SAFETY: the CPU has the features; each kk's row holds the
            // group's `full * width` indices; the chunk holds `full` panels.
            unsafe {
                pack_avx512::pack_row_panels(
                    |kk| m.ptr(g * group * width, kk),
                    full,
                    k / 2,
                    size,
                    chunk,
                )
            }
        } else {
            0
        };
        #[cfg(not(target_arch = "x86_64"))]
        let first = 0;
        for q in 0..panels {
            let panel = &mut chunk[q * size..(q + 1) * size];
            if q < first {
                // a full panel, packed but for an odd last k
                last_odd_k(g * group + q, width, panel);
            } else {
                fill(g * group + q, panel);
            }
        }
    };
    if size > 0 {
        if words.len() >= PAR_MIN_WORDS {
            words
                .par_chunks_mut(size * group)
                .enumerate()
                .for_each(|(g, chunk)| fill_group(g, chunk));
        } else {
            words
                .chunks_mut(size * group)
                .enumerate()
                .for_each(|(g, chunk)| fill_group(g, chunk));
        }
    }
    Packed {
        words,
        len,
        k,
        steps: pairs,
        width,
    }
}
