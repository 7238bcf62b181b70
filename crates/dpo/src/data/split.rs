//! Which rows go together: a seeded train/eval split, plain shuffled
//! batches, and length-grouped batches that waste less compute on padding.
//! Every function is deterministic for a given seed.

use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::SeedableRng;

/// How many batches a length-grouping window holds: rows are sorted by length
/// only within windows of this many batches, so batches stay random enough.
const BATCHES_PER_WINDOW: usize = 50;

/// Splits `rows` into (train, eval) with about `fraction` of them held out,
/// chosen by a seeded shuffle; both parts keep the file order. The parts are
/// disjoint and together are `rows`. `n_eval = round(fraction * n)`.
///
/// Panics unless `0 <= fraction <= 1`.
pub fn eval_split<R>(rows: Vec<R>, fraction: f64, seed: u64) -> (Vec<R>, Vec<R>) {
    assert!(
        (0.0..=1.0).contains(&fraction),
        "eval_split: fraction {fraction} must be in [0, 1]"
    );
    let n = rows.len();
    let n_eval = ((fraction * n as f64).round() as usize).min(n);
    let mut order: Vec<usize> = (0..n).collect();
    order.shuffle(&mut StdRng::seed_from_u64(seed));
    let mut is_eval = vec![false; n];
    for &i in &order[..n_eval] {
        is_eval[i] = true;
    }
    let mut train = Vec::with_capacity(n - n_eval);
    let mut eval = Vec::with_capacity(n_eval);
    for (row, held_out) in rows.into_iter().zip(is_eval) {
        if held_out {
            eval.push(row);
        } else {
            train.push(row);
        }
    }
    (train, eval)
}

/// The epoch's own seed, so that every epoch of a run has a different order.
fn epoch_seed(seed: u64, epoch: u64) -> u64 {
    seed ^ epoch.wrapping_add(1).wrapping_mul(0x9E37_79B9_7F4A_7C15)
}

/// A seeded shuffle of `0..n` cut into batches of `batch_size` (the last may
/// be shorter); a different order for every `epoch`.
///
/// Panics if `batch_size` is 0.
pub fn shuffled_batches(n: usize, batch_size: usize, seed: u64, epoch: u64) -> Vec<Vec<usize>> {
    assert!(
        batch_size > 0,
        "shuffled_batches: batch_size must be positive"
    );
    let mut order: Vec<usize> = (0..n).collect();
    order.shuffle(&mut StdRng::seed_from_u64(epoch_seed(seed, epoch)));
    order.chunks(batch_size).map(<[usize]>::to_vec).collect()
}

/// Batches of rows of similar length: shuffle all indices, sort each window
/// of `50 * batch_size` of them by length (longest first), cut the windows
/// into batches, shuffle the batch order. Every index of `lengths` is in
/// exactly one batch; only the last batch of a window may be shorter.
///
/// Panics if `batch_size` is 0.
pub fn length_grouped_batches(lengths: &[usize], batch_size: usize, seed: u64) -> Vec<Vec<usize>> {
    assert!(
        batch_size > 0,
        "length_grouped_batches: batch_size must be positive"
    );
    let mut rng = StdRng::seed_from_u64(seed);
    let mut order: Vec<usize> = (0..lengths.len()).collect();
    order.shuffle(&mut rng);
    let mut batches = Vec::with_capacity(lengths.len().div_ceil(batch_size));
    for window in order.chunks_mut(BATCHES_PER_WINDOW * batch_size) {
        // Stable, so equal lengths keep their shuffled order.
        window.sort_by_key(|&i| std::cmp::Reverse(lengths[i]));
        batches.extend(window.chunks(batch_size).map(<[usize]>::to_vec));
    }
    batches.shuffle(&mut rng);
    batches
}

/// How the rows of an epoch are cut into batches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BatchOrder {
    /// A seeded shuffle, another one every epoch ([`shuffled_batches`]).
    #[default]
    Shuffled,
    /// Rows of similar length together ([`length_grouped_batches`],
    /// `--group-by-length`): less padding.
    GroupedByLength,
    /// The file's order, every epoch (`--data-order file`): a run that sees
    /// the rows in the order another tool does, or a curriculum.
    File,
}

/// The batches of one `epoch` of a run over rows of the given `lengths`, in
/// `order`, seeded by the epoch. A pure function of its arguments, so a
/// resumed run sees the batches an uninterrupted one would.
///
/// Panics if `batch_size` is 0.
pub fn epoch_batches(
    lengths: &[usize],
    batch_size: usize,
    seed: u64,
    epoch: u64,
    order: BatchOrder,
) -> Vec<Vec<usize>> {
    assert!(batch_size > 0, "epoch_batches: batch_size must be positive");
    match order {
        BatchOrder::Shuffled => shuffled_batches(lengths.len(), batch_size, seed, epoch),
        BatchOrder::GroupedByLength => {
            length_grouped_batches(lengths, batch_size, epoch_seed(seed, epoch))
        }
        BatchOrder::File => (0..lengths.len())
            .collect::<Vec<_>>()
            .chunks(batch_size)
            .map(<[usize]>::to_vec)
            .collect(),
    }
}

/// Share of the padded batch positions that are padding:
/// `1 - sum(lengths) / sum(len(batch) * max length in batch)` (0 for no
/// tokens). For preference pairs pass each row's longer sequence length.
pub fn padding_share(batches: &[Vec<usize>], lengths: &[usize]) -> f64 {
    let mut padded = 0usize;
    let mut real = 0usize;
    for batch in batches {
        let longest = batch.iter().map(|&i| lengths[i]).max().unwrap_or(0);
        padded += longest * batch.len();
        real += batch.iter().map(|&i| lengths[i]).sum::<usize>();
    }
    if padded == 0 {
        0.0
    } else {
        (padded - real) as f64 / padded as f64
    }
}
