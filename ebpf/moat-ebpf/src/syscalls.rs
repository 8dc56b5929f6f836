//! The `sys_enter` / `sys_exit` pairing (see the crate docs): the `try_`
//! functions of the two syscall tracepoints. Both work on the running
//! thread's cached state ([`crate::thread_state`]), so the paired fast path
//! calls no helper.

use aya_ebpf::{helpers::bpf_probe_read_user, programs::RawTracePointContext};
use moat_common::{audit_kind, ignored_exit, map_full, process_kind};

use crate::{
    audit::{audit, count_process_event, increment},
    kernel::{
        current_regs, current_task, is_compat, nr32, nr64, read_kernel, unrefusable,
        workload_cgroup, CLONE_NEWUSER, ERESTARTSYS, SECCOMP_MODE_DEAD, SECCOMP_MODE_DISABLED,
        X32_SYSCALL_BIT,
    },
    maps::{IGNORED_EXITS, MAP_FULL},
    refusals,
    thread_state::{
        current_state, flags, running_slot, state, ENTERED, FLAGS_SHIFT, F_FORK, F_NEWUSER,
        F_RECHECK, F_UNSHARE, IDLE, NO_FILTER, ST_ENTERED, ST_NEW_TASK, ST_NO_FILTER, ST_UNKNOWN,
    },
    Error,
};

#[inline(always)]
pub(crate) fn try_sys_enter(ctx: &RawTracePointContext) -> Result<(), Error> {
    // The number is checked before the lookup, so that nothing read before it
    // is needed after it: the fast path's program then saves no register.
    // x32 syscalls (where the kernel enables them) carry this bit and use the
    // native numbers: without the mask, an x32 seccomp() or clone would
    // install a filter or add a thread unwatched.
    let nr: i64 = ctx.arg::<i64>(1) & !X32_SYSCALL_BIT;
    if is_watched(nr) {
        return enter_watched(ctx, nr);
    }
    let cache = running_slot()?;
    // SAFETY: this CPU's cache, valid for the program's run.
    let cached = unsafe { *cache };
    if cached == NO_FILTER {
        return Ok(());
    }
    if cached == 0 {
        return enter_uncached(cache);
    }
    // The running thread's state goes to this CPU's cache: only this thread's
    // own earlier state can be there (see thread_state).
    // SAFETY: as above.
    unsafe { *cache = ENTERED };
    Ok(())
}

/// An entry by a thread back on this CPU since its last syscall event: its
/// slot says whether it is in the no-filter state, which an entry keeps.
#[inline(never)]
fn enter_uncached(cache: *mut u64) -> Result<(), Error> {
    let value = if current_state(0).unwrap_or(0) == NO_FILTER {
        NO_FILTER
    } else {
        ENTERED
    };
    // SAFETY: this CPU's cache, valid for the program's run.
    unsafe { *cache = value };
    Ok(())
}

/// The entry of a syscall that may fork, unshare or install a filter: its
/// flags go along (and end the no-filter state).
/// Not inlined, so that the fast path's program keeps few registers (each
/// one the JIT saves and restores on every run).
#[inline(never)]
fn enter_watched(ctx: &RawTracePointContext, nr: i64) -> Result<(), Error> {
    let value = ENTERED | (watched_flags(ctx, nr) << FLAGS_SHIFT);
    let cache = running_slot()?;
    // SAFETY: this CPU's cache, valid for the program's run.
    unsafe { *cache = value };
    Ok(())
}

/// Syscall numbers that may be fork-family, unshare, seccomp or prctl in
/// either ABI. A superset: [`watched_flags`] decides with the task's ABI.
/// Every syscall that can make a thread refusable is here, so that no thread
/// keeps the no-filter state past one (see `kernel::unrefusable`).
#[inline(always)]
pub(crate) fn is_watched(nr: i64) -> bool {
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
            | nr64::PRCTL
            | nr32::PRCTL
            | nr64::SECCOMP
            | nr32::SECCOMP
    )
}

/// `F_*` flags for a watched syscall: which kind it is in the calling ABI, and
/// whether its flags ask for a new user namespace.
#[inline(always)]
pub(crate) fn watched_flags(ctx: &RawTracePointContext, nr: i64) -> u64 {
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
            nr32::PRCTL | nr32::SECCOMP => (F_RECHECK, None, false),
            _ => (0, None, false),
        }
    } else {
        match nr {
            nr64::FORK | nr64::VFORK => (F_FORK, None, false),
            nr64::CLONE => (F_FORK, Some(param!(regs_di)), false),
            nr64::CLONE3 => (F_FORK, Some(param!(regs_di)), true),
            nr64::UNSHARE => (F_UNSHARE, Some(param!(regs_di)), false),
            nr64::PRCTL | nr64::SECCOMP => (F_RECHECK, None, false),
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
pub(crate) fn try_sys_exit() -> Result<(), Error> {
    // The context is not read here: a value kept across the lookup would cost
    // the fast path's program a saved register on every run. The slow path
    // finds the registers and the return value through the current task.
    let cache = running_slot()?;
    // SAFETY: this CPU's cache, valid for the program's run.
    let cached = unsafe { *cache };
    if cached == NO_FILTER {
        return Ok(());
    }
    if cached == ENTERED {
        // Paired, and the thread is outside a syscall again.
        // SAFETY: as above.
        unsafe { *cache = IDLE };
        return Ok(());
    }
    exit_slow(cache, cached)
}

/// Every exit but a plain paired one from the cache: a thread back on this
/// CPU since its last syscall event, a watched syscall, a new task, an
/// unpaired exit. Not inlined, for the reason given at [`enter_watched`].
#[inline(never)]
fn exit_slow(cache: *mut u64, cached: u64) -> Result<(), Error> {
    let Some(value) = current_state(cached) else {
        // pid_max was raised after load and the thread came back to this CPU
        // since its last syscall: its state was lost with its slot.
        return increment(&MAP_FULL, map_full::THREAD_STATE);
    };
    // Where the thread may have become refusable or stopped being so: at its
    // first return, at the first exit seen since load, and after a watched
    // syscall.
    let recheck = match state(value) {
        ST_NO_FILTER => {
            // SAFETY: this CPU's cache, valid for the program's run.
            unsafe { *cache = NO_FILTER };
            return Ok(());
        }
        ST_ENTERED => flags(value) != 0,
        ST_UNKNOWN | ST_NEW_TASK => true,
        _ => false,
    };
    let counted = classify_exit(value);
    // Written back to THREAD_STATE when the thread leaves the CPU.
    let next = if recheck && unrefusable() {
        NO_FILTER
    } else {
        IDLE
    };
    // SAFETY: this CPU's cache, valid for the program's run.
    unsafe { *cache = next };
    counted
}

/// Counts what an exit other than a plain paired one means, given the
/// thread's state `value`.
#[inline(always)]
fn classify_exit(value: u64) -> Result<(), Error> {
    match state(value) {
        ST_ENTERED => exit_watched(flags(value)),
        ST_UNKNOWN => increment(&IGNORED_EXITS, ignored_exit::UNKNOWN_THREAD),
        ST_NEW_TASK => {
            if flags(value) & F_NEWUSER != 0 {
                // The first return of a child cloned into a new user namespace:
                // the namespace is counted here, in the child's own cgroup.
                let cgroup = workload_cgroup();
                count_process_event(cgroup, process_kind::USERNS_CREATED, 0)?;
                audit(cgroup, audit_kind::USERNS_CREATED, 0, 0, 0, 0);
            }
            increment(&IGNORED_EXITS, ignored_exit::NEW_TASK)
        }
        _ => unpaired_exit(),
    }
}

/// The value the syscall in progress returns: at `sys_exit`, the tracepoint's
/// `ret` is `regs->ax` (`syscall_get_return_value`).
#[inline(always)]
fn return_value(regs: *const u8) -> Result<i64, Error> {
    read_kernel::<i64>(regs, param!(regs_ax))
}

/// The exit of a fork-family or unshare syscall that was entered normally.
#[inline(always)]
pub(crate) fn exit_watched(flags: u64) -> Result<(), Error> {
    if flags & (F_FORK | F_UNSHARE) == 0 {
        // seccomp or prctl: only the recheck.
        return Ok(());
    }
    let ret = return_value(current_regs())?;
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
pub(crate) fn unpaired_exit() -> Result<(), Error> {
    let regs = current_regs();
    let nr = read_kernel::<i64>(regs, param!(regs_orig_ax))?;
    if nr < 0 {
        return increment(&IGNORED_EXITS, ignored_exit::NO_SYSCALL);
    }
    let ret = return_value(regs)?;
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
