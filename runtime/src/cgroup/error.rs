//! Errors of the cgroup module. Every variant renders as one line that names
//! the path involved, what was being done and why it failed, so that a user
//! who sees it in `moat run`'s output knows where to look.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

/// What was being done to a cgroup file or directory when an I/O error
/// happened; rendered as the start of the error message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Operation {
    /// Reading a file.
    Read,
    /// Writing `value` to a file.
    Write {
        /// What was written.
        value: String,
    },
    /// Creating a cgroup directory.
    CreateDir,
    /// Removing a cgroup directory.
    RemoveDir,
    /// Opening a file or directory.
    Open,
    /// Taking the ownership lock on a workload's cgroup directory.
    Lock,
    /// Reading a directory's metadata.
    Stat,
    /// Sending SIGKILL to one of the cgroup's processes.
    Kill {
        /// The process.
        pid: i32,
    },
}

impl fmt::Display for Operation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Operation::Read => f.write_str("reading"),
            Operation::Write { value } => write!(f, "writing {value:?} to"),
            Operation::CreateDir => f.write_str("creating cgroup"),
            Operation::RemoveDir => f.write_str("removing cgroup"),
            Operation::Open => f.write_str("opening"),
            Operation::Lock => f.write_str("locking"),
            Operation::Stat => f.write_str("reading metadata of"),
            Operation::Kill { pid } => write!(f, "sending SIGKILL to process {pid} of"),
        }
    }
}

/// Everything that can go wrong when finding, creating, using or removing a
/// workload's cgroups.
#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    /// A file-system operation on a cgroup file or directory failed.
    #[error("{operation} {}: {error}", path.display())]
    Io {
        /// What was being done.
        operation: Operation,
        /// The file or directory.
        path: PathBuf,
        /// The underlying error.
        error: std::io::Error,
    },
    /// A cgroup interface file held something this module cannot read.
    #[error("{}: unexpected content {content:?}: {reason}", path.display())]
    Parse {
        /// The file.
        path: PathBuf,
        /// What it held (trimmed).
        content: String,
        /// What was expected instead.
        reason: &'static str,
    },
    /// The kernel's pids controller is not usable: not mounted on cgroup v1
    /// and not available on the cgroup2 mount.
    #[error("no cgroup pids controller: {reason}")]
    NoPidsController {
        /// Why, and what to do about it.
        reason: String,
    },
    /// There is no cgroup2 mount, which moat needs for the identity cgroup
    /// that eBPF programs see.
    #[error(
        "no cgroup2 file system in {}: moat needs one to give each workload a cgroup id; \
         mount it with `mount -t cgroup2 none {}`",
        mountinfo.display(),
        suggested_mount.display()
    )]
    NoCgroup2 {
        /// The mount table that was read.
        mountinfo: PathBuf,
        /// Where it would normally be mounted.
        suggested_mount: PathBuf,
    },
    /// The workload name cannot be used as a cgroup directory name.
    #[error("invalid workload name {name:?}: {reason}")]
    InvalidName {
        /// The name given.
        name: String,
        /// Why it is refused.
        reason: &'static str,
    },
    /// A field of [`CgroupConfig`](super::CgroupConfig) is unusable.
    #[error("invalid cgroup configuration: {field}: {reason}")]
    InvalidConfig {
        /// The field.
        field: &'static str,
        /// Why it is refused.
        reason: String,
    },
    /// A pids limit the kernel would refuse or that would make the workload
    /// unable to start.
    #[error("invalid pids limit {limit}: {reason}")]
    InvalidLimit {
        /// The limit given.
        limit: u64,
        /// Why it is refused.
        reason: &'static str,
    },
    /// A process id that cannot be moved into a cgroup (writing 0 would move
    /// the caller itself).
    #[error("invalid process id {pid}: expected a positive pid")]
    InvalidPid {
        /// The pid given.
        pid: i32,
    },
    /// A cgroup for this workload name already exists and is not a leftover
    /// that could be removed.
    #[error("{}: workload cgroup already exists: {reason}", path.display())]
    AlreadyExists {
        /// The existing directory.
        path: PathBuf,
        /// Why it was not taken over.
        reason: String,
    },
    /// A state record names a directory that is not a workload cgroup;
    /// moat neither kills anything in it nor removes it.
    #[error("{}: not a workload cgroup, so moat leaves it alone: {reason}", path.display())]
    NotAWorkloadCgroup {
        /// The directory as recorded.
        path: PathBuf,
        /// Why it is not one.
        reason: String,
    },
    /// A workload's cgroup directory is missing.
    #[error("{}: no such workload cgroup", path.display())]
    NotFound {
        /// The missing directory.
        path: PathBuf,
    },
    /// Processes were still alive in a workload cgroup after killing them.
    #[error(
        "{}: {} process(es) still alive {waited:?} after SIGKILL: {remaining:?}",
        path.display(),
        remaining.len()
    )]
    KillTimeout {
        /// The cgroup.
        path: PathBuf,
        /// How long `kill_all` waited.
        waited: Duration,
        /// The pids still listed in its `cgroup.procs`.
        remaining: Vec<i32>,
    },
    /// Creating a workload's cgroups failed and undoing the partial work
    /// failed too; these directories are left behind.
    #[error("{error}; undoing it also failed, left behind: {}", left_behind_list(.left_behind))]
    RollbackIncomplete {
        /// The error that made `create` roll back.
        error: Box<CgroupError>,
        /// Directories that could not be removed, with the reason.
        left_behind: Vec<(PathBuf, std::io::Error)>,
    },
}

fn left_behind_list(left: &[(PathBuf, std::io::Error)]) -> String {
    left.iter()
        .map(|(p, e)| format!("{} ({e})", p.display()))
        .collect::<Vec<_>>()
        .join(", ")
}

impl CgroupError {
    /// Shorthand for [`CgroupError::Io`].
    pub(crate) fn io(
        operation: Operation,
        path: impl Into<PathBuf>,
        error: std::io::Error,
    ) -> Self {
        CgroupError::Io {
            operation,
            path: path.into(),
            error,
        }
    }

    /// The OS error number of an [`CgroupError::Io`], if that is what this is.
    pub fn raw_os_error(&self) -> Option<i32> {
        match self {
            CgroupError::Io { error, .. } => error.raw_os_error(),
            _ => None,
        }
    }
}
