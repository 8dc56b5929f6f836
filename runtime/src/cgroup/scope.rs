//! A workload in a systemd scope: the transient unit `moat-<name>.scope`
//! in a slice (`moat.slice` by default), on the unified hierarchy. systemd
//! makes and removes the scope's cgroup; the scope delegates it
//! (`Delegate=yes`), and moat makes the workload's own cgroup
//! [`SCOPE_PAYLOAD`] in it, next to the leaf where moat's keeper holds the
//! scope open.

use std::path::{Component, Path, PathBuf};

use super::create::try_lock;
use super::error::CgroupError;
use super::fs;
use super::layout::{Layout, PidsLocation};
use super::names::validate_name;
use crate::systemd;

/// The workload's own cgroup in its scope: the identity and pids cgroup.
pub const SCOPE_PAYLOAD: &str = moat_api::defaults::MOAT_SCOPE_PAYLOAD;

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

/// Checks that `dir`, recorded as the cgroup of workload `name` in its
/// scope `unit`, is one: `unit` is `moat-<name>.scope`, and `dir` is
/// [`SCOPE_PAYLOAD`] of that unit's cgroup inside the unified mount, below
/// slices only, without `..`.
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
    match parts.as_slice() {
        [slices @ .., scope, payload] if *scope == unit && *payload == SCOPE_PAYLOAD => {
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
        _ => Err(refuse(format!(
            "it is not the cgroup {SCOPE_PAYLOAD} of {unit}"
        ))),
    }
}

/// Whether a live moat process holds the ownership lock of the workload
/// cgroup `dir` (`Ok(false)` also when `dir` is gone). The lock is held
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

/// Removes the cgroup `dir` of a scope systemd no longer knows, if no
/// process is left anywhere in it (an error naming one otherwise).
pub fn remove_empty_scope(dir: &Path) -> Result<(), CgroupError> {
    for d in fs::subtree(dir)? {
        let procs = fs::read_procs(&d)?;
        if !procs.is_empty() {
            return Err(CgroupError::AlreadyExists {
                path: d,
                reason: format!("its unit is gone but it still has processes {procs:?}"),
            });
        }
    }
    fs::remove_tree(dir)
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
        let ok = Path::new("/sys/fs/cgroup/moat.slice/moat-web.scope/payload");
        check_recorded_scope(&layout, "web", "moat-web.scope", ok).unwrap();
        check_recorded_scope(
            &layout,
            "web",
            "moat-web.scope",
            Path::new("/sys/fs/cgroup/moat.slice/moat-ci.slice/moat-web.scope/payload"),
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
                "/sys/fs/cgroup/moat.slice/moat-web.scope",
                "not the cgroup payload of moat-web.scope",
            ),
            (
                "moat-web.scope",
                "/sys/fs/cgroup/moat.slice/moat-web.scope/supervisor",
                "not the cgroup payload of moat-web.scope",
            ),
            (
                "moat-web.scope",
                "/sys/fs/cgroup/system.slice/sshd.service/payload",
                "not the cgroup payload of moat-web.scope",
            ),
            (
                "moat-web.scope",
                "/sys/fs/cgroup/moat-web.scope/payload",
                "not inside a slice",
            ),
            (
                "moat-web.scope",
                "/sys/fs/cgroup/moat.slice/../moat-web.scope/payload",
                "\"..\"",
            ),
            (
                "moat-web.scope",
                "/sys/fs/cgroup/x/moat-ci.slice/moat-web.scope/payload",
                "not the cgroup of slice moat-ci.slice",
            ),
            (
                "moat-web.scope",
                "/elsewhere/moat.slice/moat-web.scope/payload",
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
    fn a_locked_workload_cgroup_is_in_use() {
        let t = tempfile::tempdir().unwrap();
        let dir = t.path().join("moat.slice/moat-web.scope/payload");
        std::fs::create_dir_all(&dir).unwrap();
        assert!(!scope_in_use(&dir).unwrap());
        let lock = try_lock(&dir).unwrap().unwrap();
        assert!(scope_in_use(&dir).unwrap());
        drop(lock);
        assert!(!scope_in_use(&dir).unwrap());
        assert!(!scope_in_use(&t.path().join("gone")).unwrap());
    }
}
