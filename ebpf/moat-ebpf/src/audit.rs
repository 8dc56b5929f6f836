//! Aggregation (per-CPU counters) and audit records (rate-limited, on the
//! ring buffer).

use core::ptr::addr_of_mut;

use aya_ebpf::{
    bindings::BPF_NOEXIST,
    helpers::{bpf_get_current_pid_tgid, bpf_ktime_get_boot_ns, generated::bpf_get_current_comm},
    maps::{PerCpuArray, PerCpuHashMap},
};
use moat_common::{
    audit_drop, audit_kind, map_full, AuditEvent, Counter, DenialKey, ProcessKey, AUDIT_DISABLED,
};

use crate::{
    kernel::EEXIST,
    maps::{AUDIT_DROPS, AUDIT_EVENTS, AUDIT_RATE, DENIALS, MAP_FULL, PROCESS_EVENTS},
    Error,
};

#[inline(always)]
pub(crate) fn count_denial(
    cgroup_id: u64,
    arch: u32,
    nr: i32,
    denial: u32,
    errno: u32,
) -> Result<(), Error> {
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
pub(crate) fn count_process_event(cgroup_id: u64, kind: u32, errno: u32) -> Result<(), Error> {
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
pub(crate) fn bump<K>(
    map: &PerCpuHashMap<K, Counter>,
    key: &K,
    full_index: u32,
) -> Result<(), Error> {
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
pub(crate) fn audit(cgroup_id: u64, kind: u32, arch: u32, nr: i32, denial: u32, errno: u32) {
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
pub(crate) fn admit(cgroup_id: u64, now: u64) -> bool {
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

#[inline(always)]
pub(crate) fn increment(map: &PerCpuArray<Counter>, index: u32) -> Result<(), Error> {
    let slot = map.get_ptr_mut(index).ok_or(Error::Lookup)?;
    // SAFETY: the pointer is this CPU's slot of a map value, valid for the life of
    // the program. A non-atomic add is enough: the slot belongs to this CPU, and a
    // raw tracepoint program does not run nested inside itself on one CPU.
    unsafe { *slot = (*slot).wrapping_add(1) };
    Ok(())
}
