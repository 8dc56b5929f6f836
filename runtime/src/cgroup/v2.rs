//! The pids controller on the unified (cgroup v2) hierarchy.

use std::path::{Path, PathBuf};

use super::controller::{PidsController, Version};
use super::error::CgroupError;
use super::fs;

/// The pids controller of the cgroup2 hierarchy mounted at `mount`.
#[derive(Debug, Clone)]
pub struct V2Pids {
    mount: PathBuf,
}

impl V2Pids {
    /// The controller of the hierarchy mounted at `mount`.
    pub fn new(mount: PathBuf) -> Self {
        V2Pids { mount }
    }
}

impl PidsController for V2Pids {
    fn version(&self) -> Version {
        Version::V2
    }

    fn mount(&self) -> &Path {
        &self.mount
    }

    /// Writes `+pids` to `cgroup.subtree_control` of `dir` unless it is
    /// there already: on v2 a child only gets `pids.max` when its parent
    /// delegates the controller.
    fn delegate(&self, dir: &Path) -> Result<bool, CgroupError> {
        // A controller the cgroup itself does not have cannot be delegated;
        // say so instead of relaying the kernel's bare ENOENT.
        let controllers = dir.join("cgroup.controllers");
        if !fs::list_contains(&controllers, "pids")? {
            return Err(CgroupError::NoPidsController {
                reason: format!(
                    "{} does not list pids, so it cannot be enabled below it",
                    controllers.display()
                ),
            });
        }
        let subtree = dir.join("cgroup.subtree_control");
        if fs::list_contains(&subtree, "pids")? {
            return Ok(false);
        }
        fs::write(&subtree, "+pids")?;
        Ok(true)
    }

    // `limit_hits`: since Linux 6.10 the v2 `pids.events` `max` counts how
    // often *this cgroup's* limit (or a descendant's) was hit, not forks
    // that failed in it; a fork refused by the parent's cap is counted in
    // the parent. (The `pids_localevents` mount option restores the v1
    // meaning.) A workload with its own limit sees its hits either way.
}
