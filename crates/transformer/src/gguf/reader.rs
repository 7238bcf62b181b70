//! The GGUF container (versions 2 and 3, little-endian): header, metadata
//! key/values, tensor infos, and where each tensor's bytes are.
//!
//! ```text
//! magic "GGUF" | version: u32 | n_tensors: u64 | n_kv: u64
//! n_kv x (key: string, type: u32, value)
//! n_tensors x (name: string, n_dims: u32, ne: [u64; n_dims], type: u32, offset: u64)
//! padding to general.alignment (32 by default) | tensor data
//! string = len: u64, UTF-8 bytes; array = type: u32, len: u64, values
//! ```
//!
//! Parsing works on the bytes of the whole file and trusts no count in it:
//! every count is capped, every length checked against the bytes left
//! before anything is allocated for it, the dims' product is checked for
//! overflow, and every tensor's byte range must lie inside the file.

use std::collections::HashSet;
use std::path::Path;

use super::quants::GgmlType;
use super::GgufError;

/// "GGUF" read as a little-endian u32.
pub const GGUF_MAGIC: u32 = 0x4655_4747;
/// The alignment of tensor data when `general.alignment` is absent.
pub const DEFAULT_ALIGNMENT: u64 = 32;
/// The most tensors a file may declare (a 70B model has under 1,000).
pub const MAX_TENSORS: u64 = 1 << 16;
/// The most metadata key/values a file may declare (real files have ~40).
pub const MAX_METADATA: u64 = 1 << 16;
/// The longest string (a chat template is a few KiB).
pub const MAX_STRING_BYTES: u64 = 1 << 24;
/// The longest array (a vocabulary has up to ~256k tokens).
pub const MAX_ARRAY_LEN: u64 = 1 << 24;
/// ggml's `GGML_MAX_DIMS`.
pub const MAX_DIMS: u32 = 4;
/// How deep arrays of arrays may nest.
const MAX_ARRAY_DEPTH: u32 = 2;

/// One metadata value (`gguf_type`).
#[derive(Debug, Clone, PartialEq)]
pub enum MetaValue {
    U8(u8),
    I8(i8),
    U16(u16),
    I16(i16),
    U32(u32),
    I32(i32),
    F32(f32),
    Bool(bool),
    String(String),
    Array(Vec<MetaValue>),
    U64(u64),
    I64(i64),
    F64(f64),
}

impl MetaValue {
    /// The value as an integer, if it is one of the integer types.
    pub fn as_i128(&self) -> Option<i128> {
        Some(match *self {
            MetaValue::U8(v) => v.into(),
            MetaValue::I8(v) => v.into(),
            MetaValue::U16(v) => v.into(),
            MetaValue::I16(v) => v.into(),
            MetaValue::U32(v) => v.into(),
            MetaValue::I32(v) => v.into(),
            MetaValue::U64(v) => v.into(),
            MetaValue::I64(v) => v.into(),
            _ => return None,
        })
    }

    /// The value as a float, if it is a float or an integer.
    pub fn as_f64(&self) -> Option<f64> {
        match *self {
            MetaValue::F32(v) => Some(v.into()),
            MetaValue::F64(v) => Some(v),
            _ => self.as_i128().map(|v| v as f64),
        }
    }

    /// The string, if the value is one.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            MetaValue::String(s) => Some(s),
            _ => None,
        }
    }

    /// The elements, if the value is an array.
    pub fn as_array(&self) -> Option<&[MetaValue]> {
        match self {
            MetaValue::Array(a) => Some(a),
            _ => None,
        }
    }

    /// The value as JSON (for an HF config, or to print it).
    pub fn to_json(&self) -> serde_json::Value {
        use serde_json::Value;
        match self {
            MetaValue::F32(v) => {
                serde_json::Number::from_f64(f64::from(*v)).map_or(Value::Null, Value::Number)
            }
            MetaValue::F64(v) => {
                serde_json::Number::from_f64(*v).map_or(Value::Null, Value::Number)
            }
            MetaValue::Bool(b) => Value::Bool(*b),
            MetaValue::String(s) => Value::String(s.clone()),
            MetaValue::Array(a) => Value::Array(a.iter().map(MetaValue::to_json).collect()),
            MetaValue::U64(v) => Value::from(*v),
            MetaValue::I64(v) => Value::from(*v),
            other => Value::from(other.as_i128().unwrap() as i64),
        }
    }
}

/// Where one tensor is and what it holds.
#[derive(Debug, Clone, PartialEq)]
pub struct TensorInfo {
    /// Its GGUF name (`blk.0.attn_q.weight`).
    pub name: String,
    /// ggml's `ne`: the fastest-varying dimension first (PyTorch's shape reversed).
    pub ne: Vec<u64>,
    /// Its type.
    pub ty: GgmlType,
    /// The offset of its first byte in the file (the data offset added).
    pub start: usize,
    /// Its size in bytes.
    pub n_bytes: usize,
}

impl TensorInfo {
    /// The shape in PyTorch order (`ne` reversed).
    pub fn shape(&self) -> Vec<usize> {
        self.ne.iter().rev().map(|&d| d as usize).collect()
    }

    /// The number of values.
    pub fn n_values(&self) -> usize {
        self.ne.iter().product::<u64>() as usize
    }
}

/// A parsed GGUF file: its metadata in file order and its tensors.
#[derive(Debug, Clone, PartialEq)]
pub struct GgufFile {
    /// The format version (2 or 3).
    pub version: u32,
    /// The key/values in file order.
    pub metadata: Vec<(String, MetaValue)>,
    /// The tensor infos in file order.
    pub tensors: Vec<TensorInfo>,
    /// `general.alignment` or [`DEFAULT_ALIGNMENT`].
    pub alignment: u64,
    /// The offset of the tensor data in the file.
    pub data_offset: usize,
}

impl GgufFile {
    /// The value of the metadata key `key`, if present.
    pub fn get(&self, key: &str) -> Option<&MetaValue> {
        self.metadata.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }

    /// The tensor named `name` (GGUF name), if present.
    pub fn tensor(&self, name: &str) -> Option<&TensorInfo> {
        self.tensors.iter().find(|t| t.name == name)
    }

    /// Parses the header, metadata and tensor infos of `bytes`, the whole
    /// file (`path` names it in errors).
    pub fn parse(bytes: &[u8], path: &Path) -> Result<GgufFile, GgufError> {
        let mut r = Cursor {
            bytes,
            pos: 0,
            path,
        };
        let magic = r.u32("the magic")?;
        if magic != GGUF_MAGIC {
            return Err(r.error(format!(
                "not a GGUF file (magic {:02x?}, expected \"GGUF\")",
                magic.to_le_bytes()
            )));
        }
        let version = r.u32("the version")?;
        if version != 2 && version != 3 {
            return Err(r.error(format!(
                "GGUF version {version} is not supported (2 and 3 are)"
            )));
        }
        let n_tensors = r.u64("the tensor count")?;
        let n_kv = r.u64("the metadata count")?;
        if n_tensors > MAX_TENSORS {
            return Err(r.error(format!(
                "{n_tensors} tensors is more than the {MAX_TENSORS} allowed"
            )));
        }
        if n_kv > MAX_METADATA {
            return Err(r.error(format!(
                "{n_kv} metadata entries is more than the {MAX_METADATA} allowed"
            )));
        }

        // A key/value takes at least 12 bytes, a tensor info 24: capping the
        // capacities by what is left keeps a lying count from allocating.
        let mut metadata = Vec::with_capacity((n_kv as usize).min(r.left() / 12));
        let mut keys = HashSet::new();
        for i in 0..n_kv {
            let key = r.string(&format!("the key of metadata entry {i}"))?;
            let ty = r.u32(&format!("the type of metadata {key:?}"))?;
            let value = r.value(ty, &key, 0)?;
            if !keys.insert(key.clone()) {
                return Err(r.error(format!("metadata key {key:?} appears twice")));
            }
            metadata.push((key, value));
        }

        let alignment = match metadata.iter().find(|(k, _)| k == "general.alignment") {
            None => DEFAULT_ALIGNMENT,
            Some((_, MetaValue::U32(a))) if a.is_power_of_two() => u64::from(*a),
            Some((_, v)) => {
                return Err(r.error(format!(
                    "general.alignment is {v:?}, not a power of two as a u32"
                )))
            }
        };

        let mut infos = Vec::with_capacity((n_tensors as usize).min(r.left() / 24));
        let mut names = HashSet::new();
        for i in 0..n_tensors {
            let name = r.string(&format!("the name of tensor {i}"))?;
            let what = |s: &str| format!("the {s} of tensor {name:?}");
            let n_dims = r.u32(&what("dimension count"))?;
            if n_dims == 0 || n_dims > MAX_DIMS {
                return Err(r.tensor_error(
                    &name,
                    format!("{n_dims} dimensions (1 to {MAX_DIMS} allowed)"),
                ));
            }
            let mut ne = Vec::with_capacity(n_dims as usize);
            for _ in 0..n_dims {
                ne.push(r.u64(&what("dimensions"))?);
            }
            let ty_id = r.u32(&what("type"))?;
            let ty = GgmlType::from_id(ty_id)
                .ok_or_else(|| r.tensor_error(&name, format!("unknown ggml type {ty_id}")))?;
            let offset = r.u64(&what("offset"))?;
            if !names.insert(name.clone()) {
                return Err(r.tensor_error(&name, "appears twice".into()));
            }
            infos.push((name, ne, ty, offset));
        }

        let data_offset = align_up(r.pos as u64, alignment)
            .filter(|&o| o <= bytes.len() as u64)
            .ok_or_else(|| r.error("the file ends before its tensor data (truncated?)".into()))?;
        let data_len = bytes.len() as u64 - data_offset;

        let mut tensors = Vec::with_capacity(infos.len());
        for (name, ne, ty, offset) in infos {
            let n_bytes = tensor_bytes(&ne, ty).map_err(|m| r.tensor_error(&name, m))?;
            if offset % alignment != 0 {
                return Err(r.tensor_error(
                    &name,
                    format!("offset {offset} is not a multiple of the alignment {alignment}"),
                ));
            }
            if offset.checked_add(n_bytes).is_none_or(|end| end > data_len) {
                return Err(r.tensor_error(
                    &name,
                    format!(
                        "its {n_bytes} bytes at data offset {offset} run past the end of the \
                         file ({data_len} bytes of data; truncated?)"
                    ),
                ));
            }
            tensors.push(TensorInfo {
                name,
                ne,
                ty,
                start: (data_offset + offset) as usize,
                n_bytes: n_bytes as usize,
            });
        }
        Ok(GgufFile {
            version,
            metadata,
            tensors,
            alignment,
            data_offset: data_offset as usize,
        })
    }
}

fn align_up(pos: u64, alignment: u64) -> Option<u64> {
    Some(pos.checked_add(alignment - 1)? / alignment * alignment)
}

/// The byte size of a tensor of dims `ne` and type `ty`: whole blocks along
/// `ne[0]` (ggml's rule), the product checked for overflow.
fn tensor_bytes(ne: &[u64], ty: GgmlType) -> Result<u64, String> {
    let (block, type_size) = ty.block_layout();
    if !ne[0].is_multiple_of(block as u64) {
        return Err(format!(
            "its first dimension {} is not a multiple of the {} block size {block}",
            ne[0],
            ty.name()
        ));
    }
    let n_values = ne
        .iter()
        .try_fold(1u64, |acc, &d| acc.checked_mul(d))
        .filter(|&n| n <= isize::MAX as u64)
        .ok_or_else(|| format!("its dimensions {ne:?} overflow"))?;
    (n_values / block as u64)
        .checked_mul(type_size as u64)
        .ok_or_else(|| format!("its dimensions {ne:?} overflow"))
}

/// A position in the file's bytes; every read is bounds-checked.
struct Cursor<'a> {
    bytes: &'a [u8],
    pos: usize,
    path: &'a Path,
}

impl Cursor<'_> {
    fn error(&self, message: String) -> GgufError {
        GgufError::Format {
            path: self.path.to_path_buf(),
            message,
        }
    }

    fn tensor_error(&self, name: &str, message: String) -> GgufError {
        GgufError::Tensor {
            path: self.path.to_path_buf(),
            name: name.to_string(),
            message,
        }
    }

    fn left(&self) -> usize {
        self.bytes.len() - self.pos
    }

    fn take(&mut self, n: u64, what: &str) -> Result<&[u8], GgufError> {
        if n > self.left() as u64 {
            return Err(self.error(format!(
                "the file ends in {what} (at byte {}, {n} bytes needed, {} left; truncated?)",
                self.pos,
                self.left()
            )));
        }
        let start = self.pos;
        self.pos += n as usize;
        Ok(&self.bytes[start..self.pos])
    }

    fn array<const N: usize>(&mut self, what: &str) -> Result<[u8; N], GgufError> {
        Ok(self.take(N as u64, what)?.try_into().unwrap())
    }

    fn u32(&mut self, what: &str) -> Result<u32, GgufError> {
        Ok(u32::from_le_bytes(self.array(what)?))
    }

    fn u64(&mut self, what: &str) -> Result<u64, GgufError> {
        Ok(u64::from_le_bytes(self.array(what)?))
    }

    fn string(&mut self, what: &str) -> Result<String, GgufError> {
        let len = self.u64(what)?;
        if len > MAX_STRING_BYTES {
            return Err(self.error(format!(
                "{what} is a string of {len} bytes, more than the {MAX_STRING_BYTES} allowed"
            )));
        }
        // Lossy, as a vocabulary may hold a token that is not valid UTF-8.
        Ok(String::from_utf8_lossy(self.take(len, what)?).into_owned())
    }

    fn value(&mut self, ty: u32, key: &str, depth: u32) -> Result<MetaValue, GgufError> {
        let what = format!("the value of metadata {key:?}");
        Ok(match ty {
            0 => MetaValue::U8(self.array::<1>(&what)?[0]),
            1 => MetaValue::I8(self.array::<1>(&what)?[0] as i8),
            2 => MetaValue::U16(u16::from_le_bytes(self.array(&what)?)),
            3 => MetaValue::I16(i16::from_le_bytes(self.array(&what)?)),
            4 => MetaValue::U32(u32::from_le_bytes(self.array(&what)?)),
            5 => MetaValue::I32(i32::from_le_bytes(self.array(&what)?)),
            6 => MetaValue::F32(f32::from_le_bytes(self.array(&what)?)),
            7 => match self.array::<1>(&what)?[0] {
                0 => MetaValue::Bool(false),
                1 => MetaValue::Bool(true),
                b => return Err(self.error(format!("metadata {key:?} is a bool of byte {b}"))),
            },
            8 => MetaValue::String(self.string(&what)?),
            9 => {
                if depth >= MAX_ARRAY_DEPTH {
                    return Err(self.error(format!(
                        "metadata {key:?} nests arrays deeper than {MAX_ARRAY_DEPTH}"
                    )));
                }
                let elem_ty = self.u32(&what)?;
                let len = self.u64(&what)?;
                if len > MAX_ARRAY_LEN {
                    return Err(self.error(format!(
                        "metadata {key:?} is an array of {len} values, more than the \
                         {MAX_ARRAY_LEN} allowed"
                    )));
                }
                // Every value takes at least one byte.
                let mut values = Vec::with_capacity((len as usize).min(self.left()));
                for _ in 0..len {
                    values.push(self.value(elem_ty, key, depth + 1)?);
                }
                MetaValue::Array(values)
            }
            10 => MetaValue::U64(u64::from_le_bytes(self.array(&what)?)),
            11 => MetaValue::I64(i64::from_le_bytes(self.array(&what)?)),
            12 => MetaValue::F64(f64::from_le_bytes(self.array(&what)?)),
            other => {
                return Err(self.error(format!("metadata {key:?} has unknown value type {other}")))
            }
        })
    }
}
