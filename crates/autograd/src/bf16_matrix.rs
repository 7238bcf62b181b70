//! A weight matrix stored as bfloat16: [`Bf16Matrix`].
//!
//! A frozen weight (LoRA's base, `--base-precision bf16`) is never updated,
//! so it needs no f32 master copy: its bf16 values are all that the bf16
//! GEMM multiplies ([`crate::kernels::bf16`] rounds its inputs to bf16 as it
//! packs them). Stored as bf16, it takes half the memory of f32.
//!
//! The ops that read one ([`crate::Tape::linear_bf16`],
//! [`crate::Tape::embedding_bf16`], the LM head's
//! [`crate::LmHeadLogprobs::apply_bf16`]) widen the rows they need to the
//! tape's float type just before a GEMM and drop them after: widening is
//! exact (a bf16 is the top half of an f32), so the GEMM sees the same
//! values, and the wide copy lives for one product. They never compute a
//! gradient for it.

use ndarray::{Array2, ArrayView2};
use rayon::prelude::*;

use crate::float::Float;
use crate::kernels::bf16::{bf16_to_f32, f32_to_bf16, Bf16};

/// Rows widened per parallel task.
const ROWS_PER_TASK: usize = 64;

/// A (rows, cols) matrix of bf16 values, row-major.
#[derive(Clone, PartialEq)]
pub struct Bf16Matrix {
    rows: usize,
    cols: usize,
    values: Vec<Bf16>,
}

impl std::fmt::Debug for Bf16Matrix {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Bf16Matrix({} x {})", self.rows, self.cols)
    }
}

impl Bf16Matrix {
    /// `m` rounded to the nearest bf16 (ties to even, as the bf16 GEMM rounds).
    pub fn from_values<T: Float>(m: ArrayView2<'_, T>) -> Bf16Matrix {
        let (rows, cols) = m.dim();
        let mut values = vec![0; rows * cols];
        if cols > 0 {
            values
                .par_chunks_mut(cols)
                .zip(m.axis_iter(ndarray::Axis(0)).into_par_iter())
                .for_each(|(dst, row)| {
                    for (d, &x) in dst.iter_mut().zip(row.iter()) {
                        *d = f32_to_bf16(x.as_f64() as f32);
                    }
                });
        }
        Bf16Matrix { rows, cols, values }
    }

    /// (rows, cols).
    pub fn dim(&self) -> (usize, usize) {
        (self.rows, self.cols)
    }

    /// Number of values.
    pub fn len(&self) -> usize {
        self.values.len()
    }

    /// Whether it has no values.
    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    /// Rows `r0..r1`, widened exactly to `T`: (r1 - r0, cols).
    pub fn rows_as<T: Float>(&self, r0: usize, r1: usize) -> Array2<T> {
        assert!(
            r0 <= r1 && r1 <= self.rows,
            "Bf16Matrix::rows_as: rows {r0}..{r1} of {}",
            self.rows
        );
        let cols = self.cols;
        let mut out = Array2::<T>::zeros((r1 - r0, cols));
        if cols > 0 {
            let src = &self.values[r0 * cols..r1 * cols];
            out.as_slice_mut()
                .unwrap()
                .par_chunks_mut(ROWS_PER_TASK * cols)
                .zip(src.par_chunks(ROWS_PER_TASK * cols))
                .for_each(|(dst, src)| {
                    for (d, &b) in dst.iter_mut().zip(src) {
                        *d = T::cast(bf16_to_f32(b) as f64);
                    }
                });
        }
        out
    }

    /// Row `r`, widened exactly to `T`.
    pub fn row_into<T: Float>(&self, r: usize, out: &mut [T]) {
        let row = &self.values[r * self.cols..(r + 1) * self.cols];
        for (d, &b) in out.iter_mut().zip(row) {
            *d = T::cast(bf16_to_f32(b) as f64);
        }
    }

    /// The whole matrix, widened exactly to `T`.
    pub fn to_array<T: Float>(&self) -> Array2<T> {
        self.rows_as(0, self.rows)
    }
}
