//! The HTTP server behind `/metrics` and `/`, bounded against hostile clients.
//!
//! - **Connections**: at most [`HttpLimits::max_connections`] open at once
//!   (lowered at start to keep [`limits::FD_RESERVE`] descriptors for the rest
//!   of moatd). At the cap a new connection closes the oldest one waiting for a
//!   request ([`limits::Connections`]), so idle connections can never keep a
//!   scraper out nor exhaust the descriptors.
//! - **Memory**: a request head larger than [`HttpLimits::max_header_bytes`] is
//!   answered 431 and the connection closed (hyper's read buffer never grows past
//!   it), so the server's buffers are bounded by the connection cap times that.
//! - **Time**: a request head must arrive within
//!   [`HttpLimits::header_timeout`] of the connection's start or of the previous
//!   response (idle, trickling and kept-alive connections alike), and a
//!   connection lives at most [`HttpLimits::connection_timeout`] (a request in
//!   progress then gets [`CLOSE_GRACE`] more).
//!
//! Everything refused or cut short is counted by reason ([`HttpStats`], served
//! as `moat_http_connections_rejected_total`); a failing `accept(2)` (EMFILE,
//! ENOMEM) is logged at most once per [`ACCEPT_ERROR_LOG_INTERVAL`].

mod handler;
pub mod limits;

use std::{sync::Arc, time::Duration};

use hyper::{server::conn::http1, service::service_fn};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::{net::TcpListener, sync::watch, task::JoinSet};

pub use self::limits::{connection_cap, HttpStats, Reject};
use self::limits::{BusyGuard, Connections, RateLimitedLog};
use crate::{collect::SnapshotSource, export::metrics::Metrics};

/// How long a request in progress may still take once its connection reached
/// its lifetime bound.
pub const CLOSE_GRACE: Duration = Duration::from_secs(1);

/// The most one `accept(2)` failure is logged.
pub const ACCEPT_ERROR_LOG_INTERVAL: Duration = Duration::from_secs(10);

/// How long the accept loop pauses after `accept(2)` failed (the descriptors or
/// memory it lacked are freed by connections closing meanwhile).
const ACCEPT_RETRY: Duration = Duration::from_millis(50);

/// How often the server checks whether to give freed memory back.
const TRIM_INTERVAL: Duration = Duration::from_secs(5);
/// Connections accepted since the last check above which freed memory is given
/// back: a burst of connections leaves glibc's arenas full of free chunks that
/// it keeps (they are not at the top of a heap), so moatd's RSS would stay at
/// the burst's peak.
const TRIM_AFTER_CONNECTIONS: u64 = 64;

/// Gives the allocator's free memory back to the kernel (`malloc_trim(0)`,
/// which releases free pages anywhere in every arena, not only at the top).
fn release_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only walks and releases the allocator's free chunks.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// The server's bounds (from `[http]`, with the connection cap already fitted
/// to the descriptor limit).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HttpLimits {
    /// Connections open at once.
    pub max_connections: usize,
    /// The largest request head read, in bytes (at least 8192, hyper's minimum).
    pub max_header_bytes: usize,
    /// How long a request head may take.
    pub header_timeout: Duration,
    /// How long a connection may live.
    pub connection_timeout: Duration,
}

/// Serves `metrics` of the snapshots of `source` on `listener`, within
/// `limits`, counting in `stats`, until `shutdown` turns true. Connections open
/// at that moment are closed.
pub async fn serve(
    listener: TcpListener,
    metrics: Arc<Metrics>,
    source: SnapshotSource,
    limits: HttpLimits,
    stats: Arc<HttpStats>,
    mut shutdown: watch::Receiver<bool>,
) {
    let slots = Connections::new(limits.max_connections, stats.clone());
    let mut connections = JoinSet::new();
    let mut accept_errors = RateLimitedLog::new(ACCEPT_ERROR_LOG_INTERVAL);
    let mut trim = tokio::time::interval(TRIM_INTERVAL);
    trim.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut accepted_since_trim = 0u64;
    loop {
        let accepted = tokio::select! {
            _ = shutdown.changed() => break,
            _ = trim.tick() => {
                if accepted_since_trim >= TRIM_AFTER_CONNECTIONS {
                    accepted_since_trim = 0;
                    tokio::task::spawn_blocking(release_free_memory);
                }
                continue;
            }
            accepted = async {
                slots.wait_for_room().await;
                listener.accept().await
            } => accepted,
        };
        // Reap finished connections so the set does not grow.
        while connections.try_join_next().is_some() {}
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(err) => {
                stats.reject(Reject::AcceptFailed);
                accept_errors.warn(format_args!(
                    "accepting an HTTP connection failed: {err} ({} connections open)",
                    slots.len()
                ));
                tokio::time::sleep(ACCEPT_RETRY).await;
                continue;
            }
        };
        accepted_since_trim += 1;
        let Some(slot) = slots.admit() else {
            log::debug!("refusing an HTTP connection from {peer}: every slot is serving");
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let id = slot.id();
        let (metrics, source, stats) = (metrics.clone(), source.clone(), stats.clone());
        let task = connections.spawn(async move {
            serve_connection(
                stream,
                peer,
                slot.busy_flag(),
                limits,
                metrics,
                source,
                &stats,
            )
            .await;
            // After the socket is closed (the connection future is done), so
            // that a slot free means a descriptor free.
            drop(slot);
        });
        slots.set_abort(id, task);
    }
    connections.abort_all();
}

/// Serves one connection within `limits`; `busy` is set while a request is
/// being handled.
async fn serve_connection(
    stream: tokio::net::TcpStream,
    peer: std::net::SocketAddr,
    busy: Arc<std::sync::atomic::AtomicBool>,
    limits: HttpLimits,
    metrics: Arc<Metrics>,
    source: SnapshotSource,
    stats: &HttpStats,
) {
    let service = service_fn(move |request| {
        let (metrics, source, busy) = (metrics.clone(), source.clone(), busy.clone());
        async move {
            let _serving = BusyGuard::enter(busy);
            handler::handle(request, metrics, source).await
        }
    });
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .max_buf_size(limits.max_header_bytes);
    let connection = builder.serve_connection(TokioIo::new(stream), service);
    tokio::pin!(connection);
    let result = tokio::select! {
        result = connection.as_mut() => result,
        () = tokio::time::sleep(limits.connection_timeout) => {
            stats.reject(Reject::ConnectionTimeout);
            connection.as_mut().graceful_shutdown();
            tokio::time::timeout(CLOSE_GRACE, connection.as_mut())
                .await
                .unwrap_or(Ok(()))
        }
    };
    if let Err(err) = result {
        if err.is_timeout() {
            stats.reject(Reject::HeaderTimeout);
        } else if err.is_parse_too_large() {
            stats.reject(Reject::HeaderTooLarge);
        }
        log::debug!("HTTP connection from {peer}: {err}");
    }
}
