//! The pids controller behind one trait, whichever hierarchy it is bound to
//! (as youki's libcgroups does for every controller). The interface files
//! (`pids.max`, `pids.current`, `pids.events`) are the same on v1 and v2;
//! what differs is how the controller is made available to a cgroup and
//! what `pids.events` counts.

use std::fmt;
use std::path::Path;

use super::error::CgroupError;
use super::fs;

/// Which cgroup version a hierarchy speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    /// A legacy hierarchy with the pids controller bound to it.
    V1,
    /// The unified hierarchy.
    V2,
}

/// The pids controller on one hierarchy. Directories passed in are absolute
/// paths inside [`PidsController::mount`].
pub trait PidsController: fmt::Debug + Send + Sync {
    /// The hierarchy's version.
    fn version(&self) -> Version;

    /// Where the hierarchy is mounted.
    fn mount(&self) -> &Path;

    /// Makes the controller available to the children of `dir` (the mount
    /// itself or a cgroup below it), so that they get `pids.*` files.
    /// Returns whether anything changed.
    fn delegate(&self, dir: &Path) -> Result<bool, CgroupError>;

    /// Sets `pids.max` of `dir`; `None` writes `max` (no limit of its own).
    fn set_max(&self, dir: &Path, max: Option<u64>) -> Result<(), CgroupError> {
        let value = max.map_or_else(|| "max".to_owned(), |n| n.to_string());
        fs::write(&dir.join("pids.max"), &value)
    }

    /// Reads `pids.max` of `dir`; `None` for `max`.
    fn max(&self, dir: &Path) -> Result<Option<u64>, CgroupError> {
        fs::read_max(&dir.join("pids.max"))
    }

    /// Reads `pids.current` of `dir`: tasks charged to it and its
    /// descendants, including zombies not yet reaped.
    fn current(&self, dir: &Path) -> Result<u64, CgroupError> {
        fs::read_u64(&dir.join("pids.current"))
    }

    /// The `max` count of `pids.events` of `dir`. See the implementations
    /// for what it counts: v1 and v2 differ since Linux 6.10.
    fn limit_hits(&self, dir: &Path) -> Result<u64, CgroupError> {
        fs::read_key(&dir.join("pids.events"), "max")
    }
}
