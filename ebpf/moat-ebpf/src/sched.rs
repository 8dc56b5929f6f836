//! The `try_` functions of the scheduler and cgroup tracepoints: process
//! events, the pairing's bookkeeping for new and exec'ing tasks, KILL
//! refusals, and the final pids count of removed cgroups.

use aya_ebpf::{
    bindings::BPF_NOEXIST,
    helpers::{bpf_get_current_pid_tgid, bpf_probe_read_kernel_str_bytes},
    programs::RawTracePointContext,
};
use moat_common::{
    action, map_full, process_kind, PidsRetired, AUDIT_ARCH_I386, AUDIT_ARCH_X86_64,
    PIDS_HITS_UNKNOWN, RETIRED_PATH_BYTES, V1_PIDS_ID_FLAG,
};

use crate::{
    audit::{count_denial, count_process_event, increment},
    kernel::{current_regs, is_compat, read_kernel, workload_cgroup, SECCOMP_MODE_DEAD},
    maps::{EXITED_GROUPS, MAP_FULL, PIDS_RETIRED, THREAD_STATE},
    record,
    thread_state::{
        cpu_line, current_state, flags, running_slot, state, write_back, FLAGS_SHIFT, F_FORK,
        F_NEWUSER, NEW_TASK, ST_ENTERED, ST_UNKNOWN,
    },
    Error,
};

#[inline(always)]
pub(crate) fn try_sched_fork(ctx: &RawTracePointContext) -> Result<(), Error> {
    let child: *const u8 = ctx.arg(1);
    let pid = read_kernel::<u32>(child, param!(task_pid))?;
    let tgid = read_kernel::<u32>(child, param!(task_tgid))?;
    // The child has not run yet: its first return to user space will be an exit
    // without an entry, which must not count. If the parent (current) is in a
    // clone that asked for a new user namespace, the child carries the flag to
    // that first return, where the namespace is counted in the child's cgroup.
    // SAFETY: this CPU's cache, valid for the program's run.
    let cached = unsafe { *running_slot()? };
    let newuser = match current_state(cached) {
        Some(value) => {
            state(value) == ST_ENTERED && flags(value) & (F_FORK | F_NEWUSER) == F_FORK | F_NEWUSER
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

/// `sched_switch`, in the context of the thread leaving the CPU.
#[inline(always)]
pub(crate) fn try_sched_switch() -> Result<(), Error> {
    write_back()
}

#[inline(always)]
pub(crate) fn try_sched_exec(ctx: &RawTracePointContext) -> Result<(), Error> {
    // A non-leader thread that execs takes over the leader's pid (de_thread), so
    // its execve returns under another tid: hand its state over, or that exit
    // would look unpaired.
    let old_pid: u64 = ctx.arg(1);
    let old_tid = old_pid as u32;
    let tid = bpf_get_current_pid_tgid() as u32;
    // (While the thread runs, its state may be in this CPU's cache instead,
    // which follows it whatever its tid; the slot is handed over all the same.)
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
pub(crate) fn try_sched_exit(ctx: &RawTracePointContext) -> Result<(), Error> {
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
    // The thread makes no syscall from here on: empty this CPU's cache, so
    // that the thread's last switch writes nothing back. Its id may be free
    // by then (a thread reaps itself before it stops running), and a new
    // task with that id must keep the state `sched_process_fork` gave it.
    if let Some(cache) = cpu_line() {
        // SAFETY: this CPU's line, which only programs on this CPU use.
        unsafe { *cache = 0 };
    }
    if group_dead {
        count_process_event(cgroup, process_kind::EXIT, 0)?;
    }
    if read_kernel::<u32>(task, param!(task_seccomp_mode))? == SECCOMP_MODE_DEAD {
        // A seccomp KILL: KILL_PROCESS and a last thread's KILL_THREAD went through
        // sys_exit first (and were skipped there), KILL_THREAD in a multi-threaded
        // process exited from the entry path. The registers still hold the number.
        let regs = current_regs();
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
pub(crate) fn try_cgroup_rmdir(ctx: &RawTracePointContext) -> Result<(), Error> {
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
