//! `dpo plot`: the report of a metrics file is well-formed SVG with a titled,
//! labelled panel for each kind of metric the file holds.

use std::fmt::Write as _;
use std::fs;
use std::path::Path;

use dpo_rs::report::{
    moving_average, plot_metrics, plot_runs, smoothing_window, thin_line, MetricsHistory,
    PlotSummary, MAX_LINE_POINTS,
};

const TRAIN_STEPS: u64 = 100;
const EVAL_EVERY: u64 = 20;

/// A DPO metrics log as `dpo train --metrics` writes it, with a line that is
/// not JSON, one that is JSON but not a record, and a blank line.
fn dpo_log() -> String {
    let mut text = String::new();
    for step in 1..=TRAIN_STEPS {
        let t = step as f64 / TRAIN_STEPS as f64;
        let wiggle = if step % 2 == 0 { 0.05 } else { -0.05 };
        let chosen = -0.2 * t + wiggle;
        let rejected = -2.0 * t - wiggle;
        writeln!(
            text,
            r#"{{"step":{step},"split":"train","loss":{},"rewards/chosen":{chosen},"rewards/rejected":{rejected},"rewards/accuracies":{},"rewards/margins":{},"logps/chosen":-1.5,"logps/rejected":-9.0,"num_pairs":8,"lr":0.0001,"grad_norm":1.0,"tokens_per_second":{}}}"#,
            0.69 - 0.4 * t + wiggle,
            (0.5 + 0.5 * t).min(1.0),
            chosen - rejected,
            20000.0 + 100.0 * wiggle,
        )
        .unwrap();
        if step == 37 {
            text.push_str("this line is not JSON\n[1, 2]\n\n");
        }
        if step % EVAL_EVERY == 0 {
            writeln!(
                text,
                r#"{{"step":{step},"split":"eval","loss":{},"rewards/chosen":{},"rewards/rejected":{},"rewards/accuracies":0.9,"rewards/margins":{},"num_pairs":50}}"#,
                0.7 - 0.3 * t,
                -0.1 * t,
                -1.5 * t,
                1.4 * t
            )
            .unwrap();
        }
    }
    text
}

/// An SFT metrics log: loss, lr, grad norm and throughput only.
fn sft_log() -> String {
    let mut text = String::new();
    for step in 1..=40u64 {
        writeln!(
            text,
            r#"{{"step":{step},"split":"train","loss":{},"lr":0.001,"grad_norm":0.5,"tokens_per_second":50000.0}}"#,
            5.0 - 0.05 * step as f64
        )
        .unwrap();
        if step % 10 == 0 {
            writeln!(
                text,
                r#"{{"step":{step},"split":"eval","loss":{}}}"#,
                5.1 - 0.05 * step as f64
            )
            .unwrap();
        }
    }
    text
}

/// Writes `log` to `dir/name` and plots it to `dir/out`.
fn plot(dir: &Path, name: &str, log: &str, out: &str) -> Result<(PlotSummary, String), String> {
    let metrics = dir.join(name);
    fs::write(&metrics, log).unwrap();
    let out = dir.join(out);
    let summary = plot_metrics(&metrics, Some(&out))?;
    assert_eq!(summary.out, out.display().to_string());
    Ok((summary, fs::read_to_string(&out).unwrap()))
}

/// The text of every `<text>` element.
fn texts(svg: &roxmltree::Document) -> Vec<String> {
    svg.descendants()
        .filter(|n| n.has_tag_name("text"))
        .map(|n| {
            n.descendants()
                .filter(|t| t.is_text())
                .filter_map(|t| t.text())
                .collect::<String>()
                .trim()
                .to_string()
        })
        .collect()
}

fn elements<'a>(svg: &'a roxmltree::Document, tag: &str) -> Vec<roxmltree::Node<'a, 'a>> {
    svg.descendants().filter(|n| n.has_tag_name(tag)).collect()
}

/// Points of a `<polyline>`.
fn point_count(polyline: &roxmltree::Node) -> usize {
    polyline
        .attribute("points")
        .unwrap_or("")
        .split_whitespace()
        .count()
}

const DPO_SERIES: [&str; 11] = [
    "train loss",
    "eval loss",
    "train rewards/chosen",
    "train rewards/rejected",
    "eval rewards/chosen",
    "eval rewards/rejected",
    "train rewards/margins",
    "eval rewards/margins",
    "train rewards/accuracies",
    "eval rewards/accuracies",
    "train tokens_per_second",
];

#[test]
fn dpo_report_has_every_series_axis_and_legend() {
    let dir = tempfile::tempdir().unwrap();
    let (summary, text) = plot(dir.path(), "dpo.jsonl", &dpo_log(), "report.svg").unwrap();
    assert_eq!(summary.series, DPO_SERIES);
    assert_eq!(
        summary.panels,
        ["loss", "rewards", "margins", "accuracies", "throughput"]
    );
    assert_eq!(
        summary.skipped_lines, 2,
        "the non-JSON line and the JSON array"
    );
    let train_series = 6;
    let eval_series = 4;
    let eval_points = (TRAIN_STEPS / EVAL_EVERY) as usize;
    assert_eq!(
        summary.points,
        train_series * TRAIN_STEPS as usize + (eval_series + 1) * eval_points,
        "eval loss, rewards (2), margins, accuracies: five eval series"
    );

    let svg = roxmltree::Document::parse(&text).expect("the report is well-formed XML");
    assert!(svg.root_element().has_tag_name("svg"));
    let texts = texts(&svg);
    let has = |s: &str| texts.iter().any(|t| t == s);
    assert!(
        has(&dir.path().join("dpo.jsonl").display().to_string()),
        "figure title is the metrics file"
    );
    for name in DPO_SERIES {
        assert!(has(name), "legend entry {name:?} missing; texts: {texts:?}");
    }
    for axis in [
        "loss",
        "implicit reward",
        "margin",
        "accuracy",
        "tokens / s",
    ] {
        assert!(has(axis), "y-axis title {axis:?} missing");
    }
    assert_eq!(
        texts.iter().filter(|t| *t == "step").count(),
        5,
        "an x-axis title per panel"
    );
    for letter in ["(a) loss", "(e) throughput"] {
        assert!(
            texts.iter().any(|t| t.starts_with(letter)),
            "caption {letter:?} missing"
        );
    }

    // Each train series is a raw line and its moving average, over every step.
    let data_lines = elements(&svg, "polyline")
        .iter()
        .filter(|p| point_count(p) == TRAIN_STEPS as usize)
        .count();
    assert_eq!(data_lines, 2 * train_series);
    // Each eval series: a marker per eval, and one in its legend entry.
    let eval_with_legend = 5;
    assert_eq!(
        elements(&svg, "circle").len(),
        eval_with_legend * eval_points + eval_with_legend
    );
}

#[test]
fn sft_report_has_only_loss_and_throughput() {
    let dir = tempfile::tempdir().unwrap();
    let (summary, text) = plot(dir.path(), "sft.jsonl", &sft_log(), "sft.svg").unwrap();
    assert_eq!(
        summary.series,
        ["train loss", "eval loss", "train tokens_per_second"]
    );
    assert_eq!(summary.panels, ["loss", "throughput"]);
    assert_eq!(summary.skipped_lines, 0);
    let svg = roxmltree::Document::parse(&text).unwrap();
    let texts = texts(&svg);
    assert!(
        texts.iter().any(|t| t.starts_with("(b) throughput")),
        "panels are lettered in order"
    );
    for absent in [
        "implicit reward",
        "margin",
        "accuracy",
        "train rewards/chosen",
    ] {
        assert!(
            !texts.iter().any(|t| t == absent),
            "{absent:?} drawn for an SFT log"
        );
    }
    assert_eq!(texts.iter().filter(|t| *t == "step").count(), 2);
}

#[test]
fn html_report_embeds_the_svg_under_an_escaped_title() {
    let dir = tempfile::tempdir().unwrap();
    let (_, page) = plot(dir.path(), "a<b>.jsonl", &sft_log(), "report.html").unwrap();
    assert!(page.starts_with("<!DOCTYPE html>"));
    assert!(page.contains("a&lt;b&gt;.jsonl"));
    assert!(!page.contains("a<b>"), "title not escaped");
    let start = page.find("<svg").unwrap();
    let end = page.rfind("</svg>").unwrap() + "</svg>".len();
    roxmltree::Document::parse(&page[start..end]).expect("embedded SVG is well-formed");
}

#[test]
fn bad_files_are_one_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        ("empty.jsonl", "\n  \n", "r.svg", "is empty"),
        (
            "junk.jsonl",
            "junk\n{\"no_step\": 1}\n",
            "r.svg",
            "no metrics records",
        ),
        (
            "lr.jsonl",
            "{\"step\": 1, \"lr\": 0.1}\n",
            "r.svg",
            "none of the keys",
        ),
        ("sft.jsonl", &sft_log(), "r.png", ".svg or .html"),
    ];
    for (name, log, out, expected) in cases {
        let err = plot(dir.path(), name, log, out).unwrap_err();
        assert!(err.contains(expected), "{name}: {err}");
        assert!(!err.contains('\n'), "{name}: not one line: {err}");
        assert!(
            !dir.path().join(out).exists(),
            "{name}: a report was written"
        );
    }
    let err = plot_metrics(&dir.path().join("missing.jsonl"), None).unwrap_err();
    assert!(
        err.contains("cannot read") && err.contains("missing.jsonl"),
        "{err}"
    );
}

#[test]
fn default_output_is_the_log_with_svg_extension() {
    let dir = tempfile::tempdir().unwrap();
    let metrics = dir.path().join("run.jsonl");
    fs::write(&metrics, sft_log()).unwrap();
    let summary = plot_metrics(&metrics, None).unwrap();
    assert_eq!(
        summary.out,
        dir.path().join("run.svg").display().to_string()
    );
    assert!(dir.path().join("run.svg").exists());
}

#[test]
fn a_later_line_for_the_same_step_wins() {
    // A run resumed from its step-2 checkpoint logs step 3 again.
    let log = "{\"step\":1,\"loss\":1.0}\n{\"step\":2,\"loss\":0.9}\n{\"step\":3,\"loss\":5.0}\n\
               {\"step\":3,\"split\":\"train\",\"loss\":0.8}\n{\"step\":4,\"loss\":null}\n";
    let history = MetricsHistory::parse(log);
    assert_eq!(history.records, 5);
    assert_eq!(history.skipped_lines, 0);
    assert_eq!(
        history.series("train", "loss"),
        [(1.0, 1.0), (2.0, 0.9), (3.0, 0.8)]
    );
    assert!(history.series("eval", "loss").is_empty());
}

#[test]
fn moving_average_is_centred_and_clipped_at_the_ends() {
    let points = [(1.0, 1.0), (2.0, 2.0), (3.0, 3.0), (4.0, 7.0)];
    assert_eq!(
        moving_average(&points, 3),
        [(1.0, 1.5), (2.0, 2.0), (3.0, 4.0), (4.0, 5.0)]
    );
    assert_eq!(moving_average(&points, 1), points);
    assert_eq!(smoothing_window(10), 1, "too few steps to smooth");
    assert_eq!(smoothing_window(100), 5);
    assert_eq!(smoothing_window(600), 31);
    assert_eq!(smoothing_window(1000) % 2, 1, "odd, so centred");
}

#[test]
fn long_lines_are_thinned_keeping_spikes() {
    let points: Vec<(f64, f64)> = (0..10_001)
        .map(|i| {
            (
                i as f64,
                if i == 7_777 {
                    50.0
                } else if i == 1_234 {
                    -9.0
                } else {
                    (i % 7) as f64
                },
            )
        })
        .collect();
    let thinned = thin_line(&points);
    assert!(thinned.len() <= MAX_LINE_POINTS, "{}", thinned.len());
    assert!(thinned.windows(2).all(|w| w[0].0 < w[1].0), "in step order");
    assert!(thinned.contains(&(7_777.0, 50.0)) && thinned.contains(&(1_234.0, -9.0)));
    assert_eq!(thinned[0].0, 0.0);
    assert!(thinned.last().unwrap().0 > 9_990.0);
    let short = &points[..MAX_LINE_POINTS];
    assert_eq!(thin_line(short), short, "short lines are kept whole");
}

/// A short run's log with step times and held-out values that carry
/// standard errors, as `dpo train --eval-data` writes them.
fn timed_log(step_ms: f64) -> String {
    let mut text = String::new();
    for step in 0..=4u64 {
        if step > 0 {
            writeln!(
                text,
                r#"{{"step":{step},"split":"train","loss":0.69,"rewards/chosen":0.1,"rewards/rejected":-0.1,"rewards/accuracies":0.5,"rewards/margins":0.2,"step_ms":{step_ms}}}"#
            )
            .unwrap();
        }
        if step % 2 == 0 {
            writeln!(
                text,
                r#"{{"step":{step},"split":"eval","loss":0.69,"rewards/margins":0.1,"rewards/margins_stderr":0.05,"pair_accuracy":0.5,"pair_accuracy_stderr":0.03}}"#
            )
            .unwrap();
        }
    }
    text
}

/// Several runs in one report: each curve named by its run's label, the
/// elapsed training time in place of throughput, one error bar per held-out
/// point that has a standard error, the policy-preference panel.
#[test]
fn runs_are_overlaid_with_their_labels_elapsed_time_and_error_bars() {
    let dir = tempfile::tempdir().unwrap();
    let files = [dir.path().join("a.jsonl"), dir.path().join("b.jsonl")];
    fs::write(&files[0], timed_log(1000.0)).unwrap();
    fs::write(&files[1], timed_log(3000.0)).unwrap();
    let out = dir.path().join("both.svg");
    let labels = ["dpo".to_string(), "TRL".to_string()];
    let summary = plot_runs(&files, &labels, Some(&out)).unwrap();
    assert_eq!(
        summary.panels,
        [
            "loss",
            "rewards",
            "margins",
            "accuracies",
            "preference",
            "elapsed"
        ]
    );
    for label in &labels {
        for series in [
            "train loss",
            "eval loss",
            "train rewards/rejected",
            "eval rewards/margins",
            "eval pair_accuracy",
            "train elapsed seconds",
        ] {
            let name = format!("{label} {series}");
            assert!(
                summary.series.contains(&name),
                "{name} in {:?}",
                summary.series
            );
        }
    }
    let text = fs::read_to_string(&out).unwrap();
    let svg = roxmltree::Document::parse(&text).unwrap();
    let texts = texts(&svg);
    assert!(
        texts.iter().any(|t| t == "dpo vs TRL"),
        "title names the runs"
    );
    // An error bar is a two-point line; the held-out margins and preference
    // of each run have 3 points with a standard error each.
    let bars = elements(&svg, "polyline")
        .iter()
        .filter(|p| point_count(p) == 2)
        .count();
    assert!(bars >= 2 * 2 * 3, "{bars} two-point lines");
    // The elapsed time is the running sum of step_ms: 4 s and 12 s at step 4.
    assert!(texts.iter().any(|t| t == "seconds"));

    let one = plot_runs(&files[..1], &[], Some(&dir.path().join("a.svg"))).unwrap();
    assert!(one.series.contains(&"eval pair_accuracy".to_string()));
    assert!(
        !one.panels.contains(&"elapsed".to_string()),
        "one run keeps throughput"
    );
    let err = plot_runs(&files, &labels[..1], None).unwrap_err();
    assert_eq!(err, "--labels names 1 runs but 2 metrics files are given");
}
