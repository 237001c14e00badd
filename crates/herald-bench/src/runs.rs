//! `--runs N`: the same bench N times, each a separate process with a
//! database and queue prefix of its own, and issue 23's cost figures
//! summarised over the runs (their medians, or every run where the issue
//! asks that of each run).

use std::fmt::Write as _;

use serde::Serialize;

use crate::report::{Bound, CostFigure, JudgedOn};
use crate::stats::median;

/// One cost figure over all runs.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FigureSummary {
    pub figure: String,
    pub bound: Bound,
    pub judged_on: JudgedOn,
    /// The figure's value in each run that had it, in run order.
    pub values: Vec<f64>,
    pub median: f64,
    pub met: bool,
}

/// Summarises the runs' figures, in the order they first appear. A figure
/// judged on every run is met only if every run had it and kept its bound.
pub fn summarize(runs: &[Vec<CostFigure>]) -> Vec<FigureSummary> {
    let mut out: Vec<FigureSummary> = Vec::new();
    for figure in runs.iter().flatten() {
        match out.iter_mut().find(|s| s.figure == figure.figure) {
            Some(summary) => summary.values.push(figure.value),
            None => out.push(FigureSummary {
                figure: figure.figure.clone(),
                bound: figure.bound,
                judged_on: figure.judged_on,
                values: vec![figure.value],
                median: 0.0,
                met: false,
            }),
        }
    }
    for summary in &mut out {
        summary.median = median(summary.values.iter().copied());
        summary.met = match summary.judged_on {
            JudgedOn::Median => summary.bound.holds(summary.median),
            JudgedOn::EveryRun => {
                summary.values.len() == runs.len()
                    && summary.values.iter().all(|v| summary.bound.holds(*v))
            }
        };
    }
    out
}

/// The summary as a Markdown table.
pub fn render(summaries: &[FigureSummary], runs: usize) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "Issue 23's cost figures over {runs} runs\n");
    let _ = writeln!(s, "| figure | bound | runs | median | met |");
    let _ = writeln!(s, "|---|---|---|---:|---|");
    for f in summaries {
        let values: Vec<String> = f.values.iter().map(|v| format!("{v:.2}")).collect();
        let judged = match f.judged_on {
            JudgedOn::Median => "on the median",
            JudgedOn::EveryRun => "in every run",
        };
        let _ = writeln!(
            s,
            "| {} | {} {judged} | {} | {:.2} | {} |",
            f.figure,
            f.bound,
            values.join(", "),
            f.median,
            if f.met { "met" } else { "NOT met" }
        );
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn figure(name: &str, value: f64, bound: Bound, judged_on: JudgedOn) -> CostFigure {
        CostFigure {
            figure: name.into(),
            value,
            bound,
            judged_on,
        }
    }

    /// The runs' figures, and the expected (figure, median, met) in the
    /// order of first appearance.
    type Case = (Vec<Vec<CostFigure>>, Vec<(&'static str, f64, bool)>);

    #[test]
    fn medians_and_every_run_are_judged_as_the_issue_asks() {
        let cpu = |v| figure("cpu", v, Bound::AtMost(1.3), JudgedOn::Median);
        let fire = |v| figure("fire", v, Bound::AtLeast(0.6), JudgedOn::EveryRun);
        let drain = |v| figure("drain", v, Bound::AtLeast(0.8), JudgedOn::Median);
        let table: Vec<Case> = vec![
            // One bad run does not fail a median...
            (
                vec![vec![cpu(1.2)], vec![cpu(2.0)], vec![cpu(1.25)]],
                vec![("cpu", 1.25, true)],
            ),
            // ...but fails a figure judged on every run.
            (
                vec![vec![fire(0.61)], vec![fire(0.59)], vec![fire(0.7)]],
                vec![("fire", 0.61, false)],
            ),
            (
                vec![vec![fire(0.61)], vec![fire(0.6)], vec![fire(0.7)]],
                vec![("fire", 0.61, true)],
            ),
            // A run without the figure (its case did not complete) fails an
            // every-run figure; the median is over the runs that had it.
            (
                vec![
                    vec![fire(0.7), drain(0.5)],
                    vec![drain(0.9)],
                    vec![fire(0.8), drain(0.85)],
                ],
                vec![("fire", 0.8, false), ("drain", 0.85, true)],
            ),
            (vec![], vec![]),
        ];
        for (runs, expected) in table {
            let got: Vec<(String, f64, bool)> = summarize(&runs)
                .into_iter()
                .map(|s| (s.figure, s.median, s.met))
                .collect();
            let expected: Vec<(String, f64, bool)> = expected
                .into_iter()
                .map(|(f, m, met)| (f.to_owned(), m, met))
                .collect();
            assert_eq!(got, expected, "{runs:?}");
        }
    }

    #[test]
    fn a_figure_reads_back_from_the_json_a_run_wrote() {
        let written = figure("drain", 0.58, Bound::AtLeast(0.8), JudgedOn::Median);
        let json = serde_json::to_string(&written).unwrap();
        assert_eq!(
            json,
            r#"{"figure":"drain","value":0.58,"bound":{"at_least":0.8},"judged_on":"median"}"#
        );
        assert_eq!(serde_json::from_str::<CostFigure>(&json).unwrap(), written);
    }
}
