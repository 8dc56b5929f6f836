//! The parameters handed to the programs at load time: struct offsets from the
//! kernel's BTF, the audit rate limit, `pid_max`, and the cgroup facts that let
//! tasks only in v1 cgroups be keyed by their pids cgroup.

use std::{fs, os::unix::fs::MetadataExt as _, path::Path};

use moat_common::Params;

use super::{
    btf::{Btf, BtfError},
    cgroups::CgroupLayout,
    config::KernelConfig,
    error::{Error, Result},
};

/// Where the kernel publishes `pid_max`.
pub const PID_MAX_PATH: &str = "/proc/sys/kernel/pid_max";

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
    let signal_live = if exit_has_group_dead == 1 {
        0
    } else {
        btf.member_offset("signal_struct.live")?
    };
    let (audit_interval_ns, audit_tolerance_ns) = config.rate_params();
    let mut params = Params {
        task_pid: btf.member_offset("task_struct.pid")?,
        task_tgid: btf.member_offset("task_struct.tgid")?,
        task_ptrace: btf.member_offset("task_struct.ptrace")?,
        task_seccomp_mode: btf.member_offset("task_struct.seccomp.mode")?,
        task_ti_status: btf.member_offset("task_struct.thread_info.status")?,
        task_pending_signal: btf.member_offset("task_struct.pending.signal")?,
        task_signal: btf.member_offset("task_struct.signal")?,
        signal_live,
        regs_orig_ax: btf.member_offset("pt_regs.orig_ax")?,
        regs_di: btf.member_offset("pt_regs.di")?,
        regs_bx: btf.member_offset("pt_regs.bx")?,
        regs_ax: btf.member_offset("pt_regs.ax")?,
        task_flags: btf.member_offset("task_struct.flags")?,
        signal_nr_threads: btf.member_offset("signal_struct.nr_threads")?,
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
    let pids_on_v1 = cgroups.is_some_and(|c| c.v1_pids_root_id.is_some());
    match resolve_pids_retired(btf, pids_on_v1, v2_pids_local_events()) {
        Ok(retired) => {
            params.cgroup_pids_css = retired.cgroup_pids_css;
            params.pids_hits = retired.pids_hits;
            params.pids_on_v1 = u32::from(pids_on_v1);
            params.css_cgroup = retired.css_cgroup;
            params.cgroup_kn = retired.cgroup_kn;
            params.kn_id = retired.kn_id;
        }
        Err(err) => log::warn!(
            "the pids limit hits of a cgroup removed between two polls will be missed: {err}"
        ),
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
            ("pt_regs.ax", 8),
            ("task_struct.flags", 4),
        ],
    )?;
    Ok(params)
}

/// Checks that each member (`path`) is as many bytes as the programs read of it.
fn check_sizes(btf: &Btf, members: &[(&str, u32)]) -> Result<()> {
    for &(path, size) in members {
        let actual = btf.member_size(path)?;
        if actual != size {
            return Err(BtfError::Unusable {
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
    let pids = pids_subsys_index(btf, "css_set.subsys")?;
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

/// `pids_cgrp_id`, checked as an index of `array` (`css_set.subsys` or
/// `cgroup.subsys`, arrays of pointers indexed by subsystem id).
fn pids_subsys_index(btf: &Btf, array: &str) -> Result<u32> {
    let unusable = |reason: String| -> Error {
        BtfError::Unusable {
            path: array.to_owned(),
            reason,
        }
        .into()
    };
    let pids = btf.enum_value("pids_cgrp_id")?;
    let (elem, count) = btf.member_array(array)?;
    if elem != 8 {
        return Err(unusable(format!("elements are {elem} bytes, not pointers")));
    }
    u32::try_from(pids)
        .ok()
        .filter(|&p| p < count)
        .ok_or_else(|| {
            unusable(format!(
                "pids_cgrp_id {pids} is outside its {count} entries"
            ))
        })
}

/// What the `cgroup_rmdir` program reads of a removed cgroup.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct RetiredOffsets {
    /// `cgroup.subsys[pids_cgrp_id]`.
    cgroup_pids_css: u32,
    /// The counter `pids.events` shows as `max`, in `struct pids_cgroup`.
    pids_hits: u32,
    css_cgroup: u32,
    cgroup_kn: u32,
    kn_id: u32,
}

/// The offsets of a cgroup's pids state and of the counter its `pids.events`
/// file shows as `max`, which depends on the kernel:
///
/// - before Linux 6.12 (`pids_cgroup.events_limit`): forks refused in this
///   cgroup;
/// - since (`pids_cgroup.events[]` and `events_local[]`, indexed by `enum
///   pidcg_event`): on a v1 hierarchy, or v2 mounted with `pids_localevents`,
///   `events_local[PIDCG_FORKFAIL]` (forks refused in this cgroup); on v2,
///   `events[PIDCG_MAX]` (times this cgroup or a descendant was at its limit).
fn resolve_pids_retired(
    btf: &Btf,
    pids_on_v1: bool,
    v2_local_events: bool,
) -> Result<RetiredOffsets> {
    let pids = pids_subsys_index(btf, "cgroup.subsys")?;
    let unusable = |path: &str, reason: String| -> Error {
        BtfError::Unusable {
            path: path.to_owned(),
            reason,
        }
        .into()
    };
    let pids_hits = match btf.member_offset("pids_cgroup.events_limit") {
        Ok(offset) => {
            check_sizes(btf, &[("pids_cgroup.events_limit", 8)])?;
            offset
        }
        Err(_) => {
            let (array, index) = if pids_on_v1 || v2_local_events {
                (
                    "pids_cgroup.events_local",
                    btf.enum_value("PIDCG_FORKFAIL")?,
                )
            } else {
                ("pids_cgroup.events", btf.enum_value("PIDCG_MAX")?)
            };
            let (elem, count) = btf.member_array(array)?;
            let index = u32::try_from(index)
                .ok()
                .filter(|&i| i < count && elem == 8)
                .ok_or_else(|| {
                    unusable(
                        array,
                        format!("no 8-byte entry {index} in {count} of {elem}"),
                    )
                })?;
            btf.member_offset(array)? + 8 * index
        }
    };
    // `struct pids_cgroup` starts with its `cgroup_subsys_state`, so the
    // counter is at that offset from the state's address.
    if btf.member_offset("pids_cgroup.css")? != 0 {
        return Err(unusable(
            "pids_cgroup.css",
            "is not its first member".to_owned(),
        ));
    }
    check_sizes(
        btf,
        &[
            ("cgroup_subsys_state.cgroup", 8),
            ("cgroup.kn", 8),
            ("kernfs_node.id", 8),
        ],
    )?;
    Ok(RetiredOffsets {
        cgroup_pids_css: btf.member_offset("cgroup.subsys")? + 8 * pids,
        pids_hits,
        css_cgroup: btf.member_offset("cgroup_subsys_state.cgroup")?,
        cgroup_kn: btf.member_offset("cgroup.kn")?,
        kn_id: btf.member_offset("kernfs_node.id")?,
    })
}

/// Whether the v2 hierarchy is mounted with `pids_localevents` (its
/// `pids.events` then counts like v1's).
fn v2_pids_local_events() -> bool {
    fs::read_to_string("/proc/self/mountinfo").is_ok_and(|text| {
        text.lines().any(|line| {
            let mut halves = line.splitn(2, " - ");
            let _ = halves.next();
            let mut after = halves.next().unwrap_or_default().split_whitespace();
            after.next() == Some("cgroup2")
                && after
                    .nth(1)
                    .is_some_and(|opts| opts.split(',').any(|o| o == "pids_localevents"))
        })
    })
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
