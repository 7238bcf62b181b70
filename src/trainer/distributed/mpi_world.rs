//! The ranks an MPI launcher started (`mpirun -n N dpo ...`), over the `mpi`
//! crate (rsmpi). Built only with the `mpi` cargo feature.
//!
//! The sum of [`Collective::sum_f32`] is not `MPI_Allreduce`, whose order of
//! additions is the library's choice and may change with the message size or
//! the network. It is a reduce-scatter and an all-gather written out so that
//! MPI only moves bytes and the adding is ours:
//!
//! ```text
//! values (len L) cut into N chunks, chunk j = [j L / N, (j+1) L / N)
//! all-to-all:  rank j receives chunk j of every rank             (N-1)/N L floats in
//! rank j:      sum_j = chunk_j(rank 0) + chunk_j(rank 1) + ...  in rank order
//! all-gather:  every rank receives every sum_j                  (N-1)/N L floats in
//! ```
//!
//! Each element is added in rank order, whoever adds it, so the result is
//! the same bits on every rank and in every run; each rank sends and
//! receives `2 (N-1)/N` of the buffer, as a ring all-reduce does.

use std::time::Duration;

use ::mpi::datatype::{Partition, PartitionMut};
use ::mpi::environment::Universe;
use ::mpi::topology::SimpleCommunicator;
use ::mpi::traits::*;
use ::mpi::Count;
use anyhow::{anyhow, Result};

use super::Collective;
use crate::trainer::split::share;

/// `MPI_COMM_WORLD` and the MPI environment it lives in.
pub struct MpiWorld {
    world: SimpleCommunicator,
    rank: usize,
    ranks: usize,
    /// Finalizes MPI when dropped, so it is dropped last.
    _universe: Universe,
}

impl MpiWorld {
    /// Initializes MPI (once per process). A panic on any rank then aborts
    /// the whole job instead of leaving the other ranks waiting.
    pub fn init() -> Result<Box<dyn Collective>> {
        let universe = ::mpi::initialize()
            .ok_or_else(|| anyhow!("MPI could not be initialized (or was already)"))?;
        let world = universe.world();
        let (rank, ranks) = (world.rank() as usize, world.size() as usize);
        let report = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            report(info);
            SimpleCommunicator::world().abort(101);
        }));
        Ok(Box::new(MpiWorld {
            world,
            rank,
            ranks,
            _universe: universe,
        }))
    }
}

/// MPI counts and offsets are C ints.
fn count(n: usize) -> Count {
    Count::try_from(n).expect("a buffer of fewer than 2^31 elements")
}

impl Collective for MpiWorld {
    fn rank(&self) -> usize {
        self.rank
    }

    fn ranks(&self) -> usize {
        self.ranks
    }

    fn sum_f32(&self, values: &mut [f32]) {
        let n = self.ranks;
        let chunks: Vec<_> = (0..n).map(|j| share(values.len(), j, n)).collect();
        let counts: Vec<Count> = chunks.iter().map(|c| count(c.len())).collect();
        let displs: Vec<Count> = chunks.iter().map(|c| count(c.start)).collect();
        let mine = chunks[self.rank].len();

        // Reduce-scatter: my chunk of every rank, rank r's at [r * mine, (r+1) * mine).
        let mut received = vec![0f32; n * mine];
        {
            let send = Partition::new(&values[..], counts.clone(), displs.clone());
            let recv_counts = vec![count(mine); n];
            let recv_displs: Vec<Count> = (0..n).map(|r| count(r * mine)).collect();
            let mut recv = PartitionMut::new(&mut received[..], recv_counts, recv_displs);
            self.world.all_to_all_varcount_into(&send, &mut recv);
        }
        let mut sum = received[..mine].to_vec();
        for from_rank in received.chunks_exact(mine.max(1)).skip(1) {
            for (s, v) in sum.iter_mut().zip(from_rank) {
                *s += v;
            }
        }

        // All-gather: every rank's summed chunk back into place.
        let mut all = PartitionMut::new(values, counts, displs);
        self.world.all_gather_varcount_into(&sum[..], &mut all);
    }

    fn all_gather_bytes(&self, local: &[u8]) -> Vec<Vec<u8>> {
        let mut lengths = vec![0 as Count; self.ranks];
        self.world
            .all_gather_into(&[count(local.len())][..], &mut lengths[..]);
        let displs: Vec<Count> = lengths
            .iter()
            .scan(0, |start, &len| {
                let at = *start;
                *start += len;
                Some(at)
            })
            .collect();
        let total: usize = lengths.iter().map(|&len| len as usize).sum();
        // Real allocations even when empty: an empty Vec<u8>'s address is 1,
        // which Open MPI reads as MPI_IN_PLACE.
        let mut send = Vec::with_capacity(local.len() + 1);
        send.extend_from_slice(local);
        let mut all = Vec::with_capacity(total + 1);
        all.resize(total, 0u8);
        {
            let mut recv = PartitionMut::new(&mut all[..], lengths.clone(), displs.clone());
            self.world.all_gather_varcount_into(&send[..], &mut recv);
        }
        displs
            .iter()
            .zip(&lengths)
            .map(|(&at, &len)| all[at as usize..(at + len) as usize].to_vec())
            .collect()
    }

    fn barrier(&self) {
        self.world.barrier();
    }

    fn abort(&self, message: &str) -> ! {
        if self.rank == 0 {
            eprintln!("error: {message}");
        } else {
            // An error every rank meets (a bad flag, a bad data line) is best
            // told once, by rank 0, whose abort ends this rank within this
            // pause; an error of this rank alone is told after it.
            std::thread::sleep(Duration::from_millis(500));
            eprintln!("error: rank {}: {message}", self.rank);
        }
        self.world.abort(1)
    }
}
