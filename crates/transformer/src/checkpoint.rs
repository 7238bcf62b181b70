//! Checkpoints (docs/spec.md section 2): a directory with `config.json` and
//! `model.safetensors` (float32, little-endian, nanoGPT's tensor names).
//!
//! Loading is strict: every expected tensor present with its exact shape and
//! dtype F32, no unknown tensor, a valid config; an optional `lm_head.weight`
//! must equal `transformer.wte.weight` (the head is tied) and is then
//! ignored. Any problem is one [`CheckpointError`] line naming the file and
//! the tensor; nothing is half-loaded.
//!
//! Saving is atomic: a new checkpoint directory is written under a temporary
//! name next to it and renamed into place at the end. Into an existing
//! directory (which may hold other files, such as a trainer's logs), each
//! file is written to a temporary name in that directory and renamed over the
//! old one, `model.safetensors` first, then `config.json`. An interrupted save
//! thus never leaves a truncated file; at worst (a crash between the two
//! renames of a save that changes the config) the config and the tensors
//! disagree, which loading refuses.
//!
//! A file is never serialized whole in memory: [`Model::checkpoint_files_as`]
//! lends the tensors ([`CheckpointFile`], [`crate::safetensors_writer`]), and
//! [`write_synced`] writes their bytes through a buffer; the disk starts
//! writing a file while it is still being filled.

use std::borrow::Cow;
use std::collections::HashSet;
use std::fs;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use safetensors::{Dtype, SafeTensors};
use thiserror::Error;

use crate::config::ModelConfig;
use crate::mapped_file::MappedFile;
use crate::model::Model;
use crate::params::param_specs;
use crate::safetensors_writer::SafetensorsFile;

/// File name of the config inside a checkpoint directory.
pub const CONFIG_FILE: &str = "config.json";
/// File name of the tensors inside a checkpoint directory.
pub const WEIGHTS_FILE: &str = "model.safetensors";
/// The untied LM head name some exporters add; must equal the token table.
pub const LM_HEAD: &str = "lm_head.weight";

/// Why a checkpoint cannot be read or written (each is one line).
#[derive(Debug, Error)]
pub enum CheckpointError {
    /// A file could not be read or written.
    #[error("{path}: {error}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error (in the message, not a `source()`, so that a
        /// printed error chain says it once).
        error: std::io::Error,
    },
    /// `config.json` is not valid JSON, misses a field, or has invalid sizes.
    #[error("{path}: bad config: {message}")]
    Config {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// `model.safetensors` is not a readable safetensors file (e.g. truncated).
    #[error("{path}: not a valid safetensors file: {message}")]
    Format {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// One tensor is missing, unexpected, or has the wrong shape, dtype or value.
    #[error("{path}: tensor {name}: {message}")]
    Tensor {
        /// The file.
        path: PathBuf,
        /// The tensor's name.
        name: String,
        /// What is wrong.
        message: String,
    },
}

fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> CheckpointError + '_ {
    move |error| CheckpointError::Io {
        path: path.to_path_buf(),
        error,
    }
}

/// The largest `config.json` read: 1 MiB (a real one is a few hundred bytes).
pub const MAX_CONFIG_BYTES: u64 = 1 << 20;
/// The largest safetensors header read: 100 MB, the safetensors crate's own limit.
pub const MAX_HEADER_BYTES: u64 = 100_000_000;

/// Reads the file `path` whole, refusing it past `max_bytes` after reading at
/// most one byte more: a file that is a link to `/dev/zero`, or that is far
/// larger than what it should hold, is refused instead of filling the memory.
pub fn read_bounded(path: &Path, max_bytes: u64) -> Result<Vec<u8>, CheckpointError> {
    let file = fs::File::open(path).map_err(io_error(path))?;
    let mut bytes = Vec::new();
    file.take(max_bytes + 1)
        .read_to_end(&mut bytes)
        .map_err(io_error(path))?;
    if bytes.len() as u64 > max_bytes {
        return Err(CheckpointError::Format {
            path: path.to_path_buf(),
            message: format!("larger than the {max_bytes} bytes it may hold"),
        });
    }
    Ok(bytes)
}

/// The two checkpoint formats: the same model, different files.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CheckpointFormat {
    /// nanoGPT's: this module (docs/spec.md section 2).
    NanoGpt,
    /// Hugging Face transformers' `GPT2LMHeadModel`: [`crate::hf`].
    Hf,
}

impl CheckpointFormat {
    /// The format a model of `config` is saved in unless told otherwise:
    /// nanoGPT's for GPT-2, Hugging Face's for the Llama family (the files
    /// transformers, TRL and PEFT read).
    pub fn default_for(config: &ModelConfig) -> CheckpointFormat {
        match config.llama {
            None => CheckpointFormat::NanoGpt,
            Some(_) => CheckpointFormat::Hf,
        }
    }

    /// `nanogpt` or `hf`, as the command line spells them.
    pub fn name(self) -> &'static str {
        match self {
            CheckpointFormat::NanoGpt => "nanogpt",
            CheckpointFormat::Hf => "hf",
        }
    }
}

/// The format of the checkpoint directory `dir`, told by its `config.json`:
/// Hugging Face when it has a `model_type` (only `gpt2` is supported; any
/// other is an error), nanoGPT otherwise.
pub fn detect_format(dir: &Path) -> Result<CheckpointFormat, CheckpointError> {
    let path = dir.join(CONFIG_FILE);
    let bytes = read_bounded(&path, MAX_CONFIG_BYTES)?;
    format_of(&bytes, &path)
}

fn format_of(bytes: &[u8], path: &Path) -> Result<CheckpointFormat, CheckpointError> {
    match crate::hf::model_type(bytes, path)? {
        None => Ok(CheckpointFormat::NanoGpt),
        // parse_hf_config refuses a model_type other than gpt2.
        Some(_) => Ok(CheckpointFormat::Hf),
    }
}

/// Reads and validates `dir/config.json` (at most [`MAX_CONFIG_BYTES`]), in
/// either format.
pub fn load_config(dir: &Path) -> Result<ModelConfig, CheckpointError> {
    let path = dir.join(CONFIG_FILE);
    let bytes = read_bounded(&path, MAX_CONFIG_BYTES)?;
    match format_of(&bytes, &path)? {
        CheckpointFormat::NanoGpt => parse_config(&bytes, &path),
        CheckpointFormat::Hf => crate::hf::parse_hf_config(&bytes, &path),
    }
}

/// Parses and validates the bytes of a `config.json` (`path` names it in errors).
pub fn parse_config(bytes: &[u8], path: &Path) -> Result<ModelConfig, CheckpointError> {
    let text = std::str::from_utf8(bytes).map_err(|e| CheckpointError::Config {
        path: path.to_path_buf(),
        message: format!("not UTF-8: {e}"),
    })?;
    let path = path.to_path_buf();
    let config: ModelConfig = serde_json::from_str(text).map_err(|e| CheckpointError::Config {
        path: path.clone(),
        message: e.to_string(),
    })?;
    config
        .validate()
        .map_err(|message| CheckpointError::Config { path, message })?;
    Ok(config)
}

/// The f32 values of little-endian bytes.
pub(crate) fn f32_from_le(bytes: &[u8]) -> Vec<f32> {
    bytes
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect()
}

impl Model<f32> {
    /// Loads a checkpoint directory in either format, or a GGUF file
    /// (strictly; see the module docs, [`crate::hf`] and [`crate::gguf`]).
    pub fn load(dir: &Path) -> Result<Model<f32>, CheckpointError> {
        if crate::lora::is_adapter_dir(dir) {
            // A PEFT adapter: its base model, then the adapter on it.
            let base_path = crate::lora::adapter_base_path(dir)?;
            if crate::lora::is_adapter_dir(&base_path) {
                return Err(CheckpointError::Format {
                    path: dir.join(crate::lora::ADAPTER_CONFIG_FILE),
                    message: format!(
                        "its base model {} is an adapter too (stacked adapters are not supported)",
                        base_path.display()
                    ),
                });
            }
            let base = Model::load(&base_path)?;
            let lora = crate::lora::Lora::load(dir, base.config())?;
            return Ok(base.with_lora(lora));
        }
        if crate::gguf::is_gguf(dir) {
            return Ok(crate::gguf::load_model(dir)?.model);
        }
        if detect_format(dir)? == CheckpointFormat::Hf {
            return crate::hf::load_hf(dir);
        }
        let config = load_config(dir)?;
        let path = dir.join(WEIGHTS_FILE);
        // The tensors of a valid config (at most MAX_PARAMS), twice over for
        // an untied head, plus the header: nothing larger is read.
        let max_bytes = 8 * config.num_params().unwrap_or(0) + MAX_HEADER_BYTES;
        let file = MappedFile::open(&path, max_bytes)?;
        let read = |bytes: &[u8]| file.convert(bytes, |b| Some(f32_from_le(b))).unwrap();
        Model::from_safetensors_with(config, file.bytes(), &path, read)
    }

    /// The model of `config` from the bytes of its `model.safetensors`
    /// (`path` names the file in errors), as strictly as [`Model::load`].
    pub fn from_safetensors(
        config: ModelConfig,
        bytes: &[u8],
        path: &Path,
    ) -> Result<Model<f32>, CheckpointError> {
        Model::from_safetensors_with(config, bytes, path, f32_from_le)
    }

    /// [`Model::from_safetensors`], each tensor's values read from its bytes
    /// by `read` ([`MappedFile::convert`] for a mapped file).
    fn from_safetensors_with(
        config: ModelConfig,
        bytes: &[u8],
        path: &Path,
        read_f32: impl Fn(&[u8]) -> Vec<f32>,
    ) -> Result<Model<f32>, CheckpointError> {
        let path = path.to_path_buf();
        let file = SafeTensors::deserialize(bytes).map_err(|e| CheckpointError::Format {
            path: path.clone(),
            message: format!("{e:?}"),
        })?;
        let tensor_error = |name: &str, message: String| CheckpointError::Tensor {
            path: path.clone(),
            name: name.to_string(),
            message,
        };
        let specs = param_specs(&config);
        let expected: HashSet<&str> = specs.iter().map(|(n, _)| n.as_str()).collect();
        let mut unknown: Vec<String> = file
            .names()
            .into_iter()
            .filter(|n| !expected.contains(n.as_str()) && n.as_str() != LM_HEAD)
            .cloned()
            .collect();
        unknown.sort();
        if let Some(name) = unknown.first() {
            return Err(tensor_error(
                name,
                format!(
                    "unexpected tensor for this config ({} of them)",
                    unknown.len()
                ),
            ));
        }
        let read = |name: &str, shape: &[usize]| -> Result<Vec<f32>, CheckpointError> {
            let view = file
                .tensor(name)
                .map_err(|_| tensor_error(name, "missing".into()))?;
            if view.dtype() != Dtype::F32 {
                return Err(tensor_error(
                    name,
                    format!("dtype {:?}, expected F32", view.dtype()),
                ));
            }
            if view.shape() != shape {
                return Err(tensor_error(
                    name,
                    format!("shape {:?}, expected {shape:?}", view.shape()),
                ));
            }
            Ok(read_f32(view.data()))
        };
        let mut values = Vec::with_capacity(specs.len());
        for (name, shape) in &specs {
            values.push(read(name, shape)?);
        }
        let tied = !expected.contains(LM_HEAD);
        if tied && file.names().iter().any(|n| n.as_str() == LM_HEAD) {
            // specs[0] is the token table
            let (wte_name, wte_shape) = &specs[0];
            let lm_head = read(LM_HEAD, wte_shape)?;
            // Bitwise comparison: the head is the same tensor, not a close one.
            if lm_head
                .iter()
                .zip(&values[0])
                .any(|(a, b)| a.to_bits() != b.to_bits())
            {
                return Err(tensor_error(
                    LM_HEAD,
                    format!("differs from {wte_name} (the LM head is tied to it)"),
                ));
            }
        }
        let params = specs
            .into_iter()
            .zip(values)
            .map(|((name, shape), data)| {
                (name, ndarray::ArrayD::from_shape_vec(shape, data).unwrap())
            })
            .collect();
        Ok(Model::from_named(config, params))
    }

    /// The files of a checkpoint of this model, `(name, contents)`:
    /// [`WEIGHTS_FILE`] then [`CONFIG_FILE`]. [`Model::save`] writes them; a
    /// trainer that saves more files beside them (its optimizer and state)
    /// writes them itself, so that all of them land as one unit.
    pub fn checkpoint_files(
        &self,
    ) -> Result<[(&'static str, CheckpointFile<'_>); 2], CheckpointError> {
        self.checkpoint_files_as(CheckpointFormat::default_for(self.config()))
    }

    /// The files of a checkpoint of this model in `format`: the same two
    /// names in both formats, [`WEIGHTS_FILE`] then [`CONFIG_FILE`]. The
    /// tensors are borrowed from the model and written when the file is
    /// ([`FileContents::write_to`]), not serialized here. A model with
    /// adapters writes the adapter alone, as PEFT does:
    /// `adapter_model.safetensors` then `adapter_config.json` ([`crate::lora`]).
    pub fn checkpoint_files_as(
        &self,
        format: CheckpointFormat,
    ) -> Result<[(&'static str, CheckpointFile<'_>); 2], CheckpointError> {
        if let Some(lora) = self.lora() {
            // The adapter alone, in PEFT's files, whatever the base's format
            // (a few MB, serialized in memory by the adapter).
            let [(weights_name, weights), (config_name, config)] = lora.files(self.config())?;
            return Ok([
                (weights_name, CheckpointFile::Bytes(weights.into())),
                (config_name, CheckpointFile::Bytes(config.into())),
            ]);
        }
        if self.bf16_base().is_some() {
            // A bf16 base is written as the f32 values it holds.
            // (a frozen base without adapters is never a training checkpoint)
            let widened = self.cast::<f32>();
            let [(w_name, weights), (c_name, config)] = widened.checkpoint_files_as(format)?;
            return Ok([
                (w_name, CheckpointFile::Bytes(weights.to_bytes().into())),
                (c_name, CheckpointFile::Bytes(config.to_bytes().into())),
            ]);
        }
        let (config_json, weights) = match format {
            CheckpointFormat::NanoGpt => (
                serde_json::to_string_pretty(self.config()).unwrap() + "\n",
                self.safetensors_file(),
            ),
            CheckpointFormat::Hf => {
                let config_json = crate::hf::hf_config_json(self.config()).map_err(|message| {
                    CheckpointError::Format {
                        path: PathBuf::from(WEIGHTS_FILE),
                        message,
                    }
                })?;
                (config_json, crate::hf::hf_safetensors_file(self))
            }
        };
        Ok([
            (WEIGHTS_FILE, CheckpointFile::Tensors(weights)),
            (
                CONFIG_FILE,
                CheckpointFile::Bytes(config_json.into_bytes().into()),
            ),
        ])
    }

    /// Saves to the checkpoint directory `dir`, atomically (see the module docs).
    pub fn save(&self, dir: &Path) -> Result<(), CheckpointError> {
        self.save_as(dir, CheckpointFormat::default_for(self.config()))
    }

    /// [`Model::save`] in `format`.
    pub fn save_as(&self, dir: &Path, format: CheckpointFormat) -> Result<(), CheckpointError> {
        let [(_, weights), (_, config_json)] = self.checkpoint_files_as(format)?;
        let unique = unique_suffix();
        if dir.is_dir() {
            // Existing directory: each file replaced by a rename.
            write_atomic(&dir.join(WEIGHTS_FILE), &weights)?;
            write_atomic(&dir.join(CONFIG_FILE), &config_json)?;
        } else {
            // New directory: built under a temporary name, renamed at the end.
            let name = dir
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_else(|| "checkpoint".into());
            let parent = match dir.parent() {
                Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
                _ => PathBuf::from("."),
            };
            fs::create_dir_all(&parent).map_err(io_error(&parent))?;
            let tmp_dir = parent.join(format!(".{name}.tmp-{unique}"));
            fs::create_dir(&tmp_dir).map_err(io_error(&tmp_dir))?;
            let result = write_synced(&tmp_dir.join(WEIGHTS_FILE), &weights)
                .and_then(|()| write_synced(&tmp_dir.join(CONFIG_FILE), &config_json))
                .and_then(|()| rename(&tmp_dir, dir));
            if result.is_err() {
                let _ = fs::remove_dir_all(&tmp_dir);
            }
            result?;
        }
        Ok(())
    }

    /// `model.safetensors` of the parameters (F32, contract names), borrowed.
    fn safetensors_file(&self) -> SafetensorsFile<'_> {
        let tensors = self
            .named_params()
            .map(|(name, p)| (name, p.view()))
            .collect();
        SafetensorsFile::new(tensors, &[])
    }
}

/// The contents of one file of a checkpoint: bytes (a config, a tokenizer
/// file, an adapter), or a safetensors file of tensors borrowed from the
/// model or an optimizer, written straight from them.
#[derive(Debug, Clone)]
pub enum CheckpointFile<'a> {
    /// The bytes of the file.
    Bytes(Cow<'a, [u8]>),
    /// Tensors, serialized as they are written.
    Tensors(SafetensorsFile<'a>),
}

/// What [`write_synced`] and [`write_atomic`] can write: bytes, or a
/// [`CheckpointFile`], serialized as it is written.
pub trait FileContents {
    /// Writes the whole file into `out` (no flush: `out` may buffer more).
    fn write_to(&self, out: &mut dyn Write) -> std::io::Result<()>;
}

impl FileContents for [u8] {
    fn write_to(&self, out: &mut dyn Write) -> std::io::Result<()> {
        out.write_all(self)
    }
}

impl FileContents for Vec<u8> {
    fn write_to(&self, out: &mut dyn Write) -> std::io::Result<()> {
        out.write_all(self)
    }
}

impl FileContents for CheckpointFile<'_> {
    fn write_to(&self, out: &mut dyn Write) -> std::io::Result<()> {
        match self {
            CheckpointFile::Bytes(bytes) => out.write_all(bytes),
            CheckpointFile::Tensors(file) => file.write_to(out),
        }
    }
}

impl CheckpointFile<'_> {
    /// The whole file in memory: for the places that need bytes, not a file.
    pub fn to_bytes(&self) -> Vec<u8> {
        match self {
            CheckpointFile::Bytes(bytes) => bytes.to_vec(),
            CheckpointFile::Tensors(file) => file.to_bytes(),
        }
    }
}

/// `PID-NANOSECONDS`: a temporary name no other save uses at the same time
/// (also the trainer's, for its checkpoint staging folders).
pub fn unique_suffix() -> String {
    format!(
        "{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0)
    )
}

/// Replaces the file `path` with `contents` atomically: they are written to
/// a temporary file beside it (`.NAME.tmp-PID-NANOS`), flushed to disk, and
/// renamed over `path`, so a reader (or a crash) sees the old file or the
/// new one, never a part of either. Every file of a checkpoint or a
/// trainer state is written this way.
pub fn write_atomic<C: FileContents + ?Sized>(
    path: &Path,
    contents: &C,
) -> Result<(), CheckpointError> {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = path.with_file_name(format!(".{name}.tmp-{}", unique_suffix()));
    let result = write_synced(&tmp, contents).and_then(|()| rename(&tmp, path));
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// Writes `contents` to the new file `path` through a buffer and flushes
/// them to disk.
pub fn write_synced<C: FileContents + ?Sized>(
    path: &Path,
    contents: &C,
) -> Result<(), CheckpointError> {
    write_synced_with(path, |out| contents.write_to(out))
}

/// Creates the file `path`, lets `write` fill it through a 1 MiB buffer,
/// and flushes it to disk (`fsync`): the one way every checkpoint file is
/// written. The disk starts writing while the file is still being filled
/// (`sync_file_range` every 16 MiB), so the `fsync` at the end waits for
/// the last few MiB, not for the whole file.
pub fn write_synced_with(
    path: &Path,
    write: impl FnOnce(&mut dyn Write) -> std::io::Result<()>,
) -> Result<(), CheckpointError> {
    let file = fs::File::create(path).map_err(io_error(path))?;
    let mut out = std::io::BufWriter::with_capacity(WRITE_BUFFER, WritebackFile::new(file));
    write(&mut out).map_err(io_error(path))?;
    let file = out
        .into_inner()
        .map_err(|e| io_error(path)(e.into_error()))?
        .file;
    file.sync_all().map_err(io_error(path))
}

/// The buffer between a file being written and the OS: 1 MiB, so that a
/// system call moves a large block.
const WRITE_BUFFER: usize = 1 << 20;

/// Bytes after which a file's new pages are handed to the disk.
const WRITEBACK_BYTES: u64 = 16 << 20;

/// A file being written whose pages go to the disk every
/// [`WRITEBACK_BYTES`], while the writer goes on. Left alone, Linux starts
/// writing dirty pages back only when they pass a share of the memory (10%
/// by default: 2.3 GB on a 23 GB machine, more than a GPT-2 checkpoint's
/// 1.5 GB) or after 30 s, so the final `fsync` would write the whole file
/// after it was filled. `sync_file_range(SYNC_FILE_RANGE_WRITE)` starts the
/// writeback of the range just filled without waiting for it (Linux only;
/// elsewhere the file is flushed by the `fsync` alone).
struct WritebackFile {
    file: fs::File,
    /// Bytes written so far.
    written: u64,
    /// Bytes already handed to the disk.
    handed: u64,
}

impl WritebackFile {
    fn new(file: fs::File) -> WritebackFile {
        WritebackFile {
            file,
            written: 0,
            handed: 0,
        }
    }

    /// Starts the disk writing bytes `handed .. written`.
    fn hand_to_disk(&mut self) {
        #[cfg(target_os = "linux")]
        {
            use std::os::fd::AsRawFd;
            let (offset, len) = (self.handed as i64, (self.written - self.handed) as i64);
            // SAFETY: the descriptor is this open file's; the call only
            // schedules the writeback of a range of it, and its failure (an
            // old kernel, a file system without it) leaves the `fsync` to do
            // the writing, so its result is not needed.
            unsafe {
                libc::sync_file_range(
                    self.file.as_raw_fd(),
                    offset,
                    len,
                    libc::SYNC_FILE_RANGE_WRITE,
                )
            };
        }
        self.handed = self.written;
    }
}

impl Write for WritebackFile {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.file.write(buf)?;
        self.written += n as u64;
        if self.written - self.handed >= WRITEBACK_BYTES {
            self.hand_to_disk();
        }
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.file.flush()
    }
}

fn rename(from: &Path, to: &Path) -> Result<(), CheckpointError> {
    fs::rename(from, to).map_err(io_error(to))
}
