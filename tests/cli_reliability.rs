//! A run that cannot work is refused at once, with one line, instead of
//! failing late or doing harm: a model whose step does not fit in memory,
//! an `--out` that is one of the run's inputs or holds a checkpoint that no
//! run of the command wrote, `--threads 0`. And a `--data` that blocks (a
//! FIFO with no writer) still ends on Ctrl-C.

use crate::common;

use std::path::Path;
use std::time::{Duration, Instant};

use crate::common::{dpo, golden_dir, read, train_ids};

/// The files of the golden ids/ policy, copied into `dir`.
fn copy_policy(dir: &Path) {
    common::copy_checkpoint(&golden_dir().join("ids/policy"), dir);
}

#[test]
fn a_model_whose_step_cannot_fit_is_refused_before_it_is_allocated() {
    let tmp = tempfile::tempdir().unwrap();
    // 1.27e9 parameters: weights, gradients and AdamW alone nearly fill a
    // 24 GiB machine, and 100000 blocks of activations do not fit in any
    // (the batch of 512 makes sure of it).
    let config = tmp.path().join("config.json");
    std::fs::write(
        &config,
        r#"{"vocab_size": 256, "block_size": 64, "n_layer": 100000, "n_head": 2, "n_embd": 32}"#,
    )
    .unwrap();
    let out = tmp.path().join("out");
    let started = Instant::now();
    let run = dpo(&[
        "sft",
        "--config",
        config.to_str().unwrap(),
        "--data",
        "sft/sft.jsonl",
        "--out",
        out.to_str().unwrap(),
        "--batch-size",
        "512",
    ]);
    run.assert_one_line_error();
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "refused only after {:?}",
        started.elapsed()
    );
    assert!(
        run.stderr.contains("GiB at its peak")
            && run.stderr.contains("GiB available")
            && run.stderr.contains("--batch-size")
            && run.stderr.contains("--allow-oom-risk"),
        "{run}"
    );
    assert!(!out.exists(), "nothing is written for a refused run");
}

#[test]
fn an_out_that_is_an_input_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let policy = tmp.path().join("policy");
    copy_policy(&policy);
    let weights = read(&policy.join("model.safetensors"));
    let link = tmp.path().join("link");
    std::os::unix::fs::symlink(&policy, &link).unwrap();
    let policy_arg = policy.to_str().unwrap();
    for (out, flag) in [(&policy, "--policy"), (&link, "--policy")] {
        let args = [
            "train",
            "--policy",
            policy_arg,
            "--ref",
            "ids/ref",
            "--data",
            "ids/prefs.jsonl",
            "--steps",
            "1",
            "--out",
            out.to_str().unwrap(),
        ];
        let run = dpo(&args);
        run.assert_one_line_error();
        assert!(run.stderr.contains(flag), "{run}");
    }
    // The reference, and sft's --init.
    let run = dpo(&[
        "train",
        "--policy",
        "ids/policy",
        "--ref",
        policy_arg,
        "--data",
        "ids/prefs.jsonl",
        "--out",
        link.to_str().unwrap(),
    ]);
    run.assert_one_line_error();
    assert!(run.stderr.contains("--ref"), "{run}");
    let run = dpo(&[
        "sft",
        "--init",
        policy_arg,
        "--data",
        "ids/prefs.jsonl",
        "--out",
        policy_arg,
    ]);
    run.assert_one_line_error();
    assert!(run.stderr.contains("--init"), "{run}");
    assert_eq!(read(&policy.join("model.safetensors")), weights);
    assert!(!policy.join("trainer_state.json").exists());
}

#[test]
fn a_checkpoint_no_run_wrote_is_replaced_only_with_overwrite() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    copy_policy(&out);
    let weights = read(&out.join("model.safetensors"));
    let run = train_ids(&out, &["--steps", "1"]);
    run.assert_one_line_error();
    assert!(
        run.stderr.contains("model.safetensors") || run.stderr.contains("config.json"),
        "{run}"
    );
    assert!(run.stderr.contains("--overwrite"), "{run}");
    assert_eq!(read(&out.join("model.safetensors")), weights);

    train_ids(&out, &["--steps", "1", "--overwrite"]).assert_ok();
    // Its own checkpoint: a new run of the same command replaces it.
    train_ids(&out, &["--steps", "1"]).assert_ok();
    // Another command's is refused.
    let run = dpo(&[
        "sft",
        "--init",
        "ids/policy",
        "--data",
        "ids/prefs.jsonl",
        "--steps",
        "1",
        "--out",
        out.to_str().unwrap(),
    ]);
    run.assert_one_line_error();
    assert!(run.stderr.contains("no sft run wrote"), "{run}");
}

#[test]
fn zero_threads_are_refused() {
    let run = dpo(&[&["--threads", "0"][..], &common::eval_ids_args()].concat());
    run.assert_one_line_error();
    assert!(run.stderr.contains("--threads must be at least 1"), "{run}");
}

#[cfg(unix)]
#[test]
fn ctrl_c_ends_a_run_blocked_on_a_fifo_with_no_writer() {
    use std::os::unix::process::ExitStatusExt;
    use std::process::{Command, Stdio};

    let tmp = tempfile::tempdir().unwrap();
    let fifo = tmp.path().join("data.jsonl");
    let made = Command::new("mkfifo").arg(&fifo).status().unwrap();
    assert!(made.success(), "mkfifo failed");
    let mut command = Command::new(env!("CARGO_BIN_EXE_dpo"));
    // A test run from a shell's background job inherits SIGINT ignored (a
    // POSIX shell ignores it for its asynchronous commands, and the ignore
    // passes through exec); Ctrl-C at a terminal reaches a process whose
    // SIGINT is the default action, which is the case this test checks.
    // SAFETY: signal() is async-signal-safe, as pre_exec requires.
    unsafe {
        use std::os::unix::process::CommandExt;
        command.pre_exec(|| {
            libc::signal(libc::SIGINT, libc::SIG_DFL);
            Ok(())
        });
    }
    let mut child = command
        .args(["sft", "--config", "tiny", "--no-progress", "--data"])
        .arg(&fifo)
        .arg("--out")
        .arg(tmp.path().join("out"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_secs(1));
    assert!(
        child.try_wait().unwrap().is_none(),
        "dpo did not wait for a writer"
    );
    let pid = child.id().to_string();
    let sent = Command::new("kill").args(["-INT", &pid]).status().unwrap();
    assert!(sent.success(), "kill -INT failed");
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if started.elapsed() > Duration::from_secs(5) {
            let _ = child.kill();
            panic!("dpo still runs 5 s after SIGINT");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(status.signal(), Some(2), "{status:?}");
}
