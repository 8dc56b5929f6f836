//! Finding the host's cgroup layout: where the pids controller and the
//! unified hierarchy are mounted.

use std::path::{Path, PathBuf};

use super::config::CgroupConfig;
use super::controller::PidsController;
use super::error::CgroupError;
use super::{fs, mountinfo, v1, v2};

/// The hierarchy the pids controller is bound to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PidsLocation {
    /// A cgroup v1 hierarchy mounted at `mount`.
    V1 {
        /// Its mount point.
        mount: PathBuf,
    },
    /// The unified hierarchy mounted at `mount`.
    V2 {
        /// Its mount point.
        mount: PathBuf,
    },
}

impl PidsLocation {
    /// The mount point of the hierarchy.
    pub fn mount(&self) -> &Path {
        match self {
            PidsLocation::V1 { mount } | PidsLocation::V2 { mount } => mount,
        }
    }

    pub(super) fn controller(&self) -> Box<dyn PidsController> {
        match self {
            PidsLocation::V1 { mount } => Box::new(v1::V1Pids::new(mount.clone())),
            PidsLocation::V2 { mount } => Box::new(v2::V2Pids::new(mount.clone())),
        }
    }
}

/// The host's cgroup layout as far as moat needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    /// Where the pids controller is.
    pub pids: PidsLocation,
    /// Where the unified (v2) hierarchy is mounted.
    pub v2_mount: PathBuf,
}

/// Finds the layout from `/proc/self/mountinfo` (and `/proc/cgroups`, to
/// explain a missing pids controller). See [`detect_from`].
pub fn detect(cfg: &CgroupConfig) -> Result<Layout, CgroupError> {
    let mountinfo = Path::new("/proc/self/mountinfo");
    let text = fs::read(mountinfo)?;
    // Only read to explain a missing controller, so a failure to read it
    // is no error.
    detect_with(&text, || std::fs::read_to_string("/proc/cgroups").ok(), cfg)
}

/// Finds the layout from the text of a mount table.
///
/// pids is on v1 if a `cgroup` mount has `pids` among its super options;
/// otherwise on the `cgroup2` mount if its `cgroup.controllers` lists it.
/// When a table has several candidates, a mount at `<mount_root>/unified` or
/// `<mount_root>` (for cgroup2), or else anywhere under `mount_root`, is
/// preferred. `proc_cgroups`, the text of `/proc/cgroups`, only serves to
/// say why pids is missing.
pub fn detect_from(
    mountinfo: &str,
    proc_cgroups: Option<&str>,
    cfg: &CgroupConfig,
) -> Result<Layout, CgroupError> {
    detect_with(mountinfo, || proc_cgroups.map(str::to_owned), cfg)
}

/// [`detect_from`], getting the text of `/proc/cgroups` only when it is
/// needed: to say why pids is missing.
fn detect_with(
    mountinfo: &str,
    proc_cgroups: impl FnOnce() -> Option<String>,
    cfg: &CgroupConfig,
) -> Result<Layout, CgroupError> {
    let mounts = mountinfo::parse(mountinfo);
    let root = &cfg.mount_root;
    let under_root = |m: &&&mountinfo::Mount| m.mount_point.starts_with(root);

    let v2: Vec<&mountinfo::Mount> = mounts.iter().filter(|m| m.fs_type == "cgroup2").collect();
    let v2_mount = [root.join("unified"), root.clone()]
        .iter()
        .find_map(|p| v2.iter().find(|m| &m.mount_point == p))
        .or_else(|| v2.iter().find(under_root))
        .or_else(|| v2.first())
        .map(|m| m.mount_point.clone());
    let has_v1 = mounts.iter().any(|m| m.fs_type == "cgroup");
    let Some(v2_mount) = v2_mount else {
        return Err(CgroupError::NoCgroup2 {
            mountinfo: PathBuf::from("/proc/self/mountinfo"),
            // Next to v1 hierarchies, cgroup2 conventionally goes to
            // `unified`; alone, it owns the root.
            suggested_mount: if has_v1 {
                root.join("unified")
            } else {
                root.clone()
            },
        });
    };

    let v1_pids: Vec<&mountinfo::Mount> = mounts
        .iter()
        .filter(|m| m.fs_type == "cgroup" && m.has_super_option("pids"))
        .collect();
    if let Some(m) = v1_pids.iter().find(under_root).or_else(|| v1_pids.first()) {
        return Ok(Layout {
            pids: PidsLocation::V1 {
                mount: m.mount_point.clone(),
            },
            v2_mount,
        });
    }

    let controllers = v2_mount.join("cgroup.controllers");
    if fs::list_contains(&controllers, "pids")? {
        return Ok(Layout {
            pids: PidsLocation::V2 {
                mount: v2_mount.clone(),
            },
            v2_mount,
        });
    }
    Err(CgroupError::NoPidsController {
        reason: why_no_pids(proc_cgroups().as_deref(), &controllers, root),
    })
}

/// Explains a missing pids controller from `/proc/cgroups`
/// (`subsys_name hierarchy num_cgroups enabled`).
fn why_no_pids(proc_cgroups: Option<&str>, controllers: &Path, root: &Path) -> String {
    let not_listed = format!(
        "no cgroup v1 mount has it and {} does not list it",
        controllers.display()
    );
    let Some(text) = proc_cgroups else {
        return not_listed;
    };
    let line = text
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .find(|f| f.first() == Some(&"pids"));
    match line.as_deref() {
        None => "the kernel has no pids controller (no `pids` line in /proc/cgroups: \
                 it was built without CONFIG_CGROUP_PIDS)"
            .to_owned(),
        Some([_, _, _, "0", ..]) => "the pids controller is disabled on the kernel \
                                     command line (cgroup_disable=pids in /proc/cmdline)"
            .to_owned(),
        Some([_, hierarchy, ..]) if *hierarchy != "0" => format!(
            "{not_listed}; it is bound to cgroup v1 hierarchy {hierarchy}, which is not \
             mounted here: mount it with `mount -t cgroup -o pids none {}`",
            root.join("pids").display()
        ),
        _ => format!(
            "{not_listed}; it is on cgroup v2 but not delegated to this part of the \
             hierarchy (enable it in the parent's cgroup.subtree_control)"
        ),
    }
}
