//! The skip-or-refuse policy every reader of data rows applies
//! (docs/spec.md section 3.5), whatever the file's format.

use super::{BadLine, DataError, LoadReport};

/// The rows a reader has kept so far, and the bad rows it skipped.
pub(crate) struct RowCollector<R> {
    rows: Vec<R>,
    report: LoadReport,
    skip_invalid: bool,
}

impl<R> RowCollector<R> {
    /// An empty collection; `skip_invalid` skips bad rows instead of refusing them.
    pub(crate) fn new(skip_invalid: bool) -> Self {
        RowCollector {
            rows: Vec::new(),
            report: LoadReport::default(),
            skip_invalid,
        }
    }

    /// Keeps a parsed row, or skips and counts a bad one (under `number`, the
    /// row's number in the whole input), or refuses it as `path:line: why`
    /// (`line` counts within `path`, the file that holds the row).
    pub(crate) fn take(
        &mut self,
        parsed: Result<R, BadLine>,
        number: usize,
        path: &str,
        line: usize,
    ) -> Result<(), DataError> {
        match parsed {
            Ok(row) => self.rows.push(row),
            Err(problem) if self.skip_invalid => self.report.skip(number, problem.to_string()),
            Err(problem) => {
                return Err(DataError::BadLine {
                    path: path.to_string(),
                    line,
                    problem,
                })
            }
        }
        Ok(())
    }

    /// The rows kept and the report; no row kept is an error naming `path`.
    pub(crate) fn finish(mut self, path: &str) -> Result<(Vec<R>, LoadReport), DataError> {
        if self.rows.is_empty() {
            return Err(DataError::NoRows {
                path: path.to_string(),
                skipped: self.report.skipped,
            });
        }
        self.report.rows = self.rows.len();
        Ok((self.rows, self.report))
    }
}
