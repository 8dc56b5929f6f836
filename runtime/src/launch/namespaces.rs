//! Which namespaces and file-system protections a workload gets, and the
//! options that relax each one (named as Docker and Podman name them).
//!
//! The defaults contain the workload as Docker's do: it is PID 1's child in
//! a PID namespace of its own (it cannot see, signal or trace anything
//! outside), in its own mount namespace (nothing it mounts reaches the
//! host, `/sys` and every cgroup file system are read-only, Docker's masked
//! and read-only paths hide the kernel's dangerous knobs), in a cgroup
//! namespace rooted at its own cgroups and in an IPC namespace of its own.

use std::fmt;
use std::str::FromStr;

/// A namespace the workload either shares with the host or gets its own of.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Share {
    /// A new namespace (the default).
    #[default]
    Private,
    /// The host's namespace.
    Host,
}

impl FromStr for Share {
    type Err = String;
    fn from_str(s: &str) -> Result<Share, String> {
        match s {
            "private" => Ok(Share::Private),
            "host" => Ok(Share::Host),
            _ => Err(format!("{s:?}: expected \"private\" or \"host\"")),
        }
    }
}

/// Docker's masked and read-only paths in `/proc` and `/sys`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SystemPaths {
    /// Masked and read-only (the default).
    #[default]
    Masked,
    /// As the host has them (Docker's `--security-opt systempaths=unconfined`).
    Unconfined,
}

impl FromStr for SystemPaths {
    type Err = String;
    fn from_str(s: &str) -> Result<SystemPaths, String> {
        match s {
            "masked" => Ok(SystemPaths::Masked),
            "unconfined" => Ok(SystemPaths::Unconfined),
            _ => Err(format!("{s:?}: expected \"masked\" or \"unconfined\"")),
        }
    }
}

/// Whether `/sys` and the cgroup file systems are writable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Sysfs {
    /// Read-only (the default; systemd's `ProtectControlGroups`, Docker's
    /// read-only sysfs).
    #[default]
    ReadOnly,
    /// As the host has them.
    ReadWrite,
}

impl FromStr for Sysfs {
    type Err = String;
    fn from_str(s: &str) -> Result<Sysfs, String> {
        match s {
            "ro" => Ok(Sysfs::ReadOnly),
            "rw" => Ok(Sysfs::ReadWrite),
            _ => Err(format!("{s:?}: expected \"ro\" or \"rw\"")),
        }
    }
}

/// The isolation asked for, apart from the user namespace (see
/// [`crate::userns::UsernsSpec`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Isolation {
    /// PID namespace (`--pid`).
    pub pid: Share,
    /// Cgroup namespace (`--cgroupns`).
    pub cgroup: Share,
    /// IPC namespace (`--ipc`).
    pub ipc: Share,
    /// Masked and read-only paths (`--system-paths`).
    pub system_paths: SystemPaths,
    /// `/sys` and cgroup file systems (`--sysfs`).
    pub sysfs: Sysfs,
}

impl Isolation {
    /// The `clone3` flags of moat's init: the namespaces it is born in. The
    /// mount namespace is always new, so that moat can build the workload's
    /// view without touching the host's; the cgroup namespace is made later
    /// by the workload itself, once it is in its cgroups.
    pub fn init_clone_flags(&self) -> u64 {
        let mut flags = libc::CLONE_NEWNS as u64;
        if self.pid == Share::Private {
            flags |= libc::CLONE_NEWPID as u64;
        }
        if self.ipc == Share::Private {
            flags |= libc::CLONE_NEWIPC as u64;
        }
        flags
    }

    /// The namespaces the workload gets, as `/proc/PID/ns` names them,
    /// sorted (for the state record and `moat ps`).
    pub fn namespace_names(&self, user: bool) -> Vec<String> {
        let mut names = Vec::new();
        if self.cgroup == Share::Private {
            names.push("cgroup");
        }
        if self.ipc == Share::Private {
            names.push("ipc");
        }
        names.push("mnt");
        if self.pid == Share::Private {
            names.push("pid");
        }
        if user {
            names.push("user");
        }
        names.into_iter().map(str::to_string).collect()
    }
}

impl fmt::Display for Share {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Share::Private => "private",
            Share::Host => "host",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_isolate_everything() {
        let d = Isolation::default();
        let flags = d.init_clone_flags();
        for f in [libc::CLONE_NEWNS, libc::CLONE_NEWPID, libc::CLONE_NEWIPC] {
            assert_ne!(flags & f as u64, 0, "{f:#x}");
        }
        assert_eq!(
            d.namespace_names(true),
            ["cgroup", "ipc", "mnt", "pid", "user"]
        );
        assert_eq!(d.namespace_names(false), ["cgroup", "ipc", "mnt", "pid"]);
    }

    #[test]
    fn host_options_relax_each_one() {
        let h = Isolation {
            pid: Share::Host,
            cgroup: Share::Host,
            ipc: Share::Host,
            system_paths: SystemPaths::Unconfined,
            sysfs: Sysfs::ReadWrite,
        };
        assert_eq!(h.init_clone_flags(), libc::CLONE_NEWNS as u64);
        assert_eq!(h.namespace_names(false), ["mnt"]);
    }

    #[test]
    fn values_parse_or_say_what_is_expected() {
        assert_eq!("host".parse::<Share>(), Ok(Share::Host));
        assert_eq!("private".parse::<Share>(), Ok(Share::Private));
        assert!("Host".parse::<Share>().unwrap_err().contains("\"host\""));
        assert_eq!("rw".parse::<Sysfs>(), Ok(Sysfs::ReadWrite));
        assert!("yes".parse::<Sysfs>().is_err());
        assert_eq!(
            "unconfined".parse::<SystemPaths>(),
            Ok(SystemPaths::Unconfined)
        );
        assert!("off".parse::<SystemPaths>().is_err());
    }
}
