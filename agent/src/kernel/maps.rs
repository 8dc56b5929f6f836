//! The map reader: sums the programs' per-CPU counter maps into a
//! [`KernelSnapshot`]. Only the collector calls it (see `crate::collect`).

use aya::maps::{MapData, PerCpuArray};
use moat_common::{
    action, audit_drop, ignored_exit, map_full, process_kind, Counter, PidsRetired,
    AUDIT_DROPS_MAP, DENIALS_MAP, IGNORED_EXITS_MAP, MAP_FULL_MAP, PIDS_RETIRED_MAP,
    PROCESS_EVENTS_MAP,
};

use super::{
    error::{Error, Result},
    loader::Kernel,
    records::{
        DenialAction, DenialCount, KernelSnapshot, KernelSource, ProcessEventCount,
        ProcessEventKind, RetiredPids,
    },
};

impl KernelSource for Kernel {
    fn tracing_mode(&self) -> Option<crate::kernel::TracingMode> {
        Some(self.tracing_mode().clone())
    }

    fn pin_state(&self) -> Option<crate::kernel::PinState> {
        Some(Kernel::pin_state(self))
    }

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

    fn retired_pids(&self) -> Result<Vec<RetiredPids>> {
        let mut map = self
            .pids_retired
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let keys: Vec<u64> =
            map.keys()
                .collect::<std::result::Result<_, _>>()
                .map_err(|source| Error::ReadHashMap {
                    name: PIDS_RETIRED_MAP,
                    source,
                })?;
        let mut retired = Vec::with_capacity(keys.len());
        for key in keys {
            // Each key is written once (a cgroup is removed once), so what is
            // read and then deleted is never lost.
            let Ok(value) = map.get(&key, 0) else {
                continue;
            };
            let _ = map.remove(&key);
            retired.push(decode_retired(key, &value));
        }
        Ok(retired)
    }
}

fn decode_retired(key: u64, value: &PidsRetired) -> RetiredPids {
    // Without a NUL the path was cut: it is resolved by the key instead.
    let path = value
        .path
        .iter()
        .position(|&b| b == 0)
        .filter(|&end| end > 0)
        .and_then(|end| std::str::from_utf8(&value.path[..end]).ok())
        .map(str::to_owned);
    RetiredPids {
        cgroup_id: key,
        hits: value.hits,
        path,
    }
}

pub(super) fn denial_action(value: u32) -> Option<DenialAction> {
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
pub(super) fn clamp_errno(errno: u32) -> u16 {
    u16::try_from(errno).unwrap_or(u16::MAX)
}

pub(super) fn read_array(
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

/// Sums one slot's per-CPU values.
///
/// Wrapping, like the eBPF side's increments, so a wrapped CPU cannot panic the agent.
fn sum_cpus(per_cpu: impl IntoIterator<Item = Counter>) -> Counter {
    per_cpu.into_iter().fold(0, Counter::wrapping_add)
}

impl Kernel {
    /// Unpaired syscall exits deliberately not counted as denials, by reason.
    pub fn ignored_exits(&self) -> Result<Vec<(&'static str, u64)>> {
        read_array(&self.ignored_exits, IGNORED_EXITS_MAP, &ignored_exit::NAMES)
    }
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
}
