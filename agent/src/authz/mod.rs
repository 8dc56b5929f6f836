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
use tokio::{sync::watch, task::JoinSet};

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

/// The plugin, serving.
#[derive(Debug)]
pub struct Running {
    shutdown: watch::Sender<bool>,
    tasks: JoinSet<()>,
    forwarder: tokio::task::JoinHandle<()>,
    store: Arc<PolicyStore>,
    stats: Arc<AuthzStats>,
    mode: &'static str,
    socket: PluginSocket,
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
    let listener = socket
        .listener
        .try_clone()
        .and_then(tokio::net::UnixListener::from_std)
        .context("registering the plugin socket")?;
    let (shutdown, shutdown_rx) = watch::channel(false);
    let mut tasks = JoinSet::new();
    tasks.spawn(server::serve(
        listener,
        judge,
        server::Limits {
            max_connections: config.max_connections as usize,
            idle_timeout: Duration::from_millis(config.idle_timeout_ms),
            request_timeout: Duration::from_millis(config.request_timeout_ms),
        },
        shutdown_rx,
    ));
    Ok(Running {
        shutdown,
        tasks,
        forwarder: tokio::spawn(forward),
        store,
        stats,
        mode,
        socket,
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
        while self.tasks.join_next().await.is_some() {}
        drop(self.socket);
        if tokio::time::timeout(AUDIT_DRAIN, &mut self.forwarder)
            .await
            .is_err()
        {
            log::warn!("authorization audit events still queued at exit were dropped");
            self.forwarder.abort();
        }
    }
}
