//! Resolution: turning a profile into the rules that apply on one host, for
//! one capability set, exactly as Docker does (moby `profiles/seccomp`).
//!
//! The result is the engine's intermediate form: a default verdict, the
//! architectures, and a flat list of rules, each with its action and errno
//! made explicit. The compiler consumes only this form.

use super::arch::Host;
use super::error::Source;
use super::profile::{Action, Arch, ArgCondition, Filter, Flag, Profile};
use crate::caps::CapSet;

/// errno used by ERRNO and TRACE actions that do not name one (as runc).
pub const DEFAULT_ERRNO: u32 = libc::EPERM as u32;

/// Who the profile is resolved for.
#[derive(Debug, Clone)]
pub struct Target {
    /// The host: architecture and kernel version.
    pub host: Host,
    /// The workload's capabilities (Docker checks the bounding set).
    pub caps: CapSet,
}

/// An action with its errno made explicit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ActionSpec {
    /// The action.
    pub action: Action,
    /// The errno for ERRNO and TRACE, `None` otherwise.
    pub errno: Option<u32>,
}

impl ActionSpec {
    fn new(action: Action, errno: Option<u32>) -> ActionSpec {
        let action = match action {
            // libseccomp's SCMP_ACT_KILL is KILL_THREAD; one spelling keeps
            // "same as the default" comparisons honest.
            Action::Kill => Action::KillThread,
            a => a,
        };
        let errno = action.takes_errno().then(|| errno.unwrap_or(DEFAULT_ERRNO));
        ActionSpec { action, errno }
    }
}

impl std::fmt::Display for ActionSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.action.as_str())?;
        if let Some(e) = self.errno {
            match crate::errno::name(e) {
                Some(n) => write!(f, "({n})")?,
                None => write!(f, "({e})")?,
            }
        }
        Ok(())
    }
}

/// A rule that applies on the target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    /// Index in the profile's `syscalls[]`, for messages.
    pub index: usize,
    /// Syscall names.
    pub names: Vec<String>,
    /// What to do.
    pub action: ActionSpec,
    /// Argument conditions.
    pub args: Vec<ArgCondition>,
}

/// Why a rule does not apply on the target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skipped {
    /// Index in the profile's `syscalls[]`.
    pub index: usize,
    /// Human-readable reason.
    pub reason: String,
}

/// A profile resolved for one target: the engine's intermediate form.
#[derive(Debug, Clone)]
pub struct Resolved {
    /// Where it came from.
    pub source: Source,
    /// The verdict when no rule matches.
    pub default_action: ActionSpec,
    /// Architectures to add besides the native one.
    pub architectures: Vec<Arch>,
    /// Filter flags.
    pub flags: Vec<Flag>,
    /// Notify listener socket.
    pub listener_path: Option<String>,
    /// Notify listener metadata.
    pub listener_metadata: Option<String>,
    /// The applicable rules, in profile order.
    pub rules: Vec<Rule>,
    /// The rules that were left out, and why.
    pub skipped: Vec<Skipped>,
}

/// Resolves `profile` for `target`.
pub fn resolve(profile: &Profile, source: Source, target: &Target) -> Resolved {
    let architectures = if !profile.architectures.is_empty() {
        profile.architectures.clone()
    } else {
        profile
            .arch_map
            .iter()
            .filter(|e| e.architecture == target.host.native)
            .flat_map(|e| {
                std::iter::once(e.architecture).chain(e.sub_architectures.iter().copied())
            })
            .collect()
    };
    let mut rules = Vec::new();
    let mut skipped = Vec::new();
    for (index, r) in profile.syscalls.iter().enumerate() {
        match applies(&r.includes, &r.excludes, target) {
            Ok(()) => rules.push(Rule {
                index,
                names: r.all_names().map(str::to_string).collect(),
                action: ActionSpec::new(r.action, r.errno_ret),
                args: r.args.clone(),
            }),
            Err(reason) => skipped.push(Skipped { index, reason }),
        }
    }
    Resolved {
        source,
        default_action: ActionSpec::new(profile.default_action, profile.default_errno_ret),
        architectures,
        flags: profile.flags.clone(),
        listener_path: profile.listener_path.clone(),
        listener_metadata: profile.listener_metadata.clone(),
        rules,
        skipped,
    }
}

/// Docker's order of checks: excluded arch, included arch, excluded caps,
/// excluded kernel, included caps, included kernel.
fn applies(inc: &Filter, exc: &Filter, t: &Target) -> Result<(), String> {
    let arch = t.host.go_arch;
    if exc.arches.iter().any(|a| a == arch) {
        return Err(format!("excludes.arches has {arch}"));
    }
    if !inc.arches.is_empty() && !inc.arches.iter().any(|a| a == arch) {
        return Err(format!("includes.arches lacks {arch}"));
    }
    if let Some(c) = exc.caps.iter().find(|c| has_cap(t, c)) {
        return Err(format!("excludes.caps: workload has {c}"));
    }
    if let Some(k) = exc.min_kernel {
        if t.host.kernel >= k {
            return Err(format!(
                "excludes.minKernel: kernel {} >= {k}",
                t.host.kernel
            ));
        }
    }
    if let Some(c) = inc.caps.iter().find(|c| !has_cap(t, c)) {
        return Err(format!("includes.caps: workload lacks {c}"));
    }
    if let Some(k) = inc.min_kernel {
        if t.host.kernel < k {
            return Err(format!(
                "includes.minKernel: kernel {} < {k}",
                t.host.kernel
            ));
        }
    }
    Ok(())
}

fn has_cap(t: &Target, name: &str) -> bool {
    // Names were validated at parse time; normalise `sys_admin` spellings.
    crate::caps::canonical_name(name).is_ok_and(|c| t.caps.contains(c))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::seccomp::parse;
    use crate::seccomp::profile::KernelVersion;

    fn target(go_arch: &'static str, native: Arch, kernel: &str, caps: CapSet) -> Target {
        Target {
            host: Host {
                go_arch,
                native,
                kernel: KernelVersion::parse(kernel).unwrap(),
            },
            caps,
        }
    }

    fn amd64(kernel: &str, caps: CapSet) -> Target {
        target("amd64", Arch::X86_64, kernel, caps)
    }

    const PROFILE: &str = r#"{
      "defaultAction": "SCMP_ACT_ERRNO",
      "archMap": [
        {"architecture": "SCMP_ARCH_X86_64", "subArchitectures": ["SCMP_ARCH_X86", "SCMP_ARCH_X32"]},
        {"architecture": "SCMP_ARCH_AARCH64", "subArchitectures": ["SCMP_ARCH_ARM"]}
      ],
      "syscalls": [
        {"names": ["read"], "action": "SCMP_ACT_ALLOW"},
        {"names": ["syslog"], "action": "SCMP_ACT_ALLOW", "includes": {"caps": ["CAP_SYSLOG"]}},
        {"names": ["ptrace"], "action": "SCMP_ACT_ALLOW", "excludes": {"caps": ["CAP_SYS_ADMIN"]}},
        {"names": ["arch_prctl"], "action": "SCMP_ACT_ALLOW", "includes": {"arches": ["amd64", "x32"]}},
        {"names": ["sync_file_range2"], "action": "SCMP_ACT_ALLOW", "excludes": {"arches": ["amd64"]}},
        {"names": ["newer"], "action": "SCMP_ACT_ALLOW", "includes": {"minKernel": "5.8"}},
        {"names": ["older"], "action": "SCMP_ACT_ALLOW", "excludes": {"minKernel": "5.8"}},
        {"names": ["both"], "action": "SCMP_ACT_ALLOW", "includes": {"caps": ["CAP_SYS_ADMIN", "CAP_BPF"]}},
        {"names": ["clone3"], "action": "SCMP_ACT_ERRNO", "errnoRet": 38},
        {"names": ["kill"], "action": "SCMP_ACT_KILL"}
      ]
    }"#;

    fn names(r: &Resolved) -> Vec<&str> {
        r.rules.iter().map(|r| r.names[0].as_str()).collect()
    }

    fn resolved(t: &Target) -> Resolved {
        let p = parse::from_str(PROFILE, Source::Builtin("test")).unwrap();
        resolve(&p, Source::Builtin("test"), t)
    }

    #[test]
    fn docker_default_caps_on_amd64() {
        let r = resolved(&amd64("6.18", CapSet::docker_default()));
        assert_eq!(
            names(&r),
            ["read", "ptrace", "arch_prctl", "newer", "clone3", "kill"]
        );
        assert_eq!(r.architectures, [Arch::X86_64, Arch::X86, Arch::X32]);
        assert_eq!(
            r.default_action,
            ActionSpec {
                action: Action::Errno,
                errno: Some(1)
            }
        );
        assert_eq!(r.rules[4].action.errno, Some(38));
        assert_eq!(r.rules[5].action.action, Action::KillThread);
        assert_eq!(r.skipped.len(), 4);
        assert!(r.skipped[0].reason.contains("lacks CAP_SYSLOG"));
    }

    #[test]
    fn capabilities_include_and_exclude() {
        let caps = CapSet::docker_default()
            .with_changes(["CAP_SYS_ADMIN", "CAP_SYSLOG"], Vec::<&str>::new())
            .unwrap();
        let r = resolved(&amd64("6.18", caps));
        let n = names(&r);
        assert!(n.contains(&"syslog"));
        assert!(!n.contains(&"ptrace"), "excluded by CAP_SYS_ADMIN");
        assert!(!n.contains(&"both"), "needs CAP_BPF as well");
        let r = resolved(&amd64("6.18", CapSet::all()));
        assert!(names(&r).contains(&"both"));
    }

    #[test]
    fn kernel_versions_compare_major_minor() {
        let r = resolved(&amd64("5.7", CapSet::empty()));
        let n = names(&r);
        assert!(n.contains(&"older") && !n.contains(&"newer"));
        let r = resolved(&amd64("5.8", CapSet::empty()));
        let n = names(&r);
        assert!(!n.contains(&"older") && n.contains(&"newer"));
        let r = resolved(&amd64("5.10", CapSet::empty()));
        let n = names(&r);
        assert!(!n.contains(&"older") && n.contains(&"newer"));
    }

    #[test]
    fn only_the_hosts_arch_map_entry_is_expanded() {
        let r = resolved(&target("arm64", Arch::Aarch64, "6.1", CapSet::empty()));
        assert_eq!(r.architectures, [Arch::Aarch64, Arch::Arm]);
        let n = names(&r);
        assert!(!n.contains(&"arch_prctl"));
        assert!(n.contains(&"sync_file_range2"));
        let r = resolved(&target("s390x", Arch::S390X, "6.1", CapSet::empty()));
        assert!(r.architectures.is_empty(), "no entry: native only");
    }
}
