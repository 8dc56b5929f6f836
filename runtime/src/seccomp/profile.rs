//! The profile as written on disk: Docker's seccomp profile format, which is
//! a superset of the OCI runtime-spec `linux.seccomp` object.
//!
//! These types mirror the JSON one to one; meaning is given to them by
//! [`super::resolve`].

use serde::{Deserialize, Deserializer, Serialize};

/// A whole seccomp profile (Docker format or OCI `linux.seccomp`).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Profile {
    /// Free text: what the profile is (`moat run --record-profile` says
    /// what was recorded, when and from which command). Docker and Podman
    /// ignore it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
    /// What happens to a syscall that no rule matches.
    pub default_action: Action,
    /// The errno for an ERRNO or TRACE default action (EPERM if absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_errno_ret: Option<u32>,
    /// Podman writes the symbolic name of `defaultErrnoRet` here; it is
    /// checked against the number when both are present.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_errno: Option<String>,
    /// Architectures the filter accepts (OCI style). Exclusive with `archMap`.
    #[serde(
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub architectures: Vec<Arch>,
    /// Per-host architecture lists (Docker style): only the host's entry is used.
    #[serde(
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub arch_map: Vec<ArchMapEntry>,
    /// `SECCOMP_FILTER_FLAG_*` flags to load the filter with.
    #[serde(
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub flags: Vec<Flag>,
    /// Unix socket that receives the notify fd for `SCMP_ACT_NOTIFY`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub listener_path: Option<String>,
    /// Opaque data sent to the listener with the notify fd.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub listener_metadata: Option<String>,
    /// The rules, in order.
    #[serde(default, deserialize_with = "null_as_default")]
    pub syscalls: Vec<SyscallRule>,
}

/// One `archMap` entry: a main architecture and the ones it also runs.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ArchMapEntry {
    /// The main architecture.
    pub architecture: Arch,
    /// Compatible architectures (i386 and x32 on x86_64, ...).
    #[serde(default, deserialize_with = "null_as_default")]
    pub sub_architectures: Vec<Arch>,
}

/// One entry of `syscalls[]`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SyscallRule {
    /// Legacy single name (old Docker format). Exclusive with `names`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Syscall names the rule applies to.
    #[serde(
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub names: Vec<String>,
    /// The action taken when the rule matches.
    pub action: Action,
    /// The errno for ERRNO and TRACE actions (EPERM if absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub errno_ret: Option<u32>,
    /// Podman's symbolic copy of `errnoRet`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub errno: Option<String>,
    /// Argument conditions: all must hold (see the compiler for the
    /// same-index OR rule).
    #[serde(
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub args: Vec<ArgCondition>,
    /// Conditions under which the rule applies.
    #[serde(default, skip_serializing_if = "Filter::is_empty")]
    pub includes: Filter,
    /// Conditions under which the rule is skipped.
    #[serde(default, skip_serializing_if = "Filter::is_empty")]
    pub excludes: Filter,
    /// Free text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
}

impl SyscallRule {
    /// The names the rule covers, whether written as `name` or `names`.
    pub fn all_names(&self) -> impl Iterator<Item = &str> {
        self.name
            .iter()
            .chain(self.names.iter())
            .map(String::as_str)
    }
}

/// `includes` / `excludes` of a rule.
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Filter {
    /// Capabilities (all must be held for includes, any held excludes).
    #[serde(
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub caps: Vec<String>,
    /// Go architecture names (`amd64`, `arm64`, `386`, ...).
    #[serde(
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub arches: Vec<String>,
    /// Kernel version `major.minor`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_kernel: Option<KernelVersion>,
}

impl Filter {
    /// True when the filter has no condition at all.
    pub fn is_empty(&self) -> bool {
        self.caps.is_empty() && self.arches.is_empty() && self.min_kernel.is_none()
    }
}

/// One argument condition.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ArgCondition {
    /// Argument index, 0 to 5.
    pub index: u32,
    /// The value compared against (the mask for `SCMP_CMP_MASKED_EQ`).
    pub value: u64,
    /// The second value (the expected masked value for `SCMP_CMP_MASKED_EQ`).
    #[serde(default)]
    pub value_two: u64,
    /// The comparison.
    pub op: Operator,
}

/// A seccomp action.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, Serialize)]
pub enum Action {
    /// Kill the thread (libseccomp's historical name for KILL_THREAD).
    #[serde(rename = "SCMP_ACT_KILL")]
    Kill,
    /// Kill the whole process.
    #[serde(rename = "SCMP_ACT_KILL_PROCESS")]
    KillProcess,
    /// Kill the calling thread.
    #[serde(rename = "SCMP_ACT_KILL_THREAD")]
    KillThread,
    /// Raise SIGSYS.
    #[serde(rename = "SCMP_ACT_TRAP")]
    Trap,
    /// Fail the syscall with an errno.
    #[serde(rename = "SCMP_ACT_ERRNO")]
    Errno,
    /// Notify a ptrace tracer; with no tracer attached the kernel fails the
    /// syscall with ENOSYS (the errno is the message the tracer sees).
    #[serde(rename = "SCMP_ACT_TRACE")]
    Trace,
    /// Let the syscall run.
    #[serde(rename = "SCMP_ACT_ALLOW")]
    Allow,
    /// Let the syscall run and log it.
    #[serde(rename = "SCMP_ACT_LOG")]
    Log,
    /// Hand the decision to a user-space listener.
    #[serde(rename = "SCMP_ACT_NOTIFY")]
    Notify,
}

impl Action {
    /// Whether the action carries an errno (`errnoRet` is meaningful).
    pub fn takes_errno(self) -> bool {
        matches!(self, Action::Errno | Action::Trace)
    }

    /// Whether the action refuses the syscall.
    pub fn denies(self) -> bool {
        !matches!(
            self,
            Action::Allow | Action::Log | Action::Notify | Action::Trace
        )
    }

    /// The JSON spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Kill => "SCMP_ACT_KILL",
            Action::KillProcess => "SCMP_ACT_KILL_PROCESS",
            Action::KillThread => "SCMP_ACT_KILL_THREAD",
            Action::Trap => "SCMP_ACT_TRAP",
            Action::Errno => "SCMP_ACT_ERRNO",
            Action::Trace => "SCMP_ACT_TRACE",
            Action::Allow => "SCMP_ACT_ALLOW",
            Action::Log => "SCMP_ACT_LOG",
            Action::Notify => "SCMP_ACT_NOTIFY",
        }
    }
}

/// An argument comparison operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, Serialize)]
pub enum Operator {
    /// `arg != value`
    #[serde(rename = "SCMP_CMP_NE")]
    NotEqual,
    /// `arg < value`
    #[serde(rename = "SCMP_CMP_LT")]
    Less,
    /// `arg <= value`
    #[serde(rename = "SCMP_CMP_LE")]
    LessOrEqual,
    /// `arg == value`
    #[serde(rename = "SCMP_CMP_EQ")]
    Equal,
    /// `arg >= value`
    #[serde(rename = "SCMP_CMP_GE")]
    GreaterOrEqual,
    /// `arg > value`
    #[serde(rename = "SCMP_CMP_GT")]
    Greater,
    /// `arg & value == valueTwo`
    #[serde(rename = "SCMP_CMP_MASKED_EQ")]
    MaskedEqual,
}

/// A `SECCOMP_FILTER_FLAG_*` flag.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, Serialize)]
pub enum Flag {
    /// Synchronise the filter to every thread of the process.
    #[serde(rename = "SECCOMP_FILTER_FLAG_TSYNC")]
    Tsync,
    /// Log every non-allow action to the audit log.
    #[serde(rename = "SECCOMP_FILTER_FLAG_LOG")]
    Log,
    /// Keep speculative store bypass mitigation off.
    #[serde(rename = "SECCOMP_FILTER_FLAG_SPEC_ALLOW")]
    SpecAllow,
    /// Notify listeners wait killably once the request is received.
    #[serde(rename = "SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV")]
    WaitKillableRecv,
}

impl Flag {
    /// The kernel's bit for this flag (`linux/seccomp.h`).
    pub fn bits(self) -> u32 {
        match self {
            Flag::Tsync => 1,
            Flag::Log => 2,
            Flag::SpecAllow => 4,
            Flag::WaitKillableRecv => 32,
        }
    }
}

/// A seccomp architecture name (`SCMP_ARCH_*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Deserialize, Serialize)]
#[allow(missing_docs)]
pub enum Arch {
    #[serde(rename = "SCMP_ARCH_X86")]
    X86,
    #[serde(rename = "SCMP_ARCH_X86_64")]
    X86_64,
    #[serde(rename = "SCMP_ARCH_X32")]
    X32,
    #[serde(rename = "SCMP_ARCH_ARM")]
    Arm,
    #[serde(rename = "SCMP_ARCH_AARCH64")]
    Aarch64,
    #[serde(rename = "SCMP_ARCH_MIPS")]
    Mips,
    #[serde(rename = "SCMP_ARCH_MIPS64")]
    Mips64,
    #[serde(rename = "SCMP_ARCH_MIPS64N32")]
    Mips64N32,
    #[serde(rename = "SCMP_ARCH_MIPSEL")]
    Mipsel,
    #[serde(rename = "SCMP_ARCH_MIPSEL64")]
    Mipsel64,
    #[serde(rename = "SCMP_ARCH_MIPSEL64N32")]
    Mipsel64N32,
    #[serde(rename = "SCMP_ARCH_PPC")]
    Ppc,
    #[serde(rename = "SCMP_ARCH_PPC64")]
    Ppc64,
    #[serde(rename = "SCMP_ARCH_PPC64LE")]
    Ppc64Le,
    #[serde(rename = "SCMP_ARCH_S390")]
    S390,
    #[serde(rename = "SCMP_ARCH_S390X")]
    S390X,
    #[serde(rename = "SCMP_ARCH_PARISC")]
    Parisc,
    #[serde(rename = "SCMP_ARCH_PARISC64")]
    Parisc64,
    #[serde(rename = "SCMP_ARCH_RISCV64")]
    Riscv64,
    #[serde(rename = "SCMP_ARCH_LOONGARCH64")]
    Loongarch64,
    #[serde(rename = "SCMP_ARCH_M68K")]
    M68k,
    #[serde(rename = "SCMP_ARCH_SH")]
    Sh,
    #[serde(rename = "SCMP_ARCH_SHEB")]
    Sheb,
}

/// A kernel version as `major.minor`, the granularity Docker compares at.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct KernelVersion {
    /// Major version.
    pub major: u32,
    /// Minor version.
    pub minor: u32,
}

impl KernelVersion {
    /// Parses `"5.8"`; Docker's format has exactly two numeric parts.
    pub fn parse(s: &str) -> Option<KernelVersion> {
        let (major, minor) = s.split_once('.')?;
        let num = |p: &str| {
            (!p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
                .then(|| p.parse().ok())
                .flatten()
        };
        Some(KernelVersion {
            major: num(major)?,
            minor: num(minor)?,
        })
    }
}

impl std::fmt::Display for KernelVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}", self.major, self.minor)
    }
}

impl<'de> Deserialize<'de> for KernelVersion {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        KernelVersion::parse(&s).ok_or_else(|| {
            serde::de::Error::custom(format!(
                "invalid kernel version {s:?}: expected <major>.<minor>, e.g. \"5.8\""
            ))
        })
    }
}

impl Serialize for KernelVersion {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// Docker writes `null` for empty lists; treat it as empty.
fn null_as_default<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_version_needs_two_numbers() {
        assert_eq!(
            KernelVersion::parse("5.8"),
            Some(KernelVersion { major: 5, minor: 8 })
        );
        assert_eq!(KernelVersion::parse("5"), None);
        assert_eq!(KernelVersion::parse("5.8.1"), None);
        assert_eq!(KernelVersion::parse("a.b"), None);
        assert_eq!(KernelVersion::parse("-1.2"), None);
        assert!(KernelVersion::parse("4.10") > KernelVersion::parse("4.9"));
    }

    #[test]
    fn flags_have_the_kernel_bits() {
        assert_eq!(Flag::Tsync.bits(), libc::SECCOMP_FILTER_FLAG_TSYNC as u32);
        assert_eq!(Flag::Log.bits(), libc::SECCOMP_FILTER_FLAG_LOG as u32);
        assert_eq!(
            Flag::SpecAllow.bits(),
            libc::SECCOMP_FILTER_FLAG_SPEC_ALLOW as u32
        );
    }
}
