//! The loops of the bf16 GEMM on `vdpbf16ps` ([`super::bf16`]): `C = alpha *
//! A @ B + beta * C` from operands copied once, whole, into panels, tile by
//! tile, by a microkernel. (The f32 GEMM, and the bf16 one on FMAs, pack
//! block by block instead: [`super::sgemm`].)
//!
//! **Panels.** A (M x K) is cut into panels of `width` rows, B (K x N) into
//! panels of `width` columns. A panel stores, for each *step* along `k` in
//! order, the `width` words of its rows (or columns) side by side:
//!
//! ```text
//! panel[q][s][i]            q: panel, s: step along k, i < width       [panels][steps][width]
//! ```
//!
//! so a microkernel reads both panels front to back. What a word holds is
//! the format's business: one f32 for the f32 GEMM (a step is one `k`), a
//! pair of bf16 for `vdpbf16ps` (a step is two `k`). Indices past the edge
//! of the last panel are zeros.
//!
//! **Loops.** The steps are cut into blocks of `block_steps`, so that a B
//! panel's block stays in cache while every A panel passes over it. A tile's
//! f32 sums are carried from one block to the next exactly (stored and
//! reloaded, no rounding), so the blocking does not change the result.
//! Within a block the tiles of C are independent tasks, split over rayon, in
//! the order that reads the larger packed operand once from memory: one
//! panel of it (in L1) against a group of the other operand's panels (in
//! L2), every panel of it against one group before the next group. Each
//! element of C is summed by one task in one fixed order, so the result does
//! not depend on the number of threads (the split is never over `k`).

use std::sync::Mutex;

use ndarray::ArrayViewMut2;
use rayon::prelude::*;

/// The largest tile of C any microkernel computes (8 x 48).
pub const MAX_TILE: usize = 8 * 48;

/// Bytes of swept panels per group of tiles: a group of one operand's
/// panels stays in L2 (half of Zen 3's 512 KiB; Zen 4 has 1 MiB, recent
/// Xeons 2 MiB) while every panel of the other passes over it.
const L2_BYTES: usize = 256 * 1024;

/// Panels of at least this many words are packed in parallel.
pub const PAR_MIN_WORDS: usize = 1 << 16;

/// Freed packing buffers kept for reuse.
const POOL_BUFFERS: usize = 4;

/// Freed packing buffers, reused by the next packs. A weight of GPT-2's
/// size packs into 77 MB (bf16) or 154 MB (f32); a fresh buffer that large
/// comes from `mmap`, and every step would pay the page faults and the
/// zeroing of its pages again.
static POOL: Mutex<Vec<Vec<u32>>> = Mutex::new(Vec::new());

/// A buffer of `len` words from the pool (the smallest one that fits), or a
/// new one. Its contents are arbitrary: the packers write every word.
pub fn take_buffer(len: usize) -> Vec<u32> {
    let mut pool = POOL.lock().unwrap();
    let best = (0..pool.len())
        .filter(|&i| pool[i].capacity() >= len)
        .min_by_key(|&i| pool[i].capacity());
    match best {
        Some(i) => {
            let mut buffer = pool.swap_remove(i);
            // SAFETY: u32 has no invalid bit patterns, and the capacity
            // suffices; every word is written before it is read.
            unsafe { buffer.set_len(len) };
            buffer
        }
        None => vec![0; len],
    }
}

/// A matrix in panels (see the module docs). Its buffer goes back to a pool
/// when it is dropped.
#[derive(Debug)]
pub struct Packed {
    /// `panels * steps * width` words.
    pub words: Vec<u32>,
    /// Rows (for A) or columns (for B) of the unpacked matrix.
    pub len: usize,
    /// K, the inner dimension.
    pub k: usize,
    /// Steps along `k` per panel: `K` for f32 words, `ceil(K / 2)` for bf16 pairs.
    pub steps: usize,
    /// Rows (A) or columns (B) per panel.
    pub width: usize,
}

impl Drop for Packed {
    fn drop(&mut self) {
        let words = std::mem::take(&mut self.words);
        if words.capacity() >= PAR_MIN_WORDS {
            let mut pool = POOL.lock().unwrap();
            pool.push(words);
            if pool.len() > POOL_BUFFERS {
                // keep the largest ones
                let smallest = (0..pool.len()).min_by_key(|&i| pool[i].capacity()).unwrap();
                pool.swap_remove(smallest);
            }
        }
    }
}

impl Packed {
    /// Number of panels.
    pub fn panels(&self) -> usize {
        self.len.div_ceil(self.width)
    }

    /// The words of panel `q`: `steps * width` of them.
    pub fn panel(&self, q: usize) -> &[u32] {
        let size = self.steps * self.width;
        &self.words[q * size..(q + 1) * size]
    }
}

/// A read-only strided matrix `(index, kk)`: index is a row of A or a column
/// of B, kk the inner dimension.
#[derive(Clone, Copy)]
pub(crate) struct Strided {
    pub(crate) ptr: *const f32,
    pub(crate) index_stride: isize,
    pub(crate) k_stride: isize,
}

// SAFETY: the matrix behind the pointer is only read, by tasks that pack
// disjoint panels, and outlives them (the packers return after they end).
unsafe impl Send for Strided {}
// SAFETY: as for `Send`: shared use only reads.
unsafe impl Sync for Strided {}

impl Strided {
    pub(crate) fn new(ptr: *const f32, index_stride: isize, k_stride: isize) -> Self {
        Strided {
            ptr,
            index_stride,
            k_stride,
        }
    }

    /// The element (index, kk).
    ///
    /// # Safety
    /// (index, kk) must be inside the matrix.
    #[inline(always)]
    pub(crate) unsafe fn at(self, index: usize, kk: usize) -> f32 {
        // SAFETY: (index, kk) is inside the matrix (this function's contract),
        // so its offset is inside the buffer `ptr` points into.
        unsafe {
            *self
                .ptr
                .offset(index as isize * self.index_stride + kk as isize * self.k_stride)
        }
    }

    /// A pointer to the element (index, kk) (for the AVX-512 loops).
    pub(crate) fn ptr(self, index: usize, kk: usize) -> *const f32 {
        self.ptr
            .wrapping_offset(index as isize * self.index_stride + kk as isize * self.k_stride)
    }

    /// `count` values of `k` from `kk0` at `index` (needs `k_stride == 1`).
    ///
    /// # Safety
    /// They must be inside the matrix.
    pub(crate) unsafe fn line<'a>(self, index: usize, kk0: usize, count: usize) -> &'a [f32] {
        debug_assert_eq!(self.k_stride, 1);
        let start = index as isize * self.index_stride + kk0 as isize;
        // SAFETY: the `count` values are inside the matrix (this function's
        // contract) and contiguous (`k_stride == 1`); the matrix is only read.
        unsafe { std::slice::from_raw_parts(self.ptr.offset(start), count) }
    }

    /// `count` indices from `index0` at `kk` (needs `index_stride == 1`).
    ///
    /// # Safety
    /// They must be inside the matrix.
    pub(crate) unsafe fn slice_along_index<'a>(
        self,
        index0: usize,
        kk: usize,
        count: usize,
    ) -> &'a [f32] {
        debug_assert_eq!(self.index_stride, 1);
        // SAFETY: the `count` values are inside the matrix (this function's
        // contract) and contiguous (`index_stride == 1`); the matrix is only read.
        unsafe {
            std::slice::from_raw_parts(
                self.ptr
                    .offset(index0 as isize + kk as isize * self.k_stride),
                count,
            )
        }
    }
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

/// The tiles of C from packed operands: block by block over the steps, tile
/// by tile within a block (the panels of the larger operand in the outer
/// loop); the last block writes `c = alpha * acc + beta * c` (`c` not read
/// when `beta == 0`). `microkernel(a_panel, b_panel, acc)` adds the products
/// of the steps of two panel slices to a tile's sums `acc` (`a.width` rows of
/// `b.width` sums).
#[allow(clippy::too_many_arguments)]
pub fn gemm_packed(
    microkernel: impl Fn(&[u32], &[u32], &mut [f32]) + Sync,
    block_steps: usize,
    alpha: f32,
    a: &Packed,
    b: &Packed,
    beta: f32,
    mut c: ArrayViewMut2<'_, f32>,
    parallel: bool,
) {
    let (m, n) = (a.len, b.len);
    let (mr, nr) = (a.width, b.width);
    assert!(
        mr * nr <= MAX_TILE,
        "gemm_packed: a {mr} x {nr} tile is too large"
    );
    assert_eq!(a.steps, b.steps, "gemm_packed: the operands' steps differ");
    let (a_panels, b_panels) = (a.panels(), b.panels());
    let tiles = a_panels * b_panels;
    let steps = a.steps;
    // The order of the tiles: one panel of the larger operand ("fixed",
    // in L1 while a tile row passes) against a group of the other's panels
    // ("swept", in L2), every fixed panel against one group before the next
    // group. Tile t = (group g, fixed panel f, swept panel g * group + i).
    let a_major = a.words.len() > b.words.len();
    let (fixed_panels, swept_panels, swept_width) = if a_major {
        (a_panels, b_panels, nr)
    } else {
        (b_panels, a_panels, mr)
    };
    let group = (L2_BYTES / (4 * swept_width * steps.min(block_steps))).max(1);
    let panels_of = move |t: usize| {
        let (g, r) = (t / (group * fixed_panels), t % (group * fixed_panels));
        let size = group.min(swept_panels - g * group);
        let (fixed, swept) = (r / size, g * group + r % size);
        if a_major {
            (fixed, swept)
        } else {
            (swept, fixed)
        }
    };
    let [rsc, csc] = [c.strides()[0], c.strides()[1]];
    let out = OutPtr(c.as_mut_ptr());
    // Writes tile `t`'s sums into C: `c = alpha * acc + beta * c`.
    let write = move |t: usize, acc: &[f32], alpha: f32, beta: f32| {
        let (qa, qb) = panels_of(t);
        let rows = mr.min(m - qa * mr);
        let cols = nr.min(n - qb * nr);
        if csc == 1 {
            // rows of C are contiguous: whole-row loops that vectorize
            for i in 0..rows {
                let row = (qa * mr + i) as isize * rsc + (qb * nr) as isize;
                // SAFETY: the row's `cols` elements are inside C, and only this task writes them.
                let dst = unsafe { std::slice::from_raw_parts_mut(out.at(row), cols) };
                let sums = &acc[i * nr..i * nr + cols];
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
                let (row, col) = ((qa * mr + i) as isize, (qb * nr + j) as isize);
                // SAFETY: (row, col) is inside C, and only this task writes it.
                unsafe {
                    let dst = out.at(row * rsc + col * csc);
                    let sum = alpha * acc[i * nr + j];
                    *dst = if beta == 0.0 { sum } else { sum + beta * *dst };
                }
            }
        }
    };
    // `acc += ` tile `t`'s products over the steps `s0..s1`.
    let accumulate = |t: usize, s0: usize, s1: usize, acc: &mut [f32]| {
        let (qa, qb) = panels_of(t);
        let a_panel = &a.panel(qa)[s0 * mr..s1 * mr];
        let b_panel = &b.panel(qb)[s0 * nr..s1 * nr];
        microkernel(a_panel, b_panel, acc);
    };
    if steps <= block_steps {
        // One block: each tile's sums stay in a local array.
        let tile = |acc: &mut Vec<f32>, t: usize| {
            acc.fill(0.0);
            accumulate(t, 0, steps, acc);
            write(t, acc, alpha, beta);
        };
        for_each_tile(tiles, mr * nr, parallel, tile);
        return;
    }
    let blocks = steps.div_ceil(block_steps);
    let block_steps_of =
        move |block: usize| (block * block_steps, ((block + 1) * block_steps).min(steps));
    if beta == 0.0 {
        // Several blocks, C's old values unused: C itself carries each
        // tile's sums from one block to the next (stored as they are), and
        // the last block scales them by alpha.
        let read = move |t: usize, acc: &mut [f32]| {
            let (qa, qb) = panels_of(t);
            let rows = mr.min(m - qa * mr);
            let cols = nr.min(n - qb * nr);
            for i in 0..rows {
                for j in 0..cols {
                    let (row, col) = ((qa * mr + i) as isize, (qb * nr + j) as isize);
                    // SAFETY: (row, col) is inside C, and only this task touches it.
                    acc[i * nr + j] = unsafe { *out.at(row * rsc + col * csc) };
                }
            }
        };
        for block in 0..blocks {
            let (s0, s1) = block_steps_of(block);
            let last = block + 1 == blocks;
            let tile = |acc: &mut Vec<f32>, t: usize| {
                if block > 0 {
                    read(t, acc);
                } else {
                    acc.fill(0.0);
                }
                accumulate(t, s0, s1, acc);
                let scale = if last { alpha } else { 1.0 };
                write(t, acc, scale, 0.0);
            };
            for_each_tile(tiles, mr * nr, parallel, tile);
        }
        return;
    }
    // Several blocks, C's old values needed at the end: the sums of every
    // tile are carried in `sums`.
    let mut sums = vec![0.0f32; tiles * mr * nr];
    for block in 0..blocks {
        let (s0, s1) = block_steps_of(block);
        let last = block + 1 == blocks;
        let tile = |(t, acc): (usize, &mut [f32])| {
            accumulate(t, s0, s1, acc);
            if last {
                write(t, acc, alpha, beta);
            }
        };
        if parallel {
            sums.par_chunks_mut(mr * nr)
                .enumerate()
                .with_min_len(4)
                .for_each(tile);
        } else {
            sums.chunks_mut(mr * nr).enumerate().for_each(tile);
        }
    }
}

/// Runs `tile(acc, t)` for every tile `t`, over rayon when `parallel`, with
/// a scratch tile `acc` of `size` sums per task (allocated once per task,
/// not zeroed per tile: each tile sets it first).
fn for_each_tile(
    tiles: usize,
    size: usize,
    parallel: bool,
    tile: impl Fn(&mut Vec<f32>, usize) + Sync,
) {
    if parallel {
        (0..tiles)
            .into_par_iter()
            .with_min_len(4)
            .for_each_init(|| vec![0.0f32; size], |acc, t| tile(acc, t));
    } else {
        let mut acc = vec![0.0f32; size];
        (0..tiles).for_each(|t| tile(&mut acc, t));
    }
}
