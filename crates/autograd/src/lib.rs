//! # autograd
//!
//! Reverse-mode, tape-based automatic differentiation over n-dimensional
//! tensors, for training small language models on CPUs.
//!
//! ```
//! use autograd::ndarray::array;
//! use autograd::Tape;
//!
//! let tape = Tape::<f64>::new();
//! let x = tape.leaf(array![1.0, 2.0, 3.0].into_dyn());
//! let y = tape.tanh(&x);                 // y_i = tanh(x_i)
//! let loss = tape.sum_all(&tape.mul(&y, &y)); // sum_i y_i^2
//! let grads = tape.backward(&loss);
//! let dx = grads.get(&x).unwrap();       // 2 y_i (1 - y_i^2)
//! assert!((dx[0] - 2.0 * 1f64.tanh() * (1.0 - 1f64.tanh().powi(2))).abs() < 1e-12);
//! ```
//!
//! The pieces, in reading order:
//! - [`tape`]: the tape, [`Var`], the gradient store and the backward sweep;
//! - [`ops`]: every differentiable op, forward and backward side by side;
//! - [`kernels`]: the loops on plain slices that the ops call;
//! - [`bf16_matrix`]: frozen weights stored as bf16, for the ops that read them;
//! - [`optim`]: SGD, AdamW, gradient clipping, learning-rate schedules;
//! - [`gradcheck`]: finite-difference checking of any op or model;
//! - [`testing`]: a skip that shows, for tests that need certain hardware;
//! - [`cpu`]: what the CPU is and which instruction sets the kernels can use.
//!
//! Tensors are [ndarray](https://docs.rs/ndarray/0.16) 0.16 arrays
//! ([`Tensor<T>`](Tensor) = `ndarray::ArrayD<T>`). The crate re-exports the
//! ndarray it is built with as [`autograd::ndarray`](ndarray), so callers
//! build tensors with the matching version (`use autograd::ndarray::array;`)
//! without a dependency of their own that could drift to another version.

pub mod bf16_matrix;
pub mod cpu;
pub mod float;
pub mod gradcheck;
pub mod kernels;
pub mod ops;
pub mod optim;
pub mod precision;
pub mod tape;
pub mod testing;

pub use bf16_matrix::Bf16Matrix;
pub use float::Float;
pub use kernels::logprobs::IGNORE_INDEX;
pub use ops::logprobs::LmHeadLogprobs;
pub use ops::rope::{Llama3RopeScaling, RopeFrequencies};
pub use precision::Precision;
pub use tape::{contiguous, Gradients, Tape, Tensor, Var};

/// The ndarray crate (0.16) that [`Tensor`] is built on.
pub use ndarray;

/// The stack of each worker thread of the global pool: a command runs on
/// one ([`run_in_pool`]), so it gets as much as a process's main thread.
const WORKER_STACK_BYTES: usize = 8 << 20;

/// Sets the number of worker threads of the global rayon pool (once per
/// process, before any parallel work; 0: rayon's default, one per core or
/// `RAYON_NUM_THREADS`). Returns an error message if the pool was already
/// built.
pub fn set_num_threads(threads: usize) -> Result<(), String> {
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .stack_size(WORKER_STACK_BYTES)
        .build_global()
        .map_err(|e| format!("cannot set the thread pool to {threads} threads: {e}"))
}

/// Runs `work` on a worker thread of the global pool and returns its result.
///
/// Every parallel kernel called from a thread outside the pool hands its
/// tasks to the workers and sleeps until they are done: two context
/// switches per kernel, thousands of kernels a step (measured: 10-20% of a
/// `small` DPO step on one thread). Called from a worker, a kernel's tasks
/// start on that worker at once, and the others steal what they can.
///
/// ```
/// let worker = autograd::run_in_pool(rayon::current_thread_index);
/// assert!(worker.is_some());
/// ```
pub fn run_in_pool<R: Send>(work: impl FnOnce() -> R + Send) -> R {
    rayon::scope(|_| work())
}

/// The number of worker threads of the current pool.
pub fn num_threads() -> usize {
    rayon::current_num_threads()
}

/// Keeps freed activation buffers in the process for reuse.
///
/// Every training step allocates and frees the same activation buffers. By
/// default glibc serves each buffer above 128 KiB from fresh `mmap`ed pages
/// and unmaps it on free, so every step pays a page fault and a page zeroing
/// per 4 KiB of activations (measured: ~8% of a `small` DPO step). Raising the
/// mmap threshold to its maximum (32 MiB) and never trimming the heap keeps
/// freed buffers for the next step.
///
/// Buffers above 32 MiB would still be `mmap`ed at that threshold, and a
/// GPT-2 step has several (its logits, 4 x 64 x 50257 f32 = 51 MB; the `wte`
/// gradient, 154 MB; the packed bf16 `wte`, 77 MB), whose page faults cost
/// 150 ms of a 920 ms bf16 GPT-2 SFT step on one thread. So `mmap` is turned
/// off altogether (`M_MMAP_MAX = 0`): every buffer comes from the heap, and a
/// freed one is reused by the next step, already faulted in.
///
/// The rayon workers allocate from their own arenas, heaps of at most 64 MiB
/// that glibc unmaps, or shrinks with `MADV_DONTNEED`, as soon as they are
/// free, whatever the trim threshold; only the top pad is kept. A pad of
/// 64 MiB (`M_TOP_PAD`) keeps them all (measured: 70,000 page faults per
/// GPT-2 step without it, none with it). The cost: the process keeps its peak
/// heap until it exits, which a trainer whose every step reaches the same
/// peak would reach anyway.
///
/// Call it once, first thing in `main`. Does nothing outside Linux/glibc.
pub fn keep_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator tuning parameters.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
        libc::mallopt(libc::M_MMAP_MAX, 0);
        libc::mallopt(libc::M_TOP_PAD, 64 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, i32::MAX);
    }
}

/// Hands the free memory of the heap back to the operating system (glibc's
/// `malloc_trim`), once: after [`keep_freed_memory`] the allocator never
/// does so by itself. For the one-off drops in what a process holds, such
/// as a model's f32 base replaced by bf16 matrices: without it the freed
/// gigabytes stay resident as holes between the new matrices, holes too
/// small for the activations that come next. Does nothing outside
/// Linux/glibc.
pub fn release_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only returns free pages of the heap to the system.
    unsafe {
        libc::malloc_trim(0);
    }
}
