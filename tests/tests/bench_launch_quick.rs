//! Keeps `launch_bench` from rotting: a `--quick` run must succeed, print
//! the report table with a number in the moat rows, and write its JSON
//! results with every figure, peer and plot `bench_report` expects. crun,
//! runc and bwrap may be absent or refuse this host's cgroup layout
//! (`--quick` skips them then, and their rows and values must say why).

use std::process::Command;

use moat_tests::results::{Comparison, PlotKind, Results, Value};
use moat_tests::{binary, is_root};

/// The value cell of the table row whose figure is `figure`.
fn value<'a>(table: &'a str, figure: &str) -> Option<&'a str> {
    table.lines().find_map(|l| {
        let cells: Vec<&str> = l.split('|').map(str::trim).collect();
        // "| figure | value | goal | met |" splits into 6 cells.
        (cells.len() == 6 && cells[1] == figure).then_some(cells[2])
    })
}

/// The number of a cell such as `12.34 ms`.
fn number(cell: &str) -> Option<f64> {
    cell.split_whitespace().next()?.parse().ok()
}

#[test]
fn quick_run_measures_moat() {
    if !is_root() {
        eprintln!("SKIP: launch_bench needs root (moat run with a user namespace map)");
        return;
    }
    let moat = binary("moat");
    let json = std::env::temp_dir().join(format!("bench-launch-quick-{}.json", std::process::id()));
    let started = std::time::Instant::now();
    let out = Command::new(env!("CARGO_BIN_EXE_launch_bench"))
        .arg("--quick")
        .arg("--moat")
        .arg(&moat)
        .arg("--json")
        .arg(&json)
        .output()
        .expect("run launch_bench");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "launch_bench --quick failed ({}):\n{stderr}\n{stdout}",
        out.status
    );
    eprintln!(
        "launch_bench --quick took {:.1} s",
        started.elapsed().as_secs_f64()
    );

    for f in [
        "moat run, median",
        "moat run, min",
        "moat run, max",
        "/bin/true, median",
    ] {
        let cell = value(&stdout, f).unwrap_or_else(|| panic!("no row {f:?} in:\n{stdout}"));
        let n = number(cell).unwrap_or_else(|| panic!("row {f:?} is not a number: {cell:?}"));
        assert!(
            n.is_finite() && n > 0.0,
            "row {f:?}: {n} is not a positive time"
        );
    }
    let rss = "Peak RSS of the moat process (`ru_maxrss`)";
    let cell = value(&stdout, rss).unwrap_or_else(|| panic!("no row {rss:?} in:\n{stdout}"));
    assert!(number(cell).is_some_and(|n| n > 0.0), "{rss}: {cell:?}");

    for peer in ["crun", "runc", "bwrap"] {
        let f = if peer == "bwrap" {
            "bwrap, median".to_string()
        } else {
            format!("{peer} run, median")
        };
        let cell = value(&stdout, &f).unwrap_or_else(|| panic!("no row {f:?} in:\n{stdout}"));
        if cell.starts_with("skipped") {
            eprintln!("SKIP {peer}: {cell}");
        } else {
            assert!(
                number(cell).is_some(),
                "row {f:?} is neither a time nor skipped: {cell:?}"
            );
        }
    }
    let goal = stdout
        .lines()
        .find(|l| l.starts_with("| moat run, median |"))
        .expect("moat row");
    assert!(
        goal.contains("≤ crun median"),
        "the goal column is missing: {goal}"
    );
    for section in [
        "### Namespaces and cgroups",
        "### Machine",
        "### Conditions",
    ] {
        assert!(stdout.contains(section), "no {section} section");
    }
    check_json(&json);

    // moat makes a user namespace and nothing else.
    let ns_row = stdout
        .lines()
        .find(|l| l.starts_with("| moat run | "))
        .unwrap_or_else(|| panic!("no namespace row for moat in:\n{stdout}"));
    if !ns_row.contains("not probed") {
        assert!(
            ns_row.starts_with("| moat run | user | 0 100000 65536 |"),
            "{ns_row}"
        );
    }
}

/// The JSON results: both figures with every peer, and the plot.
fn check_json(json: &std::path::Path) {
    let r = Results::read(json).unwrap_or_else(|e| panic!("{e}"));
    let _ = std::fs::remove_file(json);
    assert_eq!((r.harness.as_str(), r.quick), ("launch", true));
    assert!(!r.machine.is_empty() && !r.conditions.is_empty());

    let launch = comparison(&r, "launch /bin/true");
    assert_eq!(launch.unit, "ms");
    assert_eq!(launch.baseline.as_deref(), Some("crun"));
    check_value("moat", &launch.moat, true);
    for (peer, must_run) in [
        ("crun", false),
        ("runc", false),
        ("bwrap", false),
        ("/bin/true", true),
    ] {
        check_value(peer, peer_value(launch, peer), must_run);
    }
    let goal = launch.goal.as_ref().expect("the launch figure has a goal");
    assert_eq!(goal.text, "≤ crun median");
    assert_eq!(
        goal.met.is_some(),
        peer_value(launch, "crun").median().is_some(),
        "the goal is judged exactly when crun ran"
    );

    let rss = comparison(&r, "peak RSS of the launcher");
    assert_eq!(rss.unit, "MiB");
    check_value("moat", &rss.moat, true);
    for peer in ["crun", "runc", "bwrap"] {
        check_value(peer, peer_value(rss, peer), false);
    }

    let plot = r
        .plots
        .iter()
        .find(|p| p.id == "launch")
        .expect("a plot with id launch");
    assert_eq!(plot.kind, PlotKind::Bars);
    assert_eq!(plot.series.len(), 1);
    let xs: Vec<&str> = plot.series[0].points.iter().map(|p| p.x.as_str()).collect();
    assert!(xs.contains(&"moat") && xs.contains(&"/bin/true"), "{xs:?}");
    for p in &plot.series[0].points {
        assert!(
            p.min <= p.median && p.median <= p.max && p.min > 0.0,
            "{p:?}"
        );
    }
}

/// The comparison of the `Launch` section named `figure`.
fn comparison<'a>(r: &'a Results, figure: &str) -> &'a Comparison {
    r.comparisons
        .iter()
        .find(|c| c.section == "Launch" && c.figure == figure)
        .unwrap_or_else(|| panic!("no Launch figure {figure:?} in {:?}", r.comparisons))
}

fn peer_value<'a>(c: &'a Comparison, name: &str) -> &'a Value {
    &c.peers
        .iter()
        .find(|p| p.name == name)
        .unwrap_or_else(|| panic!("{}: no peer {name:?}", c.figure))
        .value
}

/// A measured value must be positive and finite; a skipped one must say
/// why (and is allowed only when `must_run` is false).
fn check_value(who: &str, v: &Value, must_run: bool) {
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
        Value::Exact(x) => assert!(x.is_finite() && *x > 0.0, "{who}: {v:?}"),
        Value::Skipped(why) => {
            assert!(!must_run, "{who} was skipped: {why}");
            assert!(!why.trim().is_empty(), "{who} was skipped without a reason");
            eprintln!("SKIP {who}: {why}");
        }
    }
}
