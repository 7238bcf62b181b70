//! Reading a JSON Lines file (plain or gzip) one object per line, with
//! 1-based line numbers and the skip-or-refuse policy for bad lines.

use super::{BadLine, DataError, LoadReport};
use flate2::read::MultiGzDecoder;
use serde_json::{Map, Value};
use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::Path;

/// A JSON object: one row of a data file.
pub(crate) type JsonRow = Map<String, Value>;

/// Opens `path`, through a gzip decoder when its name ends in `.gz`.
fn open_lines(path: &Path) -> Result<Box<dyn BufRead>, DataError> {
    let file = File::open(path).map_err(|source| DataError::Open {
        path: path.display().to_string(),
        source,
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
/// no rows left is an error too.
pub(crate) fn read_rows<R>(
    path: &Path,
    skip_invalid: bool,
    mut parse_row: impl FnMut(&JsonRow, usize) -> Result<R, BadLine>,
) -> Result<(Vec<R>, LoadReport), DataError> {
    let shown = || path.display().to_string();
    let mut reader = open_lines(path)?;
    let mut rows = Vec::new();
    let mut report = LoadReport::default();
    let mut bytes = Vec::new();
    let mut line = 0;
    loop {
        bytes.clear();
        line += 1;
        let n = reader
            .read_until(b'\n', &mut bytes)
            .map_err(|source| DataError::Read {
                path: shown(),
                line,
                source,
            })?;
        if n == 0 {
            break;
        }
        let parsed = parse_line(&bytes, line).and_then(|row| match row {
            Some(row) => parse_row(&row, line).map(Some),
            None => Ok(None),
        });
        match parsed {
            Ok(Some(row)) => rows.push(row),
            Ok(None) => {}
            Err(problem) if skip_invalid => report.skip(line, problem.to_string()),
            Err(problem) => {
                return Err(DataError::BadLine {
                    path: shown(),
                    line,
                    problem,
                })
            }
        }
    }
    if rows.is_empty() {
        return Err(DataError::NoRows {
            path: shown(),
            skipped: report.skipped,
        });
    }
    report.rows = rows.len();
    Ok((rows, report))
}
