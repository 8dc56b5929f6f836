//! Keeps `launch_bench` from rotting: a `--quick` run must succeed and print
//! the report table with a number in the moat rows. crun and runc may be
//! absent or refuse this host's cgroup layout (`--quick` skips them then,
//! and their rows must say so).

use std::process::Command;

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
    let started = std::time::Instant::now();
    let out = Command::new(env!("CARGO_BIN_EXE_launch_bench"))
        .arg("--quick")
        .arg("--moat")
        .arg(&moat)
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

    for peer in ["crun", "runc"] {
        let f = format!("{peer} run, median");
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
