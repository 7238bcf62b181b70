//! A checkpoint file read through a read-only memory map: [`MappedFile`].
//!
//! Reading a `model.safetensors` into a buffer and then converting its
//! tensors to f32 holds the weights twice at once: a 2 GB file peaks at 4 GB.
//! Mapped, the file is read from its pages as each tensor is converted, and
//! the pages it was read from are handed back as it goes
//! ([`MappedFile::convert`]), so loading holds the converted tensors and
//! one chunk of the file.
//!
//! A file changed by another process while it is mapped can be read half
//! old, half new (as with `read`); one truncated under the map makes the
//! process fail with SIGBUS on the lost pages. Checkpoints are written
//! beside and renamed over (docs/spec.md section 5.6), which replaces the
//! file and leaves a map of the old one intact.

use std::fs;
use std::path::Path;

use memmap2::Mmap;

use crate::checkpoint::CheckpointError;

/// Bytes converted per step of [`MappedFile::convert`]: 1 MiB, a multiple of
/// every element size.
pub const CHUNK_BYTES: usize = 1 << 20;

/// A file mapped read-only.
pub struct MappedFile {
    /// `None` for an empty file (which cannot be mapped).
    map: Option<Mmap>,
}

impl MappedFile {
    /// Maps `path`, refusing anything but a regular file of at most
    /// `max_bytes` (a link to `/dev/zero`, a file far larger than what it
    /// should hold).
    pub fn open(path: &Path, max_bytes: u64) -> Result<MappedFile, CheckpointError> {
        let io_error = |error| CheckpointError::Io {
            path: path.to_path_buf(),
            error,
        };
        let file = fs::File::open(path).map_err(io_error)?;
        let metadata = file.metadata().map_err(io_error)?;
        let refuse = |message: String| CheckpointError::Format {
            path: path.to_path_buf(),
            message,
        };
        if !metadata.is_file() {
            return Err(refuse("not a regular file".into()));
        }
        if metadata.len() > max_bytes {
            return Err(refuse(format!(
                "larger than the {max_bytes} bytes it may hold"
            )));
        }
        let map = match metadata.len() {
            0 => None,
            // SAFETY: the map is read-only and lives as long as `self`; see
            // the module docs for a file changed under it.
            _ => Some(unsafe { Mmap::map(&file) }.map_err(io_error)?),
        };
        Ok(MappedFile { map })
    }

    /// The file's bytes.
    pub fn bytes(&self) -> &[u8] {
        self.map.as_deref().unwrap_or(&[])
    }

    /// `convert` of `part` (a slice of [`MappedFile::bytes`]), one chunk of
    /// [`CHUNK_BYTES`] at a time, each chunk released once converted: a
    /// tensor's pages and its converted values are never held whole at once.
    /// `None` where `convert` gives `None`.
    pub fn convert<T>(
        &self,
        part: &[u8],
        convert: impl Fn(&[u8]) -> Option<Vec<T>>,
    ) -> Option<Vec<T>> {
        let mut values = Vec::new();
        for chunk in part.chunks(CHUNK_BYTES) {
            values.extend(convert(chunk)?);
            self.release(chunk);
        }
        Some(values)
    }

    /// Hands `part` (a slice of [`MappedFile::bytes`]) back to the kernel:
    /// its pages leave this process's resident memory (they stay in the page
    /// cache), and reading them again reads them from the file again.
    pub fn release(&self, part: &[u8]) {
        let Some(map) = &self.map else { return };
        let offset = part.as_ptr() as usize - map.as_ptr() as usize;
        assert!(
            offset + part.len() <= map.len(),
            "MappedFile::release: not a part of the file"
        );
        // SAFETY: the map is read-only and backed by the file, so dropped
        // pages are read again from it if touched later: no data is lost,
        // and no reference sees other values. The result is only advice.
        #[cfg(unix)]
        let _ = unsafe {
            map.unchecked_advise_range(memmap2::UncheckedAdvice::DontNeed, offset, part.len())
        };
    }
}
