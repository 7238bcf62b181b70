//! Hand-written loops on plain slices, one file per family.
//!
//! Kernels know nothing about the tape: they take `&[T]` in and `&mut [T]`
//! out (llm.c's `inp`/`out`/`dinp`/`dout` naming), so each can be tested and
//! benchmarked on its own. The `ops` modules wire them to [`crate::Var`]s.
//!
//! Parallel loops split work on fixed boundaries that do not depend on the
//! number of threads, so results are bitwise the same for any pool size.
//!
//! | module | loops | used by |
//! |---|---|---|
//! | [`simd`] | lane reductions (`sum_lanes`, `max_lanes`, ...) and the f32 `exp`/`tanh` polynomials behind [`crate::Float::exp_fast`] / [`crate::Float::tanh_fast`] | every kernel below |
//! | [`concat`](mod@concat) | `concat_rows`, `split_rows`: the inputs' rows side by side, and back | `concat` |
//! | [`elementwise`] | `map`, `zip_map`, `add_assign`, `sum` over flat slices | unary and binary ops, `sum_all`, gradient accumulation |
//! | [`gemm`] | strided `C = alpha A @ B + beta C`: [`sgemm`] for f32, matrixmultiply's dgemm for f64, over rayon | `matmul`, `linear`, attention |
//! | [`sgemm`] | the f32 GEMM: blocks packed for the caches, FMA microkernels (AVX-512, AVX2 or portable) | [`gemm`]; [`bf16`] on CPUs without AVX512_BF16 |
//! | [`bf16`] | the same GEMM with bf16 inputs and f32 sums (`vdpbf16ps`, or [`sgemm`] on rounded inputs) | [`gemm::gemm_with`] in [`crate::Precision::Bf16`] |
//! | [`packed`] | the `vdpbf16ps` GEMM's loops: whole operands in panels, blocks over `k`, tiles over threads | [`bf16`] |
//! | [`softmax`] | `softmax_forward/backward` along any axis | `softmax`, `log_softmax` |
//! | [`layernorm`] | `layernorm_forward/backward` | `layer_norm` |
//! | [`rmsnorm`] | `rmsnorm_forward/backward` | `rms_norm` |
//! | [`rope`] | `rope_forward/backward`: rotary embeddings, rotate-half layout | `rope` |
//! | [`swiglu`] | `swiglu_forward/backward`, branch-free `silu` | `swiglu`, `silu` |
//! | [`attention`] | causal attention (multi-head or grouped-query heads) three ways, to read in order: [`attention::plain`] (scalar loops, the definition), [`attention::blocked`] (GEMMs over row blocks, optionally a key gap per sequence), [`attention::cached`] (generation, forward only) | `plain_causal_attention`; `causal_attention`, `segment_attention`; `transformer::KvCache` |
//! | [`embedding`] | `embedding_forward/backward` (gather, scatter-add) | `embedding` |
//! | [`logprobs`] | `logprobs_forward/backward`: log-softmax and the target's gather, one row at a time; [`IGNORE_INDEX`](logprobs::IGNORE_INDEX) | `sequence_logprobs`, `cross_entropy` |
//! | [`lm_head_logprobs`] | the same with the LM head (`h @ wte^T`) fused in, one vocabulary chunk at a time | `lm_head_logprobs` |

pub mod attention;
pub mod bf16;
pub mod concat;
pub mod elementwise;
pub mod embedding;
pub mod gemm;
pub mod layernorm;
pub mod lm_head_logprobs;
pub mod logprobs;
pub mod packed;
pub mod rmsnorm;
pub mod rope;
pub mod sgemm;
pub mod simd;
pub mod softmax;
pub mod swiglu;

/// Below this many elements a loop runs on the calling thread: spawning
/// rayon tasks costs more than the work.
pub const PAR_MIN_ELEMENTS: usize = 1 << 15;

/// Rows per task of the normalization kernels' backward passes: the rows are
/// cut into blocks of this many, whatever the number of threads.
pub const ROWS_PER_TASK: usize = 32;

/// Runs `block(first_row, rows)` on each block of [`ROWS_PER_TASK`] rows of
/// `data` (rows of `c` values; split over rayon from [`PAR_MIN_ELEMENTS`]
/// values on) and returns what each block gave, in block order: a sum of
/// them taken in that order is the same for any number of threads.
pub(crate) fn map_row_blocks<T: Send, P: Send>(
    data: &mut [T],
    c: usize,
    block: impl Fn(usize, &mut [T]) -> P + Sync,
) -> Vec<P> {
    use rayon::prelude::*;
    let block_len = ROWS_PER_TASK * c;
    if data.len() < PAR_MIN_ELEMENTS {
        data.chunks_mut(block_len.max(1))
            .enumerate()
            .map(|(i, blk)| block(i * ROWS_PER_TASK, blk))
            .collect()
    } else {
        data.par_chunks_mut(block_len)
            .enumerate()
            .map(|(i, blk)| block(i * ROWS_PER_TASK, blk))
            .collect()
    }
}

/// Fixed chunk length of parallel elementwise loops.
pub const PAR_CHUNK: usize = 1 << 14;
