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

/// Sum of squares of all elements, accumulated in f64.
pub fn sum_squares_f64<T: Float>(x: &[T]) -> f64 {
    let chunk_sum = |c: &[T]| c.iter().map(|&v| v.as_f64() * v.as_f64()).sum::<f64>();
    if x.len() < PAR_MIN_ELEMENTS {
        chunk_sum(x)
    } else {
        let partial: Vec<f64> = x.par_chunks(PAR_CHUNK).map(chunk_sum).collect();
        partial.into_iter().sum()
    }
}
