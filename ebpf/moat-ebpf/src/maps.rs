//! The maps the pairing and the refusal counters share with user space (names
//! and sizes from `moat-common`; moatd resizes some at load). The recording
//! maps are in [`crate::record`].

use aya_ebpf::{
    macros::map,
    maps::{Array, HashMap, LruHashMap, PerCpuArray, PerCpuHashMap, RingBuf},
};
use moat_common::{
    audit_drop, ignored_exit, map_full, Counter, DenialKey, PidsRetired, ProcessKey,
    DEFAULT_AGGREGATE_ENTRIES, DEFAULT_RATE_ENTRIES, DEFAULT_RING_BYTES, DEFAULT_THREAD_SLOTS,
    PIDS_RETIRED_ENTRIES,
};

/// Each thread's syscall state, indexed by thread id (see the crate docs).
///
/// A plain array, not a hash: the lookup is inlined by the verifier into a bounds
/// check and an address computation, which keeps the per-syscall cost low. Only the
/// thread itself writes its slot, except `sched_process_fork` (before the child
/// first runs) and `sched_process_exec` (the exec'ing thread, for itself).
#[map]
pub(crate) static THREAD_STATE: Array<u64> = Array::with_max_entries(DEFAULT_THREAD_SLOTS, 0);

/// The state of the thread running on each CPU, while it is newer than the
/// thread's [`THREAD_STATE`] slot; 0 when it is not (see [`crate::thread_state`]).
///
/// A cache that makes the paired fast path free of helper calls: the running
/// thread's syscall entries and exits update it without knowing the thread's id,
/// and `sched_switch` writes it back to [`THREAD_STATE`] when the thread leaves
/// the CPU. Global data (`.bss`) indexed by CPU rather than a per-CPU map: the
/// CPU number (inlined by the verifier, 6.10 and later) and an offset are
/// fewer instructions than a per-CPU map lookup. One line per CPU, so that no
/// two CPUs write the same line, the same pair of lines (which adjacent-line
/// prefetchers fetch together) included; CPUs from [`RUNNING_CPUS`] on use
/// the thread's slot directly.
#[unsafe(no_mangle)]
pub(crate) static mut RUNNING_STATE: [RunningLine; RUNNING_CPUS] =
    [const { RunningLine { state: 0 } }; RUNNING_CPUS];

/// CPUs with a line in [`RUNNING_STATE`]: more than any machine moat knows of.
pub(crate) const RUNNING_CPUS: usize = 1024;

/// One CPU's line of [`RUNNING_STATE`].
#[repr(C, align(128))]
pub(crate) struct RunningLine {
    pub(crate) state: u64,
}

/// Seccomp denials per (cgroup, arch, syscall, action, errno).
#[map]
pub(crate) static DENIALS: PerCpuHashMap<DenialKey, Counter> =
    PerCpuHashMap::with_max_entries(DEFAULT_AGGREGATE_ENTRIES, 0);

/// Process events per (cgroup, kind, errno).
#[map]
pub(crate) static PROCESS_EVENTS: PerCpuHashMap<ProcessKey, Counter> =
    PerCpuHashMap::with_max_entries(DEFAULT_AGGREGATE_ENTRIES, 0);

/// Updates lost to a full map, per `map_full` index.
#[map]
pub(crate) static MAP_FULL: PerCpuArray<Counter> =
    PerCpuArray::with_max_entries(map_full::COUNT, 0);

/// Audit records not delivered, per `audit_drop` index.
#[map]
pub(crate) static AUDIT_DROPS: PerCpuArray<Counter> =
    PerCpuArray::with_max_entries(audit_drop::COUNT, 0);

/// Unpaired syscall exits deliberately not counted, per `ignored_exit` index.
#[map]
pub(crate) static IGNORED_EXITS: PerCpuArray<Counter> =
    PerCpuArray::with_max_entries(ignored_exit::COUNT, 0);

/// Per-cgroup audit rate limit: the GCRA "theoretical arrival time" (boot ns).
#[map]
pub(crate) static AUDIT_RATE: LruHashMap<u64, u64> =
    LruHashMap::with_max_entries(DEFAULT_RATE_ENTRIES, 0);

/// Audit records for user space.
#[map]
pub(crate) static AUDIT_EVENTS: RingBuf = RingBuf::with_byte_size(DEFAULT_RING_BYTES, 0);

/// Removed pids cgroups with refused forks on their count, keyed like the
/// counters; user space drains it.
#[map]
pub(crate) static PIDS_RETIRED: HashMap<u64, PidsRetired> =
    HashMap::with_max_entries(PIDS_RETIRED_ENTRIES, 0);

/// Thread groups whose exit was counted, by `signal_struct` address, on kernels
/// whose `sched_process_exit` has no `group_dead` (before 6.16): there the last
/// threads of a process that exit together can all see `signal->live == 0`, each
/// after its own decrement, and only the first may count the process. A process
/// fork clears its entry (the address may be reused); LRU, so the entries of
/// addresses never reused age out.
#[map]
pub(crate) static EXITED_GROUPS: LruHashMap<u64, u8> =
    LruHashMap::with_max_entries(EXITED_GROUP_ENTRIES, 0);

/// Exits counted at the same time, at most: far more than enough.
pub(crate) const EXITED_GROUP_ENTRIES: u32 = 4_096;
