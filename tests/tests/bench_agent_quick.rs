//! Keeps `agent_bench` from rotting: a `--quick` run (root only: it loads
//! eBPF programs and creates cgroups) must succeed and print the report
//! table with a number in every measured row.

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

/// The leading number of a cell such as `1.234 ms` or `1.05×`.
fn leading_number(cell: &str) -> Option<f64> {
    let end = cell
        .find(|c: char| !(c.is_ascii_digit() || matches!(c, '.' | '-' | '+')))
        .unwrap_or(cell.len());
    cell[..end].parse().ok()
}

#[test]
fn quick_run_prints_the_whole_table() {
    if !is_root() {
        eprintln!("SKIP: not root: agent_bench loads eBPF programs and creates cgroups");
        return;
    }
    let moatd = binary("moatd");
    let out = Command::new(env!("CARGO_BIN_EXE_agent_bench"))
        .arg("--quick")
        .arg("--moatd")
        .arg(&moatd)
        .output()
        .expect("run agent_bench");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "agent_bench --quick failed ({}):\n{stderr}\n{stdout}",
        out.status
    );

    let bpftrace = !stdout.contains("skipped (bpftrace not installed)");
    if !bpftrace {
        eprintln!("SKIP bpftrace rows: bpftrace is not installed");
    }
    let mut figures: Vec<String> = Vec::new();
    for w in ["getppid loop", "fork/exit/wait loop", "hash /usr/share/doc"] {
        figures.push(format!("{w}, no agent"));
        figures.push(format!("{w}, moatd"));
        figures.push(format!("{w}: moatd / no agent"));
        if bpftrace {
            figures.push(format!("{w}, bpftrace"));
            figures.push(format!("{w}: bpftrace / no agent"));
        }
    }
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
        let cell = value(&stdout, f).unwrap_or_else(|| panic!("no row {f:?} in:\n{stdout}"));
        let n = leading_number(cell)
            .unwrap_or_else(|| panic!("row {f:?} has no numeric value: {cell:?}"));
        assert!(
            n.is_finite() && n > 0.0,
            "row {f:?}: {n} is not a positive number"
        );
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
    // Nothing left behind.
    let leftovers: Vec<String> = ["/sys/fs/cgroup/unified/moat", "/sys/fs/cgroup/moat"]
        .iter()
        .filter_map(|d| std::fs::read_dir(d).ok())
        .flatten()
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("bench-"))
        .collect();
    assert!(leftovers.is_empty(), "cgroups left behind: {leftovers:?}");
}
