//! Checking the declared sizes of a Parquet file before the `parquet` crate
//! reads its pages: every column chunk must lie inside the file, and every
//! page must fit in its column chunk and decompress to at most
//! [`MAX_PAGE_BYTES`]. The crate allocates a page's declared decompressed
//! size up front, so a header that declares 2 GiB would take 2 GiB.
//!
//! Page headers are Thrift structs in the compact protocol (the Parquet
//! format's `PageHeader`); only fields 2 (`uncompressed_page_size`) and 3
//! (`compressed_page_size`) are read, the rest is skipped.

use std::io::{self, Read};

use ::parquet::file::metadata::{ColumnChunkMetaData, ParquetMetaData};
use ::parquet::file::reader::ChunkReader;

/// The most bytes one page may hold, compressed or not: 64 MiB, as a data
/// line (writers aim at about 1 MiB per page).
pub const MAX_PAGE_BYTES: usize = 64 << 20;

/// How deep Thrift structs and lists may nest inside a page header (the
/// format's own nest three deep).
const MAX_DEPTH: usize = 16;

/// Checks every column chunk of every row group of the file read by `reader`.
pub(super) fn check_pages<C: ChunkReader>(
    reader: &C,
    metadata: &ParquetMetaData,
) -> Result<(), String> {
    let file_len = reader.len();
    for (group, row_group) in metadata.row_groups().iter().enumerate() {
        for column in row_group.columns() {
            let at = || format!("row group {}, column {}", group + 1, column.column_path());
            let (start, end) =
                chunk_range(column, file_len).map_err(|e| format!("{}: {e}", at()))?;
            check_chunk(reader, start, end).map_err(|e| format!("{}: {e}", at()))?;
        }
    }
    Ok(())
}

/// The byte range of a column chunk, which must lie inside the file.
fn chunk_range(column: &ColumnChunkMetaData, file_len: u64) -> Result<(u64, u64), String> {
    let start = column
        .dictionary_page_offset()
        .unwrap_or(column.data_page_offset());
    let len = column.compressed_size();
    let range = u64::try_from(start)
        .ok()
        .zip(u64::try_from(len).ok())
        .and_then(|(start, len)| Some((start, start.checked_add(len)?)));
    match range {
        Some((start, end)) if end <= file_len => Ok((start, end)),
        _ => Err(format!(
            "the column chunk declares {len} bytes at offset {start}, \
             past the end of the file ({file_len} bytes)"
        )),
    }
}

/// Walks the pages of the column chunk `start..end`, header by header.
fn check_chunk<C: ChunkReader>(reader: &C, start: u64, end: u64) -> Result<(), String> {
    let mut offset = start;
    while offset < end {
        let read = reader.get_read(offset).map_err(|e| e.to_string())?;
        let mut header = Compact::new(read.take(end - offset));
        let (compressed, uncompressed) = header
            .page_sizes()
            .map_err(|e| format!("the page header at byte {offset}: {e}"))?;
        let body_start = offset + header.consumed;
        for size in [compressed, uncompressed] {
            if size < 0 || size as u64 > MAX_PAGE_BYTES as u64 {
                return Err(format!(
                    "the page at byte {offset} declares {size} bytes, \
                     more than the {} MiB a page may hold",
                    MAX_PAGE_BYTES >> 20
                ));
            }
        }
        if compressed as u64 > end - body_start {
            return Err(format!(
                "the page at byte {offset} declares {compressed} bytes, \
                 past the end of its column chunk"
            ));
        }
        offset = body_start + compressed as u64;
    }
    Ok(())
}

/// A reader of the Thrift compact protocol that counts the bytes it takes.
struct Compact<R> {
    read: R,
    consumed: u64,
}

impl<R: Read> Compact<R> {
    fn new(read: R) -> Self {
        Compact { read, consumed: 0 }
    }

    /// `(compressed_page_size, uncompressed_page_size)` of a `PageHeader`.
    fn page_sizes(&mut self) -> Result<(i64, i64), String> {
        let (mut compressed, mut uncompressed) = (None, None);
        let mut id = 0i64;
        loop {
            let header = self.byte()?;
            if header == 0 {
                break;
            }
            let kind = header & 0x0f;
            id = match header >> 4 {
                0 => zigzag(self.varint()?),
                delta => id + i64::from(delta),
            };
            match (id, kind) {
                (2, I32) => uncompressed = Some(zigzag(self.varint()?)),
                (3, I32) => compressed = Some(zigzag(self.varint()?)),
                _ => self.skip(kind, 0)?,
            }
        }
        compressed
            .zip(uncompressed)
            .ok_or_else(|| "no page sizes in it".to_string())
    }

    /// Skips one value of Thrift type `kind`, `depth` levels down.
    fn skip(&mut self, kind: u8, depth: usize) -> Result<(), String> {
        if depth > MAX_DEPTH {
            return Err(format!("nested more than {MAX_DEPTH} deep"));
        }
        match kind {
            BOOL_TRUE | BOOL_FALSE => {}
            BYTE => {
                self.byte()?;
            }
            I16 | I32 | I64 => {
                self.varint()?;
            }
            DOUBLE => self.bytes(8)?,
            BINARY => {
                let len = self.varint()?;
                self.bytes(len)?;
            }
            LIST | SET => {
                let header = self.byte()?;
                let count = match u64::from(header >> 4) {
                    15 => self.varint()?,
                    count => count,
                };
                for _ in 0..count {
                    self.skip_element(header & 0x0f, depth + 1)?;
                }
            }
            MAP => {
                let count = self.varint()?;
                if count > 0 {
                    let kinds = self.byte()?;
                    for _ in 0..count {
                        self.skip_element(kinds >> 4, depth + 1)?;
                        self.skip_element(kinds & 0x0f, depth + 1)?;
                    }
                }
            }
            STRUCT => loop {
                let header = self.byte()?;
                if header == 0 {
                    break;
                }
                if header >> 4 == 0 {
                    self.varint()?;
                }
                self.skip(header & 0x0f, depth + 1)?;
            },
            other => return Err(format!("unknown Thrift type {other}")),
        }
        Ok(())
    }

    /// Skips an element of a list, set or map: as [`Self::skip`], except
    /// that a boolean takes a byte. Every element takes at least one byte,
    /// so a declared count past the chunk's bytes ends at its end.
    fn skip_element(&mut self, kind: u8, depth: usize) -> Result<(), String> {
        match kind {
            BOOL_TRUE | BOOL_FALSE => self.byte().map(drop),
            kind => self.skip(kind, depth),
        }
    }

    fn byte(&mut self) -> Result<u8, String> {
        let mut byte = [0u8];
        self.read.read_exact(&mut byte).map_err(truncated)?;
        self.consumed += 1;
        Ok(byte[0])
    }

    fn bytes(&mut self, len: u64) -> Result<(), String> {
        let copied =
            io::copy(&mut (&mut self.read).take(len), &mut io::sink()).map_err(truncated)?;
        self.consumed += copied;
        if copied < len {
            return Err(truncated(io::ErrorKind::UnexpectedEof.into()));
        }
        Ok(())
    }

    /// An unsigned LEB128 varint of at most 10 bytes.
    fn varint(&mut self) -> Result<u64, String> {
        let mut value = 0u64;
        for shift in (0..70).step_by(7) {
            let byte = self.byte()?;
            value |= u64::from(byte & 0x7f).checked_shl(shift).unwrap_or(0);
            if byte & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err("a varint longer than 10 bytes".to_string())
    }
}

/// A zigzag-encoded integer's value.
fn zigzag(n: u64) -> i64 {
    (n >> 1) as i64 ^ -((n & 1) as i64)
}

/// A read that ended inside a page header.
fn truncated(e: io::Error) -> String {
    format!("cut short ({e})")
}

// The Thrift compact protocol's type codes.
const BOOL_TRUE: u8 = 1;
const BOOL_FALSE: u8 = 2;
const BYTE: u8 = 3;
const I16: u8 = 4;
const I32: u8 = 5;
const I64: u8 = 6;
const DOUBLE: u8 = 7;
const BINARY: u8 = 8;
const LIST: u8 = 9;
const SET: u8 = 10;
const MAP: u8 = 11;
const STRUCT: u8 = 12;
