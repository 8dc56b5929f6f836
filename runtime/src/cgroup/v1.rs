//! The pids controller on a cgroup v1 hierarchy of its own
//! (`/sys/fs/cgroup/pids` on hybrid hosts).

use std::path::{Path, PathBuf};

use super::controller::{PidsController, Version};
use super::error::CgroupError;

/// The pids controller bound to a v1 hierarchy mounted at `mount`.
#[derive(Debug, Clone)]
pub struct V1Pids {
    mount: PathBuf,
}

impl V1Pids {
    /// The controller of the hierarchy mounted at `mount`.
    pub fn new(mount: PathBuf) -> Self {
        V1Pids { mount }
    }
}

impl PidsController for V1Pids {
    fn version(&self) -> Version {
        Version::V1
    }

    fn mount(&self) -> &Path {
        &self.mount
    }

    /// On v1 every cgroup of the hierarchy has the controller's files.
    fn delegate(&self, _dir: &Path) -> Result<bool, CgroupError> {
        Ok(false)
    }

    // `limit_hits`: on v1, `pids.events` `max` counts forks that failed in
    // this cgroup because the limit of this cgroup *or an ancestor* was hit,
    // so a workload without a limit of its own still sees the parent's cap.
}
