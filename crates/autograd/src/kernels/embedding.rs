//! Embedding forward and backward loops: a gather of table rows, and its
//! transpose, a scatter-add of gradient rows.
//!
//! The backward runs on one thread, in the order of the ids: a repeated id
//! (the same token twice in a batch) adds its gradient rows into the same
//! table row, and that fixed order makes the sum the same on every run.

use crate::float::Float;

/// ```text
/// out[i, :] = table[ids[i], :]
/// ```
/// table: (V, C), ids: (N) -> out: (N, C). Every id must be `< V` (the op checks).
pub fn embedding_forward<T: Float>(out: &mut [T], table: &[T], ids: &[usize], c: usize) {
    assert_eq!(
        out.len(),
        ids.len() * c,
        "embedding_forward: out is not (N, C)"
    );
    if c == 0 {
        return;
    }
    for (out_row, &id) in out.chunks_exact_mut(c).zip(ids) {
        out_row.copy_from_slice(&table[id * c..(id + 1) * c]);
    }
}

/// The backward of [`embedding_forward`]:
///
/// ```text
/// dtable[ids[i], :] += dout[i, :]          for i = 0 .. N, in order
/// ```
/// dtable: (V, C), accumulated into (`+=`); dout: (N, C); ids: (N).
pub fn embedding_backward<T: Float>(dtable: &mut [T], dout: &[T], ids: &[usize], c: usize) {
    assert_eq!(
        dout.len(),
        ids.len() * c,
        "embedding_backward: dout is not (N, C)"
    );
    if c == 0 {
        return;
    }
    for (dout_row, &id) in dout.chunks_exact(c).zip(ids) {
        let dtable_row = &mut dtable[id * c..(id + 1) * c];
        for (d, &g) in dtable_row.iter_mut().zip(dout_row) {
            *d += g;
        }
    }
}
