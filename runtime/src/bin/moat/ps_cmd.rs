//! `moat ps`: the running workloads.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Result;
use clap::Args;
use serde_json::json;

use crate::term::escape;
use moat_runtime::cgroup::{check_recorded_dirs, check_recorded_scope, detect, CgroupConfig};
use moat_runtime::state::{StateDir, WorkloadRecord, DEFAULT_STATE_DIR};
use moat_runtime::userns::IdMap;

#[derive(Debug, Args)]
#[command(after_long_help = "\
STATE:
  running   the workload runs (its moat run may have been killed: it is still shown)
  starting  moat run is setting it up
  stale     its moat run and its workload are gone; the cgroups and id range its record
            names are reclaimed by the next `moat run` (moat ps itself changes nothing)

`--json` also names each workload's cgroups and, with the systemd cgroup manager, its scope
unit (\"unit\": \"moat-NAME.scope\").

An entry of the state directory moat cannot use (not a regular file, too large, not a
record) is reported on stderr by name and left out.")]
pub struct PsArgs {
    /// Print a JSON array instead of a table.
    #[arg(long)]
    json: bool,
}

pub fn run(args: PsArgs) -> Result<ExitCode> {
    let root = std::env::var_os("MOAT_STATE_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(DEFAULT_STATE_DIR));
    // Stale records are listed too: what a killed `moat run` left behind
    // must be visible. `moat ps` only reads; the next `moat run` reclaims.
    let records: Vec<WorkloadRecord> = if root.exists() {
        StateDir::open(&root)?.list()?
    } else {
        Vec::new()
    };
    // Counters are read only from directories that are workload cgroups.
    let layout = detect(&CgroupConfig::default()).ok();
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    let rows: Vec<Row> = records
        .iter()
        .map(|r| {
            let counted = layout.as_ref().is_some_and(|l| {
                let valid = match &r.unit {
                    Some(unit) => check_recorded_scope(l, &r.name, unit, &r.cgroup_v2).is_ok(),
                    None => check_recorded_dirs(l, &r.name, &r.cgroup_pids, &r.cgroup_v2).is_ok(),
                };
                valid && !r.cgroup_pids.as_os_str().is_empty()
            });
            Row {
                name: r.name.clone(),
                state: state_of(r),
                pid: r.pid.as_ref().map(|p| p.pid),
                uptime_s: now_ms.saturating_sub(r.started_at_unix_ms) / 1000,
                pids_current: counted
                    .then(|| read_u64(&r.cgroup_pids, "pids.current"))
                    .flatten(),
                pids_limit: counted.then(|| read_limit(&r.cgroup_pids)).flatten(),
                seccomp: r.seccomp_profile.clone(),
                userns: r.userns.as_ref().map(|ns| {
                    let maps: Vec<String> = ns.uid_map.iter().map(IdMap::to_string).collect();
                    maps.join(",")
                }),
                cgroups: [r.cgroup_pids.clone(), r.cgroup_v2.clone()],
                unit: r.unit.clone(),
                namespaces: r.namespaces.clone(),
            }
        })
        .collect();
    let stale = rows.iter().filter(|r| r.state == "stale").count();
    if stale > 0 {
        eprintln!(
            "moat: {stale} stale workload(s): their moat run was killed; the next `moat run` \
             reclaims what they left (cgroups, id ranges)"
        );
    }
    if args.json {
        let v: Vec<_> = rows
            .iter()
            .map(|r| {
                json!({
                    "name": r.name, "state": r.state, "pid": r.pid,
                    "uptime_seconds": r.uptime_s,
                    "pids_current": r.pids_current, "pids_limit": r.pids_limit,
                    "seccomp_profile": r.seccomp, "userns": r.userns,
                    "cgroup_pids": r.cgroups[0], "cgroup_v2": r.cgroups[1],
                    "unit": r.unit,
                    "namespaces": r.namespaces,
                })
            })
            .collect();
        let text = serde_json::to_string_pretty(&v)?;
        println!("{}", moat_api::text::escape_unsafe_in_json(&text));
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "{:<24} {:>8} {:>8} {:>6} {:>9} {:<12} {:<20} {:<8} NAMESPACES",
        "NAME", "PID", "UPTIME", "PIDS", "LIMIT", "SECCOMP", "USERNS", "STATE"
    );
    for r in rows {
        println!(
            "{:<24} {:>8} {:>8} {:>6} {:>9} {:<12} {:<20} {:<8} {}",
            escape(&r.name),
            r.pid.map(|p| p.to_string()).unwrap_or_else(|| "-".into()),
            human_duration(r.uptime_s),
            r.pids_current
                .map(|p| p.to_string())
                .unwrap_or_else(|| "-".into()),
            r.pids_limit.unwrap_or_else(|| "-".into()),
            escape(&r.seccomp),
            escape(&r.userns.unwrap_or_else(|| "host".into())),
            r.state,
            if r.namespaces.is_empty() {
                "-".to_string()
            } else {
                r.namespaces.join(",")
            }
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// `running`, `starting` (its `moat run` is setting it up) or `stale`
/// (its `moat run` and workload are gone; what it names is left for the
/// next `moat run` to reclaim).
fn state_of(r: &WorkloadRecord) -> &'static str {
    if !r.is_alive() {
        "stale"
    } else if r.pid.is_none() {
        "starting"
    } else {
        "running"
    }
}

struct Row {
    name: String,
    state: &'static str,
    pid: Option<i32>,
    uptime_s: u64,
    pids_current: Option<u64>,
    pids_limit: Option<String>,
    seccomp: String,
    userns: Option<String>,
    cgroups: [PathBuf; 2],
    /// The systemd scope, with the systemd cgroup manager.
    unit: Option<String>,
    namespaces: Vec<String>,
}

fn read_u64(dir: &Path, file: &str) -> Option<u64> {
    std::fs::read_to_string(dir.join(file))
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// pids.max, or the nearest ancestor's limit followed by `*` (the parent's
/// cap with cgroupfs; with systemd, past the scope, the slice's).
fn read_limit(dir: &Path) -> Option<String> {
    let own = std::fs::read_to_string(dir.join("pids.max")).ok()?;
    let own = own.trim();
    if own != "max" {
        return Some(own.to_string());
    }
    // Up to the hierarchy's root, which has no pids.max.
    let mut up = dir.parent();
    while let Some(d) = up {
        match std::fs::read_to_string(d.join("pids.max")) {
            Ok(limit) if limit.trim() != "max" => {
                return Some(format!("{}*", limit.trim()));
            }
            Ok(_) => up = d.parent(),
            Err(_) => break,
        }
    }
    Some("unlimited".into())
}

fn human_duration(s: u64) -> String {
    match s {
        0..=59 => format!("{s}s"),
        60..=3599 => format!("{}m{}s", s / 60, s % 60),
        _ => format!("{}h{}m", s / 3600, (s % 3600) / 60),
    }
}
