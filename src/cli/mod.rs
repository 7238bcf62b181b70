//! The `dpo` command line (docs/spec.md section 5).
//!
//! Logs and progress go to stderr, results as one JSON object on stdout
//! (`dpo chat` writes its replies there instead, as they come).
//! Every error is one line on stderr and a non-zero exit.

mod args;
mod chat;
mod commands;
mod conversation;
mod convert;
mod generate;

pub use args::Cli;

use clap::Parser;

/// `--threads` may ask for at most this many threads per core: past one a
/// core, threads only wait for each other, and thousands of them crawl.
pub const MAX_THREADS_PER_CORE: usize = 4;

/// A parsed command line: its `--threads` and what runs it.
type Parsed = (
    Option<usize>,
    Box<dyn FnOnce() -> anyhow::Result<()> + Send>,
);

/// Parses the command line.
fn parse() -> Result<Parsed, clap::Error> {
    let cli = Cli::try_parse()?;
    Ok((cli.threads, Box::new(move || commands::run(cli))))
}

/// Parses the command line, runs it, and returns the process exit code.
pub fn main() -> i32 {
    let (threads, run) = match parse() {
        Ok(parsed) => parsed,
        Err(e) => {
            // --help and --version are not errors.
            let code = if e.use_stderr() { 2 } else { 0 };
            let _ = e.print();
            return code;
        }
    };
    // Under mpirun, ranks sharing a machine share its cores by default.
    let threads = threads.or_else(crate::trainer::distributed::threads_per_local_rank);
    if let Some(threads) = threads {
        if threads == 0 {
            eprintln!("error: --threads must be at least 1");
            return 2;
        }
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        if threads > MAX_THREADS_PER_CORE * cores {
            eprintln!(
                "error: --threads {threads} is more than {MAX_THREADS_PER_CORE} per core of this machine's {cores} (more threads than cores only slow the kernels down)"
            );
            return 2;
        }
    }
    if let Err(e) = autograd::set_num_threads(threads.unwrap_or(0)) {
        eprintln!("error: {e}");
        return 2;
    }
    // The command runs on a worker of the pool: its kernels' tasks start there.
    match autograd::run_in_pool(run) {
        Ok(()) => 0,
        Err(error) => {
            // `{:#}`: the error and its causes on one line, `outer: inner`.
            eprintln!("error: {error:#}");
            1
        }
    }
}
