//! The node-wide kernel side: loads moat's eBPF programs with offsets from the
//! kernel's BTF, attaches them, sums their maps into a [`KernelSnapshot`] and reads
//! audit records from their ring buffer.
//!
//! # What the programs count
//!
//! - **Seccomp denials** of every process on the node, per (cgroup, arch, syscall,
//!   action, errno). A refused syscall never reaches `sys_enter` but does reach
//!   `sys_exit`, so `sys_enter` marks each thread's slot in an array indexed by
//!   thread id (sized to `pid_max`) and `sys_exit` treats an exit from a thread
//!   known to be outside a syscall as a denial. Exclusions, so that nothing else is
//!   ever counted:
//!   - a new task's first return (fork/clone child): `sched_process_fork` marks the
//!     child's slot `NEW_TASK` before the child can run;
//!   - threads that were already inside a syscall when the programs attached: slots
//!     start `UNKNOWN`, and an exit seen in that state is ignored (only a thread seen
//!     entering or exiting since the load is classified);
//!   - a non-leader thread's `execve`, which returns under the leader's tid:
//!     `sched_process_exec` hands the slot over to the new tid;
//!   - an exit with `orig_ax == -1` (syscall skipped by a tracer);
//!   - every unpaired exit of a task without a seccomp filter (`seccomp.mode` 0):
//!     only seccomp is counted, so whatever else may skip a syscall can never be
//!     miscounted in an unconfined process;
//!   - every unpaired exit of a ptraced task (PTRACE_SYSEMU and a fatal signal at the
//!     entry stop also skip syscalls, returning -ENOSYS like an ERRNO);
//!   - return values that fit no seccomp action (counted as `unclassified`).
//!
//!   Each exclusion is counted by reason in [`Kernel::ignored_exits`].
//!
//!   Classification: `ret == nr` with SIGSYS pending on the thread is TRAP;
//!   `ret` in `[-4095, 0]` is ERRNO with `-ret`. KILL (thread or process) is counted
//!   on `sched_process_exit` of the killed thread (`seccomp.mode ==
//!   SECCOMP_MODE_DEAD`), with the number from its saved registers: `KILL_THREAD` in
//!   a multi-threaded process exits from the entry path and never reaches `sys_exit`,
//!   so counting every kill at exit counts each exactly once.
//!   The arch is `AUDIT_ARCH_I386` when the thread's `TS_COMPAT` is set (int 0x80,
//!   sysenter, 32-bit syscall), `AUDIT_ARCH_X86_64` otherwise; x32 numbers keep
//!   bit 30.
//! - **Process events** per (cgroup, kind, errno): forks (process when the child's
//!   pid equals its tgid, thread otherwise; attributed to the parent's cgroup),
//!   execs, process exits (the last thread: `group_dead`, or on kernels before 6.16
//!   `signal->live == 0`, counted once per thread group even when the last threads
//!   exit together), failed fork/vfork/clone/clone3 (paired `sys_exit` with an
//!   errno below 512: the kernel-internal restart codes never reach user space), and
//!   user namespaces created by clone/clone3 (parent's successful return) and unshare
//!   whose flags had `CLONE_NEWUSER` (clone3's from `struct clone_args` in user
//!   memory, read at `sys_enter`).
//! - **Cgroup keys**: the task's v2 cgroup id, except on hybrid hosts for a task in
//!   the v2 *root* cgroup (Docker's cgroupfs driver places containers only in v1
//!   cgroups): its v1 pids cgroup, as `V1_PIDS_ID_FLAG | <kernfs node id>`, unless
//!   that is the v1 root too (see [`CgroupRekey`]). Read with
//!   `bpf_probe_read_kernel` along `task->cgroups->subsys[pids_cgrp_id]->cgroup->kn->id`,
//!   offsets and `pids_cgrp_id` from BTF; only on the slow paths (unpaired exits,
//!   process events), never on the paired fast path.
//! - **Audit records** for denials, failed forks and user namespaces, through a ring
//!   buffer, with a per-cgroup rate limit in the kernel; every record not delivered
//!   is counted by reason.
//!
//! # What cannot be caught, and known inexactness
//!
//! - A denial in the first syscall a pre-existing thread makes after the programs
//!   attach (its slot is still `UNKNOWN`), and denials (other than kills) of ptraced
//!   tasks.
//! - Syscalls seccomp refuses in the legacy vsyscall emulation (no syscall
//!   tracepoints there).
//! - Threads whose id is at or above the `pid_max` read at load time (if it is raised
//!   later): counted as `map_full{map="thread_state"}`.
//! - `SECCOMP_RET_USER_NOTIF` answered with an error, or with 0, looks like ERRNO
//!   and is counted as such (a supervisor refusing is a denial); answered with a
//!   positive value it is `unclassified`. `SECCOMP_RET_TRACE` without a tracer
//!   (ENOSYS) is counted as ERRNO, which it is.
//! - The one residual false positive known: a task *with* a filter, under
//!   PTRACE_SYSEMU, whose tracer detaches at a syscall-entry stop: that skipped
//!   syscall returns -ENOSYS untraced and counts as an ERRNO ENOSYS denial.
//! - A kill is counted when the killed thread exits (after a core dump, if any).
//! - The clone3 flags are read from user memory at `sys_enter`, where a page
//!   fault cannot be served: if the `struct clone_args` page is not present (it
//!   normally is, the caller just wrote it), a user namespace made by that clone3
//!   is not counted.
//! - The audit rate limit's read-modify-write is not atomic: threads of one
//!   cgroup on several CPUs at the same instant can exceed the budget by one record
//!   per racing CPU. Drops are counted per reason, node-wide, not per cgroup.

use std::{
    fs,
    os::{
        fd::{AsFd as _, AsRawFd as _},
        unix::fs::MetadataExt as _,
    },
    path::{Path, PathBuf},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    thread::JoinHandle,
    time::Duration,
};

use aya::{
    maps::{MapData, PerCpuArray, PerCpuHashMap, RingBuf},
    programs::RawTracePoint,
    Ebpf, EbpfLoader,
};
use moat_common::{
    action, audit_drop, audit_kind, ignored_exit, map_full, process_kind, AuditEvent, Counter,
    DenialKey, Params, ProcessKey, AUDIT_DISABLED, AUDIT_DROPS_MAP, AUDIT_EVENTS_MAP,
    AUDIT_RATE_MAP, DENIALS_MAP, IGNORED_EXITS_MAP, KERNEL_PROGRAMS, MAP_FULL_MAP, PARAMS_GLOBAL,
    PROCESS_EVENTS_MAP, THREAD_STATE_MAP,
};
use tokio::sync::mpsc;

use crate::{
    attribution::CgroupLayout,
    btf::Btf,
    error::{Error, Result},
    rlimit,
    snapshot::{
        AuditKind, AuditRecord, DenialAction, DenialCount, KernelSnapshot, KernelSource,
        ProcessEventCount, ProcessEventKind,
    },
};

/// Where the kernel publishes `pid_max`.
pub const PID_MAX_PATH: &str = "/proc/sys/kernel/pid_max";

/// How often the audit reader thread checks whether it should stop, at most.
const READER_POLL: Duration = Duration::from_millis(100);

/// Settings of the kernel side, fixed at load time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KernelConfig {
    /// Audit records per second and per cgroup once the burst is spent; 0 disables
    /// audit records (every one is counted as `rate_limited`).
    pub audit_rate_per_sec: u32,
    /// Records a cgroup may emit at once before the rate applies (at least 1).
    pub audit_burst: u32,
    /// Size of the audit ring buffer in bytes: a power of two, a multiple of the
    /// page size.
    pub ring_buffer_bytes: u32,
    /// Distinct (cgroup, arch, syscall, action, errno) denial keys.
    pub denial_map_entries: u32,
    /// Distinct (cgroup, kind, errno) process-event keys.
    pub process_map_entries: u32,
    /// Cgroups whose rate-limit state is remembered (least recently used evicted).
    pub rate_map_entries: u32,
    /// Capacity of the channel [`Kernel::audit_records`] returns. When it is full
    /// the reader thread waits, the ring buffer fills, and further records are
    /// counted as `buffer_full`: nothing is lost silently.
    pub audit_channel_capacity: usize,
    /// Where the cgroup hierarchies are mounted (as in `[workloads] cgroup_root`):
    /// the v2 root's id and whether pids is on v1 come from there (see
    /// [`CgroupRekey`]).
    pub cgroup_root: PathBuf,
}

impl Default for KernelConfig {
    fn default() -> Self {
        KernelConfig {
            audit_rate_per_sec: 100,
            audit_burst: 200,
            ring_buffer_bytes: 1 << 20,
            denial_map_entries: 16_384,
            process_map_entries: 16_384,
            rate_map_entries: 4_096,
            audit_channel_capacity: 4_096,
            cgroup_root: PathBuf::from("/sys/fs/cgroup"),
        }
    }
}

/// The cgroup facts the programs need to key tasks that are only in v1 cgroups
/// (Docker's cgroupfs driver on hybrid hosts) by their v1 pids cgroup: a task whose
/// v2 cgroup is the v2 root and whose pids cgroup is not the v1 root is keyed by
/// [`moat_common::V1_PIDS_ID_FLAG`]` | <kernfs node id of its pids cgroup>` (the id
/// [`crate::attribution`] resolves in the pids hierarchy). Computed in user space.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CgroupRekey {
    /// The v2 root cgroup's id: the inode number of the v2 mount's root.
    pub v2_root_id: u64,
    /// The v1 pids hierarchy root's id (its mount root's inode number), when pids
    /// is on a v1 hierarchy; `None` (no re-keying) when it is on v2 or absent.
    pub v1_pids_root_id: Option<u64>,
}

impl CgroupRekey {
    /// From the mount table, preferring mounts under `cgroup_root`.
    pub fn detect(cgroup_root: &Path) -> Option<CgroupRekey> {
        let layout = CgroupLayout::detect(cgroup_root);
        let v2_root_id = fs::metadata(&layout.v2_mount).ok()?.ino();
        let v1_pids_root_id = layout
            .pids_mount
            .filter(|mount| *mount != layout.v2_mount)
            .and_then(|mount| fs::metadata(mount).ok())
            .map(|meta| meta.ino());
        Some(CgroupRekey {
            v2_root_id,
            v1_pids_root_id,
        })
    }
}

impl KernelConfig {
    /// Checks every value; the error names the field.
    pub fn validate(&self) -> Result<()> {
        let page = page_size();
        let ring = self.ring_buffer_bytes;
        if !ring.is_power_of_two()
            || u64::from(ring) < page
            || !u64::from(ring).is_multiple_of(page)
        {
            return Err(Error::InvalidConfig(format!(
                "ring_buffer_bytes = {ring}: must be a power of two and a multiple of the \
                 page size ({page})"
            )));
        }
        for (name, value) in [
            ("denial_map_entries", self.denial_map_entries),
            ("process_map_entries", self.process_map_entries),
            ("rate_map_entries", self.rate_map_entries),
        ] {
            if value == 0 {
                return Err(Error::InvalidConfig(format!(
                    "{name} = 0: must be at least 1"
                )));
            }
        }
        if self.audit_rate_per_sec > 1_000_000_000 {
            return Err(Error::InvalidConfig(format!(
                "audit_rate_per_sec = {}: at most 1000000000",
                self.audit_rate_per_sec
            )));
        }
        if self.audit_rate_per_sec > 0 && self.audit_burst == 0 {
            return Err(Error::InvalidConfig(
                "audit_burst = 0: must be at least 1 when audit records are enabled".to_owned(),
            ));
        }
        if self.audit_channel_capacity == 0 {
            return Err(Error::InvalidConfig(
                "audit_channel_capacity = 0: must be at least 1".to_owned(),
            ));
        }
        Ok(())
    }

    /// The rate limit as the programs apply it: (interval, tolerance) in ns.
    fn rate_params(&self) -> (u64, u64) {
        if self.audit_rate_per_sec == 0 {
            return (AUDIT_DISABLED, 0);
        }
        let interval = (1_000_000_000 / u64::from(self.audit_rate_per_sec)).max(1);
        let tolerance = interval.saturating_mul(u64::from(self.audit_burst.max(1) - 1));
        (interval, tolerance)
    }
}

/// Resolves the offsets the programs need from `btf` and combines them with the
/// rate limit, `pid_max` and the cgroup facts (`None`: no re-keying of tasks in the
/// v2 root cgroup).
pub fn resolve_params(
    btf: &Btf,
    config: &KernelConfig,
    pid_max: u32,
    cgroups: Option<CgroupRekey>,
) -> Result<Params> {
    let exit_params = btf.typedef_fn_params("btf_trace_sched_process_exit")?;
    // The prototype's first parameter is the tracepoint's `void *__data`.
    let exit_has_group_dead = u32::from(exit_params >= 3);
    let (signal, signal_live) = if exit_has_group_dead == 1 {
        (0, 0)
    } else {
        (
            btf.member_offset("task_struct.signal")?,
            btf.member_offset("signal_struct.live")?,
        )
    };
    let (audit_interval_ns, audit_tolerance_ns) = config.rate_params();
    let mut params = Params {
        task_pid: btf.member_offset("task_struct.pid")?,
        task_tgid: btf.member_offset("task_struct.tgid")?,
        task_ptrace: btf.member_offset("task_struct.ptrace")?,
        task_seccomp_mode: btf.member_offset("task_struct.seccomp.mode")?,
        task_ti_status: btf.member_offset("task_struct.thread_info.status")?,
        task_pending_signal: btf.member_offset("task_struct.pending.signal")?,
        task_signal: signal,
        signal_live,
        regs_orig_ax: btf.member_offset("pt_regs.orig_ax")?,
        regs_di: btf.member_offset("pt_regs.di")?,
        regs_bx: btf.member_offset("pt_regs.bx")?,
        exit_has_group_dead,
        audit_interval_ns,
        audit_tolerance_ns,
        pid_max,
        _pad: 0,
        ..Params::ZERO
    };
    if let Some(CgroupRekey {
        v2_root_id,
        v1_pids_root_id: Some(v1_pids_root_id),
    }) = cgroups
    {
        match resolve_pids_chain(btf) {
            Ok([task_cgroups, css_set_pids, css_cgroup, cgroup_kn, kn_id]) => {
                params.v2_root_cgroup_id = v2_root_id;
                params.v1_pids_root_id = v1_pids_root_id;
                params.v1_pids_rekey = 1;
                params.task_cgroups = task_cgroups;
                params.css_set_pids = css_set_pids;
                params.css_cgroup = css_cgroup;
                params.cgroup_kn = cgroup_kn;
                params.kn_id = kn_id;
            }
            Err(err) => log::warn!(
                "tasks only in v1 cgroups will be counted under their v2 (root) cgroup: {err}"
            ),
        }
    }
    // The programs read these with fixed widths.
    check_sizes(
        btf,
        &[
            ("task_struct.pid", 4),
            ("task_struct.tgid", 4),
            ("task_struct.ptrace", 4),
            ("task_struct.seccomp.mode", 4),
            ("task_struct.thread_info.status", 4),
            ("pt_regs.orig_ax", 8),
            ("pt_regs.di", 8),
            ("pt_regs.bx", 8),
        ],
    )?;
    Ok(params)
}

/// Checks that each member (`path`) is as many bytes as the programs read of it.
fn check_sizes(btf: &Btf, members: &[(&str, u32)]) -> Result<()> {
    for &(path, size) in members {
        let actual = btf.member_size(path)?;
        if actual != size {
            return Err(crate::btf::BtfError::Unusable {
                path: path.to_owned(),
                reason: format!("is {actual} bytes, the programs read {size}"),
            }
            .into());
        }
    }
    Ok(())
}

/// The offsets from a task to its pids cgroup's kernfs node id:
/// `task_struct.cgroups` (a `css_set`), `css_set.subsys[pids_cgrp_id]` (a
/// `cgroup_subsys_state`), `cgroup_subsys_state.cgroup`, `cgroup.kn` and
/// `kernfs_node.id`, every one of them a pointer but the last (a u64).
fn resolve_pids_chain(btf: &Btf) -> Result<[u32; 5]> {
    let unusable = |path: &str, reason: String| -> Error {
        crate::btf::BtfError::Unusable {
            path: path.to_owned(),
            reason,
        }
        .into()
    };
    let pids = btf.enum_value("pids_cgrp_id")?;
    let (elem, count) = btf.member_array("css_set.subsys")?;
    if elem != 8 {
        return Err(unusable(
            "css_set.subsys",
            format!("elements are {elem} bytes, not pointers"),
        ));
    }
    let pids = u32::try_from(pids)
        .ok()
        .filter(|&p| p < count)
        .ok_or_else(|| {
            unusable(
                "css_set.subsys",
                format!("pids_cgrp_id {pids} is outside its {count} entries"),
            )
        })?;
    check_sizes(
        btf,
        &[
            ("task_struct.cgroups", 8),
            ("cgroup_subsys_state.cgroup", 8),
            ("cgroup.kn", 8),
            ("kernfs_node.id", 8),
        ],
    )?;
    Ok([
        btf.member_offset("task_struct.cgroups")?,
        btf.member_offset("css_set.subsys")? + 8 * pids,
        btf.member_offset("cgroup_subsys_state.cgroup")?,
        btf.member_offset("cgroup.kn")?,
        btf.member_offset("kernfs_node.id")?,
    ])
}

/// Reads `/proc/sys/kernel/pid_max`.
pub fn read_pid_max() -> Result<u32> {
    let text = fs::read_to_string(PID_MAX_PATH).map_err(|source| Error::ReadFile {
        path: PID_MAX_PATH,
        source,
    })?;
    text.trim().parse::<u32>().map_err(|err| Error::ReadFile {
        path: PID_MAX_PATH,
        source: std::io::Error::new(std::io::ErrorKind::InvalidData, err),
    })
}

/// moat's node-wide programs, loaded and attached.
///
/// Dropping it stops the audit reader thread (if any), then detaches every program
/// and frees the maps.
pub struct Kernel {
    // Stopped (in Drop) before anything else is dropped.
    reader: Option<ReaderThread>,
    denials: PerCpuHashMap<MapData, DenialKey, Counter>,
    process_events: PerCpuHashMap<MapData, ProcessKey, Counter>,
    map_full: PerCpuArray<MapData, Counter>,
    audit_drops: PerCpuArray<MapData, Counter>,
    ignored_exits: PerCpuArray<MapData, Counter>,
    ring: Option<RingBuf<MapData>>,
    params: Params,
    config: KernelConfig,
    // Owns the programs and their links: dropped last, which detaches them.
    ebpf: Ebpf,
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
        rlimit::raise_memlock_rlimit();

        let mut ebpf = EbpfLoader::new()
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
        let ring = take_map(&mut ebpf, AUDIT_EVENTS_MAP, RingBuf::try_from)?;

        // In order: the scheduler programs (which mark new tasks and follow exec)
        // before sys_enter, and sys_enter before sys_exit, so that sys_exit never
        // meets a slot the others could not have written yet.
        for (name, tracepoint) in KERNEL_PROGRAMS {
            attach(&mut ebpf, name, tracepoint)?;
        }
        Ok(Kernel {
            reader: None,
            denials,
            process_events,
            map_full,
            audit_drops,
            ignored_exits,
            ring: Some(ring),
            params,
            config,
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

    /// Audit records, delivered by a reader thread (`moat-audit-ring`) that waits on
    /// the ring buffer with `poll(2)` and feeds a bounded tokio channel.
    ///
    /// A thread rather than a task so that it works whatever runtime (or none) the
    /// caller uses; it stops when the receiver is dropped or the [`Kernel`] is.
    /// Can be called once per load (as can [`Kernel::audit_reader`]).
    pub fn audit_records(&mut self) -> Result<mpsc::Receiver<AuditRecord>> {
        let mut reader = self.audit_reader()?;
        let (tx, rx) = mpsc::channel(self.config.audit_channel_capacity);
        let stop = Arc::new(AtomicBool::new(false));
        let stop_thread = stop.clone();
        let handle = std::thread::Builder::new()
            .name("moat-audit-ring".to_owned())
            .spawn(move || {
                while !stop_thread.load(Ordering::Relaxed) {
                    while let Some(record) = reader.try_next() {
                        if tx.blocking_send(record).is_err() {
                            return;
                        }
                    }
                    if tx.is_closed() {
                        return;
                    }
                    if let Err(err) = reader.wait(READER_POLL) {
                        log::warn!("waiting on the audit ring buffer failed: {err}");
                        std::thread::sleep(READER_POLL);
                    }
                }
            })
            .map_err(Error::SpawnReader)?;
        self.reader = Some(ReaderThread { stop, handle });
        Ok(rx)
    }

    /// The ring buffer itself, for a caller that reads it directly (tests that need
    /// to know every submitted record has been read). Can be called once per load.
    pub fn audit_reader(&mut self) -> Result<AuditReader> {
        let ring = self.ring.take().ok_or(Error::AuditReaderTaken)?;
        Ok(AuditReader { ring, malformed: 0 })
    }

    /// The kernel's ids of the attached programs, in attach order (as `bpftool prog`
    /// shows them).
    pub fn program_ids(&self) -> Vec<u32> {
        KERNEL_PROGRAMS
            .iter()
            .filter_map(|(name, _)| self.ebpf.program(name)?.info().ok())
            .map(|info| info.id())
            .collect()
    }

    /// Unpaired syscall exits deliberately not counted as denials, by reason.
    pub fn ignored_exits(&self) -> Result<Vec<(&'static str, u64)>> {
        read_array(&self.ignored_exits, IGNORED_EXITS_MAP, &ignored_exit::NAMES)
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

impl KernelSource for Kernel {
    fn snapshot(&self) -> Result<KernelSnapshot> {
        let mut denials = Vec::new();
        for item in self.denials.iter() {
            let (key, values) = item.map_err(|source| Error::ReadHashMap {
                name: DENIALS_MAP,
                source,
            })?;
            let Some(action) = denial_action(key.action) else {
                continue;
            };
            denials.push(DenialCount {
                cgroup_id: key.cgroup_id,
                arch: key.arch,
                syscall_nr: key.syscall_nr,
                action,
                errno: clamp_errno(key.errno),
                count: sum_cpus(values.iter().copied()),
            });
        }
        let mut process_events = Vec::new();
        for item in self.process_events.iter() {
            let (key, values) = item.map_err(|source| Error::ReadHashMap {
                name: PROCESS_EVENTS_MAP,
                source,
            })?;
            let Some(kind) = process_event_kind(key.kind) else {
                continue;
            };
            process_events.push(ProcessEventCount {
                cgroup_id: key.cgroup_id,
                kind,
                errno: clamp_errno(key.errno),
                count: sum_cpus(values.iter().copied()),
            });
        }
        Ok(KernelSnapshot {
            denials,
            process_events,
            map_full: read_array(&self.map_full, MAP_FULL_MAP, &map_full::NAMES)?,
            audit_dropped: read_array(&self.audit_drops, AUDIT_DROPS_MAP, &audit_drop::NAMES)?,
        })
    }
}

struct ReaderThread {
    stop: Arc<AtomicBool>,
    handle: JoinHandle<()>,
}

/// Direct access to the audit ring buffer.
pub struct AuditReader {
    ring: RingBuf<MapData>,
    malformed: u64,
}

impl std::fmt::Debug for AuditReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditReader")
            .field("malformed", &self.malformed)
            .finish_non_exhaustive()
    }
}

impl AuditReader {
    /// The next record, or `None` when the ring buffer is empty right now.
    pub fn try_next(&mut self) -> Option<AuditRecord> {
        loop {
            let item = self.ring.next()?;
            match decode_record(&item) {
                Some(record) => return Some(record),
                None => {
                    // Only a mismatched build of the two halves could cause this.
                    self.malformed += 1;
                    log::warn!("skipping a malformed audit record of {} bytes", item.len());
                }
            }
        }
    }

    /// Waits until the ring buffer has data or `timeout` passes; returns whether it
    /// has data.
    pub fn wait(&self, timeout: Duration) -> std::io::Result<bool> {
        let mut fds = [libc::pollfd {
            fd: self.ring.as_fd().as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        }];
        let millis = libc::c_int::try_from(timeout.as_millis()).unwrap_or(libc::c_int::MAX);
        // SAFETY: one valid pollfd, for the length given.
        let ret = unsafe { libc::poll(fds.as_mut_ptr(), 1, millis) };
        match ret {
            -1 => {
                let err = std::io::Error::last_os_error();
                if err.kind() == std::io::ErrorKind::Interrupted {
                    Ok(false)
                } else {
                    Err(err)
                }
            }
            0 => Ok(false),
            _ => Ok(true),
        }
    }

    /// Records that could not be decoded (a build mismatch), since creation.
    pub fn malformed(&self) -> u64 {
        self.malformed
    }
}

/// Decodes one ring-buffer record.
pub fn decode_record(bytes: &[u8]) -> Option<AuditRecord> {
    if bytes.len() < std::mem::size_of::<AuditEvent>() {
        return None;
    }
    // SAFETY: at least size_of::<AuditEvent>() bytes; AuditEvent is plain data for
    // which every bit pattern is valid; read_unaligned needs no alignment.
    let event: AuditEvent = unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast()) };
    let kind = match event.kind {
        audit_kind::SECCOMP_DENIED => AuditKind::SeccompDenied {
            arch: event.arch,
            syscall_nr: event.syscall_nr,
            action: denial_action(event.action)?,
            errno: clamp_errno(event.errno),
        },
        audit_kind::FORK_FAILED => AuditKind::ForkFailed {
            errno: clamp_errno(event.errno),
        },
        audit_kind::USERNS_CREATED => AuditKind::UsernsCreated,
        _ => return None,
    };
    let comm_len = event
        .comm
        .iter()
        .position(|&b| b == 0)
        .unwrap_or(event.comm.len());
    Some(AuditRecord {
        boot_ns: event.boot_ns,
        pid: event.pid,
        tid: event.tid,
        cgroup_id: event.cgroup_id,
        comm: String::from_utf8_lossy(&event.comm[..comm_len]).into_owned(),
        kind,
    })
}

fn denial_action(value: u32) -> Option<DenialAction> {
    match value {
        action::ERRNO => Some(DenialAction::Errno),
        action::TRAP => Some(DenialAction::Trap),
        action::KILL => Some(DenialAction::Kill),
        _ => None,
    }
}

fn process_event_kind(value: u32) -> Option<ProcessEventKind> {
    match value {
        process_kind::FORK_PROCESS => Some(ProcessEventKind::ForkProcess),
        process_kind::FORK_THREAD => Some(ProcessEventKind::ForkThread),
        process_kind::EXEC => Some(ProcessEventKind::Exec),
        process_kind::EXIT => Some(ProcessEventKind::Exit),
        process_kind::FORK_FAILED => Some(ProcessEventKind::ForkFailed),
        process_kind::USERNS_CREATED => Some(ProcessEventKind::UsernsCreated),
        _ => None,
    }
}

/// errnos are at most 4095 (`MAX_ERRNO`), well within u16.
fn clamp_errno(errno: u32) -> u16 {
    u16::try_from(errno).unwrap_or(u16::MAX)
}

fn read_array(
    map: &PerCpuArray<MapData, Counter>,
    name: &'static str,
    names: &[&'static str],
) -> Result<Vec<(&'static str, u64)>> {
    names
        .iter()
        .zip(0u32..)
        .map(|(&label, index)| {
            let values = map.get(&index, 0).map_err(|source| Error::ReadMap {
                name,
                index,
                source,
            })?;
            Ok((label, sum_cpus(values.iter().copied())))
        })
        .collect()
}

fn take_map<M>(
    ebpf: &mut Ebpf,
    name: &'static str,
    convert: impl FnOnce(aya::maps::Map) -> std::result::Result<M, aya::maps::MapError>,
) -> Result<M> {
    let map = ebpf.take_map(name).ok_or(Error::MissingMap { name })?;
    convert(map).map_err(|source| Error::MapType { name, source })
}

fn attach(ebpf: &mut Ebpf, name: &'static str, tracepoint: &'static str) -> Result<()> {
    let program: &mut RawTracePoint = ebpf
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
    // The link is owned by the program, so it lives as long as the `Ebpf`.
    program.attach(tracepoint).map_err(|source| Error::Attach {
        name,
        tracepoint,
        source,
    })?;
    log::debug!("attached eBPF program {name} to raw tracepoint {tracepoint}");
    Ok(())
}

/// The eBPF object built from `ebpf/moat-ebpf` by `build.rs`.
///
/// Empty when the agent was built with `AYA_BUILD_SKIP`.
pub fn ebpf_object() -> &'static [u8] {
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/moat-ebpf"))
}

/// Sums one slot's per-CPU values.
///
/// Wrapping, like the eBPF side's increments, so a wrapped CPU cannot panic the agent.
fn sum_cpus(per_cpu: impl IntoIterator<Item = Counter>) -> Counter {
    per_cpu.into_iter().fold(0, Counter::wrapping_add)
}

fn page_size() -> u64 {
    // SAFETY: sysconf with a valid name.
    let size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    u64::try_from(size).unwrap_or(4096)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_cpu_sums_wrap() {
        assert_eq!(sum_cpus([1, 2, 3]), 6);
        assert_eq!(sum_cpus([Counter::MAX, 2]), 1);
        assert_eq!(sum_cpus([]), 0);
    }

    #[test]
    fn default_config_is_valid() {
        KernelConfig::default().validate().unwrap();
        let (interval, tolerance) = KernelConfig::default().rate_params();
        assert_eq!(interval, 10_000_000);
        assert_eq!(tolerance, 199 * 10_000_000);
    }

    #[test]
    fn bad_config_is_refused_with_the_field() {
        let bad = |config: KernelConfig, field: &str| {
            let err = config.validate().unwrap_err().to_string();
            assert!(err.contains(field), "{err}");
        };
        bad(
            KernelConfig {
                ring_buffer_bytes: 3 * 4096,
                ..KernelConfig::default()
            },
            "ring_buffer_bytes",
        );
        bad(
            KernelConfig {
                ring_buffer_bytes: 1024,
                ..KernelConfig::default()
            },
            "ring_buffer_bytes",
        );
        bad(
            KernelConfig {
                denial_map_entries: 0,
                ..KernelConfig::default()
            },
            "denial_map_entries",
        );
        bad(
            KernelConfig {
                audit_burst: 0,
                ..KernelConfig::default()
            },
            "audit_burst",
        );
    }

    #[test]
    fn rate_zero_disables_audit() {
        let config = KernelConfig {
            audit_rate_per_sec: 0,
            audit_burst: 0,
            ..KernelConfig::default()
        };
        config.validate().unwrap();
        assert_eq!(config.rate_params(), (AUDIT_DISABLED, 0));
    }

    fn event_bytes(event: &AuditEvent) -> Vec<u8> {
        // SAFETY: AuditEvent is plain data without padding.
        unsafe {
            std::slice::from_raw_parts(
                (event as *const AuditEvent).cast::<u8>(),
                std::mem::size_of::<AuditEvent>(),
            )
        }
        .to_vec()
    }

    #[test]
    fn decodes_records() {
        let mut comm = [0u8; 16];
        comm[..4].copy_from_slice(b"sh-x");
        let event = AuditEvent {
            boot_ns: 5,
            cgroup_id: 77,
            pid: 10,
            tid: 11,
            kind: audit_kind::SECCOMP_DENIED,
            arch: moat_common::AUDIT_ARCH_X86_64,
            syscall_nr: 110,
            action: action::ERRNO,
            errno: 13,
            _pad: 0,
            comm,
        };
        let record = decode_record(&event_bytes(&event)).unwrap();
        assert_eq!(
            record,
            AuditRecord {
                boot_ns: 5,
                pid: 10,
                tid: 11,
                cgroup_id: 77,
                comm: "sh-x".to_owned(),
                kind: AuditKind::SeccompDenied {
                    arch: moat_common::AUDIT_ARCH_X86_64,
                    syscall_nr: 110,
                    action: DenialAction::Errno,
                    errno: 13,
                },
            }
        );
        let fork = AuditEvent {
            kind: audit_kind::FORK_FAILED,
            errno: 11,
            comm: [b'a'; 16],
            ..event
        };
        let record = decode_record(&event_bytes(&fork)).unwrap();
        assert_eq!(record.kind, AuditKind::ForkFailed { errno: 11 });
        assert_eq!(record.comm, "a".repeat(16));
        let bad = AuditEvent { kind: 99, ..event };
        assert!(decode_record(&event_bytes(&bad)).is_none());
        assert!(decode_record(&[0; 8]).is_none());
    }
}
