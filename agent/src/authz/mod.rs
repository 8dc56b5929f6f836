//! The Docker authorization plugin moatd serves (`[authz]` in moatd.toml):
//! dockerd asks it about every API request, and it answers with the node
//! policy's decision (the `moat-policy` crate).
//!
//! - [`policy`]: the policy in force (a missing file is the built-in
//!   baseline; SIGHUP reloads it, and a file that does not load keeps the
//!   old one);
//! - [`socket`], [`systemd`]: the plugin's unix socket, bound by moatd or
//!   passed by systemd (`moatd-authz.socket`);
//! - [`server`]: the HTTP/1.1 server on it, bounded in connections
//!   ([`conns`]), time and size;
//! - [`decide`]: one request decided: the policy on the request, and at a
//!   container start the policy on the configuration the daemon will run
//!   ([`inspect`]), with [`gate`] closing the window between the two;
//! - [`audit`]: the `authz_denied` / `authz_would_deny` audit events.
//!
//! Its decisions leave moatd through [`crate::export`]: the audit writer
//! and the `moat_authz_*` metrics ([`crate::export::metrics::authz`]).

pub mod audit;
pub mod conns;
pub mod decide;
pub mod gate;
pub mod inspect;
pub mod policy;
pub mod server;
pub mod socket;
pub mod systemd;

use std::{path::Path, sync::Arc, time::Duration};

use anyhow::Context as _;
use tokio::sync::watch;

use crate::{
    config::AuthzConfig,
    export::metrics::authz::{AuthzStats, PolicyInfo},
};
use audit::AuditSink;
use decide::Judge;
use policy::{LoadedPolicy, PolicyStore};
use socket::BoundSocket;
use systemd::ListenEnv;

/// How long [`Running::shutdown`] waits for the audit events still queued.
const AUDIT_DRAIN: Duration = Duration::from_secs(1);

/// The plugin's listening socket, before it is served.
#[derive(Debug)]
pub struct PluginSocket {
    listener: std::os::unix::net::UnixListener,
    /// `None` when systemd owns the socket (it stays after moatd exits).
    bound: Option<BoundSocket>,
}

impl PluginSocket {
    /// The socket systemd passed for the plugin (see [`systemd`]), else one
    /// bound at `config.socket` (see [`socket`]).
    pub fn open(config: &AuthzConfig, env: &ListenEnv) -> anyhow::Result<PluginSocket> {
        if let Some(fd) = systemd::plugin_fd(env, std::process::id())? {
            // SAFETY: `fd` is a descriptor systemd passed to this process
            // (LISTEN_PID is ours), and nothing else in moatd takes it.
            let listener = unsafe { systemd::take_listener(fd, &config.socket) }?;
            log::info!(
                "serving the authorization plugin on {} (socket passed by systemd)",
                config.socket.display()
            );
            return Ok(PluginSocket {
                listener,
                bound: None,
            });
        }
        let (listener, bound) = socket::bind(&config.socket)
            .context("cannot serve the authorization plugin (authz.socket)")?;
        Ok(PluginSocket {
            listener,
            bound: Some(bound),
        })
    }

    /// Whether systemd passed it.
    pub fn from_systemd(&self) -> bool {
        self.bound.is_none()
    }
}

/// Loads the policy as the plugin does at start; an error names the file,
/// the key and the reason.
pub fn load_policy(path: &Path) -> Result<LoadedPolicy, moat_policy::PolicyError> {
    policy::load(path)
}

/// What the plugin hands its events and counts to.
#[derive(Debug, Clone)]
pub struct Sinks {
    /// The audit writer's queue.
    pub audit_events: tokio::sync::mpsc::Sender<moat_api::audit::AuditEvent>,
    /// The audit writer's counts (for events dropped before it).
    pub audit_stats: Arc<crate::export::audit_log::AuditStats>,
    /// The node's host name, for the events.
    pub host: String,
}

/// The plugin, serving on its own thread.
#[derive(Debug)]
pub struct Running {
    shutdown: watch::Sender<bool>,
    done: tokio::sync::oneshot::Receiver<()>,
    thread: Option<std::thread::JoinHandle<()>>,
    store: Arc<PolicyStore>,
    stats: Arc<AuthzStats>,
    mode: &'static str,
    socket: Option<PluginSocket>,
}

impl Drop for Running {
    /// Dropped without [`Running::shutdown`]: the thread stops serving (on
    /// its own time) and the socket goes.
    fn drop(&mut self) {
        let _ = self.shutdown.send(true);
    }
}

fn info(mode: &str, loaded: &LoadedPolicy) -> PolicyInfo {
    PolicyInfo {
        mode: mode.to_owned(),
        source: loaded.source.clone(),
        sha256: loaded.sha256.clone(),
    }
}

/// Serves the plugin on `socket` with the policy `loaded` (from
/// `config.policy`), counting in `stats` and auditing through `sinks`.
///
/// The plugin runs on a thread of its own with a single-threaded tokio
/// runtime. dockerd waits for every decision with no timeout, so nothing
/// else in moatd may hold it up: the shared runtime's workers also run the
/// audit writer, whose file writes block (a slow or full disk would stall
/// every Docker API call on the node) and `/metrics`. Here a stuck writer
/// only fills the audit queue (drops are counted). A decision takes tens of
/// microseconds; large request bodies are decoded on this runtime's
/// blocking threads.
pub fn start(
    config: &AuthzConfig,
    socket: PluginSocket,
    loaded: LoadedPolicy,
    stats: Arc<AuthzStats>,
    sinks: Sinks,
) -> anyhow::Result<Running> {
    let mode = config.mode.as_str();
    stats.set_policy(info(mode, &loaded));
    log::info!(
        "authorization plugin {:?} ({mode} mode) on {}: policy {} (sha256 {})",
        config.plugin_name(),
        config.socket.display(),
        loaded.source,
        loaded.sha256
    );
    let store = Arc::new(PolicyStore::new(config.policy.clone(), loaded));
    let (sink, forward) = AuditSink::new(sinks.audit_events, sinks.audit_stats, sinks.host);
    let judge = Arc::new(Judge::new(
        store.clone(),
        config.mode,
        inspect::Inspector::new(
            config.docker_socket.clone(),
            Duration::from_millis(config.inspect_timeout_ms),
        ),
        config.max_inspects as usize,
        stats.clone(),
        sink,
    ));
    let limits = server::Limits {
        max_connections: config.max_connections as usize,
        idle_timeout: Duration::from_millis(config.idle_timeout_ms),
        request_timeout: Duration::from_millis(config.request_timeout_ms),
    };
    let std_listener = socket
        .listener
        .try_clone()
        .context("duplicating the plugin socket")?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .thread_name("moatd-authz")
        .max_blocking_threads(4)
        .build()
        .context("starting the authorization plugin's runtime")?;
    let (shutdown, shutdown_rx) = watch::channel(false);
    let (done_tx, done) = tokio::sync::oneshot::channel();
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let thread = std::thread::Builder::new()
        .name("moatd-authz".into())
        .spawn(move || {
            runtime.block_on(async move {
                let listener = match tokio::net::UnixListener::from_std(std_listener) {
                    Ok(listener) => listener,
                    Err(err) => {
                        let _ = ready_tx.send(Err(err));
                        return;
                    }
                };
                let _ = ready_tx.send(Ok(()));
                let forwarder = tokio::spawn(forward);
                server::serve(listener, judge, limits, shutdown_rx).await;
                // The judge (and its audit sink) is gone with the server:
                // the forwarder hands what is queued to the writer and ends.
                if tokio::time::timeout(AUDIT_DRAIN, forwarder).await.is_err() {
                    log::warn!("authorization audit events still queued at exit were dropped");
                }
            });
            // Decodes still running on the blocking threads are bounded in
            // size; past this they are left to finish on their own.
            runtime.shutdown_timeout(Duration::from_millis(500));
            let _ = done_tx.send(());
        })
        .context("starting the authorization plugin's thread")?;
    ready_rx
        .recv()
        .context("the authorization plugin's thread ended at start")?
        .context("registering the plugin socket")?;
    Ok(Running {
        shutdown,
        done,
        thread: Some(thread),
        store,
        stats,
        mode,
        socket: Some(socket),
    })
}

impl Running {
    /// Reloads the policy file (SIGHUP): a policy that loads is in force
    /// from the next request; one that does not is logged and counted, and
    /// the policy in force stays.
    pub fn reload_policy(&self) {
        match self.store.reload() {
            Ok(loaded) => {
                log::info!(
                    "authorization policy reloaded: {} (sha256 {})",
                    loaded.source,
                    loaded.sha256
                );
                self.stats.set_policy(info(self.mode, &loaded));
                self.stats.reloaded(true);
            }
            Err(err) => {
                let current = self.store.current();
                log::error!(
                    "authorization policy not reloaded, {} (sha256 {}) stays in force: {err}",
                    current.source,
                    current.sha256
                );
                self.stats.reloaded(false);
            }
        }
    }

    /// The policy in force.
    pub fn policy(&self) -> Arc<LoadedPolicy> {
        self.store.current()
    }

    /// Stops serving (open requests get a second to finish), removes the
    /// socket moatd bound (a socket systemd passed stays, and requests
    /// wait in it for the next moatd), and hands the queued audit events to
    /// the writer.
    pub async fn shutdown(mut self) {
        let _ = self.shutdown.send(true);
        // Serving drains for a second, the audit queue for another.
        let bound = AUDIT_DRAIN + Duration::from_secs(2);
        if tokio::time::timeout(bound, &mut self.done).await.is_ok() {
            if let Some(thread) = self.thread.take() {
                let _ = thread.join();
            }
        } else {
            log::warn!("the authorization plugin's thread did not stop within {bound:?}");
        }
        drop(self.socket.take());
    }
}
