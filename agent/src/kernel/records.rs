//! What the kernel side has seen, as the rest of the agent consumes it.
//!
//! The eBPF programs aggregate in per-CPU maps; [`KernelSource::snapshot`]
//! sums them at scrape time into these plain types, and audit records
//! arrive one by one from the ring buffer. The metrics, attribution and
//! audit modules only know these types, so they are tested without BPF.

/// How a seccomp filter refused a syscall.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum DenialAction {
    /// `SECCOMP_RET_ERRNO`: the syscall failed with an errno.
    Errno,
    /// `SECCOMP_RET_TRAP`: SIGSYS was raised.
    Trap,
    /// `SECCOMP_RET_KILL_THREAD` / `KILL_PROCESS`.
    Kill,
}

impl DenialAction {
    /// The `action` label value.
    pub fn as_str(self) -> &'static str {
        match self {
            DenialAction::Errno => "errno",
            DenialAction::Trap => "trap",
            DenialAction::Kill => "kill",
        }
    }
}

/// Denials counted for one (cgroup, arch, syscall, action, errno).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DenialCount {
    /// The v2 cgroup id of the denied task.
    pub cgroup_id: u64,
    /// `AUDIT_ARCH_*` of the syscall's calling convention.
    pub arch: u32,
    /// The syscall number (x32 numbers keep bit 30).
    pub syscall_nr: i32,
    /// How it was refused.
    pub action: DenialAction,
    /// The errno for [`DenialAction::Errno`], 0 otherwise.
    pub errno: u16,
    /// How many times, since the programs were loaded.
    pub count: u64,
}

/// Process events the kernel side counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ProcessEventKind {
    /// A new process (fork, vfork, clone without CLONE_THREAD).
    ForkProcess,
    /// A new thread (clone with CLONE_THREAD).
    ForkThread,
    /// A successful execve/execveat.
    Exec,
    /// A process ended (its last thread exited).
    Exit,
    /// fork, vfork, clone or clone3 returned an error.
    ForkFailed,
    /// A user namespace was created (clone, clone3 or unshare with CLONE_NEWUSER).
    UsernsCreated,
}

impl ProcessEventKind {
    /// Whether it is a new task (process or thread).
    pub fn is_fork(self) -> bool {
        matches!(
            self,
            ProcessEventKind::ForkProcess | ProcessEventKind::ForkThread
        )
    }
}

/// Events counted for one (cgroup, kind, errno).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcessEventCount {
    /// The v2 cgroup id of the task.
    pub cgroup_id: u64,
    /// What happened.
    pub kind: ProcessEventKind,
    /// For [`ProcessEventKind::ForkFailed`], the errno (EAGAIN for a pids limit); 0 otherwise.
    pub errno: u16,
    /// How many times, since the programs were loaded.
    pub count: u64,
}

/// Everything the kernel maps hold, summed over CPUs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KernelSnapshot {
    /// Seccomp denials.
    pub denials: Vec<DenialCount>,
    /// Process events.
    pub process_events: Vec<ProcessEventCount>,
    /// Updates lost because a map was full, by map name.
    pub map_full: Vec<(&'static str, u64)>,
    /// Audit records not delivered, by reason (`rate_limited`, `buffer_full`).
    pub audit_dropped: Vec<(&'static str, u64)>,
}

/// One audit record from the ring buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditRecord {
    /// `CLOCK_BOOTTIME` nanoseconds (`bpf_ktime_get_boot_ns`).
    pub boot_ns: u64,
    /// Process id (tgid).
    pub pid: u32,
    /// Thread id.
    pub tid: u32,
    /// The v2 cgroup id.
    pub cgroup_id: u64,
    /// The task's `comm`.
    pub comm: String,
    /// What happened.
    pub kind: AuditKind,
}

/// The kernel-side audit record kinds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuditKind {
    /// A syscall refused by seccomp.
    SeccompDenied {
        /// `AUDIT_ARCH_*`.
        arch: u32,
        /// Syscall number.
        syscall_nr: i32,
        /// How it was refused.
        action: DenialAction,
        /// errno for ERRNO, 0 otherwise.
        errno: u16,
    },
    /// A fork-family syscall failed.
    ForkFailed {
        /// The errno.
        errno: u16,
    },
    /// A user namespace was created.
    UsernsCreated,
}

/// A pids cgroup removed since the last [`KernelSource::retired_pids`], with
/// refused forks on its count.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetiredPids {
    /// Its key, as in the counters (a v1 pids cgroup's carries
    /// [`moat_common::V1_PIDS_ID_FLAG`]).
    pub cgroup_id: u64,
    /// The final value of the count `pids.events` showed as `max`.
    pub hits: u64,
    /// Its path relative to its hierarchy's root, when the kernel's record
    /// holds all of it.
    pub path: Option<String>,
}

/// A source of kernel counts: the loaded eBPF programs, or a test double.
pub trait KernelSource: Send + Sync {
    /// Reads and sums every counter map.
    fn snapshot(&self) -> crate::kernel::Result<KernelSnapshot>;

    /// The pids cgroups removed since the last call (each returned once).
    fn retired_pids(&self) -> crate::kernel::Result<Vec<RetiredPids>> {
        Ok(Vec::new())
    }

    /// Which refusals are counted and how (`None`: not a loaded kernel side).
    fn tracing_mode(&self) -> Option<crate::kernel::TracingMode> {
        None
    }

    /// Whether the programs were adopted from pins, loaded and pinned, or not
    /// pinned (`None`: not a loaded kernel side).
    fn pin_state(&self) -> Option<crate::kernel::PinState> {
        None
    }
}
