//! The running agent, apart from loading the eBPF programs: the HTTP server, the
//! audit writer and the poller of pids cgroups and fork rates, over any
//! [`KernelSource`] and stream of [`AuditRecord`]s.
//!
//! `moatd` (`src/main.rs`) binds the listener first (so scrapes that arrive while the
//! programs load wait in the backlog instead of being refused), loads the programs,
//! then calls [`start`]. Tests call [`start`] with a fake source.

use std::{
    net::SocketAddr,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};

use anyhow::Context as _;
use tokio::{
    net::TcpListener,
    sync::{mpsc, watch, Notify},
    task::JoinSet,
};

use crate::{
    collect::{
        attribution::{spawn_watcher, Attributor, CgroupLayout},
        burst::{BurstDetector, ForkTotal},
        pids::{self, HitTracker},
    },
    config::Config,
    export::{
        audit_log::{self as audit, AuditContext, AuditEvent, AuditLog, AuditStats},
        http,
        metrics::{Metrics, PidsReading, Sources},
    },
    kernel::{AuditRecord, KernelSource},
};

/// How long [`Running::shutdown`] waits for the tasks before abandoning them.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(1);

/// Binds the HTTP listener of `config` (before the programs load).
pub fn bind(config: &Config) -> anyhow::Result<std::net::TcpListener> {
    let listen = config.http.listen;
    let listener = std::net::TcpListener::bind(listen)
        .with_context(|| format!("cannot listen on {listen} (http.listen / --listen)"))?;
    listener
        .set_nonblocking(true)
        .context("making the listener non-blocking")?;
    Ok(listener)
}

/// The agent's tasks, running.
#[derive(Debug)]
pub struct Running {
    local_addr: SocketAddr,
    shutdown: watch::Sender<bool>,
    reopen: Arc<Notify>,
    tasks: JoinSet<()>,
    attributor: Arc<Mutex<Attributor>>,
    stats: Arc<AuditStats>,
    watcher: Option<(Arc<AtomicBool>, std::thread::JoinHandle<()>)>,
}

impl Running {
    /// The address the HTTP server listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Asks the audit writer to reopen its log (SIGHUP).
    pub fn reopen_audit_log(&self) {
        self.reopen.notify_one();
    }

    /// The attributor shared by the metrics and the audit writer.
    pub fn attributor(&self) -> &Arc<Mutex<Attributor>> {
        &self.attributor
    }

    /// The audit counts.
    pub fn audit_stats(&self) -> &Arc<AuditStats> {
        &self.stats
    }

    /// Stops serving, writes out queued audit events and waits for the tasks (at
    /// most [`SHUTDOWN_GRACE`]).
    pub async fn shutdown(mut self) {
        let _ = self.shutdown.send(true);
        if let Some((stop, handle)) = self.watcher.take() {
            stop.store(true, Ordering::Relaxed);
            let _ = tokio::task::spawn_blocking(move || handle.join()).await;
        }
        let all_done = async { while self.tasks.join_next().await.is_some() {} };
        if tokio::time::timeout(SHUTDOWN_GRACE, all_done)
            .await
            .is_err()
        {
            log::warn!("tasks still running {SHUTDOWN_GRACE:?} after shutdown; abandoning them");
            self.tasks.abort_all();
        }
    }
}

/// Starts serving and auditing.
///
/// `listener` comes from [`bind`]; `kernel` is read at every scrape and poll;
/// `records` are the kernel's audit records.
pub fn start(
    config: &Config,
    layout: &CgroupLayout,
    listener: std::net::TcpListener,
    kernel: Arc<dyn KernelSource>,
    records: mpsc::Receiver<AuditRecord>,
) -> anyhow::Result<Running> {
    let listener = TcpListener::from_std(listener).context("registering the listener")?;
    let local_addr = listener
        .local_addr()
        .context("reading the listen address")?;

    let mut attributor = Attributor::new(layout, &config.workloads);
    attributor.refresh();
    let attributor = Arc::new(Mutex::new(attributor));
    let stop_watcher = Arc::new(AtomicBool::new(false));
    let pids_changed = Arc::new(Notify::new());
    let watcher = match spawn_watcher(
        attributor.clone(),
        stop_watcher.clone(),
        Some(pids_changed.clone()),
    ) {
        Ok(handle) => Some((stop_watcher, handle)),
        Err(err) => {
            log::warn!(
                "cannot watch for new cgroups ({err}): workloads that end between two \
                 scrapes may be counted as host"
            );
            None
        }
    };

    let log = AuditLog::open(config.audit.log.clone()).with_context(|| {
        format!(
            "cannot open the audit log {} (audit.log / --audit-log)",
            config.audit.log
        )
    })?;
    let stats = Arc::new(AuditStats::default());
    let pids_reading: PidsReading = Arc::default();
    let metrics = Arc::new(
        Metrics::new(
            Sources {
                kernel: kernel.clone(),
                attributor: attributor.clone(),
                pids: pids_reading.clone(),
                audit: stats.clone(),
            },
            &kernel_release(),
        )
        .context("registering the metrics")?,
    );

    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let reopen = Arc::new(Notify::new());
    let (events_tx, events_rx) = mpsc::channel(1024);
    let host_name = host_name();
    let mut tasks = JoinSet::new();

    tasks.spawn(http::serve(listener, metrics, shutdown_rx.clone()));
    tasks.spawn(audit::run(
        log,
        records,
        events_rx,
        reopen.clone(),
        shutdown_rx.clone(),
        AuditContext {
            host_name: host_name.clone(),
            attributor: attributor.clone(),
            stats: stats.clone(),
            pids_changed: Some(pids_changed.clone()),
        },
    ));
    tasks.spawn(
        Poller {
            kernel,
            attributor: attributor.clone(),
            pids_reading,
            pids_mount: layout.pids_mount.clone(),
            moat_parent: config.workloads.moat_parent.clone(),
            docker_parent: config.workloads.docker_parent.clone(),
            interval: Duration::from_millis(config.workloads.poll_interval_ms),
            fork_burst_threshold: config.audit.fork_burst_threshold,
            events: events_tx,
            host_name,
            pids_changed,
        }
        .run(shutdown_rx),
    );

    Ok(Running {
        local_addr,
        shutdown: shutdown_tx,
        reopen,
        tasks,
        attributor,
        stats,
        watcher,
    })
}

/// Reads the pids cgroups and the fork totals every interval.
struct Poller {
    kernel: Arc<dyn KernelSource>,
    attributor: Arc<Mutex<Attributor>>,
    pids_reading: PidsReading,
    pids_mount: Option<std::path::PathBuf>,
    moat_parent: String,
    docker_parent: String,
    interval: Duration,
    fork_burst_threshold: u64,
    events: mpsc::Sender<AuditEvent>,
    host_name: String,
    /// Notified when a workload's `pids.events` changes: poll at once.
    pids_changed: Arc<Notify>,
}

impl Poller {
    async fn run(self, mut shutdown: watch::Receiver<bool>) {
        let this = Arc::new(self);
        let state = Arc::new(Mutex::new((
            HitTracker::default(),
            BurstDetector::new(this.fork_burst_threshold),
        )));
        let mut ticker = tokio::time::interval(this.interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.changed() => break,
                _ = ticker.tick() => {}
                () = this.pids_changed.notified() => {}
            }
            let (this2, state2) = (this.clone(), state.clone());
            let events = tokio::task::spawn_blocking(move || {
                let mut state = state2.lock().unwrap_or_else(|p| p.into_inner());
                let (hits, bursts) = &mut *state;
                this2.poll_once(hits, bursts)
            })
            .await
            .unwrap_or_default();
            for event in events {
                if this.events.send(event).await.is_err() {
                    return;
                }
            }
        }
    }

    /// One reading; returns the audit events it gives rise to.
    fn poll_once(&self, hits: &mut HitTracker, bursts: &mut BurstDetector) -> Vec<AuditEvent> {
        let mut events = Vec::new();
        if let Some(mount) = &self.pids_mount {
            let reading = pids::scan(mount, &self.moat_parent, &self.docker_parent);
            let grown = hits.update(&reading);
            if !grown.is_empty() {
                let mut attributor = self.attributor.lock().unwrap_or_else(|p| p.into_inner());
                for (cgroup, new_hits) in grown {
                    let workload = attributor.admit(&cgroup.workload);
                    events.push(AuditEvent::pids_limit_reached(
                        &self.host_name,
                        &workload,
                        cgroup,
                        new_hits,
                    ));
                }
            }
            *self.pids_reading.lock().unwrap_or_else(|p| p.into_inner()) = reading;
        }

        let now = Instant::now();
        match self.kernel.snapshot() {
            Ok(snapshot) => {
                let mut per_cgroup: std::collections::HashMap<u64, u64> = Default::default();
                for event in &snapshot.process_events {
                    if event.kind.is_fork() {
                        *per_cgroup.entry(event.cgroup_id).or_default() += event.count;
                    }
                }
                let totals: Vec<ForkTotal> = {
                    let mut attributor = self.attributor.lock().unwrap_or_else(|p| p.into_inner());
                    per_cgroup
                        .into_iter()
                        .map(|(cgroup_id, total)| {
                            let attribution = attributor.attribute_id(cgroup_id);
                            ForkTotal {
                                cgroup_id,
                                workload: attribution.workload,
                                path: attribution.cgroup_path,
                                total,
                            }
                        })
                        .collect()
                };
                for burst in bursts.update(&totals, now) {
                    log::info!(
                        "fork burst: workload {} forks {}/s (threshold {}/s)",
                        burst.workload,
                        burst.rate,
                        self.fork_burst_threshold
                    );
                    events.push(AuditEvent::fork_burst(
                        &self.host_name,
                        &burst.workload,
                        burst.path.as_deref().map(str::to_owned),
                        burst.rate,
                        self.fork_burst_threshold,
                    ));
                }
            }
            Err(err) => log::debug!("poll: reading the kernel maps failed: {err}"),
        }
        events
    }
}

/// The running kernel's release (`uname -r`).
pub fn kernel_release() -> String {
    nix::sys::utsname::uname()
        .map(|u| u.release().to_string_lossy().into_owned())
        .unwrap_or_else(|_| "unknown".to_owned())
}

/// The node's host name.
pub fn host_name() -> String {
    nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_else(|| "unknown".to_owned())
}
