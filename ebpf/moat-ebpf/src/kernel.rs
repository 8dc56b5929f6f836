//! Kernel constants (uapi or stable ABI) and reads of the current task.

use aya_ebpf::helpers::{
    bpf_get_current_cgroup_id, bpf_probe_read_kernel,
    generated::{bpf_get_current_task, bpf_get_current_task_btf, bpf_task_pt_regs},
};
use moat_common::V1_PIDS_ID_FLAG;

use crate::Error;

/// `SECCOMP_MODE_DISABLED`: the task has no seccomp filter (nor strict mode).
pub(crate) const SECCOMP_MODE_DISABLED: u32 = 0;
/// `SECCOMP_MODE_DEAD`: set on a task by a seccomp KILL action.
pub(crate) const SECCOMP_MODE_DEAD: u32 = 3;
/// x86 `TS_COMPAT` in `thread_info.status`: a 32-bit syscall is in progress.
pub(crate) const TS_COMPAT: u32 = 0x0002;
/// `CLONE_NEWUSER`.
pub(crate) const CLONE_NEWUSER: u64 = 0x1000_0000;
/// `SIGSYS`, as a bit of a `sigset_t` word.
pub(crate) const SIGSYS_BIT: u64 = 1 << (31 - 1);
/// `MAX_ERRNO`: syscall errors are `-4095..=-1`.
pub(crate) const MAX_ERRNO: i64 = 4095;
/// The kernel-internal restart codes start here (`ERESTARTSYS`); a fork returning
/// one is restarted, never seen by the caller.
pub(crate) const ERESTARTSYS: i64 = 512;
pub(crate) const EEXIST: i32 = 17;

/// `__X32_SYSCALL_BIT`: set in the number of an x32 syscall.
pub(crate) const X32_SYSCALL_BIT: i64 = 0x4000_0000;

/// x86-64 native syscall numbers the programs watch (x32 uses them too).
pub(crate) mod nr64 {
    pub const CLONE: i64 = 56;
    pub const FORK: i64 = 57;
    pub const VFORK: i64 = 58;
    pub const UNSHARE: i64 = 272;
    pub const CLONE3: i64 = 435;
    pub const PRCTL: i64 = 157;
    pub const SECCOMP: i64 = 317;
}

/// i386 (compat) syscall numbers the programs watch.
pub(crate) mod nr32 {
    pub const FORK: i64 = 2;
    pub const CLONE: i64 = 120;
    pub const VFORK: i64 = 190;
    pub const UNSHARE: i64 = 310;
    pub const CLONE3: i64 = 435;
    pub const PRCTL: i64 = 172;
    pub const SECCOMP: i64 = 354;
}

#[inline(always)]
pub(crate) fn current_task() -> *const u8 {
    // SAFETY: helper without arguments.
    unsafe { bpf_get_current_task() as *const u8 }
}

/// Whether no seccomp filter can refuse the current thread's syscalls until
/// the thread itself makes one that may change that (seccomp, prctl, a
/// fork-family call; see `syscalls::is_watched`): it has no filter nor strict
/// mode, and it is its group's only thread. A filter reaches a thread only
/// from the thread itself or from another thread of its group
/// (`SECCOMP_FILTER_FLAG_TSYNC`), a group gains threads only through a clone
/// by one of its threads, and a child takes its state at its first return.
/// Any read failing answers no.
#[inline(always)]
pub(crate) fn unrefusable() -> bool {
    let task = current_task();
    if !matches!(
        read_kernel::<u32>(task, param!(task_seccomp_mode)),
        Ok(SECCOMP_MODE_DISABLED)
    ) {
        return false;
    }
    let Ok(signal) = read_kernel::<u64>(task, param!(task_signal)) else {
        return false;
    };
    matches!(
        read_kernel::<i32>(signal as *const u8, param!(signal_nr_threads)),
        Ok(1)
    )
}

/// The current thread's user registers: in a syscall, the `pt_regs` both
/// syscall tracepoints receive.
#[inline(always)]
pub(crate) fn current_regs() -> *const u8 {
    // SAFETY: helpers with no preconditions beyond a valid task (current).
    unsafe { bpf_task_pt_regs(bpf_get_current_task_btf()) as *const u8 }
}

/// The cgroup the current task's counts and audit records are keyed by: its v2
/// cgroup id, except for a task in the v2 *root* cgroup while pids is on a v1
/// hierarchy (Docker's cgroupfs driver on hybrid hosts places containers only in
/// v1 cgroups): if its v1 pids cgroup is not the v1 root, that one, as
/// `V1_PIDS_ID_FLAG | <its kernfs node id>` (what user space resolves by walking
/// the pids hierarchy). Only called on slow paths (unpaired exits, process events).
#[inline(always)]
pub(crate) fn workload_cgroup() -> u64 {
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
pub(crate) fn v1_pids_cgroup() -> Result<u64, Error> {
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
pub(crate) fn read_kernel<T>(base: *const u8, offset: u32) -> Result<T, Error> {
    let address = (base as usize).wrapping_add(offset as usize) as *const T;
    // SAFETY: bpf_probe_read_kernel checks the address and fails cleanly.
    unsafe { bpf_probe_read_kernel(address) }.map_err(|_| Error::Lookup)
}

/// Whether `task` is in a 32-bit compat syscall (`TS_COMPAT`, cleared only on the
/// way back to user space, after `sys_exit` and signal delivery).
#[inline(always)]
pub(crate) fn is_compat(task: *const u8) -> bool {
    read_kernel::<u32>(task, param!(task_ti_status)).is_ok_and(|status| status & TS_COMPAT != 0)
}

/// Whether SIGSYS is pending for the thread itself (where seccomp's TRAP puts it).
#[inline(always)]
pub(crate) fn sigsys_pending(task: *const u8) -> bool {
    read_kernel::<u64>(task, param!(task_pending_signal)).is_ok_and(|set| set & SIGSYS_BIT != 0)
}
