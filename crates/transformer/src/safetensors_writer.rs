//! safetensors files written straight from live tensors: the header, then
//! each tensor's little-endian bytes, into any [`Write`] (a buffered file, a
//! hashing writer), with no copy of the file in memory.
//!
//! The bytes are those `safetensors::serialize` (0.4) makes of the same
//! tensors, to the byte (tested in `tests/safetensors_writer.rs`), so a file
//! written here has the checksum the in-memory serializer gave it:
//!
//! ```text
//! [n: u64 LE] [header: n bytes of JSON, padded with spaces to a multiple of 8] [data]
//! header = {"__metadata__": {...}?, NAME: {"dtype": "F32", "shape": [...], "data_offsets": [begin, end]}, ...}
//! ```
//!
//! with the tensors sorted by name (safetensors sorts by dtype, then name; all
//! of ours are F32) and their data in that order, each `[begin, end)` of
//! `data`. The `__metadata__` entries come in the order given (safetensors
//! keeps them in a `HashMap`, so only a file of at most one entry, such as
//! `{"format": "pt"}`, has one byte order there).

use std::borrow::Cow;
use std::io::{self, Write};

use ndarray::ArrayViewD;
use safetensors::tensor::TensorInfo;
use safetensors::Dtype;
use serde::ser::{Serialize, SerializeMap, Serializer};

/// Bytes handed to the writer at a time: 4 MiB, so a file's writer sees
/// steady progress (and a buffered one passes them on without a copy).
const WRITE_BYTES: usize = 4 << 20;

/// `values` as little-endian bytes: their own memory on a little-endian CPU
/// (every one this project targets), a converted copy elsewhere.
fn le_bytes(values: &[f32]) -> Cow<'_, [u8]> {
    if cfg!(target_endian = "little") {
        // SAFETY: an f32 is 4 bytes with no padding and any bit pattern is a
        // valid u8, so the floats' memory is `4 * len` initialized bytes,
        // borrowed for as long as the floats.
        Cow::Borrowed(unsafe {
            std::slice::from_raw_parts(values.as_ptr().cast::<u8>(), std::mem::size_of_val(values))
        })
    } else {
        Cow::Owned(values.iter().flat_map(|x| x.to_le_bytes()).collect())
    }
}

/// A safetensors file of F32 tensors borrowed from where they live (a
/// model's weights, an optimizer's moments), ready to be written.
#[derive(Debug, Clone)]
pub struct SafetensorsFile<'a> {
    /// `(name, values)`, sorted by name; a view's shape is the stored shape
    /// (a transposed view is written transposed).
    tensors: Vec<(String, ArrayViewD<'a, f32>)>,
    /// `__metadata__`, in this order; empty for none.
    metadata: Vec<(String, String)>,
}

/// The header JSON, in `safetensors::serialize`'s key order.
struct Header<'h> {
    metadata: &'h [(String, String)],
    infos: Vec<(&'h str, TensorInfo)>,
}

/// `__metadata__`'s map, in the order given.
struct MetadataMap<'h>(&'h [(String, String)]);

impl Serialize for MetadataMap<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(self.0.len()))?;
        for (key, value) in self.0 {
            map.serialize_entry(key, value)?;
        }
        map.end()
    }
}

impl Serialize for Header<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let has_metadata = !self.metadata.is_empty();
        let mut map =
            serializer.serialize_map(Some(self.infos.len() + usize::from(has_metadata)))?;
        if has_metadata {
            map.serialize_entry("__metadata__", &MetadataMap(self.metadata))?;
        }
        for (name, info) in &self.infos {
            map.serialize_entry(name, info)?;
        }
        map.end()
    }
}

impl<'a> SafetensorsFile<'a> {
    /// The file of `tensors` (in any order: they are sorted by name here)
    /// with the `__metadata__` entries `metadata` (none if empty).
    pub fn new(
        mut tensors: Vec<(String, ArrayViewD<'a, f32>)>,
        metadata: &[(&str, &str)],
    ) -> SafetensorsFile<'a> {
        tensors.sort_by(|(a, _), (b, _)| a.cmp(b));
        SafetensorsFile {
            tensors,
            metadata: metadata
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        }
    }

    /// The first 8 + n bytes of the file: the header's length n (u64, little
    /// endian) and the header, padded with spaces to a multiple of 8.
    pub fn header(&self) -> Vec<u8> {
        let mut offset = 0;
        let infos = self
            .tensors
            .iter()
            .map(|(name, view)| {
                let end = offset + 4 * view.len();
                let info = TensorInfo {
                    dtype: Dtype::F32,
                    shape: view.shape().to_vec(),
                    data_offsets: (offset, end),
                };
                offset = end;
                (name.as_str(), info)
            })
            .collect();
        let header = Header {
            metadata: &self.metadata,
            infos,
        };
        let mut json = serde_json::to_vec(&header).expect("a header of strings and numbers");
        // safetensors aligns the data to 8 bytes.
        json.resize(json.len().next_multiple_of(8), b' ');
        let mut bytes = (json.len() as u64).to_le_bytes().to_vec();
        bytes.extend_from_slice(&json);
        bytes
    }

    /// The size of the whole file, in bytes.
    pub fn len(&self) -> u64 {
        let data: usize = self.tensors.iter().map(|(_, view)| 4 * view.len()).sum();
        self.header().len() as u64 + data as u64
    }

    /// Whether the file holds no tensor (it still has a header).
    pub fn is_empty(&self) -> bool {
        self.tensors.is_empty()
    }

    /// Writes the file into `out`: the header, then each tensor's values in
    /// row-major order as little-endian bytes, 4 MiB at a time (a
    /// tensor that is not in standard layout, such as a transposed view, is
    /// first copied into it: one tensor at a time).
    pub fn write_to<W: Write + ?Sized>(&self, out: &mut W) -> io::Result<()> {
        out.write_all(&self.header())?;
        for (_, view) in &self.tensors {
            let values = view.as_standard_layout();
            let values = values.as_slice().expect("standard layout is contiguous");
            for chunk in le_bytes(values).chunks(WRITE_BYTES) {
                out.write_all(chunk)?;
            }
        }
        Ok(())
    }

    /// The whole file in memory: for the places that need bytes, not a file.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut bytes = Vec::with_capacity(self.len() as usize);
        self.write_to(&mut bytes).expect("a Vec takes every write");
        bytes
    }
}
