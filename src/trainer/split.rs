//! How one global batch is split over ranks and micro-batches, and how the
//! parts' losses and metrics add back up to the batch's.
//!
//! The split is fixed: of a batch of `B` rows on `N` ranks, rank `r` takes
//! rows `[r B / N, (r+1) B / N)` (integer division: shares differ by at most
//! one row), then cuts its share the same way into `K` micro-batches
//! (`--grad-accum K`). Every rank plans the same global batch, so no rows
//! are sent anywhere.
//!
//! A loss is a mean over its batch's *weight* (pairs for DPO, scored tokens
//! for SFT: [`dpo::objective::Objective::batch_weight`]), so with `W` the
//! whole batch's weight and `w_p` a part's,
//!
//! ```text
//! loss(batch) = sum_p (w_p / W) loss(part p)      grad likewise
//! ```
//!
//! and the parts' metrics, means over the same weight, merge the same way.

use std::ops::Range;

use dpo::objective::{MetricValue, Metrics};

/// Part `part` of `parts` near-equal parts of `0..len`:
/// `[part len / parts, (part+1) len / parts)`.
pub fn share(len: usize, part: usize, parts: usize) -> Range<usize> {
    let bound = |i: usize| (i as u128 * len as u128 / parts.max(1) as u128) as usize;
    bound(part)..bound(part + 1)
}

/// The micro-batches of rank `rank` of `ranks` for the global `batch`:
/// its share cut into `grad_accum` parts, empty ones left out (a batch
/// smaller than `ranks x grad_accum`, as the last of an epoch can be).
pub fn micro_batches(
    batch: &[usize],
    rank: usize,
    ranks: usize,
    grad_accum: usize,
) -> Vec<&[usize]> {
    let mine = &batch[share(batch.len(), rank, ranks)];
    (0..grad_accum)
        .map(|k| &mine[share(mine.len(), k, grad_accum)])
        .filter(|micro| !micro.is_empty())
        .collect()
}

/// What one micro-batch contributed to a step.
#[derive(Debug, Clone)]
pub struct PartRecord {
    /// The part's share of the batch's weight, `w_p / W`.
    pub share: f64,
    /// The part's loss (the mean over its own weight).
    pub loss: f64,
    /// The part's metrics (means over its own weight; `num_*` are counts).
    pub metrics: Metrics,
    /// Non-padding tokens through the model.
    pub tokens: usize,
    /// Tokens through the model, padding included.
    pub padded_tokens: usize,
}

/// A whole batch's loss, metrics and token counts, merged from its parts.
#[derive(Debug, Clone)]
pub struct MergedStep {
    /// The batch's loss.
    pub loss: f64,
    /// The batch's metrics.
    pub metrics: Metrics,
    /// Non-padding tokens through the model.
    pub tokens: usize,
    /// Tokens through the model, padding included.
    pub padded_tokens: usize,
}

/// Merges the parts of one batch (in any fixed order): losses and metrics
/// weighted by their shares, `num_*` metrics (counts) and tokens summed. A
/// batch of one part is that part, unchanged.
pub fn merge_parts(parts: &[PartRecord]) -> MergedStep {
    let tokens = parts.iter().map(|p| p.tokens).sum();
    let padded_tokens = parts.iter().map(|p| p.padded_tokens).sum();
    if let [only] = parts {
        return MergedStep {
            loss: only.loss,
            metrics: only.metrics.clone(),
            tokens,
            padded_tokens,
        };
    }
    let weighted = |value: &dyn Fn(&PartRecord) -> f64| -> f64 {
        parts.iter().map(|p| p.share * value(p)).sum()
    };
    let mut metrics = Metrics::new();
    for (name, value) in parts.iter().flat_map(|p| p.metrics.iter()) {
        if metrics.contains(name) {
            continue;
        }
        let merged = match value {
            MetricValue::Count(_) => MetricValue::Count(
                parts
                    .iter()
                    .filter_map(|p| match p.metrics.value(name) {
                        Some(MetricValue::Count(n)) => Some(n),
                        _ => None,
                    })
                    .sum(),
            ),
            // A part without the metric makes NaN.
            MetricValue::Mean(_) => MetricValue::Mean(weighted(&|p| p.metrics.get(name))),
        };
        metrics.set(name, merged);
    }
    MergedStep {
        loss: weighted(&|p| p.loss),
        metrics,
        tokens,
        padded_tokens,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_cover_the_range_in_order_and_differ_by_at_most_one() {
        for len in 0..40 {
            for parts in 1..9 {
                let shares: Vec<_> = (0..parts).map(|p| share(len, p, parts)).collect();
                assert_eq!(shares[0].start, 0);
                assert_eq!(shares[parts - 1].end, len);
                for pair in shares.windows(2) {
                    assert_eq!(pair[0].end, pair[1].start);
                }
                let sizes: Vec<usize> = shares.iter().map(Range::len).collect();
                let (min, max) = (sizes.iter().min().unwrap(), sizes.iter().max().unwrap());
                assert!(max - min <= 1, "len {len}, parts {parts}: {sizes:?}");
            }
        }
    }

    #[test]
    fn micro_batches_of_all_ranks_are_the_batch_in_order() {
        let batch: Vec<usize> = (100..111).collect(); // 11 rows, shuffled ids in practice
        for ranks in 1..5 {
            for grad_accum in 1..5 {
                let joined: Vec<usize> = (0..ranks)
                    .flat_map(|r| micro_batches(&batch, r, ranks, grad_accum))
                    .flatten()
                    .copied()
                    .collect();
                assert_eq!(joined, batch, "{ranks} ranks, --grad-accum {grad_accum}");
            }
        }
        // 8 rows on 2 ranks, 2 micro-batches each: rows 0-1, 2-3 | 4-5, 6-7.
        let eight: Vec<usize> = (0..8).collect();
        assert_eq!(
            micro_batches(&eight, 1, 2, 2),
            vec![&[4, 5][..], &[6, 7][..]]
        );
        // A batch smaller than ranks x micro-batches leaves some ranks idle.
        assert_eq!(micro_batches(&[7, 9], 0, 4, 1), Vec::<&[usize]>::new());
        assert_eq!(micro_batches(&[7, 9], 3, 4, 1), vec![&[9][..]]);
    }

    fn part(weight: f64, total: f64, loss: f64, accuracy: f64, pairs: u64) -> PartRecord {
        let mut metrics = Metrics::new();
        metrics.set_mean("loss", loss);
        metrics.set_mean("rewards/accuracies", accuracy);
        metrics.set("num_pairs", MetricValue::Count(pairs));
        PartRecord {
            share: weight / total,
            loss,
            metrics,
            tokens: 10 * pairs as usize,
            padded_tokens: 12 * pairs as usize,
        }
    }

    #[test]
    fn merged_parts_are_the_weighted_means_of_the_whole_batch() {
        // Per-row losses 1, 2, 3 (acc 1, 0, 1) and 5 (acc 0): parts of 3 and 1 rows.
        let parts = [
            part(3.0, 4.0, 2.0, 2.0 / 3.0, 3),
            part(1.0, 4.0, 5.0, 0.0, 1),
        ];
        let merged = merge_parts(&parts);
        assert!((merged.loss - 11.0 / 4.0).abs() < 1e-15);
        let accuracy = merged.metrics.get("rewards/accuracies");
        assert!((accuracy - 0.5).abs() < 1e-15);
        assert_eq!(
            merged.metrics.value("num_pairs"),
            Some(MetricValue::Count(4))
        );
        assert_eq!((merged.tokens, merged.padded_tokens), (40, 48));
    }

    #[test]
    fn one_part_is_returned_unchanged_and_nan_survives_a_merge() {
        let only = part(8.0, 8.0, 0.1 + 0.2, 0.375, 8);
        let merged = merge_parts(std::slice::from_ref(&only));
        assert_eq!(merged.loss.to_bits(), (0.1f64 + 0.2).to_bits());
        assert_eq!(merged.metrics, only.metrics);
        let nan = part(1.0, 2.0, f64::NAN, 0.0, 1);
        let merged = merge_parts(&[part(1.0, 2.0, 0.5, 1.0, 1), nan]);
        assert!(merged.loss.is_nan());
    }
}
