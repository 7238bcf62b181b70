//! The loops of the f32 GEMM, blocked for the caches as BLIS and GotoBLAS
//! block them (Goto and van de Geijn, "Anatomy of high-performance matrix
//! multiplication", 2008):
//!
//! ```text
//! for each block of NC columns of B:                          B block in L3
//!   for each block of KC steps along k:
//!     pack B[k block, column block] into panels of NR columns    (shared)
//!     for each block of MC rows of A, one task each:            A block in L2
//!       pack A[row block, k block] into panels of MR rows        (the task's)
//!       for each B panel:                                  B panel (KC x NR) in L1
//!         for each A panel:
//!           tile of C (MR x NR) += A panel . B panel       microkernel
//! ```
//!
//! Each block of an operand is packed just before it is used, while the
//! values it was copied from and the copy itself are still in cache, and
//! the B panel in L1 meets every A panel of the block, streamed from L2.
//!
//! **When A is small** (its packed block of k fits in three quarters of
//! L2: a linear layer's input at a step's 256-512 rows) and B has 8 panels
//! for every thread, A is packed whole, once per block of k, and the tasks
//! split the columns instead:
//!
//! ```text
//! for each block of KC steps along k:
//!   pack A[all rows, k block] into panels of MR rows             (shared)
//!   for each share of the columns, one task each:
//!     for each block of B of a quarter of L2:              B block in L2
//!       pack B[k block, column block] into panels of NR      (the task's)
//!       for each B panel: for each A panel: microkernel
//! ```
//!
//! Goto's loops pack a B block too large for L2 (at NC = 3072 columns) and
//! stream it back from L3 for every row block; here each small B block is
//! packed into L2 and used there by every row, and a task waits for no
//! other after A is packed. On the Xeon of docs/bf16.md (L2 2 MiB), over
//! 15 shapes of GPT-2 and SmolLM2 steps (12 of them with an A that fits),
//! the geometric mean rose 5-9% on one thread and 8-17% on two (three
//! rounds alternating the builds).
//!
//! **One chain per element.** The tile's sums are carried from one block
//! of `k` to the next exactly: stored as f32 into C (or into a scratch
//! matrix when C's old values are still needed, `beta != 0`) and loaded
//! back as the next block's starting values. So each element of C is the
//! FMA chain of the module's definition whatever KC, MC, NC or the number
//! of threads, and the last block writes `alpha * sum + beta * c`.

use std::cell::{Cell, RefCell};

use ndarray::{ArrayView2, ArrayViewMut2};
use rayon::prelude::*;

use super::pack::{pack_block, Rounding, PACK_SLACK};
use super::{Microkernel, Update, MAX_TILE};
use crate::kernels::packed::Strided;

/// Steps of `k` per block (at most; the blocks of a GEMM are made equal).
/// Every block but the first reads the sums of C back and every block
/// writes them, so few blocks matter where C is large (an LM head's
/// logits); the B panel (48 KiB for AVX2's 16 columns, 144 KiB for
/// AVX-512's 48), larger than L1, streams from L2 with A's panels. At
/// GPT-2's and SmolLM2's shapes (geometric means over 15 shapes, one core,
/// best of 6 alternating rounds on a noisy machine):
///
/// | steps | Zen 3, AVX2 (16 columns) | Xeon family 6 model 207, AVX-512 (48) |
/// |---|---|---|
/// | 128 | | 142.8 GFLOP/s |
/// | 192-384 | 70-79 | 150.2 (256), 153.1 (384) |
/// | 576-768 | 80-87 | 154.3 (768) |
///
/// The LM head's GEMMs gain most (16% at 768 steps against 256 on the
/// Xeon, one block of `k` for `K = 576` or `768`).
pub const BLOCK_STEPS: usize = 768;

/// Bytes of A per block (at most): a block stays in a core's L2 (512 KiB on
/// Zen 3, 1 MiB on Zen 4) with room for the B panels passing through.
const A_BLOCK_BYTES: usize = 192 * 1024;

/// Columns of B per block: 256 x 3072 floats is 3 MiB, in L3.
const BLOCK_COLUMNS: usize = 3072;

/// The whole-A loops run only where B has at least this many panels for
/// every thread. Each task streams all of A for every B panel it has, half
/// of A packed by the other core at two threads; with few panels each,
/// Goto's loops, which give each thread its own rows, were faster. Forced
/// one way then the other (best of 15 calls, one round; Xeon family 6
/// model 207, AVX-512, 48 columns a panel), in GFLOP/s, Goto / whole A:
///
/// | M x K x N (B panels) | 1 thread | 2 threads |
/// |---|---|---|
/// | 2048 x 128 x 384 (8) | 178 / 178 | 284 / 250 |
/// | 2048 x 128 x 512 (11) | 180 / 175 | 335 / 260 |
/// | 512 x 2048 x 128 (3) | 86 / 92 | 177 / 149 |
/// | 128 x 2048 x 512 (11) | 155 / 157 | 220 / 206 |
/// | 256 x 3072 x 768 (16) | 157 / 161 | 263 / 302 |
/// | 256 x 4096 x 1024 (22) | 130 / 150 | 254 / 294 |
/// | 256 x 768 x 2304 (48) | 156 / 178 | 255 / 348 |
/// | 256 x 768 x 50257 (1047) | 129 / 154 | 229 / 283 |
///
/// (One shape went against the rule: 768 x 256 x 3072, 64 panels, 176 /
/// 176 and 301 / 277.)
const WHOLE_A_PANELS_PER_THREAD: usize = 8;

/// B blocks of at least this many floats are packed in parallel.
const PAR_MIN_PACK: usize = 1 << 15;

thread_local! {
    /// Each thread's buffer for its tasks' blocks: an A block, or a B block
    /// when A is packed whole (taken out while in use, so a GEMM nested in
    /// another's task on the same thread gets its own).
    static TASK_BLOCK: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
    /// The calling thread's buffer for the shared block: B's, or all of A.
    static SHARED_BLOCK: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// The two loop nests of the module docs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Loops {
    /// Goto's: B packed in blocks of NC columns, the tasks split the rows.
    Goto,
    /// A packed whole, the tasks split the columns into L2-sized B blocks.
    WholeA,
}

thread_local! {
    /// The loops this thread's GEMMs run, where forced ([`with_loops`]).
    static FORCED_LOOPS: Cell<Option<Loops>> = const { Cell::new(None) };
}

/// Runs `f` with every GEMM it starts on this thread running `loops`,
/// whatever A's size: both nests give the same bits, and tests reach each
/// with small matrices.
pub fn with_loops<R>(loops: Loops, f: impl FnOnce() -> R) -> R {
    let before = FORCED_LOOPS.with(|forced| forced.replace(Some(loops)));
    let result = f();
    FORCED_LOOPS.with(|forced| forced.set(before));
    result
}

/// Runs `f` on this thread's `buffer`, at least `len` floats long, then
/// keeps it for the next call.
fn with_buffer<R>(
    buffer: &'static std::thread::LocalKey<RefCell<Vec<f32>>>,
    len: usize,
    f: impl FnOnce(&mut [f32]) -> R,
) -> R {
    let mut words = buffer.with(|b| b.take());
    if words.len() < len {
        words.resize(len, 0.0);
    }
    let result = f(&mut words[..len]);
    buffer.with(|b| *b.borrow_mut() = words);
    result
}

/// A raw pointer to C (or to the scratch sums), shared by the tasks, which
/// write disjoint tiles.
#[derive(Clone, Copy)]
struct Out {
    ptr: *mut f32,
    row_stride: isize,
    col_stride: isize,
}
// SAFETY: every task writes only the elements of its own tiles, and the
// matrix outlives the tasks (the GEMM returns after they end).
unsafe impl Send for Out {}
// SAFETY: as for `Send`: no two tasks touch the same element.
unsafe impl Sync for Out {}

impl Out {
    /// A pointer to element (i, j).
    fn at(self, i: usize, j: usize) -> *mut f32 {
        self.ptr
            .wrapping_offset(i as isize * self.row_stride + j as isize * self.col_stride)
    }

    /// Copies row `i`'s elements from column `j` into `dst`.
    ///
    /// # Safety
    /// They must be inside the matrix, and no other thread may write them.
    unsafe fn read_row(self, i: usize, j: usize, dst: &mut [f32]) {
        if self.col_stride == 1 {
            // SAFETY: contiguous and inside the matrix (the contract).
            dst.copy_from_slice(unsafe { std::slice::from_raw_parts(self.at(i, j), dst.len()) });
        } else {
            for (col, x) in dst.iter_mut().enumerate() {
                // SAFETY: inside the matrix (the contract).
                *x = unsafe { *self.at(i, j + col) };
            }
        }
    }

    /// Sets row `i`'s elements from column `j` to `f(old value, sum)` for
    /// the `sums` in order.
    ///
    /// # Safety
    /// They must be inside the matrix, and no other thread may touch them.
    unsafe fn write_row(self, i: usize, j: usize, sums: &[f32], f: impl Fn(f32, f32) -> f32) {
        if self.col_stride == 1 {
            // SAFETY: contiguous and inside the matrix, this thread's alone.
            let row = unsafe { std::slice::from_raw_parts_mut(self.at(i, j), sums.len()) };
            for (c, &sum) in row.iter_mut().zip(sums) {
                *c = f(*c, sum);
            }
        } else {
            for (col, &sum) in sums.iter().enumerate() {
                // SAFETY: inside the matrix, this thread's alone.
                unsafe { *self.at(i, j + col) = f(*self.at(i, j + col), sum) };
            }
        }
    }
}

/// `c = alpha * a @ b + beta * c` on `kernel`, the operands rounded as
/// asked; tasks over rayon when `parallel`. Shapes are checked by the caller.
#[allow(clippy::too_many_arguments)]
pub(super) fn gemm_blocked(
    kernel: Microkernel,
    rounding: Rounding,
    alpha: f32,
    a: ArrayView2<'_, f32>,
    b: ArrayView2<'_, f32>,
    beta: f32,
    mut c: ArrayViewMut2<'_, f32>,
    parallel: bool,
) {
    let (m, k) = a.dim();
    let n = b.ncols();
    let (mr, nr) = kernel.tile();
    let steps = rounding.steps(k);
    let a = Strided::new(a.as_ptr(), a.strides()[0], a.strides()[1]);
    let b = Strided::new(b.as_ptr(), b.strides()[1], b.strides()[0]);
    let threads = if parallel {
        rayon::current_num_threads()
    } else {
        1
    };

    // Equal blocks along k, a multiple of 8 steps (the packing's transposes).
    let k_blocks = steps.div_ceil(BLOCK_STEPS).max(1);
    let kc = steps.div_ceil(k_blocks).div_ceil(8) * 8;
    // Row blocks of at most A_BLOCK_BYTES, as many as a multiple of the
    // thread count.
    let a_panels = m.div_ceil(mr);
    let panels_per_a_block = (A_BLOCK_BYTES / (4 * kc * mr)).max(1);
    let row_blocks = a_panels
        .div_ceil(panels_per_a_block)
        .div_ceil(threads)
        .saturating_mul(threads)
        .min(a_panels);
    // Block r holds panels first_panel(r) .. first_panel(r + 1): sizes
    // differ by one panel at most.
    let first_panel = move |r: usize| r * a_panels / row_blocks;
    // Too few row blocks for the threads: the B panels are split too.
    let column_splits = threads.div_ceil(row_blocks);

    let out = Out {
        ptr: c.as_mut_ptr(),
        row_stride: c.strides()[0],
        col_stride: c.strides()[1],
    };
    // Where the sums travel between blocks of k: C itself, unless C's old
    // values are needed at the end.
    let mut scratch = Vec::new();
    let carrier = if beta == 0.0 || steps <= kc {
        out
    } else {
        scratch.resize(m * n, 0.0f32);
        Out {
            ptr: scratch.as_mut_ptr(),
            row_stride: n as isize,
            col_stride: 1,
        }
    };

    let l2 = crate::cpu::l2_cache_bytes();
    let b_panels = n.div_ceil(nr);
    // A small, and enough B panels for every thread (the tasks split the columns).
    let whole_a =
        4 * a_panels * mr * kc <= l2 / 4 * 3 && b_panels >= WHOLE_A_PANELS_PER_THREAD * threads;
    let loops =
        FORCED_LOOPS
            .with(Cell::get)
            .unwrap_or(if whole_a { Loops::WholeA } else { Loops::Goto });
    if loops == Loops::WholeA {
        // A is small: packed whole, the tasks split the columns (module docs).
        let block_panels = (l2 / 4 / (4 * kc * nr)).max(1);
        let tasks = threads.min(b_panels);
        // A is packed in parts, one per thread, each followed by its slack
        // (a 6-row panel's transposes store 2 floats past its end).
        let part_panels = a_panels.div_ceil(threads);
        let part_size = |steps: usize| part_panels * steps * mr + PACK_SLACK;
        let parts = a_panels.div_ceil(part_panels);
        with_buffer(&SHARED_BLOCK, parts * part_size(kc), |a_whole| {
            for s0 in (0..steps).step_by(kc) {
                let this_block = kc.min(steps - s0);
                let packed_a = &mut a_whole[..parts * part_size(this_block)];
                let pack_part = |part: usize, dst: &mut [f32]| {
                    let i0 = part * part_panels * mr;
                    let rows = (part_panels * mr).min(m - i0);
                    // SAFETY: rows i0 .. i0 + rows and steps s0 .. s0 +
                    // this_block lie inside A; `dst` holds their panels
                    // and the slack.
                    unsafe { pack_block(a, i0, rows, k, s0, this_block, mr, rounding, dst) };
                };
                if parallel && parts > 1 {
                    packed_a
                        .par_chunks_mut(part_size(this_block))
                        .enumerate()
                        .for_each(|(part, dst)| pack_part(part, dst));
                } else {
                    pack_part(0, packed_a);
                }
                let packed_a = &*packed_a;
                let a_panel = |p: usize| {
                    let at =
                        p / part_panels * part_size(this_block) + p % part_panels * this_block * mr;
                    &packed_a[at..at + this_block * mr]
                };
                let pass = BlockPass::new(
                    kernel, m, n, carrier, out, s0, this_block, steps, alpha, beta,
                );
                let task = |t: usize| {
                    let (q0, q1) = (t * b_panels / tasks, (t + 1) * b_panels / tasks);
                    let panel_size = this_block * nr;
                    with_buffer(&TASK_BLOCK, block_panels * panel_size, |b_block| {
                        // a tile's sums, where they cannot go to C directly
                        let mut sums = [0.0f32; MAX_TILE];
                        for c0 in (q0..q1).step_by(block_panels) {
                            let c1 = (c0 + block_panels).min(q1);
                            let j0 = c0 * nr;
                            let columns = (c1 * nr).min(n) - j0;
                            // SAFETY: columns j0 .. j0 + columns and steps
                            // s0 .. s0 + this_block lie inside B, and NR is
                            // a multiple of 8 (no slack needed).
                            unsafe {
                                pack_block(b, j0, columns, k, s0, this_block, nr, rounding, b_block)
                            };
                            for q in c0..c1 {
                                let b_panel = &b_block[(q - c0) * panel_size..][..panel_size];
                                let j = q * nr;
                                for p in 0..a_panels {
                                    // SAFETY: this task alone writes the
                                    // columns of panels q0 .. q1.
                                    unsafe {
                                        pass.tile(
                                            p * mr,
                                            j,
                                            this_block,
                                            a_panel(p),
                                            b_panel,
                                            &mut sums,
                                        )
                                    };
                                }
                            }
                        }
                    });
                };
                if parallel && tasks > 1 {
                    (0..tasks).into_par_iter().for_each(task);
                } else {
                    (0..tasks).for_each(task);
                }
            }
        });
        return;
    }

    with_buffer(
        &SHARED_BLOCK,
        BLOCK_COLUMNS.min(n.div_ceil(nr) * nr) * kc + PACK_SLACK,
        |b_block| {
            for j0 in (0..n).step_by(BLOCK_COLUMNS) {
                let columns = BLOCK_COLUMNS.min(n - j0);
                let b_panels = columns.div_ceil(nr);
                for s0 in (0..steps).step_by(kc) {
                    let this_block = kc.min(steps - s0);
                    let panel_size = this_block * nr;
                    // Groups of panels, one per thread: a row-major B is
                    // read along whole rows of a group (`pack_block`).
                    let group = if parallel && b_panels * panel_size >= PAR_MIN_PACK {
                        b_panels.div_ceil(threads)
                    } else {
                        b_panels
                    };
                    let pack_group = |g: usize, dst: &mut [f32]| {
                        let first = g * group * nr;
                        let count = (group * nr).min(columns - first);
                        // SAFETY: the panels lie inside B (columns j0 ..
                        // j0 + columns, steps s0 .. s0 + this_block), and
                        // NR is a multiple of 8 (no slack needed).
                        unsafe {
                            pack_block(b, j0 + first, count, k, s0, this_block, nr, rounding, dst)
                        }
                    };
                    let packed_b = &mut b_block[..b_panels * panel_size];
                    if group < b_panels {
                        packed_b
                            .par_chunks_mut(group * panel_size)
                            .enumerate()
                            .for_each(|(g, dst)| pack_group(g, dst));
                    } else {
                        pack_group(0, packed_b);
                    }
                    let packed_b = &*packed_b;
                    let pass = BlockPass::new(
                        kernel, m, n, carrier, out, s0, this_block, steps, alpha, beta,
                    );
                    let task = |t: usize| {
                        let (row_block, split) = (t / column_splits, t % column_splits);
                        let (p0, p1) = (first_panel(row_block), first_panel(row_block + 1));
                        let i0 = p0 * mr;
                        let rows = (p1 * mr).min(m) - i0;
                        let per_split = b_panels.div_ceil(column_splits);
                        let (q0, q1) = (split * per_split, ((split + 1) * per_split).min(b_panels));
                        with_buffer(
                            &TASK_BLOCK,
                            (p1 - p0) * this_block * mr + PACK_SLACK,
                            |a_block| {
                                // SAFETY: rows i0 .. i0 + rows and steps s0 ..
                                // s0 + this_block lie inside A.
                                unsafe {
                                    pack_block(
                                        a, i0, rows, k, s0, this_block, mr, rounding, a_block,
                                    )
                                };
                                // a tile's sums, where they cannot go to C directly
                                let mut sums = [0.0f32; MAX_TILE];
                                for q in q0..q1 {
                                    let b_panel = &packed_b[q * panel_size..(q + 1) * panel_size];
                                    let j = j0 + q * nr;
                                    for p in 0..p1 - p0 {
                                        let a_panel = &a_block
                                            [p * this_block * mr..(p + 1) * this_block * mr];
                                        // SAFETY: this task alone writes this tile.
                                        unsafe {
                                            pass.tile(
                                                i0 + p * mr,
                                                j,
                                                this_block,
                                                a_panel,
                                                b_panel,
                                                &mut sums,
                                            )
                                        };
                                    }
                                }
                            },
                        );
                    };
                    let tasks = row_blocks * column_splits;
                    if parallel && tasks > 1 {
                        (0..tasks).into_par_iter().for_each(task);
                    } else {
                        (0..tasks).for_each(task);
                    }
                }
            }
        },
    );
}

/// What every tile of one block of `k` is computed with.
#[derive(Clone, Copy)]
struct BlockPass {
    kernel: Microkernel,
    /// C's shape: a tile at its edge is cut to it.
    m: usize,
    n: usize,
    /// Where the sums travel between blocks of k, and C.
    carrier: Out,
    out: Out,
    /// Whether the sums start from the carrier's (not the first block).
    load: bool,
    /// Whether this block writes `alpha * sum + beta * c` (the last block,
    /// unless that is the sum as it is).
    scale: bool,
    alpha: f32,
    beta: f32,
}

impl BlockPass {
    /// The pass of the block of `this_block` steps from `s0`, of `steps`.
    #[allow(clippy::too_many_arguments)]
    fn new(
        kernel: Microkernel,
        m: usize,
        n: usize,
        carrier: Out,
        out: Out,
        s0: usize,
        this_block: usize,
        steps: usize,
        alpha: f32,
        beta: f32,
    ) -> BlockPass {
        let last = s0 + this_block == steps;
        BlockPass {
            kernel,
            m,
            n,
            carrier,
            out,
            load: s0 > 0,
            scale: last && (alpha != 1.0 || beta != 0.0),
            alpha,
            beta,
        }
    }

    /// The tile at rows `i ..`, columns `j ..` gets `steps` steps of
    /// `a_panel . b_panel`; `sums` is scratch for one tile.
    ///
    /// # Safety
    /// No other thread may touch the tile during the call.
    unsafe fn tile(
        self,
        i: usize,
        j: usize,
        steps: usize,
        a_panel: &[f32],
        b_panel: &[f32],
        sums: &mut [f32],
    ) {
        let (mr, nr) = self.kernel.tile();
        let tile = Tile {
            i,
            j,
            rows: mr.min(self.m - i),
            cols: nr.min(self.n - j),
        };
        // SAFETY: the tile lies inside C (cut to its edge) and is the
        // caller's alone (the contract).
        unsafe { tile.compute(self, steps, a_panel, b_panel, sums) }
    }
}

/// One tile of C: rows `i ..`, columns `j ..`; `rows x cols` of it are
/// inside C (at the edges, fewer than the microkernel's).
struct Tile {
    i: usize,
    j: usize,
    rows: usize,
    cols: usize,
}

impl Tile {
    /// Adds one block of `k` to the tile's sums in the pass's carrier
    /// (starting from zero when not `load`); when `scale`, writes `alpha *
    /// sum + beta * c` into `out` instead of the sums. `sums` is scratch for
    /// one tile.
    ///
    /// # Safety
    /// The tile must be inside C and the carrier, and no other thread may
    /// touch it during the call.
    unsafe fn compute(
        &self,
        pass: BlockPass,
        steps: usize,
        a_panel: &[f32],
        b_panel: &[f32],
        sums: &mut [f32],
    ) {
        let BlockPass {
            kernel,
            carrier,
            out,
            load,
            scale,
            alpha,
            beta,
            ..
        } = pass;
        let (mr, nr) = kernel.tile();
        let whole = self.rows == mr && self.cols == nr;
        let (a, b) = (a_panel.as_ptr(), b_panel.as_ptr());
        if whole && !scale && carrier.col_stride == 1 {
            let update = if load { Update::Continue } else { Update::Set };
            let ldc = carrier.row_stride as usize;
            // SAFETY: a whole tile with contiguous rows, this task's alone.
            unsafe { kernel.run(steps, a, b, carrier.at(self.i, self.j), ldc, update) };
            return;
        }
        if whole && !load && alpha == 1.0 && beta == 1.0 && out.col_stride == 1 {
            // `C += A @ B` in one block of k (a linear layer's bias in C)
            let ldc = out.row_stride as usize;
            // SAFETY: as above.
            unsafe { kernel.run(steps, a, b, out.at(self.i, self.j), ldc, Update::Add) };
            return;
        }
        // An edge tile, strided columns, or the last block's scaling: the
        // sums go through a local tile, a row at a time (whole-row loops
        // that vectorize where the columns are contiguous).
        let (i, j, cols) = (self.i, self.j, self.cols);
        for r in 0..self.rows {
            let row = &mut sums[r * nr..r * nr + cols];
            if load {
                // SAFETY: the tile is inside the carrier and this task's alone.
                unsafe { carrier.read_row(i + r, j, row) };
            }
        }
        let update = if load { Update::Continue } else { Update::Set };
        // SAFETY: `sums` holds a whole tile, rows `nr` apart.
        unsafe { kernel.run(steps, a, b, sums.as_mut_ptr(), nr, update) };
        for r in 0..self.rows {
            let row = &sums[r * nr..r * nr + cols];
            // SAFETY: the tile is inside C and the carrier, this task's alone.
            unsafe {
                if !scale {
                    carrier.write_row(i + r, j, row, |_, sum| sum);
                } else if beta == 0.0 {
                    out.write_row(i + r, j, row, |_, sum| alpha * sum);
                } else {
                    out.write_row(i + r, j, row, |c, sum| alpha * sum + beta * c);
                }
            }
        }
    }
}
