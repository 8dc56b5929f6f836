//! Every numeric configuration key at its extremes (issue 10, item 5): each
//! value is either refused by `moatd --check-config` (exit 2, one line naming
//! the key) and refused the same way by `moatd` itself, or accepted, and then
//! moatd starts, serves `/metrics` and stops cleanly on SIGTERM. No value may
//! end in a panic, and whatever `--check-config` accepts, moatd must start
//! with. Needs root and BPF for the starts.

mod common;
mod moatd_common;

use std::{
    path::Path,
    process::Command,
    time::{Duration, Instant},
};

use moatd_common::{request, served_address, spawn_moatd, temp_dir};

/// Every numeric key moatd has, and the values tried for it besides the common
/// extremes: its boundaries.
const KEYS: &[(&str, &str, &[&str])] = &[
    ("http", "max_connections", &["1048576", "1048577"]),
    (
        "http",
        "max_header_bytes",
        &["8191", "8192", "1048576", "1048577"],
    ),
    (
        "http",
        "header_timeout_ms",
        &["99", "100", "600000", "600001"],
    ),
    (
        "http",
        "connection_timeout_ms",
        &["999", "1000", "86400000", "86400001"],
    ),
    ("audit", "rate_limit", &["1000000000", "1000000001"]),
    ("audit", "rate_burst", &[]),
    ("audit", "fork_burst_threshold", &[]),
    ("workloads", "max_labels", &["100000", "100001"]),
    (
        "workloads",
        "poll_interval_ms",
        &["9", "10", "60000", "60001"],
    ),
    (
        "kernel",
        "ring_buffer_bytes",
        &["4096", "268435456", "536870912", "2147483648"],
    ),
    ("kernel", "denial_map_entries", &["1048576", "1048577"]),
    ("kernel", "process_map_entries", &["1048576", "1048577"]),
    ("kernel", "rate_map_entries", &["1048576", "1048577"]),
    ("kernel", "audit_channel_capacity", &["1048576", "1048577"]),
];

/// Tried for every key.
const EXTREMES: &[&str] = &[
    "0",
    "1",
    "-1",
    "4294967295",
    "4294967296",
    "18446744073709551615",
    "1.5",
    "\"10\"",
];

/// How one value fared.
#[derive(Debug)]
enum Outcome {
    /// Refused by `--check-config` and by `moatd`, with this line.
    Refused(String),
    /// Accepted, and moatd started, served and stopped.
    Served,
    /// What went wrong (a panic of moatd, a disagreement, ...).
    Failed(String),
}

fn moatd(args: &[&str]) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_moatd"))
        .args(args)
        .output()
        .expect("running moatd");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Checks one `section.key = value`; panics with what went wrong.
fn try_value(dir: &Path, section: &str, key: &str, value: &str) -> Outcome {
    let file = dir.join(format!(
        "{section}-{key}-{}.toml",
        value.replace(['"', '.'], "_")
    ));
    std::fs::write(&file, format!("[{section}]\n{key} = {value}\n")).unwrap();
    let file = file.to_str().unwrap();
    let dotted = format!("{section}.{key}");
    let (code, stderr) = moatd(&["--config", file, "--check-config"]);
    match code {
        2 => {
            let line = stderr.trim_end();
            assert_eq!(line.lines().count(), 1, "{dotted} = {value}: {line}");
            assert!(
                line.contains(&format!(": {dotted}: ")),
                "{dotted} = {value}: the refusal does not name the key: {line}"
            );
            // moatd itself refuses it the same way, before loading anything.
            let (run_code, run_stderr) = moatd(&["--config", file]);
            assert_eq!(
                (run_code, run_stderr.trim_end()),
                (2, line),
                "{dotted} = {value}: --check-config and moatd disagree"
            );
            Outcome::Refused(line.replace(file, "FILE"))
        }
        0 => {
            start_and_stop(dir, file, &dotted, value);
            Outcome::Served
        }
        other => panic!("{dotted} = {value}: --check-config exited {other}: {stderr}"),
    }
}

/// Starts moatd with `file`, waits until it serves `/metrics`, stops it.
fn start_and_stop(dir: &Path, file: &str, dotted: &str, value: &str) {
    let audit = dir.join(format!("{dotted}-{}.jsonl", value.len()));
    let (mut child, lines) = spawn_moatd([
        "--config",
        file,
        "--listen",
        "127.0.0.1:0",
        "--audit-log",
        audit.to_str().unwrap(),
        "--log",
        "info",
    ]);
    let started = Instant::now();
    let mut seen = Vec::new();
    let addr = loop {
        match lines.recv_timeout(Duration::from_millis(100)) {
            Ok(line) => {
                if line.contains("running") {
                    break served_address(&line);
                }
                seen.push(line);
            }
            Err(_) => {
                if let Some(status) = child.try_wait().unwrap() {
                    seen.extend(lines.try_iter());
                    panic!(
                        "{dotted} = {value}: accepted by --check-config, but moatd exited \
                         {status}: {seen:#?}"
                    );
                }
                assert!(
                    started.elapsed() < Duration::from_secs(60),
                    "{dotted} = {value}: moatd not running after 60 s: {seen:#?}"
                );
            }
        }
    };
    let response = request(addr, "GET", "/metrics", &[]).expect("GET /metrics");
    assert_eq!(
        response.status, 200,
        "{dotted} = {value}: {}",
        response.body
    );
    // SAFETY: kill(2) on our own child.
    unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
    let stopping = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(
            stopping.elapsed() < Duration::from_secs(10),
            "{dotted} = {value}: moatd still running 10 s after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(
        status.success(),
        "{dotted} = {value}: moatd exited {status}"
    );
}

#[test]
fn every_numeric_key_at_its_extremes_is_refused_or_served() {
    skip_without_bpf!();
    let tmp = temp_dir("config-extremes");
    let dir = tmp.path();
    let cases: Vec<(&str, &str, &str)> = KEYS
        .iter()
        .flat_map(|(section, key, own)| {
            EXTREMES
                .iter()
                .chain(own.iter())
                .map(move |value| (*section, *key, *value))
        })
        .collect();
    // Four at a time: each accepted value loads the eBPF programs.
    let results: Vec<((&str, &str, &str), Outcome)> = std::thread::scope(|scope| {
        let mut results = Vec::new();
        for chunk in cases.chunks(cases.len().div_ceil(4)) {
            let handle = scope.spawn(move || {
                chunk
                    .iter()
                    .map(|&(section, key, value)| {
                        let outcome =
                            std::panic::catch_unwind(|| try_value(dir, section, key, value))
                                .unwrap_or_else(|panic| {
                                    Outcome::Failed(
                                        panic
                                            .downcast_ref::<String>()
                                            .cloned()
                                            .or_else(|| {
                                                panic
                                                    .downcast_ref::<&str>()
                                                    .map(|s| (*s).to_owned())
                                            })
                                            .unwrap_or_default(),
                                    )
                                });
                        ((section, key, value), outcome)
                    })
                    .collect::<Vec<_>>()
            });
            results.push(handle);
        }
        results
            .into_iter()
            .flat_map(|h| h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
            .collect()
    });
    let count = |f: fn(&Outcome) -> bool| results.iter().filter(|(_, o)| f(o)).count();
    let served = count(|o| matches!(o, Outcome::Served));
    let refused = count(|o| matches!(o, Outcome::Refused(_)));
    let mut failures = Vec::new();
    for ((section, key, value), outcome) in &results {
        match outcome {
            Outcome::Served => eprintln!("{section}.{key} = {value}: served"),
            Outcome::Refused(line) => eprintln!("{section}.{key} = {value}: {line}"),
            Outcome::Failed(why) => {
                eprintln!("{section}.{key} = {value}: FAILED: {why}");
                failures.push(format!("{section}.{key} = {value}: {why}"));
            }
        }
    }
    eprintln!(
        "{} values: {served} served, {refused} refused, {} failed",
        results.len(),
        failures.len()
    );
    assert!(failures.is_empty(), "{failures:#?}");
    assert!(served > 0 && refused > 0);
}
