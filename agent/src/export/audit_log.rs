//! Audit events: one JSON object per line with nested, ECS-style fields, written to
//! the audit log (a file reopened on SIGHUP, or standard output).
//!
//! Events come from two places: records the kernel side delivers through its ring
//! buffer ([`AuditRecord`]: `seccomp_denied`, `fork_failed`, `userns_created`), and
//! events user space derives itself (`pids_limit_reached` from `pids.events`,
//! `fork_burst` from the fork counters). [`run`] writes both, counts what it wrote
//! by action ([`AuditStats`], served as `moat_audit_events_total`) and what it could
//! not write (`moat_audit_events_dropped_total{reason="write_failed"}`).
//!
//! A line looks like (wrapped here):
//!
//! ```json
//! {"@timestamp":"2026-05-20T10:11:12.123456789Z",
//!  "event":{"kind":"event","category":["process","intrusion_detection"],"type":["denied"],
//!           "action":"seccomp_denied","outcome":"failure"},
//!  "host":{"name":"node1"},
//!  "process":{"pid":42,"thread":{"id":43},"name":"curl","executable":"/usr/bin/curl"},
//!  "workload":{"name":"build"},"cgroup":{"path":"/moat/build"},
//!  "seccomp":{"syscall":"mount","syscall_nr":165,"arch":"x86_64","action":"errno","errno":"EPERM"}}
//! ```

use std::{
    fs::{self, OpenOptions},
    io::{self, BufWriter, Write},
    os::unix::fs::OpenOptionsExt as _,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Mutex,
    },
};

use serde::Serialize;
use tokio::sync::{mpsc, watch, Notify};

use crate::{
    collect::{attribution::Attributor, names, pids::PidsCgroup},
    config::AuditTarget,
    kernel::{AuditKind, AuditRecord, DenialAction},
};

/// The `event.action` values, which are also the `action` label values of
/// `moat_audit_events_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AuditAction {
    /// A syscall refused by seccomp.
    SeccompDenied,
    /// A fork-family syscall failed.
    ForkFailed,
    /// A workload's pids limit refused a fork.
    PidsLimitReached,
    /// A workload started forking faster than the threshold.
    ForkBurst,
    /// A user namespace was created.
    UsernsCreated,
}

impl AuditAction {
    /// Every action, in label order.
    pub const ALL: [AuditAction; 5] = [
        AuditAction::SeccompDenied,
        AuditAction::ForkFailed,
        AuditAction::PidsLimitReached,
        AuditAction::ForkBurst,
        AuditAction::UsernsCreated,
    ];

    /// The `event.action` value.
    pub fn as_str(self) -> &'static str {
        match self {
            AuditAction::SeccompDenied => "seccomp_denied",
            AuditAction::ForkFailed => "fork_failed",
            AuditAction::PidsLimitReached => "pids_limit_reached",
            AuditAction::ForkBurst => "fork_burst",
            AuditAction::UsernsCreated => "userns_created",
        }
    }

    fn index(self) -> usize {
        self as usize
    }

    /// `event.category` and `event.type`.
    fn classification(self) -> (&'static [&'static str], &'static [&'static str]) {
        match self {
            AuditAction::SeccompDenied => (&["process", "intrusion_detection"], &["denied"]),
            AuditAction::ForkFailed => (&["process"], &["start"]),
            AuditAction::PidsLimitReached => (&["process"], &["denied"]),
            AuditAction::ForkBurst => (&["process"], &["info"]),
            AuditAction::UsernsCreated => (&["process"], &["change"]),
        }
    }

    fn outcome(self) -> Option<&'static str> {
        match self {
            AuditAction::SeccompDenied
            | AuditAction::ForkFailed
            | AuditAction::PidsLimitReached => Some("failure"),
            AuditAction::UsernsCreated => Some("success"),
            AuditAction::ForkBurst => None,
        }
    }
}

/// Counts of written and unwritable events, shared with the metrics.
#[derive(Debug, Default)]
pub struct AuditStats {
    written: [AtomicU64; 5],
    write_failed: AtomicU64,
}

impl AuditStats {
    /// Events of `action` written to the log.
    pub fn written(&self, action: AuditAction) -> u64 {
        self.written[action.index()].load(Ordering::Relaxed)
    }

    /// Events that could not be written (the log could not be opened or written).
    pub fn write_failed(&self) -> u64 {
        self.write_failed.load(Ordering::Relaxed)
    }
}

/// One audit event.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AuditEvent {
    /// RFC 3339 with nanoseconds, UTC.
    #[serde(rename = "@timestamp")]
    pub timestamp: String,
    /// `event.*`.
    pub event: EventFields,
    /// `host.*`.
    pub host: HostFields,
    /// `process.*`, for events of one task.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub process: Option<ProcessFields>,
    /// `workload.*`.
    pub workload: WorkloadFields,
    /// `cgroup.*`.
    pub cgroup: CgroupFields,
    /// `seccomp.*`, for `seccomp_denied`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seccomp: Option<SeccompFields>,
    /// `error.*`: the errno of `fork_failed`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorFields>,
    /// `pids.*`, for `pids_limit_reached`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pids: Option<PidsFields>,
    /// `fork_burst.*`, for `fork_burst`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fork_burst: Option<ForkBurstFields>,
    /// Which action, for counting; `event.action` carries it in the JSON.
    #[serde(skip)]
    pub action: Option<AuditAction>,
}

/// `event.*`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EventFields {
    /// Always `event`.
    pub kind: &'static str,
    /// ECS categories.
    pub category: &'static [&'static str],
    /// ECS types.
    #[serde(rename = "type")]
    pub kind_type: &'static [&'static str],
    /// One of the [`AuditAction`] values.
    pub action: &'static str,
    /// `failure` for refusals, `success` for a namespace created.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub outcome: Option<&'static str>,
}

/// `host.*`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HostFields {
    /// The node's host name.
    pub name: String,
}

/// `process.*`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ProcessFields {
    /// Process id (tgid), in the initial pid namespace.
    pub pid: u32,
    /// `process.thread.*`.
    pub thread: ThreadFields,
    /// The task's `comm`.
    pub name: String,
    /// `/proc/<pid>/exe` when it could still be read.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub executable: Option<String>,
}

/// `process.thread.*`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ThreadFields {
    /// Thread id.
    pub id: u32,
}

/// `workload.*`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct WorkloadFields {
    /// The workload label (as in the metrics).
    pub name: String,
}

/// `cgroup.*`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CgroupFields {
    /// Path relative to the hierarchy's root, `null` when it could not be resolved.
    pub path: Option<String>,
}

/// `seccomp.*`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SeccompFields {
    /// Syscall name for the arch, or the number as text.
    pub syscall: String,
    /// Syscall number (x32 numbers keep bit 30).
    pub syscall_nr: i32,
    /// Architecture name (`x86_64`, `x86`, `x32`, ...).
    pub arch: String,
    /// `errno`, `trap` or `kill`.
    pub action: &'static str,
    /// `EPERM` etc. for `errno`, `null` otherwise.
    pub errno: Option<String>,
}

/// `error.*`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ErrorFields {
    /// The errno name, e.g. `EAGAIN`.
    pub code: String,
}

/// `pids.*`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PidsFields {
    /// `pids.current` when read.
    pub current: u64,
    /// `pids.max`, `null` for `max`.
    pub limit: Option<u64>,
    /// The `max` count of `pids.events`, in total.
    pub limit_hits: u64,
    /// Hits since the previous reading.
    pub new_hits: u64,
}

/// `fork_burst.*`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ForkBurstFields {
    /// Forks per second measured.
    pub rate: u64,
    /// The configured threshold.
    pub threshold: u64,
}

impl AuditEvent {
    fn base(
        action: AuditAction,
        timestamp: String,
        host: &str,
        workload: &str,
        path: Option<String>,
    ) -> Self {
        let (category, kind_type) = action.classification();
        AuditEvent {
            timestamp,
            event: EventFields {
                kind: "event",
                category,
                kind_type,
                action: action.as_str(),
                outcome: action.outcome(),
            },
            host: HostFields {
                name: host.to_owned(),
            },
            process: None,
            workload: WorkloadFields {
                name: workload.to_owned(),
            },
            cgroup: CgroupFields { path },
            seccomp: None,
            error: None,
            pids: None,
            fork_burst: None,
            action: Some(action),
        }
    }

    /// A `pids_limit_reached` event for a pids cgroup whose hit count grew by
    /// `new_hits`; `workload` is the capped label.
    pub fn pids_limit_reached(
        host: &str,
        workload: &str,
        cgroup: &PidsCgroup,
        new_hits: u64,
    ) -> Self {
        let mut event = Self::base(
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
    ) -> Self {
        let mut event = Self::base(
            AuditAction::ForkBurst,
            rfc3339_nanos(realtime_ns()),
            host,
            workload,
            path,
        );
        event.fork_burst = Some(ForkBurstFields { rate, threshold });
        event
    }

    /// The event for a kernel record, attributed with `attributor`.
    /// `realtime_minus_boottime` converts the record's boot time to wall-clock time.
    pub fn from_record(
        record: &AuditRecord,
        host: &str,
        attributor: &Mutex<Attributor>,
        realtime_minus_boottime: i128,
    ) -> Self {
        let attribution = attributor
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .attribute_task(record.pid, record.cgroup_id);
        let action = match record.kind {
            AuditKind::SeccompDenied { .. } => AuditAction::SeccompDenied,
            AuditKind::ForkFailed { .. } => AuditAction::ForkFailed,
            AuditKind::UsernsCreated => AuditAction::UsernsCreated,
        };
        let timestamp = rfc3339_nanos(i128::from(record.boot_ns) + realtime_minus_boottime);
        let mut event = Self::base(
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
                    action: action.as_str(),
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
}

/// Nanoseconds since the Unix epoch, now.
pub fn realtime_ns() -> i128 {
    clock_ns(libc::CLOCK_REALTIME)
}

/// Nanoseconds since boot, suspend included (`CLOCK_BOOTTIME`, the clock of
/// `bpf_ktime_get_boot_ns()`).
pub fn boottime_ns() -> i128 {
    clock_ns(libc::CLOCK_BOOTTIME)
}

/// `CLOCK_REALTIME - CLOCK_BOOTTIME`, in nanoseconds: add it to a
/// `bpf_ktime_get_boot_ns()` value to get wall-clock time.
pub fn realtime_minus_boottime() -> i128 {
    let boot_before = clock_ns(libc::CLOCK_BOOTTIME);
    let real = clock_ns(libc::CLOCK_REALTIME);
    let boot_after = clock_ns(libc::CLOCK_BOOTTIME);
    real - (boot_before + boot_after) / 2
}

fn clock_ns(clock: libc::clockid_t) -> i128 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes the timespec we pass, which outlives the call.
    unsafe { libc::clock_gettime(clock, &mut ts) };
    i128::from(ts.tv_sec) * 1_000_000_000 + i128::from(ts.tv_nsec)
}

/// Formats nanoseconds since the Unix epoch as RFC 3339 in UTC with nine
/// fractional digits, e.g. `2026-05-20T10:11:12.000000001Z`.
pub fn rfc3339_nanos(unix_ns: i128) -> String {
    let secs = unix_ns.div_euclid(1_000_000_000);
    let nanos = unix_ns.rem_euclid(1_000_000_000);
    let days = secs.div_euclid(86_400);
    let second_of_day = secs.rem_euclid(86_400);
    let (year, month, day) = civil_from_days(days as i64);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{nanos:09}Z",
        second_of_day / 3600,
        second_of_day / 60 % 60,
        second_of_day % 60
    )
}

/// Howard Hinnant's days-to-civil algorithm: days since 1970-01-01 to (y, m, d).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// The audit log: a file opened for appending (its directory created if needed),
/// or standard output.
pub struct AuditLog {
    target: AuditTarget,
    out: Option<BufWriter<Box<dyn Write + Send>>>,
}

impl std::fmt::Debug for AuditLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditLog")
            .field("target", &self.target)
            .field("open", &self.out.is_some())
            .finish()
    }
}

impl AuditLog {
    /// Opens the target.
    pub fn open(target: AuditTarget) -> io::Result<Self> {
        let mut log = AuditLog { target, out: None };
        log.reopen()?;
        Ok(log)
    }

    /// Where it writes.
    pub fn target(&self) -> &AuditTarget {
        &self.target
    }

    /// Flushes and closes the current file and opens the path again (after a
    /// rotation renamed it). On failure the log stays closed and the next write
    /// tries again.
    pub fn reopen(&mut self) -> io::Result<()> {
        if let Some(mut out) = self.out.take() {
            let _ = out.flush();
        }
        let out: Box<dyn Write + Send> = match &self.target {
            AuditTarget::Stdout => Box::new(io::stdout()),
            AuditTarget::File(path) => {
                if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                    fs::create_dir_all(dir)?;
                }
                Box::new(
                    OpenOptions::new()
                        .create(true)
                        .append(true)
                        .mode(0o640)
                        .open(path)?,
                )
            }
        };
        self.out = Some(BufWriter::with_capacity(64 * 1024, out));
        Ok(())
    }

    /// Writes one event as a line (buffered; see [`AuditLog::flush`]).
    pub fn write_event(&mut self, event: &AuditEvent) -> io::Result<()> {
        if self.out.is_none() {
            self.reopen()?;
        }
        let out = self.out.as_mut().expect("opened above");
        serde_json::to_writer(&mut *out, event).map_err(io::Error::other)?;
        out.write_all(b"\n")
    }

    /// Writes buffered lines out.
    pub fn flush(&mut self) -> io::Result<()> {
        match &mut self.out {
            Some(out) => out.flush(),
            None => Ok(()),
        }
    }
}

/// What [`run`] needs besides its channels.
#[derive(Debug, Clone)]
pub struct AuditContext {
    /// `host.name`.
    pub host_name: String,
    /// Attribution of kernel records.
    pub attributor: Arc<Mutex<Attributor>>,
    /// Counts, shared with the metrics.
    pub stats: Arc<AuditStats>,
    /// Notified on a fork refused with EAGAIN (a pids limit, most likely), so
    /// the pids cgroups are read before a short-lived workload's disappears.
    pub pids_changed: Option<Arc<Notify>>,
}

/// Most events written between two flushes.
const BATCH: usize = 1024;

/// Writes audit events until `shutdown` turns true (then drains what is queued):
/// kernel records from `records`, user-space events from `events`; reopens the log
/// whenever `reopen` is notified (SIGHUP).
pub async fn run(
    mut log: AuditLog,
    mut records: mpsc::Receiver<AuditRecord>,
    mut events: mpsc::Receiver<AuditEvent>,
    reopen: Arc<Notify>,
    mut shutdown: watch::Receiver<bool>,
    context: AuditContext,
) {
    let mut writer = Writer {
        log: &mut log,
        context: &context,
        failing: false,
    };
    let mut records_open = true;
    let mut events_open = true;
    loop {
        tokio::select! {
            biased;
            _ = shutdown.changed() => break,
            () = reopen.notified() => writer.reopen(),
            record = records.recv(), if records_open => match record {
                Some(record) => {
                    let offset = realtime_minus_boottime();
                    writer.write_record(&record, offset);
                    for _ in 1..BATCH {
                        match records.try_recv() {
                            Ok(record) => writer.write_record(&record, offset),
                            Err(_) => break,
                        }
                    }
                    writer.flush();
                }
                None => records_open = false,
            },
            event = events.recv(), if events_open => match event {
                Some(event) => {
                    writer.write(&event);
                    writer.flush();
                }
                None => events_open = false,
            },
        }
        if !records_open && !events_open && *shutdown.borrow() {
            break;
        }
    }
    // Drain what was queued before the shutdown.
    let offset = realtime_minus_boottime();
    while let Ok(record) = records.try_recv() {
        writer.write_record(&record, offset);
    }
    while let Ok(event) = events.try_recv() {
        writer.write(&event);
    }
    writer.flush();
}

struct Writer<'a> {
    log: &'a mut AuditLog,
    context: &'a AuditContext,
    failing: bool,
}

impl Writer<'_> {
    fn write_record(&mut self, record: &AuditRecord, offset: i128) {
        if let (AuditKind::ForkFailed { errno }, Some(notify)) =
            (record.kind, &self.context.pids_changed)
        {
            if i32::from(errno) == libc::EAGAIN {
                notify.notify_one();
            }
        }
        let event = AuditEvent::from_record(
            record,
            &self.context.host_name,
            &self.context.attributor,
            offset,
        );
        self.write(&event);
    }

    fn write(&mut self, event: &AuditEvent) {
        match self.log.write_event(event) {
            Ok(()) => {
                if let Some(action) = event.action {
                    self.context.stats.written[action.index()].fetch_add(1, Ordering::Relaxed);
                }
                if self.failing {
                    log::info!("audit log {} is writable again", self.log.target());
                    self.failing = false;
                }
            }
            Err(err) => self.failed(&err),
        }
    }

    fn flush(&mut self) {
        if let Err(err) = self.log.flush() {
            self.failed(&err);
        }
    }

    fn failed(&mut self, err: &io::Error) {
        self.context
            .stats
            .write_failed
            .fetch_add(1, Ordering::Relaxed);
        if !self.failing {
            log::error!("cannot write audit log {}: {err}", self.log.target());
            self.failing = true;
        }
    }

    fn reopen(&mut self) {
        match self.log.reopen() {
            Ok(()) => log::info!("reopened audit log {}", self.log.target()),
            Err(err) => log::error!("cannot reopen audit log {}: {err}", self.log.target()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_rfc3339_with_nanoseconds() {
        assert_eq!(rfc3339_nanos(0), "1970-01-01T00:00:00.000000000Z");
        assert_eq!(
            rfc3339_nanos(1_779_271_872_123_456_789),
            "2026-05-20T10:11:12.123456789Z"
        );
        assert_eq!(
            rfc3339_nanos(951_782_400_000_000_001),
            "2000-02-29T00:00:00.000000001Z"
        );
    }

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
            workload: "w".into(),
            path: "/moat/w".into(),
            current: 3,
            limit: Some(4),
            limit_hits: 2,
        };
        let event = AuditEvent::pids_limit_reached("node", "w", &cgroup, 2);
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
