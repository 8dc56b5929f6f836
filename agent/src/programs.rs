//! moat's eBPF programs: the object embedded at build time, loading it into the
//! kernel, attaching its programs and reading its maps.

use aya::{
    maps::{MapData, PerCpuArray},
    programs::RawTracePoint,
    Ebpf, EbpfLoader,
};
use moat_common::{
    process_counter, Counter, AUDIT_EVENTS_MAP, AUDIT_RATE_MAP, DENIALS_MAP, FORK_PROGRAM,
    FORK_TRACEPOINT, PROCESS_COUNTERS_MAP, PROCESS_EVENTS_MAP, THREAD_STATE_MAP,
};

use crate::{
    counters::{sum_cpus, ProcessCounts},
    error::{Error, Result},
    rlimit,
};

/// The eBPF object built from `ebpf/moat-ebpf` by `build.rs`.
///
/// Empty when the agent was built with `AYA_BUILD_SKIP`.
pub fn ebpf_object() -> &'static [u8] {
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/moat-ebpf"))
}

/// The smallest ring buffer the kernel accepts: one page.
fn page_size() -> u32 {
    // SAFETY: sysconf with a valid name.
    let size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    u32::try_from(size).unwrap_or(4096)
}

/// The original fork counter of moat's eBPF object, loaded into the kernel. The
/// node-wide programs (denials, process events, audit) are [`crate::kernel::Kernel`].
///
/// Dropping it detaches every attached program and frees the maps (unless something
/// else, such as bpftool, still holds them).
pub struct Programs {
    // Owns the programs and, through them, their links: keep it alive while the
    // programs should stay attached.
    ebpf: Ebpf,
    process_counters: PerCpuArray<MapData, Counter>,
    fork_attached: bool,
}

impl std::fmt::Debug for Programs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Programs")
            .field("fork_attached", &self.fork_attached)
            .finish_non_exhaustive()
    }
}

impl Programs {
    /// Loads the embedded object: creates its maps and checks that the maps the agent
    /// reads have the expected layout. Attaches nothing yet.
    ///
    /// Tries to raise `RLIMIT_MEMLOCK` first (see [`rlimit`]) and goes on if it cannot.
    pub fn load() -> Result<Self> {
        Self::load_object(ebpf_object())
    }

    /// Like [`Programs::load`], from an object other than the embedded one.
    pub fn load_object(object: &[u8]) -> Result<Self> {
        if object.is_empty() {
            return Err(Error::NoEmbeddedObject);
        }
        rlimit::raise_memlock_rlimit();
        // The object also holds the node-wide programs' maps (see `crate::kernel`),
        // which the fork counter never uses: create them as small as the kernel allows.
        let mut ebpf = EbpfLoader::new()
            .map_max_entries(THREAD_STATE_MAP, 1)
            .map_max_entries(DENIALS_MAP, 1)
            .map_max_entries(PROCESS_EVENTS_MAP, 1)
            .map_max_entries(AUDIT_RATE_MAP, 1)
            .map_max_entries(AUDIT_EVENTS_MAP, page_size())
            .load(object)
            .map_err(|source| Error::LoadObject {
                size: object.len(),
                source,
            })?;
        let map = ebpf
            .take_map(PROCESS_COUNTERS_MAP)
            .ok_or(Error::MissingMap {
                name: PROCESS_COUNTERS_MAP,
            })?;
        let process_counters = PerCpuArray::try_from(map).map_err(|source| Error::MapType {
            name: PROCESS_COUNTERS_MAP,
            source,
        })?;
        Ok(Self {
            ebpf,
            process_counters,
            fork_attached: false,
        })
    }

    /// Loads the `sched_process_fork` counter into the kernel and attaches it, so that
    /// [`ProcessCounts::forks`] starts counting. Calling it again is a no-op.
    pub fn attach_fork_counter(&mut self) -> Result<()> {
        if self.fork_attached {
            return Ok(());
        }
        self.attach_raw_tracepoint(FORK_PROGRAM, FORK_TRACEPOINT)?;
        self.fork_attached = true;
        Ok(())
    }

    /// Whether the fork counter is attached.
    pub fn fork_counter_attached(&self) -> bool {
        self.fork_attached
    }

    /// Reads every process-event counter, summed over all CPUs.
    pub fn process_counts(&self) -> Result<ProcessCounts> {
        let mut totals = [0; process_counter::COUNT as usize];
        for (index, total) in (0..process_counter::COUNT).zip(totals.iter_mut()) {
            let per_cpu =
                self.process_counters
                    .get(&index, 0)
                    .map_err(|source| Error::ReadMap {
                        name: PROCESS_COUNTERS_MAP,
                        index,
                        source,
                    })?;
            *total = sum_cpus(per_cpu.iter().copied());
        }
        Ok(ProcessCounts::from_totals(totals))
    }

    fn attach_raw_tracepoint(
        &mut self,
        name: &'static str,
        tracepoint: &'static str,
    ) -> Result<()> {
        let program: &mut RawTracePoint = self
            .ebpf
            .program_mut(name)
            .ok_or(Error::MissingProgram { name })?
            .try_into()
            .map_err(|source| Error::ProgramType {
                name,
                expected: "raw tracepoint",
                source,
            })?;
        program
            .load()
            .map_err(|source| Error::LoadProgram { name, source })?;
        // The link is owned by the program, so it lives exactly as long as `self`.
        program.attach(tracepoint).map_err(|source| Error::Attach {
            name,
            tracepoint,
            source,
        })?;
        log::debug!("attached eBPF program {name} to raw tracepoint {tracepoint}");
        Ok(())
    }
}
