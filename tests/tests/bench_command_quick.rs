//! Keeps the one benchmark command (`scripts/bench.sh`) from rotting: its
//! quick mode, run with this build's binaries into a private directory,
//! must produce `BENCHMARKS.md` with every section, real PNG plots, each
//! harness's results and detailed report, and leave the machine as it was.

use std::path::Path;
use std::process::Command;

use moat_tests::results::{Results, SECTIONS};
use moat_tests::{binary, cgroup_layout_lock, is_root, workspace_root};

fn v2_controllers() -> String {
    std::fs::read_to_string("/sys/fs/cgroup/unified/cgroup.controllers").unwrap_or_default()
}

fn is_png(path: &Path) -> bool {
    std::fs::read(path).is_ok_and(|b| b.starts_with(b"\x89PNG\r\n\x1a\n") && b.len() > 2000)
}

#[test]
fn quick_run_writes_the_report_and_restores_the_machine() {
    if !is_root() {
        eprintln!("SKIP: scripts/bench.sh needs root (eBPF, cgroups, crun and runc)");
        return;
    }
    for tool in ["crun", "runc", "bwrap", "bpftrace", "gnuplot", "dockerd"] {
        if Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .output()
            .map_or(true, |o| !o.status.success())
        {
            eprintln!("SKIP: {tool} is not installed (scripts/setup.sh installs it)");
            return;
        }
    }
    // It moves hugetlb between cgroup v1 and v2 for crun.
    let _layout = cgroup_layout_lock(true);
    let bin_dir = binary("moat").parent().unwrap().to_path_buf();
    binary("moatd");
    for b in [
        "seccomp_bench",
        "launch_bench",
        "agent_bench",
        "authz_bench",
        "bench_report",
    ] {
        binary(b);
    }
    let tmp = tempfile::Builder::new()
        .prefix("moat-bench-cmd-")
        .tempdir()
        .unwrap();
    let out_dir = tmp.path();
    let before = v2_controllers();

    let out = Command::new(workspace_root().join("scripts/bench.sh"))
        .args(["--quick", "--no-setup", "--out"])
        .arg(out_dir)
        .arg("--bin-dir")
        .arg(&bin_dir)
        .output()
        .expect("run scripts/bench.sh");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "scripts/bench.sh --quick failed ({}):\n{stderr}",
        out.status
    );
    assert_eq!(
        v2_controllers(),
        before,
        "cgroup v2 controllers not restored"
    );
    assert!(stderr.contains("[6/6,"), "no progress shown:\n{stderr}");

    let md = std::fs::read_to_string(out_dir.join("BENCHMARKS.md")).expect("BENCHMARKS.md");
    assert!(md.contains("**Quick run**"), "{md}");
    for heading in ["## Goals", "## Plots", "## Method", "## Machine"] {
        assert!(md.contains(heading), "no {heading:?} in:\n{md}");
    }
    for sec in SECTIONS {
        assert!(
            md.contains(&format!("\n## {sec}\n")),
            "no section {sec:?} in:\n{md}"
        );
    }
    // Every plot the report links is a real PNG, and the three named in
    // the issue are there.
    let links: Vec<&str> = md
        .lines()
        .filter_map(|l| l.strip_prefix("![")?.split_once("](")?.1.strip_suffix(')'))
        .collect();
    for id in ["launch", "overhead", "metrics-scale"] {
        assert!(
            links.contains(&format!("docs/bench/{id}.png").as_str()),
            "plot {id} not linked: {links:?}"
        );
    }
    for l in &links {
        assert!(is_png(&out_dir.join(l)), "{l} is not a PNG");
    }
    for h in ["seccomp", "launch", "agent", "authz"] {
        let r = Results::read(&out_dir.join(format!("docs/bench/{h}.json"))).unwrap();
        assert_eq!(r.harness, h);
        assert!(r.quick);
        assert!(!r.comparisons.is_empty(), "{h}: no figures");
        let doc = out_dir.join(format!("docs/benchmarks-{h}.md"));
        assert!(
            std::fs::read_to_string(&doc).is_ok_and(|t| t.contains("| Figure |")),
            "{} has no report table",
            doc.display()
        );
    }
}

/// Bad arguments are refused before anything is installed, built or run,
/// naming what is wrong.
#[test]
fn bad_arguments_are_refused_with_the_reason() {
    for (args, reason) in [
        (&["--only", "lunch"][..], "--only lunch: not a harness"),
        (&["--", "--rounds", "3"][..], "add --only NAME"),
        (&["--rounds", "3"][..], "unknown argument '--rounds'"),
    ] {
        let out = Command::new(workspace_root().join("scripts/bench.sh"))
            .args(args)
            .output()
            .expect("run scripts/bench.sh");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} was accepted");
        assert!(stderr.contains(reason), "{args:?}: {stderr}");
    }
}
