//! Which rows make up the batch of each step.
//!
//! Rows are visited in epochs; each epoch is a fresh seeded permutation cut
//! into batches of `batch_size` (the last one may be smaller). With
//! `group_by_length`, rows of similar length are batched together (less
//! padding), and the order of the batches is shuffled. With `batch_size` at
//! least the number of rows, every batch is the whole data set.

use rand::seq::SliceRandom;
use rand::SeedableRng;

/// The batches of a run, step by step.
pub struct BatchPlan {
    lengths: Vec<usize>,
    batch_size: usize,
    seed: u64,
    group_by_length: bool,
    epoch: Option<u64>,
    batches: Vec<Vec<usize>>,
}

impl BatchPlan {
    /// A plan over rows of the given lengths.
    pub fn new(lengths: &[usize], batch_size: usize, seed: u64, group_by_length: bool) -> Self {
        BatchPlan {
            lengths: lengths.to_vec(),
            batch_size: batch_size.max(1),
            seed,
            group_by_length,
            epoch: None,
            batches: Vec::new(),
        }
    }

    /// Batches per epoch.
    pub fn batches_per_epoch(&self) -> u64 {
        self.lengths.len().div_ceil(self.batch_size) as u64
    }

    /// The row indices of step `step` (0-based).
    pub fn batch(&mut self, step: u64) -> Vec<usize> {
        let per_epoch = self.batches_per_epoch().max(1);
        let epoch = step / per_epoch;
        if self.epoch != Some(epoch) {
            let epoch_seed = self
                .seed
                .wrapping_mul(0x9E37_79B9_7F4A_7C15)
                .wrapping_add(epoch);
            self.batches = if self.group_by_length {
                crate::data::length_grouped_batches(&self.lengths, self.batch_size, epoch_seed)
            } else {
                let mut order: Vec<usize> = (0..self.lengths.len()).collect();
                order.shuffle(&mut rand::rngs::StdRng::seed_from_u64(epoch_seed));
                order.chunks(self.batch_size).map(|c| c.to_vec()).collect()
            };
            self.epoch = Some(epoch);
        }
        self.batches[(step % per_epoch) as usize].clone()
    }
}
