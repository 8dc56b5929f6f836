//! moat's kernel-side eBPF programs.
//!
//! Built for `bpfel-unknown-none` by `agent/build.rs` (aya-build, pinned nightly,
//! `-Z build-std=core`) and embedded in `moatd`. Names of maps and programs, and
//! map indices, come from `moat-common` so both sides agree on them.
//!
//! Entry points stay thin: each `#[raw_tracepoint]` function only calls a `try_`
//! function and drops its error, because a tracepoint program cannot fail the event
//! it observes; errors are for early returns, not for reporting.
#![no_std]
#![no_main]

use aya_ebpf::{
    macros::{map, raw_tracepoint},
    maps::PerCpuArray,
    programs::RawTracePointContext,
};
use moat_common::{process_counter, Counter};

/// Process-event counters, one slot per `process_counter` index.
///
/// Per CPU so that the hot path is a plain increment: no atomics, no cache line
/// bouncing between CPUs on fork-heavy nodes. User space sums the CPUs.
#[map]
static PROCESS_COUNTERS: PerCpuArray<Counter> =
    PerCpuArray::with_max_entries(process_counter::COUNT, 0);

/// Why a `try_` function stopped early.
enum Error {
    /// The map lookup failed; only possible if the index were out of range.
    NoCounterSlot,
}

/// Counts every new task (process or thread) on `sched_process_fork`.
#[raw_tracepoint(tracepoint = "sched_process_fork")]
pub fn sched_process_fork(ctx: RawTracePointContext) -> u32 {
    // The kernel ignores a raw tracepoint's return value; 1 only marks the error
    // path for anyone reading the program with bpftool.
    match try_sched_process_fork(&ctx) {
        Ok(()) => 0,
        Err(_) => 1,
    }
}

fn try_sched_process_fork(_ctx: &RawTracePointContext) -> Result<(), Error> {
    increment(process_counter::FORK)
}

#[inline(always)]
fn increment(index: u32) -> Result<(), Error> {
    let slot = PROCESS_COUNTERS
        .get_ptr_mut(index)
        .ok_or(Error::NoCounterSlot)?;
    // SAFETY: the pointer is this CPU's slot of a map value, valid for the life of
    // the program. A non-atomic add is enough: the slot belongs to this CPU, and a
    // raw tracepoint program does not run nested inside itself on one CPU.
    unsafe { *slot = (*slot).wrapping_add(1) };
    Ok(())
}

/// The kernel grants GPL-only helpers (e.g. `bpf_probe_read_kernel`, which later
/// programs need) only to programs whose license string it deems GPL-compatible.
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
