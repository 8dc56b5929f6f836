//! `moat run` under the node policy: what a launch asks for, in the terms
//! the policy's rules use.

use crate::caps;
use crate::findings::{Finding, Kind, Namespace};

/// What a `moat run` asks for that a policy can forbid.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RunIntent {
    /// No seccomp filter (`--seccomp-profile unconfined`), or a profile
    /// whose default action allows.
    pub seccomp_unconfined: bool,
    /// Capabilities the workload holds beyond Docker's default set
    /// (`--cap-add`), by canonical name (`CAP_NET_ADMIN`).
    pub added_caps: Vec<String>,
    /// No user namespace (`--userns host`, the default).
    pub userns_host: bool,
    /// `--pids-limit unlimited`.
    pub pids_unlimited: bool,
    /// The account running `moat run` (the real uid's name), which
    /// exceptions' `users` are matched against.
    pub user: String,
}

impl RunIntent {
    /// The findings the policy judges.
    pub fn findings(&self) -> Vec<Finding> {
        let mut out = Vec::new();
        if self.seccomp_unconfined {
            out.push(Finding::new(
                Kind::SeccompUnconfined,
                "--seccomp-profile",
                "no seccomp filter, or a profile that allows by default",
            ));
        }
        for cap in &self.added_caps {
            if !caps::is_default(cap) {
                out.push(Finding::new(
                    Kind::Capability(cap.clone()),
                    "--cap-add",
                    format!("adds {cap}"),
                ));
            }
        }
        if self.userns_host {
            out.push(Finding::new(
                Kind::HostNamespace(Namespace::User),
                "--userns",
                "host (no user namespace)",
            ));
        }
        if self.pids_unlimited {
            out.push(Finding::new(
                Kind::PidsUnlimited,
                "--pids-limit",
                "unlimited",
            ));
        }
        out
    }
}
