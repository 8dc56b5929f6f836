//! Keeps `launch_bench` from rotting: a `--quick` run must succeed, print
//! the report table with a number in the moat rows, and write its JSON
//! results with every figure, peer and plot `bench_report` expects. crun,
//! runc and bwrap may be absent or refuse this host's cgroup layout
//! (`--quick` skips them then, and their rows and values must say why).

use std::path::Path;

use moat_tests::quick::{self, check_value, comparison, leading_number, table_value};
use moat_tests::results::{PlotKind, Results};
use moat_tests::{binary, is_root};

#[test]
fn quick_run_measures_moat() {
    if !is_root() {
        eprintln!("SKIP: launch_bench needs root (moat run with a user namespace map)");
        return;
    }
    let moat = binary("moat");
    let run = quick::run(
        Path::new(env!("CARGO_BIN_EXE_launch_bench")),
        &["--moat".as_ref(), moat.as_os_str()],
    );
    let stdout = &run.stdout;

    for f in [
        "moat run, median",
        "moat run, min",
        "moat run, max",
        "moat run (cold cache), median",
        "moat run (cold cache), min",
        "moat run (cold cache), max",
        "/bin/true, median",
    ] {
        quick::positive_row(stdout, f);
    }
    let rss = "Peak RSS of the moat process (`ru_maxrss`)";
    let cell = table_value(stdout, rss).unwrap_or_else(|| panic!("no row {rss:?} in:\n{stdout}"));
    assert!(
        leading_number(cell).is_some_and(|n| n > 0.0),
        "{rss}: {cell:?}"
    );

    for peer in ["crun", "runc", "bwrap"] {
        let f = if peer == "bwrap" {
            "bwrap, median".to_string()
        } else {
            format!("{peer} run, median")
        };
        let cell = table_value(stdout, &f).unwrap_or_else(|| panic!("no row {f:?} in:\n{stdout}"));
        if cell.starts_with("skipped") {
            eprintln!("SKIP {peer}: {cell}");
        } else {
            assert!(
                leading_number(cell).is_some(),
                "row {f:?} is neither a time nor skipped: {cell:?}"
            );
        }
    }
    let goal = stdout
        .lines()
        .find(|l| l.starts_with("| moat run, median |"))
        .expect("moat row");
    assert!(
        goal.contains("≤ 0.75× crun median"),
        "the goal column is missing: {goal}"
    );
    // No other moat binary was given: no row for one.
    assert!(!stdout.contains("--compare-moat)"), "{stdout}");
    for section in [
        "### Namespaces and cgroups",
        "### Machine",
        "### Conditions",
    ] {
        assert!(stdout.contains(section), "no {section} section");
    }
    check_json(&run.results);

    // moat makes user, PID, mount, cgroup and IPC namespaces (no network
    // or UTS one), and its cgroups are its cgroup namespace's root.
    let ns_row = stdout
        .lines()
        .find(|l| l.starts_with("| moat run | "))
        .unwrap_or_else(|| panic!("no namespace row for moat in:\n{stdout}"));
    if !ns_row.contains("not probed") {
        assert!(
            ns_row.starts_with(
                "| moat run | cgroup, ipc, mnt, pid, user | 0 100000 65536 | its own, the root of its cgroup namespace |"
            ),
            "{ns_row}"
        );
    }
}

/// The JSON results: both figures with every peer, and the plot.
fn check_json(r: &Results) {
    assert_eq!((r.harness.as_str(), r.quick), ("launch", true));
    assert!(!r.machine.is_empty() && !r.conditions.is_empty());

    let launch = comparison(r, "Launch", "launch /bin/true");
    assert_eq!(launch.unit, "ms");
    assert_eq!(launch.baseline.as_deref(), Some("crun"));
    check_value("moat", &launch.moat, true);
    for (peer, must_run) in [
        ("crun", false),
        ("runc", false),
        ("bwrap", false),
        ("/bin/true", true),
    ] {
        check_value(peer, quick::peer(launch, peer), must_run);
    }
    let goal = launch.goal.as_ref().expect("the launch figure has a goal");
    assert_eq!(goal.text, "≤ 0.75× crun median");
    assert_eq!(
        goal.met.is_some(),
        quick::peer(launch, "crun").median().is_some(),
        "the goal is judged exactly when crun ran"
    );

    // The cold launch: its own row, measured, without a goal, beside the
    // same peers.
    let cold = comparison(r, "Launch", "launch /bin/true, empty seccomp cache");
    assert_eq!(cold.unit, "ms");
    assert_eq!(cold.baseline.as_deref(), Some("crun"));
    assert!(cold.goal.is_none());
    check_value("moat (cold cache)", &cold.moat, true);
    assert_eq!(cold.peers, launch.peers);

    let rss = comparison(r, "Launch", "peak RSS of the launcher");
    assert_eq!(rss.unit, "MiB");
    check_value("moat", &rss.moat, true);
    for peer in ["crun", "runc", "bwrap"] {
        check_value(peer, quick::peer(rss, peer), false);
    }

    let plot = r
        .plots
        .iter()
        .find(|p| p.id == "launch")
        .expect("a plot with id launch");
    assert_eq!(plot.kind, PlotKind::Bars);
    assert_eq!(plot.series.len(), 1);
    let xs: Vec<&str> = plot.series[0].points.iter().map(|p| p.x.as_str()).collect();
    assert!(
        xs.contains(&"moat") && xs.contains(&"moat (cold cache)") && xs.contains(&"/bin/true"),
        "{xs:?}"
    );
    for p in &plot.series[0].points {
        assert!(
            p.min <= p.median && p.median <= p.max && p.min > 0.0,
            "{p:?}"
        );
    }
}
