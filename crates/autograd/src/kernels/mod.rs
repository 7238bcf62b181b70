//! Hand-written loops on plain slices, one file per family.
//!
//! Kernels know nothing about the tape: they take `&[T]` in and `&mut [T]`
//! out (llm.c's `inp`/`out`/`dinp`/`dout` naming), so each can be tested and
//! benchmarked on its own. The `ops` modules wire them to [`crate::Var`]s.
//!
//! Parallel loops split work on fixed boundaries that do not depend on the
//! number of threads, so results are bitwise the same for any pool size.

pub mod attention;
pub mod elementwise;
pub mod gemm;
pub mod layernorm;
pub mod simd;
pub mod softmax;

/// Below this many elements a loop runs on the calling thread: spawning
/// rayon tasks costs more than the work.
pub const PAR_MIN_ELEMENTS: usize = 1 << 15;

/// Fixed chunk length of parallel elementwise loops.
pub const PAR_CHUNK: usize = 1 << 14;
