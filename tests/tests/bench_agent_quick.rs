//! Keeps `agent_bench` from rotting: a `--quick --json PATH` run (root only:
//! it loads eBPF programs and creates cgroups) must succeed, print the
//! report table with a number in every measured row, and write results
//! that `bench_report` can read: the three sections with their figures and
//! peers, the floor variants measured, the storm counted exactly.

use std::path::Path;
use std::process::Command;

use moat_tests::quick::{self, comparison, leading_number};
use moat_tests::results::{PlotKind, Results, Value};
use moat_tests::{binary, cgroup_layout_lock, is_root};

const WORKLOADS: [&str; 4] = [
    "getppid loop",
    "fork/exit/wait loop",
    "hash /usr/share/doc",
    "pipe ping-pong on one CPU",
];
/// The workloads measured to show a cost, without a goal.
const NO_GOAL: [&str; 1] = ["pipe ping-pong on one CPU"];
const FLOORS: [&str; 2] = ["empty sys_exit", "empty sys_enter+sys_exit"];

#[test]
fn quick_run_prints_the_table_and_writes_the_results() {
    if !is_root() {
        eprintln!("SKIP: not root: agent_bench loads eBPF programs and creates cgroups");
        return;
    }
    // It creates v2 cgroups: not while another test moves controllers.
    let _layout = cgroup_layout_lock(false);
    let moatd = binary("moatd");
    let run = quick::run(
        Path::new(env!("CARGO_BIN_EXE_agent_bench")),
        &["--moatd".as_ref(), moatd.as_os_str()],
    );
    let (stdout, results) = (&run.stdout, &run.results);

    check_markdown(stdout);
    check_overhead(results);
    check_under_load(results);
    check_scale(results);
    check_plots(results);
    check_values(results);
    check_nothing_left();
}

fn check_markdown(stdout: &str) {
    let bpftrace = !stdout.contains("skipped (bpftrace not installed)");
    if !bpftrace {
        eprintln!("SKIP bpftrace rows: bpftrace is not installed");
    }
    let mut figures: Vec<String> = Vec::new();
    for w in WORKLOADS {
        figures.push(format!("{w}, no agent"));
        figures.push(format!("{w}, moatd"));
        figures.push(format!("{w}: moatd / no agent"));
        for f in FLOORS {
            figures.push(format!("{w}, {f}"));
            figures.push(format!("{w}: {f} / no agent"));
        }
        if bpftrace {
            figures.push(format!("{w}, bpftrace"));
            figures.push(format!("{w}: bpftrace / no agent"));
        }
    }
    figures.push("getppid loop: moatd / empty sys_enter+sys_exit".into());
    figures.extend(
        [
            "Start-to-ready, max",
            "Storm: denials the workload saw",
            "Storm: `moat_seccomp_denials_total{workload=\"bench-storm\"}`",
            "Storm: duration",
            "Storm: audit events delivered (audit log lines of the workload)",
            "Storm: `/metrics` latency, p50",
            "RSS at idle (VmRSS after start)",
            "RSS after the storm (VmRSS)",
            "Peak RSS through the storm (VmHWM)",
        ]
        .map(String::from),
    );
    for f in &figures {
        quick::positive_row(stdout, f);
    }
    // Rows whose figure names a count chosen by the mode.
    for prefix in [
        "| Start-to-ready (spawn → first `/metrics` 200), median of ",
        "| Storm: audit events dropped ",
        "| Storm: moatd CPU time ",
        "| Storm: `/metrics` latency, max of ",
        "| `/metrics` latency with ",
        "| `/metrics` body with ",
        "| `bench-*` workload labels in `/metrics` with ",
    ] {
        let row = stdout
            .lines()
            .find(|l| l.starts_with(prefix))
            .unwrap_or_else(|| panic!("no row {prefix:?} in:\n{stdout}"));
        let cell = row.split('|').nth(2).unwrap_or("").trim();
        assert!(
            leading_number(cell).is_some_and(f64::is_finite),
            "row {row:?} has no numeric value"
        );
    }
    // Exactness: the storm's denials are all counted, under the workload's
    // label, and every workload of each level got its label.
    for l in stdout.lines().filter(|l| {
        l.starts_with("| Storm: `moat_seccomp_denials_total")
            || l.starts_with("| Storm: denials the workload saw")
            || l.starts_with("| `bench-*` workload labels")
    }) {
        assert!(l.ends_with("| yes |"), "not exact: {l}");
    }
    for section in ["### Machine", "### Conditions", "### The bpftrace script"] {
        assert!(stdout.contains(section), "no {section} section");
    }
}

fn check_overhead(r: &Results) {
    assert_eq!(r.harness, "agent");
    assert!(r.quick);
    for w in WORKLOADS {
        let c = comparison(r, "Tracing overhead", w);
        assert!(
            matches!(c.moat, Value::Measured { .. }),
            "{w}: {:?}",
            c.moat
        );
        assert_eq!(c.baseline.as_deref(), Some("no agent"), "{w}");
        assert!(
            matches!(quick::peer(c, "no agent"), Value::Measured { .. }),
            "{w}"
        );
        quick::peer(c, "bpftrace");
        for f in FLOORS {
            assert!(
                matches!(quick::peer(c, f), Value::Measured { .. }),
                "{w}: the floor {f:?} was not measured: {:?}",
                quick::peer(c, f)
            );
        }
        if NO_GOAL.contains(&w) {
            assert!(c.goal.is_none(), "{w}: {:?}", c.goal);
            continue;
        }
        let goal = c.goal.as_ref().unwrap_or_else(|| panic!("{w}: no goal"));
        assert!(goal.text.contains("no agent"), "{w}: {}", goal.text);
    }
    let c = comparison(
        r,
        "Tracing overhead",
        "getppid loop: moatd over the empty-program floor",
    );
    assert_eq!(c.baseline.as_deref(), Some("empty sys_enter+sys_exit"));
    assert!(matches!(
        quick::peer(c, "empty sys_enter+sys_exit"),
        Value::Measured { .. }
    ));
}

fn check_under_load(r: &Results) {
    let s = "Agent under load";
    let seen = comparison(r, s, "storm: denials the workload saw")
        .moat
        .median();
    let counted = comparison(
        r,
        s,
        "storm: denials counted (moat_seccomp_denials_total{workload=\"bench-storm\"})",
    );
    assert!(seen.is_some_and(|n| n > 0.0), "no denials seen: {seen:?}");
    assert_eq!(
        counted.moat.median(),
        seen,
        "the storm was not counted exactly"
    );
    assert_eq!(counted.goal.as_ref().and_then(|g| g.met), Some(true));
    for f in [
        "storm: duration",
        "storm: audit events delivered (audit log lines of the workload)",
        "storm: audit events dropped, reason rate_limited",
        "storm: moatd CPU time (utime+stime)",
        "moatd RSS at idle (VmRSS)",
        "moatd RSS after the storm (VmRSS)",
        "moatd peak RSS through the storm (VmHWM)",
    ] {
        let c = comparison(r, s, f);
        assert!(matches!(c.moat, Value::Exact(_)), "{f}: {:?}", c.moat);
    }
    for f in [
        "storm: /metrics latency (every 50 ms)",
        "start-to-ready (spawn → first /metrics 200)",
    ] {
        let c = comparison(r, s, f);
        assert!(
            matches!(c.moat, Value::Measured { .. }),
            "{f}: {:?}",
            c.moat
        );
        assert!(c.goal.is_some(), "{f}: no goal");
    }
}

fn check_scale(r: &Results) {
    let s = "Scale of the exposition";
    // The quick mode's levels.
    for n in [3, 10] {
        let c = comparison(r, s, &format!("/metrics latency, {n} workloads"));
        assert!(
            matches!(c.moat, Value::Measured { .. }),
            "{n}: {:?}",
            c.moat
        );
        let c = comparison(r, s, &format!("/metrics body, {n} workloads"));
        assert!(
            c.moat.median().is_some_and(|b| b > 0.0),
            "{n}: {:?}",
            c.moat
        );
        let c = comparison(r, s, &format!("workload labels in /metrics, {n} workloads"));
        assert_eq!(c.moat.median(), Some(n as f64), "labels with {n} workloads");
    }
}

fn check_plots(r: &Results) {
    let plot = |id: &str| {
        r.plots
            .iter()
            .find(|p| p.id == id)
            .unwrap_or_else(|| panic!("no plot {id:?}"))
    };
    let o = plot("overhead");
    assert_eq!(o.kind, PlotKind::Bars);
    for name in ["moatd", "empty sys_exit", "empty sys_enter+sys_exit"] {
        let series = o
            .series
            .iter()
            .find(|s| s.name == name)
            .unwrap_or_else(|| panic!("overhead plot: no series {name:?}"));
        let xs: Vec<&str> = series.points.iter().map(|p| p.x.as_str()).collect();
        assert_eq!(xs, ["getppid", "fork/exit", "hash", "ping-pong"], "{name}");
    }
    let m = plot("metrics-scale");
    assert_eq!(m.kind, PlotKind::Lines);
    let xs: Vec<&str> = m.series[0].points.iter().map(|p| p.x.as_str()).collect();
    assert_eq!(xs, ["3", "10"]);
    for p in o.series.iter().chain(&m.series).flat_map(|s| &s.points) {
        assert!(
            p.min.is_finite() && p.min > 0.0 && p.min <= p.median && p.median <= p.max,
            "bad point {p:?}"
        );
    }
}

/// Every measurement is positive and finite (exact counts may be zero),
/// and every skip says why.
fn check_values(r: &Results) {
    for c in &r.comparisons {
        let values = std::iter::once(("moat", &c.moat))
            .chain(c.peers.iter().map(|p| (p.name.as_str(), &p.value)));
        for (who, v) in values {
            quick::check_count(&format!("{}, {who}", c.figure), v, false);
        }
    }
    assert!(!r.machine.is_empty() && !r.conditions.is_empty());
}

/// No cgroup and no eBPF program of the run is left behind.
fn check_nothing_left() {
    let leftovers: Vec<String> = ["/sys/fs/cgroup/unified/moat", "/sys/fs/cgroup/moat"]
        .iter()
        .filter_map(|d| std::fs::read_dir(d).ok())
        .flatten()
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("bench-"))
        .collect();
    assert!(leftovers.is_empty(), "cgroups left behind: {leftovers:?}");
    // The floor programs are named floor_enter and floor_exit.
    if let Ok(out) = Command::new("bpftool").args(["prog", "list"]).output() {
        let list = String::from_utf8_lossy(&out.stdout);
        assert!(
            !list.contains(" name floor_"),
            "floor programs left attached:\n{list}"
        );
    }
}
