//! The training report: `dpo plot` draws a `--metrics` JSON Lines file as a
//! grid of panels over the optimizer steps, in SVG (or an HTML page that
//! embeds the SVG).
//!
//! Panels, each drawn only when the file has data for it (an SFT log has
//! only the loss and throughput):
//! - (a) train and eval loss;
//! - (b) the implicit rewards `beta * log(pi/ref)` of the chosen and the
//!   rejected responses;
//! - (c) the reward margin, chosen minus rejected;
//! - (d) the reward accuracy, the share of pairs whose chosen reward is higher;
//! - (e) the policy's own preference on held-out pairs (`pair_accuracy`:
//!   the share with `log p(chosen) > log p(rejected)`, no reference);
//! - (f) training throughput in tokens per second, or, when several runs
//!   are overlaid, the training time elapsed at each step (the sum of
//!   `step_ms`), which is what runs of different tools are compared on.
//!
//! Several metrics files can be drawn into one report (`dpo plot A B
//! --labels dpo,TRL`): each run has its colour, and its curves are named by
//! its label. A held-out value logged with a standard error (`KEY_stderr`)
//! is drawn with a bar of one standard error either side.
//!
//! Train values are logged every step and are noisy: they are drawn thin and
//! faint, with a centred moving average over about 5% of the steps on top.
//! Eval values come every `--eval-every` steps: a dashed line with markers.
//!
//! Only the SVG backend of `plotters` is used; it writes text as SVG
//! `<text>` elements, so no font library is linked.
//! How to read the panels: `docs/dpo.md`, "Reading the training report".

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use serde::Serialize;
use serde_json::Value;

/// Width of the figure in SVG pixels.
const FIGURE_WIDTH: u32 = 1400;
/// Height of one row of panels.
const PANEL_HEIGHT: u32 = 440;
/// Height of the band that holds the figure title and the line under it.
const HEADER_HEIGHT: u32 = 92;
/// Share of the train steps averaged by the moving average.
const SMOOTHING_SHARE: f64 = 0.05;
const FONT: &str = "sans-serif";

/// The metrics of one run, read from a `--metrics` file.
///
/// Values are kept per (split, key) and step. A later line for the same step
/// replaces an earlier one: a run resumed from its last checkpoint logs again
/// the steps it had logged after that checkpoint, and the newer values are
/// the ones that led to the final model.
#[derive(Debug, Clone, Default)]
pub struct MetricsHistory {
    /// (split, key) -> step -> value.
    values: BTreeMap<(String, String), BTreeMap<u64, f64>>,
    /// Lines that were JSON metrics records.
    pub records: usize,
    /// Non-blank lines skipped: not JSON, or not an object with a `step`.
    pub skipped_lines: usize,
}

impl MetricsHistory {
    /// Parses the text of a metrics file. Never fails: bad lines are counted
    /// in `skipped_lines`, null or non-numeric values are left out, and a
    /// record without `split` counts as `train`.
    pub fn parse(text: &str) -> Self {
        let mut history = MetricsHistory::default();
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            let record = match serde_json::from_str::<Value>(line) {
                Ok(Value::Object(map)) => map,
                _ => {
                    history.skipped_lines += 1;
                    continue;
                }
            };
            let Some(step) = record.get("step").and_then(step_of) else {
                history.skipped_lines += 1;
                continue;
            };
            let split = record
                .get("split")
                .and_then(Value::as_str)
                .unwrap_or("train")
                .to_string();
            history.records += 1;
            for (key, value) in &record {
                if key == "step" || key == "split" {
                    continue;
                }
                if let Some(v) = value.as_f64().filter(|v| v.is_finite()) {
                    history
                        .values
                        .entry((split.clone(), key.clone()))
                        .or_default()
                        .insert(step, v);
                }
            }
        }
        history
    }

    /// Reads and parses a metrics file. A missing, unreadable or empty file,
    /// or one without a single metrics record, is an error.
    pub fn read(path: &Path) -> Result<Self, String> {
        let text = fs::read_to_string(path)
            .map_err(|e| format!("cannot read metrics file {}: {e}", path.display()))?;
        if text.trim().is_empty() {
            return Err(format!("metrics file {} is empty", path.display()));
        }
        let history = Self::parse(&text);
        if history.records == 0 {
            return Err(format!(
                "metrics file {} has no metrics records ({} lines are not JSON objects with a \"step\")",
                path.display(),
                history.skipped_lines
            ));
        }
        Ok(history)
    }

    /// The (step, value) points of one key in one split, by increasing step
    /// (empty when the file has none).
    pub fn series(&self, split: &str, key: &str) -> Vec<(f64, f64)> {
        self.values
            .get(&(split.to_string(), key.to_string()))
            .map(|by_step| by_step.iter().map(|(&s, &v)| (s as f64, v)).collect())
            .unwrap_or_default()
    }

    /// The training time elapsed at each step, in seconds: the running sum
    /// of `step_ms` over the train records.
    fn elapsed_seconds(&self) -> Vec<(f64, f64)> {
        let mut total = 0.0;
        self.series("train", "step_ms")
            .into_iter()
            .map(|(step, ms)| {
                total += ms / 1000.0;
                (step, total)
            })
            .collect()
    }

    /// The largest step of any record.
    fn max_step(&self) -> u64 {
        self.values
            .values()
            .filter_map(|by_step| by_step.keys().next_back().copied())
            .max()
            .unwrap_or(0)
    }
}

fn step_of(v: &Value) -> Option<u64> {
    v.as_u64().or_else(|| {
        v.as_f64()
            .filter(|s| s.is_finite() && *s >= 0.0)
            .map(|s| s as u64)
    })
}

/// What `dpo plot` prints on stdout.
#[derive(Debug, Clone, Serialize)]
pub struct PlotSummary {
    /// The file written.
    pub out: String,
    /// Values plotted, over all series (before long lines are thinned).
    pub points: usize,
    /// The series drawn, as `"<split> <key>"` (also their legend text).
    pub series: Vec<String>,
    /// The panels drawn: `loss`, `rewards`, `margins`, `accuracies`, `throughput`.
    pub panels: Vec<String>,
    /// Lines of the metrics file that were skipped.
    pub skipped_lines: usize,
}

/// One line in a panel: a metric key of one split.
struct Curve {
    split: &'static str,
    key: &'static str,
    color: RGBColor,
}

/// One panel of the figure.
struct PanelSpec {
    /// Short name, listed in [`PlotSummary::panels`].
    name: &'static str,
    /// Caption above the panel, after its letter.
    caption: &'static str,
    y_desc: &'static str,
    curves: &'static [Curve],
    /// Fixed y range; otherwise the data's range, padded.
    y_range: Option<(f64, f64)>,
    /// Keep 0 in the y range and draw it as a thin line.
    zero_line: bool,
    legend: SeriesLabelPosition,
}

const BLUE_: RGBColor = RGBColor(31, 119, 180);
const ORANGE: RGBColor = RGBColor(230, 120, 20);
const GREEN_: RGBColor = RGBColor(30, 140, 50);
const RED_: RGBColor = RGBColor(200, 40, 40);
const PURPLE: RGBColor = RGBColor(120, 70, 170);
const GREY: RGBColor = RGBColor(90, 90, 90);

/// The panels, in drawing order.
const PANELS: &[PanelSpec] = &[
    PanelSpec {
        name: "loss",
        caption: "loss",
        y_desc: "loss",
        curves: &[
            Curve {
                split: "train",
                key: "loss",
                color: BLUE_,
            },
            Curve {
                split: "eval",
                key: "loss",
                color: ORANGE,
            },
        ],
        y_range: None,
        zero_line: false,
        legend: SeriesLabelPosition::UpperRight,
    },
    PanelSpec {
        name: "rewards",
        caption: "implicit rewards β·log(π/π_ref) of chosen and rejected",
        y_desc: "implicit reward",
        curves: &[
            Curve {
                split: "train",
                key: "rewards/chosen",
                color: GREEN_,
            },
            Curve {
                split: "train",
                key: "rewards/rejected",
                color: RED_,
            },
            Curve {
                split: "eval",
                key: "rewards/chosen",
                color: GREEN_,
            },
            Curve {
                split: "eval",
                key: "rewards/rejected",
                color: RED_,
            },
        ],
        y_range: None,
        zero_line: true,
        legend: SeriesLabelPosition::LowerLeft,
    },
    PanelSpec {
        name: "margins",
        caption: "reward margin: chosen − rejected",
        y_desc: "margin",
        curves: &[
            Curve {
                split: "train",
                key: "rewards/margins",
                color: PURPLE,
            },
            Curve {
                split: "eval",
                key: "rewards/margins",
                color: ORANGE,
            },
        ],
        y_range: None,
        zero_line: true,
        legend: SeriesLabelPosition::UpperLeft,
    },
    PanelSpec {
        name: "accuracies",
        caption: "reward accuracy: share of pairs with chosen > rejected",
        y_desc: "accuracy",
        curves: &[
            Curve {
                split: "train",
                key: "rewards/accuracies",
                color: BLUE_,
            },
            Curve {
                split: "eval",
                key: "rewards/accuracies",
                color: ORANGE,
            },
        ],
        y_range: Some((-0.02, 1.02)),
        zero_line: false,
        legend: SeriesLabelPosition::LowerRight,
    },
    PanelSpec {
        name: "preference",
        caption: "policy preference: share of held-out pairs with log p(chosen) > log p(rejected)",
        y_desc: "share of pairs",
        curves: &[Curve {
            split: "eval",
            key: "pair_accuracy",
            color: GREEN_,
        }],
        y_range: None,
        zero_line: false,
        legend: SeriesLabelPosition::LowerRight,
    },
    PanelSpec {
        name: "throughput",
        caption: "throughput",
        y_desc: "tokens / s",
        curves: &[Curve {
            split: "train",
            key: "tokens_per_second",
            color: GREY,
        }],
        y_range: None,
        zero_line: false,
        legend: SeriesLabelPosition::LowerRight,
    },
];

/// The panel drawn instead of throughput when runs are overlaid.
const ELAPSED: PanelSpec = PanelSpec {
    name: "elapsed",
    caption: "training time elapsed (sum of the step times)",
    y_desc: "seconds",
    curves: &[Curve {
        split: "train",
        key: ELAPSED_KEY,
        color: GREY,
    }],
    y_range: None,
    zero_line: true,
    legend: SeriesLabelPosition::UpperLeft,
};

/// The name of the elapsed-time series, computed from `step_ms`.
const ELAPSED_KEY: &str = "elapsed seconds";

/// The colours of overlaid runs, in the order they are given.
const RUN_COLORS: &[RGBColor] = &[BLUE_, ORANGE, GREEN_, RED_, PURPLE, GREY];

/// One metrics file and the name its curves carry in an overlay.
#[derive(Debug, Clone)]
pub struct Run {
    /// The legend's name of the run.
    pub label: String,
    /// Its metrics.
    pub history: MetricsHistory,
}

/// A curve with its data, ready to draw.
struct SeriesData {
    name: String,
    split: &'static str,
    color: RGBColor,
    raw: Vec<(f64, f64)>,
    /// One standard error either side of each raw point (held-out values
    /// logged with `KEY_stderr`).
    error_bars: Vec<(f64, f64, f64)>,
    /// The moving average of a train series, when its window is over 1 step.
    smooth: Option<Vec<(f64, f64)>>,
}

/// Centred moving average: point i is the mean of the values within
/// `window / 2` points of it, fewer near the ends.
///
/// `smooth[i] = mean(v[i-h ..= i+h])`, `h = window / 2`, clipped to the data;
/// sums come from a running prefix sum, so this is O(n) for any window.
pub fn moving_average(points: &[(f64, f64)], window: usize) -> Vec<(f64, f64)> {
    let half = window / 2;
    let n = points.len();
    let mut prefix = Vec::with_capacity(n + 1); // prefix[i] = v[0] + .. + v[i-1]
    prefix.push(0.0);
    for &(_, v) in points {
        prefix.push(prefix.last().unwrap() + v);
    }
    (0..n)
        .map(|i| {
            let lo = i.saturating_sub(half);
            let hi = (i + half + 1).min(n);
            (points[i].0, (prefix[hi] - prefix[lo]) / (hi - lo) as f64)
        })
        .collect()
}

/// The moving-average window for a train series of `n` points: about 5% of
/// them, odd so the window is centred.
pub fn smoothing_window(n: usize) -> usize {
    let w = (n as f64 * SMOOTHING_SHARE).round() as usize;
    if w < 3 {
        1
    } else {
        w | 1
    }
}

/// At most this many points of a line are written: a panel is about 600
/// pixels wide, and a long run would otherwise give megabytes of SVG.
pub const MAX_LINE_POINTS: usize = 2000;

/// A long line cut down to at most [`MAX_LINE_POINTS`] points that keep its
/// envelope: the points are split into `MAX_LINE_POINTS / 2` runs of
/// consecutive steps, and each run keeps its lowest and its highest point,
/// in step order. Spikes survive; only detail finer than a pixel is lost.
pub fn thin_line(points: &[(f64, f64)]) -> Vec<(f64, f64)> {
    let n = points.len();
    if n <= MAX_LINE_POINTS {
        return points.to_vec();
    }
    let runs = MAX_LINE_POINTS / 2;
    let mut thinned = Vec::with_capacity(MAX_LINE_POINTS);
    for run in 0..runs {
        let (start, end) = (run * n / runs, (run + 1) * n / runs);
        let (mut lo, mut hi) = (start, start);
        for i in start..end {
            if points[i].1 < points[lo].1 {
                lo = i;
            }
            if points[i].1 > points[hi].1 {
                hi = i;
            }
        }
        thinned.push(points[lo.min(hi)]);
        if lo != hi {
            thinned.push(points[lo.max(hi)]);
        }
    }
    thinned
}

/// Draws the report of `history` as an SVG document titled `title`.
/// Returns the SVG text and the summary (with an empty `out`).
pub fn render_svg(history: &MetricsHistory, title: &str) -> Result<(String, PlotSummary), String> {
    let run = Run {
        label: String::new(),
        history: history.clone(),
    };
    render_runs(std::slice::from_ref(&run), title)
}

/// The points of `curve` in `history` (the elapsed time computed from
/// `step_ms`).
fn curve_points(history: &MetricsHistory, curve: &Curve) -> Vec<(f64, f64)> {
    if curve.key == ELAPSED_KEY {
        history.elapsed_seconds()
    } else {
        history.series(curve.split, curve.key)
    }
}

/// One standard error either side of each held-out point that has one.
fn error_bars(history: &MetricsHistory, curve: &Curve) -> Vec<(f64, f64, f64)> {
    if curve.split != "eval" {
        return Vec::new();
    }
    let errors: BTreeMap<u64, f64> = history
        .series(curve.split, &format!("{}_stderr", curve.key))
        .into_iter()
        .map(|(step, e)| (step as u64, e))
        .collect();
    history
        .series(curve.split, curve.key)
        .into_iter()
        .filter_map(|(step, v)| errors.get(&(step as u64)).map(|e| (step, v - e, v + e)))
        .collect()
}

/// Draws `runs` overlaid as one SVG document titled `title`: one run as
/// [`render_svg`] describes, several with a colour each and their labels in
/// the legends. Returns the SVG text and the summary (with an empty `out`).
pub fn render_runs(runs: &[Run], title: &str) -> Result<(String, PlotSummary), String> {
    let overlay = runs.len() > 1;
    let mut panels: Vec<(&PanelSpec, Vec<SeriesData>)> = Vec::new();
    let mut summary = PlotSummary {
        out: String::new(),
        points: 0,
        series: Vec::new(),
        panels: Vec::new(),
        skipped_lines: runs.iter().map(|r| r.history.skipped_lines).sum(),
    };
    let mut train_window = 1;
    let specs = PANELS.iter().map(|spec| match spec.name {
        "throughput" if overlay => &ELAPSED,
        _ => spec,
    });
    for spec in specs {
        let mut series = Vec::new();
        for (index, run) in runs.iter().enumerate() {
            for (position, curve) in spec.curves.iter().enumerate() {
                let raw = curve_points(&run.history, curve);
                if raw.is_empty() {
                    continue;
                }
                let window = if curve.split == "train" && curve.key != ELAPSED_KEY {
                    smoothing_window(raw.len())
                } else {
                    1
                };
                train_window = train_window.max(window);
                let name = if overlay {
                    format!("{} {} {}", run.label, curve.split, curve.key)
                } else {
                    format!("{} {}", curve.split, curve.key)
                };
                // An overlaid run keeps its colour on every curve; a
                // second curve of the same split (rejected beside chosen)
                // is the lighter shade of it.
                let color = if overlay {
                    let base = RUN_COLORS[index % RUN_COLORS.len()];
                    let second = spec.curves[..position]
                        .iter()
                        .any(|c| c.split == curve.split);
                    if second {
                        lighter(base)
                    } else {
                        base
                    }
                } else {
                    curve.color
                };
                summary.points += raw.len();
                summary.series.push(name.clone());
                series.push(SeriesData {
                    name,
                    split: curve.split,
                    color,
                    smooth: (window > 1).then(|| thin_line(&moving_average(&raw, window))),
                    error_bars: error_bars(&run.history, curve),
                    raw: if curve.split == "train" {
                        thin_line(&raw)
                    } else {
                        raw
                    },
                });
            }
        }
        if !series.is_empty() {
            summary.panels.push(spec.name.to_string());
            panels.push((spec, series));
        }
    }
    if panels.is_empty() {
        return Err("the metrics file has none of the keys the report draws (loss, rewards/*, tokens_per_second)".into());
    }
    let records: usize = runs.iter().map(|r| r.history.records).sum();
    let x_max = runs
        .iter()
        .map(|r| r.history.max_step())
        .max()
        .unwrap_or(0)
        .max(1) as f64;

    // Two panels a row; an odd last panel takes the whole row.
    let columns = if panels.len() == 1 { 1 } else { 2 };
    let rows = panels.len().div_ceil(columns);
    let height = HEADER_HEIGHT + rows as u32 * PANEL_HEIGHT;
    let subtitle = if train_window > 1 {
        format!(
            "{records} records. Train: faint line = value at each step, bold line = centred moving average over {train_window} steps. Eval: dashed line with markers."
        )
    } else {
        format!("{records} records. Train: solid line. Eval: dashed line with markers.")
    };

    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (FIGURE_WIDTH, height)).into_drawing_area();
        root.fill(&WHITE).map_err(draw_error)?;
        let (header, body) = root.split_vertically(HEADER_HEIGHT);
        let centre = (FIGURE_WIDTH / 2) as i32;
        let title_style = TextStyle::from((FONT, 32).into_font().style(FontStyle::Bold))
            .pos(Pos::new(HPos::Center, VPos::Top));
        header
            .draw(&Text::new(title.to_string(), (centre, 14), title_style))
            .map_err(draw_error)?;
        let subtitle_style = TextStyle::from((FONT, 18).into_font())
            .color(&GREY)
            .pos(Pos::new(HPos::Center, VPos::Top));
        header
            .draw(&Text::new(subtitle, (centre, 56), subtitle_style))
            .map_err(draw_error)?;

        let row_areas = body.split_evenly((rows, 1));
        for (row, row_area) in row_areas.iter().enumerate() {
            let in_row = &panels[row * columns..((row + 1) * columns).min(panels.len())];
            let cells = row_area.split_evenly((1, in_row.len()));
            for (column, ((spec, series), cell)) in in_row.iter().zip(&cells).enumerate() {
                let letter = (b'a' + (row * columns + column) as u8) as char;
                let caption = format!("({letter}) {}", spec.caption);
                draw_panel(cell, &caption, spec, series, x_max)?;
            }
        }
        root.present().map_err(draw_error)?;
    }
    Ok((svg, summary))
}

fn draw_error<E: std::fmt::Display>(e: E) -> String {
    format!("cannot draw the report: {e}")
}

/// The y range of a panel: fixed, or the data's range (error bars
/// included) padded by 6%.
fn y_range(spec: &PanelSpec, series: &[SeriesData]) -> (f64, f64) {
    if let Some(range) = spec.y_range {
        return range;
    }
    let (mut lo, mut hi) = (f64::INFINITY, f64::NEG_INFINITY);
    for s in series {
        for &(_, v) in &s.raw {
            lo = lo.min(v);
            hi = hi.max(v);
        }
        for &(_, bar_lo, bar_hi) in &s.error_bars {
            lo = lo.min(bar_lo);
            hi = hi.max(bar_hi);
        }
    }
    if spec.zero_line {
        lo = lo.min(0.0);
        hi = hi.max(0.0);
    }
    let span = hi - lo;
    if span <= f64::EPSILON * hi.abs().max(1.0) {
        let pad = (hi.abs() * 0.1).max(1e-3);
        return (lo - pad, hi + pad);
    }
    (lo - 0.06 * span, hi + 0.06 * span)
}

/// Tick labels with as few digits as the range needs.
fn tick_label(v: f64, span: f64) -> String {
    if v == 0.0 {
        return "0".into();
    }
    // Thousands as `k`, on every tick of an axis that reaches 10k's scale.
    if v.abs() >= 10_000.0 || (span >= 5_000.0 && v.abs() >= 1_000.0) {
        return format!("{}k", trim_zeros(format!("{:.1}", v / 1000.0)));
    }
    // Two digits past the first one that changes between ticks.
    let decimals = (2.0 - (span / 5.0).log10().floor()).clamp(0.0, 8.0) as usize;
    trim_zeros(format!("{v:.decimals$}"))
}

fn trim_zeros(s: String) -> String {
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        s
    }
}

/// Draws one panel: axes with titles, the curves, the legend.
fn draw_panel(
    area: &DrawingArea<SVGBackend, Shift>,
    caption: &str,
    spec: &PanelSpec,
    series: &[SeriesData],
    x_max: f64,
) -> Result<(), String> {
    let (y_lo, y_hi) = y_range(spec, series);
    let y_span = y_hi - y_lo;
    let mut chart = ChartBuilder::on(area)
        .caption(caption, (FONT, 24))
        .margin(14)
        .margin_right(30)
        .x_label_area_size(52)
        .y_label_area_size(84)
        .build_cartesian_2d(0.0..x_max, y_lo..y_hi)
        .map_err(draw_error)?;
    let y_formatter = |v: &f64| tick_label(*v, y_span);
    let x_formatter = |v: &f64| tick_label(*v, x_max);
    chart
        .configure_mesh()
        .x_desc("step")
        .y_desc(spec.y_desc)
        .axis_desc_style((FONT, 19))
        .label_style((FONT, 17))
        .x_labels(8)
        .y_labels(7)
        .x_label_formatter(&x_formatter)
        .y_label_formatter(&y_formatter)
        .bold_line_style(BLACK.mix(0.12))
        .light_line_style(TRANSPARENT)
        .axis_style(BLACK.mix(0.6))
        .draw()
        .map_err(draw_error)?;

    if spec.zero_line && y_lo < 0.0 && y_hi > 0.0 {
        chart
            .draw_series(LineSeries::new(
                [(0.0, 0.0), (x_max, 0.0)],
                BLACK.mix(0.45).stroke_width(1),
            ))
            .map_err(draw_error)?;
    }

    for s in series {
        let color = s.color;
        for &(step, lo, hi) in &s.error_bars {
            chart
                .draw_series(LineSeries::new(
                    [(step, lo), (step, hi)],
                    color.mix(0.8).stroke_width(2),
                ))
                .map_err(draw_error)?;
        }
        if s.split == "train" {
            let bold = color.stroke_width(2);
            if let Some(smooth) = &s.smooth {
                chart
                    .draw_series(LineSeries::new(
                        s.raw.iter().copied(),
                        color.mix(0.25).stroke_width(1),
                    ))
                    .map_err(draw_error)?;
                chart
                    .draw_series(LineSeries::new(smooth.iter().copied(), bold))
                    .map_err(draw_error)?
            } else {
                chart
                    .draw_series(LineSeries::new(s.raw.iter().copied(), bold))
                    .map_err(draw_error)?
            }
            .label(s.name.as_str())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 24, y)], bold));
        } else {
            let dashed = color.stroke_width(2);
            chart
                .draw_series(DashedLineSeries::new(s.raw.iter().copied(), 7, 5, dashed))
                .map_err(draw_error)?;
            chart
                .draw_series(s.raw.iter().map(|&p| Circle::new(p, 4, color.filled())))
                .map_err(draw_error)?
                .label(s.name.as_str())
                .legend(move |(x, y)| {
                    EmptyElement::at((x, y))
                        + PathElement::new(vec![(0, 0), (7, 0)], dashed)
                        + PathElement::new(vec![(13, 0), (24, 0)], dashed)
                        + Circle::new((12, 0), 4, color.filled())
                });
        }
    }

    chart
        .configure_series_labels()
        .position(spec.legend.clone())
        .margin(10)
        .label_font((FONT, 17))
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK.mix(0.3))
        .draw()
        .map_err(draw_error)?;
    Ok(())
}

/// A lighter shade of `color`: halfway to white.
fn lighter(color: RGBColor) -> RGBColor {
    let half = |c: u8| c + (255 - c) / 2;
    RGBColor(half(color.0), half(color.1), half(color.2))
}

/// HTML page with `svg` inline under a heading.
pub fn html_page(svg: &str, title: &str) -> String {
    let title = escape_html(title);
    format!(
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n<title>{title}</title>\n\
         <style>body {{ font-family: sans-serif; margin: 2em; }} svg {{ max-width: 100%; height: auto; }}</style>\n\
         </head>\n<body>\n<h1>Training report: {title}</h1>\n{svg}\n</body>\n</html>\n"
    )
}

fn escape_html(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// `dpo plot`: reads `metrics`, writes the report to `out` (`.svg`, or
/// `.html`/`.htm` for a page embedding the SVG; default: `metrics` with the
/// extension `.svg`). Skipped lines are reported on stderr.
pub fn plot_metrics(metrics: &Path, out: Option<&Path>) -> Result<PlotSummary, String> {
    plot_runs(&[metrics.to_path_buf()], &[], out)
}

/// `dpo plot FILE... --labels ...`: the runs of `files` overlaid in one
/// report written to `out` (default: the first file with the extension
/// `.svg`), each named by its label (default: its file name).
pub fn plot_runs(
    files: &[PathBuf],
    labels: &[String],
    out: Option<&Path>,
) -> Result<PlotSummary, String> {
    let Some(first) = files.first() else {
        return Err("no metrics file to plot".into());
    };
    if !labels.is_empty() && labels.len() != files.len() {
        return Err(format!(
            "--labels names {} runs but {} metrics files are given",
            labels.len(),
            files.len()
        ));
    }
    let out: PathBuf = out.map_or_else(|| first.with_extension("svg"), Path::to_path_buf);
    let extension = out
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase);
    let html = match extension.as_deref() {
        Some("svg") => false,
        Some("html" | "htm") => true,
        _ => {
            return Err(format!(
                "cannot tell the format of {}: name it .svg or .html",
                out.display()
            ))
        }
    };
    let mut runs = Vec::with_capacity(files.len());
    for (i, path) in files.iter().enumerate() {
        let history = MetricsHistory::read(path)?;
        if history.skipped_lines > 0 {
            eprintln!(
                "warning: skipped {} lines of {} that are not JSON metrics records",
                history.skipped_lines,
                path.display()
            );
        }
        let label = labels.get(i).cloned().unwrap_or_else(|| {
            path.file_stem().map_or_else(
                || path.display().to_string(),
                |s| s.to_string_lossy().into_owned(),
            )
        });
        runs.push(Run { label, history });
    }
    let title = if runs.len() == 1 {
        first.display().to_string()
    } else {
        runs.iter()
            .map(|r| r.label.as_str())
            .collect::<Vec<_>>()
            .join(" vs ")
    };
    let (svg, mut summary) = render_runs(&runs, &title)?;
    let text = if html { html_page(&svg, &title) } else { svg };
    fs::write(&out, text).map_err(|e| format!("cannot write {}: {e}", out.display()))?;
    summary.out = out.display().to_string();
    Ok(summary)
}
