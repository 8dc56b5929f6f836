//! What the quick-mode tests of the benchmark harnesses check alike: the
//! run itself, the Markdown table's cells and the results' values.
//! Lookups panic with what was there instead, as a failed test should.

use std::ffi::OsStr;
use std::path::Path;
use std::process::Command;

use crate::results::{Comparison, Results, Value};

/// A successful `--quick` run: its Markdown report and its JSON results.
pub struct QuickRun {
    /// The harness's standard output: its Markdown report.
    pub stdout: String,
    /// The results it wrote with `--json`.
    pub results: Results,
}

/// Runs `harness --quick ARGS --json <temporary file>`, asserts that it
/// succeeded, and reads the results (the file is removed).
pub fn run<S: AsRef<OsStr>>(harness: &Path, args: &[S]) -> QuickRun {
    let name = harness.file_name().map_or_else(
        || harness.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    );
    let dir = tempfile::Builder::new()
        .prefix(&format!("{name}-quick-"))
        .tempdir()
        .unwrap();
    let json = dir.path().join("results.json");
    let started = std::time::Instant::now();
    let out = Command::new(harness)
        .arg("--quick")
        .args(args)
        .arg("--json")
        .arg(&json)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {name}: {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "{name} --quick failed ({}):\n{stderr}\n{stdout}",
        out.status
    );
    eprintln!(
        "{name} --quick took {:.1} s",
        started.elapsed().as_secs_f64()
    );
    let results = Results::read(&json);
    QuickRun {
        stdout,
        results: results.unwrap_or_else(|e| panic!("{e}")),
    }
}

/// The value cell of the Markdown table row whose figure is `figure`.
pub fn table_value<'a>(table: &'a str, figure: &str) -> Option<&'a str> {
    table.lines().find_map(|l| {
        let cells: Vec<&str> = l.split('|').map(str::trim).collect();
        // "| figure | value | goal | met |" splits into 6 cells.
        (cells.len() == 6 && cells[1] == figure).then_some(cells[2])
    })
}

/// The leading number of a cell such as `1.234 ms`, `+3.1 ns` or `1.05×`.
pub fn leading_number(cell: &str) -> Option<f64> {
    let end = cell
        .find(|c: char| !(c.is_ascii_digit() || matches!(c, '.' | '-' | '+')))
        .unwrap_or(cell.len());
    cell[..end].parse().ok()
}

/// The number in the Markdown table row `figure`, which must be there
/// and be positive and finite.
pub fn positive_row(table: &str, figure: &str) -> f64 {
    let cell =
        table_value(table, figure).unwrap_or_else(|| panic!("no row {figure:?} in:\n{table}"));
    let n = leading_number(cell)
        .unwrap_or_else(|| panic!("row {figure:?} has no numeric value: {cell:?}"));
    assert!(
        n.is_finite() && n > 0.0,
        "row {figure:?}: {n} is not a positive number"
    );
    n
}

/// The figure `figure` of `section`.
pub fn comparison<'a>(r: &'a Results, section: &str, figure: &str) -> &'a Comparison {
    r.comparison(section, figure).unwrap_or_else(|| {
        let names: Vec<_> = r.comparisons.iter().map(|c| &c.figure).collect();
        panic!("no figure {figure:?} in section {section:?}; figures: {names:?}")
    })
}

/// The value of `c`'s peer `name`.
pub fn peer<'a>(c: &'a Comparison, name: &str) -> &'a Value {
    c.peer(name)
        .unwrap_or_else(|| panic!("{:?}: no peer {name:?}", c.figure))
}

/// A measured value is positive and finite, with min ≤ median ≤ max over
/// at least one run; an exact one is positive and finite; a skipped one
/// says why, and is allowed only when `must_run` is false.
pub fn check_value(who: &str, v: &Value, must_run: bool) {
    check(who, v, must_run, false);
}

/// As [`check_value`], but an exact value may be zero: a count of events
/// that need not have happened (buffer-full drops, say).
pub fn check_count(who: &str, v: &Value, must_run: bool) {
    check(who, v, must_run, true);
}

fn check(who: &str, v: &Value, must_run: bool, zero_ok: bool) {
    match v {
        Value::Measured {
            median,
            min,
            max,
            runs,
        } => {
            for x in [median, min, max] {
                assert!(x.is_finite() && *x > 0.0, "{who}: {v:?}");
            }
            assert!(min <= median && median <= max && *runs > 0, "{who}: {v:?}");
        }
        Value::Exact(x) => assert!(
            x.is_finite() && (*x > 0.0 || zero_ok && *x == 0.0),
            "{who}: {v:?}"
        ),
        Value::Skipped(why) => {
            assert!(!must_run, "{who} was skipped: {why}");
            assert!(!why.trim().is_empty(), "{who} was skipped without a reason");
            eprintln!("SKIP {who}: {why}");
        }
    }
}
