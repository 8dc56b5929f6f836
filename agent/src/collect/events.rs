//! Audit events the collector produces: from the kernel's records (attributed
//! here, while the task may still be alive to read `/proc` of), and from what it
//! derives itself (`pids_limit_reached`, `fork_burst`). The audit writer only
//! writes them.

use std::fs;

use moat_api::{
    audit::{
        AuditAction, AuditEvent, ErrorFields, ForkBurstFields, PidsFields, ProcessFields,
        SeccompFields, ThreadFields,
    },
    time::rfc3339_nanos,
};
use nix::time::{clock_gettime, ClockId};

use super::{attribution::Attribution, names, pids::PidsCgroup};
use crate::kernel::{AuditKind, AuditRecord, DenialAction};

/// A `pids_limit_reached` event for a pids cgroup whose hit count grew by
/// `new_hits`; `workload` is the capped label.
pub fn pids_limit_reached(
    host: &str,
    workload: &str,
    cgroup: &PidsCgroup,
    new_hits: u64,
) -> AuditEvent {
    let mut event = AuditEvent::new(
        AuditAction::PidsLimitReached,
        rfc3339_nanos(realtime_ns()),
        host,
        workload,
        Some(cgroup.path.clone()),
    );
    event.pids = Some(PidsFields {
        current: cgroup.current,
        limit: cgroup.limit,
        limit_hits: cgroup.limit_hits,
        new_hits,
    });
    event
}

/// A `fork_burst` event.
pub fn fork_burst(
    host: &str,
    workload: &str,
    path: Option<String>,
    rate: u64,
    threshold: u64,
) -> AuditEvent {
    let mut event = AuditEvent::new(
        AuditAction::ForkBurst,
        rfc3339_nanos(realtime_ns()),
        host,
        workload,
        path,
    );
    event.fork_burst = Some(ForkBurstFields { rate, threshold });
    event
}

/// The event for a kernel record, attributed to `attribution`.
/// `realtime_minus_boottime` converts the record's boot time to wall-clock time.
pub fn from_record(
    record: &AuditRecord,
    host: &str,
    attribution: &Attribution,
    realtime_minus_boottime: i128,
) -> AuditEvent {
    let action = match record.kind {
        AuditKind::SeccompDenied { .. } => AuditAction::SeccompDenied,
        AuditKind::ForkFailed { .. } => AuditAction::ForkFailed,
        AuditKind::UsernsCreated => AuditAction::UsernsCreated,
    };
    let timestamp = rfc3339_nanos(i128::from(record.boot_ns) + realtime_minus_boottime);
    let mut event = AuditEvent::new(
        action,
        timestamp,
        host,
        &attribution.workload,
        attribution.cgroup_path.as_deref().map(str::to_owned),
    );
    event.process = Some(ProcessFields {
        pid: record.pid,
        thread: ThreadFields { id: record.tid },
        name: record.comm.clone(),
        executable: fs::read_link(format!("/proc/{}/exe", record.pid))
            .ok()
            .map(|p| p.to_string_lossy().into_owned()),
    });
    match record.kind {
        AuditKind::SeccompDenied {
            arch,
            syscall_nr,
            action,
            errno,
        } => {
            event.seccomp = Some(SeccompFields {
                syscall: names::syscall_name(arch, syscall_nr),
                syscall_nr,
                arch: names::arch_name(arch, syscall_nr),
                action: action.as_str().to_owned(),
                errno: (action == DenialAction::Errno).then(|| names::errno_name(errno)),
            });
        }
        AuditKind::ForkFailed { errno } => {
            event.error = Some(ErrorFields {
                code: names::errno_name(errno),
            });
        }
        AuditKind::UsernsCreated => {}
    }
    event
}

/// Nanoseconds since the Unix epoch, now.
pub fn realtime_ns() -> i128 {
    clock_ns(ClockId::CLOCK_REALTIME)
}

/// Nanoseconds since boot, suspend included (`CLOCK_BOOTTIME`, the clock of
/// `bpf_ktime_get_boot_ns()`).
pub fn boottime_ns() -> i128 {
    clock_ns(ClockId::CLOCK_BOOTTIME)
}

/// `CLOCK_REALTIME - CLOCK_BOOTTIME`, in nanoseconds: add it to a
/// `bpf_ktime_get_boot_ns()` value to get wall-clock time.
pub fn realtime_minus_boottime() -> i128 {
    let boot_before = boottime_ns();
    let real = realtime_ns();
    let boot_after = boottime_ns();
    real - (boot_before + boot_after) / 2
}

fn clock_ns(clock: ClockId) -> i128 {
    // Both clocks always exist on Linux; a failure would read as the epoch.
    clock_gettime(clock).map_or(0, |ts| {
        i128::from(ts.tv_sec()) * 1_000_000_000 + i128::from(ts.tv_nsec())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn boot_offset_is_sane() {
        let offset = realtime_minus_boottime();
        let now = realtime_ns();
        // Wall clock minus uptime: some time after 2020 on any real machine.
        assert!(offset > 1_577_836_800 * 1_000_000_000_i128 - now.abs() && offset < now);
    }

    #[test]
    fn serialises_nested_fields() {
        let cgroup = PidsCgroup {
            id: 1,
            workload: "w".into(),
            path: "/moat/w".into(),
            current: 3,
            limit: Some(4),
            limit_hits: 2,
        };
        let event = pids_limit_reached("node", "w", &cgroup, 2);
        let json: serde_json::Value = serde_json::to_value(&event).unwrap();
        assert_eq!(json["event"]["action"], "pids_limit_reached");
        assert_eq!(json["workload"]["name"], "w");
        assert_eq!(json["cgroup"]["path"], "/moat/w");
        assert_eq!(json["pids"]["limit"], 4);
        assert!(json.get("process").is_none());
        assert!(json.get("action").is_none());
        assert!(json["@timestamp"].as_str().unwrap().ends_with('Z'));
    }
}
