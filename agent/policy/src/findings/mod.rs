//! What a request would do, in the policy's terms: the privileges,
//! namespaces, host paths and devices a body asks for, read the way the
//! daemon reads it ([`crate::gojson`]).
//!
//! Extraction never decides: it lists every finding, and
//! [`crate::model::Policy`] decides which of them its rules deny. Where the
//! daemon's reading of a field is in doubt, extraction reports more, not
//! less (both the `HostConfig` object and the deprecated top-level fields of
//! a create body, every `seccomp=` option rather than the last one).

mod container;
mod mounts;
mod security;
mod service;

pub use container::{create_body, exec_body, inspect, update_body, HostConfigMode};
pub use mounts::volume_options;
pub use service::service_spec;

use std::fmt;

/// A namespace a workload may share with the host.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Namespace {
    /// PID namespace (`PidMode: host`).
    Pid,
    /// IPC namespace (`IpcMode: host`).
    Ipc,
    /// UTS namespace (`UTSMode: host`).
    Uts,
    /// Cgroup namespace (`CgroupnsMode: host`).
    Cgroup,
    /// User namespace (`UsernsMode: host`; `moat run --userns host`).
    User,
    /// Network namespace (`NetworkMode: host`).
    Network,
}

impl Namespace {
    /// Every namespace.
    pub const ALL: [Namespace; 6] = [
        Namespace::Pid,
        Namespace::Ipc,
        Namespace::Uts,
        Namespace::Cgroup,
        Namespace::User,
        Namespace::Network,
    ];

    /// The name used in policy files.
    pub fn name(self) -> &'static str {
        match self {
            Namespace::Pid => "pid",
            Namespace::Ipc => "ipc",
            Namespace::Uts => "uts",
            Namespace::Cgroup => "cgroup",
            Namespace::User => "user",
            Namespace::Network => "network",
        }
    }

    /// Parses a policy file name.
    pub fn parse(s: &str) -> Option<Namespace> {
        Namespace::ALL.into_iter().find(|n| n.name() == s)
    }
}

/// The kind of a finding, with what rules and exceptions compare.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    /// A privileged container or exec.
    Privileged,
    /// No seccomp filter, or a profile that allows by default.
    SeccompUnconfined,
    /// AppArmor disabled.
    ApparmorUnconfined,
    /// SELinux labelling disabled.
    SelinuxDisabled,
    /// Masked or read-only paths without Docker's defaults.
    SystemPaths,
    /// A capability beyond Docker's default set (`CAP_X`, or `ALL`).
    Capability(String),
    /// A shared host namespace.
    HostNamespace(Namespace),
    /// A host path mounted into the workload: absolute and cleaned, or, when
    /// relative, as written (what it names depends on the daemon's working
    /// directory, so no rule can clear it).
    HostPath(String),
    /// A host device, device cgroup rule or device request.
    HostDevice,
    /// An explicitly unlimited pids limit.
    PidsUnlimited,
    /// Plugin management.
    Plugin,
    /// Joining a swarm.
    SwarmJoin,
}

/// One thing a request would do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// What it is.
    pub kind: Kind,
    /// Where it was read, e.g. `HostConfig.Binds[0]`.
    pub at: String,
    /// What was found there, e.g. `host path /etc`.
    pub what: String,
}

impl Finding {
    /// A finding at `at`.
    pub fn new(kind: Kind, at: &str, what: impl Into<String>) -> Finding {
        Finding {
            kind,
            at: at.to_string(),
            what: what.into(),
        }
    }
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.at.is_empty(), self.what.is_empty()) {
            (true, _) => f.write_str(&self.what),
            (false, true) => f.write_str(&self.at),
            (false, false) => write!(f, "{}: {}", self.at, self.what),
        }
    }
}

/// Appends `.name` to a path (or starts one).
fn join(path: &str, name: &str) -> String {
    if path.is_empty() {
        name.to_string()
    } else {
        format!("{path}.{name}")
    }
}
