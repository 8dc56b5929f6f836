//! Where the cgroup hierarchies are mounted: a fact of the running kernel that the
//! loader (for the programs' cgroup keys) and the collector (for attribution and
//! the pids cgroups) both need.

use std::path::{Path, PathBuf};

/// Where the hierarchies attribution reads are mounted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CgroupLayout {
    /// The unified (v2) hierarchy.
    pub v2_mount: PathBuf,
    /// The hierarchy the pids controller is on (the v2 mount when pids is on v2),
    /// if any.
    pub pids_mount: Option<PathBuf>,
}

impl CgroupLayout {
    /// Finds the layout from the mount table, preferring mounts under `cgroup_root`.
    /// Without a pids controller, `pids_mount` is `None`; without a v2 mount, the
    /// conventional path is assumed (`<root>/unified` if it exists, else `<root>`).
    pub fn detect(cgroup_root: &Path) -> CgroupLayout {
        let cfg = moat_runtime::cgroup::CgroupConfig {
            mount_root: cgroup_root.to_owned(),
            ..Default::default()
        };
        match moat_runtime::cgroup::detect(&cfg) {
            Ok(layout) => CgroupLayout {
                v2_mount: layout.v2_mount.clone(),
                pids_mount: Some(layout.pids.mount().to_owned()),
            },
            Err(err) => {
                log::warn!("cgroup layout: {err}; pids cgroups will not be read");
                let unified = cgroup_root.join("unified");
                let v2_mount = if unified.join("cgroup.controllers").exists() {
                    unified
                } else {
                    cgroup_root.to_owned()
                };
                CgroupLayout {
                    v2_mount,
                    pids_mount: None,
                }
            }
        }
    }
}
