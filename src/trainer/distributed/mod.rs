//! Data parallelism: the few collective operations a training run needs,
//! behind one trait, so that the training loop reads the same on one rank
//! as on many.
//!
//! - [`SingleProcess`]: the ordinary run, one rank; every operation is a no-op.
//! - `MpiWorld` (the `mpi` cargo feature): the ranks an MPI launcher started,
//!   `mpirun -n N dpo train ...` (docs/distributed.md).
//!
//! Every operation is deterministic: a sum adds the ranks' values in rank
//! order, never in an order the network chooses, so a run on N ranks gives
//! the same bits every time, and every rank holds the same weights.

#[cfg(feature = "mpi")]
mod mpi_world;

use anyhow::Result;

/// What the ranks of a job do together. Every rank must make the same calls
/// in the same order (they are collective), or the job waits forever.
pub trait Collective {
    /// This process's rank, `0..ranks()`.
    fn rank(&self) -> usize;

    /// The number of ranks in the job.
    fn ranks(&self) -> usize;

    /// Whether this is rank 0, the one that writes checkpoints, metrics and
    /// the progress bar.
    fn is_root(&self) -> bool {
        self.rank() == 0
    }

    /// Replaces `values` (the same length on every rank) by their
    /// element-wise sum over the ranks, added in rank order: the same bits on
    /// every rank and in every run.
    fn sum_f32(&self, values: &mut [f32]);

    /// Every rank's `local` bytes (any length), in rank order, on every rank.
    fn all_gather_bytes(&self, local: &[u8]) -> Vec<Vec<u8>>;

    /// Returns once every rank has called it.
    fn barrier(&self);

    /// Ends the whole job: prints `message` as one `error:` line and stops
    /// every rank with a non-zero exit. Never returns.
    fn abort(&self, message: &str) -> !;
}

/// One process, one rank: the ordinary run.
#[derive(Debug, Clone, Copy, Default)]
pub struct SingleProcess;

impl Collective for SingleProcess {
    fn rank(&self) -> usize {
        0
    }

    fn ranks(&self) -> usize {
        1
    }

    fn sum_f32(&self, _values: &mut [f32]) {}

    fn all_gather_bytes(&self, local: &[u8]) -> Vec<Vec<u8>> {
        vec![local.to_vec()]
    }

    fn barrier(&self) {}

    fn abort(&self, message: &str) -> ! {
        eprintln!("error: {message}");
        std::process::exit(1)
    }
}

/// Every rank's `local` values, concatenated in rank order, on every rank
/// (exact: the values travel as their bits).
pub fn all_gather_f64(comm: &dyn Collective, local: &[f64]) -> Vec<f64> {
    if comm.ranks() == 1 {
        return local.to_vec();
    }
    let bytes: Vec<u8> = local.iter().flat_map(|v| v.to_le_bytes()).collect();
    comm.all_gather_bytes(&bytes)
        .iter()
        .flat_map(|rank_bytes| rank_bytes.chunks_exact(8))
        .map(|b| f64::from_le_bytes(b.try_into().expect("8 bytes")))
        .collect()
}

/// The number of ranks an MPI launcher (Open MPI's `mpirun`, MPICH's Hydra,
/// a PMIx launcher such as `srun`) started this process among, if one did.
fn launched_ranks() -> Option<usize> {
    ["OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_SIZE"]
        .iter()
        .find_map(|name| std::env::var(name).ok()?.trim().parse().ok())
}

/// The default `--threads` of a rank that shares its machine with other
/// ranks of the job (as an MPI launcher tells): the cores divided among
/// them, at least 1, so that N ranks on one machine do not run N times as
/// many threads as it has cores. `None` for a single process.
pub fn threads_per_local_rank() -> Option<usize> {
    let local = ["OMPI_COMM_WORLD_LOCAL_SIZE", "MPI_LOCALNRANKS"]
        .iter()
        .find_map(|name| std::env::var(name).ok()?.trim().parse::<usize>().ok())
        .filter(|&n| n > 1)?;
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    Some((cores / local).max(1))
}

/// This process's place in the job: the MPI world when the binary has the
/// `mpi` feature and an MPI launcher started it, else a single process. A
/// binary without the feature started as one of several ranks is refused
/// (each rank would train on its own and all would write `--out`).
pub fn connect() -> Result<Box<dyn Collective>> {
    let launched = launched_ranks();
    #[cfg(feature = "mpi")]
    if launched.is_some() {
        return mpi_world::MpiWorld::init();
    }
    if let Some(ranks) = launched.filter(|&n| n > 1) {
        anyhow::bail!(
            "this dpo was built without MPI but started as one of {ranks} ranks: build it with `cargo build --release --features mpi` (docs/distributed.md)"
        );
    }
    Ok(Box::new(SingleProcess))
}

/// Runs a training command on every rank of the job and returns its result
/// on rank 0 (`None` on the others, which print nothing). An error on any
/// rank ends every rank with one line (MPI abort), so no rank waits forever
/// on one that has stopped.
pub fn on_every_rank<T>(job: impl FnOnce(&dyn Collective) -> Result<T>) -> Result<Option<T>> {
    let comm = connect()?;
    match job(&*comm) {
        Ok(value) => {
            // No rank leaves before rank 0 has written the final checkpoint.
            comm.barrier();
            Ok(comm.is_root().then_some(value))
        }
        Err(error) if comm.ranks() > 1 => comm.abort(&format!("{error:#}")),
        Err(error) => Err(error),
    }
}
