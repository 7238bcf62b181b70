//! `dpo convert IN OUT --to hf|nanogpt`: the same model in the other files.
//! IN may also be a GGUF file (a Llama-family model, dequantized to f32):
//! `dpo convert model.gguf OUT --to hf` writes the directory transformers
//! loads, with the tokenizer and chat template of the file.
//!
//! The tensors are copied exactly (F16/BF16 inputs become the f32 values
//! they stand for), so a round trip gives back the same tensors and the same
//! logits. The tokenizer files of IN go along. OUT must not exist: it is
//! built under a temporary name beside it and renamed into place at the end,
//! so an interrupted conversion leaves no half-written checkpoint.
//!
//! IN may be a LoRA adapter directory (PEFT's files, with its base model
//! named in `adapter_config.json`): `--merge-lora` writes the base with the
//! adapter merged into its weights, W + s · B A (PEFT's `merge_and_unload`).

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{ensure, Context, Result};
use serde::Serialize;
use transformer::{write_synced, CheckpointFile};

use super::args::ConvertArgs;
use crate::trainer::setup::load_checkpoint;

/// What `dpo convert` prints.
#[derive(Debug, Serialize)]
pub struct Conversion {
    /// The checkpoint read.
    input: String,
    /// Its format: `hf`, `nanogpt` or `gguf`.
    from: &'static str,
    /// The checkpoint written.
    output: String,
    /// Its format.
    to: &'static str,
    /// Number of parameters (the tied head counted once).
    params: usize,
    /// Every file written into OUT.
    files: Vec<&'static str>,
}

/// Runs `dpo convert`.
pub fn run_convert(a: &ConvertArgs) -> Result<Conversion> {
    ensure!(
        !a.output.exists(),
        "{} exists: dpo convert writes a new directory",
        a.output.display()
    );
    let mut loaded = load_checkpoint(&a.input, "IN")?;
    if loaded.model.lora().is_some() {
        ensure!(
            a.merge_lora,
            "IN {} is a LoRA adapter: add --merge-lora to write its base model with the adapter merged in",
            a.input.display()
        );
        loaded.model = loaded.model.merge_lora();
    } else {
        ensure!(
            !a.merge_lora,
            "--merge-lora: IN {} is not a LoRA adapter directory (no adapter_config.json)",
            a.input.display()
        );
    }
    let to = a.to.format();
    let cannot = || format!("cannot write {}", a.output.display());
    let mut files: Vec<(&str, CheckpointFile<'_>)> = loaded
        .model
        .checkpoint_files_as(to)
        .with_context(cannot)?
        .into();
    for (name, bytes) in &loaded.tokenizer_files {
        files.push((name, CheckpointFile::Bytes(bytes.into())));
    }
    write_new_dir(&a.output, &files).with_context(cannot)?;
    Ok(Conversion {
        input: a.input.display().to_string(),
        from: if transformer::gguf::is_gguf(&a.input) {
            "gguf"
        } else {
            loaded.format.name()
        },
        output: a.output.display().to_string(),
        to: to.name(),
        params: loaded.model.num_params(),
        files: files.iter().map(|(name, _)| *name).collect(),
    })
}

/// Writes `files` into the new directory `dir`: into `.NAME.tmp-PID` beside
/// it, flushed, then renamed to `dir`.
fn write_new_dir(dir: &Path, files: &[(&str, CheckpointFile<'_>)]) -> Result<()> {
    let name = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "checkpoint".into());
    let parent = match dir.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    fs::create_dir_all(&parent)?;
    let tmp = parent.join(format!(".{name}.tmp-{}", std::process::id()));
    fs::create_dir(&tmp)?;
    let result = files
        .iter()
        .try_for_each(|(file, bytes)| write_synced(&tmp.join(file), bytes).map_err(Into::into))
        .and_then(|()| fs::rename(&tmp, dir).map_err(anyhow::Error::from));
    if result.is_err() {
        let _ = fs::remove_dir_all(&tmp);
    }
    result
}
