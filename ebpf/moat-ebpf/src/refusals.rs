//! The two ways of counting seccomp refusals besides the `sys_enter`/`sys_exit`
//! pairing, and the classification all three share.
//!
//! - [`moat_seccomp_exit`], fexit on `__secure_computing` (the `fexit`
//!   mechanism of the `all` tier, where the kernel allows tracing programs):
//!   seccomp runs only for threads with a filter, and returns -1 exactly when it
//!   skips the syscall, so nothing runs for any other thread and no syscall
//!   tracepoint is enabled.
//! - [`moat_signal_generate`] on the `signal_generate` raw tracepoint (the
//!   `fatal` tier): the SIGSYS seccomp's TRAP raises. Only signals are seen,
//!   so ERRNO refusals are not counted at all in that tier.
//!
//! KILL is counted by neither: it is counted once, at the killed thread's exit
//! (`try_sched_exit`), in every tier and mechanism.

use aya_ebpf::{
    macros::{fexit, raw_tracepoint},
    programs::{FExitContext, RawTracePointContext},
};
use moat_common::{action, ignored_exit, AUDIT_ARCH_I386, AUDIT_ARCH_X86_64};

use crate::{
    audit::{count_denial, increment},
    kernel::{
        current_regs, current_task, is_compat, read_kernel, sigsys_pending, workload_cgroup,
        MAX_ERRNO, SECCOMP_MODE_DEAD,
    },
    maps::IGNORED_EXITS,
    Error,
};

/// `SIGSYS`.
const SIGSYS: u64 = 31;
/// `si_code` of a SIGSYS raised by seccomp (`SYS_SECCOMP`).
const SYS_SECCOMP: i32 = 1;
/// `SECCOMP_MODE_FILTER`: the task has a seccomp filter.
const SECCOMP_MODE_FILTER: u32 = 2;
/// Offset of `si_code` in `kernel_siginfo` (after `si_signo` and `si_errno`; uapi).
const SI_CODE_OFFSET: u32 = 8;

/// `__secure_computing(...)` returned: -1 means the syscall is skipped.
#[fexit(function = "__secure_computing")]
pub fn moat_seccomp_exit(ctx: FExitContext) -> u32 {
    match try_seccomp_exit(&ctx) {
        Ok(()) => 0,
        Err(_) => 1,
    }
}

/// `signal_generate(int sig, struct kernel_siginfo *info, struct task_struct
/// *task, int group, int result)`.
#[raw_tracepoint(tracepoint = "signal_generate")]
pub fn moat_signal_generate(ctx: RawTracePointContext) -> u32 {
    match try_signal_generate(&ctx) {
        Ok(()) => 0,
        Err(_) => 1,
    }
}

#[inline(always)]
fn try_seccomp_exit(ctx: &FExitContext) -> Result<(), Error> {
    // An `int`: only the low 32 bits of the register are the value.
    let ret: u64 = ctx.ret().map_err(|_| Error::Lookup)?;
    if ret as i32 != -1 {
        return Ok(());
    }
    let task = current_task();
    if read_kernel::<u32>(task, param!(task_seccomp_mode))? == SECCOMP_MODE_DEAD {
        // KILL: counted once, when the thread exits.
        return Ok(());
    }
    let regs = current_regs();
    let nr = read_kernel::<i64>(regs, param!(regs_orig_ax))?;
    if nr < 0 {
        return increment(&IGNORED_EXITS, ignored_exit::NO_SYSCALL);
    }
    // The value the syscall will return: seccomp has set it already.
    let ax = read_kernel::<i64>(regs, param!(regs_ax))?;
    count_refusal(task, nr, ax)
}

/// Counts a syscall seccomp skipped, by the thread `task` (current), number
/// `nr`, returning `ret`: the one classification of both mechanisms of the
/// `all` tier, so their labels cannot differ. The caller has excluded KILL
/// and `nr < 0`.
#[inline(always)]
pub(crate) fn count_refusal(task: *const u8, nr: i64, ret: i64) -> Result<(), Error> {
    if read_kernel::<u32>(task, param!(task_ptrace))? != 0 {
        // Excluded under the pairing (a tracer can skip syscalls itself), and
        // so under fexit too: both mechanisms count the same.
        return increment(&IGNORED_EXITS, ignored_exit::PTRACED);
    }
    let (denial, errno) = if ret == nr && sigsys_pending(task) {
        // TRAP rolls the return value back to the syscall number and raises SIGSYS.
        (action::TRAP, 0)
    } else if (-MAX_ERRNO..=0).contains(&ret) {
        // ERRNO returns -errno (0 for SECCOMP_RET_ERRNO with data 0).
        (action::ERRNO, (-ret) as u32)
    } else {
        return increment(&IGNORED_EXITS, ignored_exit::UNCLASSIFIED);
    };
    count_denial(workload_cgroup(), arch_of(task), nr as i32, denial, errno)
}

/// Counts a SIGSYS that seccomp's TRAP raised, and only those.
///
/// `si_code == SYS_SECCOMP` alone proves nothing: a process may queue itself
/// any siginfo with a non-negative `si_code` (`rt_sigqueueinfo`,
/// `rt_tgsigqueueinfo`, `pidfd_send_signal` to itself). What user space cannot
/// forge is the state of the sending thread's registers: seccomp raises the
/// signal on the current thread from the syscall entry path, right after
/// `syscall_rollback()` set `regs->ax` to `regs->orig_ax`; during any syscall
/// that queues a signal, `regs->ax` still holds the `-ENOSYS` the entry code
/// put there and `orig_ax` that syscall's number. A tracer could write `ax` at
/// a syscall-entry stop, so ptraced tasks are excluded (as the pairing does);
/// and the task must have a filter and the signal target itself.
#[inline(always)]
fn try_signal_generate(ctx: &RawTracePointContext) -> Result<(), Error> {
    let sig: u64 = ctx.arg(0);
    if sig & 0xffff_ffff != SIGSYS {
        return Ok(());
    }
    let info: u64 = ctx.arg(1);
    // SEND_SIG_NOINFO (0) and SEND_SIG_PRIV (1) carry no siginfo.
    if info <= 1 {
        return Ok(());
    }
    let code = read_kernel::<i32>(info as *const u8, SI_CODE_OFFSET)?;
    if code != SYS_SECCOMP {
        return Ok(());
    }
    let task = current_task();
    let target: u64 = ctx.arg(2);
    if target != task as u64 {
        return increment(&IGNORED_EXITS, ignored_exit::FORGED_SIGSYS);
    }
    match read_kernel::<u32>(task, param!(task_seccomp_mode))? {
        // KILL_PROCESS (or a last thread's KILL_THREAD): counted at exit.
        SECCOMP_MODE_DEAD => return Ok(()),
        SECCOMP_MODE_FILTER => {}
        _ => return increment(&IGNORED_EXITS, ignored_exit::FORGED_SIGSYS),
    }
    if read_kernel::<u32>(task, param!(task_ptrace))? != 0 {
        return increment(&IGNORED_EXITS, ignored_exit::PTRACED);
    }
    let regs = current_regs();
    let nr = read_kernel::<i64>(regs, param!(regs_orig_ax))?;
    let ax = read_kernel::<i64>(regs, param!(regs_ax))?;
    if nr < 0 || ax != nr {
        return increment(&IGNORED_EXITS, ignored_exit::FORGED_SIGSYS);
    }
    count_denial(workload_cgroup(), arch_of(task), nr as i32, action::TRAP, 0)
}

/// The `AUDIT_ARCH_*` of the syscall `task` (current) is in.
#[inline(always)]
fn arch_of(task: *const u8) -> u32 {
    if is_compat(task) {
        AUDIT_ARCH_I386
    } else {
        AUDIT_ARCH_X86_64
    }
}
