//! The process events the `sys_enter`/`sys_exit` pairing counts besides
//! denials (failed forks, user namespaces), for the `fexit` mechanism, where
//! no program runs on the syscall tracepoints: fentry/fexit on the kernel
//! functions every fork-family syscall and `unshare` go through.
//!
//! - `kernel_clone` (fork, vfork, clone, clone3): at entry the caller's slot
//!   gets the flags `sys_enter` would give it, so `sched_process_fork` marks
//!   a child cloned into a new user namespace exactly as under the pairing; at
//!   exit a failure is counted like a failed fork-family syscall.
//! - `schedule_tail`, the first thing a new task runs: the child's own
//!   context, where the pairing counts its namespace (at its first
//!   `sys_exit`), in its own cgroup.
//! - `ksys_unshare`: a successful `unshare(CLONE_NEWUSER)`.
//!
//! Kernel threads also go through `kernel_clone`; they make no syscall, so
//! the pairing never counts them, and neither does this.

use aya_ebpf::{
    macros::{fentry, fexit},
    programs::{FEntryContext, FExitContext},
};
use moat_common::{audit_kind, process_kind};

use crate::{
    audit::{audit, count_process_event},
    kernel::{current_task, read_kernel, workload_cgroup, CLONE_NEWUSER, ERESTARTSYS},
    maps::THREAD_STATE,
    thread_state::{flags, state, ENTERED, FLAGS_SHIFT, F_FORK, F_NEWUSER, IDLE, ST_NEW_TASK},
    Error,
};

/// `PF_KTHREAD` in `task_struct.flags`.
const PF_KTHREAD: u32 = 0x0020_0000;

/// `kernel_clone(struct kernel_clone_args *args)` is entered.
#[fentry(function = "kernel_clone")]
pub fn moat_clone_entry(ctx: FEntryContext) -> u32 {
    match try_clone_entry(&ctx) {
        Ok(()) => 0,
        Err(_) => 1,
    }
}

/// `kernel_clone(...)` returned the child's pid or `-errno`.
#[fexit(function = "kernel_clone")]
pub fn moat_clone_exit(ctx: FExitContext) -> u32 {
    match try_clone_exit(&ctx) {
        Ok(()) => 0,
        Err(_) => 1,
    }
}

/// `schedule_tail(struct task_struct *prev)` returned: a new task runs.
#[fexit(function = "schedule_tail")]
pub fn moat_child_start(ctx: FExitContext) -> u32 {
    match try_child_start(&ctx) {
        Ok(()) => 0,
        Err(_) => 1,
    }
}

/// `ksys_unshare(unsigned long unshare_flags)` returned.
#[fexit(function = "ksys_unshare")]
pub fn moat_unshare_exit(ctx: FExitContext) -> u32 {
    match try_unshare_exit(&ctx) {
        Ok(()) => 0,
        Err(_) => 1,
    }
}

#[inline(always)]
fn try_clone_entry(ctx: &FEntryContext) -> Result<(), Error> {
    let args: *const u8 = ctx.arg(0);
    // `struct kernel_clone_args` starts with `u64 flags` (already copied in
    // from user space for clone3).
    let flags = read_kernel::<u64>(args, 0)?;
    let tid = aya_ebpf::helpers::bpf_get_current_pid_tgid() as u32;
    let kind = if flags & CLONE_NEWUSER != 0 {
        F_FORK | F_NEWUSER
    } else {
        F_FORK
    };
    if let Some(slot) = THREAD_STATE.get_ptr_mut(tid) {
        // SAFETY: this thread's own slot, which only it writes while it runs.
        unsafe { *slot = ENTERED | (kind << FLAGS_SHIFT) };
    }
    Ok(())
}

#[inline(always)]
fn try_clone_exit(ctx: &FExitContext) -> Result<(), Error> {
    let tid = aya_ebpf::helpers::bpf_get_current_pid_tgid() as u32;
    if let Some(slot) = THREAD_STATE.get_ptr_mut(tid) {
        // SAFETY: as above.
        unsafe { *slot = IDLE };
    }
    let ret: u64 = ctx.ret().map_err(|_| Error::Lookup)?;
    let ret = i64::from(ret as i32);
    if ret >= 0 || ret <= -ERESTARTSYS || is_kernel_thread() {
        return Ok(());
    }
    let errno = (-ret) as u32;
    let cgroup = workload_cgroup();
    count_process_event(cgroup, process_kind::FORK_FAILED, errno)?;
    audit(cgroup, audit_kind::FORK_FAILED, 0, 0, 0, errno);
    Ok(())
}

#[inline(always)]
fn try_child_start(_ctx: &FExitContext) -> Result<(), Error> {
    let tid = aya_ebpf::helpers::bpf_get_current_pid_tgid() as u32;
    let Some(slot) = THREAD_STATE.get_ptr_mut(tid) else {
        return Ok(());
    };
    // SAFETY: the new task's own slot; sched_process_fork wrote it before the
    // task could run.
    let value = unsafe { *slot };
    if state(value) != ST_NEW_TASK {
        return Ok(());
    }
    unsafe { *slot = IDLE };
    if flags(value) & F_NEWUSER != 0 {
        let cgroup = workload_cgroup();
        count_process_event(cgroup, process_kind::USERNS_CREATED, 0)?;
        audit(cgroup, audit_kind::USERNS_CREATED, 0, 0, 0, 0);
    }
    Ok(())
}

#[inline(always)]
fn try_unshare_exit(ctx: &FExitContext) -> Result<(), Error> {
    let flags: u64 = ctx.arg(0);
    let ret: u64 = ctx.ret().map_err(|_| Error::Lookup)?;
    if ret as i32 != 0 || flags & CLONE_NEWUSER == 0 || is_kernel_thread() {
        return Ok(());
    }
    let cgroup = workload_cgroup();
    count_process_event(cgroup, process_kind::USERNS_CREATED, 0)?;
    audit(cgroup, audit_kind::USERNS_CREATED, 0, 0, 0, 0);
    Ok(())
}

#[inline(always)]
fn is_kernel_thread() -> bool {
    read_kernel::<u32>(current_task(), param!(task_flags)).is_ok_and(|f| f & PF_KTHREAD != 0)
}
