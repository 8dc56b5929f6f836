//! The audit writer: appends the audit events the collector produces to the audit
//! log (a file reopened on SIGHUP, or standard output), one JSON object per line
//! (the format is [`moat_api::audit`]), on a thread of its own so that a log
//! that blocks (a hung file system, a full pipe) never holds up the rest of
//! moatd nor its shutdown.
//!
//! The counts are exactly what the log holds: [`AuditStats`] counts an event in
//! `moat_audit_events_total{action}` only once its whole line is in the file
//! ([`file::AuditFile::append`] keeps partial lines out), and every event that
//! is not written is counted once in `moat_audit_events_dropped_total{reason}`:
//! `write_failed` (the write failed: a full disk, an I/O error) or
//! `log_unavailable` (there is no file to write to: the path cannot be opened or
//! is not a regular file, see [`file::OpenError`]).
//!
//! After SIGHUP, if the path cannot be opened, events go on to the file open
//! until then (the rotated one, most likely) for as long as it still has a
//! name, and the path is tried again every [`RETRY`]; with no usable file they
//! are counted as `log_unavailable`.

pub mod file;

use std::{
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use moat_api::{
    audit::{AuditAction, AuditEvent},
    metrics::drop_reason,
};
use tokio::sync::{mpsc, watch, Notify};

pub use self::file::{AuditFile, OpenError};
use crate::config::AuditTarget;

/// Most events written in one batch (one buffer, one `write(2)` normally).
const BATCH: usize = 1024;
/// How often a path that could not be opened is tried again (besides SIGHUP).
pub const RETRY: Duration = Duration::from_secs(5);

/// Why an event was not written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropReason {
    /// The write failed.
    WriteFailed,
    /// No file to write to.
    LogUnavailable,
}

impl DropReason {
    /// Every reason, in label order.
    pub const ALL: [DropReason; 2] = [DropReason::WriteFailed, DropReason::LogUnavailable];

    /// The `reason` label value.
    pub fn as_str(self) -> &'static str {
        match self {
            DropReason::WriteFailed => drop_reason::WRITE_FAILED,
            DropReason::LogUnavailable => drop_reason::LOG_UNAVAILABLE,
        }
    }
}

/// Counts of written and unwritten events, shared with the metrics.
#[derive(Debug, Default)]
pub struct AuditStats {
    written: [AtomicU64; AuditAction::ALL.len()],
    dropped: [AtomicU64; DropReason::ALL.len()],
    /// The authorization plugin's events dropped before the writer, its queue
    /// full (`reason="queue_full"`; the collector counts its own).
    queue_full: AtomicU64,
}

impl AuditStats {
    /// Events of `action` whose line is in the log.
    pub fn written(&self, action: AuditAction) -> u64 {
        self.written[action.index()].load(Ordering::Relaxed)
    }

    /// Events not written for `reason`.
    pub fn dropped(&self, reason: DropReason) -> u64 {
        self.dropped[reason as usize].load(Ordering::Relaxed)
    }

    /// Counts an event dropped before the writer because its queue was full
    /// (the authorization plugin never waits for the writer).
    pub fn count_queue_full(&self) {
        self.queue_full.fetch_add(1, Ordering::Relaxed);
    }

    /// The authorization plugin's events dropped because the writer's queue
    /// was full.
    pub fn queue_full(&self) -> u64 {
        self.queue_full.load(Ordering::Relaxed)
    }

    fn add_written(&self, action: AuditAction) {
        self.written[action.index()].fetch_add(1, Ordering::Relaxed);
    }

    fn add_dropped(&self, reason: DropReason, n: usize) {
        self.dropped[reason as usize].fetch_add(n as u64, Ordering::Relaxed);
    }
}

/// The audit log: its target, and the file open for it.
#[derive(Debug)]
pub struct AuditLog {
    target: AuditTarget,
    file: Option<AuditFile>,
    /// `file` is what the path named before a reopen failed: still written to
    /// (while it has a name) until the path can be opened again.
    stale: bool,
    last_try: Instant,
}

impl AuditLog {
    /// Opens the target; fails if it cannot be used (see [`AuditFile::open`]).
    pub fn open(target: AuditTarget) -> Result<Self, OpenError> {
        let file = AuditFile::open(&target)?;
        Ok(AuditLog {
            target,
            file: Some(file),
            stale: false,
            last_try: Instant::now(),
        })
    }

    /// Where it writes.
    pub fn target(&self) -> &AuditTarget {
        &self.target
    }

    /// Opens the path again (after a rotation renamed it). On failure the file
    /// open until now, if any, stays in use (see the module documentation).
    pub fn reopen(&mut self) -> Result<(), OpenError> {
        self.last_try = Instant::now();
        match AuditFile::open(&self.target) {
            Ok(file) => {
                self.file = Some(file);
                self.stale = false;
                Ok(())
            }
            Err(err) => {
                self.stale = true;
                Err(err)
            }
        }
    }

    /// The file to write the next batch to: the path is opened again when the
    /// file was deleted, and retried every [`RETRY`] while it cannot be used.
    fn usable(&mut self) -> Option<&mut AuditFile> {
        if self.file.as_ref().is_some_and(AuditFile::is_deleted) {
            log::warn!(
                "audit log {} was deleted; opening the path again",
                self.target
            );
            self.file = None;
            self.retry_now();
        } else if (self.file.is_none() || self.stale) && self.last_try.elapsed() >= RETRY {
            self.retry_now();
        }
        self.file.as_mut()
    }

    fn retry_now(&mut self) {
        let was_stale = self.stale;
        match self.reopen() {
            Ok(()) => log::info!("audit log {} opened again", self.target),
            Err(err) if !was_stale || self.file.is_none() => {
                log::error!(
                    "cannot use audit log {}: {}",
                    self.target,
                    error_chain(&err)
                );
            }
            Err(_) => {}
        }
    }
}

/// An error and its sources, `: `-separated.
fn error_chain(err: &dyn std::error::Error) -> String {
    let mut message = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        message.push_str(": ");
        message.push_str(&cause.to_string());
        source = cause.source();
    }
    message
}

/// Starts the writer thread (`moat-audit-log`): it writes the events from
/// `events` until `shutdown` turns true (then drains what is queued), counting
/// them in `stats`, and reopens the log whenever `reopen` is notified (SIGHUP).
pub fn spawn(
    log: AuditLog,
    events: mpsc::Receiver<AuditEvent>,
    reopen: Arc<Notify>,
    shutdown: watch::Receiver<bool>,
    stats: Arc<AuditStats>,
) -> std::io::Result<JoinHandle<()>> {
    std::thread::Builder::new()
        .name("moat-audit-log".to_owned())
        .spawn(move || {
            let runtime = match tokio::runtime::Builder::new_current_thread().build() {
                Ok(runtime) => runtime,
                Err(err) => {
                    log::error!("cannot start the audit writer's runtime: {err}");
                    return;
                }
            };
            runtime.block_on(run(log, events, reopen, shutdown, stats));
        })
}

/// The writer's loop (see [`spawn`]).
pub async fn run(
    mut log: AuditLog,
    mut events: mpsc::Receiver<AuditEvent>,
    reopen: Arc<Notify>,
    mut shutdown: watch::Receiver<bool>,
    stats: Arc<AuditStats>,
) {
    let mut writer = Writer {
        log: &mut log,
        stats: &stats,
        failing: None,
    };
    loop {
        tokio::select! {
            biased;
            _ = shutdown.changed() => break,
            () = reopen.notified() => writer.reopen(),
            event = events.recv() => match event {
                Some(event) => {
                    let mut batch = vec![event];
                    while batch.len() < BATCH {
                        match events.try_recv() {
                            Ok(event) => batch.push(event),
                            Err(_) => break,
                        }
                    }
                    writer.write(&batch);
                }
                None => break,
            },
        }
    }
    // Drain what was queued before the shutdown.
    let mut batch = Vec::new();
    while let Ok(event) = events.try_recv() {
        batch.push(event);
        if batch.len() == BATCH {
            writer.write(&std::mem::take(&mut batch));
        }
    }
    if !batch.is_empty() {
        writer.write(&batch);
    }
}

/// What the writer is failing at, so that it logs once per failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Failing {
    Writes,
    NoFile,
}

struct Writer<'a> {
    log: &'a mut AuditLog,
    stats: &'a AuditStats,
    failing: Option<Failing>,
}

impl Writer<'_> {
    fn write(&mut self, batch: &[AuditEvent]) {
        let mut buf = Vec::with_capacity(batch.len() * 512);
        let mut ends = Vec::with_capacity(batch.len());
        for event in batch {
            // Serialising plain strings and numbers cannot fail. Workload and
            // process names are the workload's choice: no character that could
            // act on a terminal is left raw, even in the raw lines.
            let line = serde_json::to_string(event).unwrap_or_default();
            buf.extend_from_slice(moat_api::text::escape_unsafe_in_json(&line).as_bytes());
            buf.push(b'\n');
            ends.push(buf.len());
        }
        let Some(file) = self.log.usable() else {
            self.stats
                .add_dropped(DropReason::LogUnavailable, batch.len());
            let target = self.log.target().to_string();
            self.fail(Failing::NoFile, || {
                format!(
                    "audit log {target} cannot be used: dropping audit events (counted as {}) \
                     until it can",
                    DropReason::LogUnavailable.as_str()
                )
            });
            return;
        };
        let appended = file.append(&buf, &ends);
        for event in &batch[..appended.lines] {
            if let Some(action) = event.action() {
                self.stats.add_written(action);
            }
        }
        let lost = batch.len() - appended.lines;
        match appended.error {
            Some(err) => {
                self.stats.add_dropped(DropReason::WriteFailed, lost);
                let target = self.log.target().to_string();
                self.fail(Failing::Writes, || {
                    format!(
                        "cannot write audit log {target}: {err} ({lost} events dropped, counted \
                         as {}; more are not logged until writes succeed again)",
                        DropReason::WriteFailed.as_str()
                    )
                });
            }
            None => {
                if self.failing.take().is_some() {
                    log::info!("audit log {} is writable again", self.log.target());
                }
            }
        }
    }

    fn fail(&mut self, what: Failing, message: impl FnOnce() -> String) {
        if self.failing != Some(what) {
            log::error!("{}", message());
            self.failing = Some(what);
        }
    }

    fn reopen(&mut self) {
        match self.log.reopen() {
            Ok(()) => log::info!("reopened audit log {}", self.log.target()),
            Err(err) => log::error!(
                "cannot reopen audit log {}: {}; {}",
                self.log.target(),
                error_chain(&err),
                if self.log.file.is_some() {
                    "writing on to the file open until now while it has a name, and trying \
                     the path again every 5 s"
                } else {
                    "audit events are dropped (log_unavailable) until the path can be opened"
                }
            ),
        }
    }
}
