//! The transposing pack of [`super::pack`] (`pack_block`) on AVX2: rows of the
//! matrix that are contiguous along `k` (a row of A, or a column of
//! `B = W^T`, a row of the weight W) become the steps of a panel, eight
//! rows and eight steps at a time through an 8 x 8 transpose in registers.

#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

use super::pack::Rounding;
use crate::kernels::packed::Strided;

/// Whether this CPU has AVX2.
pub fn available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        is_x86_feature_detected!("avx2")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Writes steps `0 .. 8 floor(body / 8)` of one panel of `width` rows
/// (`rows == width`, from row `first`; step `s` is `k = s0 + s`, or its
/// bf16 pair partner `(s0 + s) ^ 1`) and returns how many it wrote; the
/// caller writes the rest. Groups of eight rows go through 8 x 8
/// transposes; a 6-row panel is one group of six, stored 8 lanes wide in
/// step order (the last two lanes land on the next step, written after).
///
/// # Safety
/// The CPU must have AVX2; the rows and the `k` up to `s0 + body` must lie
/// inside the matrix with `k_stride == 1`; `panel` must hold `body` steps
/// of `width` floats plus 2 when `width` is not a multiple of 8.
#[allow(clippy::too_many_arguments)]
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
pub(crate) unsafe fn pack_lines(
    m: Strided,
    first: usize,
    rows: usize,
    s0: usize,
    body: usize,
    width: usize,
    rounding: Rounding,
    panel: &mut [f32],
) -> usize {
    debug_assert_eq!(m.k_stride, 1);
    let group = width.min(8);
    if !rows.is_multiple_of(group) || (!width.is_multiple_of(8) && width > 8) {
        return 0;
    }
    let chunks = body / 8;
    // the step of a transposed row: its own, or its bf16 pair partner's
    let swap = match rounding {
        Rounding::Keep => 0,
        Rounding::Bf16 => 1,
    };
    let out = panel.as_mut_ptr();
    // SAFETY: the loads read rows `first + i0 + r` (r < group) at k from s0
    // to s0 + 8 chunks <= s0 + body, inside the matrix; the stores write
    // steps below 8 chunks <= body of the panel, 8 lanes from index i0 <=
    // width - group: inside the panel plus its 2 floats of slack.
    unsafe {
        for i0 in (0..rows).step_by(group) {
            let line = |r: usize| m.ptr(first + i0 + r, s0);
            let lines: [*const f32; 8] = std::array::from_fn(|r| line(r.min(group - 1)));
            for c in 0..chunks {
                let s = 8 * c;
                let v: [__m256; 8] = std::array::from_fn(|r| {
                    if r < group {
                        _mm256_loadu_ps(lines[r].add(s))
                    } else {
                        _mm256_setzero_ps()
                    }
                });
                let t = transpose8(v);
                // in step order: a 6-row store's last two lanes fall on
                // the next step, which the next store then writes
                for d in 0..8 {
                    _mm256_storeu_ps(out.add((s + d) * width + i0), t[d ^ swap]);
                }
            }
        }
    }
    8 * chunks
}

/// Stub for other architectures: writes nothing.
///
/// # Safety
/// None needed; it is `unsafe` to match the x86 signature.
#[allow(clippy::too_many_arguments)]
#[cfg(not(target_arch = "x86_64"))]
pub(crate) unsafe fn pack_lines(
    _m: Strided,
    _first: usize,
    _rows: usize,
    _s0: usize,
    _body: usize,
    _width: usize,
    _rounding: Rounding,
    _panel: &mut [f32],
) -> usize {
    0
}

/// The 8 x 8 transpose: `out[j]` lane `r` = `v[r]` lane `j`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn transpose8(v: [__m256; 8]) -> [__m256; 8] {
    // pairs of rows interleaved, then pairs of pairs, then the 128-bit halves
    let t0 = _mm256_unpacklo_ps(v[0], v[1]);
    let t1 = _mm256_unpackhi_ps(v[0], v[1]);
    let t2 = _mm256_unpacklo_ps(v[2], v[3]);
    let t3 = _mm256_unpackhi_ps(v[2], v[3]);
    let t4 = _mm256_unpacklo_ps(v[4], v[5]);
    let t5 = _mm256_unpackhi_ps(v[4], v[5]);
    let t6 = _mm256_unpacklo_ps(v[6], v[7]);
    let t7 = _mm256_unpackhi_ps(v[6], v[7]);
    let u0 = _mm256_shuffle_ps::<0x44>(t0, t2);
    let u1 = _mm256_shuffle_ps::<0xEE>(t0, t2);
    let u2 = _mm256_shuffle_ps::<0x44>(t1, t3);
    let u3 = _mm256_shuffle_ps::<0xEE>(t1, t3);
    let u4 = _mm256_shuffle_ps::<0x44>(t4, t6);
    let u5 = _mm256_shuffle_ps::<0xEE>(t4, t6);
    let u6 = _mm256_shuffle_ps::<0x44>(t5, t7);
    let u7 = _mm256_shuffle_ps::<0xEE>(t5, t7);
    [
        _mm256_permute2f128_ps::<0x20>(u0, u4),
        _mm256_permute2f128_ps::<0x20>(u1, u5),
        _mm256_permute2f128_ps::<0x20>(u2, u6),
        _mm256_permute2f128_ps::<0x20>(u3, u7),
        _mm256_permute2f128_ps::<0x31>(u0, u4),
        _mm256_permute2f128_ps::<0x31>(u1, u5),
        _mm256_permute2f128_ps::<0x31>(u2, u6),
        _mm256_permute2f128_ps::<0x31>(u3, u7),
    ]
}
