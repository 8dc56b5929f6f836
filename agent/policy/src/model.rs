//! The node policy: named rules that deny, and exceptions that allow,
//! scoped to users and to values.
//!
//! A rule pairs a [`Check`] (one question the policy can ask of a request or
//! a `moat run`: is it privileged, which capabilities does it add, which host
//! paths does it mount...) with a name and a message. The first rule, in
//! order, that a request violates, after exceptions, decides the denial.

use std::fmt;
use std::path::PathBuf;

use crate::findings::{Finding, Kind, Namespace};

/// A loaded policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    /// Rules, in evaluation order (the baseline's first when extended).
    pub rules: Vec<Rule>,
    /// Exceptions, each naming one rule.
    pub exceptions: Vec<Exception>,
    /// Where the policy came from.
    pub source: Source,
}

/// Where a policy came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// The built-in baseline (no policy file).
    Baseline,
    /// A policy file.
    File {
        /// Its path.
        path: PathBuf,
        /// Whether it starts from the baseline (`extends = "baseline"`).
        extends_baseline: bool,
    },
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::Baseline => f.write_str("built-in baseline"),
            Source::File {
                path,
                extends_baseline: false,
            } => write!(f, "{}", path.display()),
            Source::File { path, .. } => write!(f, "{} (extends the baseline)", path.display()),
        }
    }
}

/// One rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    /// Unique name, e.g. `privileged`; reported with every denial.
    pub name: String,
    /// What it denies.
    pub check: Check,
    /// Why, as the client sees it.
    pub message: String,
}

/// What a rule denies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Check {
    /// Privileged containers, privileged exec.
    Privileged,
    /// No seccomp filter, or a custom profile that allows by default.
    SeccompUnconfined,
    /// AppArmor disabled (`apparmor=unconfined`, swarm `AppArmor.Mode: disabled`).
    ApparmorUnconfined,
    /// SELinux labelling disabled (`label=disable`).
    SelinuxDisabled,
    /// `MaskedPaths` / `ReadonlyPaths` set without every default entry
    /// (`systempaths=unconfined` sends them empty).
    SystempathsUnconfined,
    /// Capabilities outside Docker's default set, except `allowed`.
    Capabilities {
        /// Canonical names (`CAP_NET_ADMIN`) or `ALL`, allowed to everyone.
        allowed: Vec<String>,
    },
    /// Sharing these host namespaces.
    HostNamespaces {
        /// Which ones.
        namespaces: Vec<Namespace>,
    },
    /// Mounting these host paths, anything under them, or any directory
    /// that contains one.
    HostPaths {
        /// Absolute, cleaned paths.
        paths: Vec<String>,
    },
    /// Host devices, device cgroup rules and device requests.
    HostDevices,
    /// An explicitly unlimited pids limit.
    PidsUnlimited,
    /// Installing, creating, enabling, disabling, configuring, upgrading or
    /// removing plugins (and plugin services).
    Plugins,
    /// Joining a swarm, whose managers then run tasks here without asking
    /// the plugin.
    SwarmJoin,
}

/// What a body-reading check needs to see.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyKind {
    /// A container configuration (create; start before API 1.24).
    Container,
    /// `containers/{id}/update`.
    Update,
    /// `containers/{id}/exec`.
    Exec,
    /// A swarm service spec.
    Service,
    /// `volumes/create`.
    Volume,
    /// `build` parameters (a form body would hide them).
    Build,
}

impl Check {
    /// Every check's name, as written in policy files.
    pub const NAMES: [&'static str; 12] = [
        "privileged",
        "seccomp-unconfined",
        "apparmor-unconfined",
        "selinux-disabled",
        "systempaths-unconfined",
        "capabilities",
        "host-namespaces",
        "host-paths",
        "host-devices",
        "pids-unlimited",
        "plugins",
        "swarm-join",
    ];

    /// The check's name.
    pub fn name(&self) -> &'static str {
        match self {
            Check::Privileged => "privileged",
            Check::SeccompUnconfined => "seccomp-unconfined",
            Check::ApparmorUnconfined => "apparmor-unconfined",
            Check::SelinuxDisabled => "selinux-disabled",
            Check::SystempathsUnconfined => "systempaths-unconfined",
            Check::Capabilities { .. } => "capabilities",
            Check::HostNamespaces { .. } => "host-namespaces",
            Check::HostPaths { .. } => "host-paths",
            Check::HostDevices => "host-devices",
            Check::PidsUnlimited => "pids-unlimited",
            Check::Plugins => "plugins",
            Check::SwarmJoin => "swarm-join",
        }
    }

    /// Whether this check reads request bodies of `kind` (so a request of
    /// that kind without a readable body must be denied).
    pub fn reads(&self, kind: BodyKind) -> bool {
        use BodyKind as B;
        match self {
            Check::Plugins => kind == B::Service,
            Check::SwarmJoin => false,
            Check::Privileged => matches!(kind, B::Container | B::Exec),
            Check::PidsUnlimited => matches!(kind, B::Container | B::Update | B::Service),
            Check::HostPaths { .. } => matches!(kind, B::Container | B::Service | B::Volume),
            Check::HostNamespaces { .. } => matches!(kind, B::Container | B::Service | B::Build),
            Check::HostDevices | Check::SystempathsUnconfined => kind == B::Container,
            Check::SeccompUnconfined
            | Check::ApparmorUnconfined
            | Check::SelinuxDisabled
            | Check::Capabilities { .. } => matches!(kind, B::Container | B::Service),
        }
    }

    /// Whether `finding` violates this check (before exceptions).
    pub fn violated_by(&self, finding: &Finding) -> bool {
        match (self, &finding.kind) {
            (Check::Privileged, Kind::Privileged)
            | (Check::SeccompUnconfined, Kind::SeccompUnconfined)
            | (Check::ApparmorUnconfined, Kind::ApparmorUnconfined)
            | (Check::SelinuxDisabled, Kind::SelinuxDisabled)
            | (Check::SystempathsUnconfined, Kind::SystemPaths)
            | (Check::HostDevices, Kind::HostDevice)
            | (Check::PidsUnlimited, Kind::PidsUnlimited)
            | (Check::Plugins, Kind::Plugin)
            | (Check::SwarmJoin, Kind::SwarmJoin) => true,
            (Check::Capabilities { allowed }, Kind::Capability(cap)) => !cap_listed(allowed, cap),
            (Check::HostNamespaces { namespaces }, Kind::HostNamespace(ns)) => {
                namespaces.contains(ns)
            }
            (Check::HostPaths { paths }, Kind::HostPath(p)) => {
                !p.starts_with('/') || paths.iter().any(|s| overlaps(p, s))
            }
            _ => false,
        }
    }
}

fn cap_listed(list: &[String], cap: &str) -> bool {
    list.iter().any(|c| c == cap || c == "ALL")
}

/// Whether host path `p` is `root`, under it, or contains it (both
/// absolute and cleaned).
fn overlaps(p: &str, root: &str) -> bool {
    under(p, root) || under(root, p)
}

/// Whether `p` is `dir` or below it (both absolute and cleaned).
pub(crate) fn under(p: &str, dir: &str) -> bool {
    dir == "/" || p == dir || p.strip_prefix(dir).is_some_and(|r| r.starts_with('/'))
}

/// An exception to one rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exception {
    /// The rule it relaxes.
    pub rule: String,
    /// Who it applies to (the Docker client certificate's CN, or the
    /// account running `moat run`); `None` means everyone.
    pub users: Option<Vec<String>>,
    /// What it allows.
    pub scope: Scope,
    /// Why, for the reader of the file.
    pub reason: Option<String>,
}

/// What an exception allows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    /// Everything the rule denies.
    All,
    /// These capabilities (for a `capabilities` rule).
    Capabilities(Vec<String>),
    /// These namespaces (for a `host-namespaces` rule).
    Namespaces(Vec<Namespace>),
    /// These host paths and what is under them (for a `host-paths` rule).
    Paths(Vec<String>),
}

impl Exception {
    /// Whether this exception allows `finding` for `user`.
    pub fn covers(&self, finding: &Finding, user: &str) -> bool {
        let user_ok = match &self.users {
            None => true,
            Some(users) => !user.is_empty() && users.iter().any(|u| u == user),
        };
        user_ok
            && match (&self.scope, &finding.kind) {
                (Scope::All, _) => true,
                (Scope::Capabilities(caps), Kind::Capability(c)) => cap_listed(caps, c),
                (Scope::Namespaces(ns), Kind::HostNamespace(n)) => ns.contains(n),
                (Scope::Paths(paths), Kind::HostPath(p)) => paths.iter().any(|a| under(p, a)),
                _ => false,
            }
    }
}

impl Policy {
    /// Whether any rule reads bodies of `kind`.
    pub fn reads(&self, kind: BodyKind) -> bool {
        self.rules.iter().any(|r| r.check.reads(kind))
    }

    /// The first rule `findings` violate for `user`, after exceptions, with
    /// the findings that violate it.
    pub fn first_violation<'f>(
        &self,
        findings: &'f [Finding],
        user: &str,
    ) -> Option<(&Rule, Vec<&'f Finding>)> {
        self.rules.iter().find_map(|rule| {
            let hits: Vec<&Finding> = findings
                .iter()
                .filter(|f| rule.check.violated_by(f))
                .filter(|f| {
                    !self
                        .exceptions
                        .iter()
                        .any(|e| e.rule == rule.name && e.covers(f, user))
                })
                .collect();
            (!hits.is_empty()).then_some((rule, hits))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn path(p: &str) -> Finding {
        Finding::new(Kind::HostPath(p.into()), "Binds[0]", "")
    }

    #[test]
    fn host_paths_deny_the_path_below_it_and_above_it() {
        let c = Check::HostPaths {
            paths: vec!["/etc".into(), "/var/run/docker.sock".into()],
        };
        for bad in [
            "/etc",
            "/etc/ssl",
            "/",
            "/var",
            "/var/run",
            "/var/run/docker.sock",
            "etc",
        ] {
            assert!(c.violated_by(&path(bad)), "{bad}");
        }
        for ok in ["/etcetera", "/var/log", "/var/run/other", "/home/u"] {
            assert!(!c.violated_by(&path(ok)), "{ok}");
        }
    }

    #[test]
    fn exceptions_match_users_exactly_and_never_the_anonymous_user() {
        let e = Exception {
            rule: "caps".into(),
            users: Some(vec!["ci".into()]),
            scope: Scope::Capabilities(vec!["CAP_NET_ADMIN".into()]),
            reason: None,
        };
        let f = Finding::new(Kind::Capability("CAP_NET_ADMIN".into()), "CapAdd", "");
        assert!(e.covers(&f, "ci"));
        assert!(!e.covers(&f, "CI"));
        assert!(!e.covers(&f, ""));
        let g = Finding::new(Kind::Capability("CAP_SYS_ADMIN".into()), "CapAdd", "");
        assert!(!e.covers(&g, "ci"));
        let p = Exception {
            rule: "paths".into(),
            users: None,
            scope: Scope::Paths(vec!["/etc/localtime".into()]),
            reason: None,
        };
        assert!(p.covers(&path("/etc/localtime"), ""));
        assert!(!p.covers(&path("/etc"), ""));
        assert!(!p.covers(&path("etc/localtime"), ""));
    }
}
