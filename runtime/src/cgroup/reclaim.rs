//! Reclaiming the cgroups a state record names, after the `moat run` that
//! made them was killed.
//!
//! Only what the record names is touched, never what the current
//! configuration would name (the parent may differ from run to run), and
//! only if it is a workload cgroup: `<mount>/<parent...>/<name>` inside the
//! pids or unified mount, every component a valid cgroup name (so no `..`),
//! the last one the workload's own name. Any of the directories may be
//! missing: the run may have been killed before it made them, or while it
//! removed them.

#[cfg(test)]
use std::path::PathBuf;
use std::path::{Component, Path};

use super::error::{CgroupError, Operation};
use super::kill::kill_dirs;
use super::layout::Layout;
use super::names::check_name;
use super::{create::try_lock, fs};

/// Checks that `dir`, recorded as a cgroup of workload `name`, is one:
/// inside `mount`, below a parent, and named `name`. An empty path (a
/// record that names no cgroup there) passes.
fn check_recorded(mount: &Path, name: &str, dir: &Path) -> Result<(), CgroupError> {
    if dir.as_os_str().is_empty() {
        return Ok(());
    }
    let refuse = |reason: String| CgroupError::NotAWorkloadCgroup {
        path: dir.to_owned(),
        reason,
    };
    if dir
        .components()
        .any(|c| matches!(c, Component::ParentDir | Component::CurDir))
    {
        return Err(refuse("it contains \"..\" or \".\"".to_owned()));
    }
    let rel = dir.strip_prefix(mount).map_err(|_| {
        refuse(format!(
            "it is not inside the cgroup mount {}",
            mount.display()
        ))
    })?;
    let parts: Vec<&str> = rel
        .components()
        .map(|c| c.as_os_str().to_str().unwrap_or("\u{fffd}"))
        .collect();
    if parts.len() < 2 {
        return Err(refuse(format!(
            "it is not below a parent cgroup of {}",
            mount.display()
        )));
    }
    if let Some((part, why)) = parts
        .iter()
        .find_map(|p| check_name(p).err().map(|e| (p, e)))
    {
        return Err(refuse(format!("component {part:?}: {why}")));
    }
    if parts.last() != Some(&name) {
        return Err(refuse(format!(
            "it is not named after the workload {name:?}"
        )));
    }
    Ok(())
}

/// Checks the cgroup directories a record of workload `name` names: its
/// pids cgroup inside the pids mount, its identity cgroup inside the
/// unified mount (see the module documentation).
pub fn check_recorded_dirs(
    layout: &Layout,
    name: &str,
    pids_dir: &Path,
    v2_dir: &Path,
) -> Result<(), CgroupError> {
    check_recorded(layout.pids.mount(), name, pids_dir)?;
    check_recorded(&layout.v2_mount, name, v2_dir)
}

/// Kills the processes in, and removes, the cgroups a record of workload
/// `name` names, whichever of them exist. `Ok` means none of them is left.
///
/// Refused, touching nothing, when a directory is not a workload cgroup
/// ([`check_recorded_dirs`]) or when a live moat process holds the identity
/// cgroup's ownership lock (the name was reused meanwhile, through another
/// state directory).
pub fn reclaim(
    layout: &Layout,
    name: &str,
    pids_dir: &Path,
    v2_dir: &Path,
) -> Result<(), CgroupError> {
    check_recorded_dirs(layout, name, pids_dir, v2_dir)?;
    let mut existing: Vec<&Path> = Vec::new();
    for dir in [pids_dir, v2_dir] {
        if dir.as_os_str().is_empty() || existing.contains(&dir) {
            continue;
        }
        match std::fs::symlink_metadata(dir) {
            Ok(m) if m.is_dir() => existing.push(dir),
            Ok(_) => {
                return Err(CgroupError::NotAWorkloadCgroup {
                    path: dir.to_owned(),
                    reason: "it is not a directory".to_owned(),
                })
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(CgroupError::io(Operation::Stat, dir, e)),
        }
    }
    if existing.is_empty() {
        return Ok(());
    }
    // Held until the directories are gone, so that two moat processes
    // reclaiming the same record do not both act on it.
    let _lock = if existing.contains(&v2_dir) {
        Some(try_lock(v2_dir)?.ok_or_else(|| CgroupError::AlreadyExists {
            path: v2_dir.to_owned(),
            reason: "it belongs to a running workload (a moat process holds its lock)".to_owned(),
        })?)
    } else {
        None
    };
    kill_dirs(&existing)?;
    let mut first = None;
    for dir in existing {
        if let Err(e) = fs::remove_tree(dir) {
            first.get_or_insert(e);
        } else {
            log::info!("removed cgroup {} of stale workload {name}", dir.display());
        }
    }
    first.map_or(Ok(()), Err)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cgroup::tests::{fake_v1, fake_v2};
    use crate::cgroup::{PidsLimit, WorkloadCgroups};

    fn refused(layout: &Layout, name: &str, pids: &Path, v2: &Path) -> String {
        match reclaim(layout, name, pids, v2) {
            Err(e @ CgroupError::NotAWorkloadCgroup { .. }) => e.to_string(),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn what_the_record_names_goes_whichever_part_exists() {
        let (t, layout, cfg) = fake_v1("reclaim");
        for missing in [None, Some("pids"), Some("unified"), Some("both")] {
            let wl = WorkloadCgroups::create(&layout, &cfg, "web", PidsLimit::Max(5)).unwrap();
            let (pids, v2) = (wl.pids_dir().to_owned(), wl.v2_dir().to_owned());
            drop(wl); // the killed moat run's lock went with it
            match missing {
                Some("pids") => std::fs::remove_dir_all(&pids).unwrap(),
                Some("unified") => std::fs::remove_dir_all(&v2).unwrap(),
                Some(_) => {
                    std::fs::remove_dir_all(&pids).unwrap();
                    std::fs::remove_dir_all(&v2).unwrap();
                }
                None => {}
            }
            reclaim(&layout, "web", &pids, &v2).unwrap();
            assert!(!pids.exists() && !v2.exists(), "{missing:?}");
            // The parents stay.
            assert!(t.path().join("pids/moat").is_dir());
            assert!(t.path().join("unified/moat").is_dir());
        }
        // A record that names no cgroup (killed before it knew them).
        reclaim(&layout, "web", Path::new(""), Path::new("")).unwrap();
    }

    #[test]
    fn a_live_owner_keeps_its_cgroups() {
        let (_t, layout, cfg) = fake_v2("reclaim-live");
        let wl = WorkloadCgroups::create(&layout, &cfg, "web", PidsLimit::Inherit).unwrap();
        let e = reclaim(&layout, "web", wl.pids_dir(), wl.v2_dir()).unwrap_err();
        assert!(
            e.to_string().contains("a moat process holds its lock"),
            "{e}"
        );
        assert!(wl.v2_dir().is_dir());
    }

    #[test]
    fn only_workload_cgroups_inside_the_mounts_are_touched() {
        let (t, layout, cfg) = fake_v1("reclaim-bad");
        let wl = WorkloadCgroups::create(&layout, &cfg, "web", PidsLimit::Inherit).unwrap();
        let (pids, v2) = (wl.pids_dir().to_owned(), wl.v2_dir().to_owned());
        drop(wl);
        let unified = t.path().join("unified");
        let other = unified.join("other");
        std::fs::create_dir(&other).unwrap();
        for (dir, why) in [
            (unified.join("moat/../other"), "contains \"..\""),
            (
                t.path().join("elsewhere/moat/web"),
                "not inside the cgroup mount",
            ),
            (unified.join("web"), "not below a parent cgroup"),
            (unified.clone(), "not below a parent cgroup"),
            (
                unified.join("moat/other"),
                "not named after the workload \"web\"",
            ),
            (unified.join("moat/.hidden/web"), "component \".hidden\""),
            (PathBuf::from("moat/web"), "not inside the cgroup mount"),
        ] {
            let e = refused(&layout, "web", &pids, &dir);
            assert!(e.starts_with(&dir.display().to_string()), "{e}");
            assert!(e.contains(why), "{why:?} not in {e}");
            // Nothing was touched, not even the valid half.
            assert!(pids.is_dir() && v2.is_dir() && other.is_dir());
        }
        // The pids directory is checked against the pids mount.
        let e = refused(&layout, "web", &v2, &v2);
        assert!(e.contains("not inside the cgroup mount"), "{e}");
        reclaim(&layout, "web", &pids, &v2).unwrap();
    }
}
