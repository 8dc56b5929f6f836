//! Where moat's cgroups go ([`CgroupConfig`]) and how many tasks a workload
//! may have ([`PidsLimit`]).

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

/// Where moat's cgroups go and the cap shared by all workloads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CgroupConfig {
    /// Where cgroup file systems are mounted; used to prefer the host's
    /// standard mounts when the mount table lists several. Default
    /// `/sys/fs/cgroup`.
    pub mount_root: PathBuf,
    /// The cgroup (relative to each hierarchy's root, `/`-separated) under
    /// which every workload's cgroups are created. Default `moat`.
    pub parent: String,
    /// `pids.max` written to the parent when moat creates it: the most
    /// tasks all workloads together may have. An existing parent's limit is
    /// left as the administrator set it. Default 512.
    pub parent_pids_max: u64,
}

impl Default for CgroupConfig {
    fn default() -> Self {
        CgroupConfig {
            mount_root: PathBuf::from("/sys/fs/cgroup"),
            parent: "moat".to_owned(),
            parent_pids_max: 512,
        }
    }
}

/// A workload's own pids limit. The limit counts tasks (threads as well as
/// processes), like every pids cgroup limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PidsLimit {
    /// No limit of its own: its `pids.max` is left at the kernel's default
    /// `max`, and the parent's cap applies.
    Inherit,
    /// Explicitly no limit of its own (`max` is written). Limits are
    /// hierarchical, so the parent's cap still applies: no cgroup below the
    /// parent can exceed it.
    Unlimited,
    /// At most this many tasks (positive).
    Max(u64),
}

impl fmt::Display for PidsLimit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PidsLimit::Inherit => f.write_str("inherit"),
            PidsLimit::Unlimited => f.write_str("unlimited"),
            PidsLimit::Max(n) => write!(f, "{n}"),
        }
    }
}

/// A `--pids-limit` value that is neither `unlimited` nor a positive integer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "invalid pids limit {input:?}: expected \"unlimited\" or a positive integer \
     (the most tasks, threads included, the workload may have at once)"
)]
pub struct ParsePidsLimitError {
    /// The text given.
    pub input: String,
}

impl FromStr for PidsLimit {
    type Err = ParsePidsLimitError;

    /// Accepts `unlimited` or a positive integer. `0` is refused: it would
    /// forbid every fork, and Docker users read it as "no limit".
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s == "unlimited" {
            return Ok(PidsLimit::Unlimited);
        }
        match s.parse::<u64>() {
            Ok(n) if n > 0 => Ok(PidsLimit::Max(n)),
            _ => Err(ParsePidsLimitError {
                input: s.to_owned(),
            }),
        }
    }
}

/// Which program makes and removes the workloads' cgroups.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CgroupManager {
    /// systemd: each workload is a transient scope unit, made over D-Bus.
    Systemd,
    /// moat itself, writing the cgroup file system.
    Cgroupfs,
}

impl fmt::Display for CgroupManager {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            CgroupManager::Systemd => "systemd",
            CgroupManager::Cgroupfs => "cgroupfs",
        })
    }
}

impl FromStr for CgroupManager {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "systemd" => Ok(CgroupManager::Systemd),
            "cgroupfs" => Ok(CgroupManager::Cgroupfs),
            _ => Err(format!(
                "invalid cgroup manager {s:?}: expected \"systemd\" or \"cgroupfs\""
            )),
        }
    }
}
