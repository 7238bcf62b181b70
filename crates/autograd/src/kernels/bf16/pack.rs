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

/// Rows of A per panel (and per microkernel tile).
pub const MR: usize = 8;

/// Columns of B per panel (and per microkernel tile): three 16-lane registers.
pub const NR: usize = 48;

/// Panels of at least this many words are packed in parallel.
const PAR_MIN_WORDS: usize = 1 << 16;

/// A matrix rounded to bf16 in panels of pair words (see the module docs).
#[derive(Debug, Clone)]
pub struct Packed {
    /// `panels * pairs * width` words.
    pub words: Vec<u32>,
    /// Rows (for A) or columns (for B) of the unpacked matrix.
    pub len: usize,
    /// K, the inner dimension.
    pub k: usize,
    /// Rows (A) or columns (B) per panel: [`MR`] or [`NR`].
    pub width: usize,
}

impl Packed {
    /// Pairs of `k` per panel: `ceil(K / 2)`.
    pub fn pairs(&self) -> usize {
        self.k.div_ceil(2)
    }

    /// Number of panels.
    pub fn panels(&self) -> usize {
        self.len.div_ceil(self.width)
    }

    /// The words of panel `q`: `pairs * width` of them.
    pub fn panel(&self, q: usize) -> &[u32] {
        let size = self.pairs() * self.width;
        &self.words[q * size..(q + 1) * size]
    }
}

/// Packs `a` (M x K) in row panels of [`MR`].
pub fn pack_a(a: ArrayView2<'_, f32>) -> Packed {
    let (m, k) = a.dim();
    pack(m, k, MR, |i, kk| a[[i, kk]])
}

/// Packs `b` (K x N) in column panels of [`NR`].
pub fn pack_b(b: ArrayView2<'_, f32>) -> Packed {
    let (k, n) = b.dim();
    pack(n, k, NR, |j, kk| b[[kk, j]])
}

/// Packs the `len x k` matrix `at(index, kk)` (index: row of A or column of
/// B) in panels of `width`.
fn pack(len: usize, k: usize, width: usize, at: impl Fn(usize, usize) -> f32 + Sync) -> Packed {
    let pairs = k.div_ceil(2);
    let panels = len.div_ceil(width);
    let mut words = vec![0u32; panels * pairs * width];
    let fill = |q: usize, panel: &mut [u32]| {
        let rows = width.min(len - q * width);
        for p in 0..pairs {
            let dst = &mut panel[p * width..p * width + rows];
            let (k0, k1) = (2 * p, 2 * p + 1);
            for (i, word) in dst.iter_mut().enumerate() {
                let index = q * width + i;
                let hi = if k1 < k { at(index, k1) } else { 0.0 };
                *word = pair(at(index, k0), hi);
            }
        }
    };
    let size = pairs * width;
    if size > 0 {
        if words.len() >= PAR_MIN_WORDS {
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
        width,
    }
}
