//! Why a launch failed, and the exit code each failure maps to.

use super::failure::{Failure, Step};

/// A launch failed before the workload's command ran. Nothing is left
/// behind when this is returned: no cgroup, no state record, no user
/// namespace allocation, no process. (If a cgroup could not be removed, a
/// warning says so and its state record is kept, so that the next launch
/// reclaims it rather than nothing naming it.)
#[derive(Debug, thiserror::Error)]
pub enum LaunchError {
    /// The seccomp profile could not be read.
    #[error("{0}")]
    Profile(#[from] crate::seccomp::ProfileError),
    /// The seccomp profile could not be compiled.
    #[error("{0}")]
    Compile(#[from] crate::seccomp::CompileError),
    /// The state directory could not be used.
    #[error("{0}")]
    State(#[from] crate::state::StateError),
    /// The user namespace request could not be met.
    #[error("{0}")]
    Userns(#[from] crate::userns::UsernsError),
    /// The cgroups could not be set up.
    #[error("{0}")]
    Cgroup(#[from] crate::cgroup::CgroupError),
    /// systemd refused or failed what moat asked of it (the systemd cgroup
    /// manager).
    #[error("{what}")]
    Systemd {
        /// What moat was doing.
        what: String,
        /// systemd's error.
        #[source]
        error: crate::systemd::SystemdError,
    },
    /// The uid or gid asked for is not one the workload can have.
    #[error("invalid --user {uid}:{gid}: {reason}")]
    InvalidUser {
        /// The uid asked for.
        uid: u32,
        /// The gid asked for.
        gid: u32,
        /// Why it is refused.
        reason: String,
    },
    /// The request uses a feature moat run does not offer.
    #[error("{what}")]
    Unsupported {
        /// What and why.
        what: String,
    },
    /// Recording the workload's syscalls failed (`--record-profile`).
    #[error(transparent)]
    Record(#[from] crate::record::RecordError),
    /// Another system call in the parent failed.
    #[error("{what}: {error}")]
    Os {
        /// What moat was doing.
        what: String,
        /// The error.
        error: std::io::Error,
    },
    /// moat's init could not give the workload the isolation asked for
    /// (its mounts, its id maps).
    #[error("{what} failed: {error}")]
    Isolation {
        /// What was being done.
        what: String,
        /// The error.
        error: std::io::Error,
    },
    /// The child failed a set-up step, or could not execute the command.
    #[error("{}", describe_failure(.command, .failure))]
    Child {
        /// The command.
        command: String,
        /// What failed.
        failure: Failure,
    },
}

fn describe_failure(command: &str, f: &Failure) -> String {
    let err = std::io::Error::from_raw_os_error(f.errno);
    match (f.step, f.errno) {
        (Step::Exec, libc::ENOENT) => {
            format!("{command}: command not found (check the name and PATH)")
        }
        (Step::Exec, _) => format!("{command}: cannot execute: {err}"),
        (Step::Seccomp, libc::EACCES | libc::EPERM) if f.errno != 0 => format!(
            "installing the seccomp filter failed: {err} (without --no-new-privileges the filter needs CAP_SYS_ADMIN)"
        ),
        (step, _) => format!(
            "{} failed in the workload before it started: {err}; the profile may deny a set-up call, or the user/capability request is not possible",
            step.describe()
        ),
    }
}

impl LaunchError {
    /// The exit code for this failure: 127 command not found, 126 command
    /// not executable, 125 anything else (as `docker run`).
    pub fn exit_code(&self) -> i32 {
        match self {
            LaunchError::Child { failure, .. } => failure.exit_code(),
            _ => 125,
        }
    }

    pub(crate) fn os(what: impl Into<String>, error: std::io::Error) -> LaunchError {
        LaunchError::Os {
            what: what.into(),
            error,
        }
    }
}
