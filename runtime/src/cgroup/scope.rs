//! A workload whose cgroup systemd owns: the transient scope
//! `moat-<name>.scope` in a slice (`moat.slice` by default), on the
//! unified hierarchy. systemd creates and removes the directory; moat reads
//! its counters, holds its ownership lock and kills what is left in it,
//! like a cgroup of its own (the scope has `Delegate=yes`).

use std::path::{Component, Path, PathBuf};

use super::controller::PidsController;
use super::create::try_lock;
use super::error::CgroupError;
use super::layout::{Layout, PidsLocation};
use super::names::validate_name;
use super::v2::V2Pids;
use super::workload::WorkloadCgroups;
use crate::systemd;

/// The scope's cgroup directory: `<v2 mount>/<slice path>/moat-<name>.scope`.
/// Refused unless pids is on the unified hierarchy: systemd then manages a
/// single hierarchy, and the scope's `TasksMax` is the workload's
/// `pids.max` in its identity cgroup.
pub fn scope_dir(layout: &Layout, slice: &str, name: &str) -> Result<PathBuf, CgroupError> {
    validate_name(name)?;
    if !matches!(layout.pids, PidsLocation::V2 { .. }) {
        return Err(CgroupError::InvalidConfig {
            field: "cgroup_manager",
            reason: format!(
                "the systemd cgroup manager needs the pids controller on the unified \
                 hierarchy (cgroup v2 only); here it is on cgroup v1 at {}: use \
                 --cgroup-manager cgroupfs",
                layout.pids.mount().display()
            ),
        });
    }
    let rel = systemd::slice_path(slice).map_err(|reason| CgroupError::InvalidConfig {
        field: "parent",
        reason,
    })?;
    Ok(layout.v2_mount.join(rel).join(systemd::scope_name(name)))
}

/// Checks that `dir`, recorded as the scope `unit` of workload `name`, is
/// one: `unit` is `moat-<name>.scope`, and `dir` is that unit inside the
/// unified mount, below slices only, without `..`.
pub fn check_recorded_scope(
    layout: &Layout,
    name: &str,
    unit: &str,
    dir: &Path,
) -> Result<(), CgroupError> {
    let refuse = |reason: String| CgroupError::NotAWorkloadCgroup {
        path: dir.to_owned(),
        reason,
    };
    if unit != systemd::scope_name(name) {
        return Err(refuse(format!(
            "its unit {unit:?} is not the workload's scope {:?}",
            systemd::scope_name(name)
        )));
    }
    if dir
        .components()
        .any(|c| matches!(c, Component::ParentDir | Component::CurDir))
    {
        return Err(refuse("it contains \"..\" or \".\"".to_owned()));
    }
    let rel = dir.strip_prefix(&layout.v2_mount).map_err(|_| {
        refuse(format!(
            "it is not inside the cgroup mount {}",
            layout.v2_mount.display()
        ))
    })?;
    let parts: Vec<&str> = rel
        .components()
        .map(|c| c.as_os_str().to_str().unwrap_or("\u{fffd}"))
        .collect();
    let Some((last, slices)) = parts.split_last() else {
        return Err(refuse("it is the root of the hierarchy".to_owned()));
    };
    if *last != unit {
        return Err(refuse(format!("it is not the cgroup of {unit}")));
    }
    let Some(slice) = slices.last() else {
        return Err(refuse("it is not inside a slice".to_owned()));
    };
    match systemd::slice_path(slice) {
        Ok(path) if path == slices.join("/") => Ok(()),
        _ => Err(refuse(format!(
            "{} is not the cgroup of slice {slice}",
            slices.join("/")
        ))),
    }
}

impl WorkloadCgroups {
    /// The cgroups of workload `name` in the scope directory `dir` that
    /// systemd made (pids and identity are that one directory), with the
    /// ownership lock taken, as [`WorkloadCgroups::create`] takes it.
    pub fn adopt_scope(layout: &Layout, name: &str, dir: &Path) -> Result<Self, CgroupError> {
        validate_name(name)?;
        let controller: Box<dyn PidsController> = Box::new(V2Pids::new(layout.v2_mount.clone()));
        let lock = try_lock(dir)?.ok_or_else(|| CgroupError::AlreadyExists {
            path: dir.to_owned(),
            reason: "another moat process holds its lock".to_owned(),
        })?;
        Ok(WorkloadCgroups {
            name: name.to_owned(),
            controller,
            pids_dir: dir.to_owned(),
            v2_dir: dir.to_owned(),
            _lock: Some(lock),
        })
    }
}

/// Whether a live moat process holds the ownership lock of the scope
/// directory `dir` (`Ok(false)` also when `dir` is gone). The lock is held
/// while the probe runs, then released.
pub fn scope_in_use(dir: &Path) -> Result<bool, CgroupError> {
    if !dir.is_dir() {
        return Ok(false);
    }
    match try_lock(dir) {
        Ok(lock) => Ok(lock.is_none()),
        Err(CgroupError::Io { error, .. }) if error.kind() == std::io::ErrorKind::NotFound => {
            Ok(false)
        }
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v2(root: &Path) -> Layout {
        Layout {
            pids: PidsLocation::V2 {
                mount: root.to_owned(),
            },
            v2_mount: root.to_owned(),
        }
    }

    #[test]
    fn the_scope_is_in_the_slice_systemd_makes() {
        let layout = v2(Path::new("/sys/fs/cgroup"));
        assert_eq!(
            scope_dir(&layout, "moat.slice", "web").unwrap(),
            Path::new("/sys/fs/cgroup/moat.slice/moat-web.scope")
        );
        assert_eq!(
            scope_dir(&layout, "moat-ci.slice", "web").unwrap(),
            Path::new("/sys/fs/cgroup/moat.slice/moat-ci.slice/moat-web.scope")
        );
        let e = scope_dir(&layout, "moat", "web").unwrap_err().to_string();
        assert!(e.contains("not a slice unit name"), "{e}");
        let hybrid = Layout {
            pids: PidsLocation::V1 {
                mount: "/sys/fs/cgroup/pids".into(),
            },
            v2_mount: "/sys/fs/cgroup/unified".into(),
        };
        let e = scope_dir(&hybrid, "moat.slice", "web")
            .unwrap_err()
            .to_string();
        assert!(e.contains("cgroup v1 at /sys/fs/cgroup/pids"), "{e}");
        assert!(e.contains("--cgroup-manager cgroupfs"), "{e}");
    }

    #[test]
    fn a_record_can_only_name_its_own_scope_below_slices() {
        let layout = v2(Path::new("/sys/fs/cgroup"));
        let ok = Path::new("/sys/fs/cgroup/moat.slice/moat-web.scope");
        check_recorded_scope(&layout, "web", "moat-web.scope", ok).unwrap();
        check_recorded_scope(
            &layout,
            "web",
            "moat-web.scope",
            Path::new("/sys/fs/cgroup/moat.slice/moat-ci.slice/moat-web.scope"),
        )
        .unwrap();
        for (unit, dir, why) in [
            (
                "sshd.service",
                ok.to_str().unwrap(),
                "not the workload's scope",
            ),
            (
                "moat-db.scope",
                ok.to_str().unwrap(),
                "not the workload's scope",
            ),
            (
                "moat-web.scope",
                "/sys/fs/cgroup/system.slice/sshd.service",
                "not the cgroup of moat-web.scope",
            ),
            (
                "moat-web.scope",
                "/sys/fs/cgroup/moat-web.scope",
                "not inside a slice",
            ),
            (
                "moat-web.scope",
                "/sys/fs/cgroup/moat.slice/../moat-web.scope",
                "\"..\"",
            ),
            (
                "moat-web.scope",
                "/sys/fs/cgroup/x/moat-ci.slice/moat-web.scope",
                "not the cgroup of slice moat-ci.slice",
            ),
            (
                "moat-web.scope",
                "/elsewhere/moat.slice/moat-web.scope",
                "not inside the cgroup mount",
            ),
        ] {
            let e = check_recorded_scope(&layout, "web", unit, Path::new(dir))
                .unwrap_err()
                .to_string();
            assert!(e.contains(why), "{unit} {dir}: {e}");
        }
    }

    #[test]
    fn an_adopted_scope_is_locked_against_reclaim() {
        let t = tempfile::tempdir().unwrap();
        let layout = v2(t.path());
        let dir = t.path().join("moat.slice/moat-web.scope");
        std::fs::create_dir_all(&dir).unwrap();
        assert!(!scope_in_use(&dir).unwrap());
        let wl = WorkloadCgroups::adopt_scope(&layout, "web", &dir).unwrap();
        assert!(scope_in_use(&dir).unwrap());
        assert_eq!(wl.v2_dir(), dir);
        assert_eq!(wl.pids_dir(), dir);
        assert!(wl.pids_on_v2());
        drop(wl);
        assert!(!scope_in_use(&dir).unwrap());
        assert!(!scope_in_use(&t.path().join("gone")).unwrap());
    }
}
