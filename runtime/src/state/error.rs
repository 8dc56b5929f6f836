//! Errors of the state directory.

use std::io;
use std::path::PathBuf;

/// The state directory could not be used, or a request on it is refused.
/// Every variant renders as one line naming the file or name at fault.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// A file system operation failed.
    #[error("{}: cannot {op}: {error}", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// What was being done, e.g. `create directory`, `lock`, `rename`.
        op: &'static str,
        /// The underlying I/O error.
        error: io::Error,
    },
    /// A directory or file of the state is not what moat puts there, or
    /// someone other than root could change it, so moat does not use it.
    #[error("{}: {reason}", path.display())]
    Untrusted {
        /// The directory or file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// A stale record still holds the name (what it names could not be
    /// reclaimed), so a new workload cannot take it.
    #[error(
        "a stale record of workload {name:?} is still there ({}): what it names could not be \
         cleaned up; see the warning above, or choose another --name",
        file.display()
    )]
    StaleName {
        /// The name.
        name: String,
        /// The record.
        file: PathBuf,
    },
    /// A record file cannot be parsed.
    #[error("{}: corrupt state record: {reason}", file.display())]
    Corrupt {
        /// The record file.
        file: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// A live workload already has this name.
    #[error(
        "a workload named {name:?} is already running (moat run pid {supervisor_pid}{}); \
         choose another --name",
        workload_pid.map(|p| format!(", workload pid {p}")).unwrap_or_default()
    )]
    NameTaken {
        /// The name.
        name: String,
        /// The `moat run` process of the running workload.
        supervisor_pid: i32,
        /// The workload's own process, if started.
        workload_pid: Option<i32>,
    },
    /// A workload name is not allowed.
    #[error("invalid workload name {name:?}: {reason}")]
    InvalidName {
        /// The name as given.
        name: String,
        /// Why it is refused.
        reason: String,
    },
    /// A process could not be identified.
    #[error("/proc/{pid}/stat: {reason}")]
    Proc {
        /// The process id.
        pid: i32,
        /// Why.
        reason: String,
    },
}
