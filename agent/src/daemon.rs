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
        attribution::{Attributor, CgroupLayout, CgroupParents},
        Collector, CollectorConfig, CollectorInputs, RunningCollector, Snapshot, SnapshotSource,
    },
    config::Config,
    export::{
        audit_log::{self, AuditLog, AuditStats},
        http::{self, HttpLimits, HttpStats},
        metrics::{authz::AuthzStats, Metrics},
    },
    kernel::{AuditRecord, KernelSource},
    notify::Watchdog,
};

/// How long [`Running::shutdown`] waits for the tasks before abandoning them.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(1);
/// Connections the kernel queues for `accept(2)`: a burst of connections waits
/// there rather than being dropped (std's default is 128; the kernel caps it at
/// `net.core.somaxconn`).
const LISTEN_BACKLOG: i32 = 1024;
/// Audit events queued between the collector and the writer.
const EVENT_QUEUE: usize = 1024;

/// Binds the HTTP listener of `config` (before the programs load).
pub fn bind(config: &Config) -> anyhow::Result<std::net::TcpListener> {
    use socket2::{Domain, Socket, Type};
    let listen = config.http.listen;
    let context = || format!("cannot listen on {listen} (http.listen / --listen)");
    let socket =
        Socket::new(Domain::for_address(listen), Type::STREAM, None).with_context(context)?;
    socket.set_reuse_address(true).with_context(context)?;
    socket.bind(&listen.into()).with_context(context)?;
    socket.listen(LISTEN_BACKLOG).with_context(context)?;
    socket
        .set_nonblocking(true)
        .context("making the listener non-blocking")?;
    Ok(socket.into())
}

/// The soft `RLIMIT_NOFILE`, which the HTTP connection cap must leave room in.
fn nofile_limit() -> u64 {
    nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
        .map(|(soft, _)| soft)
        .unwrap_or(1024)
}

/// The HTTP server's bounds from `config`, the connection cap fitted to the
/// descriptor limit (with a warning when that lowers it).
pub fn http_limits(config: &Config) -> HttpLimits {
    let configured = u64::from(config.http.max_connections);
    let nofile = nofile_limit();
    let cap = http::connection_cap(configured, nofile);
    if cap < configured {
        log::warn!(
            "http.max_connections = {configured} does not fit RLIMIT_NOFILE {nofile} with \
             {} descriptors kept for the rest of moatd: serving at most {cap} connections",
            http::limits::FD_RESERVE
        );
    }
    HttpLimits {
        max_connections: usize::try_from(cap).unwrap_or(usize::MAX),
        max_header_bytes: config.http.max_header_bytes as usize,
        header_timeout: Duration::from_millis(config.http.header_timeout_ms),
        connection_timeout: Duration::from_millis(config.http.connection_timeout_ms),
    }
}

/// The agent's tasks, running.
#[derive(Debug)]
pub struct Running {
    local_addr: SocketAddr,
    shutdown: watch::Sender<bool>,
    reopen: Arc<Notify>,
    tasks: JoinSet<()>,
    /// The audit writer's thread: waited for at most [`SHUTDOWN_GRACE`], and
    /// left behind if its log blocks (the process exits around it).
    writer: Option<std::thread::JoinHandle<()>>,
    collector: Option<RunningCollector>,
    source: SnapshotSource,
    stats: Arc<AuditStats>,
    http_stats: Arc<HttpStats>,
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

    /// The HTTP server's counts.
    pub fn http_stats(&self) -> &Arc<HttpStats> {
        &self.http_stats
    }

    /// Stops serving, writes out queued audit events and waits for the tasks (at
    /// most [`SHUTDOWN_GRACE`]); returns the collector's last snapshot.
    pub async fn shutdown(mut self) -> Arc<Snapshot> {
        let _ = self.shutdown.send(true);
        let deadline = tokio::time::Instant::now() + SHUTDOWN_GRACE;
        if let Some(collector) = self.collector.take() {
            if finished_by(deadline, || collector.is_finished()).await {
                collector.join();
            } else {
                log::warn!(
                    "the collector still runs {SHUTDOWN_GRACE:?} after shutdown; leaving it"
                );
            }
        }
        if let Some(writer) = self.writer.take() {
            if finished_by(deadline, || writer.is_finished()).await {
                let _ = writer.join();
            } else {
                log::warn!(
                    "the audit writer still writes {SHUTDOWN_GRACE:?} after shutdown (its log \
                     blocks?); leaving it"
                );
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
    start_supervised(config, layout, listener, kernel, records, None)
}

/// [`start`], with the service manager's `watchdog` pinged by the collector
/// after each reading of the kernel maps.
pub fn start_supervised(
    config: &Config,
    layout: &CgroupLayout,
    listener: std::net::TcpListener,
    kernel: Arc<dyn KernelSource>,
    records: mpsc::Receiver<AuditRecord>,
    watchdog: Option<Watchdog>,
) -> anyhow::Result<Running> {
    let listener = TcpListener::from_std(listener).context("registering the listener")?;
    let local_addr = listener
        .local_addr()
        .context("reading the listen address")?;

    let log = AuditLog::open(config.audit.log.clone())
        .context("cannot use the audit log (audit.log / --audit-log)")?;
    let stats = Arc::new(AuditStats::default());
    let http_stats = Arc::new(HttpStats::default());
    let metrics = Arc::new(
        Metrics::new(
            stats.clone(),
            http_stats.clone(),
            &kernel_release(),
            kernel.tracing_mode().as_ref(),
            kernel.pin_state().map(|state| state.as_str()),
        )
        .context("registering the metrics")?,
    );

    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let (events_tx, events_rx) = mpsc::channel(EVENT_QUEUE);
    let (source, collector) = Collector::spawn(
        CollectorConfig {
            pids_mount: layout.pids_mount.clone(),
            pids_on_v1: layout
                .pids_mount
                .as_ref()
                .is_some_and(|mount| *mount != layout.v2_mount),
            parents: CgroupParents::from_config(&config.workloads),
            interval: Duration::from_millis(config.workloads.poll_interval_ms),
            fork_burst_threshold: config.audit.fork_burst_threshold,
            host_name: host_name(),
            watchdog,
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
        http_limits(config),
        http_stats.clone(),
        shutdown_rx.clone(),
    ));
    let writer = audit_log::spawn(log, events_rx, reopen.clone(), shutdown_rx, stats.clone())
        .context("starting the audit writer")?;

    Ok(Running {
        local_addr,
        shutdown: shutdown_tx,
        reopen,
        tasks,
        writer: Some(writer),
        collector: Some(collector),
        source,
        stats,
        http_stats,
        events: events_tx,
        metrics,
    })
}

/// How long [`wait_until_served`] tries before it gives up.
const SERVED_TIMEOUT: Duration = Duration::from_secs(30);

/// Waits until `GET /metrics` on `addr` (the loopback address of its family
/// when `addr` is unspecified) answers 200, which it does once the collector
/// has read the kernel maps: moatd reports itself ready only then.
pub async fn wait_until_served(addr: SocketAddr) -> anyhow::Result<()> {
    use moat_api::client::{get, HttpUrl};
    let mut addr = addr;
    if addr.ip().is_unspecified() {
        addr.set_ip(match addr {
            SocketAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
            SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
        });
    }
    let url = HttpUrl::at(addr, "/metrics");
    let shown = format!("http://{addr}/metrics");
    let deadline = tokio::time::Instant::now() + SERVED_TIMEOUT;
    loop {
        let attempt = url.clone();
        let answer = tokio::task::spawn_blocking(move || get(&attempt))
            .await
            .context("the /metrics check panicked")?;
        match answer {
            Ok(_) => return Ok(()),
            Err(err) if tokio::time::Instant::now() >= deadline => {
                return Err(err).with_context(|| format!("GET {shown} for {SERVED_TIMEOUT:?}"));
            }
            Err(err) => log::debug!("GET {shown}: {err}; trying again"),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
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

/// Polls `finished` until it is true or `deadline` passes; returns the last
/// answer. A thread that may never end (a writer stuck in `write(2)`) is
/// polled rather than joined, so that nothing waits for it past the deadline:
/// not even the runtime's blocking pool at exit.
async fn finished_by(deadline: tokio::time::Instant, finished: impl Fn() -> bool) -> bool {
    while !finished() {
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    true
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
