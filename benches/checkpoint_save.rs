//! A training checkpoint save of GPT-2 (124M) with AdamW's moments: the
//! wall time and the peak RSS of `save_checkpoint` (nanoGPT's files plus
//! `optimizer.safetensors` and `trainer_state.json`, written, hashed and
//! flushed to disk as `--save-every` and the end of a run write them).
//!
//! Run: `cargo bench --bench checkpoint_save`. Environment: `SAVES` (default
//! 5) saves, one after the other into the same folder, as a run's saves go;
//! `CONFIG` (default `gpt2`) a preset; `FORMAT` (`nanogpt`, default, or `hf`);
//! `OUT` the folder (default a fresh one under the system's temporary
//! folder, removed at the end). Before each save the kernel's peak-RSS mark
//! is reset (`/proc/self/clear_refs`), so `VmHWM` after it is the save's own
//! peak; the bench prints each save, then the medians, with the CPU.

use std::path::PathBuf;
use std::time::Instant;

use autograd::optim::AdamW;
use dpo_rs::trainer::checkpoint::{save_checkpoint, ModelFiles, TrainerState};
use dpo_rs::trainer::AnyOptimizer;
use transformer::{CheckpointFormat, Model, ModelConfig};

/// A field of `/proc/self/status`, in KiB (`VmRSS`, `VmHWM`).
fn status_kib(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|line| line.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// The process's CPU time so far (user + system, every thread), in seconds.
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // After the command name in parentheses: fields 14 and 15 are utime, stime.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map_or(Vec::new(), |(_, rest)| rest.split_whitespace().collect());
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // USER_HZ is 100 on Linux.
    (ticks(11) + ticks(12)) / 100.0
}

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    xs[xs.len() / 2]
}

fn main() {
    let env = |name: &str, default: &str| std::env::var(name).unwrap_or_else(|_| default.into());
    let saves: usize = env("SAVES", "5").parse().expect("SAVES: a number");
    let config_name = env("CONFIG", "gpt2");
    let format = match env("FORMAT", "nanogpt").as_str() {
        "hf" => CheckpointFormat::Hf,
        _ => CheckpointFormat::NanoGpt,
    };
    let config = ModelConfig::preset(&config_name).expect("CONFIG: a preset");
    let (out, remove_after) = match std::env::var("OUT") {
        Ok(dir) => (PathBuf::from(dir), false),
        Err(_) => (
            std::env::temp_dir().join(format!("dpo-bench-save-{}", std::process::id())),
            true,
        ),
    };

    let model = Model::<f32>::new(config, 0);
    // Moments of the parameters' shapes, every page written (zeros could
    // stay unmapped and hide from the RSS).
    let moment = |scale: f32| {
        model
            .trainable_params()
            .into_iter()
            .map(|p| p.mapv(|x| x * scale + 1e-3))
            .collect::<Vec<_>>()
    };
    let mut adamw = AdamW::new(0.0);
    adamw.load_state(1, moment(0.1), moment(0.01));
    let optimizer = AnyOptimizer::AdamW(adamw);
    let files = ModelFiles {
        format,
        tokenizer_files: Vec::new(),
    };
    let state = TrainerState {
        step: 1,
        optimizer: "adamw".into(),
        stage: "sft".into(),
        last_loss: 0.0,
        sha256: Default::default(),
        objective_state: None,
    };
    println!(
        "{config_name} ({} parameters), {} format, into {}",
        model.num_params(),
        format.name(),
        out.display()
    );
    println!(
        "{}, {} threads",
        autograd::cpu::describe(),
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );

    // What the model and the moments hold: a save's own memory is its peak
    // above this.
    let live = status_kib("VmRSS");
    println!(
        "RSS before the first save (weights and moments): {} MiB",
        live / 1024
    );
    let (mut seconds, mut cpus, mut peaks) = (Vec::new(), Vec::new(), Vec::new());
    for i in 0..saves {
        // Resets VmHWM to the current RSS (Linux 4.0+).
        let _ = std::fs::write("/proc/self/clear_refs", "5");
        let before = status_kib("VmRSS");
        let cpu_before = cpu_seconds();
        let started = Instant::now();
        let kept = save_checkpoint(&out, &model, &files, &optimizer, &state).expect("save");
        let s = started.elapsed().as_secs_f64();
        let cpu = cpu_seconds() - cpu_before;
        // The files this save replaced are removed in the background, as
        // during a run's next steps; waited for here, outside the timing.
        let removing = Instant::now();
        drop(kept);
        let removal = removing.elapsed().as_secs_f64();
        let peak = status_kib("VmHWM");
        let over_live = peak.saturating_sub(live) as f64 / 1024.0;
        println!(
            "save {i}: {s:.3} s ({cpu:.2} s CPU), RSS {} MiB before, peak {} MiB (+{over_live:.0} MiB over the first); then {removal:.3} s removing the files it replaced",
            before / 1024,
            peak / 1024
        );
        seconds.push(s);
        cpus.push(cpu);
        peaks.push(peak as f64 / 1024.0);
    }
    let bytes: u64 = std::fs::read_dir(&out)
        .map(|d| {
            d.flatten()
                .filter_map(|e| e.metadata().ok())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0);
    let peak = peaks.iter().copied().fold(0.0, f64::max);
    println!(
        "median of {saves}: {:.3} s ({:.2} s CPU); peak RSS {peak:.0} MiB, {:.0} MiB over the weights and moments; {:.0} MB written a save",
        median(seconds),
        median(cpus),
        peak - live as f64 / 1024.0,
        bytes as f64 / 1e6
    );
    if remove_after {
        let _ = std::fs::remove_dir_all(&out);
    }
}
