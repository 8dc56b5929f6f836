//! moat's kernel-side eBPF programs.
//!
//! Built for `bpfel-unknown-none` by `agent/build.rs` (aya-build, pinned nightly,
//! `-Z build-std=core`) and embedded in `moatd`. Names of maps and programs, map
//! indices and record layouts come from `moat-common` so both sides agree on them.
//!
//! Entry points stay thin: each `#[raw_tracepoint]` function only calls a `try_`
//! function and drops its error, because a tracepoint program cannot fail the event
//! it observes; errors are for early returns, not for reporting.
//!
//! # Seccomp denials without a seccomp hook
//!
//! In the syscall entry path seccomp runs *before* the `sys_enter` tracepoint, and a
//! refused syscall skips it, but `sys_exit` still fires. So every thread has a slot in
//! [`THREAD_STATE`] (an array indexed by thread id, sized to `pid_max`):
//!
//! | state | set by | meaning at `sys_exit` |
//! | --- | --- | --- |
//! | `UNKNOWN` (0) | map creation, `exec` tid hand-over | thread not seen entering since load: ignore |
//! | `IDLE` | every `sys_exit` | no syscall entered: **refused by seccomp**, classify |
//! | `ENTERED` | `sys_enter` (with flags for fork/unshare/seccomp/prctl) | paired: normal |
//! | `NEW_TASK` | `sched_process_fork` on the child | a new task's first return: ignore (and count the user namespace it was cloned into, if its parent asked for one) |
//! | `NO_FILTER` | a re-checking `sys_exit` | the thread cannot be refused: neither program does anything but read the state |
//!
//! The running thread's slot is cached in a line per CPU ([`maps::RUNNING_STATE`]) and
//! written back to `THREAD_STATE` by `sched_switch` when the thread leaves the CPU,
//! so the paired fast path knows no thread id: the inlined CPU number, a load, a
//! compare and a store in each program, and no helper call. Only an entry or exit
//! whose thread came back to the CPU since its last syscall event reads
//! `THREAD_STATE` (see [`thread_state`]).
//!
//! A thread without a seccomp filter that is its process's only thread is in
//! `NO_FILTER` (see [`kernel::unrefusable`]) until it enters a syscall that may
//! change that (seccomp, prctl, fork-family; [`syscalls::is_watched`]); the
//! exit of such a syscall, a new task's first return and a thread's first exit
//! seen since load decide the state again.
//!
//! An unpaired exit is classified from the registers and the task (offsets from BTF,
//! see [`Params`]): `orig_ax == -1` (skipped by a tracer), tasks without a seccomp
//! filter (nothing but seccomp is counted, so nothing else can be miscounted) and
//! ptraced tasks are ignored; `ret == nr` with SIGSYS pending is TRAP; `ret` in
//! `[-4095, 0]` is ERRNO.
//! KILL is counted on `sched_process_exit` from `seccomp.mode == SECCOMP_MODE_DEAD`,
//! because `KILL_THREAD` in a multi-threaded process exits inside the entry path and
//! never reaches `sys_exit`; counting every kill there, and only there, counts each
//! exactly once.
//!
//! That pairing is one of three ways of counting refusals (`[tracing]` in
//! moatd.toml, see `docs/kernel-side.md`); the others are in [`refusals`]
//! (fexit on `__secure_computing`, and `signal_generate` for the `fatal` tier)
//! and [`fexit_events`] (the pairing's process events under fexit).
//!
//! # Layout
//!
//! This file holds the pairing's and the scheduler's entry points; their
//! `try_` functions are in [`syscalls`] and [`sched`], the slot encoding in
//! [`thread_state`], the maps in [`maps`], counters and audit records in
//! [`audit`], kernel constants and task reads in [`kernel`]. [`record`] is
//! profile recording (with its record-only `sys_enter` entry point).
#![no_std]
#![no_main]

use aya_ebpf::{macros::raw_tracepoint, programs::RawTracePointContext, Global};
use moat_common::Params;

/// Struct offsets and the audit rate limit, set by the loader (`override_global`).
#[unsafe(no_mangle)]
static PARAMS: Global<Params> = Global::new(Params::ZERO);

/// Reads one field of [`PARAMS`]. Volatile, so the compiler cannot fold the
/// object's initial value; the verifier sees a load from a frozen read-only map.
macro_rules! param {
    ($field:ident) => {{
        let params = ::core::ptr::addr_of!(crate::PARAMS).cast::<::moat_common::Params>();
        // SAFETY: `Global<T>` is `repr(transparent)` over an initialised `T`.
        unsafe { ::core::ptr::read_volatile(::core::ptr::addr_of!((*params).$field)) }
    }};
}

// After `param!`, which they use.
mod audit;
mod fexit_events;
mod kernel;
mod maps;
mod record;
mod refusals;
mod sched;
mod syscalls;
mod thread_state;

/// Why a `try_` function stopped early.
enum Error {
    /// A map lookup or a kernel read failed.
    Lookup,
}

// ---------------------------------------------------------------------------
// Entry points

/// `sys_enter(struct pt_regs *regs, long id)`: marks the thread as inside syscall `id`.
#[raw_tracepoint(tracepoint = "sys_enter")]
pub fn moat_sys_enter(ctx: RawTracePointContext) -> u32 {
    match syscalls::try_sys_enter(&ctx) {
        Ok(()) => 0,
        Err(_) => 1,
    }
}

/// `sys_exit(struct pt_regs *regs, long ret)`: pairs the exit with its entry; an
/// unpaired one is a syscall refused by seccomp (or one of the exclusions).
#[raw_tracepoint(tracepoint = "sys_exit")]
pub fn moat_sys_exit(_ctx: RawTracePointContext) -> u32 {
    match syscalls::try_sys_exit() {
        Ok(()) => 0,
        Err(_) => 1,
    }
}

/// `sched_switch(bool preempt, struct task_struct *prev, struct task_struct *next, ...)`:
/// the thread leaving the CPU (the current one) takes its cached state along.
#[raw_tracepoint(tracepoint = "sched_switch")]
pub fn moat_sched_switch(_ctx: RawTracePointContext) -> u32 {
    match sched::try_sched_switch() {
        Ok(()) => 0,
        Err(_) => 1,
    }
}

/// `sched_process_fork(struct task_struct *parent, struct task_struct *child)`.
#[raw_tracepoint(tracepoint = "sched_process_fork")]
pub fn moat_sched_fork(ctx: RawTracePointContext) -> u32 {
    match sched::try_sched_fork(&ctx) {
        Ok(()) => 0,
        Err(_) => 1,
    }
}

/// `sched_process_exec(struct task_struct *p, pid_t old_pid, struct linux_binprm *bprm)`.
#[raw_tracepoint(tracepoint = "sched_process_exec")]
pub fn moat_sched_exec(ctx: RawTracePointContext) -> u32 {
    match sched::try_sched_exec(&ctx) {
        Ok(()) => 0,
        Err(_) => 1,
    }
}

/// `sched_process_exit(struct task_struct *p[, bool group_dead])`.
#[raw_tracepoint(tracepoint = "sched_process_exit")]
pub fn moat_sched_exit(ctx: RawTracePointContext) -> u32 {
    match sched::try_sched_exit(&ctx) {
        Ok(()) => 0,
        Err(_) => 1,
    }
}

/// `cgroup_rmdir(struct cgroup *cgrp, const char *path)`: a cgroup was removed.
#[raw_tracepoint(tracepoint = "cgroup_rmdir")]
pub fn moat_cgroup_rmdir(ctx: RawTracePointContext) -> u32 {
    match sched::try_cgroup_rmdir(&ctx) {
        Ok(()) => 0,
        Err(_) => 1,
    }
}

/// The kernel grants GPL-only helpers (e.g. `bpf_probe_read_kernel`) only to
/// programs whose license string it deems GPL-compatible.
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
