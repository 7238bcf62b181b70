//! The two packing loops of [`super::pack`] on AVX-512: the same words, bit
//! for bit, several times faster.
//!
//! The scalar loops round one value at a time and, for a transposed
//! operand, store one word at a time `width` words apart; packing GPT-2's
//! `wte^T` that way runs at 1.6 G values/s, a sixth of what memory allows.
//! Here:
//!
//! - **Rounding**: `vcvtne2ps2bf16` rounds 32 f32 to bf16 in one
//!   instruction, with the rounding of [`super::convert::f32_to_bf16`]
//!   (nearest even, NaN quieted, denormals to signed zero: that function
//!   follows this instruction's pseudo-code). Its result puts the
//!   second operand's 16 values in the low half, so `cvt(x[16..32], x[0..16])`
//!   is the 16 pair words `(x[2p], x[2p+1])`, low half first: a contiguous
//!   line of `k` is paired by the rounding itself.
//! - **Lines of `k`** ([`pack_lines`], A's rows and `W^T`'s columns): 16
//!   lines give 16 registers of 16 pairs each, and a panel wants the
//!   transpose (for each pair, the 16 lines side by side), so the 16 x 16
//!   words are transposed in registers (`transpose`) and stored as whole
//!   64-byte rows of the panel.
//! - **Two rows per pair** ([`pack_rows`], `W` and `dy^T`): the rows `2p`
//!   and `2p + 1` are rounded together and their halves interleaved by one
//!   `vpermw`. The 8-wide panels of A (`dy^T`) are packed eight at a time
//!   ([`pack_row_panels`]), so each row is read in whole cache lines.
//!
//! Only whole blocks are done here (16 pairs of a line, 16 indices of a row
//! pair, pairs of full 8-wide panels); the caller finishes the edges with the
//! scalar loops.

#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

/// Whether this CPU has what these loops use: AVX512F, BW (`vpermw`), VL
/// (256-bit forms) and BF16.
pub fn available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        is_x86_feature_detected!("avx512f")
            && is_x86_feature_detected!("avx512bw")
            && is_x86_feature_detected!("avx512vl")
            && is_x86_feature_detected!("avx512bf16")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// `(lo, hi)` interleaving of `a` and `b` in blocks of `S` words: `lo` is
/// a's first block, b's first block, a's second, b's second, ... over the
/// first halves of both, `hi` the same over the second halves.
///
/// # Safety
/// The CPU must have AVX512F ([`available`]); the caller's
/// `#[target_feature]` is this inlined helper's.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn interleave<const S: u32>(a: __m512i, b: __m512i) -> (__m512i, __m512i) {
    // Output word e takes block e / S (of the interleaved sequence), word
    // e % S of it: block 2c + 0 is a's block c, block 2c + 1 is b's block c
    // (index + 16 selects b in vpermt2d).
    let index = |half: u32| {
        let mut words = [0i32; 16];
        for (e, word) in words.iter_mut().enumerate() {
            let e = e as u32;
            let (block, within) = (e / S, e % S);
            let source = (block / 2 + half * (8 / S)) * S + within + 16 * (block % 2);
            *word = source as i32;
        }
        // SAFETY: AVX512F (this function's contract); `words` is 64 bytes.
        unsafe { _mm512_loadu_si512(words.as_ptr() as *const __m512i) }
    };
    // SAFETY: AVX512F (this function's contract).
    unsafe {
        (
            _mm512_permutex2var_epi32(a, index(0), b),
            _mm512_permutex2var_epi32(a, index(1), b),
        )
    }
}

/// Transposes `R` rows (16 or 8) of 16 words in four (or three) rounds of
/// [`interleave`] with blocks of 1, 2, 4, 8 words: each round pairs the
/// registers that hold the same columns of neighbouring row groups.
///
/// With 16 rows, register `i` ends up holding column `j = bitrev4(i)` (the
/// lo/hi split of the first round picks `j`'s top bit, the last round its
/// lowest), all 16 rows in order. With 8 rows, register `i` holds the
/// columns `2 bitrev3(i)` and `2 bitrev3(i) + 1`, 8 rows each: the layout of
/// two consecutive pairs of an 8-wide panel.
///
/// # Safety
/// The CPU must have AVX512F ([`available`]), as for [`interleave`].
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn transpose<const R: usize>(regs: &mut [__m512i; R]) {
    /// One round: blocks of `S` words.
    ///
    /// # Safety
    /// As for [`transpose`].
    unsafe fn round<const R: usize, const S: u32>(regs: &mut [__m512i; R]) {
        let mut next = *regs;
        for a in 0..R / 2 {
            // SAFETY: AVX512F (this function's contract).
            let (lo, hi) = unsafe { interleave::<S>(regs[2 * a], regs[2 * a + 1]) };
            next[a] = lo;
            next[R / 2 + a] = hi;
        }
        *regs = next;
    }
    // SAFETY: AVX512F (this function's contract).
    unsafe {
        round::<R, 1>(regs);
        round::<R, 2>(regs);
        round::<R, 4>(regs);
        if R == 16 {
            round::<R, 8>(regs);
        }
    }
}

/// The 16 pair words `(x[2p], x[2p + 1])`, p < 16, of the 32 f32 at `x`.
///
/// # Safety
/// The CPU must have AVX512F and AVX512_BF16 ([`available`]); `x` must be
/// valid for reading 32 floats.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn pair_words(x: *const f32) -> __m512i {
    // SAFETY: the features and the 32 floats at `x` are this function's
    // contract; the transmute is between two 512-bit vectors.
    unsafe {
        let (lo, hi) = (_mm512_loadu_ps(x), _mm512_loadu_ps(x.add(16)));
        std::mem::transmute::<__m512bh, __m512i>(_mm512_cvtne2ps_pbh(hi, lo))
    }
}

/// The `vpermw` index that interleaves the halves of a rounding of two
/// rows: word `j` of `vcvtne2ps2bf16(hi, lo)` is `lo[j]` (j < 16) or `hi[j -
/// 16]`, and word `2j` of the result takes `lo[j]`, word `2j + 1` `hi[j]`.
///
/// # Safety
/// The CPU must have AVX512F ([`available`]).
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn halves_to_pairs() -> __m512i {
    let mut index = [0i16; 32];
    for (w, x) in index.iter_mut().enumerate() {
        *x = (w / 2 + 16 * (w % 2)) as i16;
    }
    // SAFETY: AVX512F (this function's contract); `index` is 64 bytes.
    unsafe { _mm512_loadu_si512(index.as_ptr() as *const __m512i) }
}

/// The 16 pair words `(lo[j], hi[j])`, j < 16, of two rows.
///
/// # Safety
/// The CPU must have AVX512F, BW and BF16 ([`available`]); `lo` and `hi`
/// must be valid for reading 16 floats each.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn pair_rows(lo: *const f32, hi: *const f32, halves_to_pairs: __m512i) -> __m512i {
    // SAFETY: the features and the 16 floats at `lo` and at `hi` are this
    // function's contract; the transmute is between two 512-bit vectors.
    unsafe {
        let halves = _mm512_cvtne2ps_pbh(_mm512_loadu_ps(hi), _mm512_loadu_ps(lo));
        _mm512_permutexvar_epi16(
            halves_to_pairs,
            std::mem::transmute::<__m512bh, __m512i>(halves),
        )
    }
}

/// Packs the pairs `0 .. 16 * (full_pairs / 16)` of one panel whose
/// indices are lines of contiguous `k`: `line(i)` points at index `i`'s
/// `k = 0`, for `i < rows`. `width` is 48 (B) or 8 (A); indices `rows ..
/// width` get zeros. Returns the number of pairs packed.
///
/// # Safety
/// [`available`]; `line(i)` valid for `2 * full_pairs` floats for `i <
/// rows`; `panel` holds `width` words for every pair packed.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512bf16")]
pub unsafe fn pack_lines(
    line: impl Fn(usize) -> *const f32,
    rows: usize,
    full_pairs: usize,
    width: usize,
    panel: &mut [u32],
) -> usize {
    let blocks = full_pairs / 16;
    let out = panel.as_mut_ptr();
    // SAFETY: the features are this function's contract. Reads: block
    // `block` of line `r` is its floats 32 block .. 32 block + 32, inside the
    // `2 * full_pairs` floats of a line `r < rows`. Writes: pair `pair <
    // 16 blocks` of the panel is its words `pair * width ..`, which it holds.
    unsafe {
        match width {
            48 => {
                for group in 0..3 {
                    let lines = rows.saturating_sub(16 * group).min(16);
                    for block in 0..blocks {
                        let mut regs = [_mm512_setzero_si512(); 16];
                        for (r, reg) in regs.iter_mut().enumerate().take(lines) {
                            *reg = pair_words(line(16 * group + r).add(32 * block));
                        }
                        transpose(&mut regs);
                        for (i, reg) in regs.iter().enumerate() {
                            let j = (i as u32).reverse_bits() >> 28;
                            let pair = 16 * block + j as usize;
                            _mm512_storeu_si512(
                                out.add(pair * 48 + 16 * group) as *mut __m512i,
                                *reg,
                            );
                        }
                    }
                }
            }
            8 => {
                for block in 0..blocks {
                    let mut regs = [_mm512_setzero_si512(); 8];
                    for (r, reg) in regs.iter_mut().enumerate().take(rows.min(8)) {
                        *reg = pair_words(line(r).add(32 * block));
                    }
                    transpose(&mut regs);
                    for (i, reg) in regs.iter().enumerate() {
                        let j = 2 * ((i as u32).reverse_bits() >> 29);
                        let pair = 16 * block + j as usize;
                        _mm512_storeu_si512(out.add(pair * 8) as *mut __m512i, *reg);
                    }
                }
            }
            _ => return 0,
        }
    }
    16 * blocks
}

/// Packs the indices `0 .. 16 * (rows / 16)` of every full pair of one
/// 48-wide panel whose pairs come from two rows of contiguous indices:
/// `row(kk)` points at `k = kk` of the panel's first index. Returns the
/// number of indices packed (0 for another width: 8-wide panels go through
/// [`pack_row_panels`]).
///
/// # Safety
/// [`available`]; `row(kk)` valid for `rows` floats for `kk < 2 *
/// full_pairs`; `panel` holds `width` words for every full pair.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512bf16")]
pub unsafe fn pack_rows(
    row: impl Fn(usize) -> *const f32,
    rows: usize,
    full_pairs: usize,
    width: usize,
    panel: &mut [u32],
) -> usize {
    if width != 48 {
        return 0;
    }
    let out = panel.as_mut_ptr();
    let groups = rows / 16;
    // SAFETY: the features are this function's contract. Reads: group `g`
    // is the floats 16 g .. 16 g + 16 < `rows` of rows 2p and 2p + 1 < 2
    // `full_pairs`. Writes: the 16 words of pair `p` at 16 g in the panel's
    // 48, for a full pair.
    unsafe {
        let index = halves_to_pairs();
        for p in 0..full_pairs {
            let (lo_row, hi_row) = (row(2 * p), row(2 * p + 1));
            for g in 0..groups {
                let words = pair_rows(lo_row.add(16 * g), hi_row.add(16 * g), index);
                _mm512_storeu_si512(out.add(p * 48 + 16 * g) as *mut __m512i, words);
            }
        }
    }
    16 * groups
}

/// [`pack_rows`] for `panels` consecutive full panels of width 8 at once:
/// each pair reads 16 indices (a cache line) of both rows per step, and the
/// low and high 8 words go to two neighbouring panels. `chunk` holds the
/// panels one after the other, `panel_words` words each (`8` per pair, at
/// least `full_pairs` pairs). Returns the number of panels packed (all but
/// an odd last one).
///
/// # Safety
/// [`available`]; `row(kk)` valid for `8 * panels` floats for `kk < 2 *
/// full_pairs`; `chunk` holds `panels` panels of `panel_words`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512bf16")]
pub unsafe fn pack_row_panels(
    row: impl Fn(usize) -> *const f32,
    panels: usize,
    full_pairs: usize,
    panel_words: usize,
    chunk: &mut [u32],
) -> usize {
    let two_panels = panels / 2;
    assert!(chunk.len() >= panels * panel_words && panel_words >= 8 * full_pairs);
    let size = panel_words;
    let out = chunk.as_mut_ptr();
    // SAFETY: the features are this function's contract. Reads: the floats
    // 16 t .. 16 t + 16 < 8 `panels` of rows 2p and 2p + 1 < 2 `full_pairs`.
    // Writes: 8 words at pair `p` of panels 2t and 2t + 1 < `panels`, inside
    // their `panel_words` (asserted above).
    unsafe {
        let index = halves_to_pairs();
        for p in 0..full_pairs {
            let (lo_row, hi_row) = (row(2 * p), row(2 * p + 1));
            for t in 0..two_panels {
                // words 0..8: the indices of the first panel, 8..16 the second's
                let words = pair_rows(lo_row.add(16 * t), hi_row.add(16 * t), index);
                let first = out.add(2 * t * size + p * 8);
                _mm256_storeu_si256(first as *mut __m256i, _mm512_castsi512_si256(words));
                _mm256_storeu_si256(
                    first.add(size) as *mut __m256i,
                    _mm512_extracti64x4_epi64::<1>(words),
                );
            }
        }
    }
    2 * two_panels
}
