//! Concatenation along an axis, and its inverse, as row copies.
//!
//! A row-major tensor of shape `(outer..., n, inner...)` is a matrix of
//! `outer` rows of `n * inner` values, so concatenating along that axis puts
//! the inputs' rows side by side:
//!
//! ```text
//! part i: (rows, width_i)      out: (rows, width_0 + width_1 + ...)
//! out[r, offset_i + c] = part_i[r, c]          offset_i = width_0 + ... + width_(i-1)
//! ```
//!
//! Each row is a few contiguous `copy_from_slice`s; the rows are split over
//! rayon in blocks (a copy gives the same bits on any number of threads).
//! A Llama attention layer concatenates its q, k and v this way, on every
//! layer of every forward pass.

use super::map_row_blocks;
use crate::float::Float;

/// `out[r] = [part_0[r], part_1[r], ...]`: the forward of `concat`.
/// Part `i` holds `rows` rows of `widths[i]` values.
pub fn concat_rows<T: Float>(parts: &[&[T]], widths: &[usize], out: &mut [T]) {
    assert_eq!(parts.len(), widths.len(), "concat_rows: a width per part");
    let total: usize = widths.iter().sum();
    if total == 0 {
        return;
    }
    let rows = out.len() / total;
    for (part, &width) in parts.iter().zip(widths) {
        assert_eq!(part.len(), rows * width, "concat_rows: part size");
    }
    map_row_blocks(out, total, |first_row, block| {
        for (r, out_row) in block.chunks_exact_mut(total).enumerate() {
            let row = first_row + r;
            let mut offset = 0;
            for (part, &width) in parts.iter().zip(widths) {
                out_row[offset..offset + width]
                    .copy_from_slice(&part[row * width..(row + 1) * width]);
                offset += width;
            }
        }
    });
}

/// `part_i[r] = src[r][offset_i .. offset_i + width_i]`, each part a new
/// buffer: the backward of `concat`.
pub fn split_rows<T: Float>(src: &[T], widths: &[usize]) -> Vec<Vec<T>> {
    let total: usize = widths.iter().sum();
    let rows = src.len().checked_div(total).unwrap_or(0);
    assert_eq!(src.len(), rows * total, "split_rows: source size");
    let mut offset = 0;
    widths
        .iter()
        .map(|&width| {
            let mut part = vec![T::zero(); rows * width];
            let start = offset;
            if width > 0 {
                map_row_blocks(&mut part, width, |first_row, block| {
                    for (r, part_row) in block.chunks_exact_mut(width).enumerate() {
                        let from = (first_row + r) * total + start;
                        part_row.copy_from_slice(&src[from..from + width]);
                    }
                });
            }
            offset += width;
            part
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::{concatenate, Array2, Axis};

    /// Large enough for the parallel path (more than `PAR_MIN_ELEMENTS`
    /// values), with an empty part and odd widths: the same values as
    /// ndarray's `concatenate`, and `split_rows` gives the parts back.
    #[test]
    fn rows_side_by_side_as_ndarray_concatenates_them_and_back() {
        let rows = 1031;
        let widths = [17, 0, 64, 3];
        let parts: Vec<Array2<f32>> = widths
            .iter()
            .enumerate()
            .map(|(i, &w)| {
                Array2::from_shape_fn((rows, w), |(r, c)| (i * 100_000 + r * 100 + c) as f32)
            })
            .collect();
        let slices: Vec<&[f32]> = parts.iter().map(|p| p.as_slice().unwrap()).collect();
        let mut out = vec![0.0f32; rows * widths.iter().sum::<usize>()];
        concat_rows(&slices, &widths, &mut out);
        let views: Vec<_> = parts.iter().map(|p| p.view()).collect();
        let expected = concatenate(Axis(1), &views).unwrap();
        assert_eq!(out, expected.as_standard_layout().as_slice().unwrap());
        let back = split_rows(&out, &widths);
        for (part, original) in back.iter().zip(&slices) {
            assert_eq!(part.as_slice(), *original);
        }
    }
}
