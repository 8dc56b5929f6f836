//! The machine-readable results of a benchmark harness: what `launch_bench`,
//! `seccomp_bench` and `agent_bench` write with `--json PATH`, and what
//! `bench_report` reads to build `BENCHMARKS.md` and its plots.
//!
//! A harness describes each figure as a [`Comparison`]: moat's measurement
//! beside each peer's, the peer the ratio divides by, and the goal with its
//! verdict (judged by the harness, which knows what the goal means). Plots
//! are [`Plot`]s of named series. The report only lays these out; it never
//! recomputes a verdict.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::bench::Stats;

/// Everything one harness run measured.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Results {
    /// `launch`, `seccomp`, `agent` or `authz`.
    pub harness: String,
    /// Whether this was a `--quick` smoke run (figures mean little).
    pub quick: bool,
    /// The figures, in report order. Each names the report section it
    /// belongs to, so one harness may fill several sections.
    pub comparisons: Vec<Comparison>,
    /// Data for the report's plots.
    pub plots: Vec<Plot>,
    /// Versions of the peers and anything else about the machine the
    /// harness knows (name, value).
    pub machine: Vec<(String, String)>,
    /// How the figures were made: one sentence each.
    pub conditions: Vec<String>,
}

/// One figure: moat beside its peers.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Comparison {
    /// The report section, one of [`SECTIONS`].
    pub section: String,
    /// What is measured, e.g. `launch /bin/true` or `getppid loop`.
    pub figure: String,
    /// The unit of every measurement of the row: `ms`, `ns/call`,
    /// `µs/iter`, `MiB`, `count`, ...
    pub unit: String,
    /// moat's measurement (moat run, moat's filter, moatd, ...).
    pub moat: Value,
    /// The peers, in column order. A peer's name is its column header
    /// (`crun`, `runc`, `bwrap`, `/bin/true`, `no filter`, `no agent`,
    /// `bpftrace`, ...).
    pub peers: Vec<Peer>,
    /// The name of the peer the ratio column divides moat's median by;
    /// `None` for a figure without one (a count, an absolute latency).
    pub baseline: Option<String>,
    /// The goal, when the figure has one.
    pub goal: Option<Goal>,
    /// What a reader needs to read the figure right (why a goal is out of
    /// reach here, what the baseline includes), from the harness.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// A peer's column in a [`Comparison`].
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Peer {
    /// The peer's name (`crun`, `bpftrace`, ...).
    pub name: String,
    /// Its measurement.
    pub value: Value,
}

/// A measurement, or why there is none.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "snake_case")]
pub enum Value {
    /// Repeated runs: median, min and max, and how many runs.
    Measured {
        /// The median of the runs.
        median: f64,
        /// The fastest run.
        min: f64,
        /// The slowest run.
        max: f64,
        /// How many runs.
        runs: usize,
    },
    /// A single exact number (a count, a size).
    Exact(f64),
    /// Not measured: the reason (peer not installed, refused to run, ...).
    Skipped(String),
}

impl Value {
    /// Repeated measurements summarised by [`Stats`]; `Skipped` when empty.
    pub fn measured(xs: &[f64]) -> Value {
        if xs.is_empty() {
            return Value::Skipped("no runs".into());
        }
        let s = Stats::of(xs);
        Value::Measured {
            median: s.median,
            min: s.min,
            max: s.max,
            runs: xs.len(),
        }
    }

    /// The median (or the exact value); `None` when skipped.
    pub fn median(&self) -> Option<f64> {
        match self {
            Value::Measured { median, .. } => Some(*median),
            Value::Exact(x) => Some(*x),
            Value::Skipped(_) => None,
        }
    }
}

/// A goal and whether it was met.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Goal {
    /// The goal as a reader sees it, e.g. `≤ 1.35× no agent, < bpftrace`.
    pub text: String,
    /// `None` when it cannot be judged (a variant it needs was skipped).
    pub met: Option<bool>,
}

/// The report sections, in order; [`Comparison::section`] is one of these.
pub const SECTIONS: [&str; 7] = [
    "Launch",
    "Filter cost",
    "Tracing overhead",
    "Agent under load",
    "Scale of the exposition",
    "Docker authorization",
    "Profile compile time",
];

/// Data for one PNG plot.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Plot {
    /// File stem of the PNG (`launch`, `overhead`, `metrics-scale`, ...).
    pub id: String,
    /// The title above the plot.
    pub title: String,
    /// The x axis' label.
    pub x_label: String,
    /// The y axis' label.
    pub y_label: String,
    /// Bars or lines.
    pub kind: PlotKind,
    /// One series per bar colour or line.
    pub series: Vec<Series>,
}

/// How a [`Plot`] is drawn.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum PlotKind {
    /// Clustered bars over categorical x values, with min–max error bars.
    Bars,
    /// Lines over numeric x values (log scale), with min–max error bars.
    Lines,
}

/// A named series of a [`Plot`].
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Series {
    /// The legend entry.
    pub name: String,
    /// Its points, in x order.
    pub points: Vec<Point>,
}

/// One point: an x value (a category, or a number for [`PlotKind::Lines`])
/// and the measured median with its min and max.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Point {
    /// The x value.
    pub x: String,
    /// The median measured.
    pub median: f64,
    /// The smallest value measured.
    pub min: f64,
    /// The largest value measured.
    pub max: f64,
}

impl Point {
    /// A point from repeated measurements.
    pub fn of(x: impl Into<String>, xs: &[f64]) -> Point {
        let s = Stats::of(xs);
        Point {
            x: x.into(),
            median: s.median,
            min: s.min,
            max: s.max,
        }
    }
}

impl Comparison {
    /// The value of the peer named `name`.
    pub fn peer(&self, name: &str) -> Option<&Value> {
        self.peers.iter().find(|p| p.name == name).map(|p| &p.value)
    }
}

impl Results {
    /// The figure named `figure` in `section`.
    pub fn comparison(&self, section: &str, figure: &str) -> Option<&Comparison> {
        self.comparisons
            .iter()
            .find(|c| c.section == section && c.figure == figure)
    }

    /// Empty results of `harness`.
    pub fn new(harness: &str, quick: bool) -> Results {
        Results {
            harness: harness.into(),
            quick,
            comparisons: Vec::new(),
            plots: Vec::new(),
            machine: Vec::new(),
            conditions: Vec::new(),
        }
    }

    /// Writes the results as pretty JSON to `path`.
    pub fn write(&self, path: &Path) -> Result<(), String> {
        let text = serde_json::to_string_pretty(self)
            .map_err(|e| format!("cannot serialise the results: {e}"))?;
        std::fs::write(path, text + "\n")
            .map_err(|e| format!("cannot write {}: {e}", path.display()))
    }

    /// Reads results written by [`Results::write`].
    pub fn read(path: &Path) -> Result<Results, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        let r: Results = serde_json::from_str(&text)
            .map_err(|e| format!("{}: not benchmark results: {e}", path.display()))?;
        if let Some(c) = r
            .comparisons
            .iter()
            .find(|c| !SECTIONS.contains(&c.section.as_str()))
        {
            return Err(format!(
                "{}: comparisons[].section: unknown section {:?} (one of {})",
                path.display(),
                c.section,
                SECTIONS.join(", ")
            ));
        }
        Ok(r)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_through_json() {
        let mut r = Results::new("launch", true);
        r.comparisons.push(Comparison {
            note: None,
            section: "Launch".into(),
            figure: "launch /bin/true".into(),
            unit: "ms".into(),
            moat: Value::measured(&[3.0, 1.0, 2.0]),
            peers: vec![Peer {
                name: "crun".into(),
                value: Value::Skipped("not installed".into()),
            }],
            baseline: Some("crun".into()),
            goal: Some(Goal {
                text: "≤ crun".into(),
                met: None,
            }),
        });
        r.plots.push(Plot {
            id: "launch".into(),
            title: "t".into(),
            x_label: "x".into(),
            y_label: "y".into(),
            kind: PlotKind::Bars,
            series: vec![Series {
                name: "moat".into(),
                points: vec![Point::of("moat", &[1.0, 2.0])],
            }],
        });
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r.json");
        r.write(&path).unwrap();
        let back = Results::read(&path).unwrap();
        assert_eq!(back, r);
        assert_eq!(back.comparisons[0].moat.median(), Some(2.0));
    }

    #[test]
    fn unknown_section_is_refused_with_the_field() {
        let mut r = Results::new("seccomp", false);
        r.comparisons.push(Comparison {
            note: None,
            section: "Lunch".into(),
            figure: "f".into(),
            unit: "ms".into(),
            moat: Value::Exact(1.0),
            peers: vec![],
            baseline: None,
            goal: None,
        });
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r.json");
        r.write(&path).unwrap();
        let err = Results::read(&path).unwrap_err();
        assert!(err.contains("comparisons[].section"), "{err}");
        assert!(err.contains("Lunch"), "{err}");
    }
}
