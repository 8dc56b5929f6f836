//! The pids cgroups of workloads: moat workloads (`<pids mount>/<moat parent>/<name>`,
//! or `moat.slice/moat-<name>.scope/payload` with `moat run`'s systemd cgroup manager)
//! and Docker containers (`<pids mount>/<docker parent>/<id>` for the cgroupfs
//! driver, `docker-<id>.scope` under a scope parent, `system.slice` by default,
//! for the systemd driver).
//!
//! Read every poll interval by the daemon, which serves the last reading as
//! `moat_pids_current`, `moat_pids_limit` and `moat_pids_limit_hits_total`, and
//! emits a `pids_limit_reached` audit event when a cgroup's `max` count in
//! `pids.events` grows.
//!
//! A workload can hit its limit and be gone before the next reading (a fork
//! bomb that dies at once): the kernel side keeps the final count of every pids
//! cgroup removed with refusals on it (`KernelSource::retired_pids`), and
//! [`HitTracker`] takes it from there. Each cgroup is tracked by its id, so that
//! its hits are counted once whether it was read alive, seen removed, or both:
//! a workload's `moat_pids_limit_hits_total` is the count of its live cgroups
//! plus the final counts of its removed ones, and never goes down.

use std::{
    collections::{HashMap, HashSet},
    fs,
    os::unix::fs::DirEntryExt as _,
    path::Path,
};

use crate::collect::attribution::{classify, is_container_id, CgroupParents};
use moat_api::defaults::MOAT_SCOPE_PAYLOAD as SCOPE_PAYLOAD;

/// One pids cgroup, as read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PidsCgroup {
    /// Its key as the kernel side names it: the directory's inode number, with
    /// [`moat_common::V1_PIDS_ID_FLAG`] on a v1 hierarchy.
    pub id: u64,
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

/// Reads the workload pids cgroups of the hierarchy mounted at `mount`; their
/// ids carry `key_flag` (the kernel side's flag for v1 pids cgroups, or 0).
///
/// A cgroup removed while being read is skipped.
pub fn scan(mount: &Path, parents: &CgroupParents, key_flag: u64) -> Vec<PidsCgroup> {
    let mut found = Vec::new();
    let places = [
        (parents.moat.as_str(), Kind::Moat),
        (parents.docker.as_str(), Kind::DockerCgroupfs),
    ]
    .into_iter()
    .chain(
        parents
            .docker_scopes
            .iter()
            .map(|slice| (slice.as_str(), Kind::DockerSystemd)),
    )
    .chain(std::iter::once((
        moat_api::defaults::MOAT_SLICE,
        Kind::MoatScope,
    )));
    for (parent, want) in places {
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
            // The id is the inode of the cgroup read (the payload's, in a scope).
            let ino = match want {
                Kind::MoatScope => match fs::metadata(&dir) {
                    Ok(meta) => std::os::unix::fs::MetadataExt::ino(&meta),
                    Err(_) => continue,
                },
                _ => entry.ino(),
            };
            if let Some(cgroup) = read_one(&dir, &rel, parents, key_flag | ino) {
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

/// Whether `rel` (relative to the pids hierarchy's root) is a pids cgroup
/// [`scan`] reads: a moat workload's (in its parent, or the payload of its
/// scope in `moat.slice`), or a Docker container's.
pub fn is_workload_cgroup(rel: &str, parents: &CgroupParents) -> bool {
    let Some((parent, name)) = rel.trim_end_matches('/').rsplit_once('/') else {
        return false;
    };
    let parent = parent.trim_start_matches('/');
    if name == SCOPE_PAYLOAD {
        return parent
            .strip_prefix(moat_api::defaults::MOAT_SLICE)
            .and_then(|scope| scope.strip_prefix('/'))
            .is_some_and(|scope| {
                !scope.contains('/')
                    && scope.starts_with(moat_api::defaults::MOAT_SCOPE_PREFIX)
                    && scope.ends_with(".scope")
            });
    }
    (parent == parents.moat && !name.is_empty())
        || (parent == parents.docker && is_container_id(name))
        || (parents.docker_scopes.iter().any(|s| s == parent)
            && name
                .strip_prefix("docker-")
                .and_then(|n| n.strip_suffix(".scope"))
                .is_some_and(is_container_id))
}

/// A removed workload pids cgroup, from the kernel side's record: `hits` its
/// final count.
pub fn retired(id: u64, rel: &str, hits: u64, parents: &CgroupParents) -> Option<PidsCgroup> {
    is_workload_cgroup(rel, parents).then(|| PidsCgroup {
        id,
        workload: classify(rel, parents),
        path: rel.to_owned(),
        current: 0,
        limit: None,
        limit_hits: hits,
    })
}

fn read_one(dir: &Path, rel: &str, parents: &CgroupParents, id: u64) -> Option<PidsCgroup> {
    let current = read_trimmed(&dir.join("pids.current"))?.parse().ok()?;
    let limit = match read_trimmed(&dir.join("pids.max"))?.as_str() {
        "max" => None,
        n => Some(n.parse().ok()?),
    };
    let limit_hits = read_trimmed(&dir.join("pids.events"))
        .map(|text| parse_events_max(&text))
        .unwrap_or(0);
    Some(PidsCgroup {
        id,
        workload: classify(rel, parents),
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

/// Remembers the last reading (by cgroup id) to find the limit hits that
/// happened since, in live cgroups and in the ones removed meanwhile.
#[derive(Debug, Default)]
pub struct HitTracker {
    last: HashMap<u64, PidsCgroup>,
    primed: bool,
}

/// What [`HitTracker::update`] found.
#[derive(Debug, Default)]
pub struct Update {
    /// Cgroups whose count grew since the last reading, with by how much.
    pub grown: Vec<(PidsCgroup, u64)>,
    /// The removed cgroups, with their final counts: each is reported here
    /// once, and no longer part of any reading.
    pub gone: Vec<PidsCgroup>,
}

impl HitTracker {
    /// Compares the live cgroups just read (`reading`, from which the removed
    /// ones are taken out: one removed after it was read counts as removed) and
    /// the cgroups removed since the last call (`gone`, final counts) with the
    /// previous reading. On the first call no growth is reported (hits from
    /// before the agent started are history); a cgroup seen for the first time
    /// later is reported with all its hits.
    pub fn update(&mut self, reading: &mut Vec<PidsCgroup>, gone: Vec<PidsCgroup>) -> Update {
        let gone_ids: HashSet<u64> = gone.iter().map(|c| c.id).collect();
        reading.retain(|c| !gone_ids.contains(&c.id));
        let mut update = Update::default();
        let mut grew = |cgroup: &PidsCgroup, before: Option<u64>, primed: bool| {
            let delta = cgroup.limit_hits.saturating_sub(before.unwrap_or(0));
            if primed && delta > 0 {
                update.grown.push((cgroup.clone(), delta));
            }
        };
        for cgroup in reading.iter() {
            let before = self.last.get(&cgroup.id).map(|c| c.limit_hits);
            grew(cgroup, before, self.primed);
        }
        for mut cgroup in gone {
            let seen = self.last.get(&cgroup.id);
            if cgroup.limit.is_none() {
                cgroup.limit = seen.and_then(|c| c.limit);
            }
            grew(&cgroup, seen.map(|c| c.limit_hits), self.primed);
            update.gone.push(cgroup);
        }
        self.last = reading.iter().map(|c| (c.id, c.clone())).collect();
        self.primed = true;
        update
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
        let mut found = scan(root, &CgroupParents::defaults(), 0);
        found.sort_by(|a, b| a.path.cmp(&b.path));
        assert_eq!(found.len(), 2, "{found:?}");
        assert_eq!(found[0].workload, "docker:abababababab");
        assert_eq!(found[0].limit, None);
        assert_eq!(found[1].workload, "w1");
        assert_eq!(found[1].limit, Some(10));

        let mut tracker = HitTracker::default();
        assert!(tracker.update(&mut found, Vec::new()).grown.is_empty());
        fs::write(root.join("moat/w1/pids.events"), "max 4\n").unwrap();
        let mut found = scan(root, &CgroupParents::defaults(), 0);
        let grown = tracker.update(&mut found, Vec::new()).grown;
        assert_eq!(grown.len(), 1);
        assert_eq!(grown[0].0.workload, "w1");
        assert_eq!(grown[0].1, 4);
    }

    fn cgroup(id: u64, name: &str, hits: u64) -> PidsCgroup {
        PidsCgroup {
            id,
            workload: name.to_owned(),
            path: format!("/moat/{name}"),
            current: 1,
            limit: Some(5),
            limit_hits: hits,
        }
    }

    #[test]
    fn removed_cgroups_count_once_whether_or_not_they_were_read_alive() {
        let mut tracker = HitTracker::default();
        let mut reading = vec![cgroup(1, "a", 0), cgroup(2, "b", 3)];
        assert!(tracker.update(&mut reading, Vec::new()).grown.is_empty());

        // a: read alive with 2, then removed with 7 before the next reading;
        // c: born and gone between two readings; b: removed after this
        // reading read it (it is in both).
        let mut reading = vec![cgroup(1, "a", 2), cgroup(2, "b", 3)];
        let update = tracker.update(&mut reading, Vec::new());
        assert_eq!(update.grown.len(), 1);
        assert_eq!(update.grown[0].1, 2);
        let mut reading = vec![cgroup(2, "b", 4)];
        let mut gone_a = cgroup(1, "a", 7);
        gone_a.limit = None;
        let update = tracker.update(
            &mut reading,
            vec![gone_a, cgroup(3, "c", 9), cgroup(2, "b", 6)],
        );
        assert!(reading.is_empty(), "b is gone: {reading:?}");
        let grown: Vec<(&str, u64)> = update
            .grown
            .iter()
            .map(|(c, d)| (c.workload.as_str(), *d))
            .collect();
        assert_eq!(grown, [("a", 5), ("c", 9), ("b", 3)]);
        let finals: Vec<(u64, Option<u64>)> = update
            .gone
            .iter()
            .map(|c| (c.limit_hits, c.limit))
            .collect();
        assert_eq!(finals, [(7, Some(5)), (9, Some(5)), (6, Some(5))]);
        // Nothing is reported twice.
        let update = tracker.update(&mut Vec::new(), Vec::new());
        assert!(update.grown.is_empty() && update.gone.is_empty());
    }

    #[test]
    fn only_workload_cgroups_are_taken_from_removals() {
        let parents = CgroupParents::defaults();
        let id = "ab".repeat(32);
        assert!(is_workload_cgroup("/moat/w1", &parents));
        assert!(is_workload_cgroup(&format!("/docker/{id}"), &parents));
        assert!(is_workload_cgroup(
            &format!("/system.slice/docker-{id}.scope"),
            &parents
        ));
        assert!(!is_workload_cgroup("/moat/w1/sub", &parents));
        assert!(!is_workload_cgroup("/moat", &parents));
        assert!(!is_workload_cgroup("/docker/notanid", &parents));
        assert!(!is_workload_cgroup(
            &format!("/evil/docker-{id}.scope"),
            &parents
        ));
        assert!(is_workload_cgroup(
            "/moat.slice/moat-w1.scope/payload",
            &parents
        ));
        assert!(!is_workload_cgroup(
            "/moat.slice/moat-w1.scope/supervisor",
            &parents
        ));
        assert!(!is_workload_cgroup(
            "/user.slice/moat.slice/moat-w1.scope/payload",
            &parents
        ));
        assert!(retired(1, "/user.slice", 3, &parents).is_none());
        assert_eq!(retired(1, "/moat/w", 3, &parents).unwrap().workload, "w");
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
        let found = scan(root, &CgroupParents::defaults(), 0);
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(found[0].workload, "web");
        assert_eq!(found[0].path, "/moat.slice/moat-web.scope/payload");
        assert_eq!(
            (found[0].current, found[0].limit, found[0].limit_hits),
            (2, Some(32), 5)
        );
    }
}
