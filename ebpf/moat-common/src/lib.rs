//! Types and constants shared by moat's kernel-side eBPF programs (`moat-ebpf`) and
//! the user-space agent (`moat-agent`).
//!
//! Both sides are compiled separately (one for `bpfel-unknown-none`, one for the
//! host), so anything whose layout or meaning must agree lives here: map and program
//! names, map indices, the load-time [`Params`] global and the `#[repr(C)]` map keys
//! and ring-buffer records. With the `user` feature those records implement
//! `aya::Pod`, which aya requires before it copies them in or out of the kernel.
//!
//! Every record is laid out without implicit padding (explicit `_pad` fields where
//! needed): a `Pod` must have no uninitialised bytes, and a hash-map key's padding
//! would otherwise be hashed.
#![cfg_attr(not(test), no_std)]

/// Value type of every counter slot, in every counter map.
///
/// Per CPU, so the eBPF side increments without atomics; user space sums the CPUs.
pub type Counter = u64;

// ---------------------------------------------------------------------------
// The node-wide programs: seccomp denials, process events, audit records.

/// Program and tracepoint names of the node-wide programs, in attach order.
///
/// The order matters (see `Kernel::load` in the agent): the scheduler programs, which
/// mark new tasks and follow a tid across `execve`, are attached before `sys_enter`,
/// and `sys_enter` before `sys_exit`, so that `sys_exit` never sees a thread whose
/// state the other programs could not yet have recorded. `sched_switch`, which
/// writes the running thread's cached state back when it leaves its CPU, comes
/// before `sys_enter`, the first writer of that cache: a cached state must never
/// outlive its thread's time on the CPU.
pub const KERNEL_PROGRAMS: [(&str, &str); 7] = [
    (SCHED_FORK_PROGRAM, "sched_process_fork"),
    (SCHED_EXEC_PROGRAM, "sched_process_exec"),
    (SCHED_EXIT_PROGRAM, "sched_process_exit"),
    (CGROUP_RMDIR_PROGRAM, "cgroup_rmdir"),
    (SCHED_SWITCH_PROGRAM, "sched_switch"),
    (SYS_ENTER_PROGRAM, "sys_enter"),
    (SYS_EXIT_PROGRAM, "sys_exit"),
];

/// The programs that count denials in the `fatal` tier instead of the
/// `sys_enter`/`sys_exit` pair: TRAP from `signal_generate` (KILL keeps being
/// counted by [`SCHED_EXIT_PROGRAM`]). Attached after [`KERNEL_PROGRAMS`]' first
/// four (the scheduler and cgroup programs).
pub const FATAL_PROGRAMS: [(&str, &str); 1] = [(SIGNAL_GENERATE_PROGRAM, "signal_generate")];

/// Raw tracepoint program on `signal_generate`: a SIGSYS that seccomp's TRAP
/// raised (the `fatal` tier).
pub const SIGNAL_GENERATE_PROGRAM: &str = "moat_signal_generate";
/// fexit program on [`SECCOMP_FUNCTION`]: every syscall seccomp refused (the
/// `fexit` mechanism of the `all` tier).
pub const SECCOMP_EXIT_PROGRAM: &str = "moat_seccomp_exit";
/// The kernel function whose return value says whether seccomp refused the
/// syscall (-1) or let it run (0).
pub const SECCOMP_FUNCTION: &str = "__secure_computing";

/// The programs that count the process events of the syscall hooks (failed
/// forks, user namespaces) under the `fexit` mechanism, with their kernel
/// functions, in attach order: (program, function, is fentry).
pub const FEXIT_EVENT_PROGRAMS: [(&str, &str, bool); 4] = [
    // The child's first run (schedule_tail) before the clone that marks it.
    ("moat_child_start", "schedule_tail", false),
    ("moat_clone_entry", "kernel_clone", true),
    ("moat_clone_exit", "kernel_clone", false),
    ("moat_unshare_exit", "ksys_unshare", false),
];

/// Raw tracepoint program on `sys_enter`: marks the thread as inside a syscall.
pub const SYS_ENTER_PROGRAM: &str = "moat_sys_enter";
/// Raw tracepoint program on `sys_exit`: pairs the exit, classifies unpaired ones.
pub const SYS_EXIT_PROGRAM: &str = "moat_sys_exit";
/// Raw tracepoint program on `sched_switch`: writes the state of the thread
/// leaving the CPU from the pairing's per-CPU cache back to [`THREAD_STATE_MAP`].
pub const SCHED_SWITCH_PROGRAM: &str = "moat_sched_switch";
/// Raw tracepoint program on `sched_process_fork`.
pub const SCHED_FORK_PROGRAM: &str = "moat_sched_fork";
/// Raw tracepoint program on `sched_process_exec`.
pub const SCHED_EXEC_PROGRAM: &str = "moat_sched_exec";
/// Raw tracepoint program on `sched_process_exit`.
pub const SCHED_EXIT_PROGRAM: &str = "moat_sched_exit";
/// Raw tracepoint program on `cgroup_rmdir`: keeps a removed pids cgroup's
/// final count of refused forks.
pub const CGROUP_RMDIR_PROGRAM: &str = "moat_cgroup_rmdir";

/// Array indexed by thread id: each thread's syscall state (see the eBPF crate).
/// Sized to `pid_max` at load time.
pub const THREAD_STATE_MAP: &str = "THREAD_STATE";
/// Per-CPU hash: [`DenialKey`] → [`Counter`].
pub const DENIALS_MAP: &str = "DENIALS";
/// Per-CPU hash: [`ProcessKey`] → [`Counter`].
pub const PROCESS_EVENTS_MAP: &str = "PROCESS_EVENTS";
/// Per-CPU array of [`Counter`]s indexed by [`map_full`]: updates lost to a full map.
pub const MAP_FULL_MAP: &str = "MAP_FULL";
/// Per-CPU array of [`Counter`]s indexed by [`audit_drop`]: audit records not delivered.
pub const AUDIT_DROPS_MAP: &str = "AUDIT_DROPS";
/// Per-CPU array of [`Counter`]s indexed by [`ignored_exit`]: syscall exits the
/// denial classifier deliberately did not count.
pub const IGNORED_EXITS_MAP: &str = "IGNORED_EXITS";
/// LRU hash: cgroup id → the cgroup's rate-limit state (a GCRA theoretical arrival
/// time, in boot-clock nanoseconds).
pub const AUDIT_RATE_MAP: &str = "AUDIT_RATE";
/// Ring buffer of [`AuditEvent`]s.
pub const AUDIT_EVENTS_MAP: &str = "AUDIT_EVENTS";
/// Hash: cgroup key (as in [`DenialKey::cgroup_id`]) → [`PidsRetired`] of a pids
/// cgroup removed with refused forks on its count; drained by user space.
pub const PIDS_RETIRED_MAP: &str = "PIDS_RETIRED";
/// Entries of [`PIDS_RETIRED_MAP`]: removed pids cgroups waiting for user space
/// (which drains them every poll interval); more are counted as full.
pub const PIDS_RETIRED_ENTRIES: u32 = 4_096;
/// Bytes of a cgroup path kept in [`PidsRetired::path`].
pub const RETIRED_PATH_BYTES: usize = 240;
/// [`Params::pids_hits`] value meaning the kernel's pids counter is unknown:
/// the `cgroup_rmdir` program does nothing.
pub const PIDS_HITS_UNKNOWN: u32 = u32::MAX;
/// The read-only global holding [`Params`], set by the loader.
pub const PARAMS_GLOBAL: &str = "PARAMS";

/// Default entries of [`THREAD_STATE_MAP`] in the object (`PID_MAX_DEFAULT`); the
/// agent always overrides it with the running kernel's `pid_max`.
pub const DEFAULT_THREAD_SLOTS: u32 = 32_768;
/// Default size of [`AUDIT_EVENTS_MAP`] in the object.
pub const DEFAULT_RING_BYTES: u32 = 256 * 1024;
/// Default entries of the aggregation hash maps in the object.
pub const DEFAULT_AGGREGATE_ENTRIES: u32 = 16_384;
/// Default entries of [`AUDIT_RATE_MAP`] in the object.
pub const DEFAULT_RATE_ENTRIES: u32 = 4_096;

/// `AUDIT_ARCH_X86_64`: native x86-64 syscalls (x32 ones too, with bit 30 in the number).
pub const AUDIT_ARCH_X86_64: u32 = 0xC000_003E;
/// `AUDIT_ARCH_I386`: 32-bit compat syscalls (`int 0x80`, `sysenter`, compat `syscall`).
pub const AUDIT_ARCH_I386: u32 = 0x4000_0003;

/// Load-time parameters, passed to the programs as the read-only global
/// [`PARAMS_GLOBAL`]: struct offsets resolved from the kernel's BTF (Rust eBPF has no
/// CO-RE field relocations) and the audit rate limit.
///
/// Offsets are byte offsets from the start of the named struct.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Params {
    /// `task_struct.pid` (the thread id).
    pub task_pid: u32,
    /// `task_struct.tgid` (the process id).
    pub task_tgid: u32,
    /// `task_struct.ptrace` (non-zero while traced).
    pub task_ptrace: u32,
    /// `task_struct.seccomp.mode`.
    pub task_seccomp_mode: u32,
    /// `task_struct.thread_info.status` (x86: `TS_COMPAT`).
    pub task_ti_status: u32,
    /// `task_struct.pending.signal` (the thread's private pending set, first word).
    pub task_pending_signal: u32,
    /// `task_struct.signal` (pointer to `signal_struct`).
    pub task_signal: u32,
    /// `signal_struct.live` (live threads; only used without `group_dead`).
    pub signal_live: u32,
    /// `pt_regs.orig_ax` (the syscall number).
    pub regs_orig_ax: u32,
    /// `pt_regs.di` (first argument of a native syscall).
    pub regs_di: u32,
    /// `pt_regs.bx` (first argument of a 32-bit compat syscall).
    pub regs_bx: u32,
    /// 1 when `sched_process_exit` passes `group_dead` (Linux 6.16+), 0 otherwise.
    pub exit_has_group_dead: u32,
    /// Audit rate limit: nanoseconds between records of one cgroup once its burst
    /// is spent (`1e9 / rate`); [`AUDIT_DISABLED`] drops every record.
    pub audit_interval_ns: u64,
    /// Audit rate limit: how far ahead of now a cgroup's schedule may run,
    /// `(burst - 1) * audit_interval_ns`.
    pub audit_tolerance_ns: u64,
    /// `/proc/sys/kernel/pid_max` at load time (the size of [`THREAD_STATE_MAP`]).
    pub pid_max: u32,
    /// Explicit padding; zero.
    pub _pad: u32,
    /// Id of the v2 root cgroup (the inode number of the v2 mount's root): the id
    /// `bpf_get_current_cgroup_id()` returns for a task placed only in v1 cgroups.
    pub v2_root_cgroup_id: u64,
    /// Id (kernfs node id, the directory's inode number) of the v1 pids
    /// hierarchy's root cgroup.
    pub v1_pids_root_id: u64,
    /// 1 when pids is on a v1 hierarchy: tasks in the v2 root cgroup are then keyed
    /// by their v1 pids cgroup, as [`V1_PIDS_ID_FLAG`]` | id`; 0 disables that.
    pub v1_pids_rekey: u32,
    /// `task_struct.cgroups` (pointer to `css_set`).
    pub task_cgroups: u32,
    /// `css_set.subsys[pids_cgrp_id]` (pointer to the pids `cgroup_subsys_state`).
    pub css_set_pids: u32,
    /// `cgroup_subsys_state.cgroup` (pointer to `cgroup`).
    pub css_cgroup: u32,
    /// `cgroup.kn` (pointer to `kernfs_node`).
    pub cgroup_kn: u32,
    /// `kernfs_node.id` (u64).
    pub kn_id: u32,
    /// `cgroup.subsys[pids_cgrp_id]` (pointer to the cgroup's own pids
    /// `cgroup_subsys_state`, which `struct pids_cgroup` starts with; null when
    /// the cgroup has no pids state of its own).
    pub cgroup_pids_css: u32,
    /// Offset in `struct pids_cgroup` of the counter `pids.events` shows as
    /// `max` (which one depends on the kernel and the hierarchy), or
    /// [`PIDS_HITS_UNKNOWN`].
    pub pids_hits: u32,
    /// 1 when pids is on a v1 hierarchy: removed pids cgroups are keyed as
    /// [`V1_PIDS_ID_FLAG`]` | id`.
    pub pids_on_v1: u32,
    /// `pt_regs.ax` (the return value; seccomp's TRAP and KILL roll it back to
    /// the syscall number).
    pub regs_ax: u32,
    /// `task_struct.flags` (`PF_KTHREAD`).
    pub task_flags: u32,
    /// `signal_struct.nr_threads` (threads in the group, not yet released).
    pub signal_nr_threads: u32,
}

/// Value of [`PIDS_RETIRED_MAP`].
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PidsRetired {
    /// The final value of the count `pids.events` shows as `max`.
    pub hits: u64,
    /// The cgroup's path relative to its hierarchy's root, NUL-terminated
    /// (cut at [`RETIRED_PATH_BYTES`] - 1 bytes: then without a NUL).
    pub path: [u8; RETIRED_PATH_BYTES],
}

/// Set in a cgroup key (of [`DENIALS_MAP`], [`PROCESS_EVENTS_MAP`] and in
/// [`AuditEvent::cgroup_id`]) that names a cgroup of the v1 pids hierarchy (its
/// kernfs node id, the directory's inode number, in the other bits) rather than a
/// v2 one. The programs use it for tasks whose v2 cgroup is the root when pids is
/// on v1 (see [`Params::v1_pids_rekey`]).
pub const V1_PIDS_ID_FLAG: u64 = 1 << 63;

/// [`Params::audit_interval_ns`] value that disables audit records (rate 0).
pub const AUDIT_DISABLED: u64 = u64::MAX;

impl Params {
    /// All zero, for the object's initial value.
    pub const ZERO: Params = Params {
        task_pid: 0,
        task_tgid: 0,
        task_ptrace: 0,
        task_seccomp_mode: 0,
        task_ti_status: 0,
        task_pending_signal: 0,
        task_signal: 0,
        signal_live: 0,
        regs_orig_ax: 0,
        regs_di: 0,
        regs_bx: 0,
        exit_has_group_dead: 0,
        audit_interval_ns: AUDIT_DISABLED,
        audit_tolerance_ns: 0,
        pid_max: 0,
        _pad: 0,
        v2_root_cgroup_id: 0,
        v1_pids_root_id: 0,
        v1_pids_rekey: 0,
        task_cgroups: 0,
        css_set_pids: 0,
        css_cgroup: 0,
        cgroup_kn: 0,
        kn_id: 0,
        cgroup_pids_css: 0,
        pids_hits: PIDS_HITS_UNKNOWN,
        pids_on_v1: 0,
        regs_ax: 0,
        task_flags: 0,
        signal_nr_threads: 0,
    };
}

/// How a seccomp filter refused a syscall ([`DenialKey::action`], [`AuditEvent::action`]).
pub mod action {
    /// `SECCOMP_RET_ERRNO` (also `SECCOMP_RET_TRACE` without a tracer: ENOSYS).
    pub const ERRNO: u32 = 0;
    /// `SECCOMP_RET_TRAP`.
    pub const TRAP: u32 = 1;
    /// `SECCOMP_RET_KILL_THREAD` / `SECCOMP_RET_KILL_PROCESS`.
    pub const KILL: u32 = 2;
}

/// Key of [`DENIALS_MAP`].
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct DenialKey {
    /// v2 cgroup id of the task (`bpf_get_current_cgroup_id`), or
    /// [`V1_PIDS_ID_FLAG`]` | <v1 pids cgroup id>` (see [`Params::v1_pids_rekey`]).
    pub cgroup_id: u64,
    /// `AUDIT_ARCH_*` of the syscall's calling convention.
    pub arch: u32,
    /// Syscall number as the task issued it (`pt_regs.orig_ax`).
    pub syscall_nr: i32,
    /// An [`action`] constant.
    pub action: u32,
    /// The errno for [`action::ERRNO`], 0 otherwise.
    pub errno: u32,
}

/// Process event kinds ([`ProcessKey::kind`]).
pub mod process_kind {
    /// A new process (fork, vfork, clone without `CLONE_THREAD`).
    pub const FORK_PROCESS: u32 = 0;
    /// A new thread.
    pub const FORK_THREAD: u32 = 1;
    /// A successful exec.
    pub const EXEC: u32 = 2;
    /// A process ended (its last thread exited).
    pub const EXIT: u32 = 3;
    /// fork, vfork, clone or clone3 returned an error.
    pub const FORK_FAILED: u32 = 4;
    /// A user namespace was created.
    pub const USERNS_CREATED: u32 = 5;
}

/// Key of [`PROCESS_EVENTS_MAP`].
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct ProcessKey {
    /// v2 cgroup id of the task that caused the event, or [`V1_PIDS_ID_FLAG`]` | <v1
    /// pids cgroup id>` (as in [`DenialKey::cgroup_id`]).
    pub cgroup_id: u64,
    /// A [`process_kind`] constant.
    pub kind: u32,
    /// The errno for [`process_kind::FORK_FAILED`], 0 otherwise.
    pub errno: u32,
}

/// Audit record kinds ([`AuditEvent::kind`]).
pub mod audit_kind {
    /// A syscall refused by seccomp.
    pub const SECCOMP_DENIED: u32 = 0;
    /// A fork-family syscall failed.
    pub const FORK_FAILED: u32 = 1;
    /// A user namespace was created.
    pub const USERNS_CREATED: u32 = 2;
}

/// One record of [`AUDIT_EVENTS_MAP`].
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AuditEvent {
    /// `bpf_ktime_get_boot_ns()`.
    pub boot_ns: u64,
    /// v2 cgroup id, or a v1 pids one (as in [`DenialKey::cgroup_id`]).
    pub cgroup_id: u64,
    /// Process id (tgid).
    pub pid: u32,
    /// Thread id.
    pub tid: u32,
    /// An [`audit_kind`] constant.
    pub kind: u32,
    /// `AUDIT_ARCH_*` (denials only).
    pub arch: u32,
    /// Syscall number (denials only).
    pub syscall_nr: i32,
    /// An [`action`] constant (denials only).
    pub action: u32,
    /// errno (ERRNO denials and failed forks).
    pub errno: u32,
    /// Explicit padding; zero.
    pub _pad: u32,
    /// The task's `comm`, NUL-padded.
    pub comm: [u8; 16],
}

/// Slot indices of [`MAP_FULL_MAP`]: which map refused an update.
pub mod map_full {
    /// [`super::DENIALS_MAP`] was full: a denial was not counted.
    pub const DENIALS: u32 = 0;
    /// [`super::PROCESS_EVENTS_MAP`] was full: a process event was not counted.
    pub const PROCESS_EVENTS: u32 = 1;
    /// [`super::AUDIT_RATE_MAP`] refused a new cgroup (the record was dropped).
    pub const AUDIT_RATE: u32 = 2;
    /// A thread id at or above the size of [`super::THREAD_STATE_MAP`] (pid_max was
    /// raised after loading): that thread's syscalls cannot be paired.
    pub const THREAD_STATE: u32 = 3;
    /// [`super::PIDS_RETIRED_MAP`] was full: a removed pids cgroup's refused forks
    /// were not kept.
    pub const PIDS_RETIRED: u32 = 4;
    /// Number of slots.
    pub const COUNT: u32 = 5;
    /// Names, indexed like the slots (the `map` label).
    pub const NAMES: [&str; COUNT as usize] = [
        "denials",
        "process_events",
        "audit_rate",
        "thread_state",
        "pids_retired",
    ];
}

/// Slot indices of [`AUDIT_DROPS_MAP`].
pub mod audit_drop {
    /// The cgroup's rate limit was exhausted.
    pub const RATE_LIMITED: u32 = 0;
    /// The ring buffer had no room.
    pub const BUFFER_FULL: u32 = 1;
    /// Number of slots.
    pub const COUNT: u32 = 2;
    /// Names, indexed like the slots (the `reason` label).
    pub const NAMES: [&str; COUNT as usize] = ["rate_limited", "buffer_full"];
}

/// Slot indices of [`IGNORED_EXITS_MAP`]: syscall exits without a matching
/// `sys_enter` that were deliberately not counted as denials.
pub mod ignored_exit {
    /// The thread was never seen entering a syscall since the programs were loaded
    /// (it was already inside one when they attached).
    pub const UNKNOWN_THREAD: u32 = 0;
    /// A new task's first return to user space (from fork/clone, or a kernel
    /// thread turning into a user process).
    pub const NEW_TASK: u32 = 1;
    /// The task is ptraced: a tracer can skip syscalls itself (PTRACE_SYSEMU, a
    /// fatal signal at the entry stop), which is indistinguishable from ERRNO.
    pub const PTRACED: u32 = 2;
    /// `orig_ax` is -1: the syscall was skipped by a tracer or had no number.
    pub const NO_SYSCALL: u32 = 3;
    /// The return value is neither `-errno` nor the syscall number with SIGSYS
    /// pending (e.g. `SECCOMP_RET_USER_NOTIF` answered with a positive value).
    pub const UNCLASSIFIED: u32 = 4;
    /// The task has no seccomp filter, so the syscall was skipped by something else
    /// (a tracer that detached at the entry stop of a PTRACE_SYSEMU syscall, ...).
    pub const NO_FILTER: u32 = 5;
    /// (`fatal` tier) A SIGSYS with `si_code == SYS_SECCOMP` that seccomp did not
    /// raise: queued by the process itself (`rt_sigqueueinfo` and the like), or
    /// sent to another thread than the current one.
    pub const FORGED_SIGSYS: u32 = 6;
    /// Number of slots.
    pub const COUNT: u32 = 7;
    /// Names, indexed like the slots.
    pub const NAMES: [&str; COUNT as usize] = [
        "unknown_thread",
        "new_task",
        "ptraced",
        "no_syscall",
        "unclassified",
        "no_filter",
        "forged_sigsys",
    ];
}

// ---------------------------------------------------------------------------
// Profile recording: the syscalls of chosen cgroups, exactly (`moat run
// --record-profile`, `moat profile record`).

/// Array of two `u32`s, the gate the `sys_enter` hook reads before anything
/// else: [`RECORD_GATE_V2`] is the number of recordings keyed by a v2 cgroup
/// id, [`RECORD_GATE_V1`] the number keyed by a v1 pids cgroup
/// ([`V1_PIDS_ID_FLAG`]). Both zero: the hook costs one array load. Written
/// by user space (under a lock on the pin directory) after every change of
/// [`RECORD_CGROUPS_MAP`].
pub const RECORD_GATE_MAP: &str = "RECORD_GATE";
/// Index of [`RECORD_GATE_MAP`]: recordings keyed by a v2 cgroup id.
pub const RECORD_GATE_V2: u32 = 0;
/// Index of [`RECORD_GATE_MAP`]: recordings keyed by a v1 pids cgroup.
pub const RECORD_GATE_V1: u32 = 1;
/// Hash: cgroup key (a v2 cgroup id, or [`V1_PIDS_ID_FLAG`]` | <v1 pids cgroup
/// id>`) → [`RecordState`]: the cgroups being recorded. A v2 entry covers the
/// cgroups below it too (any depth up to [`RECORD_MAX_LEVEL`]).
pub const RECORD_CGROUPS_MAP: &str = "RECORD_CGROUPS";
/// Entries of [`RECORD_CGROUPS_MAP`]: recordings at the same time.
pub const RECORD_CGROUPS_ENTRIES: u32 = 1_024;
/// Hash: [`RecordKey`] → `u8` (1): the set of (arch, syscall number) each
/// recorded cgroup made. No bitmap: any number the task passes is recorded.
pub const RECORD_SYSCALLS_MAP: &str = "RECORD_SYSCALLS";
/// Entries of [`RECORD_SYSCALLS_MAP`] (all recordings together; a typical
/// workload uses 40 to 150). A full map is counted in [`RecordState::lost`]
/// and the recording is refused, never written incomplete.
pub const RECORD_SYSCALLS_ENTRIES: u32 = 65_536;
/// Where moatd pins the three recording maps (by their names) and
/// [`RECORD_ENTER_PROGRAM`] (as [`RECORD_ENTER_PIN`]).
pub const RECORD_PIN_DIR: &str = "/sys/fs/bpf/moat";
/// Raw tracepoint program on `sys_enter` that only records (no pairing).
/// moatd loads and pins it but never attaches it; `moat` attaches it for the
/// length of a recording (unless an older moatd's [`SYS_ENTER_PROGRAM`] still
/// records itself). At most 15 characters: the
/// kernel keeps that much of a program's name, and `moat` tells programs
/// apart by it.
pub const RECORD_ENTER_PROGRAM: &str = "moat_rec_enter";
/// The file name of [`RECORD_ENTER_PROGRAM`]'s pin in the pin directory.
pub const RECORD_ENTER_PIN: &str = "record_enter";
/// Deepest cgroup level (v2) the hook walks up from a task to find a recorded
/// ancestor.
pub const RECORD_MAX_LEVEL: i32 = 16;

/// [`RecordState::state`] values.
pub mod record_state {
    /// Flagged before the workload's first process runs: only its `execve`
    /// (and `execveat`) is recorded, until the first exec in the cgroup, so
    /// that the launcher's own set-up calls are not.
    pub const ARMED: u32 = 1;
    /// Every syscall is recorded.
    pub const RECORDING: u32 = 2;
}

/// Value of [`RECORD_CGROUPS_MAP`].
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RecordState {
    /// A [`record_state`] constant.
    pub state: u32,
    /// Explicit padding; zero.
    pub _pad: u32,
    /// Syscalls that could not be recorded ([`RECORD_SYSCALLS_MAP`] full).
    pub lost: u64,
}

/// Key of [`RECORD_SYSCALLS_MAP`].
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RecordKey {
    /// The recording's key in [`RECORD_CGROUPS_MAP`] (not the task's own
    /// cgroup when it is below the recorded one).
    pub cgroup_id: u64,
    /// `AUDIT_ARCH_*` of the calling convention (x32 calls are
    /// [`AUDIT_ARCH_X86_64`] with bit 30 in the number).
    pub arch: u32,
    /// The syscall number as the task issued it (`orig_ax`).
    pub nr: u32,
}

#[cfg(feature = "user")]
mod pod {
    // Each: `#[repr(C)]`, only integer fields and byte arrays, no implicit
    // padding (checked by the size assertions in the tests below), so every bit
    // pattern is valid and no byte is uninitialised.

    // SAFETY: see above.
    unsafe impl aya::Pod for super::Params {}
    // SAFETY: see above.
    unsafe impl aya::Pod for super::DenialKey {}
    // SAFETY: see above.
    unsafe impl aya::Pod for super::ProcessKey {}
    // SAFETY: see above.
    unsafe impl aya::Pod for super::AuditEvent {}
    // SAFETY: see above.
    unsafe impl aya::Pod for super::PidsRetired {}
    // SAFETY: see above.
    unsafe impl aya::Pod for super::RecordState {}
    // SAFETY: see above.
    unsafe impl aya::Pod for super::RecordKey {}
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Sizes equal to the sum of the fields: no implicit padding anywhere.
    #[test]
    fn records_have_no_implicit_padding() {
        assert_eq!(
            core::mem::size_of::<Params>(),
            12 * 4 + 2 * 8 + 2 * 4 + 2 * 8 + 6 * 4 + 4 * 4 + 2 * 4
        );
        assert_eq!(core::mem::size_of::<PidsRetired>(), 8 + RETIRED_PATH_BYTES);
        assert_eq!(core::mem::size_of::<DenialKey>(), 8 + 4 * 4);
        assert_eq!(core::mem::size_of::<ProcessKey>(), 8 + 2 * 4);
        assert_eq!(core::mem::size_of::<AuditEvent>(), 2 * 8 + 8 * 4 + 16);
        assert_eq!(core::mem::size_of::<RecordState>(), 2 * 4 + 8);
        assert_eq!(core::mem::size_of::<RecordKey>(), 8 + 2 * 4);
    }

    #[test]
    fn the_names_moat_compares_fit_the_kernels_program_name() {
        // BPF_OBJ_NAME_LEN is 16, with the NUL.
        for name in [RECORD_ENTER_PROGRAM, SYS_ENTER_PROGRAM, SCHED_EXEC_PROGRAM] {
            assert!(name.len() <= 15, "{name}");
        }
    }

    #[test]
    fn program_names_are_unique() {
        let mut names: Vec<&str> = KERNEL_PROGRAMS.iter().map(|(name, _)| *name).collect();
        names.extend(FATAL_PROGRAMS.iter().map(|(name, _)| *name));
        names.push(SECCOMP_EXIT_PROGRAM);
        names.extend(FEXIT_EVENT_PROGRAMS.iter().map(|(name, _, _)| *name));
        names.push(RECORD_ENTER_PROGRAM);
        for (i, a) in names.iter().enumerate() {
            for b in &names[i + 1..] {
                assert_ne!(a, b);
            }
        }
    }
}
