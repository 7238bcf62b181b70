//! Checkpoints of a training run: the model plus the optimizer's state, so
//! that a run can be resumed with `--resume`.
//!
//! `DIR/config.json` + `DIR/model.safetensors` are the model (see the
//! transformer crate's `checkpoint` module), in nanoGPT's or Hugging Face's
//! format ([`ModelFiles`]), with the tokenizer files of the model it started
//! from (`tokenizer.json`, ...); `DIR/optimizer.safetensors`
//! holds AdamW's moments as `{param}.exp_avg` / `{param}.exp_avg_sq`, and
//! `DIR/trainer_state.json` the step count, the optimizer, the stage and the
//! SHA-256 of each of the other files.
//!
//! # One checkpoint, one unit
//!
//! A save must never leave the model of step `s+1` beside the state of step
//! `s`, whenever the process dies (a `kill -9`, a full disk, a power cut).
//! [`save_checkpoint`] therefore commits the files as one unit, in the way
//! of a database's redo log:
//!
//! 1. every file is written into a fresh `DIR/.checkpoint.tmp-PID-NANOS/` and
//!    flushed to disk, then the folder itself; `trainer_state.json` is
//!    written last, once the checksums of the others are known;
//! 2. that folder is renamed to `DIR/.checkpoint.staged`: the commit point.
//!    Before it, the old checkpoint is untouched; after it, the new one is
//!    whole on disk;
//! 3. its files are renamed over the old ones, `trainer_state.json` last,
//!    and the empty folder is removed. Each old file keeps a second name in
//!    a fresh `DIR/.checkpoint.tmp-PID-NANOS/`, removed in the background.
//!
//! The next run on `DIR` ([`open_run_dir`]) first finishes an interrupted
//! step 3 (the staged folder is complete, so it only renames what is left)
//! and removes what an interrupted step 1, or a removal in the background,
//! left. Each rename replaces one whole file, so a reader of `DIR` (`dpo
//! eval --policy DIR`) never sees a partly written file. `--resume` then
//! checks the checksums in the state against the files, and refuses a
//! checkpoint changed behind its back.
//!
//! Two runs writing into the same `DIR` at once are not supported.
//!
//! # How the files are written
//!
//! No file is built in memory first. The safetensors files (the weights and
//! the moments) are written straight from the live tensors, borrowed
//! (`transformer::safetensors_writer`): the header, then each tensor's
//! little-endian bytes, which on every CPU this project runs on are the
//! tensor's own memory, 4 MiB at a time into the staging file. The disk
//! starts writing each file while it is being filled
//! (`transformer::checkpoint::write_synced_with`), so its `fsync` waits for
//! the last few MiB only. Each file is hashed by a second pass over the same
//! borrowed tensors, on a thread of its own beside the one writing it: the
//! SHA-256 of a file is one chain, and copying the bytes into the OS's page
//! cache costs about as much, so the passes of the model's file and the
//! optimizer's (twice as large) keep two cores busy to the end. The state
//! follows. The bytes are those `safetensors::serialize` made of the same
//! tensors, so checksums of older checkpoints still hold. Nothing is copied:
//! the optimizer lends its moments (`Optimizer::state`) as the model lends
//! its weights. The files a save replaces are removed on a thread of their
//! own ([`ReplacedFiles`]), while training goes on. A GPT-2 (124M) save with
//! AdamW, 1.5 GB of files, is measured in docs/architecture.md,
//! "Checkpoint saves".

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, ensure, Context, Result};
use autograd::optim::Optimizer;
use autograd::Tensor;
use safetensors::tensor::Dtype;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use transformer::checkpoint::unique_suffix;
use transformer::checkpoint::{CONFIG_FILE, WEIGHTS_FILE};
use transformer::hf::INDEX_FILE;
use transformer::hf_tokenizer::TOKENIZER_FILES;
use transformer::lora::{ADAPTER_CONFIG_FILE, ADAPTER_WEIGHTS_FILE};
use transformer::safetensors_writer::SafetensorsFile;
use transformer::{write_synced, CheckpointFile, CheckpointFormat, FileContents, Model};

use super::settings::{AnyOptimizer, TrainHyper};

/// What `trainer_state.json` records.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TrainerState {
    /// Optimizer steps done.
    pub step: u64,
    /// `adamw` or `sgd`.
    pub optimizer: String,
    /// The objective's stage: `sft`, `dpo` or `kto`.
    pub stage: String,
    /// Loss of the last step.
    pub last_loss: f64,
    /// The SHA-256 (lowercase hex, as `sha256sum` prints it) of every other
    /// file of the checkpoint, by file name. Empty in the states of older
    /// versions, which are resumed unchecked.
    #[serde(default)]
    pub sha256: BTreeMap<String, String>,
    /// What the objective carries between steps (see `Objective::state`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub objective_state: Option<serde_json::Value>,
}

/// How a run writes the model in its checkpoints: the format, and the
/// tokenizer files that travel with the model (those of the checkpoint the
/// run started from; none for the byte tokenizer).
#[derive(Debug, Clone)]
pub struct ModelFiles {
    /// nanoGPT's or Hugging Face's files.
    pub format: CheckpointFormat,
    /// `(name, bytes)` of each tokenizer file, written beside the model.
    pub tokenizer_files: Vec<(&'static str, Vec<u8>)>,
}

const STATE_FILE: &str = "trainer_state.json";
const OPTIMIZER_FILE: &str = "optimizer.safetensors";
/// The complete new checkpoint between the commit point and its last rename.
const STAGED_DIR: &str = ".checkpoint.staged";
/// The prefix of a checkpoint still being written (step 1).
const STAGING_PREFIX: &str = ".checkpoint.tmp-";

/// Lowercase hex, as `sha256sum` prints a digest.
fn hex(digest: &[u8]) -> String {
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// Flushes a directory's entries (the renames in it) to disk.
fn sync_dir(dir: &Path) -> Result<()> {
    fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .with_context(|| format!("cannot flush {} to disk", dir.display()))
}

/// The nearest existing folder at or above `dir` (`.` for a relative path
/// none of whose parts exist).
fn nearest_existing(dir: &Path) -> PathBuf {
    let mut candidate = dir;
    loop {
        if candidate.exists() {
            return candidate.to_path_buf();
        }
        match candidate.parent() {
            Some(parent) if !parent.as_os_str().is_empty() => candidate = parent,
            _ => return PathBuf::from("."),
        }
    }
}

/// Refuses an `--out` that cannot be written, before any work is done (a run
/// must not train for an hour and then fail to save): it must be a folder,
/// or not exist yet under a folder where it can be created. The check
/// creates and removes a probe file; it creates nothing that stays.
pub fn check_out_dir(dir: &Path) -> Result<()> {
    let shown = dir.display();
    ensure!(
        !dir.exists() || dir.is_dir(),
        "--out {shown} exists and is not a directory"
    );
    let existing = nearest_existing(dir);
    ensure!(
        existing.is_dir(),
        "--out {shown}: {} is not a directory",
        existing.display()
    );
    let probe = existing.join(format!(".dpo-write-test-{}", std::process::id()));
    fs::write(&probe, b"")
        .and_then(|()| fs::remove_file(&probe))
        .map_err(|e| {
            anyhow!(
                "--out {shown}: cannot write into {}: {e}",
                existing.display()
            )
        })
}

/// Refuses an `--out` that is one of the run's inputs (`inputs`: what each
/// is, and its path), directly or through a symlink: the run's checkpoints
/// would replace the model or the data it reads.
pub fn check_out_apart(out: &Path, inputs: &[(&str, &Path)]) -> Result<()> {
    // An --out that does not exist yet is none of the inputs.
    let Ok(real_out) = fs::canonicalize(out) else {
        return Ok(());
    };
    for (what, path) in inputs {
        if fs::canonicalize(path).is_ok_and(|real| real == real_out) {
            bail!(
                "--out {} is {what} {}: the run would save over what it reads; choose another --out",
                out.display(),
                path.display()
            );
        }
    }
    Ok(())
}

/// Whether `name` is a file of a model (or adapter) checkpoint, one that a
/// save replaces: `config.json`, `model.safetensors`, the shards of a
/// sharded one and their index, `adapter_model.safetensors`, `adapter_config.json`.
fn is_checkpoint_file(name: &str) -> bool {
    let shard = name.starts_with("model-") && name.ends_with(".safetensors");
    shard
        || [
            "config.json",
            "model.safetensors",
            INDEX_FILE,
            "adapter_model.safetensors",
            "adapter_config.json",
        ]
        .contains(&name)
}

/// Refuses to replace checkpoint files in `out` that no run of `stage` wrote
/// (there is no `trainer_state.json` of that stage beside them: a model
/// copied there, or another stage's run), unless `overwrite`.
pub fn check_replaceable(out: &Path, stage: &str, overwrite: bool) -> Result<()> {
    if overwrite || !out.is_dir() || read_state(out).is_ok_and(|state| state.stage == stage) {
        return Ok(());
    }
    let entries = fs::read_dir(out).with_context(|| format!("cannot list {}", out.display()))?;
    for entry in entries {
        let entry = entry.with_context(|| format!("cannot list {}", out.display()))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if is_checkpoint_file(&name) {
            bail!(
                "--out {} already holds {name}, which no {stage} run wrote (no {STATE_FILE} with stage {stage} beside it): choose another --out, or pass --overwrite to replace it",
                out.display()
            );
        }
    }
    Ok(())
}

/// Prepares `--out` for a run: checks that it can be written (see
/// [`check_out_dir`]), finishes a save that was interrupted after its commit
/// point and removes what an earlier one left half-written. With `resume`,
/// also checks that the checkpoint there can be continued
/// ([`resumable_state`]) and that its files are the ones its state recorded.
pub fn open_run_dir(
    out: &Path,
    resume: Option<(&str, &TrainHyper)>,
) -> Result<Option<TrainerState>> {
    check_out_dir(out)?;
    if out.is_dir() {
        recover(out)?;
    }
    let Some((stage, hyper)) = resume else {
        return Ok(None);
    };
    let state = resumable_state(out, stage, hyper)?;
    verify_checksums(out, &state)?;
    Ok(Some(state))
}

/// Finishes an interrupted save in `dir` (step 3 of the module docs) and
/// removes the temporary files and folders of one that did not reach its
/// commit point.
fn recover(dir: &Path) -> Result<()> {
    let entries = fs::read_dir(dir).with_context(|| format!("cannot list {}", dir.display()))?;
    for entry in entries {
        let entry = entry.with_context(|| format!("cannot list {}", dir.display()))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let path = entry.path();
        if name.starts_with(STAGING_PREFIX) {
            fs::remove_dir_all(&path)
                .with_context(|| format!("cannot remove {}", path.display()))?;
        } else if name.starts_with('.') && name.contains(".tmp-") && path.is_file() {
            // A `write_atomic` temporary whose rename never came.
            fs::remove_file(&path).with_context(|| format!("cannot remove {}", path.display()))?;
        }
    }
    if dir.join(STAGED_DIR).is_dir() {
        eprintln!(
            "{}: finishing the checkpoint save an earlier run left half-done",
            dir.display()
        );
        drop(publish_staged(dir)?);
    }
    Ok(())
}

/// Step 3: renames the files of `DIR/.checkpoint.staged` over those of
/// `DIR`, the trainer state last, then removes the emptied folder. Safe to
/// run again after an interruption: what is already moved is not there.
fn publish_staged(dir: &Path) -> Result<ReplacedFiles> {
    let staged = dir.join(STAGED_DIR);
    let state_path = staged.join(STATE_FILE);
    if state_path.exists() {
        // An SGD checkpoint has no optimizer file, a byte-tokenizer one no
        // tokenizer files: remove older ones, so that no file of another run
        // stays beside the new state (a stale tokenizer.json would change
        // how the model reads text; a stale shard index is not read beside
        // model.safetensors, but would mislead).
        let text = fs::read_to_string(&state_path)
            .with_context(|| format!("cannot read {}", state_path.display()))?;
        let state: TrainerState = serde_json::from_str(&text)
            .with_context(|| format!("{} is not a trainer state", state_path.display()))?;
        // A full model's files and an adapter's replace each other.
        let optional = [
            OPTIMIZER_FILE,
            INDEX_FILE,
            CONFIG_FILE,
            WEIGHTS_FILE,
            ADAPTER_CONFIG_FILE,
            ADAPTER_WEIGHTS_FILE,
        ]
        .into_iter()
        .chain(TOKENIZER_FILES);
        for name in optional {
            let stale = dir.join(name);
            if !state.sha256.contains_key(name) && stale.exists() {
                fs::remove_file(&stale)
                    .with_context(|| format!("cannot remove {}", stale.display()))?;
            }
        }
    }
    let mut names: Vec<String> = fs::read_dir(&staged)
        .with_context(|| format!("cannot list {}", staged.display()))?
        .map(|e| e.map(|e| e.file_name().to_string_lossy().into_owned()))
        .collect::<std::io::Result<_>>()
        .with_context(|| format!("cannot list {}", staged.display()))?;
    // The state last: until it lands, the old state still names the old step.
    names.sort_by_key(|name| name == STATE_FILE);
    let replaced = dir.join(format!("{STAGING_PREFIX}{}", unique_suffix()));
    let keeping = fs::create_dir(&replaced).is_ok();
    for name in names {
        let to = dir.join(&name);
        if keeping && to.is_file() {
            // A second link keeps the old file alive past the rename (a
            // failure only means the rename frees it, as without).
            let _ = fs::hard_link(&to, replaced.join(&name));
        }
        fs::rename(staged.join(&name), &to)
            .with_context(|| format!("cannot save {}", to.display()))?;
    }
    sync_dir(dir)?;
    fs::remove_dir(&staged).with_context(|| format!("cannot remove {}", staged.display()))?;
    sync_dir(dir)?;
    Ok(ReplacedFiles::remove(keeping.then_some(replaced)))
}

/// The files a save replaced, being removed on a thread of their own: the
/// file system frees a file's blocks when its last name goes, 0.2-0.4 s for
/// a GPT-2 checkpoint's 1.5 GB on an ext4 mounted with `discard`, and a
/// training run need not wait for that. Dropping this waits for the
/// removal (the training loop keeps it until the next save, or the end).
/// The folder is named as a staging folder, so if the process dies first,
/// the next run on the folder removes it ([`open_run_dir`]).
#[must_use = "dropping it waits for the replaced files to be removed"]
pub struct ReplacedFiles {
    removal: Option<std::thread::JoinHandle<()>>,
}

impl ReplacedFiles {
    /// Removes the folder `replaced` (if any) in the background.
    fn remove(replaced: Option<PathBuf>) -> ReplacedFiles {
        let removal = replaced.map(|folder| {
            std::thread::spawn(move || {
                if let Err(e) = fs::remove_dir_all(&folder) {
                    eprintln!(
                        "warning: cannot remove {} (the files a checkpoint replaced): {e}",
                        folder.display()
                    );
                }
            })
        });
        ReplacedFiles { removal }
    }
}

impl Drop for ReplacedFiles {
    fn drop(&mut self) {
        if let Some(removal) = self.removal.take() {
            let _ = removal.join();
        }
    }
}

/// The SHA-256 of the regular file `path`, streamed (a file of any size, in
/// constant memory; a device such as `/dev/zero` is refused, not read).
fn sha256_of_file(path: &Path) -> Result<String> {
    let cannot = || format!("--resume: cannot read {}", path.display());
    ensure!(
        fs::metadata(path).with_context(cannot)?.is_file(),
        "--resume: {} is not a regular file",
        path.display()
    );
    let mut hasher = Sha256::new();
    let mut file = fs::File::open(path).with_context(cannot)?;
    std::io::copy(&mut file, &mut hasher).with_context(cannot)?;
    Ok(hex(&hasher.finalize()))
}

/// Refuses a checkpoint whose files are not those its state recorded.
fn verify_checksums(dir: &Path, state: &TrainerState) -> Result<()> {
    for (name, expected) in &state.sha256 {
        let path = dir.join(name);
        if sha256_of_file(&path)? != *expected {
            bail!(
                "--resume: {} is not the file saved with {STATE_FILE} at step {} (its SHA-256 differs); the checkpoint was changed after it was saved",
                path.display(),
                state.step
            );
        }
    }
    Ok(())
}

/// AdamW's moments by name (`exp_avg`, `exp_avg_sq`), one tensor a
/// trainable parameter; none for plain SGD, which keeps no state but its
/// step count. Lent, not copied.
fn optimizer_moments(optimizer: &AnyOptimizer) -> Vec<(&'static str, &[Tensor<f32>])> {
    match optimizer {
        AnyOptimizer::AdamW(adamw) => adamw.state(),
        AnyOptimizer::Sgd(_) => Vec::new(),
    }
}

/// `DIR/optimizer.safetensors` of `moments`: `{param}.{moment}`, borrowed
/// (written as they are); `None` for a stateless optimizer.
fn optimizer_file<'a>(
    model: &Model<f32>,
    moments: &[(&str, &'a [Tensor<f32>])],
) -> Option<SafetensorsFile<'a>> {
    if moments.is_empty() {
        return None;
    }
    let names = model.trainable_names();
    let mut tensors = Vec::new();
    for (moment, values) in moments {
        for (name, t) in names.iter().zip(*values) {
            tensors.push((format!("{name}.{moment}"), t.view()));
        }
    }
    Some(SafetensorsFile::new(tensors, &[]))
}

/// The SHA-256 (lowercase hex) of the bytes `contents` writes, computed from
/// the tensors themselves (the file is not read back).
fn sha256_of(contents: &CheckpointFile<'_>) -> Result<String> {
    let mut hasher = Sha256::new();
    contents.write_to(&mut hasher)?;
    Ok(hex(&hasher.finalize()))
}

/// Writes each of `files` into the folder `dir`, flushed to disk, and
/// returns their checksums by file name. Writing a file and hashing it are
/// two passes over the same borrowed tensors (immutable for the save), on
/// two threads of their own: SHA-256 is a chain, one file's on one core,
/// and copying the bytes into the OS's page cache costs about as much; so on
/// a 2-core machine the four passes of a model's and an optimizer's file
/// (twice as large) share both cores to the end, where a thread per file
/// left the model's core idle for half of the save.
fn write_all_hashed(
    dir: &Path,
    files: &[(&str, CheckpointFile<'_>)],
) -> Result<BTreeMap<String, String>> {
    std::thread::scope(|scope| {
        let passes: Vec<_> = files
            .iter()
            .map(|(name, contents)| {
                let path = dir.join(name);
                let writer = scope.spawn(move || write_synced(&path, contents));
                let hasher = scope.spawn(move || sha256_of(contents));
                (name, writer, hasher)
            })
            .collect();
        passes
            .into_iter()
            .map(|(name, writer, hasher)| {
                joined(writer)?;
                Ok((name.to_string(), joined(hasher)?))
            })
            .collect()
    })
}

/// What a scoped thread returned (its panic, if it panicked, goes on here).
fn joined<T>(thread: std::thread::ScopedJoinHandle<'_, T>) -> T {
    thread
        .join()
        .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
}

/// Saves the model, the optimizer state and the trainer state into `dir` as
/// one unit (see the module docs); `state.sha256` is filled in here. The
/// checkpoint is whole on disk when this returns; the files it replaced go
/// on being removed until the [`ReplacedFiles`] returned is dropped.
pub fn save_checkpoint(
    dir: &Path,
    model: &Model<f32>,
    model_files: &ModelFiles,
    optimizer: &AnyOptimizer,
    state: &TrainerState,
) -> Result<ReplacedFiles> {
    let cannot = || format!("cannot save the checkpoint to {}", dir.display());
    // Every file but the state; the tensors borrowed, not serialized.
    let mut files: Vec<(&str, CheckpointFile<'_>)> = model
        .checkpoint_files_as(model_files.format)
        .with_context(cannot)?
        .into();
    for (name, bytes) in &model_files.tokenizer_files {
        files.push((name, CheckpointFile::Bytes(bytes.into())));
    }
    let moments = optimizer_moments(optimizer);
    if let Some(file) = optimizer_file(model, &moments) {
        files.push((OPTIMIZER_FILE, CheckpointFile::Tensors(file)));
    }

    fs::create_dir_all(dir).with_context(cannot)?;
    // 1. Everything into a fresh folder, flushed to disk: each file hashed
    // as it is written, then the state that records the checksums.
    let staging = dir.join(format!("{STAGING_PREFIX}{}", unique_suffix()));
    let written = fs::create_dir(&staging)
        .map_err(anyhow::Error::from)
        .and_then(|()| {
            let mut state = state.clone();
            state.sha256 = write_all_hashed(&staging, &files)?;
            let state_json = serde_json::to_string_pretty(&state)? + "\n";
            write_synced(&staging.join(STATE_FILE), state_json.as_bytes())?;
            sync_dir(&staging)
        })
        // 2. The commit point.
        .and_then(|()| {
            fs::rename(&staging, dir.join(STAGED_DIR))?;
            sync_dir(dir)
        });
    if let Err(e) = written {
        let _ = fs::remove_dir_all(&staging);
        return Err(e).with_context(cannot);
    }
    // 3. Into place, the state last.
    publish_staged(dir).with_context(cannot)
}

/// The F32 tensors of a safetensors file, by name.
fn read_f32_tensors(path: &Path) -> Result<HashMap<String, Tensor<f32>>> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    let file = safetensors::SafeTensors::deserialize(&bytes)
        .with_context(|| format!("{} is not a safetensors file", path.display()))?;
    let mut by_name = HashMap::new();
    for (name, view) in file.tensors() {
        ensure!(
            view.dtype() == Dtype::F32,
            "{}: tensor {name} is not F32",
            path.display()
        );
        let data: Vec<f32> = view
            .data()
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        let t = Tensor::from_shape_vec(ndarray::IxDyn(view.shape()), data)
            .with_context(|| format!("{}: tensor {name}", path.display()))?;
        by_name.insert(name, t);
    }
    Ok(by_name)
}

/// Reads `DIR/trainer_state.json`.
pub fn read_state(dir: &Path) -> Result<TrainerState> {
    use std::io::Read;
    let path = dir.join(STATE_FILE);
    let cannot = || format!("cannot read {}", path.display());
    // A state is a few hundred bytes: read at most 1 MiB of whatever is there.
    let mut text = String::new();
    fs::File::open(&path)
        .with_context(cannot)?
        .take(1 << 20)
        .read_to_string(&mut text)
        .with_context(cannot)?;
    serde_json::from_str(&text)
        .with_context(|| format!("{} is not a trainer state", path.display()))
}

/// Loads the optimizer state of `state` saved by [`save_checkpoint`] into `optimizer`.
pub fn load_optimizer_state(
    dir: &Path,
    model: &Model<f32>,
    optimizer: &mut AnyOptimizer,
    state: &TrainerState,
) -> Result<()> {
    match optimizer {
        AnyOptimizer::AdamW(adamw) => {
            let path = dir.join(OPTIMIZER_FILE);
            let mut by_name = read_f32_tensors(&path)?;
            let mut take = |moment: &str| -> Result<Vec<Tensor<f32>>> {
                model
                    .trainable_names()
                    .into_iter()
                    .zip(model.trainable_params())
                    .map(|(name, param)| {
                        let key = format!("{name}.{moment}");
                        let t = by_name
                            .remove(&key)
                            .ok_or_else(|| anyhow!("{}: no tensor {key}", path.display()))?;
                        ensure!(
                            t.shape() == param.shape(),
                            "{}: tensor {key} has shape {:?}, the parameter {:?}",
                            path.display(),
                            t.shape(),
                            param.shape()
                        );
                        Ok(t)
                    })
                    .collect()
            };
            let exp_avg = take("exp_avg")?;
            let exp_avg_sq = take("exp_avg_sq")?;
            adamw.load_state(state.step, exp_avg, exp_avg_sq);
        }
        AnyOptimizer::Sgd(sgd) => sgd.set_steps_taken(state.step),
    }
    Ok(())
}

/// The trainer state of the run in `out`, if `--resume` can continue it with
/// `hyper` under the objective `stage`: the same stage and optimizer, and
/// fewer steps taken than `hyper.steps`. Checked before any data is loaded.
pub fn resumable_state(out: &Path, stage: &str, hyper: &TrainHyper) -> Result<TrainerState> {
    ensure!(
        out.join(STATE_FILE).exists(),
        "--resume: --out {} holds no training checkpoint (no {STATE_FILE})",
        out.display()
    );
    let state = read_state(out).context("--resume")?;
    let run = out.display();
    ensure!(
        state.stage == stage,
        "--resume: the run in {run} is a {} run, not {stage}",
        state.stage
    );
    ensure!(
        state.optimizer == hyper.optimizer_name(),
        "--resume: the run in {run} used --optimizer {}, not {}",
        state.optimizer,
        hyper.optimizer_name()
    );
    ensure!(
        state.step < hyper.steps,
        "--resume: the run in {run} already took {} steps; ask for more with --steps",
        state.step
    );
    Ok(state)
}

/// A fresh optimizer at step 0, or, with `resume`, the optimizer state and
/// step count saved in `out` (see [`resumable_state`]).
pub fn optimizer_and_start_step(
    hyper: &TrainHyper,
    out: &Path,
    model: &Model<f32>,
    resume: bool,
    stage: &str,
) -> Result<(AnyOptimizer, u64)> {
    let mut optimizer = hyper.new_optimizer();
    if !resume {
        return Ok((optimizer, 0));
    }
    let state = resumable_state(out, stage, hyper)?;
    load_optimizer_state(out, model, &mut optimizer, &state).context("--resume")?;
    Ok((optimizer, state.step))
}
