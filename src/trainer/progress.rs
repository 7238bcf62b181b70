//! Progress bar and metrics log of a training run.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::Path;

use anyhow::{Context, Result};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde_json::{Map, Value};

/// A progress bar on stderr (drawn only when `visible` and stderr is a terminal).
pub fn progress_bar(total: u64, what: &str, visible: bool) -> ProgressBar {
    let bar = ProgressBar::new(total);
    bar.set_style(
        ProgressStyle::with_template(&format!(
            "{what} [{{elapsed_precise}}] {{bar:30}} {{pos}}/{{len}} {{msg}}"
        ))
        .expect("a valid progress template"),
    );
    if !visible {
        bar.set_draw_target(ProgressDrawTarget::hidden());
    }
    bar
}

/// Prints a log line on stderr above the progress bar (or plainly when the bar is hidden).
pub fn log_line(bar: &ProgressBar, message: String) {
    if bar.is_hidden() {
        eprintln!("{message}");
    } else {
        bar.println(message);
    }
}

/// Appends one JSON object per line to `--metrics FILE`.
pub struct MetricsLog {
    file: Option<File>,
}

impl MetricsLog {
    /// Opens (appending) `path`, or a log that writes nothing.
    pub fn open(path: Option<&Path>) -> Result<Self> {
        let file = match path {
            Some(p) => Some(
                OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(p)
                    .with_context(|| format!("cannot open --metrics {}", p.display()))?,
            ),
            None => None,
        };
        Ok(MetricsLog { file })
    }

    /// Writes one record: `fields` plus `step` and `split`.
    pub fn write(&mut self, step: u64, split: &str, fields: Map<String, Value>) -> Result<()> {
        let Some(file) = &mut self.file else {
            return Ok(());
        };
        let mut record = Map::new();
        record.insert("step".into(), step.into());
        record.insert("split".into(), split.into());
        record.extend(fields);
        writeln!(file, "{}", Value::Object(record)).context("cannot write the metrics log")
    }
}
