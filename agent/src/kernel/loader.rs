//! Loading the embedded eBPF object and attaching its programs: [`Kernel`] owns
//! the programs, their links and the maps the agent reads.

use std::sync::atomic::Ordering;

use aya::{
    maps::{HashMap, MapData, PerCpuArray, PerCpuHashMap, RingBuf},
    Ebpf, EbpfLoader,
};
use moat_common::{
    Counter, DenialKey, Params, PidsRetired, ProcessKey, AUDIT_DROPS_MAP, AUDIT_EVENTS_MAP,
    AUDIT_RATE_MAP, DENIALS_MAP, IGNORED_EXITS_MAP, MAP_FULL_MAP, PARAMS_GLOBAL, PIDS_RETIRED_MAP,
    PROCESS_EVENTS_MAP, RECORD_CGROUPS_MAP, RECORD_GATE_MAP, RECORD_SYSCALLS_MAP, THREAD_STATE_MAP,
};

/// The maps `moat` opens by pin to record a workload's syscalls.
const RECORD_MAPS: [&str; 3] = [RECORD_GATE_MAP, RECORD_CGROUPS_MAP, RECORD_SYSCALLS_MAP];

use super::{
    attach::{attach_programs, pin_record_program},
    btf::Btf,
    config::KernelConfig,
    error::{Error, Result},
    memlock,
    params::{read_pid_max, resolve_params, CgroupRekey},
    tracing::TracingMode,
};

/// moat's node-wide programs, loaded and attached.
///
/// Dropping it stops the audit reader thread (if any), then detaches every program
/// and frees the maps.
pub struct Kernel {
    // Stopped (in Drop) before anything else is dropped.
    pub(super) reader: Option<ReaderThread>,
    pub(super) denials: PerCpuHashMap<MapData, DenialKey, Counter>,
    pub(super) process_events: PerCpuHashMap<MapData, ProcessKey, Counter>,
    pub(super) map_full: PerCpuArray<MapData, Counter>,
    pub(super) audit_drops: PerCpuArray<MapData, Counter>,
    pub(super) ignored_exits: PerCpuArray<MapData, Counter>,
    /// Drained by the collector (entries are deleted once read), hence the lock.
    pub(super) pids_retired: std::sync::Mutex<HashMap<MapData, u64, PidsRetired>>,
    pub(super) ring: Option<RingBuf<MapData>>,
    pub(super) params: Params,
    pub(super) config: KernelConfig,
    pub(super) tracing: TracingMode,
    /// Names of the programs attached, in attach order.
    pub(super) attached: Vec<&'static str>,
    // Owns the programs and their links: dropped last, which detaches them.
    pub(super) ebpf: Ebpf,
}

impl std::fmt::Debug for Kernel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Kernel")
            .field("params", &self.params)
            .field("config", &self.config)
            .field("audit_reader_running", &self.reader.is_some())
            .finish_non_exhaustive()
    }
}

impl Kernel {
    /// Loads the embedded object with offsets from `/sys/kernel/btf/vmlinux` and
    /// maps sized from `config` and `pid_max`, and attaches every program.
    pub fn load(config: KernelConfig) -> Result<Kernel> {
        Self::load_object(ebpf_object(), config)
    }

    /// Like [`Kernel::load`], from an object other than the embedded one.
    pub fn load_object(object: &[u8], config: KernelConfig) -> Result<Kernel> {
        if object.is_empty() {
            return Err(Error::NoEmbeddedObject);
        }
        config.validate()?;
        let btf = Btf::from_sys_fs()?;
        let pid_max = read_pid_max()?;
        let cgroups = CgroupRekey::detect(&config.cgroup_root);
        log::debug!("cgroups for the kernel-side keys: {cgroups:?}");
        let params = resolve_params(&btf, &config, pid_max, cgroups)?;
        log::debug!("kernel-side parameters: {params:?}");
        memlock::raise_memlock_rlimit();
        let pins = record_pins(&config.record_pin_dir)?;
        // Held until the maps and the record program are pinned: two loads at
        // once (two moatd, or tests in one process) would otherwise both find
        // a pin missing, and the second one's pin would fail with EEXIST.
        let _pin_lock = lock_pin_dir(&config.record_pin_dir)?;

        let mut loader = EbpfLoader::new();
        for (name, path) in &pins {
            // An existing pin (a recording in progress across a restart of
            // moatd) is reused; a new one is created and pinned.
            loader.map_pin_path(name, path.as_path());
        }
        let mut ebpf = loader
            .override_global(PARAMS_GLOBAL, &params, true)
            .map_max_entries(THREAD_STATE_MAP, pid_max)
            .map_max_entries(DENIALS_MAP, config.denial_map_entries)
            .map_max_entries(PROCESS_EVENTS_MAP, config.process_map_entries)
            .map_max_entries(AUDIT_RATE_MAP, config.rate_map_entries)
            .map_max_entries(AUDIT_EVENTS_MAP, config.ring_buffer_bytes)
            .load(object)
            .map_err(|source| Error::LoadObject {
                size: object.len(),
                source,
            })?;

        let denials = take_map(&mut ebpf, DENIALS_MAP, PerCpuHashMap::try_from)?;
        let process_events = take_map(&mut ebpf, PROCESS_EVENTS_MAP, PerCpuHashMap::try_from)?;
        let map_full = take_map(&mut ebpf, MAP_FULL_MAP, PerCpuArray::try_from)?;
        let audit_drops = take_map(&mut ebpf, AUDIT_DROPS_MAP, PerCpuArray::try_from)?;
        let ignored_exits = take_map(&mut ebpf, IGNORED_EXITS_MAP, PerCpuArray::try_from)?;
        let pids_retired = take_map(&mut ebpf, PIDS_RETIRED_MAP, HashMap::try_from)?;
        let ring = take_map(&mut ebpf, AUDIT_EVENTS_MAP, RingBuf::try_from)?;

        let (tracing, attached) = attach_programs(&mut ebpf, &config)?;
        // After the programs that use the maps are attached: a `moat` that
        // finds the pinned program also finds moatd's links.
        pin_record_program(&mut ebpf, &config.record_pin_dir)?;
        Ok(Kernel {
            reader: None,
            denials,
            process_events,
            map_full,
            audit_drops,
            ignored_exits,
            pids_retired: std::sync::Mutex::new(pids_retired),
            ring: Some(ring),
            params,
            config,
            tracing,
            attached,
            ebpf,
        })
    }

    /// The parameters passed to the programs (offsets, rate limit, `pid_max`).
    pub fn params(&self) -> &Params {
        &self.params
    }

    /// The configuration this was loaded with.
    pub fn config(&self) -> &KernelConfig {
        &self.config
    }

    /// Which refusals are counted, and the mechanism chosen at load.
    pub fn tracing_mode(&self) -> &TracingMode {
        &self.tracing
    }

    /// Names of the attached programs, in attach order.
    pub fn attached_programs(&self) -> &[&'static str] {
        &self.attached
    }

    /// The kernel's ids of the attached programs, in attach order (as `bpftool prog`
    /// shows them).
    pub fn program_ids(&self) -> Vec<u32> {
        self.attached
            .iter()
            .filter_map(|name| self.ebpf.program(name)?.info().ok())
            .map(|info| info.id())
            .collect()
    }
}

impl Drop for Kernel {
    fn drop(&mut self) {
        if let Some(reader) = self.reader.take() {
            reader.stop.store(true, Ordering::Relaxed);
            // Wakes within READER_POLL, or as soon as a blocked send is unblocked
            // by the receiver going away.
            if reader.handle.join().is_err() {
                log::warn!("the audit ring buffer reader thread panicked");
            }
        }
        // The maps and then `ebpf` (programs and links) drop after this.
    }
}

/// Creates `dir` (on bpffs) and returns where each recording map is pinned.
/// The pins outlive moatd: `moat` tells a live agent from stale pins by
/// whether a loaded program uses the maps.
fn record_pins(dir: &std::path::Path) -> Result<Vec<(&'static str, std::path::PathBuf)>> {
    std::fs::create_dir_all(dir).map_err(|source| Error::PinDir {
        path: dir.to_path_buf(),
        source,
    })?;
    Ok(RECORD_MAPS
        .iter()
        .map(|name| (*name, dir.join(name)))
        .collect())
}

/// An exclusive `flock` of the pin directory (the one `moat` takes to change
/// recordings), released when dropped.
fn lock_pin_dir(dir: &std::path::Path) -> Result<nix::fcntl::Flock<std::fs::File>> {
    let error = |source| Error::PinDir {
        path: dir.to_path_buf(),
        source,
    };
    let file = std::fs::File::open(dir).map_err(error)?;
    nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusive)
        .map_err(|(_, errno)| error(std::io::Error::from(errno)))
}

fn take_map<M>(
    ebpf: &mut Ebpf,
    name: &'static str,
    convert: impl FnOnce(aya::maps::Map) -> std::result::Result<M, aya::maps::MapError>,
) -> Result<M> {
    let map = ebpf.take_map(name).ok_or(Error::MissingMap { name })?;
    convert(map).map_err(|source| Error::MapType { name, source })
}

/// The eBPF object built from `ebpf/moat-ebpf` by `build.rs`.
///
/// Empty when the agent was built with `AYA_BUILD_SKIP`.
pub fn ebpf_object() -> &'static [u8] {
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/moat-ebpf"))
}

/// The audit reader thread started by `Kernel::audit_records`, stopped when the
/// [`Kernel`] is dropped.
pub(super) struct ReaderThread {
    pub(super) stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    pub(super) handle: std::thread::JoinHandle<()>,
}
