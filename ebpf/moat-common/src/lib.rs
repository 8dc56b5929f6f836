//! Types and constants shared by moat's kernel-side eBPF programs (`moat-ebpf`) and
//! the user-space agent (`moat-agent`).
//!
//! Both sides are compiled separately (one for `bpfel-unknown-none`, one for the
//! host), so anything whose layout or meaning must agree lives here: map and program
//! names, map indices, and `#[repr(C)]` records. With the `user` feature the records
//! implement `aya::Pod`, which aya requires before it copies them out of a map (there
//! are no records yet: the only map holds plain [`Counter`]s).
#![cfg_attr(not(test), no_std)]

/// Name of the per-CPU array of process-event counters, as the eBPF object exports it.
///
/// Each slot holds a [`Counter`]; slot indices are in [`process_counter`].
pub const PROCESS_COUNTERS_MAP: &str = "PROCESS_COUNTERS";

/// Name of the raw tracepoint program that counts `sched_process_fork`.
pub const FORK_PROGRAM: &str = "sched_process_fork";

/// Kernel tracepoint that [`FORK_PROGRAM`] attaches to.
pub const FORK_TRACEPOINT: &str = "sched_process_fork";

/// Value type of every slot of [`PROCESS_COUNTERS_MAP`].
///
/// Per CPU, so the eBPF side increments without atomics; user space sums the CPUs.
pub type Counter = u64;

/// Slot indices of the [`PROCESS_COUNTERS_MAP`] per-CPU array.
///
/// To add a counter: give it the next index, bump [`process_counter::COUNT`] and add
/// its name to [`process_counter::NAMES`] (whose length is checked against `COUNT`
/// at compile time). Indices are part of the kernel/user ABI: never reuse or
/// reorder them, because the map is sized from `COUNT` on the eBPF side.
pub mod process_counter {
    /// Every new task (`sched_process_fork`), processes and threads alike.
    pub const FORK: u32 = 0;

    /// Number of slots; the eBPF map is created with exactly this many entries.
    pub const COUNT: u32 = 1;

    /// Stable, lowercase names for each slot, indexed like the slots, for logs and
    /// metrics.
    pub const NAMES: [&str; COUNT as usize] = ["fork"];

    /// The name of slot `index`, or `None` for an index past [`COUNT`].
    pub const fn name(index: u32) -> Option<&'static str> {
        if index < COUNT {
            Some(NAMES[index as usize])
        } else {
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::process_counter;

    #[test]
    fn counter_names_cover_every_slot() {
        assert_eq!(process_counter::name(process_counter::FORK), Some("fork"));
        assert_eq!(process_counter::name(process_counter::COUNT), None);
    }
}
