//! Collection: the one task that reads the kernel side and turns what it counts
//! into what moatd reports.
//!
//! [`Collector`] alone reads the kernel maps, owns the attribution state (rules,
//! label cap, hierarchy cache, fed by the cgroup watcher), reads the pids cgroups,
//! detects fork bursts and attributes the kernel's audit records. Each poll
//! interval, and whenever a scrape asks ([`SnapshotSource::fresh`]), it publishes
//! an immutable [`Snapshot`]; audit events go to the audit writer over a channel.
//! The exporters ([`crate::export`]) only read what it publishes.
//!
//! - [`attribution`]: which workload a cgroup id or a task belongs to (label
//!   decisions, the label cap, the hierarchy cache, the cgroup watcher).
//! - [`pids`]: the workloads' pids cgroups; [`burst`]: fork bursts.
//! - [`names`]: syscall, errno and architecture names for labels and events.
//! - [`events`]: the audit events the collector produces.
//! - [`snapshot`]: what it publishes.
//!
//! It runs on its own thread (`moat-collect`, with a single-threaded runtime), so
//! its file-system walks never hold up the HTTP server.

pub mod attribution;
pub mod burst;
pub mod events;
pub mod names;
pub mod pids;
pub mod snapshot;

use std::{
    collections::{BTreeMap, VecDeque},
    path::PathBuf,
    sync::Arc,
    thread::JoinHandle,
    time::{Duration, Instant},
};

use moat_api::audit::AuditEvent;
use tokio::sync::{mpsc, watch};

pub use self::snapshot::{Snapshot, SnapshotSource};
use self::{
    attribution::{Attributor, CgroupParents, CgroupWatcher, WatchEvent},
    burst::BurstDetector,
    names::NameCache,
    pids::{HitTracker, PidsCgroup},
    snapshot::RefreshRequest,
};
use crate::{
    kernel::{AuditKind, AuditRecord, KernelSnapshot, KernelSource},
    notify::Watchdog,
};

/// Most kernel records attributed in one go before the collector looks at its
/// other inputs (a scrape waiting for a snapshot, above all).
const RECORD_BATCH: usize = 256;
/// How long the collector waits before looking again when the audit writer is
/// behind (its channel full): records then wait in the kernel's ring buffer.
const WRITER_BEHIND_RETRY: Duration = Duration::from_millis(20);
/// Scrapes waiting for a snapshot at once; more get the last one published.
const REFRESH_QUEUE: usize = 64;
/// Longest an audit record waits for its cgroup to be known (see
/// [`Attributor::walk_wait`]). When walks are spaced out further than this (a
/// big or slow hierarchy), the due records get one walk of their own, at most
/// one per `MAX_DEFER`, so the cost of walking stays bounded.
const MAX_DEFER: Duration = Duration::from_secs(1);
/// Most records held back at once; beyond, they are attributed at once, so a
/// flood of records from unknown cgroups cannot grow the collector.
const MAX_DEFERRED: usize = 4096;
/// Derived events kept while the audit writer's queue is full; beyond, they
/// are dropped and counted (`queue_full`), so a stuck writer cannot grow the
/// collector without bound.
const MAX_PENDING: usize = 4096;

/// What the collector is told besides its inputs.
#[derive(Debug, Clone)]
pub struct CollectorConfig {
    /// The pids hierarchy, if pids cgroups are read.
    pub pids_mount: Option<PathBuf>,
    /// Whether that hierarchy is a v1 one (its cgroups' keys then carry
    /// [`attribution::V1_PIDS_ID_FLAG`]).
    pub pids_on_v1: bool,
    /// Where workloads' cgroups are.
    pub parents: CgroupParents,
    /// How often the pids cgroups and counters are read.
    pub interval: Duration,
    /// Forks per second above which a workload gets a `fork_burst` event.
    pub fork_burst_threshold: u64,
    /// `host.name` of audit events.
    pub host_name: String,
    /// The service manager's watchdog, pinged after each successful reading
    /// of the kernel maps: a collector that stops reading them stops the pings,
    /// and the manager restarts moatd.
    pub watchdog: Option<Watchdog>,
}

/// The collector's inputs.
pub struct CollectorInputs {
    /// The kernel maps (or a test double).
    pub kernel: Arc<dyn KernelSource>,
    /// The kernel's audit records.
    pub records: mpsc::Receiver<AuditRecord>,
    /// Audit events out, to the audit writer.
    pub events: mpsc::Sender<AuditEvent>,
    /// Set to true to stop.
    pub shutdown: watch::Receiver<bool>,
}

/// The collector, running on its thread.
#[derive(Debug)]
pub struct RunningCollector {
    handle: JoinHandle<()>,
}

impl RunningCollector {
    /// Waits for the thread (after the shutdown signal was sent).
    pub fn join(self) {
        if self.handle.join().is_err() {
            log::warn!("the collector thread panicked");
        }
    }

    /// Whether the thread has ended (so [`RunningCollector::join`] returns at
    /// once).
    pub fn is_finished(&self) -> bool {
        self.handle.is_finished()
    }
}

/// See the module documentation.
pub struct Collector {
    config: CollectorConfig,
    kernel: Arc<dyn KernelSource>,
    attributor: Attributor,
    names: NameCache,
    hits: HitTracker,
    bursts: BurstDetector,
    pids_reading: Vec<PidsCgroup>,
    /// Final limit hits of removed pids cgroups, by (capped) workload label.
    pids_retired_hits: BTreeMap<Arc<str>, u64>,
    seq: u64,
    publish: watch::Sender<Arc<Snapshot>>,
    events: mpsc::Sender<AuditEvent>,
    /// Derived events waiting for room in the writer's queue.
    pending: VecDeque<AuditEvent>,
    /// Derived events dropped because `pending` was full.
    pending_dropped: u64,
    /// Audit records of cgroups too new for the last walk, with when their
    /// hierarchy may be walked again, oldest first.
    deferred: VecDeque<(Instant, AuditRecord)>,
    /// When the held-back records last had a walk of their own.
    deferred_walk: Option<Instant>,
}

impl Collector {
    /// Starts the collector on its own thread; returns the reading end of what it
    /// publishes. `attributor` is its attribution state; the cgroup watcher is
    /// started for it here (without it, workloads that end between two scrapes
    /// may be counted as host).
    pub fn spawn(
        config: CollectorConfig,
        attributor: Attributor,
        inputs: CollectorInputs,
    ) -> std::io::Result<(SnapshotSource, RunningCollector)> {
        let (watch_tx, watch_rx) = mpsc::unbounded_channel();
        let watcher = match CgroupWatcher::spawn(
            attributor.watched_dirs(),
            config.pids_mount.is_some(),
            watch_tx,
        ) {
            Ok(watcher) => Some(watcher),
            Err(err) => {
                log::warn!(
                    "cannot watch for new cgroups ({err}): workloads that end between two \
                     scrapes may be counted as host"
                );
                None
            }
        };
        // Until the first reading, a scrape that gives up waiting fails rather
        // than show every counter at zero.
        let (publish, latest) = watch::channel(Arc::new(Snapshot {
            kernel_error: Some("moatd has not read the kernel maps yet".to_owned()),
            ..Snapshot::default()
        }));
        let (refresh_tx, refresh_rx) = mpsc::channel(REFRESH_QUEUE);
        let mut collector = Collector {
            bursts: BurstDetector::new(config.fork_burst_threshold),
            config,
            kernel: inputs.kernel,
            attributor,
            names: NameCache::default(),
            hits: HitTracker::default(),
            pids_reading: Vec::new(),
            pids_retired_hits: BTreeMap::new(),
            seq: 0,
            publish,
            events: inputs.events,
            pending: VecDeque::new(),
            pending_dropped: 0,
            deferred: VecDeque::new(),
            deferred_walk: None,
        };
        let (records, shutdown) = (inputs.records, inputs.shutdown);
        let handle = std::thread::Builder::new()
            .name("moat-collect".to_owned())
            .spawn(move || {
                let runtime = match tokio::runtime::Builder::new_current_thread()
                    .enable_time()
                    .build()
                {
                    Ok(runtime) => runtime,
                    Err(err) => {
                        log::error!("cannot start the collector's runtime: {err}");
                        return;
                    }
                };
                // The first walk and reading, on this thread so that the HTTP
                // server starts meanwhile. A scrape already waiting gets the first
                // snapshot from the loop; otherwise one is published now. Fork
                // bursts are primed at the first tick, one interval later.
                collector.attributor.refresh();
                collector.poll_pids();
                if refresh_rx.is_empty() {
                    let reading = collector.read_kernel();
                    collector.publish_snapshot(reading.as_ref());
                }
                runtime.block_on(collector.run(records, watch_rx, refresh_rx, shutdown));
                drop(watcher);
            })?;
        Ok((
            SnapshotSource::new(latest, refresh_tx),
            RunningCollector { handle },
        ))
    }

    async fn run(
        mut self,
        mut records: mpsc::Receiver<AuditRecord>,
        mut watched: mpsc::UnboundedReceiver<WatchEvent>,
        mut refresh: mpsc::Receiver<RefreshRequest>,
        mut shutdown: watch::Receiver<bool>,
    ) {
        let mut ticker = tokio::time::interval(self.config.interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ticker.reset();
        // A poll interval longer than the watchdog's period would let the
        // pings lapse: then the maps are also read at the watchdog's pace.
        let watchdog_period = self
            .config
            .watchdog
            .as_ref()
            .map(Watchdog::period)
            .filter(|period| *period < self.config.interval);
        let mut watchdog_ticker = tokio::time::interval(watchdog_period.unwrap_or(Duration::MAX));
        watchdog_ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        watchdog_ticker.reset();
        let mut records_open = true;
        let mut watcher_open = true;
        loop {
            self.flush_pending();
            let writer_has_room = self.pending.is_empty() && self.events.capacity() > 0;
            let next_deferred = self.deferred.front().map(|(due, _)| *due);
            let deferred_due =
                tokio::time::Instant::from_std(next_deferred.unwrap_or_else(Instant::now));
            tokio::select! {
                biased;
                _ = shutdown.changed() => break,
                // New cgroups first: a record of a new workload must find it known.
                event = watched.recv(), if watcher_open => match event {
                    Some(event) => {
                        let mut pids_changed = self.attributor.apply(event);
                        while let Ok(event) = watched.try_recv() {
                            pids_changed |= self.attributor.apply(event);
                        }
                        if pids_changed {
                            self.poll_pids();
                        }
                    }
                    None => watcher_open = false,
                },
                request = refresh.recv() => {
                    let Some(request) = request else { break };
                    let mut waiting = vec![request];
                    while let Ok(request) = refresh.try_recv() {
                        waiting.push(request);
                    }
                    // Pids cgroups removed since the last poll: their final
                    // hits are in the kernel's record, and this scrape counts
                    // them however long the poll interval.
                    self.take_retired_pids();
                    let snapshot = self.publish_snapshot(self.read_kernel().as_ref());
                    for request in waiting {
                        let _ = request.send(snapshot.clone());
                    }
                }
                _ = ticker.tick() => self.poll(Instant::now()),
                _ = watchdog_ticker.tick(), if watchdog_period.is_some() => {
                    let _ = self.read_kernel();
                }
                record = records.recv(), if records_open && writer_has_room => match record {
                    Some(record) => self.handle_records(record, &mut records),
                    None => records_open = false,
                },
                () = tokio::time::sleep_until(deferred_due), if next_deferred.is_some() && writer_has_room => {
                    self.attribute_deferred(false);
                }
                () = tokio::time::sleep(WRITER_BEHIND_RETRY), if records_open && !writer_has_room => {}
            }
        }
        // What was queued before the shutdown, and a last snapshot for the log.
        self.attribute_deferred(true);
        self.flush_pending();
        while self.pending.is_empty() && self.events.capacity() > 0 {
            match records.try_recv() {
                Ok(record) => self.handle_records(record, &mut records),
                Err(_) => break,
            }
        }
        self.publish_snapshot(self.read_kernel().as_ref());
    }

    /// Attributes `first` and the records queued behind it (at most
    /// [`RECORD_BATCH`], and as many as the writer has room for).
    fn handle_records(&mut self, first: AuditRecord, records: &mut mpsc::Receiver<AuditRecord>) {
        let offset = events::realtime_minus_boottime();
        let mut pids_changed = false;
        let mut next = Some(first);
        let mut handled = 0;
        while let Some(record) = next.take() {
            if let AuditKind::ForkFailed { errno } = record.kind {
                // EAGAIN: a pids limit, most likely; read the pids cgroups before
                // a short-lived workload's disappears.
                pids_changed |= i32::from(errno) == libc::EAGAIN;
            }
            match self.attributor.walk_wait(record.cgroup_id) {
                // A cgroup too new for the last walk: wait for the next one
                // (records of the same cgroup queue behind, in order).
                Some(wait) if self.deferred.len() < MAX_DEFERRED => {
                    let due = Instant::now() + wait.min(MAX_DEFER);
                    self.deferred.push_back((due, record));
                }
                _ => self.emit_record(&record, offset),
            }
            handled += 1;
            if handled < RECORD_BATCH && self.events.capacity() > 0 {
                next = records.try_recv().ok();
            }
        }
        if pids_changed {
            self.poll_pids();
        }
    }

    /// Attributes and sends one kernel record.
    fn emit_record(&mut self, record: &AuditRecord, offset: i128) {
        let attribution = self.attributor.attribute_task(record.pid, record.cgroup_id);
        let event = events::from_record(record, &self.config.host_name, &attribution, offset);
        if self.events.try_send(event).is_err() {
            log::debug!("the audit writer is gone; dropping an audit record");
        }
    }

    /// Attributes the held-back records that are due (all of them with
    /// `all`), as far as the writer has room; the first lookup walks, or, if
    /// walks are still spaced out, one walk is made for them (see
    /// [`MAX_DEFER`]).
    fn attribute_deferred(&mut self, all: bool) {
        let offset = events::realtime_minus_boottime();
        let now = Instant::now();
        let still_unknown = self.deferred.front().is_some_and(|(due, record)| {
            (all || *due <= now) && self.attributor.walk_wait(record.cgroup_id).is_some()
        });
        let may_walk = self
            .deferred_walk
            .is_none_or(|last| now.duration_since(last) >= MAX_DEFER);
        if still_unknown && may_walk {
            self.attributor.refresh();
            self.deferred_walk = Some(now);
        }
        while self.events.capacity() > 0 {
            match self.deferred.front() {
                Some((due, _)) if all || *due <= now => {}
                _ => break,
            }
            if let Some((_, record)) = self.deferred.pop_front() {
                self.emit_record(&record, offset);
            }
        }
    }

    /// One poll: the pids cgroups, the counters; publishes, then looks for fork
    /// bursts in what it published.
    fn poll(&mut self, now: Instant) {
        self.poll_pids();
        let reading = self.read_kernel();
        let snapshot = self.publish_snapshot(reading.as_ref());
        if snapshot.kernel_error.is_none() {
            self.detect_bursts(&snapshot, now);
        }
    }

    /// Reads the kernel maps; a successful reading pings the watchdog.
    fn read_kernel(&self) -> Result<KernelSnapshot, String> {
        let reading = self.kernel.snapshot().map_err(|err| {
            let message = error_chain(&err);
            log::warn!("reading the kernel maps failed: {message}");
            message
        });
        if let (Ok(_), Some(watchdog)) = (&reading, &self.config.watchdog) {
            watchdog.ping();
        }
        reading
    }

    fn publish_snapshot(&mut self, reading: Result<&KernelSnapshot, &String>) -> Arc<Snapshot> {
        self.seq += 1;
        let snapshot = Arc::new(Snapshot::build(
            self.seq,
            reading.map_err(String::clone),
            &mut self.attributor,
            &mut self.names,
            &self.pids_reading,
            &self.pids_retired_hits,
            self.pending_dropped,
        ));
        self.publish.send_replace(snapshot.clone());
        snapshot
    }

    /// Reads the pids cgroups, and takes the final counts of those removed
    /// since; emits `pids_limit_reached` for hits since the last reading.
    fn poll_pids(&mut self) {
        let Some(mount) = &self.config.pids_mount else {
            return;
        };
        let key_flag = if self.config.pids_on_v1 {
            attribution::V1_PIDS_ID_FLAG
        } else {
            0
        };
        let reading = pids::scan(mount, &self.config.parents, key_flag);
        self.update_pids(reading);
    }

    /// Takes the final counts of the pids cgroups removed since the last
    /// reading, without reading the live ones again.
    fn take_retired_pids(&mut self) {
        if self.config.pids_mount.is_some() {
            let reading = std::mem::take(&mut self.pids_reading);
            self.update_pids(reading);
        }
    }

    /// Takes `reading` (of the live pids cgroups) and the removed ones since.
    fn update_pids(&mut self, mut reading: Vec<PidsCgroup>) {
        // Read after the scan: a cgroup removed in between is in both, and
        // counts as removed.
        let gone = self.retired_pids();
        let update = self.hits.update(&mut reading, gone);
        for cgroup in &update.gone {
            let workload = self.attributor.admit(&cgroup.workload);
            *self.pids_retired_hits.entry(workload).or_default() += cgroup.limit_hits;
        }
        for (cgroup, new_hits) in update.grown {
            let workload = self.attributor.admit(&cgroup.workload);
            self.emit(events::pids_limit_reached(
                &self.config.host_name,
                &workload,
                &cgroup,
                new_hits,
            ));
        }
        self.pids_reading = reading;
    }

    /// The workload pids cgroups removed since the last call, with their final
    /// counts (from the kernel side; a cgroup whose path the record cut is
    /// resolved by its id).
    fn retired_pids(&mut self) -> Vec<PidsCgroup> {
        let retired = match self.kernel.retired_pids() {
            Ok(retired) => retired,
            Err(err) => {
                log::warn!(
                    "reading the removed pids cgroups failed: {}",
                    error_chain(&err)
                );
                return Vec::new();
            }
        };
        retired
            .into_iter()
            .filter_map(|r| {
                let path = match r.path {
                    Some(path) => path,
                    None => self.attributor.cgroup_path(r.cgroup_id)?.to_string(),
                };
                pids::retired(r.cgroup_id, &path, r.hits, &self.config.parents)
            })
            .collect()
    }

    /// Reads only the snapshot's fork totals (already attributed).
    fn detect_bursts(&mut self, snapshot: &Snapshot, now: Instant) {
        let threshold = self.config.fork_burst_threshold;
        for burst in self.bursts.update(&snapshot.fork_totals, now) {
            log::info!(
                "fork burst: workload {} forks {}/s (threshold {threshold}/s)",
                burst.workload,
                burst.rate,
            );
            let event = events::fork_burst(
                &self.config.host_name,
                &burst.workload,
                burst.path.as_deref().map(str::to_owned),
                burst.rate,
                threshold,
            );
            self.emit(event);
        }
    }

    /// Sends a derived event to the writer, or keeps it until the writer has room
    /// (the collector never waits for the writer).
    fn emit(&mut self, event: AuditEvent) {
        self.flush_pending();
        if self.pending.len() >= MAX_PENDING {
            if self.pending_dropped == 0 {
                log::warn!(
                    "the audit writer has been behind for {MAX_PENDING} derived events; \
                     dropping them (counted as queue_full)"
                );
            }
            self.pending_dropped += 1;
            return;
        }
        self.pending.push_back(event);
        self.flush_pending();
    }

    fn flush_pending(&mut self) {
        while let Some(event) = self.pending.pop_front() {
            match self.events.try_send(event) {
                Ok(()) => {}
                Err(mpsc::error::TrySendError::Full(event)) => {
                    self.pending.push_front(event);
                    return;
                }
                Err(mpsc::error::TrySendError::Closed(_)) => {
                    self.pending.clear();
                    return;
                }
            }
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
