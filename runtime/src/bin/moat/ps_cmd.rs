//! `moat ps`: the running workloads.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Result;
use clap::Args;
use serde_json::json;

use crate::term::escape;
use moat_runtime::state::{StateDir, WorkloadRecord, DEFAULT_STATE_DIR};
use moat_runtime::userns::IdMap;

#[derive(Debug, Args)]
pub struct PsArgs {
    /// Print a JSON array instead of a table.
    #[arg(long)]
    json: bool,
}

pub fn run(args: PsArgs) -> Result<ExitCode> {
    let root = std::env::var_os("MOAT_STATE_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(DEFAULT_STATE_DIR));
    let records: Vec<WorkloadRecord> = if root.exists() {
        StateDir::open(&root)?
            .list()?
            .into_iter()
            .filter(WorkloadRecord::is_alive)
            .collect()
    } else {
        Vec::new()
    };
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    let rows: Vec<Row> = records
        .iter()
        .map(|r| Row {
            name: r.name.clone(),
            pid: r.pid.as_ref().map(|p| p.pid),
            uptime_s: now_ms.saturating_sub(r.started_at_unix_ms) / 1000,
            pids_current: read_u64(&r.cgroup_pids, "pids.current"),
            pids_limit: read_limit(&r.cgroup_pids),
            seccomp: r.seccomp_profile.clone(),
            userns: r.userns.as_ref().map(|ns| {
                let maps: Vec<String> = ns.uid_map.iter().map(IdMap::to_string).collect();
                maps.join(",")
            }),
        })
        .collect();
    if args.json {
        let v: Vec<_> = rows
            .iter()
            .map(|r| {
                json!({
                    "name": r.name, "pid": r.pid, "uptime_seconds": r.uptime_s,
                    "pids_current": r.pids_current, "pids_limit": r.pids_limit,
                    "seccomp_profile": r.seccomp, "userns": r.userns,
                })
            })
            .collect();
        let text = serde_json::to_string_pretty(&v)?;
        println!("{}", moat_api::text::escape_unsafe_in_json(&text));
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "{:<24} {:>8} {:>8} {:>6} {:>9} {:<12} USERNS",
        "NAME", "PID", "UPTIME", "PIDS", "LIMIT", "SECCOMP"
    );
    for r in rows {
        println!(
            "{:<24} {:>8} {:>8} {:>6} {:>9} {:<12} {}",
            escape(&r.name),
            r.pid.map(|p| p.to_string()).unwrap_or_else(|| "-".into()),
            human_duration(r.uptime_s),
            r.pids_current
                .map(|p| p.to_string())
                .unwrap_or_else(|| "-".into()),
            r.pids_limit.unwrap_or_else(|| "-".into()),
            escape(&r.seccomp),
            escape(&r.userns.unwrap_or_else(|| "host".into()))
        );
    }
    Ok(ExitCode::SUCCESS)
}

struct Row {
    name: String,
    pid: Option<i32>,
    uptime_s: u64,
    pids_current: Option<u64>,
    pids_limit: Option<String>,
    seccomp: String,
    userns: Option<String>,
}

fn read_u64(dir: &Path, file: &str) -> Option<u64> {
    std::fs::read_to_string(dir.join(file))
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// pids.max, or "max" followed by the limit inherited from the parent.
fn read_limit(dir: &Path) -> Option<String> {
    let own = std::fs::read_to_string(dir.join("pids.max")).ok()?;
    let own = own.trim();
    if own != "max" {
        return Some(own.to_string());
    }
    match dir.parent().and_then(|p| read_u64(p, "pids.max")) {
        Some(parent) => Some(format!("{parent}*")),
        None => Some("unlimited".into()),
    }
}

fn human_duration(s: u64) -> String {
    match s {
        0..=59 => format!("{s}s"),
        60..=3599 => format!("{}m{}s", s / 60, s % 60),
        _ => format!("{}h{}m", s / 3600, (s % 3600) / 60),
    }
}
