//! Reading a JSON Lines file (plain or gzip) one object per line, with
//! 1-based line numbers and the skip-or-refuse policy for bad lines; and
//! [`read_rows`], the one entry of every loader, which sends a Parquet file
//! or a directory of Parquet shards to [`super::parquet_rows`] instead.
//!
//! A line is read into memory whole, so its length is bounded: a line longer
//! than [`MAX_LINE_BYTES`] (a file that is a link to `/dev/zero`, a binary
//! file, a gzip bomb with no newline) is refused before it can exhaust the
//! memory, whatever `skip_invalid` says (the rest of such a line cannot be
//! skipped without reading it).

use super::collect::RowCollector;
use super::{parquet_rows, BadLine, DataError, LoadReport};
use flate2::read::MultiGzDecoder;
use serde_json::{Map, Value};
use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::Path;

/// The longest line a data file may have: 64 MiB (an HH-RLHF row is a few KiB).
pub const MAX_LINE_BYTES: usize = 64 << 20;

/// A JSON object: one row of a data file.
pub(crate) type JsonRow = Map<String, Value>;

/// Opens `path`, through a gzip decoder when its name ends in `.gz`.
fn open_lines(path: &Path) -> Result<Box<dyn BufRead>, DataError> {
    let file = File::open(path).map_err(|error| DataError::Open {
        path: path.display().to_string(),
        error,
    })?;
    let reader: Box<dyn Read> = if path.to_string_lossy().ends_with(".gz") {
        // Multi-member, so that `cat a.gz b.gz` files read whole, as Python's gzip does.
        Box::new(MultiGzDecoder::new(BufReader::new(file)))
    } else {
        Box::new(file)
    };
    Ok(Box::new(BufReader::with_capacity(1 << 16, reader)))
}

/// Parses one line into a JSON object.
fn parse_line(bytes: &[u8], line: usize) -> Result<Option<JsonRow>, BadLine> {
    let mut text = std::str::from_utf8(bytes).map_err(|_| BadLine::NotUtf8)?;
    if line == 1 {
        text = text.strip_prefix('\u{feff}').unwrap_or(text);
    }
    // Blank (whitespace-only) lines are skipped but still counted, as the
    // reference's `if not line.strip(): continue`.
    if text.trim().is_empty() {
        return Ok(None);
    }
    match serde_json::from_str::<Value>(text) {
        Ok(Value::Object(row)) => Ok(Some(row)),
        Ok(_) => Err(BadLine::NotObject),
        Err(e) => Err(BadLine::NotJson(json_error_message(&e))),
    }
}

/// serde_json's message without its "at line 1 column N" suffix (every line
/// is parsed alone, so "line 1" would only confuse), the column kept.
fn json_error_message(e: &serde_json::Error) -> String {
    let mut message = e.to_string();
    if let Some(at) = message.rfind(" at line ") {
        message.truncate(at);
    }
    if e.column() > 0 {
        message.push_str(&format!(" (column {})", e.column()));
    }
    message
}

/// Reads every row of `path` through `parse_row(row, line)`. A bad line is an
/// error naming it, or with `skip_invalid` is skipped and counted. A file with
/// no rows left is an error too. `path` is JSON Lines (plain or `.gz`), or a
/// Parquet file or a directory of them ([`parquet_rows::is_parquet`]).
pub(crate) fn read_rows<R>(
    path: &Path,
    skip_invalid: bool,
    parse_row: impl FnMut(&JsonRow, usize) -> Result<R, BadLine>,
) -> Result<(Vec<R>, LoadReport), DataError> {
    if parquet_rows::is_parquet(path) {
        return parquet_rows::read_rows(path, skip_invalid, parse_row);
    }
    let reader = open_lines(path)?;
    read_rows_from(reader, &path.display().to_string(), skip_invalid, parse_row)
}

/// [`read_rows`] over any reader; `name` stands for the file in errors.
pub(crate) fn read_rows_from<R>(
    mut reader: impl BufRead,
    name: &str,
    skip_invalid: bool,
    mut parse_row: impl FnMut(&JsonRow, usize) -> Result<R, BadLine>,
) -> Result<(Vec<R>, LoadReport), DataError> {
    let shown = || name.to_string();
    let mut rows = RowCollector::new(skip_invalid);
    let mut bytes = Vec::new();
    let mut line = 0;
    loop {
        bytes.clear();
        line += 1;
        // At most one byte past the cap: enough to tell a line that is too long.
        let n = (&mut reader)
            .take(MAX_LINE_BYTES as u64 + 1)
            .read_until(b'\n', &mut bytes)
            .map_err(|error| DataError::Read {
                path: shown(),
                line,
                error,
            })?;
        if n == 0 {
            break;
        }
        let content = bytes.strip_suffix(b"\n").unwrap_or(&bytes);
        if content.len() > MAX_LINE_BYTES {
            return Err(DataError::LineTooLong {
                path: shown(),
                line,
                max_bytes: MAX_LINE_BYTES,
            });
        }
        let parsed = match parse_line(&bytes, line) {
            Ok(Some(row)) => parse_row(&row, line),
            Ok(None) => continue,
            Err(problem) => Err(problem),
        };
        rows.take(parsed, line, name, line)?;
    }
    rows.finish(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn count_rows(text: &[u8], skip_invalid: bool) -> Result<usize, DataError> {
        read_rows_from(text, "mem", skip_invalid, |_, _| Ok(())).map(|(rows, _)| rows.len())
    }

    #[test]
    fn a_line_over_the_cap_is_refused_even_when_skipping() {
        let mut text = b"{}\n".to_vec();
        text.extend(std::iter::repeat_n(b' ', MAX_LINE_BYTES + 1));
        text.extend(b"{}\n");
        for skip in [false, true] {
            let err = count_rows(&text, skip).unwrap_err();
            assert_eq!(err.line(), Some(2));
            assert!(err.to_string().contains("longer than 64 MiB"), "{err}");
        }
        // A line of exactly the cap (plus its newline) is read.
        let mut text = vec![b' '; MAX_LINE_BYTES - 2];
        text.splice(0..0, *b"{}");
        text.push(b'\n');
        assert_eq!(count_rows(&text, false).unwrap(), 1);
    }

    #[test]
    fn an_endless_line_stops_at_the_cap() {
        let endless = std::io::BufReader::new(std::io::repeat(0u8));
        let err = read_rows_from(endless, "/dev/zero", false, |_, _| Ok(())).unwrap_err();
        assert!(err.to_string().starts_with("/dev/zero:1: "), "{err}");
    }
}
