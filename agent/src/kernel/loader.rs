//! Loading the embedded eBPF object and attaching its programs: [`Kernel`] owns
//! the programs, their links and the maps the agent reads.

use std::{path::Path, sync::atomic::Ordering};

use aya::{
    maps::{HashMap, Map, MapData, PerCpuArray, PerCpuHashMap, RingBuf},
    programs::links::{FdLink, PinnedLink},
    Ebpf, EbpfLoader,
};
use moat_common::{
    Counter, DenialKey, Params, PidsRetired, ProcessKey, AUDIT_DROPS_MAP, AUDIT_EVENTS_MAP,
    AUDIT_RATE_MAP, DENIALS_MAP, IGNORED_EXITS_MAP, MAP_FULL_MAP, PARAMS_GLOBAL, PIDS_RETIRED_MAP,
    PROCESS_EVENTS_MAP, RECORD_CGROUPS_MAP, RECORD_GATE_MAP, RECORD_SYSCALLS_MAP, THREAD_STATE_MAP,
};

/// The maps `moat` opens by pin to record a workload's syscalls.
const RECORD_MAPS: [&str; 3] = [RECORD_GATE_MAP, RECORD_CGROUPS_MAP, RECORD_SYSCALLS_MAP];
/// The maps moatd reads, pinned in the layout directory when the programs are
/// kept, so that the next moatd opens them (the others live as long as the
/// programs that use them).
const READ_MAPS: [&str; 7] = [
    DENIALS_MAP,
    PROCESS_EVENTS_MAP,
    MAP_FULL_MAP,
    AUDIT_DROPS_MAP,
    IGNORED_EXITS_MAP,
    PIDS_RETIRED_MAP,
    AUDIT_EVENTS_MAP,
];

use super::{
    attach::{adopted_mode, attach_programs, pin_record_program},
    btf::Btf,
    config::KernelConfig,
    error::{Error, Result},
    memlock,
    params::{read_pid_max, resolve_params, CgroupRekey},
    pins::{self, PinLock, PinState},
    tracing::TracingMode,
};

/// moat's node-wide programs, loaded and attached (or adopted from pins).
///
/// Dropping it stops the audit reader thread (if any). Without
/// [`KernelConfig::keep_pinned`] it then detaches every program and frees the
/// maps; with it, the pinned links keep the programs attached and counting
/// until a later moatd adopts them or `moatd --unload` removes the pins.
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
    /// The kernel's ids of the attached programs, in the same order.
    program_ids: Vec<u32>,
    /// The pinned links, held open while loaded (closing them detaches
    /// nothing: the pins do that).
    _links: Vec<FdLink>,
    pins: PinState,
    /// Held while loaded, so that no other moatd adopts the same pins.
    _lock: Option<PinLock>,
    // Owns the programs (and, when not pinned, their links): dropped last,
    // which detaches unpinned ones. None when the programs were adopted.
    _ebpf: Option<Ebpf>,
}

impl std::fmt::Debug for Kernel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Kernel")
            .field("params", &self.params)
            .field("config", &self.config)
            .field("pins", &self.pins)
            .field("audit_reader_running", &self.reader.is_some())
            .finish_non_exhaustive()
    }
}

/// The maps moatd reads, taken from a fresh load or opened from their pins.
struct ReadMaps {
    denials: PerCpuHashMap<MapData, DenialKey, Counter>,
    process_events: PerCpuHashMap<MapData, ProcessKey, Counter>,
    map_full: PerCpuArray<MapData, Counter>,
    audit_drops: PerCpuArray<MapData, Counter>,
    ignored_exits: PerCpuArray<MapData, Counter>,
    pids_retired: HashMap<MapData, u64, PidsRetired>,
    ring: RingBuf<MapData>,
}

impl ReadMaps {
    fn take(ebpf: &mut Ebpf) -> Result<ReadMaps> {
        Ok(ReadMaps {
            denials: take_map(ebpf, DENIALS_MAP, PerCpuHashMap::try_from)?,
            process_events: take_map(ebpf, PROCESS_EVENTS_MAP, PerCpuHashMap::try_from)?,
            map_full: take_map(ebpf, MAP_FULL_MAP, PerCpuArray::try_from)?,
            audit_drops: take_map(ebpf, AUDIT_DROPS_MAP, PerCpuArray::try_from)?,
            ignored_exits: take_map(ebpf, IGNORED_EXITS_MAP, PerCpuArray::try_from)?,
            pids_retired: take_map(ebpf, PIDS_RETIRED_MAP, HashMap::try_from)?,
            ring: take_map(ebpf, AUDIT_EVENTS_MAP, RingBuf::try_from)?,
        })
    }

    fn open(layout: &Path) -> Result<ReadMaps> {
        Ok(ReadMaps {
            denials: open_map(
                layout,
                DENIALS_MAP,
                Map::PerCpuHashMap,
                PerCpuHashMap::try_from,
            )?,
            process_events: open_map(
                layout,
                PROCESS_EVENTS_MAP,
                Map::PerCpuHashMap,
                PerCpuHashMap::try_from,
            )?,
            map_full: open_map(
                layout,
                MAP_FULL_MAP,
                Map::PerCpuArray,
                PerCpuArray::try_from,
            )?,
            audit_drops: open_map(
                layout,
                AUDIT_DROPS_MAP,
                Map::PerCpuArray,
                PerCpuArray::try_from,
            )?,
            ignored_exits: open_map(
                layout,
                IGNORED_EXITS_MAP,
                Map::PerCpuArray,
                PerCpuArray::try_from,
            )?,
            pids_retired: open_map(layout, PIDS_RETIRED_MAP, Map::HashMap, HashMap::try_from)?,
            ring: open_map(layout, AUDIT_EVENTS_MAP, Map::RingBuf, RingBuf::try_from)?,
        })
    }
}

/// What a load or an adoption produced, before the [`Kernel`] is assembled.
struct Loaded {
    maps: ReadMaps,
    tracing: TracingMode,
    attached: Vec<&'static str>,
    program_ids: Vec<u32>,
    /// The pinned links, held open while moatd runs.
    links: Vec<FdLink>,
    ebpf: Option<Ebpf>,
}

impl Kernel {
    /// Loads the embedded object with offsets from `/sys/kernel/btf/vmlinux` and
    /// maps sized from `config` and `pid_max`, and attaches every program; with
    /// [`KernelConfig::keep_pinned`], adopts the pinned ones of the same layout
    /// instead (see [`super::pins`]).
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
        let record = record_pins(&config.record_pin_dir)?;

        if !config.keep_pinned {
            // Programs an earlier moatd left pinned would keep running beside
            // these: removed, unless a moatd is using them now.
            if let Ok(_lock) = PinLock::acquire(&config.record_pin_dir) {
                let (_, removed) = pins::sweep(&config.record_pin_dir, "")?;
                for name in &removed {
                    log::warn!(
                        "keep_pinned is off: detached and unpinned the eBPF programs and maps \
                         in {}",
                        config.record_pin_dir.join(name).display()
                    );
                }
            }
            let loaded = load_fresh(object, &config, &params, pid_max, &record, None)?;
            return Ok(Self::assemble(
                loaded,
                params,
                config,
                PinState::Unpinned,
                None,
            ));
        }
        let dir = config.record_pin_dir.clone();
        let lock = PinLock::acquire(&dir)?;
        let fingerprint = pins::fingerprint(object, &config, &format!("{params:?}"), pid_max);
        let (found, removed) = pins::sweep(&dir, &fingerprint)?;
        for name in &removed {
            log::warn!(
                "replaced the pinned eBPF programs and maps in {} (another layout than this \
                 moatd's agent-{fingerprint}: another build, map or ring sizes, or tracing \
                 settings): detached and unpinned them",
                dir.join(name).display()
            );
        }
        let mut replaced = !removed.is_empty();
        if found {
            let layout = pins::layout_dir(&dir, &fingerprint);
            match adopt(&layout, &config) {
                Ok(loaded) => {
                    log::info!(
                        "reusing the eBPF programs and maps pinned in {}: {} programs stay \
                         attached (not attached again), counters continue",
                        layout.display(),
                        loaded.attached.len()
                    );
                    return Ok(Self::assemble(
                        loaded,
                        params,
                        config,
                        PinState::Reused,
                        Some(lock),
                    ));
                }
                Err(err) => {
                    log::warn!(
                        "replacing the pins in {}: they cannot be adopted ({})",
                        layout.display(),
                        super::attach::error_chain(&err)
                    );
                    pins::remove_layout(&layout)?;
                    replaced = true;
                }
            }
        }
        let partial = pins::partial_dir(&dir, &fingerprint);
        std::fs::create_dir(&partial).map_err(|source| Error::PinDir {
            path: partial.clone(),
            source,
        })?;
        let loaded = match load_fresh(object, &config, &params, pid_max, &record, Some(&partial)) {
            Ok(loaded) => loaded,
            Err(err) => {
                // Nothing half-attached stays behind.
                let _ = pins::remove_layout(&partial);
                return Err(err);
            }
        };
        let layout = pins::publish(&dir, &fingerprint)?;
        // Held open while moatd runs (as an unpinned link would be), so that
        // its descriptors show what it has attached.
        let mut loaded = loaded;
        loaded.links = open_links(&layout)?
            .into_iter()
            .map(|(_, _, link)| link)
            .collect();
        log::info!(
            "loaded the eBPF programs and pinned them in {}: they stay attached and counting \
             when moatd stops (moatd --unload detaches them)",
            layout.display()
        );
        let state = if replaced {
            PinState::Replaced
        } else {
            PinState::Created
        };
        Ok(Self::assemble(loaded, params, config, state, Some(lock)))
    }

    fn assemble(
        loaded: Loaded,
        params: Params,
        config: KernelConfig,
        pins: PinState,
        lock: Option<PinLock>,
    ) -> Kernel {
        let maps = loaded.maps;
        Kernel {
            reader: None,
            denials: maps.denials,
            process_events: maps.process_events,
            map_full: maps.map_full,
            audit_drops: maps.audit_drops,
            ignored_exits: maps.ignored_exits,
            pids_retired: std::sync::Mutex::new(maps.pids_retired),
            ring: Some(maps.ring),
            params,
            config,
            tracing: loaded.tracing,
            attached: loaded.attached,
            program_ids: loaded.program_ids,
            _links: loaded.links,
            pins,
            _lock: lock,
            _ebpf: loaded.ebpf,
        }
    }

    /// Whether the programs were adopted, loaded and pinned, or not pinned.
    pub fn pin_state(&self) -> PinState {
        self.pins
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
        self.program_ids.clone()
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

/// Loads `object` and attaches its programs; with `pin_dir`, pins the maps
/// moatd reads and every link there.
fn load_fresh(
    object: &[u8],
    config: &KernelConfig,
    params: &Params,
    pid_max: u32,
    record: &[(&'static str, std::path::PathBuf)],
    pin_dir: Option<&Path>,
) -> Result<Loaded> {
    // Held until the maps and the record program are pinned: two loads at
    // once (two moatd, or tests in one process) would otherwise both find a
    // recording map's pin missing, and the second pin would fail with EEXIST.
    let _record_lock = lock_pin_dir(&config.record_pin_dir)?;
    let mut loader = EbpfLoader::new();
    for (name, path) in record {
        // An existing pin (a recording in progress across a restart of
        // moatd) is reused; a new one is created and pinned.
        loader.map_pin_path(name, path.as_path());
    }
    let read_pins: Vec<_> = pin_dir
        .map(|dir| {
            READ_MAPS
                .iter()
                .map(|name| (*name, dir.join(name)))
                .collect()
        })
        .unwrap_or_default();
    for (name, path) in &read_pins {
        loader.map_pin_path(name, path.as_path());
    }
    let mut ebpf = loader
        .override_global(PARAMS_GLOBAL, params, true)
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
    let maps = ReadMaps::take(&mut ebpf)?;
    let (tracing, attached) = attach_programs(&mut ebpf, config, pin_dir)?;
    // After the programs that use the maps are attached: a `moat` that finds
    // the pinned program also finds moatd's links.
    pin_record_program(&mut ebpf, &config.record_pin_dir)?;
    let program_ids = attached
        .iter()
        .filter_map(|name| ebpf.program(name)?.info().ok())
        .map(|info| info.id())
        .collect();
    Ok(Loaded {
        maps,
        tracing,
        attached,
        program_ids,
        links: Vec::new(),
        ebpf: Some(ebpf),
    })
}

/// Opens the maps and links pinned in `layout` by an earlier moatd with the
/// same fingerprint. Nothing is loaded or attached: the links pinned there
/// keep the programs running.
fn adopt(layout: &Path, config: &KernelConfig) -> Result<Loaded> {
    let maps = ReadMaps::open(layout)?;
    let links = open_links(layout)?;
    let attached: Vec<&'static str> = links.iter().map(|(name, _, _)| *name).collect();
    let program_ids = links.iter().map(|(_, id, _)| *id).collect();
    let tracing = adopted_mode(&attached, config).ok_or_else(|| Error::OpenPin {
        path: layout.to_path_buf(),
        source: format!("an incomplete program set: {attached:?}").into(),
    })?;
    Ok(Loaded {
        maps,
        tracing,
        attached,
        program_ids,
        links: links.into_iter().map(|(_, _, link)| link).collect(),
        ebpf: None,
    })
}

/// Opens the link pins in `layout`, in attach order: each program's name,
/// its id and the link.
fn open_links(layout: &Path) -> Result<Vec<(&'static str, u32, FdLink)>> {
    let mut links = Vec::new();
    for name in super::attach::all_programs() {
        let path = layout.join(format!("{}{name}", pins::LINK_PREFIX));
        if !path.exists() {
            continue;
        }
        let open = |source: Box<dyn std::error::Error + Send + Sync>| Error::OpenPin {
            path: path.clone(),
            source,
        };
        let link = FdLink::from(PinnedLink::from_pin(&path).map_err(|e| open(Box::new(e)))?);
        let info = link.info().map_err(|e| open(Box::new(e)))?;
        links.push((name, info.program_id(), link));
    }
    Ok(links)
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

fn open_map<M>(
    layout: &Path,
    name: &'static str,
    wrap: impl FnOnce(MapData) -> Map,
    convert: impl FnOnce(Map) -> std::result::Result<M, aya::maps::MapError>,
) -> Result<M> {
    let path = layout.join(name);
    let data = MapData::from_pin(&path).map_err(|source| Error::OpenPin {
        path,
        source: Box::new(source),
    })?;
    convert(wrap(data)).map_err(|source| Error::MapType { name, source })
}

/// An exclusive `flock` of the pin directory (the one `moat` takes to change
/// recordings), released when dropped.
fn lock_pin_dir(dir: &Path) -> Result<nix::fcntl::Flock<std::fs::File>> {
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
