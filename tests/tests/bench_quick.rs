//! Keeps `seccomp_bench` from rotting: a `--quick` run must succeed, print
//! the report table with a number in every measured row, and write its JSON
//! results with every figure, peer and plot `bench_report` expects. The
//! `moat run` variant runs as root (it is skipped, saying why, otherwise);
//! crun may be absent or refuse this host's cgroup layout (its values must
//! then say why).

use std::path::Path;

use moat_tests::quick::{self, check_value, comparison, leading_number, table_value};
use moat_tests::results::{PlotKind, Results};
use moat_tests::{binary, fixtures_dir, is_root};

const WORKLOADS: [&str; 3] = [
    "getppid (allowed)",
    "socket+close (arg-filtered)",
    "mount (denied)",
];

#[test]
fn quick_run_prints_the_whole_table() {
    let moat = binary("moat");
    let run = quick::run(
        Path::new(env!("CARGO_BIN_EXE_seccomp_bench")),
        &["--moat".as_ref(), moat.as_os_str()],
    );
    let stdout = &run.stdout;

    let mut figures: Vec<String> = [
        "Compile default profile, median",
        "Compile default profile, min",
        "Compile default profile, max",
        "Compile default profile as one libseccomp filter (`Layout::Combined`), median",
        "Program length, binary tree",
        "Program length, linear",
    ]
    .map(String::from)
    .to_vec();
    for w in WORKLOADS {
        for v in ["no filter", "tree", "linear"] {
            figures.push(format!("{w}, {v}"));
        }
        for r in ["tree / no filter", "linear / no filter", "linear / tree"] {
            figures.push(format!("{w}: {r}"));
        }
    }
    if is_root() {
        for w in WORKLOADS {
            figures.push(format!("{w}, moat run"));
            figures.push(format!("{w}: moat run / no filter"));
        }
    }
    for f in &figures {
        quick::positive_row(stdout, f);
    }
    for w in WORKLOADS {
        let f = format!("{w}, crun");
        let cell = table_value(stdout, &f).unwrap_or_else(|| panic!("no row {f:?} in:\n{stdout}"));
        assert!(
            cell.starts_with("skipped: ") || leading_number(cell).is_some_and(|n| n > 0.0),
            "row {f:?} is neither a number nor skipped with a reason: {cell:?}"
        );
    }

    let goal = stdout
        .lines()
        .find(|l| l.starts_with("| Compile default profile, median |"))
        .expect("compile row");
    assert!(
        goal.contains("< 5 ms"),
        "the goal column is missing: {goal}"
    );

    let fixture_rows = stdout
        .lines()
        .filter(|l| l.starts_with("| Compile fixture "))
        .count();
    if fixtures_dir().is_some() {
        assert_eq!(
            fixture_rows, 4,
            "the fixtures exist but are not timed:\n{stdout}"
        );
    } else {
        eprintln!("SKIP fixture rows: ../shared/fixtures not present");
        assert!(stdout.contains("| Compile largest fixture | skipped"));
    }
    for section in ["### Machine", "### Conditions"] {
        assert!(stdout.contains(section), "no {section} section");
    }
    check_json(&run.results);
}

/// The JSON results: the filter-cost rows with their peers, the compile
/// rows with the single-filter baseline and the goal, and the plot.
fn check_json(r: &Results) {
    assert_eq!((r.harness.as_str(), r.quick), ("seccomp", true));
    assert!(!r.machine.is_empty() && !r.conditions.is_empty());

    for w in WORKLOADS {
        let c = comparison(r, "Filter cost", w);
        assert!(c.unit.starts_with("ns/"), "{w}: unit {}", c.unit);
        check_value(&format!("{w}: moat run"), &c.moat, is_root());
        check_value(
            &format!("{w}: no filter"),
            quick::peer(c, "no filter"),
            true,
        );
        check_value(&format!("{w}: crun"), quick::peer(c, "crun"), false);
        let baseline = c.baseline.as_deref().expect("a baseline");
        assert!(
            c.peers.iter().any(|p| p.name == baseline),
            "{w}: {baseline}"
        );
    }

    let default = comparison(r, "Profile compile time", "compile the default profile");
    assert_eq!(default.unit, "ms");
    check_value("compile default", &default.moat, true);
    let single = "libseccomp single filter";
    check_value(
        "compile default, single filter",
        quick::peer(default, single),
        true,
    );
    assert_eq!(default.baseline.as_deref(), Some(single));
    let goal = default.goal.as_ref().expect("the compile goal");
    assert_eq!(goal.text, "< 5 ms");
    assert!(goal.met.is_some(), "the compile goal is not judged");

    let fixture = comparison(
        r,
        "Profile compile time",
        "compile the largest fixture profile",
    );
    let have_fixtures = fixtures_dir().is_some();
    check_value("compile fixture", &fixture.moat, have_fixtures);
    check_value(
        "compile fixture, single filter",
        quick::peer(fixture, single),
        have_fixtures,
    );

    let plot = r
        .plots
        .iter()
        .find(|p| p.id == "filter-cost")
        .expect("a plot with id filter-cost");
    assert_eq!(plot.kind, PlotKind::Bars);
    let names: Vec<&str> = plot.series.iter().map(|s| s.name.as_str()).collect();
    assert!(names.contains(&"no filter"), "{names:?}");
    if is_root() {
        assert!(names.contains(&"moat run"), "{names:?}");
    }
    for s in &plot.series {
        let xs: Vec<&str> = s.points.iter().map(|p| p.x.as_str()).collect();
        assert_eq!(xs, ["getppid", "socket+close", "mount"], "{}", s.name);
        for p in &s.points {
            assert!(
                p.min > 0.0 && p.min <= p.median && p.median <= p.max,
                "{p:?}"
            );
        }
    }
}
