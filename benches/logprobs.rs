//! The log-prob kernel (`autograd::kernels::logprobs`) on logits [16, 128, 32000],
//! forward + backward, at 1 and 2 threads: the case of `benches/torch/logprobs.py`
//! (`benches/logprobs_vs_torch.sh` runs the two alternating).
//!
//! Bytes: the logits are 16*128*32000*4 = 262 MB. The forward reads them
//! once from memory (the second pass over a 128 KB row hits the cache), the
//! backward reads and writes them once (the gradient overwrites the logits in
//! place): ~0.8 GB of DRAM traffic per forward + backward. Extra memory: one
//! `lse` per row (8 KB), i.e. 0.003% of the logits.
//!
//! Run: `cargo bench --bench logprobs`. Before criterion starts, the bench
//! prints the peak-RSS growth of one forward + backward on top of the logits.

use autograd::kernels::logprobs::{logprobs_backward, logprobs_forward, IGNORE_INDEX};
use criterion::{criterion_group, criterion_main, Criterion};
use rand::{Rng, SeedableRng};

const B: usize = 16;
const T: usize = 128;
const V: usize = 32000;
/// Positions before this carry label -100 (a DPO-like prompt mask), as in the torch script.
const PROMPT: usize = 32;

fn inputs() -> (Vec<f32>, Vec<i64>) {
    let mut rng = rand::rngs::StdRng::seed_from_u64(0);
    let logits: Vec<f32> = (0..B * T * V)
        .map(|_| rng.gen_range(-4.0f32..4.0))
        .collect();
    // targets[b*T + t] = label of position t+1; -100 on the prompt and at t = T-1.
    let targets: Vec<i64> = (0..B * T)
        .map(|r| {
            let t = r % T;
            if t + 1 < PROMPT || t == T - 1 {
                IGNORE_INDEX
            } else {
                rng.gen_range(0..V as i64)
            }
        })
        .collect();
    (logits, targets)
}

/// One forward + backward; the gradient overwrites `logits`.
fn forward_backward(logits: &mut [f32], targets: &[i64]) -> f32 {
    let (mut row_logp, mut row_lse) = (vec![0.0; B * T], vec![0.0; B * T]);
    logprobs_forward(&mut row_logp, &mut row_lse, logits, targets, V);
    let total: f32 = row_logp.iter().sum();
    // d(sum of sequence log-probs)/d logp = 1 for every sequence.
    logprobs_backward(logits, &row_lse, targets, |_| 1.0, V);
    total
}

fn rss_kb(field: &str) -> usize {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn bench(c: &mut Criterion) {
    eprintln!("{}", autograd::cpu::describe());
    // Reuse freed buffers, as the `dpo` binary does (no page faults per iteration).
    autograd::keep_freed_memory();
    let (mut work, targets) = inputs();
    let before = rss_kb("VmRSS:");
    forward_backward(&mut work, &targets);
    let peak = rss_kb("VmHWM:");
    let logits_mb = (B * T * V * 4) as f64 / 1e6;
    eprintln!(
        "logprobs [16,128,32000]: logits {logits_mb:.0} MB; peak RSS growth of one forward+backward {:.2} MB ({:.3}% of the logits)",
        peak.saturating_sub(before) as f64 / 1e3,
        100.0 * peak.saturating_sub(before) as f64 / 1e3 / logits_mb
    );
    let mut group = c.benchmark_group("logprobs_16x128x32000_fwd_bwd");
    group.sample_size(10);
    for threads in [1, 2] {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        group.bench_function(format!("threads_{threads}"), |b| {
            b.iter(|| pool.install(|| forward_backward(&mut work, &targets)))
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
