//! The pids cgroups of workloads: moat workloads (`<pids mount>/<moat parent>/<name>`,
//! or `moat.slice/moat-<name>.scope/payload` with `moat run`'s systemd cgroup manager)
//! and Docker containers (`<pids mount>/<docker parent>/<id>` for the cgroupfs
//! driver, `docker-<id>.scope` under `system.slice` for the systemd driver).
//!
//! Read every poll interval by the daemon, which serves the last reading as
//! `moat_pids_current`, `moat_pids_limit` and `moat_pids_limit_hits_total`, and
//! emits a `pids_limit_reached` audit event when a cgroup's `max` count in
//! `pids.events` grows.

use std::{collections::HashMap, fs, path::Path};

use crate::collect::attribution::{classify, is_container_id};
use moat_api::defaults::MOAT_SCOPE_PAYLOAD as SCOPE_PAYLOAD;

/// One pids cgroup, as read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PidsCgroup {
    /// The workload label before the cap (from [`classify`]).
    pub workload: String,
    /// Path relative to the pids hierarchy's root, e.g. `/moat/build`.
    pub path: String,
    /// `pids.current`: tasks (threads included) in it now.
    pub current: u64,
    /// `pids.max`, or `None` for `max` (no limit of its own).
    pub limit: Option<u64>,
    /// The `max` count of `pids.events`: forks refused because of this cgroup's
    /// limit (or, on v2, an ancestor's).
    pub limit_hits: u64,
}

/// Reads the workload pids cgroups of the hierarchy mounted at `mount`.
///
/// A cgroup removed while being read is skipped.
pub fn scan(mount: &Path, moat_parent: &str, docker_parent: &str) -> Vec<PidsCgroup> {
    let mut found = Vec::new();
    for (parent, want) in [
        (moat_parent, Kind::Moat),
        (docker_parent, Kind::DockerCgroupfs),
        ("system.slice", Kind::DockerSystemd),
        (moat_api::defaults::MOAT_SLICE, Kind::MoatScope),
    ] {
        let dir = mount.join(parent);
        let Ok(entries) = fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            if !entry.file_type().is_ok_and(|t| t.is_dir()) {
                continue;
            }
            let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
                continue;
            };
            let wanted = match want {
                Kind::Moat => true,
                Kind::DockerCgroupfs => is_container_id(&name),
                Kind::DockerSystemd => name
                    .strip_prefix("docker-")
                    .and_then(|n| n.strip_suffix(".scope"))
                    .is_some_and(is_container_id),
                Kind::MoatScope => {
                    name.starts_with(moat_api::defaults::MOAT_SCOPE_PREFIX)
                        && name.ends_with(".scope")
                }
            };
            if !wanted {
                continue;
            }
            let (dir, rel) = match want {
                // The workload's own cgroup in its scope (the scope also
                // holds moat's keeper).
                Kind::MoatScope => (
                    entry.path().join(SCOPE_PAYLOAD),
                    format!("/{parent}/{name}/{SCOPE_PAYLOAD}"),
                ),
                _ => (entry.path(), format!("/{parent}/{name}")),
            };
            if let Some(cgroup) = read_one(&dir, &rel, moat_parent, docker_parent) {
                found.push(cgroup);
            }
        }
    }
    found
}

#[derive(Clone, Copy)]
enum Kind {
    Moat,
    DockerCgroupfs,
    DockerSystemd,
    MoatScope,
}

fn read_one(dir: &Path, rel: &str, moat_parent: &str, docker_parent: &str) -> Option<PidsCgroup> {
    let current = read_trimmed(&dir.join("pids.current"))?.parse().ok()?;
    let limit = match read_trimmed(&dir.join("pids.max"))?.as_str() {
        "max" => None,
        n => Some(n.parse().ok()?),
    };
    let limit_hits = read_trimmed(&dir.join("pids.events"))
        .map(|text| parse_events_max(&text))
        .unwrap_or(0);
    Some(PidsCgroup {
        workload: classify(rel, moat_parent, docker_parent),
        path: rel.to_owned(),
        current,
        limit,
        limit_hits,
    })
}

fn read_trimmed(path: &Path) -> Option<String> {
    fs::read_to_string(path).ok().map(|s| s.trim().to_owned())
}

/// The `max N` line of `pids.events`.
pub fn parse_events_max(text: &str) -> u64 {
    text.lines()
        .find_map(|line| {
            let mut fields = line.split_whitespace();
            (fields.next() == Some("max"))
                .then(|| fields.next()?.parse().ok())
                .flatten()
        })
        .unwrap_or(0)
}

/// Remembers the last reading to find limit hits that happened since.
#[derive(Debug, Default)]
pub struct HitTracker {
    last: HashMap<String, u64>,
    primed: bool,
}

impl HitTracker {
    /// Compares `reading` with the previous one and returns the cgroups whose hit
    /// count grew, with by how much. On the first call nothing is reported (hits
    /// from before the agent started are history); a cgroup seen for the first time
    /// later is reported if it already has hits.
    pub fn update<'a>(&mut self, reading: &'a [PidsCgroup]) -> Vec<(&'a PidsCgroup, u64)> {
        let mut grown = Vec::new();
        let mut next = HashMap::with_capacity(reading.len());
        for cgroup in reading {
            let before = self.last.get(&cgroup.path).copied();
            if self.primed {
                let delta = cgroup.limit_hits.saturating_sub(before.unwrap_or(0));
                if delta > 0 {
                    grown.push((cgroup, delta));
                }
            }
            next.insert(cgroup.path.clone(), cgroup.limit_hits);
        }
        self.last = next;
        self.primed = true;
        grown
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_events() {
        assert_eq!(parse_events_max("max 7\n"), 7);
        assert_eq!(parse_events_max("max 0\nmax.imposed 3\n"), 0);
        assert_eq!(parse_events_max(""), 0);
    }

    #[test]
    fn scans_a_fake_tree_and_tracks_hits() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        let id = "ab".repeat(32);
        for (dir, max, hits) in [
            ("moat/w1".to_owned(), "10", 0),
            (format!("docker/{id}"), "max", 2),
        ] {
            let d = root.join(dir);
            fs::create_dir_all(&d).unwrap();
            fs::write(d.join("pids.current"), "3\n").unwrap();
            fs::write(d.join("pids.max"), format!("{max}\n")).unwrap();
            fs::write(d.join("pids.events"), format!("max {hits}\n")).unwrap();
        }
        fs::create_dir_all(root.join("docker/notacontainer")).unwrap();
        let mut found = scan(root, "moat", "docker");
        found.sort_by(|a, b| a.path.cmp(&b.path));
        assert_eq!(found.len(), 2, "{found:?}");
        assert_eq!(found[0].workload, "docker:abababababab");
        assert_eq!(found[0].limit, None);
        assert_eq!(found[1].workload, "w1");
        assert_eq!(found[1].limit, Some(10));

        let mut tracker = HitTracker::default();
        assert!(tracker.update(&found).is_empty());
        fs::write(root.join("moat/w1/pids.events"), "max 4\n").unwrap();
        let found = scan(root, "moat", "docker");
        let grown = tracker.update(&found);
        assert_eq!(grown.len(), 1);
        assert_eq!(grown[0].0.workload, "w1");
        assert_eq!(grown[0].1, 4);
    }

    #[test]
    fn moat_scopes_in_moat_slice_are_scanned() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        for dir in [
            "moat.slice/moat-web.scope/payload",
            "moat.slice/other.scope/payload",
        ] {
            let d = root.join(dir);
            fs::create_dir_all(&d).unwrap();
            fs::write(d.join("pids.current"), "2\n").unwrap();
            fs::write(d.join("pids.max"), "32\n").unwrap();
            fs::write(d.join("pids.events"), "max 5\n").unwrap();
        }
        let found = scan(root, "moat", "docker");
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(found[0].workload, "web");
        assert_eq!(found[0].path, "/moat.slice/moat-web.scope/payload");
        assert_eq!(
            (found[0].current, found[0].limit, found[0].limit_hits),
            (2, Some(32), 5)
        );
    }
}
