//! Reading Parquet files, the format the Hugging Face `datasets` library
//! writes (`Dataset.to_parquet`, the hub's `data/train-0000K-of-0000N.parquet`
//! shards), one row at a time as the JSON objects the row parsers read
//! (docs/spec.md section 3.1).
//!
//! A row is read as the JSON object its JSON Lines twin would be: strings,
//! booleans, integers, floats, lists, structs (objects) and maps; a null
//! column (or struct field) is a key absent from the object. Rows are read
//! row group by row group through the `parquet` crate's record API, so only
//! one row group's pages are held at a time.
//!
//! Hostile files are refused with one line ([`DataError::Parquet`]) before
//! they can take unbounded memory: the crate checks the footer against the
//! file's length, and [`pages`] checks every page header's declared sizes
//! against its column chunk and [`MAX_PAGE_BYTES`] before anything is read.
//! A decoder of the crate that panics on a corrupt page is caught by
//! [`guard`] and refuses the file the same way.

mod guard;
mod json;
mod pages;
mod schema;

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

use ::parquet::file::metadata::ParquetMetaDataReader;
use ::parquet::file::reader::{ChunkReader, FileReader, SerializedFileReader};
use ::parquet::record::reader::RowIter;
use serde_json::{Map, Value};

use guard::guarded;

use super::collect::RowCollector;
use super::jsonl::JsonRow;
use super::{BadLine, DataError, LoadReport};

pub use pages::MAX_PAGE_BYTES;

/// The four bytes every Parquet file starts and ends with.
const MAGIC: &[u8; 4] = b"PAR1";

/// Whether `path` is read as Parquet: a directory (of shards), a name
/// ending in `.parquet`, or a file whose first bytes are `PAR1`. Anything
/// else (an unopenable path included) goes to the JSON Lines reader.
pub(crate) fn is_parquet(path: &Path) -> bool {
    if path.is_dir() || path.extension().is_some_and(|ext| ext == "parquet") {
        return true;
    }
    let mut start = [0u8; 4];
    File::open(path).is_ok_and(|mut file| file.read_exact(&mut start).is_ok() && &start == MAGIC)
}

/// Reads every row of `path` (one Parquet file, or every `.parquet` file
/// under a directory, in sorted path order) through `parse_row(row,
/// number)`, where `number` counts rows from 1 across all the files. A bad
/// row is refused as `SHARD:ROW: why` (its row within its own file) or,
/// with `skip_invalid`, skipped and counted under `number`.
pub(crate) fn read_rows<R>(
    path: &Path,
    skip_invalid: bool,
    mut parse_row: impl FnMut(&JsonRow, usize) -> Result<R, BadLine>,
) -> Result<(Vec<R>, LoadReport), DataError> {
    let mut rows = RowCollector::new(skip_invalid);
    let mut number = 0;
    for shard in shard_files(path)? {
        let name = shard.display().to_string();
        let file = File::open(&shard).map_err(|error| DataError::Open {
            path: name.clone(),
            error,
        })?;
        for_each_object(file, &name, |line, object| {
            number += 1;
            let parsed = object.and_then(|row| parse_row(&row, number));
            rows.take(parsed, number, &name, line)
        })?;
    }
    rows.finish(&path.display().to_string())
}

/// One row of a Parquet file: its 1-based number, and its JSON object or
/// why it has none (a string column whose bytes are not UTF-8).
pub type ParquetObject = (usize, Result<Map<String, Value>, BadLine>);

/// Every row of the Parquet file `bytes` as a JSON object, in file order;
/// `name` stands for the file in errors. What the loaders read from a
/// `.parquet` file before parsing each row, for the fuzzer and tests.
pub fn read_parquet_objects(bytes: Vec<u8>, name: &str) -> Result<Vec<ParquetObject>, DataError> {
    let mut objects = Vec::new();
    for_each_object(::bytes::Bytes::from(bytes), name, |line, object| {
        objects.push((line, object));
        Ok(())
    })?;
    Ok(objects)
}

/// The files `path` stands for: itself, or for a directory every
/// `.parquet` file below it (symbolic links to directories not followed),
/// sorted by path. A directory without one is an error.
fn shard_files(path: &Path) -> Result<Vec<PathBuf>, DataError> {
    if !path.is_dir() {
        return Ok(vec![path.to_path_buf()]);
    }
    let mut files = Vec::new();
    let mut pending = vec![path.to_path_buf()];
    while let Some(dir) = pending.pop() {
        let entries = std::fs::read_dir(&dir).map_err(|error| DataError::Open {
            path: dir.display().to_string(),
            error,
        })?;
        for entry in entries {
            let entry = entry.map_err(|error| DataError::Open {
                path: dir.display().to_string(),
                error,
            })?;
            let entry_path = entry.path();
            if entry.file_type().is_ok_and(|kind| kind.is_dir()) {
                pending.push(entry_path);
            } else if entry_path.extension().is_some_and(|ext| ext == "parquet") {
                files.push(entry_path);
            }
        }
    }
    if files.is_empty() {
        return Err(DataError::NoParquetFiles {
            path: path.display().to_string(),
        });
    }
    files.sort();
    Ok(files)
}

/// Calls `visit(row, object)` on every row of the Parquet file read by
/// `reader`, row group by row group (`row` counts from 1). The file is
/// refused whole, with one line naming `name`, when it cannot be read.
fn for_each_object<C: ChunkReader + 'static>(
    reader: C,
    name: &str,
    mut visit: impl FnMut(usize, Result<JsonRow, BadLine>) -> Result<(), DataError>,
) -> Result<(), DataError> {
    let refuse = |reason: String| DataError::Parquet {
        path: name.to_string(),
        reason: one_line(&reason),
    };
    let metadata =
        decode(|| ParquetMetaDataReader::new().parse_and_finish(&reader)).map_err(&refuse)?;
    pages::check_pages(&reader, &metadata).map_err(&refuse)?;
    let projection = schema::plain_schema(metadata.file_metadata().schema()).map_err(&refuse)?;
    let file = decode(|| SerializedFileReader::new(reader)).map_err(&refuse)?;
    let mut row = 0;
    for group in 0..file.num_row_groups() {
        let in_group = |e: String| refuse(format!("row group {}: {e}", group + 1));
        let row_group = decode(|| file.get_row_group(group)).map_err(in_group)?;
        let mut rows = decode(|| RowIter::from_row_group(Some(projection.clone()), &*row_group))
            .map_err(in_group)?;
        let mut next = || decode(|| rows.next().transpose());
        while let Some(record) = next().map_err(|e| refuse(format!("row {}: {e}", row + 1)))? {
            row += 1;
            visit(row, json::row_object(&record))?;
        }
    }
    Ok(())
}

/// A call into the `parquet` crate: its value, or its error or the panic
/// it ended in as a message.
fn decode<T>(call: impl FnOnce() -> ::parquet::errors::Result<T>) -> Result<T, String> {
    guarded(call)?.map_err(|e| e.to_string())
}

/// The first line of an error message, at most 300 characters: the crate's
/// messages can quote whole byte buffers.
fn one_line(message: &str) -> String {
    let line = message.lines().next().unwrap_or("");
    match line.char_indices().nth(300) {
        Some((cut, _)) => format!("{}...", &line[..cut]),
        None => line.to_string(),
    }
}
