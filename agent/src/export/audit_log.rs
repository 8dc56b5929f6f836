//! The audit writer: appends the audit events the collector produces to the audit
//! log (a file reopened on SIGHUP, or standard output), one JSON object per line
//! (the format is [`moat_api::audit`]), and counts what it wrote by action
//! ([`AuditStats`], served as `moat_audit_events_total`) and what it could not
//! write (`moat_audit_events_dropped_total{reason="write_failed"}`).

use std::{
    fs::{self, OpenOptions},
    io::{self, BufWriter, Write},
    os::unix::fs::OpenOptionsExt as _,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
};

use moat_api::audit::{AuditAction, AuditEvent};
use tokio::sync::{mpsc, watch, Notify};

use crate::config::AuditTarget;

/// Counts of written and unwritable events, shared with the metrics.
#[derive(Debug, Default)]
pub struct AuditStats {
    written: [AtomicU64; AuditAction::ALL.len()],
    write_failed: AtomicU64,
    queue_full: AtomicU64,
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

    /// Counts an event dropped before the writer because its queue was full
    /// (the authorization plugin never waits for the writer).
    pub fn count_queue_full(&self) {
        self.queue_full.fetch_add(1, Ordering::Relaxed);
    }

    /// Events dropped because the writer's queue was full.
    pub fn queue_full(&self) -> u64 {
        self.queue_full.load(Ordering::Relaxed)
    }
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

/// Most events written between two flushes.
const BATCH: usize = 1024;

/// Writes audit events from `events` until `shutdown` turns true (then drains
/// what is queued), counting them in `stats`; reopens the log whenever `reopen`
/// is notified (SIGHUP).
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
        failing: false,
    };
    loop {
        tokio::select! {
            biased;
            _ = shutdown.changed() => break,
            () = reopen.notified() => writer.reopen(),
            event = events.recv() => match event {
                Some(event) => {
                    writer.write(&event);
                    for _ in 1..BATCH {
                        match events.try_recv() {
                            Ok(event) => writer.write(&event),
                            Err(_) => break,
                        }
                    }
                    writer.flush();
                }
                None => break,
            },
        }
    }
    // Drain what was queued before the shutdown.
    while let Ok(event) = events.try_recv() {
        writer.write(&event);
    }
    writer.flush();
}

struct Writer<'a> {
    log: &'a mut AuditLog,
    stats: &'a AuditStats,
    failing: bool,
}

impl Writer<'_> {
    fn write(&mut self, event: &AuditEvent) {
        match self.log.write_event(event) {
            Ok(()) => {
                if let Some(action) = event.action() {
                    self.stats.written[action.index()].fetch_add(1, Ordering::Relaxed);
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
        self.stats.write_failed.fetch_add(1, Ordering::Relaxed);
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
