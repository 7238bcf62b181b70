//! Hostile inputs and faults: every one gets a clear one-line refusal (or
//! the right result), never a panic, an allocation abort, a run without end
//! or a checkpoint that silently disagrees with itself.
//!
//! - absurd configs, a data file or a checkpoint that is a link to
//!   `/dev/zero`, `--threads` and `--max-new-tokens` far too large, a label
//!   smoothing that inverts the preference, a model with NaN weights asked
//!   to generate, an `--out` that cannot be written;
//! - checkpoints as one unit: a save interrupted after its commit point is
//!   finished by the next run (bitwise as if never interrupted), half-written
//!   temporaries are removed, and a checkpoint changed behind the trainer's
//!   back is refused by `--resume`.
//!
//! The kill -9 test of the same guarantees is tests/kill_resume.rs.

use crate::common;

use std::path::Path;
use std::sync::Arc;

use crate::common::{
    assert_same_files, copy_checkpoint, dpo, dpo_in, eval_ids, golden_dir, read, train_ids,
};
use transformer::Model;

/// The absolute path of a golden file, for runs in another directory.
fn golden(path: &str) -> String {
    golden_dir().join(path).display().to_string()
}

#[test]
fn a_label_smoothing_of_one_half_or_more_is_refused() {
    for e in ["0.5", "0.7", "1", "-0.1"] {
        let flag = format!("--label-smoothing={e}");
        let tmp = tempfile::tempdir().unwrap();
        let run = train_ids(&tmp.path().join("out"), &[&flag]);
        run.assert_one_line_error();
        assert!(run.stderr.contains("label smoothing"), "{run}");
        assert!(!tmp.path().join("out").exists(), "{run}");
        let run = eval_ids(&["--loss", "sigmoid", &flag]);
        run.assert_one_line_error();
        assert!(run.stderr.contains("[0, 0.5)"), "{run}");
    }
    // Just below one half is a valid (if extreme) cDPO.
    eval_ids(&["--label-smoothing", "0.49"]).assert_ok();
}

#[test]
fn thousands_of_threads_are_refused() {
    let run = dpo(&[&["--threads", "10000"][..], &common::eval_ids_args()[..]].concat());
    run.assert_one_line_error();
    assert!(run.stderr.contains("per core"), "{run}");
}

#[test]
fn an_endless_generation_is_refused_and_a_long_one_stays_bounded() {
    for n in ["1000000000000000000", "1000000000"] {
        let run = dpo(&[
            "generate",
            "--model",
            "text/policy",
            "--prompt",
            "a",
            "--max-new-tokens",
            n,
        ]);
        run.assert_one_line_error();
        assert!(run.stderr.contains("--max-new-tokens"), "{run}");
    }
    // Many times the block (32): the window slides, the run ends.
    let run = dpo(&[
        "generate",
        "--model",
        "text/policy",
        "--prompt",
        "a",
        "--max-new-tokens",
        "2000",
        "--seed",
        "1",
    ]);
    run.assert_ok();
    assert_eq!(run.json()["new_tokens"].as_u64(), Some(2000), "{run}");
}

#[test]
fn generating_from_non_finite_weights_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let mut model = Model::<f32>::load(&golden_dir().join("text/policy")).unwrap();
    let wte = Arc::make_mut(&mut model.params_mut().wte);
    wte.as_slice_mut().unwrap()[7] = f32::INFINITY;
    model.save(&tmp.path().join("inf")).unwrap();
    let run = dpo_in(
        tmp.path(),
        &[
            "generate",
            "--model",
            "inf",
            "--prompt",
            "a",
            "--temperature",
            "0",
        ],
    );
    run.assert_one_line_error();
    assert!(run.stderr.contains("not finite"), "{run}");
    assert!(run.stdout.is_empty(), "{run}");
}

#[test]
fn absurd_configs_are_refused_before_allocation() {
    let tmp = tempfile::tempdir().unwrap();
    for (name, fields) in [
        ("vocab", (10_000_000_000u64, 64u64, 2u64, 2u64, 32u64)),
        ("embd", (256, 64, 2, 2, 10_000_000)),
        ("block", (256, 1 << 40, 2, 2, 32)),
        ("layers", (256, 64, 100_000, 2, 128)),
        // 1.3e10 parameters pass the count, but training them with AdamW
        // needs 200 GiB: refused by this machine's memory.
        ("memory", (256, 64, 1_000_000, 2, 32)),
    ] {
        let (vocab_size, block_size, n_layer, n_head, n_embd) = fields;
        let config = tmp.path().join(format!("{name}.json"));
        let json = serde_json::json!({
            "vocab_size": vocab_size, "block_size": block_size, "n_layer": n_layer,
            "n_head": n_head, "n_embd": n_embd,
        });
        std::fs::write(&config, json.to_string()).unwrap();
        let out = tmp.path().join(format!("out-{name}"));
        let run = dpo(&[
            "sft",
            "--config",
            config.to_str().unwrap(),
            "--data",
            "sft/sft.jsonl",
            "--out",
            out.to_str().unwrap(),
            "--optimizer",
            "adamw",
            "--steps",
            "1",
        ]);
        run.assert_one_line_error();
        assert!(
            run.stderr.contains("parameters") || run.stderr.contains("32-bit"),
            "{name}: {run}"
        );
        assert!(!out.exists(), "{name}: {run}");
    }
}

#[cfg(unix)]
#[test]
fn files_that_never_end_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let zero = Path::new("/dev/zero");
    // A data file.
    let data = tmp.path().join("prefs.jsonl");
    std::os::unix::fs::symlink(zero, &data).unwrap();
    let run = dpo_in(
        tmp.path(),
        &[
            "train",
            "--policy",
            &golden("ids/policy"),
            "--ref",
            &golden("ids/ref"),
            "--data",
            "prefs.jsonl",
            "--out",
            "out",
        ],
    );
    run.assert_one_line_error();
    assert!(run.stderr.contains("prefs.jsonl:1: "), "{run}");
    assert!(run.stderr.contains("longer than 64 MiB"), "{run}");
    // The tensors, then the config, of a checkpoint.
    for file in ["model.safetensors", "config.json"] {
        let dir = tmp.path().join(format!("zero-{file}"));
        copy_checkpoint(&golden_dir().join("ids/policy"), &dir);
        std::fs::remove_file(dir.join(file)).unwrap();
        std::os::unix::fs::symlink(zero, dir.join(file)).unwrap();
        let run = dpo_in(
            tmp.path(),
            &[
                "eval",
                "--policy",
                dir.to_str().unwrap(),
                "--ref",
                &golden("ids/ref"),
                "--data",
                &golden("ids/prefs.jsonl"),
            ],
        );
        run.assert_one_line_error();
        assert!(run.stderr.contains(file), "{run}");
        // The tensors are mapped, which only a regular file can be; the config is read.
        let why = match file {
            "model.safetensors" => "not a regular file",
            _ => "larger than",
        };
        assert!(run.stderr.contains(why), "{run}");
    }
    // The optimizer state, then the trainer state, of a run to resume.
    for file in ["optimizer.safetensors", "trainer_state.json"] {
        let out = tmp.path().join(format!("zero-{file}"));
        train_to(&out, "1", &[]);
        std::fs::remove_file(out.join(file)).unwrap();
        std::os::unix::fs::symlink(zero, out.join(file)).unwrap();
        let run = train_ids(
            &out,
            &[&["--steps", "2"], &ADAMW[..], &["--resume"]].concat(),
        );
        run.assert_one_line_error();
        assert!(run.stderr.contains(file), "{run}");
    }
}

#[test]
fn an_out_that_cannot_be_written_is_refused_before_the_first_step() {
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("a_file");
    std::fs::write(&file, b"keep me").unwrap();
    // A folder under a file can never be created (whoever runs the test).
    let out = file.join("out");
    let run = train_ids(&out, &["--steps", "1"]);
    run.assert_one_line_error();
    assert!(run.stderr.contains("is not a directory"), "{run}");
    assert!(!run.stderr.contains("step 1"), "{run}");
    assert_eq!(read(&file), b"keep me");
}

const ADAMW: [&str; 8] = [
    "--batch-size",
    "3",
    "--lr",
    "1e-2",
    "--optimizer",
    "adamw",
    "--seed",
    "5",
];

fn train_to(out: &Path, steps: &str, extra: &[&str]) {
    let mut args = vec!["--steps", steps];
    args.extend_from_slice(&ADAMW);
    args.extend_from_slice(extra);
    train_ids(out, &args).assert_ok();
}

/// The files of a trainer checkpoint.
const CHECKPOINT_FILES: [&str; 4] = [
    "config.json",
    "model.safetensors",
    "optimizer.safetensors",
    "trainer_state.json",
];

#[test]
fn a_save_interrupted_after_its_commit_point_is_finished_by_the_next_run() {
    let tmp = tempfile::tempdir().unwrap();
    let (straight, at_two, crashed) = (
        tmp.path().join("straight"),
        tmp.path().join("at_two"),
        tmp.path().join("crashed"),
    );
    train_to(&straight, "3", &[]);
    train_to(&at_two, "2", &[]);
    train_to(&crashed, "1", &[]);
    // The run in `crashed` died while publishing its step-2 checkpoint: the
    // staged folder is complete, the model already moved, the rest not yet.
    let staged = crashed.join(".checkpoint.staged");
    std::fs::create_dir(&staged).unwrap();
    for file in CHECKPOINT_FILES {
        std::fs::copy(at_two.join(file), staged.join(file)).unwrap();
    }
    std::fs::rename(
        staged.join("model.safetensors"),
        crashed.join("model.safetensors"),
    )
    .unwrap();
    // ... and an earlier save had left half-written temporaries.
    std::fs::create_dir(crashed.join(".checkpoint.tmp-1-2")).unwrap();
    std::fs::write(
        crashed.join(".checkpoint.tmp-1-2/model.safetensors"),
        b"half",
    )
    .unwrap();
    std::fs::write(crashed.join(".model.safetensors.tmp-3-4"), b"half").unwrap();

    let run = train_ids(
        &crashed,
        &[&["--steps", "3"], &ADAMW[..], &["--resume"]].concat(),
    );
    run.assert_ok();
    assert_eq!(
        run.json()["steps"].as_u64(),
        Some(1),
        "resumed at step 2: {run}"
    );
    assert_same_files(
        &straight,
        &crashed,
        &["model.safetensors", "optimizer.safetensors"],
        "a run finished after a crash against the uninterrupted run",
    );
    let left: Vec<String> = std::fs::read_dir(&crashed)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name.starts_with('.'))
        .collect();
    assert!(left.is_empty(), "temporaries left behind: {left:?}");
}

#[test]
fn resume_refuses_a_checkpoint_changed_after_it_was_saved() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    train_to(&out, "1", &[]);
    let state: serde_json::Value =
        serde_json::from_slice(&read(&out.join("trainer_state.json"))).unwrap();
    let sums = state["sha256"].as_object().unwrap();
    for file in ["config.json", "model.safetensors", "optimizer.safetensors"] {
        assert_eq!(sums[file].as_str().unwrap().len(), 64, "{state}");
    }
    // The model of another step beside this run's optimizer and state.
    let other = tmp.path().join("other");
    train_to(&other, "2", &[]);
    std::fs::copy(
        other.join("model.safetensors"),
        out.join("model.safetensors"),
    )
    .unwrap();
    let run = train_ids(
        &out,
        &[&["--steps", "3"], &ADAMW[..], &["--resume"]].concat(),
    );
    run.assert_one_line_error();
    assert!(run.stderr.contains("model.safetensors"), "{run}");
    assert!(run.stderr.contains("SHA-256"), "{run}");
}

#[test]
fn every_save_leaves_one_consistent_checkpoint_and_no_temporaries() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    train_to(&out, "3", &["--save-every", "1"]);
    let mut names: Vec<String> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, CHECKPOINT_FILES);
    // An SGD run saved over it drops the AdamW state it no longer matches.
    train_ids(&out, &["--steps", "1", "--optimizer", "sgd"]).assert_ok();
    assert!(!out.join("optimizer.safetensors").exists());
}
