//! The fault test of checkpoints: `kill -9` a `--save-every 1` run at random
//! points, again and again, and check that whatever it left behind loads,
//! and that `--resume` from it ends bitwise equal to an uninterrupted run.
//!
//! A kill can land anywhere: in a step, while a checkpoint is written to its
//! temporary folder, at the commit rename, between the renames that publish
//! it. The checkpoint module (src/trainer/checkpoint.rs) promises that each
//! of these leaves either the old checkpoint or the new one, whole.
//!
//! Slow (a minute or two on 2 cores), so `#[ignore]`d in a plain `cargo
//! test`; `.ci/run` runs it. `DPO_KILL_TRIALS=N` sets the number of killed
//! runs (default 50).

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::{assert_same_files, golden_dir, IDS};
use rand::{Rng, SeedableRng};
use transformer::Model;

const STEPS: &str = "30";

/// `dpo --threads 1 train` on the golden ids/ case with a checkpoint after
/// every step, into `out`; one thread, so that every run is bitwise repeatable.
fn train_command(out: &Path, resume: bool) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_dpo"));
    command
        .current_dir(golden_dir())
        .args(["--threads", "1", "train"])
        .args(IDS)
        .args(["--steps", STEPS, "--save-every", "1", "--batch-size", "3"])
        .args(["--optimizer", "adamw", "--lr", "1e-2", "--seed", "3"])
        .arg("--out")
        .arg(out)
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    if resume {
        command.arg("--resume");
    }
    command
}

/// Whether `out` holds a checkpoint, published or staged.
fn has_checkpoint(out: &Path) -> bool {
    out.join("trainer_state.json").exists() || out.join(".checkpoint.staged").exists()
}

#[test]
#[ignore = "fault test, a minute or two: .ci/run runs it"]
fn killed_runs_resume_bitwise_equal_to_an_uninterrupted_run() {
    let trials: usize = std::env::var("DPO_KILL_TRIALS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(50);
    let tmp = tempfile::tempdir().unwrap();
    let straight = tmp.path().join("straight");
    let started = Instant::now();
    let output = train_command(&straight, false).output().unwrap();
    let run_time = started.elapsed();
    assert!(output.status.success(), "{output:?}");

    let mut rng = rand::rngs::StdRng::seed_from_u64(2026);
    // How long a run lasts varies with the machine's load (fsync above all):
    // a run that ends before its kill shortens the estimate the kills aim at.
    let mut run_time = run_time;
    let (mut killed, mut attempts, mut before_first_save) = (0, 0, 0);
    // Kills between saves, while writing the temporary folder, after the commit point.
    let mut landed = [0; 3];
    while killed < trials {
        attempts += 1;
        assert!(
            attempts <= 10 * trials,
            "too few kills landed in {attempts} runs"
        );
        let out = tmp.path().join(format!("killed-{attempts}"));
        let started = Instant::now();
        let mut child = train_command(&out, false).spawn().unwrap();
        let at = run_time.mul_f64(rng.gen_range(0.05..1.0));
        let mut finished_alone = false;
        while started.elapsed() < at {
            if child.try_wait().unwrap().is_some() {
                finished_alone = true;
                break;
            }
            std::thread::sleep(Duration::from_micros(500));
        }
        if finished_alone {
            run_time = started.elapsed();
            continue; // nothing was interrupted
        }
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        if !has_checkpoint(&out) {
            before_first_save += 1;
            continue;
        }
        killed += 1;
        // Where the kill landed, as the folder shows it.
        let names: Vec<String> = std::fs::read_dir(&out)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        if names.iter().any(|n| n == ".checkpoint.staged") {
            landed[2] += 1;
        } else if names.iter().any(|n| n.starts_with(".checkpoint.tmp-")) {
            landed[1] += 1;
        } else {
            landed[0] += 1;
        }
        // What survived loads as it is (each file is whole) ...
        if out.join("model.safetensors").exists() {
            Model::<f32>::load(&out).unwrap_or_else(|e| {
                panic!("kill {killed} at {at:?}: the checkpoint does not load: {e}")
            });
        }
        // ... and resumes to the very weights of the uninterrupted run.
        let resumed = train_command(&out, true).output().unwrap();
        let stderr = String::from_utf8_lossy(&resumed.stderr);
        let finished = stderr.contains("already took");
        assert!(
            resumed.status.success() || finished,
            "kill {killed} at {at:?}: --resume failed: {stderr}"
        );
        assert_same_files(
            &straight,
            &out,
            &["model.safetensors", "optimizer.safetensors"],
            &format!("kill {killed} at {at:?}: --resume against the uninterrupted run"),
        );
        let left: Vec<_> = std::fs::read_dir(&out)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .filter(|name| name.to_string_lossy().starts_with('.'))
            .collect();
        assert!(left.is_empty(), "kill {killed}: left {left:?}");
        std::fs::remove_dir_all(&out).unwrap();
    }
    eprintln!(
        "{killed} runs killed with a checkpoint on disk, all resumed bitwise equal \
         ({attempts} runs started, {before_first_save} killed before their first save, \
         uninterrupted run {run_time:?}); killed between saves: {}, while writing a \
         checkpoint: {}, after its commit point: {}",
        landed[0], landed[1], landed[2]
    );
}
