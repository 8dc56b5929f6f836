//! The encoding of a [`crate::maps::THREAD_STATE`] slot: the state in bits
//! 0..8, flags in 8..16 (see the crate docs for the states), and where the
//! current thread's state lives. Small values, so the fast paths store and
//! compare immediates.
//!
//! A thread's state is in its `THREAD_STATE` slot while it is off CPU. While it
//! runs, [`crate::maps::RUNNING_STATE`] (per CPU) may hold a newer value, which
//! `sched_switch` writes back and clears when the thread leaves the CPU. So a
//! non-zero cache always belongs to the thread running on that CPU: every other
//! thread that ran there since has left through `sched_switch`, and syscall
//! tracepoints do not run in interrupts. Tracepoint programs run with
//! preemption disabled, so no switch falls inside one.

use core::{ffi::c_void, ptr::addr_of};

use aya_ebpf::helpers::{bpf_get_current_pid_tgid, bpf_map_lookup_elem};

use crate::{
    audit::increment,
    maps::{MAP_FULL, RUNNING_STATE, THREAD_STATE},
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

/// The key of [`RUNNING_STATE`]'s one entry, in read-only data: a key on the
/// stack would cost the fast paths a stack frame and a store and reload on
/// every run.
static RUNNING_KEY: u32 = 0;

/// This CPU's cache of the running thread's state (0: not cached).
#[inline(always)]
pub(crate) fn running_slot() -> Result<*mut u64, Error> {
    // SAFETY: a map definition (`PerCpuArray` is `repr(transparent)` over it)
    // and a pointer to a valid key; the verifier inlines the lookup.
    let value = unsafe {
        bpf_map_lookup_elem(
            addr_of!(RUNNING_STATE) as *mut c_void,
            addr_of!(RUNNING_KEY) as *const c_void,
        )
    };
    if value.is_null() {
        Err(Error::Lookup)
    } else {
        Ok(value.cast())
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
    let cache = running_slot()?;
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
