//! The f32 microkernel in plain Rust: one fused multiply-add per (row,
//! column, step), in step order, as [`super::avx2`] and [`super::avx512`]
//! compute it.

/// `acc[i][j] = fma(a_s[i], b_s[j], acc[i][j])` for each step `s` in order,
/// over one A panel slice (`mr` words a step) and one B panel slice
/// (`acc.len() / mr` words a step); words are f32 bits.
pub fn microkernel(mr: usize, a: &[u32], b: &[u32], acc: &mut [f32]) {
    let nr = acc.len() / mr;
    for (a_s, b_s) in a.chunks_exact(mr).zip(b.chunks_exact(nr)) {
        for (row, &a_word) in acc.chunks_exact_mut(nr).zip(a_s) {
            let a_i = f32::from_bits(a_word);
            for (sum, &b_word) in row.iter_mut().zip(b_s) {
                *sum = a_i.mul_add(f32::from_bits(b_word), *sum);
            }
        }
    }
}
