//! The f32 microkernel in plain Rust: one fused multiply-add per (row,
//! column, step), in step order, as [`super::avx2`] and [`super::avx512`]
//! compute it.

use super::Update;

/// The tile of C at `c` (`mr` rows of `nr <= 48` floats, `ldc` apart) is
/// updated with `A panel . B panel` over `steps` steps, as `update` says,
/// one `acc = fma(a_s[i], b_s[j], acc)` per step in order.
///
/// # Safety
/// `a` and `b` must hold `steps` steps of their panels (`mr` and `nr` floats
/// a step), and `c` must point at `mr` rows of `nr` floats, `ldc` apart,
/// that nothing else touches during the call.
#[allow(clippy::too_many_arguments)]
pub unsafe fn microkernel(
    mr: usize,
    nr: usize,
    steps: usize,
    a: *const f32,
    b: *const f32,
    c: *mut f32,
    ldc: usize,
    update: Update,
) {
    // SAFETY: the panels hold `steps` steps (this function's contract).
    let (a, b) = unsafe {
        (
            std::slice::from_raw_parts(a, steps * mr),
            std::slice::from_raw_parts(b, steps * nr),
        )
    };
    for i in 0..mr {
        // SAFETY: row i of the tile is `nr` floats at `c + i ldc`, touched by
        // nothing else (this function's contract).
        let row = unsafe { std::slice::from_raw_parts_mut(c.add(i * ldc), nr) };
        let mut sums = [0.0f32; 48];
        let sums = &mut sums[..nr];
        if update == Update::Continue {
            sums.copy_from_slice(row);
        }
        for (a_s, b_s) in a.chunks_exact(mr).zip(b.chunks_exact(nr)) {
            let a_i = a_s[i];
            for (sum, &b_j) in sums.iter_mut().zip(b_s) {
                *sum = a_i.mul_add(b_j, *sum);
            }
        }
        for (c, &sum) in row.iter_mut().zip(sums.iter()) {
            *c = if update == Update::Add { *c + sum } else { sum };
        }
    }
}
