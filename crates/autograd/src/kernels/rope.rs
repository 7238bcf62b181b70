//! Rotary position embedding loops (transformers' `apply_rotary_pos_emb`,
//! rotate-half layout), forward and backward.
//!
//! The input is `N` rows of `NH` heads of `hd` values. Row `r` is rotated by
//! the angles of its position, given as a row of the `cos`/`sin` tables
//! (P, hd/2): `rows[r]` names it, so rows at the same position (the same
//! token index in every sequence of a batch) share one table row. In each
//! head, value `i` of the first half and value `i` of the second half are a
//! pair, rotated by angle `i`:
//!
//! ```text
//! out[i]        = x[i] cos_i - x[i + hd/2] sin_i        i < hd/2
//! out[i + hd/2] = x[i + hd/2] cos_i + x[i] sin_i
//! ```
//! which is `x * cat(cos, cos) + rotate_half(x) * cat(sin, sin)` with
//! `rotate_half(x) = cat(-x2, x1)`. A rotation's transpose is the rotation
//! by the opposite angle, so the backward is the same loop with `-sin`.
//!
//! Rows are independent and run in parallel above [`PAR_MIN_ELEMENTS`].

use rayon::prelude::*;

use super::PAR_MIN_ELEMENTS;
use crate::float::Float;

/// Rows per parallel task.
const ROWS_PER_TASK: usize = 16;

/// Rotates every head of every row: `sign` = 1 rotates by `+angle`
/// (forward), -1 by `-angle` (backward).
#[allow(clippy::too_many_arguments)]
fn rotate<T: Float>(
    op: &str,
    out: &mut [T],
    inp: &[T],
    cos: &[T],
    sin: &[T],
    rows: &[usize],
    head_dim: usize,
    sign: T,
) {
    let n = rows.len();
    assert!(
        head_dim > 0 && head_dim.is_multiple_of(2),
        "{op}: head size {head_dim} is not even"
    );
    let half = head_dim / 2;
    assert!(
        n == 0 || (inp.len().is_multiple_of(n) && (inp.len() / n).is_multiple_of(head_dim)),
        "{op}: {} values are not {n} rows of whole heads of {head_dim}",
        inp.len()
    );
    assert_eq!(
        out.len(),
        inp.len(),
        "{op}: output and input differ in size"
    );
    assert_eq!(
        cos.len(),
        sin.len(),
        "{op}: cos and sin tables differ in size"
    );
    let p = cos.len() / half;
    assert!(
        cos.len() == p * half && rows.iter().all(|&r| r < p),
        "{op}: a row of the table is out of range ({p} rows of {half})"
    );
    if n == 0 {
        return;
    }
    let c = inp.len() / n;
    let row = |r: usize, o: &mut [T], x: &[T]| {
        let t = rows[r] * half;
        let (cs, sn) = (&cos[t..t + half], &sin[t..t + half]);
        for (oh, xh) in o.chunks_exact_mut(head_dim).zip(x.chunks_exact(head_dim)) {
            let (o1, o2) = oh.split_at_mut(half);
            let (x1, x2) = xh.split_at(half);
            for i in 0..half {
                let (ci, si) = (cs[i], sign * sn[i]);
                o1[i] = x1[i] * ci - x2[i] * si;
                o2[i] = x2[i] * ci + x1[i] * si;
            }
        }
    };
    if inp.len() < PAR_MIN_ELEMENTS {
        for (r, (o, x)) in out.chunks_mut(c).zip(inp.chunks(c)).enumerate() {
            row(r, o, x);
        }
    } else {
        out.par_chunks_mut(c)
            .zip(inp.par_chunks(c))
            .enumerate()
            .with_min_len(ROWS_PER_TASK)
            .for_each(|(r, (o, x))| row(r, o, x));
    }
}

/// ```text
/// out[i]        = inp[i] cos_i - inp[i + hd/2] sin_i         i < hd/2, every head
/// out[i + hd/2] = inp[i + hd/2] cos_i + inp[i] sin_i
/// ```
/// inp, out: (N, NH * hd); cos, sin: (P, hd/2); rows: (N), values < P.
pub fn rope_forward<T: Float>(
    out: &mut [T],
    inp: &[T],
    cos: &[T],
    sin: &[T],
    rows: &[usize],
    head_dim: usize,
) {
    rotate("rope_forward", out, inp, cos, sin, rows, head_dim, T::one());
}

/// The backward of [`rope_forward`]: the transposed (inverse) rotation.
///
/// ```text
/// dinp[i]        =  dout[i] cos_i + dout[i + hd/2] sin_i
/// dinp[i + hd/2] = -dout[i] sin_i + dout[i + hd/2] cos_i
/// ```
/// `dinp` is overwritten.
pub fn rope_backward<T: Float>(
    dinp: &mut [T],
    dout: &[T],
    cos: &[T],
    sin: &[T],
    rows: &[usize],
    head_dim: usize,
) {
    rotate(
        "rope_backward",
        dinp,
        dout,
        cos,
        sin,
        rows,
        head_dim,
        -T::one(),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The backward undoes the forward (a rotation is orthogonal).
    #[test]
    fn backward_inverts_forward() {
        let (hd, n) = (6, 3);
        let angles: Vec<f64> = (0..2 * hd / 2).map(|i| i as f64 * 0.37 + 0.1).collect();
        let cos: Vec<f64> = angles.iter().map(|a| a.cos()).collect();
        let sin: Vec<f64> = angles.iter().map(|a| a.sin()).collect();
        let rows = [1, 0, 1];
        let x: Vec<f64> = (0..n * 2 * hd).map(|i| (i as f64 * 1.3).sin()).collect();
        let mut y = vec![0.0; x.len()];
        let mut back = vec![0.0; x.len()];
        rope_forward(&mut y, &x, &cos, &sin, &rows, hd);
        rope_backward(&mut back, &y, &cos, &sin, &rows, hd);
        for (a, b) in x.iter().zip(&back) {
            assert!((a - b).abs() < 1e-14);
        }
    }
}
