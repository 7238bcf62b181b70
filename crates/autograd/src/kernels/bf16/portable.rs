//! The bf16 microkernel in plain Rust: what `vdpbf16ps` computes, one lane
//! at a time, so that every CPU gets the same bits.
//!
//! Intel's pseudo-code for `vdpbf16ps srcdest, src1, src2`, per f32 lane `i`:
//!
//! ```text
//! srcdest.fp32[i] += make_fp32(src1.bf16[2i+1]) * make_fp32(src2.bf16[2i+1])
//! srcdest.fp32[i] += make_fp32(src1.bf16[2i+0]) * make_fp32(src2.bf16[2i+0])
//! // each line: an FP32 FMA, round to nearest even, input denormals as zero,
//! // output denormals flushed to zero
//! ```
//!
//! The high (odd `k`) pair first, then the low one. The product of two bf16
//! values has at most 16 significant bits, so it is exact in f32 (unless it
//! underflows below 2^-126), and `acc + a*b` in plain f32 arithmetic is then
//! the same single rounding as the FMA. Input denormals never reach the
//! kernel (the packing flushes them, [`super::convert::f32_to_bf16`]), and a
//! sum that lands below 2^-126 is flushed here as the instruction does. The
//! only case where the bits can differ from the instruction's: a product
//! `a_k * b_k` of magnitude below 2^-126, which f32 rounds to a denormal
//! before the add (an error below 2^-149 per such product).

use super::convert::unpair;
use super::pack::{MR, NR};

/// `x`, or a zero of its sign when `x` is an f32 denormal (flush to zero).
#[inline(always)]
fn flush_denormal(x: f32) -> f32 {
    if x.abs() < f32::MIN_POSITIVE {
        f32::from_bits(x.to_bits() & 0x8000_0000)
    } else {
        x
    }
}

/// `acc[i][j] += sum_p a_p[i] . b_p[j]` over the pairs `p` of one A panel
/// (`MR` words per pair) and one B panel (`NR` words per pair), each pair in
/// `vdpbf16ps` order: `acc += a_hi b_hi`, then `acc += a_lo b_lo`.
pub fn microkernel(a: &[u32], b: &[u32], acc: &mut [f32; MR * NR]) {
    for (a_p, b_p) in a.chunks_exact(MR).zip(b.chunks_exact(NR)) {
        let mut b_lo = [0.0f32; NR];
        let mut b_hi = [0.0f32; NR];
        for j in 0..NR {
            (b_lo[j], b_hi[j]) = unpair(b_p[j]);
        }
        for (i, acc_row) in acc.chunks_exact_mut(NR).enumerate() {
            let (a_lo, a_hi) = unpair(a_p[i]);
            for j in 0..NR {
                let s = flush_denormal(acc_row[j] + a_hi * b_hi[j]);
                acc_row[j] = flush_denormal(s + a_lo * b_lo[j]);
            }
        }
    }
}
