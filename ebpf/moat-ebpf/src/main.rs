//! moat's kernel-side eBPF programs.
//!
//! Built for `bpfel-unknown-none` by `agent/build.rs` (aya-build, pinned nightly,
//! `-Z build-std=core`) and embedded in `moatd`. Names of maps and programs, map
//! indices and record layouts come from `moat-common` so both sides agree on them.
//!
//! Entry points stay thin: each `#[raw_tracepoint]` function only calls a `try_`
//! function and drops its error, because a tracepoint program cannot fail the event
//! it observes; errors are for early returns, not for reporting.
//!
//! # Seccomp denials without a seccomp hook
//!
//! In the syscall entry path seccomp runs *before* the `sys_enter` tracepoint, and a
//! refused syscall skips it, but `sys_exit` still fires. So every thread has a slot in
//! [`THREAD_STATE`] (an array indexed by thread id, sized to `pid_max`):
//!
//! | state | set by | meaning at `sys_exit` |
//! | --- | --- | --- |
//! | `UNKNOWN` (0) | map creation, `exec` tid hand-over | thread not seen entering since load: ignore |
//! | `IDLE` | every `sys_exit` | no syscall entered: **refused by seccomp**, classify |
//! | `ENTERED` | `sys_enter` (with the syscall number, and flags for fork/unshare) | paired: normal |
//! | `NEW_TASK` | `sched_process_fork` on the child | a new task's first return: ignore (and count the user namespace it was cloned into, if its parent asked for one) |
//!
//! The paired fast path is one helper call (`bpf_get_current_pid_tgid`), an inlined
//! array lookup, a load, a compare and a store, in each program.
//!
//! An unpaired exit is classified from the registers and the task (offsets from BTF,
//! see [`Params`]): `orig_ax == -1` (skipped by a tracer), tasks without a seccomp
//! filter (nothing but seccomp is counted, so nothing else can be miscounted) and
//! ptraced tasks are ignored; `ret == nr` with SIGSYS pending is TRAP; `ret` in
//! `[-4095, 0]` is ERRNO.
//! KILL is counted on `sched_process_exit` from `seccomp.mode == SECCOMP_MODE_DEAD`,
//! because `KILL_THREAD` in a multi-threaded process exits inside the entry path and
//! never reaches `sys_exit`; counting every kill there, and only there, counts each
//! exactly once.
//!
//! That pairing is one of three ways of counting refusals (`[tracing]` in
//! moatd.toml, see `docs/kernel-side.md`); the others are in [`refusals`]
//! (fexit on `__secure_computing`, and `signal_generate` for the `fatal` tier)
//! and [`fexit_events`] (the pairing's process events under fexit).
#![no_std]
#![no_main]

use core::ptr::addr_of_mut;

use aya_ebpf::{
    bindings::BPF_NOEXIST,
    helpers::{
        bpf_get_current_cgroup_id, bpf_get_current_pid_tgid, bpf_ktime_get_boot_ns,
        bpf_probe_read_kernel, bpf_probe_read_kernel_str_bytes, bpf_probe_read_user,
        generated::{
            bpf_get_current_comm, bpf_get_current_task, bpf_get_current_task_btf, bpf_task_pt_regs,
        },
    },
    macros::{map, raw_tracepoint},
    maps::{Array, HashMap, LruHashMap, PerCpuArray, PerCpuHashMap, RingBuf},
    programs::RawTracePointContext,
    Global,
};
use moat_common::{
    action, audit_drop, audit_kind, ignored_exit, map_full, process_kind, AuditEvent, Counter,
    DenialKey, Params, PidsRetired, ProcessKey, AUDIT_ARCH_I386, AUDIT_ARCH_X86_64, AUDIT_DISABLED,
    DEFAULT_AGGREGATE_ENTRIES, DEFAULT_RATE_ENTRIES, DEFAULT_RING_BYTES, DEFAULT_THREAD_SLOTS,
    PIDS_HITS_UNKNOWN, PIDS_RETIRED_ENTRIES, RETIRED_PATH_BYTES, V1_PIDS_ID_FLAG,
};

// ---------------------------------------------------------------------------
// Maps and load-time parameters

/// Each thread's syscall state, indexed by thread id (see the crate docs).
///
/// A plain array, not a hash: the lookup is inlined by the verifier into a bounds
/// check and an address computation, which keeps the per-syscall cost low. Only the
/// thread itself writes its slot, except `sched_process_fork` (before the child
/// first runs) and `sched_process_exec` (the exec'ing thread, for itself).
#[map]
static THREAD_STATE: Array<u64> = Array::with_max_entries(DEFAULT_THREAD_SLOTS, 0);

/// Seccomp denials per (cgroup, arch, syscall, action, errno).
#[map]
static DENIALS: PerCpuHashMap<DenialKey, Counter> =
    PerCpuHashMap::with_max_entries(DEFAULT_AGGREGATE_ENTRIES, 0);

/// Process events per (cgroup, kind, errno).
#[map]
static PROCESS_EVENTS: PerCpuHashMap<ProcessKey, Counter> =
    PerCpuHashMap::with_max_entries(DEFAULT_AGGREGATE_ENTRIES, 0);

/// Updates lost to a full map, per `map_full` index.
#[map]
static MAP_FULL: PerCpuArray<Counter> = PerCpuArray::with_max_entries(map_full::COUNT, 0);

/// Audit records not delivered, per `audit_drop` index.
#[map]
static AUDIT_DROPS: PerCpuArray<Counter> = PerCpuArray::with_max_entries(audit_drop::COUNT, 0);

/// Unpaired syscall exits deliberately not counted, per `ignored_exit` index.
#[map]
static IGNORED_EXITS: PerCpuArray<Counter> = PerCpuArray::with_max_entries(ignored_exit::COUNT, 0);

/// Per-cgroup audit rate limit: the GCRA "theoretical arrival time" (boot ns).
#[map]
static AUDIT_RATE: LruHashMap<u64, u64> = LruHashMap::with_max_entries(DEFAULT_RATE_ENTRIES, 0);

/// Audit records for user space.
#[map]
static AUDIT_EVENTS: RingBuf = RingBuf::with_byte_size(DEFAULT_RING_BYTES, 0);

/// Removed pids cgroups with refused forks on their count, keyed like the
/// counters; user space drains it.
#[map]
static PIDS_RETIRED: HashMap<u64, PidsRetired> = HashMap::with_max_entries(PIDS_RETIRED_ENTRIES, 0);

/// Thread groups whose exit was counted, by `signal_struct` address, on kernels
/// whose `sched_process_exit` has no `group_dead` (before 6.16): there the last
/// threads of a process that exit together can all see `signal->live == 0`, each
/// after its own decrement, and only the first may count the process. A process
/// fork clears its entry (the address may be reused); LRU, so the entries of
/// addresses never reused age out.
#[map]
static EXITED_GROUPS: LruHashMap<u64, u8> = LruHashMap::with_max_entries(EXITED_GROUP_ENTRIES, 0);

/// Exits counted at the same time, at most: far more than enough.
const EXITED_GROUP_ENTRIES: u32 = 4_096;

/// Struct offsets and the audit rate limit, set by the loader (`override_global`).
#[unsafe(no_mangle)]
static PARAMS: Global<Params> = Global::new(Params::ZERO);

/// Reads one field of [`PARAMS`]. Volatile, so the compiler cannot fold the
/// object's initial value; the verifier sees a load from a frozen read-only map.
macro_rules! param {
    ($field:ident) => {{
        let params = ::core::ptr::addr_of!(crate::PARAMS).cast::<::moat_common::Params>();
        // SAFETY: `Global<T>` is `repr(transparent)` over an initialised `T`.
        unsafe { ::core::ptr::read_volatile(::core::ptr::addr_of!((*params).$field)) }
    }};
}

// After `param!`, which they use.
mod fexit_events;
mod record;
mod refusals;

// ---------------------------------------------------------------------------
// Thread state encoding: state in bits 56..64, flags in 48..56, syscall nr in 0..32.

const STATE_SHIFT: u32 = 56;
const FLAGS_SHIFT: u32 = 48;
const ST_UNKNOWN: u64 = 0;
const ST_IDLE: u64 = 1;
const ST_ENTERED: u64 = 2;
const ST_NEW_TASK: u64 = 3;
/// The syscall is fork, vfork, clone or clone3 (for the arch it was made in).
const F_FORK: u64 = 1;
/// The syscall is unshare.
const F_UNSHARE: u64 = 2;
/// Its flags include `CLONE_NEWUSER`.
const F_NEWUSER: u64 = 4;

const IDLE: u64 = ST_IDLE << STATE_SHIFT;
const NEW_TASK: u64 = ST_NEW_TASK << STATE_SHIFT;
const ENTERED: u64 = ST_ENTERED << STATE_SHIFT;
/// `slot >> FLAGS_SHIFT` of a plain entered syscall (no flags): the fast path.
const ENTERED_PLAIN_TOP: u64 = ENTERED >> FLAGS_SHIFT;

// ---------------------------------------------------------------------------
// Kernel constants (uapi or stable ABI)

/// `SECCOMP_MODE_DISABLED`: the task has no seccomp filter (nor strict mode).
const SECCOMP_MODE_DISABLED: u32 = 0;
/// `SECCOMP_MODE_DEAD`: set on a task by a seccomp KILL action.
const SECCOMP_MODE_DEAD: u32 = 3;
/// x86 `TS_COMPAT` in `thread_info.status`: a 32-bit syscall is in progress.
const TS_COMPAT: u32 = 0x0002;
/// `CLONE_NEWUSER`.
const CLONE_NEWUSER: u64 = 0x1000_0000;
/// `SIGSYS`, as a bit of a `sigset_t` word.
const SIGSYS_BIT: u64 = 1 << (31 - 1);
/// `MAX_ERRNO`: syscall errors are `-4095..=-1`.
const MAX_ERRNO: i64 = 4095;
/// The kernel-internal restart codes start here (`ERESTARTSYS`); a fork returning
/// one is restarted, never seen by the caller.
const ERESTARTSYS: i64 = 512;
const EEXIST: i32 = 17;

/// x86-64 native syscall numbers the programs watch.
mod nr64 {
    pub const CLONE: i64 = 56;
    pub const FORK: i64 = 57;
    pub const VFORK: i64 = 58;
    pub const UNSHARE: i64 = 272;
    pub const CLONE3: i64 = 435;
}

/// i386 (compat) syscall numbers the programs watch.
mod nr32 {
    pub const FORK: i64 = 2;
    pub const CLONE: i64 = 120;
    pub const VFORK: i64 = 190;
    pub const UNSHARE: i64 = 310;
    pub const CLONE3: i64 = 435;
}

/// Why a `try_` function stopped early.
enum Error {
    /// A map lookup or a kernel read failed.
    Lookup,
}

// ---------------------------------------------------------------------------
// Entry points

/// `sys_enter(struct pt_regs *regs, long id)`: marks the thread as inside syscall `id`.
#[raw_tracepoint(tracepoint = "sys_enter")]
pub fn moat_sys_enter(ctx: RawTracePointContext) -> u32 {
    // First, so that a thread the denial tracking cannot follow (a tid beyond
    // `THREAD_STATE`) is still recorded.
    record::on_sys_enter(ctx.arg(1));
    match try_sys_enter(&ctx) {
        Ok(()) => 0,
        Err(_) => 1,
    }
}

/// `sys_exit(struct pt_regs *regs, long ret)`: pairs the exit with its entry; an
/// unpaired one is a syscall refused by seccomp (or one of the exclusions).
#[raw_tracepoint(tracepoint = "sys_exit")]
pub fn moat_sys_exit(ctx: RawTracePointContext) -> u32 {
    match try_sys_exit(&ctx) {
        Ok(()) => 0,
        Err(_) => 1,
    }
}

/// `sched_process_fork(struct task_struct *parent, struct task_struct *child)`.
#[raw_tracepoint(tracepoint = "sched_process_fork")]
pub fn moat_sched_fork(ctx: RawTracePointContext) -> u32 {
    match try_sched_fork(&ctx) {
        Ok(()) => 0,
        Err(_) => 1,
    }
}

/// `sched_process_exec(struct task_struct *p, pid_t old_pid, struct linux_binprm *bprm)`.
#[raw_tracepoint(tracepoint = "sched_process_exec")]
pub fn moat_sched_exec(ctx: RawTracePointContext) -> u32 {
    match try_sched_exec(&ctx) {
        Ok(()) => 0,
        Err(_) => 1,
    }
}

/// `sched_process_exit(struct task_struct *p[, bool group_dead])`.
#[raw_tracepoint(tracepoint = "sched_process_exit")]
pub fn moat_sched_exit(ctx: RawTracePointContext) -> u32 {
    match try_sched_exit(&ctx) {
        Ok(()) => 0,
        Err(_) => 1,
    }
}

/// `cgroup_rmdir(struct cgroup *cgrp, const char *path)`: a cgroup was removed.
#[raw_tracepoint(tracepoint = "cgroup_rmdir")]
pub fn moat_cgroup_rmdir(ctx: RawTracePointContext) -> u32 {
    match try_cgroup_rmdir(&ctx) {
        Ok(()) => 0,
        Err(_) => 1,
    }
}

// ---------------------------------------------------------------------------
// sys_enter / sys_exit

#[inline(always)]
fn try_sys_enter(ctx: &RawTracePointContext) -> Result<(), Error> {
    let tid = bpf_get_current_pid_tgid() as u32;
    let nr: i64 = ctx.arg(1);
    // A tid beyond the array (pid_max raised after load) is counted at sys_exit.
    let slot = THREAD_STATE.get_ptr_mut(tid).ok_or(Error::Lookup)?;
    let value = if is_watched(nr) {
        ENTERED | (watched_flags(ctx, nr) << FLAGS_SHIFT) | u64::from(nr as u32)
    } else {
        ENTERED | u64::from(nr as u32)
    };
    // SAFETY: a pointer to this thread's slot, valid for the program's run.
    unsafe { *slot = value };
    Ok(())
}

/// Syscall numbers that may be fork-family or unshare in either ABI. A superset:
/// [`watched_flags`] decides with the task's ABI.
#[inline(always)]
fn is_watched(nr: i64) -> bool {
    matches!(
        nr,
        nr32::FORK
            | nr64::CLONE
            | nr64::FORK
            | nr64::VFORK
            | nr32::CLONE
            | nr32::VFORK
            | nr64::UNSHARE
            | nr32::UNSHARE
            | nr64::CLONE3
    )
}

/// `F_*` flags for a watched syscall: which kind it is in the calling ABI, and
/// whether its flags ask for a new user namespace.
#[inline(always)]
fn watched_flags(ctx: &RawTracePointContext, nr: i64) -> u64 {
    let regs: *const u8 = ctx.arg(0);
    let task = current_task();
    let compat = is_compat(task);
    // (kind, register holding the flags or the clone_args pointer, is clone3)
    let (kind, arg_reg, clone3) = if compat {
        match nr {
            nr32::FORK | nr32::VFORK => (F_FORK, None, false),
            nr32::CLONE => (F_FORK, Some(param!(regs_bx)), false),
            nr32::CLONE3 => (F_FORK, Some(param!(regs_bx)), true),
            nr32::UNSHARE => (F_UNSHARE, Some(param!(regs_bx)), false),
            _ => (0, None, false),
        }
    } else {
        match nr {
            nr64::FORK | nr64::VFORK => (F_FORK, None, false),
            nr64::CLONE => (F_FORK, Some(param!(regs_di)), false),
            nr64::CLONE3 => (F_FORK, Some(param!(regs_di)), true),
            nr64::UNSHARE => (F_UNSHARE, Some(param!(regs_di)), false),
            _ => (0, None, false),
        }
    };
    let Some(offset) = arg_reg else {
        return kind;
    };
    let arg = read_kernel::<u64>(regs, offset).unwrap_or(0);
    let clone_flags = if clone3 {
        // `struct clone_args` starts with `__aligned_u64 flags`. The caller just
        // wrote it, so the page is present; a failed read only loses the flag.
        // SAFETY: bpf_probe_read_user checks the address.
        unsafe { bpf_probe_read_user(arg as *const u64) }.unwrap_or(0)
    } else if compat {
        arg & 0xffff_ffff
    } else {
        arg
    };
    if clone_flags & CLONE_NEWUSER != 0 {
        kind | F_NEWUSER
    } else {
        kind
    }
}

#[inline(always)]
fn try_sys_exit(ctx: &RawTracePointContext) -> Result<(), Error> {
    let tid = bpf_get_current_pid_tgid() as u32;
    let Some(slot) = THREAD_STATE.get_ptr_mut(tid) else {
        // pid_max was raised after load: this thread cannot be paired.
        return increment(&MAP_FULL, map_full::THREAD_STATE);
    };
    // SAFETY: a pointer to this thread's slot, valid for the program's run; only
    // this thread writes it while it runs.
    let value = unsafe { *slot };
    unsafe { *slot = IDLE };
    if value >> FLAGS_SHIFT == ENTERED_PLAIN_TOP {
        return Ok(());
    }
    match value >> STATE_SHIFT {
        ST_ENTERED => exit_watched(ctx, (value >> FLAGS_SHIFT) & 0xff),
        ST_UNKNOWN => increment(&IGNORED_EXITS, ignored_exit::UNKNOWN_THREAD),
        ST_NEW_TASK => {
            if (value >> FLAGS_SHIFT) & F_NEWUSER != 0 {
                // The first return of a child cloned into a new user namespace:
                // the namespace is counted here, in the child's own cgroup.
                let cgroup = workload_cgroup();
                count_process_event(cgroup, process_kind::USERNS_CREATED, 0)?;
                audit(cgroup, audit_kind::USERNS_CREATED, 0, 0, 0, 0);
            }
            increment(&IGNORED_EXITS, ignored_exit::NEW_TASK)
        }
        _ => unpaired_exit(ctx),
    }
}

/// The exit of a fork-family or unshare syscall that was entered normally.
#[inline(always)]
fn exit_watched(ctx: &RawTracePointContext, flags: u64) -> Result<(), Error> {
    let ret: i64 = ctx.arg(1);
    if flags & F_FORK != 0 {
        if ret < 0 && ret > -ERESTARTSYS {
            let errno = (-ret) as u32;
            let cgroup = workload_cgroup();
            count_process_event(cgroup, process_kind::FORK_FAILED, errno)?;
            audit(cgroup, audit_kind::FORK_FAILED, 0, 0, 0, errno);
        }
        // A user namespace made by a clone belongs to the child, whose cgroup
        // may not be the parent's (CLONE_INTO_CGROUP): it is counted at the
        // child's first return (see try_sched_fork and try_sys_exit).
    } else if flags & F_UNSHARE != 0 && ret == 0 && flags & F_NEWUSER != 0 {
        let cgroup = workload_cgroup();
        count_process_event(cgroup, process_kind::USERNS_CREATED, 0)?;
        audit(cgroup, audit_kind::USERNS_CREATED, 0, 0, 0, 0);
    }
    Ok(())
}

/// A syscall exit without a `sys_enter` by a thread known to be outside a syscall.
#[inline(always)]
fn unpaired_exit(ctx: &RawTracePointContext) -> Result<(), Error> {
    let regs: *const u8 = ctx.arg(0);
    let ret: i64 = ctx.arg(1);
    let nr = read_kernel::<i64>(regs, param!(regs_orig_ax))?;
    if nr < 0 {
        return increment(&IGNORED_EXITS, ignored_exit::NO_SYSCALL);
    }
    let task = current_task();
    match read_kernel::<u32>(task, param!(task_seccomp_mode))? {
        // KILL: counted once, when the thread exits (see try_sched_exit).
        SECCOMP_MODE_DEAD => return Ok(()),
        // No filter, so no seccomp denial: whatever skipped this syscall (a tracer
        // that has detached since, ...), it was not seccomp.
        SECCOMP_MODE_DISABLED => return increment(&IGNORED_EXITS, ignored_exit::NO_FILTER),
        _ => {}
    }
    refusals::count_refusal(task, nr, ret)
}

// ---------------------------------------------------------------------------
// Scheduler tracepoints

#[inline(always)]
fn try_sched_fork(ctx: &RawTracePointContext) -> Result<(), Error> {
    let child: *const u8 = ctx.arg(1);
    let pid = read_kernel::<u32>(child, param!(task_pid))?;
    let tgid = read_kernel::<u32>(child, param!(task_tgid))?;
    // The child has not run yet: its first return to user space will be an exit
    // without an entry, which must not count. If the parent (current) is in a
    // clone that asked for a new user namespace, the child carries the flag to
    // that first return, where the namespace is counted in the child's cgroup.
    let parent = bpf_get_current_pid_tgid() as u32;
    let newuser = match THREAD_STATE.get_ptr(parent) {
        // SAFETY: the parent's own slot, which only it writes, and it is here.
        Some(slot) => {
            let value = unsafe { *slot };
            value >> STATE_SHIFT == ST_ENTERED
                && (value >> FLAGS_SHIFT) & (F_FORK | F_NEWUSER) == F_FORK | F_NEWUSER
        }
        None => false,
    };
    let child_state = if newuser {
        NEW_TASK | (F_NEWUSER << FLAGS_SHIFT)
    } else {
        NEW_TASK
    };
    match THREAD_STATE.get_ptr_mut(pid) {
        // SAFETY: the child's slot; the child cannot run before this returns.
        Some(slot) => unsafe { *slot = child_state },
        None => increment(&MAP_FULL, map_full::THREAD_STATE)?,
    }
    let kind = if pid == tgid {
        if param!(exit_has_group_dead) == 0 {
            // A new thread group: an earlier group at the same address is gone.
            let signal = read_kernel::<u64>(child, param!(task_signal))?;
            let _ = EXITED_GROUPS.remove(&signal);
        }
        process_kind::FORK_PROCESS
    } else {
        process_kind::FORK_THREAD
    };
    count_process_event(workload_cgroup(), kind, 0)
}

#[inline(always)]
fn try_sched_exec(ctx: &RawTracePointContext) -> Result<(), Error> {
    // A non-leader thread that execs takes over the leader's pid (de_thread), so
    // its execve returns under another tid: hand its state over, or that exit
    // would look unpaired.
    let old_pid: u64 = ctx.arg(1);
    let old_tid = old_pid as u32;
    let tid = bpf_get_current_pid_tgid() as u32;
    if old_tid != tid {
        if let (Some(old), Some(new)) = (
            THREAD_STATE.get_ptr_mut(old_tid),
            THREAD_STATE.get_ptr_mut(tid),
        ) {
            // SAFETY: both slots belong to this (single, exec'ing) thread now.
            unsafe {
                *new = *old;
                *old = ST_UNKNOWN;
            }
        }
    }
    record::on_exec();
    count_process_event(workload_cgroup(), process_kind::EXEC, 0)
}

#[inline(always)]
fn try_sched_exit(ctx: &RawTracePointContext) -> Result<(), Error> {
    let task: *const u8 = ctx.arg(0);
    // The exiting task is the current one.
    let cgroup = workload_cgroup();
    let group_dead = if param!(exit_has_group_dead) != 0 {
        let group_dead: u64 = ctx.arg(1);
        group_dead & 0xff != 0
    } else {
        // Older kernels: do_exit decrements signal->live before the tracepoint, so
        // the last thread sees 0, and so may others still between their own
        // decrement and the tracepoint: the first to record the group counts it.
        let signal = read_kernel::<u64>(task, param!(task_signal))?;
        read_kernel::<i32>(signal as *const u8, param!(signal_live))? == 0
            && EXITED_GROUPS
                .insert(&signal, &1, u64::from(BPF_NOEXIST))
                .is_ok()
    };
    if group_dead {
        count_process_event(cgroup, process_kind::EXIT, 0)?;
    }
    if read_kernel::<u32>(task, param!(task_seccomp_mode))? == SECCOMP_MODE_DEAD {
        // A seccomp KILL: KILL_PROCESS and a last thread's KILL_THREAD went through
        // sys_exit first (and were skipped there), KILL_THREAD in a multi-threaded
        // process exited from the entry path. The registers still hold the number.
        // SAFETY: helpers with no preconditions beyond a valid task (current).
        let regs = unsafe { bpf_task_pt_regs(bpf_get_current_task_btf()) } as *const u8;
        let nr = read_kernel::<i64>(regs, param!(regs_orig_ax))?;
        let arch = if is_compat(task) {
            AUDIT_ARCH_I386
        } else {
            AUDIT_ARCH_X86_64
        };
        count_denial(cgroup, arch, nr as i32, action::KILL, 0)?;
    }
    Ok(())
}

/// Keeps the final count of refused forks of a removed pids cgroup (the value
/// `pids.events` showed as `max`), which user space can no longer read once
/// the directory is gone: a workload that dies between two polls would
/// otherwise lose its limit hits. The cgroup's pids state is still attached
/// here: `cgroup_mutex` is held, which the state's offlining waits for.
#[inline(always)]
fn try_cgroup_rmdir(ctx: &RawTracePointContext) -> Result<(), Error> {
    let hits_offset = param!(pids_hits);
    if hits_offset == PIDS_HITS_UNKNOWN {
        return Ok(());
    }
    let cgroup: *const u8 = ctx.arg(0);
    let css = read_kernel::<u64>(cgroup, param!(cgroup_pids_css))? as *const u8;
    // No pids state of its own (another hierarchy, or pids not enabled here).
    if css.is_null() || read_kernel::<u64>(css, param!(css_cgroup))? != cgroup as u64 {
        return Ok(());
    }
    let hits = read_kernel::<i64>(css, hits_offset)?;
    if hits <= 0 {
        return Ok(());
    }
    let kn = read_kernel::<u64>(cgroup, param!(cgroup_kn))? as *const u8;
    let id = read_kernel::<u64>(kn, param!(kn_id))?;
    let key = if param!(pids_on_v1) != 0 {
        V1_PIDS_ID_FLAG | id
    } else {
        id
    };
    let mut retired = PidsRetired {
        hits: hits as u64,
        path: [0; RETIRED_PATH_BYTES],
    };
    let path: *const u8 = ctx.arg(1);
    // SAFETY: the helper checks the address; a failure leaves the path empty
    // (user space then resolves the key).
    let _ = unsafe { bpf_probe_read_kernel_str_bytes(path, &mut retired.path) };
    if PIDS_RETIRED.insert(&key, &retired, 0).is_err() {
        increment(&MAP_FULL, map_full::PIDS_RETIRED)?;
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// Aggregation and audit

#[inline(always)]
fn count_denial(cgroup_id: u64, arch: u32, nr: i32, denial: u32, errno: u32) -> Result<(), Error> {
    let key = DenialKey {
        cgroup_id,
        arch,
        syscall_nr: nr,
        action: denial,
        errno,
    };
    bump(&DENIALS, &key, map_full::DENIALS)?;
    audit(
        cgroup_id,
        audit_kind::SECCOMP_DENIED,
        arch,
        nr,
        denial,
        errno,
    );
    Ok(())
}

#[inline(always)]
fn count_process_event(cgroup_id: u64, kind: u32, errno: u32) -> Result<(), Error> {
    let key = ProcessKey {
        cgroup_id,
        kind,
        errno,
    };
    bump(&PROCESS_EVENTS, &key, map_full::PROCESS_EVENTS)
}

/// Adds one to `key`'s counter on this CPU, creating it if needed; a full map is
/// counted in `MAP_FULL[full_index]`.
#[inline(always)]
fn bump<K>(map: &PerCpuHashMap<K, Counter>, key: &K, full_index: u32) -> Result<(), Error> {
    if let Some(value) = map.get_ptr_mut(key) {
        // SAFETY: this CPU's value; programs do not nest on a CPU.
        unsafe { *value = (*value).wrapping_add(1) };
        return Ok(());
    }
    match map.insert(key, 1, u64::from(BPF_NOEXIST)) {
        Ok(()) => Ok(()),
        // Another CPU created it between the lookup and the insert.
        Err(err) if err == -EEXIST => match map.get_ptr_mut(key) {
            Some(value) => {
                // SAFETY: as above.
                unsafe { *value = (*value).wrapping_add(1) };
                Ok(())
            }
            None => increment(&MAP_FULL, full_index),
        },
        Err(_) => increment(&MAP_FULL, full_index),
    }
}

/// Emits one audit record for the current task (keyed by `cgroup_id`, its
/// [`workload_cgroup`]), unless that cgroup's rate limit or the ring buffer
/// refuses; either refusal is counted.
#[inline(always)]
fn audit(cgroup_id: u64, kind: u32, arch: u32, nr: i32, denial: u32, errno: u32) {
    // SAFETY: helper without arguments.
    let now = unsafe { bpf_ktime_get_boot_ns() };
    if !admit(cgroup_id, now) {
        let _ = increment(&AUDIT_DROPS, audit_drop::RATE_LIMITED);
        return;
    }
    let Some(mut entry) = AUDIT_EVENTS.reserve::<AuditEvent>(0) else {
        let _ = increment(&AUDIT_DROPS, audit_drop::BUFFER_FULL);
        return;
    };
    let event = entry.as_mut_ptr();
    let pid_tgid = bpf_get_current_pid_tgid();
    // SAFETY: `event` points to a reserved record of the right size; every field
    // is written before it is submitted.
    unsafe {
        (*event).boot_ns = now;
        (*event).cgroup_id = cgroup_id;
        (*event).pid = (pid_tgid >> 32) as u32;
        (*event).tid = pid_tgid as u32;
        (*event).kind = kind;
        (*event).arch = arch;
        (*event).syscall_nr = nr;
        (*event).action = denial;
        (*event).errno = errno;
        (*event)._pad = 0;
        // Zero-fills the buffer on failure.
        bpf_get_current_comm(addr_of_mut!((*event).comm).cast(), 16);
    }
    entry.submit(0);
}

/// The per-cgroup rate limit, as a generic cell rate algorithm: one u64 per cgroup
/// (the theoretical arrival time of its next record), `interval` apart, at most
/// `tolerance` ahead of now (which allows a burst of `tolerance / interval + 1`).
///
/// The read-modify-write is not atomic: two CPUs recording for the same cgroup at
/// the same instant may both be admitted against one slot, so a multi-threaded
/// cgroup can exceed its budget by at most one record per concurrent CPU and race.
#[inline(always)]
fn admit(cgroup_id: u64, now: u64) -> bool {
    let interval = param!(audit_interval_ns);
    if interval == AUDIT_DISABLED {
        return false;
    }
    let tolerance = param!(audit_tolerance_ns);
    match AUDIT_RATE.get_ptr_mut(cgroup_id) {
        Some(tat) => {
            // SAFETY: a pointer into the map value, valid for the program's run.
            let scheduled = unsafe { *tat };
            let start = if scheduled > now { scheduled } else { now };
            if start - now > tolerance {
                return false;
            }
            unsafe { *tat = start.saturating_add(interval) };
            true
        }
        None => {
            if AUDIT_RATE
                .insert(cgroup_id, now.saturating_add(interval), 0)
                .is_err()
            {
                let _ = increment(&MAP_FULL, map_full::AUDIT_RATE);
                return false;
            }
            true
        }
    }
}

// ---------------------------------------------------------------------------
// Helpers

#[inline(always)]
fn increment(map: &PerCpuArray<Counter>, index: u32) -> Result<(), Error> {
    let slot = map.get_ptr_mut(index).ok_or(Error::Lookup)?;
    // SAFETY: the pointer is this CPU's slot of a map value, valid for the life of
    // the program. A non-atomic add is enough: the slot belongs to this CPU, and a
    // raw tracepoint program does not run nested inside itself on one CPU.
    unsafe { *slot = (*slot).wrapping_add(1) };
    Ok(())
}

#[inline(always)]
fn current_task() -> *const u8 {
    // SAFETY: helper without arguments.
    unsafe { bpf_get_current_task() as *const u8 }
}

/// The cgroup the current task's counts and audit records are keyed by: its v2
/// cgroup id, except for a task in the v2 *root* cgroup while pids is on a v1
/// hierarchy (Docker's cgroupfs driver on hybrid hosts places containers only in
/// v1 cgroups): if its v1 pids cgroup is not the v1 root, that one, as
/// `V1_PIDS_ID_FLAG | <its kernfs node id>` (what user space resolves by walking
/// the pids hierarchy). Only called on slow paths (unpaired exits, process events).
#[inline(always)]
fn workload_cgroup() -> u64 {
    // SAFETY: helper without arguments.
    let id = unsafe { bpf_get_current_cgroup_id() };
    if id != param!(v2_root_cgroup_id) || param!(v1_pids_rekey) == 0 {
        return id;
    }
    v1_pids_cgroup().unwrap_or(id)
}

/// `V1_PIDS_ID_FLAG | current->cgroups->subsys[pids_cgrp_id]->cgroup->kn->id`, or
/// an error when a read fails or the pids cgroup is the v1 root.
#[inline(always)]
fn v1_pids_cgroup() -> Result<u64, Error> {
    let task = current_task();
    let css_set = read_kernel::<u64>(task, param!(task_cgroups))? as *const u8;
    let css = read_kernel::<u64>(css_set, param!(css_set_pids))? as *const u8;
    let cgroup = read_kernel::<u64>(css, param!(css_cgroup))? as *const u8;
    let kn = read_kernel::<u64>(cgroup, param!(cgroup_kn))? as *const u8;
    let id = read_kernel::<u64>(kn, param!(kn_id))?;
    if id == 0 || id == param!(v1_pids_root_id) {
        return Err(Error::Lookup);
    }
    Ok(V1_PIDS_ID_FLAG | id)
}

/// Reads a `T` at `base + offset` in kernel memory.
#[inline(always)]
fn read_kernel<T>(base: *const u8, offset: u32) -> Result<T, Error> {
    let address = (base as usize).wrapping_add(offset as usize) as *const T;
    // SAFETY: bpf_probe_read_kernel checks the address and fails cleanly.
    unsafe { bpf_probe_read_kernel(address) }.map_err(|_| Error::Lookup)
}

/// Whether `task` is in a 32-bit compat syscall (`TS_COMPAT`, cleared only on the
/// way back to user space, after `sys_exit` and signal delivery).
#[inline(always)]
fn is_compat(task: *const u8) -> bool {
    read_kernel::<u32>(task, param!(task_ti_status)).is_ok_and(|status| status & TS_COMPAT != 0)
}

/// Whether SIGSYS is pending for the thread itself (where seccomp's TRAP puts it).
#[inline(always)]
fn sigsys_pending(task: *const u8) -> bool {
    read_kernel::<u64>(task, param!(task_pending_signal)).is_ok_and(|set| set & SIGSYS_BIT != 0)
}

/// The kernel grants GPL-only helpers (e.g. `bpf_probe_read_kernel`) only to
/// programs whose license string it deems GPL-compatible.
#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";

/// eBPF has no unwinding and the verifier rejects any path that could reach this
/// loop, so a program with a reachable panic fails to load instead of misbehaving.
#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}
