//! Helpers shared by the end-to-end tests of the `dpo` binary: running it
//! on the golden cases, reading its JSON output, comparing checkpoints and
//! metrics with the tolerances of tests/golden/MANIFEST.json, and checking
//! that a resumed run ends bitwise equal to an uninterrupted one.

#![allow(dead_code)] // each test file uses a different subset

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;
use transformer::{Model, ModelConfig};

/// tests/golden/, where the golden files and their generator live.
pub fn golden_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden")
}

/// What one run of `dpo` left behind.
pub struct Run {
    /// The exit code; `None` when killed by a signal.
    pub code: Option<i32>,
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
}

impl Run {
    /// The whole of stdout as one JSON object, or a panic that shows the run.
    pub fn json(&self) -> serde_json::Map<String, Value> {
        match serde_json::from_str::<Value>(self.stdout.trim()) {
            Ok(Value::Object(map)) => map,
            _ => panic!("stdout is not one JSON object:\n{self}"),
        }
    }

    /// Panics, showing the run, unless the exit code is 0.
    pub fn assert_ok(&self) -> &Self {
        assert_eq!(self.code, Some(0), "dpo failed:\n{self}");
        self
    }

    /// Panics unless `dpo` refused the input with one clear line: a non-zero
    /// exit (not a signal), a single non-empty stderr line, no panic.
    pub fn assert_one_line_error(&self) -> &Self {
        assert!(
            matches!(self.code, Some(c) if c != 0),
            "expected an error exit:\n{self}"
        );
        assert!(!self.stderr.contains("panicked at"), "a panic:\n{self}");
        let lines: Vec<&str> = self
            .stderr
            .lines()
            .filter(|l| !l.trim().is_empty())
            .collect();
        assert_eq!(lines.len(), 1, "expected one error line:\n{self}");
        self
    }
}

impl std::fmt::Display for Run {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "exit {:?}\n--- stdout\n{}\n--- stderr\n{}",
            self.code, self.stdout, self.stderr
        )
    }
}

/// Runs `dpo ARGS` in `cwd`, with no progress bar on stderr.
pub fn dpo_in<S: AsRef<std::ffi::OsStr>>(cwd: &Path, args: &[S]) -> Run {
    let output = Command::new(env!("CARGO_BIN_EXE_dpo"))
        .args(args)
        .current_dir(cwd)
        .output()
        .expect("cannot start the dpo binary");
    Run {
        code: output.status.code(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

/// Runs `dpo ARGS` with cwd = tests/golden.
pub fn dpo<S: AsRef<std::ffi::OsStr>>(args: &[S]) -> Run {
    dpo_in(&golden_dir(), args)
}

/// The golden ids/ case (tests/golden/ids: a 40-token vocabulary, 10
/// pairs): policy, reference and preference data, as `eval` and `train`
/// take them.
pub const IDS: [&str; 6] = [
    "--policy",
    "ids/policy",
    "--ref",
    "ids/ref",
    "--data",
    "ids/prefs.jsonl",
];

/// [`IDS`] without the reference, for the reference-free losses.
pub const IDS_NO_REF: [&str; 4] = ["--policy", "ids/policy", "--data", "ids/prefs.jsonl"];

/// The arguments of `dpo eval` on the golden ids/ case.
pub fn eval_ids_args() -> Vec<&'static str> {
    [&["eval"][..], &IDS].concat()
}

/// `dpo eval` on the golden ids/ case, with `extra` flags.
pub fn eval_ids(extra: &[&str]) -> Run {
    dpo(&[&eval_ids_args()[..], extra].concat())
}

/// The arguments of `dpo train` on the golden ids/ case, writing to `out`.
pub fn train_ids_args(out: &Path) -> Vec<&str> {
    [&["train"][..], &IDS, &["--out", out.to_str().unwrap()]].concat()
}

/// `dpo train` on the golden ids/ case, with `extra` flags, writing to `out`.
pub fn train_ids(out: &Path, extra: &[&str]) -> Run {
    dpo(&[&train_ids_args(out)[..], extra].concat())
}

/// The arguments of `dpo sft` on the golden sft/ case (its data, from its
/// initial model), writing to `out`.
pub fn sft_golden_args(out: &Path) -> Vec<&str> {
    let out = out.to_str().unwrap();
    vec![
        "sft",
        "--data",
        "sft/sft.jsonl",
        "--init",
        "sft/init",
        "--out",
        out,
    ]
}

/// `args` with the value that follows `flag` replaced by `value` (a missing
/// or broken input in place of a golden one).
///
/// # Panics
/// If `flag` is not followed by a value in `args`.
pub fn set_flag<'a>(args: &[&'a str], flag: &str, value: &'a str) -> Vec<&'a str> {
    let mut args = args.to_vec();
    let at = args
        .iter()
        .position(|a| *a == flag)
        .filter(|&i| i + 1 < args.len())
        .unwrap_or_else(|| panic!("no {flag} VALUE in {args:?}"));
    args[at + 1] = value;
    args
}

/// The bytes of a file, or a panic that names it.
pub fn read(path: &Path) -> Vec<u8> {
    std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Metrics tolerance: `|a - e| <= 2e-6 + 2e-5 |e|`.
pub fn metric_close(actual: f64, expected: f64) -> bool {
    (actual - expected).abs() <= 2e-6 + 2e-5 * expected.abs()
}

/// A checkpoint as named float32 tensors, read by the project's strict loader.
pub fn load_weights(dir: &Path) -> (ModelConfig, Vec<(String, Vec<f32>)>) {
    let model =
        Model::<f32>::load(dir).unwrap_or_else(|e| panic!("cannot load {}: {e}", dir.display()));
    // the trained tensors: every parameter, or a LoRA checkpoint's adapters
    let tensors = model
        .trainable_names()
        .into_iter()
        .zip(model.trainable_params())
        .map(|(name, t)| (name, t.iter().copied().collect()))
        .collect();
    (model.config().clone(), tensors)
}

/// Compares the checkpoint in `actual` with `expected`, where `input` is the
/// checkpoint before the step: elementwise `|a - e| <= 1e-5 + 1e-4 |e|`, and
/// per tensor `||a - e|| <= 0.01 ||e - input|| + 1e-7 sqrt(n)` (the step
/// itself right to 1%, which the elementwise rule cannot see for values
/// near 1 that move by 1e-4). Returns every failure, one per line.
pub fn compare_checkpoints(actual: &Path, expected: &Path, input: &Path) -> Result<(), String> {
    let (a_cfg, a) = load_weights(actual);
    let (e_cfg, e) = load_weights(expected);
    let (_, x) = load_weights(input);
    if a_cfg != e_cfg {
        return Err(format!("config {a_cfg:?}, expected {e_cfg:?}"));
    }
    let mut failures = Vec::new();
    for (((name, a), (_, e)), (_, x)) in a.iter().zip(&e).zip(&x) {
        let mut worst = (0.0f64, 0usize);
        let (mut err2, mut step2) = (0.0f64, 0.0f64);
        for (i, ((&a, &e), &x)) in a.iter().zip(e).zip(x).enumerate() {
            let (a, e, x) = (a as f64, e as f64, x as f64);
            let excess = (a - e).abs() - (1e-5 + 1e-4 * e.abs());
            if excess > worst.0 {
                worst = (excess, i);
            }
            err2 += (a - e) * (a - e);
            step2 += (e - x) * (e - x);
        }
        if worst.0 > 0.0 {
            let i = worst.1;
            failures.push(format!(
                "{name}[{i}]: {} vs expected {} (input {})",
                a[i], e[i], x[i]
            ));
        }
        let bound = 0.01 * step2.sqrt() + 1e-7 * (a.len() as f64).sqrt();
        if err2.sqrt() > bound {
            failures.push(format!(
                "{name}: ||actual - expected|| = {:.3e} > {bound:.3e} (||step|| = {:.3e})",
                err2.sqrt(),
                step2.sqrt()
            ));
        }
    }
    if failures.is_empty() {
        Ok(())
    } else {
        Err(failures.join("\n"))
    }
}

/// True when `text` holds `number` as a whole number (not inside a longer one).
pub fn contains_number(text: &str, number: u64) -> bool {
    let needle = number.to_string();
    let bytes = text.as_bytes();
    text.match_indices(&needle).any(|(at, _)| {
        let before = at.checked_sub(1).map(|i| bytes[i]);
        let after = bytes.get(at + needle.len()).copied();
        !before.is_some_and(|b| b.is_ascii_digit()) && !after.is_some_and(|b| b.is_ascii_digit())
    })
}

/// Copies a checkpoint directory (config.json, model.safetensors) to `to`.
pub fn copy_checkpoint(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for file in ["config.json", "model.safetensors"] {
        std::fs::copy(from.join(file), to.join(file)).unwrap();
    }
}

/// The worst per-tensor relative difference `||a - b|| / ||b||` of two checkpoints.
pub fn worst_relative_diff(a: &Path, b: &Path) -> f64 {
    let (_, a) = load_weights(a);
    let (_, b) = load_weights(b);
    a.iter()
        .zip(&b)
        .map(|((_, x), (_, y))| {
            let diff: f64 = x.iter().zip(y).map(|(p, q)| ((p - q) as f64).powi(2)).sum();
            let norm: f64 = y.iter().map(|q| (*q as f64).powi(2)).sum();
            (diff / norm.max(1e-30)).sqrt()
        })
        .fold(0.0, f64::max)
}

/// Panics unless each of `files` is byte for byte the same in `actual` as in
/// `expected`; `what` says which two runs are compared.
pub fn assert_same_files(expected: &Path, actual: &Path, files: &[&str], what: &str) {
    for file in files {
        // assert!, not assert_eq!: a diff of two weight files is unreadable
        assert!(
            read(&expected.join(file)) == read(&actual.join(file)),
            "{what}: {file} differs"
        );
    }
}

/// The three runs of [`assert_resumes_bitwise`], for the checks a test adds.
pub struct Resumed {
    /// The uninterrupted run, in `straight_dir`.
    pub straight: Run,
    /// The run stopped early, in `resumed_dir`.
    pub first: Run,
    /// Its `--resume` to the end, in `resumed_dir`.
    pub resumed: Run,
    /// `DIR/straight`.
    pub straight_dir: PathBuf,
    /// `DIR/resumed`.
    pub resumed_dir: PathBuf,
}

/// The resume guarantee: `first` steps, then `--resume` to `total`, end with
/// the very bytes of `total` straight steps.
///
/// `train(out, steps, resume)` runs the trainer into `out` for `steps` steps
/// (passing `--resume` when `resume`); it runs `total` steps into
/// `dir/straight`, `first` steps into `dir/resumed`, then resumes there to
/// `total`. Each run must succeed, and each of `files` must differ after
/// `first` steps (or the comparison would prove nothing) and be the same,
/// byte for byte, at the end.
pub fn assert_resumes_bitwise(
    dir: &Path,
    files: &[&str],
    first: &str,
    total: &str,
    mut train: impl FnMut(&Path, &str, bool) -> Run,
) -> Resumed {
    let (straight_dir, resumed_dir) = (dir.join("straight"), dir.join("resumed"));
    let straight = train(&straight_dir, total, false);
    straight.assert_ok();
    let first_run = train(&resumed_dir, first, false);
    first_run.assert_ok();
    for file in files {
        assert!(
            read(&straight_dir.join(file)) != read(&resumed_dir.join(file)),
            "{first} and {total} steps wrote the same {file}"
        );
    }
    let resumed = train(&resumed_dir, total, true);
    resumed.assert_ok();
    assert_same_files(
        &straight_dir,
        &resumed_dir,
        files,
        &format!("{first} steps + --resume to {total} against {total} straight steps"),
    );
    Resumed {
        straight,
        first: first_run,
        resumed,
        straight_dir,
        resumed_dir,
    }
}
