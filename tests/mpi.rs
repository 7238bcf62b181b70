//! Data-parallel training over MPI, end to end: `mpirun -n 2 dpo ...` at one
//! thread a rank against the single process (docs/distributed.md).
//!
//! Built only with `--features mpi` (Open MPI's `mpirun` on the PATH):
//! `cargo test --release --features mpi --test mpi`. `.ci/run` runs it.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{assert_same_files, golden_dir, set_flag, train_ids_args, worst_relative_diff, Run};

/// No run of these tests takes this long; past it a rank is waiting forever.
const HANG: Duration = Duration::from_secs(120);

/// Runs `mpirun -n RANKS dpo --threads 1 ARGS` in tests/golden (or the plain
/// binary for `ranks == 0`), failing the test if it does not end by itself.
fn launch(ranks: usize, args: &[&str]) -> Run {
    let dpo = env!("CARGO_BIN_EXE_dpo");
    let mut command = if ranks == 0 {
        Command::new(dpo)
    } else {
        let mut mpirun = Command::new("mpirun");
        mpirun.args(["--allow-run-as-root", "--oversubscribe", "-n"]);
        mpirun.arg(ranks.to_string()).arg(dpo);
        mpirun
    };
    let mut child = command
        .args(["--threads", "1"])
        .args(args)
        .current_dir(golden_dir())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("cannot start mpirun (is Open MPI installed?)");
    let started = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if started.elapsed() > HANG {
            child.kill().unwrap();
            panic!("`dpo {}` on {ranks} ranks hangs", args.join(" "));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let output = child.wait_with_output().unwrap();
    Run {
        code: output.status.code(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

/// 4 SGD steps of DPO on the first 8 pairs of the golden ids/ case, the
/// whole file each step, on `ranks` ranks (0: the plain binary).
fn dpo_sgd(ranks: usize, data: &Path, out: &Path, extra: &[&str]) -> Run {
    let train = set_flag(&train_ids_args(out), "--data", data.to_str().unwrap());
    let sgd = ["--optimizer", "sgd", "--lr", "0.5", "--max-grad-norm", "0"];
    let batch = ["--batch-size", "8", "--no-progress"];
    launch(ranks, &[&train[..], &sgd, &batch, extra].concat())
}

/// The first 8 pairs of ids/prefs.jsonl, in `dir`.
fn eight_pairs(dir: &Path) -> std::path::PathBuf {
    let text = std::fs::read_to_string(golden_dir().join("ids/prefs.jsonl")).unwrap();
    let path = dir.join("pairs8.jsonl");
    let lines: Vec<&str> = text.lines().take(8).collect();
    std::fs::write(&path, lines.join("\n") + "\n").unwrap();
    path
}

#[test]
fn two_ranks_train_the_single_process_weights_and_repeat_bit_for_bit() {
    let tmp = tempfile::tempdir().unwrap();
    let data = eight_pairs(tmp.path());
    let one = tmp.path().join("one");
    let two_a = tmp.path().join("two_a");
    let two_b = tmp.path().join("two_b");
    let steps = ["--steps", "4"];
    let single = dpo_sgd(0, &data, &one, &steps);
    single.assert_ok();
    let run_a = dpo_sgd(2, &data, &two_a, &steps);
    run_a.assert_ok();
    dpo_sgd(2, &data, &two_b, &steps).assert_ok();

    // One summary, from rank 0, with the single process's losses.
    let (summary, expected) = (run_a.json(), single.json());
    assert_eq!(run_a.stdout.trim().lines().count(), 1, "{run_a}");
    for key in ["first_loss", "final_loss"] {
        let (a, e) = (
            summary[key].as_f64().unwrap(),
            expected[key].as_f64().unwrap(),
        );
        assert!((a - e).abs() <= 1e-6 * e.abs(), "{key}: {a} vs {e}");
    }
    let diff = worst_relative_diff(&two_a, &one);
    assert!(
        diff <= 1e-5,
        "2 ranks vs 1 process: worst tensor off by {diff:e}"
    );
    assert_same_files(
        &two_a,
        &two_b,
        &["model.safetensors"],
        "two runs on 2 ranks",
    );
}

/// A Llama-family model (grouped-query heads, llama3 rope scaling, an
/// untied head; fresh from `--config llama-tiny`) trains on 2 ranks to the
/// single process's weights, as GPT-2 does.
#[test]
fn two_ranks_train_a_llama_family_model_like_one_process() {
    let tmp = tempfile::tempdir().unwrap();
    let data = eight_pairs(tmp.path());
    let init = tmp.path().join("init");
    launch(
        0,
        &[
            "sft",
            "--config",
            "llama-tiny",
            "--data",
            "ids/prefs.jsonl",
            "--out",
            init.to_str().unwrap(),
            "--steps",
            "1",
            "--no-progress",
        ],
    )
    .assert_ok();
    let (one, two) = (tmp.path().join("one"), tmp.path().join("two"));
    for (ranks, out) in [(0, &one), (2, &two)] {
        let train = [
            "train",
            "--policy",
            init.to_str().unwrap(),
            "--ref",
            init.to_str().unwrap(),
            "--data",
            data.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
            "--optimizer",
            "sgd",
            "--lr",
            "0.5",
            "--max-grad-norm",
            "0",
            "--batch-size",
            "8",
            "--steps",
            "3",
            "--no-progress",
        ];
        launch(ranks, &train).assert_ok();
    }
    let diff = worst_relative_diff(&two, &one);
    assert!(
        diff <= 1e-5,
        "llama-tiny on 2 ranks vs 1 process: off by {diff:e}"
    );
}

/// LoRA adapters (all-linear, no dropout) on a tiny Llama train on 2 ranks,
/// and on 2 ranks with 2 micro-batches each, to the single process's adapters.
#[test]
fn two_ranks_train_lora_adapters_like_one_process() {
    let tmp = tempfile::tempdir().unwrap();
    let data = eight_pairs(tmp.path());
    let runs = [(0, "one", "1"), (2, "two", "1"), (2, "two_accum", "2")];
    for (ranks, name, grad_accum) in runs {
        let out = tmp.path().join(name);
        let train = [
            "train",
            "--policy",
            "lora/llama/base",
            "--use-peft",
            "--lora-targets",
            "all-linear",
            "--lora-r",
            "4",
            "--lora-dropout",
            "0",
            "--data",
            data.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
            "--optimizer",
            "sgd",
            "--lr",
            "0.5",
            "--max-grad-norm",
            "0",
            "--batch-size",
            "8",
            "--grad-accum",
            grad_accum,
            "--steps",
            "3",
            "--no-progress",
        ];
        launch(ranks, &train).assert_ok();
        assert!(out.join("adapter_model.safetensors").is_file());
    }
    for name in ["two", "two_accum"] {
        let diff = worst_relative_diff(&tmp.path().join(name), &tmp.path().join("one"));
        assert!(diff <= 1e-5, "LoRA, {name} vs 1 process: off by {diff:e}");
    }
}

#[test]
fn gradient_accumulation_on_two_ranks_equals_the_single_process() {
    // SFT: the loss is a mean over scored tokens, so the micro-batches weigh
    // by their tokens, not their rows.
    let tmp = tempfile::tempdir().unwrap();
    let sft = |ranks: usize, out: &Path, grad_accum: &str| {
        launch(
            ranks,
            &[
                "sft",
                "--init",
                "ids/policy",
                "--data",
                "ids/prefs.jsonl",
                "--out",
                out.to_str().unwrap(),
                "--optimizer",
                "sgd",
                "--lr",
                "0.5",
                "--max-grad-norm",
                "0",
                "--steps",
                "3",
                "--batch-size",
                "10",
                "--grad-accum",
                grad_accum,
                "--no-progress",
            ],
        )
    };
    let (one, two) = (tmp.path().join("one"), tmp.path().join("two"));
    sft(0, &one, "1").assert_ok();
    sft(2, &two, "2").assert_ok();
    let diff = worst_relative_diff(&two, &one);
    assert!(diff <= 1e-5, "2 ranks x 2 micro-batches: off by {diff:e}");
}

#[test]
fn a_run_saved_on_two_ranks_resumes_on_one() {
    let tmp = tempfile::tempdir().unwrap();
    let data = eight_pairs(tmp.path());
    let (straight, resumed) = (tmp.path().join("straight"), tmp.path().join("resumed"));
    dpo_sgd(0, &data, &straight, &["--steps", "4"]).assert_ok();
    dpo_sgd(2, &data, &resumed, &["--steps", "2"]).assert_ok();
    dpo_sgd(0, &data, &resumed, &["--steps", "4", "--resume"]).assert_ok();
    let diff = worst_relative_diff(&resumed, &straight);
    assert!(
        diff <= 1e-5,
        "resumed on another rank count: off by {diff:e}"
    );
}

#[test]
fn a_failing_rank_ends_the_job_with_one_error_line() {
    let tmp = tempfile::tempdir().unwrap();
    let data = eight_pairs(tmp.path());
    // --out is a regular file: only rank 0 opens it, the others wait for it.
    let out = tmp.path().join("a_file");
    std::fs::write(&out, "not a directory").unwrap();
    let run = dpo_sgd(2, &data, &out, &["--steps", "2"]);
    assert!(matches!(run.code, Some(c) if c != 0), "{run}");
    let errors: Vec<&str> = run
        .stderr
        .lines()
        .filter(|l| l.starts_with("error"))
        .collect();
    assert_eq!(errors.len(), 1, "{run}");
    assert!(errors[0].contains("a_file"), "{run}");
    assert!(!run.stderr.contains("panicked"), "{run}");

    // An objective whose batch cannot be split is refused, not trained.
    let kto_out = tmp.path().join("kto");
    let args = [&train_ids_args(&kto_out)[..], &["--loss", "kto"]].concat();
    let run = launch(2, &args);
    assert!(matches!(run.code, Some(c) if c != 0), "{run}");
    assert!(run.stderr.contains("one rank"), "{run}");
}

#[test]
fn skipped_rows_are_reported_once_not_once_a_rank() {
    let tmp = tempfile::tempdir().unwrap();
    let data = eight_pairs(tmp.path());
    let mut text = std::fs::read_to_string(&data).unwrap();
    text.push_str("{\"prompt\": \"a row with no responses\"}\n");
    std::fs::write(&data, text).unwrap();
    let run = dpo_sgd(
        2,
        &data,
        &tmp.path().join("out"),
        &["--steps", "1", "--skip-invalid"],
    );
    run.assert_ok();
    assert_eq!(run.stderr.matches("bad rows skipped").count(), 1, "{run}");
}
