//! One workload's cgroups: where they are, joining them and reading their
//! counters. Creating them is in `create.rs`, killing their processes in
//! `kill.rs`.

use std::fs::{File, OpenOptions};
use std::os::fd::OwnedFd;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use nix::fcntl::Flock;

use super::config::CgroupConfig;
use super::controller::{PidsController, Version};
use super::error::{CgroupError, Operation};
use super::fs;
use super::layout::Layout;
use super::names::{parent_path, validate_name};

/// One workload's cgroups: its pids cgroup and its v2 identity cgroup (the
/// same directory when pids is on v2).
///
/// A value made by [`WorkloadCgroups::create`] holds an exclusive `flock` on
/// the identity directory for as long as it lives. That is how a later
/// `create` of the same name tells a live workload (error) from a leftover
/// of a crashed moat (removed if it has no processes). Dropping the value
/// does not remove the cgroups; [`WorkloadCgroups::remove`] does.
#[derive(Debug)]
pub struct WorkloadCgroups {
    pub(super) name: String,
    pub(super) controller: Box<dyn PidsController>,
    pub(super) pids_dir: PathBuf,
    pub(super) v2_dir: PathBuf,
    pub(super) _lock: Option<Flock<File>>,
}

impl WorkloadCgroups {
    /// The (unlocked) cgroups of workload `name` under `cfg.parent`, which
    /// is returned as a relative path; nothing is touched on disk.
    pub(super) fn at(
        layout: &Layout,
        cfg: &CgroupConfig,
        name: &str,
    ) -> Result<(Self, PathBuf), CgroupError> {
        validate_name(name)?;
        let parent = parent_path(cfg)?;
        let controller = layout.pids.controller();
        let wl = WorkloadCgroups {
            name: name.to_owned(),
            pids_dir: controller.mount().join(&parent).join(name),
            v2_dir: layout.v2_mount.join(&parent).join(name),
            controller,
            _lock: None,
        };
        Ok((wl, parent))
    }

    /// Where [`WorkloadCgroups::create`] would make the cgroups of workload
    /// `name`: its pids cgroup and its identity cgroup (the same directory
    /// when pids is on v2). Nothing is touched on disk; moat records these
    /// before it creates them.
    pub fn paths(
        layout: &Layout,
        cfg: &CgroupConfig,
        name: &str,
    ) -> Result<(PathBuf, PathBuf), CgroupError> {
        let (wl, _) = WorkloadCgroups::at(layout, cfg, name)?;
        Ok((wl.pids_dir, wl.v2_dir))
    }

    /// Re-opens an existing workload's cgroups (for `moat ps` and stale
    /// cleanup). Errors with [`CgroupError::NotFound`] if either directory
    /// is missing. Takes no lock.
    pub fn open(layout: &Layout, cfg: &CgroupConfig, name: &str) -> Result<Self, CgroupError> {
        let (wl, _) = WorkloadCgroups::at(layout, cfg, name)?;
        for dir in wl.dirs() {
            if !dir.is_dir() {
                return Err(CgroupError::NotFound {
                    path: dir.to_owned(),
                });
            }
        }
        Ok(wl)
    }

    /// The workload's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The workload's pids cgroup directory.
    pub fn pids_dir(&self) -> &Path {
        &self.pids_dir
    }

    /// The workload's identity cgroup directory on the unified hierarchy.
    pub fn v2_dir(&self) -> &Path {
        &self.v2_dir
    }

    /// Whether the pids controller is on the unified hierarchy.
    pub fn pids_on_v2(&self) -> bool {
        self.controller.version() == Version::V2
    }

    pub(super) fn is_shared(&self) -> bool {
        self.pids_dir == self.v2_dir
    }

    /// The distinct directories: pids first, then identity.
    pub(super) fn dirs(&self) -> Vec<&Path> {
        if self.is_shared() {
            vec![&self.v2_dir]
        } else {
            vec![&self.pids_dir, &self.v2_dir]
        }
    }

    /// An `O_PATH|O_DIRECTORY|O_CLOEXEC` descriptor of the identity cgroup,
    /// for `clone3(CLONE_INTO_CGROUP)`.
    pub fn v2_fd(&self) -> Result<OwnedFd, CgroupError> {
        // std adds O_CLOEXEC to every open.
        let file = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_PATH | libc::O_DIRECTORY)
            .open(&self.v2_dir)
            .map_err(|e| CgroupError::io(Operation::Open, &self.v2_dir, e))?;
        Ok(OwnedFd::from(file))
    }

    /// The v2 cgroup id: the inode number of the identity directory, which
    /// on 64-bit kernels is the kernfs node id that
    /// `bpf_get_current_cgroup_id()` returns.
    pub fn v2_id(&self) -> Result<u64, CgroupError> {
        std::fs::metadata(&self.v2_dir)
            .map(|m| m.ino())
            .map_err(|e| CgroupError::io(Operation::Stat, &self.v2_dir, e))
    }

    /// Moves `pid` into every cgroup of the workload: the pids cgroup first
    /// (so the limit applies before anything else), then the identity
    /// cgroup if it is another directory.
    pub fn join(&self, pid: i32) -> Result<(), CgroupError> {
        check_pid(pid)?;
        for dir in self.dirs() {
            fs::write(&dir.join("cgroup.procs"), &pid.to_string())?;
        }
        Ok(())
    }

    /// Moves `pid` into the pids cgroup only, for a process that
    /// `clone3(CLONE_INTO_CGROUP)` already placed in the identity cgroup. A
    /// no-op when pids is on v2 (the identity cgroup is the pids cgroup).
    pub fn join_pids_only(&self, pid: i32) -> Result<(), CgroupError> {
        check_pid(pid)?;
        if self.is_shared() {
            return Ok(());
        }
        fs::write(&self.pids_dir.join("cgroup.procs"), &pid.to_string())
    }

    /// Tasks charged to the pids cgroup now (`pids.current`). Zombies count
    /// until they are reaped.
    pub fn pids_current(&self) -> Result<u64, CgroupError> {
        self.controller.current(&self.pids_dir)
    }

    /// The workload's own `pids.max`; `None` for `max` (the parent's cap
    /// still applies).
    pub fn pids_limit(&self) -> Result<Option<u64>, CgroupError> {
        self.controller.max(&self.pids_dir)
    }

    /// How often the limit was hit: the `max` line of `pids.events`.
    ///
    /// With a limit of its own both versions count the workload's refused
    /// forks. They differ for forks refused by the *parent's* cap: v1 counts
    /// them here (forks that failed in this cgroup), v2 (Linux 6.10 and
    /// later) counts them in the parent (whose limit was hit).
    pub fn limit_hits(&self) -> Result<u64, CgroupError> {
        self.controller.limit_hits(&self.pids_dir)
    }

    /// Removes the workload's cgroup directories (`rmdir`, retried for a
    /// moment on `EBUSY`), with any cgroups made below them, children
    /// first. Never removes the parent. A directory already gone counts as
    /// removed; every directory is attempted even if one fails, and the
    /// first failure is returned.
    pub fn remove(self) -> Result<(), CgroupError> {
        let mut first = None;
        for dir in self.dirs() {
            if let Err(e) = fs::remove_tree(dir) {
                first.get_or_insert(e);
            }
        }
        first.map_or(Ok(()), Err)
    }
}

pub(super) fn check_pid(pid: i32) -> Result<(), CgroupError> {
    if pid <= 0 {
        return Err(CgroupError::InvalidPid { pid });
    }
    Ok(())
}
