//! The running agent, apart from loading the eBPF programs: the wiring of the
//! collector, the HTTP server and the audit writer over any [`KernelSource`] and
//! stream of [`AuditRecord`]s.
//!
//! ```text
//!  kernel maps ──┐                      ┌──> /metrics (export::http, export::metrics)
//!  ring buffer ──┼─> collect::Collector ┤      reads the published Snapshot
//!  cgroup watch ─┘   (attribution, pids, └──> audit events ──> export::audit_log
//!                     bursts)
//! ```
//!
//! `moatd` (`src/main.rs`) binds the listener first (so scrapes that arrive while the
//! programs load wait in the backlog instead of being refused), loads the programs,
//! then calls [`start`]. Tests call [`start`] with a fake source.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use anyhow::Context as _;
use tokio::{
    net::TcpListener,
    sync::{mpsc, watch, Notify},
    task::JoinSet,
};

use crate::{
    authz,
    collect::{
        attribution::{Attributor, CgroupLayout},
        Collector, CollectorConfig, CollectorInputs, RunningCollector, Snapshot, SnapshotSource,
    },
    config::Config,
    export::{
        audit_log::{self, AuditLog, AuditStats},
        http,
        metrics::{authz::AuthzStats, Metrics},
    },
    kernel::{AuditRecord, KernelSource},
};

/// How long [`Running::shutdown`] waits for the tasks before abandoning them.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(1);
/// Audit events queued between the collector and the writer.
const EVENT_QUEUE: usize = 1024;

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
    collector: Option<RunningCollector>,
    source: SnapshotSource,
    stats: Arc<AuditStats>,
    /// For the authorization plugin: the audit writer's queue and the
    /// registry it adds its metrics to.
    events: mpsc::Sender<moat_api::audit::AuditEvent>,
    metrics: Arc<Metrics>,
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

    /// The last snapshot the collector published.
    pub fn latest(&self) -> Arc<Snapshot> {
        self.source.latest()
    }

    /// The audit counts.
    pub fn audit_stats(&self) -> &Arc<AuditStats> {
        &self.stats
    }

    /// Stops serving, writes out queued audit events and waits for the tasks (at
    /// most [`SHUTDOWN_GRACE`]); returns the collector's last snapshot.
    pub async fn shutdown(mut self) -> Arc<Snapshot> {
        let _ = self.shutdown.send(true);
        if let Some(collector) = self.collector.take() {
            let joined = tokio::task::spawn_blocking(move || collector.join());
            if tokio::time::timeout(SHUTDOWN_GRACE, joined).await.is_err() {
                log::warn!("the collector still runs {SHUTDOWN_GRACE:?} after shutdown");
            }
        }
        let all_done = async { while self.tasks.join_next().await.is_some() {} };
        if tokio::time::timeout(SHUTDOWN_GRACE, all_done)
            .await
            .is_err()
        {
            log::warn!("tasks still running {SHUTDOWN_GRACE:?} after shutdown; abandoning them");
            self.tasks.abort_all();
        }
        self.source.latest()
    }
}

/// Starts collecting, serving and auditing.
///
/// `listener` comes from [`bind`]; `kernel` is read by the collector only;
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

    let log = AuditLog::open(config.audit.log.clone()).with_context(|| {
        format!(
            "cannot open the audit log {} (audit.log / --audit-log)",
            config.audit.log
        )
    })?;
    let stats = Arc::new(AuditStats::default());
    let metrics = Arc::new(
        Metrics::new(stats.clone(), &kernel_release()).context("registering the metrics")?,
    );

    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let (events_tx, events_rx) = mpsc::channel(EVENT_QUEUE);
    let (source, collector) = Collector::spawn(
        CollectorConfig {
            pids_mount: layout.pids_mount.clone(),
            moat_parent: config.workloads.moat_parent.clone(),
            docker_parent: config.workloads.docker_parent.clone(),
            interval: Duration::from_millis(config.workloads.poll_interval_ms),
            fork_burst_threshold: config.audit.fork_burst_threshold,
            host_name: host_name(),
        },
        Attributor::new(layout, &config.workloads),
        CollectorInputs {
            kernel,
            records,
            events: events_tx.clone(),
            shutdown: shutdown_rx.clone(),
        },
    )
    .context("starting the collector")?;

    let reopen = Arc::new(Notify::new());
    let mut tasks = JoinSet::new();
    tasks.spawn(http::serve(
        listener,
        metrics.clone(),
        source.clone(),
        shutdown_rx.clone(),
    ));
    tasks.spawn(audit_log::run(
        log,
        events_rx,
        reopen.clone(),
        shutdown_rx,
        stats.clone(),
    ));

    Ok(Running {
        local_addr,
        shutdown: shutdown_tx,
        reopen,
        tasks,
        collector: Some(collector),
        source,
        stats,
        events: events_tx,
        metrics,
    })
}

/// Starts the authorization plugin on `socket` with the policy `loaded`, its
/// metrics served and its audit events written by `running`. Stop it before
/// `running`, so that its last events are written.
pub fn start_authz(
    config: &Config,
    running: &Running,
    socket: authz::PluginSocket,
    loaded: authz::policy::LoadedPolicy,
) -> anyhow::Result<authz::Running> {
    let stats = Arc::new(AuthzStats::default());
    running
        .metrics
        .register_authz(stats.clone())
        .context("registering the authorization plugin's metrics")?;
    authz::start(
        &config.authz,
        socket,
        loaded,
        stats,
        authz::Sinks {
            audit_events: running.events.clone(),
            audit_stats: running.stats.clone(),
            host: host_name(),
        },
    )
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
