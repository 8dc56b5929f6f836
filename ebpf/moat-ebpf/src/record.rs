//! Profile recording: the exact set of (arch, syscall number) that the tasks of
//! chosen cgroups make, for `moat run --record-profile` and `moat profile record`.
//!
//! The hook runs at the end of `sys_enter` (a syscall seccomp refused never gets
//! there, so only what the filter let through is recorded):
//!
//! 1. [`RECORD_GATE`]: while no recording exists anywhere, one array load and
//!    nothing else, for every task on the node.
//! 2. The task's v2 cgroup in [`RECORD_CGROUPS`]; if absent, its ancestors
//!    (`bpf_get_current_ancestor_cgroup_id`, up to [`RECORD_MAX_LEVEL`]), so a
//!    workload's sub-cgroups are covered; tasks in the v2 root skip the walk.
//!    On hybrid hosts, a task in the v2 root is looked up by its v1 pids cgroup
//!    too, only while a v1-keyed recording exists (Docker's cgroupfs driver).
//! 3. `(recording, arch, nr)` into [`RECORD_SYSCALLS`] unless already there: a
//!    hash, so every number is recorded, including numbers above the native
//!    table; compat (i386) calls under `AUDIT_ARCH_I386`.
//!
//! A recording flagged before its workload starts (`moat run`, a created
//! Docker container) is [`record_state::ARMED`]: only the syscalls the
//! workload's seccomp filter sees are recorded (those of tasks that have a
//! filter, and the exec of the command), not the launcher's set-up before
//! it, and the first `sched_process_exec` in the cgroup switches it to
//! [`record_state::RECORDING`] (everything).
//!
//! The hook runs from [`moat_rec_enter`], in every tier and mechanism, which
//! moatd loads and pins but never attaches: `moat` attaches it for the length
//! of a recording, so that nothing runs on `sys_enter` for recording while
//! nobody records (the pairing's `sys_enter`, which runs on every syscall of
//! the node, does not even check the gate).

use aya_ebpf::{
    bindings::BPF_NOEXIST,
    helpers::{bpf_get_current_ancestor_cgroup_id, bpf_get_current_cgroup_id},
    macros::{map, raw_tracepoint},
    maps::{Array, HashMap},
    programs::RawTracePointContext,
};
use moat_common::{
    record_state, RecordKey, RecordState, AUDIT_ARCH_I386, AUDIT_ARCH_X86_64,
    RECORD_CGROUPS_ENTRIES, RECORD_GATE_V1, RECORD_GATE_V2, RECORD_MAX_LEVEL,
    RECORD_SYSCALLS_ENTRIES,
};

use crate::{
    kernel::{current_task, is_compat, read_kernel, v1_pids_cgroup, EEXIST},
    Error,
};

/// `SECCOMP_MODE_FILTER`.
const SECCOMP_MODE_FILTER: u32 = 2;

/// Recordings in progress, per key kind (see `moat_common::RECORD_GATE_MAP`).
#[map]
static RECORD_GATE: Array<u32> = Array::with_max_entries(2, 0);

/// The cgroups being recorded.
#[map]
static RECORD_CGROUPS: HashMap<u64, RecordState> =
    HashMap::with_max_entries(RECORD_CGROUPS_ENTRIES, 0);

/// What each recording saw.
#[map]
static RECORD_SYSCALLS: HashMap<RecordKey, u8> =
    HashMap::with_max_entries(RECORD_SYSCALLS_ENTRIES, 0);

/// `execve` and `execveat` in each ABI: what an armed recording keeps.
mod exec_nr {
    pub const X86_64_EXECVE: u32 = 59;
    pub const X86_64_EXECVEAT: u32 = 322;
    pub const I386_EXECVE: u32 = 11;
    pub const I386_EXECVEAT: u32 = 358;
    pub const X32_EXECVE: u32 = 0x4000_0000 | 520;
    pub const X32_EXECVEAT: u32 = 0x4000_0000 | 545;
}

/// `sys_enter(struct pt_regs *regs, long id)` for recording only: the hook,
/// without the pairing's bookkeeping. Attached by `moat` while it records (a
/// second pairing would corrupt the thread states, so this program has none).
#[raw_tracepoint(tracepoint = "sys_enter")]
pub fn moat_rec_enter(ctx: RawTracePointContext) -> u32 {
    match try_rec_enter(&ctx) {
        Ok(()) => 0,
        Err(_) => 1,
    }
}

#[inline(always)]
fn try_rec_enter(ctx: &RawTracePointContext) -> Result<(), Error> {
    on_sys_enter(ctx.arg(1));
    Ok(())
}

/// Whether any recording exists: the only cost for the tasks of a node where
/// none does.
#[inline(always)]
fn gate(index: u32) -> bool {
    // SAFETY: a pointer into the array's value, valid for the program's run.
    RECORD_GATE
        .get_ptr(index)
        .is_some_and(|count| unsafe { *count } != 0)
}

/// The `sys_enter` hook: records syscall `nr` if the current task is recorded.
#[inline(always)]
fn on_sys_enter(nr: i64) {
    let v2 = gate(RECORD_GATE_V2);
    let v1 = gate(RECORD_GATE_V1);
    if !v2 && !v1 {
        return;
    }
    let Some((key, state)) = recording_of_current(v2, v1) else {
        return;
    };
    let task = current_task();
    let arch = if is_compat(task) {
        AUDIT_ARCH_I386
    } else {
        AUDIT_ARCH_X86_64
    };
    let nr = nr as u32;
    // SAFETY: a pointer into the map's value, valid for the program's run.
    if unsafe { (*state).state } == record_state::ARMED && !is_exec(arch, nr) && !has_filter(task) {
        return;
    }
    let entry = RecordKey {
        cgroup_id: key,
        arch,
        nr,
    };
    if RECORD_SYSCALLS.get_ptr(&entry).is_some() {
        return;
    }
    match RECORD_SYSCALLS.insert(&entry, &1, u64::from(BPF_NOEXIST)) {
        Ok(()) => {}
        // Another CPU recorded it first.
        Err(err) if err == -EEXIST => {}
        // SAFETY: as above; a lost count only has to become non-zero, so a
        // racing increment on another CPU does no harm.
        Err(_) => unsafe { (*state).lost = (*state).lost.wrapping_add(1) },
    }
}

/// The `sched_process_exec` hook: the first exec in an armed cgroup starts
/// the recording proper.
#[inline(always)]
pub fn on_exec() {
    if !gate(RECORD_GATE_V2) && !gate(RECORD_GATE_V1) {
        return;
    }
    // SAFETY: helper without arguments.
    let id = unsafe { bpf_get_current_cgroup_id() };
    if let Some(state) = RECORD_CGROUPS.get_ptr_mut(&id) {
        // SAFETY: a pointer into the map's value, valid for the program's run.
        unsafe {
            if (*state).state == record_state::ARMED {
                (*state).state = record_state::RECORDING;
            }
        }
    }
}

/// The recording the current task belongs to: its key and state.
#[inline(always)]
fn recording_of_current(v2: bool, v1: bool) -> Option<(u64, *mut RecordState)> {
    // SAFETY: helper without arguments.
    let id = unsafe { bpf_get_current_cgroup_id() };
    let in_v2_root = id == param!(v2_root_cgroup_id);
    if v2 && !in_v2_root {
        if let Some(state) = RECORD_CGROUPS.get_ptr_mut(&id) {
            return Some((id, state));
        }
        // A sub-cgroup of a recorded one: walk up from the top, which
        // reaches the recorded cgroup (level 1 or more) first.
        let mut level = 1;
        while level < RECORD_MAX_LEVEL {
            // SAFETY: helper with an integer argument.
            let ancestor = unsafe { bpf_get_current_ancestor_cgroup_id(level) };
            if ancestor == 0 || ancestor == id {
                break;
            }
            if let Some(state) = RECORD_CGROUPS.get_ptr_mut(&ancestor) {
                return Some((ancestor, state));
            }
            level += 1;
        }
        return None;
    }
    if v1 && in_v2_root && param!(v1_pids_rekey) != 0 {
        let key = v1_pids_cgroup().ok()?;
        let state = RECORD_CGROUPS.get_ptr_mut(&key)?;
        return Some((key, state));
    }
    None
}

/// Whether the task has a seccomp filter: every syscall it makes is one the
/// filter saw (a container runtime's own calls between loading the filter
/// and the exec, `moat run --allow-new-privileges`'s set-up).
#[inline(always)]
fn has_filter(task: *const u8) -> bool {
    read_kernel::<u32>(task, param!(task_seccomp_mode))
        .is_ok_and(|mode| mode == SECCOMP_MODE_FILTER)
}

#[inline(always)]
fn is_exec(arch: u32, nr: u32) -> bool {
    if arch == AUDIT_ARCH_I386 {
        nr == exec_nr::I386_EXECVE || nr == exec_nr::I386_EXECVEAT
    } else {
        matches!(
            nr,
            exec_nr::X86_64_EXECVE
                | exec_nr::X86_64_EXECVEAT
                | exec_nr::X32_EXECVE
                | exec_nr::X32_EXECVEAT
        )
    }
}
