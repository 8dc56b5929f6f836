//! The encoding of a [`crate::maps::THREAD_STATE`] slot: the state in bits
//! 0..8, flags in 8..16 (see the crate docs for the states), and where the
//! current thread's state lives. Small values, so the fast paths store and
//! compare immediates.
//!
//! A thread's state is in its `THREAD_STATE` slot while it is off CPU. While it
//! runs, its CPU's line of [`crate::maps::RUNNING_STATE`] may hold a newer value, which
//! `sched_switch` writes back and clears when the thread leaves the CPU. So a
//! non-zero cache always belongs to the thread running on that CPU: every other
//! thread that ran there since has left through `sched_switch`, and syscall
//! tracepoints do not run in interrupts. Tracepoint programs run with
//! preemption disabled, so no switch falls inside one.

use core::ptr::addr_of_mut;

use aya_ebpf::helpers::{bpf_get_current_pid_tgid, bpf_get_smp_processor_id};

use crate::{
    audit::increment,
    maps::{MAP_FULL, RUNNING_CPUS, RUNNING_STATE, THREAD_STATE},
    Error,
};
use moat_common::map_full;

pub(crate) const FLAGS_SHIFT: u32 = 8;
pub(crate) const ST_UNKNOWN: u64 = 0;
pub(crate) const ST_IDLE: u64 = 1;
pub(crate) const ST_ENTERED: u64 = 2;
pub(crate) const ST_NEW_TASK: u64 = 3;
/// No seccomp filter can refuse the thread's syscalls until it makes a
/// watched one (see [`crate::kernel::unrefusable`]): neither program does
/// anything for it, and its exits are never examined.
pub(crate) const ST_NO_FILTER: u64 = 4;
/// The syscall is fork, vfork, clone or clone3 (for the arch it was made in).
pub(crate) const F_FORK: u64 = 1;
/// The syscall is unshare.
pub(crate) const F_UNSHARE: u64 = 2;
/// Its flags include `CLONE_NEWUSER`.
pub(crate) const F_NEWUSER: u64 = 4;
/// The syscall may install a seccomp filter on the thread (seccomp, prctl):
/// whether the thread can be refused is decided again at its exit.
pub(crate) const F_RECHECK: u64 = 8;

pub(crate) const IDLE: u64 = ST_IDLE;
pub(crate) const NEW_TASK: u64 = ST_NEW_TASK;
/// The no-filter state, without flags: the value both fast paths look for.
pub(crate) const NO_FILTER: u64 = ST_NO_FILTER;
/// Entered, no flags: the fast path's value.
pub(crate) const ENTERED: u64 = ST_ENTERED;

/// The state of slot value `value`.
#[inline(always)]
pub(crate) fn state(value: u64) -> u64 {
    value & 0xff
}

/// The `F_*` flags of slot value `value`.
#[inline(always)]
pub(crate) fn flags(value: u64) -> u64 {
    (value >> FLAGS_SHIFT) & 0xff
}

/// This CPU's line of [`RUNNING_STATE`]; None on a CPU beyond
/// [`RUNNING_CPUS`].
#[inline(always)]
pub(crate) fn cpu_line() -> Option<*mut u64> {
    // SAFETY: helper without arguments.
    let cpu = unsafe { bpf_get_smp_processor_id() } as usize;
    if cpu >= RUNNING_CPUS {
        return None;
    }
    // SAFETY: an address inside the array (no reference is made).
    Some(unsafe { addr_of_mut!(RUNNING_STATE[cpu].state) })
}

/// Where the running thread's state is read and written: this CPU's line
/// (0: not cached), or on a CPU beyond [`RUNNING_CPUS`] the thread's slot
/// itself, which the same logic reads and writes as if it were the cache.
#[inline(always)]
pub(crate) fn running_slot() -> Result<*mut u64, Error> {
    match cpu_line() {
        Some(line) => Ok(line),
        None => {
            let tid = bpf_get_current_pid_tgid() as u32;
            THREAD_STATE.get_ptr_mut(tid).ok_or(Error::Lookup)
        }
    }
}

/// The current thread's state, given this CPU's cache value `cached`: that
/// value if it holds the state, else the thread's slot. None for a thread
/// beyond `THREAD_STATE` (pid_max raised after load).
#[inline(always)]
pub(crate) fn current_state(cached: u64) -> Option<u64> {
    if cached != 0 {
        return Some(cached);
    }
    let tid = bpf_get_current_pid_tgid() as u32;
    // SAFETY: the current thread's slot, which nobody else writes while it runs.
    THREAD_STATE.get_ptr(tid).map(|slot| unsafe { *slot })
}

/// `sched_switch`: the thread leaving the CPU (the current one) takes its
/// cached state with it.
#[inline(always)]
pub(crate) fn write_back() -> Result<(), Error> {
    let Some(cache) = cpu_line() else {
        // No cache on this CPU: the state is in the slot already.
        return Ok(());
    };
    // SAFETY: this CPU's cache, valid for the program's run.
    let value = unsafe { *cache };
    if value == 0 {
        return Ok(());
    }
    unsafe { *cache = 0 };
    let tid = bpf_get_current_pid_tgid() as u32;
    match THREAD_STATE.get_ptr_mut(tid) {
        // SAFETY: the slot of the thread leaving the CPU: it writes it itself.
        Some(slot) => unsafe { *slot = value },
        None => increment(&MAP_FULL, map_full::THREAD_STATE)?,
    }
    Ok(())
}
