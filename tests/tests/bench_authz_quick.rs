//! Keeps `authz_bench` from rotting: a `--quick --json PATH` run (root only:
//! moatd loads eBPF programs, and the harness runs two dockerds) must
//! succeed, print the report table with a number in every measured row,
//! answer every request as the policy crate decides and count each one,
//! and write results that `bench_report` can read.

use std::path::Path;

use moat_tests::quick::{self, comparison};
use moat_tests::results::Value;
use moat_tests::{binary, dockerd, is_root};

const SECTION: &str = "Docker authorization";

#[test]
fn quick_run_prints_the_table_and_writes_the_results() {
    if !is_root() {
        eprintln!("SKIP: not root: authz_bench runs moatd (eBPF) and dockerd");
        return;
    }
    if let Some(reason) = dockerd::unavailable() {
        eprintln!("SKIP: {reason}");
        return;
    }
    let moatd = binary("moatd");
    let run = quick::run(
        Path::new(env!("CARGO_BIN_EXE_authz_bench")),
        &["--moatd".as_ref(), moatd.as_os_str()],
    );
    let (stdout, r) = (&run.stdout, &run.results);
    for row in [
        "Decision latency p50 at ",
        "Decision latency p99 at ",
        "Slowest decision (max over the rounds)",
        "`docker run --rm IMAGE true`, no plugin (median)",
        "`docker run --rm IMAGE true`, with the plugin (median)",
        "`docker run`: with the plugin / without",
    ] {
        let line = stdout
            .lines()
            .find(|l| l.starts_with(&format!("| {row}")))
            .unwrap_or_else(|| panic!("no row {row:?} in:\n{stdout}"));
        let cell = line.split('|').nth(2).unwrap_or("").trim();
        assert!(
            quick::leading_number(cell).is_some_and(|n| n.is_finite() && n > 0.0),
            "row {line:?} has no positive number"
        );
    }
    // Exactness is not a matter of speed: it holds in a quick run too.
    for row in [
        "| Answers equal to the policy crate's decision |",
        "| `moat_authz_requests_total` growth |",
    ] {
        let line = stdout
            .lines()
            .find(|l| l.starts_with(row))
            .unwrap_or_else(|| panic!("no row {row:?} in:\n{stdout}"));
        assert!(line.ends_with("| yes |"), "not exact: {line}");
    }

    assert_eq!(r.harness, "authz");
    assert!(r.quick);
    let p99 = comparison(
        r,
        SECTION,
        "decision latency p99 at 1000/s (recorded requests)",
    );
    assert!(matches!(p99.moat, Value::Measured { .. }), "{:?}", p99.moat);
    assert!(p99.goal.as_ref().is_some_and(|g| g.text == "< 1 ms"));
    let counted = comparison(r, SECTION, "decisions counted in moat_authz_requests_total");
    assert_eq!(counted.goal.as_ref().and_then(|g| g.met), Some(true));
    let docker = comparison(r, SECTION, "`docker run --rm IMAGE true` with the plugin");
    assert_eq!(docker.baseline.as_deref(), Some("no plugin"));
    assert!(matches!(
        quick::peer(docker, "no plugin"),
        Value::Measured { .. }
    ));
    for c in &r.comparisons {
        quick::check_count(&c.figure, &c.moat, false);
    }
    // Nothing left behind: the plugin sockets and the daemons' directories.
    let left: Vec<String> = std::fs::read_dir("/tmp")
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("moat-ab-"))
        .collect();
    assert!(left.is_empty(), "left behind: {left:?}");
}
