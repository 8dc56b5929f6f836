//! The bounds of the HTTP server: how many connections may be open, which one
//! makes room for a new one at the cap, and the counts of what was refused or
//! cut short (`moat_http_connections_rejected_total`, `moat_http_connections_open`).
//!
//! At the cap a new connection closes the *oldest idle* one (a connection
//! waiting for a request, or for the client to read its response) rather than
//! being refused: a flood of connections that never send a request cannot keep
//! a scraper out, since the scraper's request is read as soon as its connection
//! is polled, long before hundreds of newer connections make it the oldest. Only
//! when every slot is serving a request (at most the time a scrape takes) is a
//! new connection refused.

use std::{
    collections::BTreeMap,
    sync::{
        atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering},
        Arc, Mutex, MutexGuard,
    },
    time::{Duration, Instant},
};

use moat_api::metrics::{http_reject_reason, HTTP_REJECT_REASONS};
use tokio::{sync::Notify, task::AbortHandle};

/// Descriptors kept for everything in moatd besides HTTP connections (the eBPF
/// maps and programs, the audit log, cgroup walks, inotify, the blocking
/// threads' files): the connection cap is lowered so that these are always
/// there.
pub const FD_RESERVE: u64 = 256;

/// The fewest connections moatd serves at once whatever the descriptor limit.
const MIN_CONNECTIONS: u64 = 16;

/// Connections closed (evicted) but whose task has not run its end yet, and so
/// still holds its socket, beyond which the accept loop waits for them: eviction
/// aborts a task, and the runtime drops it (closing the socket) a little later.
pub const CLOSING_SLACK: usize = 16;

/// Why a connection was refused or cut short.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reject {
    /// Every slot was serving a request.
    Limit,
    /// Closed, idle, to make room for a new connection.
    Evicted,
    /// A request head did not arrive in time.
    HeaderTimeout,
    /// A request head was too large.
    HeaderTooLarge,
    /// The connection reached its lifetime bound.
    ConnectionTimeout,
    /// `accept(2)` failed.
    AcceptFailed,
}

impl Reject {
    const ALL: [Reject; 6] = [
        Reject::Limit,
        Reject::Evicted,
        Reject::HeaderTimeout,
        Reject::HeaderTooLarge,
        Reject::ConnectionTimeout,
        Reject::AcceptFailed,
    ];

    /// The `reason` label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Reject::Limit => http_reject_reason::LIMIT,
            Reject::Evicted => http_reject_reason::EVICTED,
            Reject::HeaderTimeout => http_reject_reason::HEADER_TIMEOUT,
            Reject::HeaderTooLarge => http_reject_reason::HEADER_TOO_LARGE,
            Reject::ConnectionTimeout => http_reject_reason::CONNECTION_TIMEOUT,
            Reject::AcceptFailed => http_reject_reason::ACCEPT_FAILED,
        }
    }
}

/// The server's counts, shared with the metrics.
#[derive(Debug, Default)]
pub struct HttpStats {
    rejected: [AtomicU64; HTTP_REJECT_REASONS.len()],
    open: AtomicU64,
}

impl HttpStats {
    /// Counts one connection refused or cut short.
    pub fn reject(&self, why: Reject) {
        self.rejected[why as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// Connections refused or cut short for `why`.
    pub fn rejected(&self, why: Reject) -> u64 {
        self.rejected[why as usize].load(Ordering::Relaxed)
    }

    /// Every reason with its count, in label order.
    pub fn rejected_all(&self) -> impl Iterator<Item = (&'static str, u64)> + '_ {
        Reject::ALL
            .into_iter()
            .map(|r| (r.as_str(), self.rejected(r)))
    }

    /// Connections open now.
    pub fn open(&self) -> u64 {
        self.open.load(Ordering::Relaxed)
    }
}

/// The connection cap for `configured` connections under a descriptor limit of
/// `nofile` (the soft `RLIMIT_NOFILE`): at most `nofile - FD_RESERVE`, at least
/// [`MIN_CONNECTIONS`].
pub fn connection_cap(configured: u64, nofile: u64) -> u64 {
    configured
        .min(nofile.saturating_sub(FD_RESERVE))
        .max(MIN_CONNECTIONS)
}

/// One open connection's slot.
#[derive(Debug)]
struct Entry {
    /// Set while a request is being handled (the service future runs).
    busy: Arc<AtomicBool>,
    /// Aborts the connection's task (which closes its socket).
    abort: Option<AbortHandle>,
}

/// The open connections, oldest first.
#[derive(Debug)]
pub struct Connections {
    max: usize,
    stats: Arc<HttpStats>,
    table: Mutex<Table>,
    /// Connection tasks not yet ended, evicted ones included: each holds a
    /// socket.
    alive: AtomicUsize,
    /// Notified when a connection task ends.
    ended: Notify,
}

#[derive(Debug, Default)]
struct Table {
    next: u64,
    open: BTreeMap<u64, Entry>,
}

/// A connection's place in [`Connections`]: removed when dropped (the task
/// ended, or was aborted).
#[derive(Debug)]
pub struct Slot {
    connections: Arc<Connections>,
    id: u64,
    busy: Arc<AtomicBool>,
}

impl Connections {
    /// At most `max` connections, counted in `stats`.
    pub fn new(max: usize, stats: Arc<HttpStats>) -> Arc<Self> {
        Arc::new(Self {
            max: max.max(1),
            stats,
            table: Mutex::new(Table::default()),
            alive: AtomicUsize::new(0),
            ended: Notify::new(),
        })
    }

    /// Waits while more connection tasks hold sockets than the cap plus
    /// [`CLOSING_SLACK`], so that evictions faster than the runtime drops the
    /// evicted tasks cannot add up to more descriptors.
    pub async fn wait_for_room(&self) {
        loop {
            let ended = self.ended.notified();
            if self.alive.load(Ordering::Acquire) <= self.max + CLOSING_SLACK {
                return;
            }
            ended.await;
        }
    }

    fn lock(&self) -> MutexGuard<'_, Table> {
        self.table.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A slot for a new connection, closing the oldest idle connection if the
    /// cap is reached; `None` (counted as [`Reject::Limit`]) when every open
    /// connection is serving a request.
    pub fn admit(self: &Arc<Self>) -> Option<Slot> {
        let mut table = self.lock();
        if table.open.len() >= self.max {
            let oldest_idle = table
                .open
                .iter()
                .find(|(_, entry)| !entry.busy.load(Ordering::Acquire))
                .map(|(id, _)| *id);
            let Some(id) = oldest_idle else {
                drop(table);
                self.stats.reject(Reject::Limit);
                return None;
            };
            if let Some(entry) = table.open.remove(&id) {
                if let Some(abort) = entry.abort {
                    abort.abort();
                }
            }
            self.stats.reject(Reject::Evicted);
        }
        let id = table.next;
        table.next += 1;
        self.alive.fetch_add(1, Ordering::AcqRel);
        let busy = Arc::new(AtomicBool::new(false));
        table.open.insert(
            id,
            Entry {
                busy: busy.clone(),
                abort: None,
            },
        );
        self.stats
            .open
            .store(table.open.len() as u64, Ordering::Relaxed);
        Some(Slot {
            connections: self.clone(),
            id,
            busy,
        })
    }

    /// Records how to close connection `id` (its task), for eviction. A
    /// connection already gone (its task ended at once) is left alone.
    pub fn set_abort(&self, id: u64, abort: AbortHandle) {
        if let Some(entry) = self.lock().open.get_mut(&id) {
            entry.abort = Some(abort);
        }
    }

    /// Connections open now.
    pub fn len(&self) -> usize {
        self.lock().open.len()
    }

    /// Whether no connection is open.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Slot {
    /// Its key in [`Connections`].
    pub fn id(&self) -> u64 {
        self.id
    }

    /// Marks the connection busy (a request is being handled) until the guard
    /// is dropped, so that it is not evicted meanwhile.
    pub fn busy(&self) -> BusyGuard {
        BusyGuard::enter(self.busy.clone())
    }

    /// The flag [`Slot::busy`] sets, for a service closure to own.
    pub fn busy_flag(&self) -> Arc<AtomicBool> {
        self.busy.clone()
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut table = self.connections.lock();
        table.open.remove(&self.id);
        self.connections
            .stats
            .open
            .store(table.open.len() as u64, Ordering::Relaxed);
        drop(table);
        self.connections.alive.fetch_sub(1, Ordering::AcqRel);
        self.connections.ended.notify_waiters();
    }
}

/// Keeps a connection marked busy while it lives.
#[derive(Debug)]
pub struct BusyGuard(Arc<AtomicBool>);

impl BusyGuard {
    /// Marks `flag` busy until the guard is dropped.
    pub fn enter(flag: Arc<AtomicBool>) -> Self {
        flag.store(true, Ordering::Release);
        Self(flag)
    }
}

impl Drop for BusyGuard {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Release);
    }
}

/// Logs a repeating error at most once per interval, with how many were
/// suppressed since the last line: EMFILE on `accept` would otherwise be logged
/// for every connection waiting in the queue.
#[derive(Debug)]
pub struct RateLimitedLog {
    interval: Duration,
    last: Option<Instant>,
    suppressed: u64,
}

impl RateLimitedLog {
    /// At most one line per `interval`.
    pub fn new(interval: Duration) -> Self {
        Self {
            interval,
            last: None,
            suppressed: 0,
        }
    }

    /// Logs `message` (as a warning) unless one was logged less than the
    /// interval ago; returns whether it was logged.
    pub fn warn(&mut self, message: std::fmt::Arguments<'_>) -> bool {
        let now = Instant::now();
        if self
            .last
            .is_some_and(|last| now.duration_since(last) < self.interval)
        {
            self.suppressed += 1;
            return false;
        }
        if self.suppressed > 0 {
            log::warn!(
                "{message} ({} more like it in the last {:?})",
                self.suppressed,
                self.interval
            );
        } else {
            log::warn!("{message}");
        }
        self.last = Some(now);
        self.suppressed = 0;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cap_leaves_a_reserve_of_descriptors() {
        assert_eq!(connection_cap(256, 20_000), 256);
        assert_eq!(connection_cap(256, 300), 44);
        assert_eq!(connection_cap(256, 100), MIN_CONNECTIONS);
        assert_eq!(
            connection_cap(u64::from(u32::MAX), 1 << 20),
            (1 << 20) - 256
        );
    }

    #[tokio::test]
    async fn at_the_cap_the_oldest_idle_connection_makes_room() {
        let stats = Arc::new(HttpStats::default());
        let connections = Connections::new(2, stats.clone());
        let tasks: Vec<_> = (0..2)
            .map(|_| tokio::spawn(std::future::pending::<()>()))
            .collect();
        let first = connections.admit().unwrap();
        connections.set_abort(first.id(), tasks[0].abort_handle());
        let second = connections.admit().unwrap();
        connections.set_abort(second.id(), tasks[1].abort_handle());
        let _serving = second.busy();
        assert_eq!(stats.open(), 2);

        // The first (idle) one is closed for the third.
        let third = connections.admit().unwrap();
        assert_eq!(stats.rejected(Reject::Evicted), 1);
        assert!(tasks
            .into_iter()
            .next()
            .unwrap()
            .await
            .unwrap_err()
            .is_cancelled());
        drop(first); // its task's end: already gone from the table
        assert_eq!(connections.len(), 2);

        // Both open ones busy: a fourth is refused.
        let _also_serving = third.busy();
        assert!(connections.admit().is_none());
        assert_eq!(stats.rejected(Reject::Limit), 1);
        drop(_also_serving);
        assert!(connections.admit().is_some());
        assert_eq!(stats.rejected(Reject::Evicted), 2);
    }

    #[test]
    fn a_repeating_warning_is_logged_once_per_interval() {
        let mut log = RateLimitedLog::new(Duration::from_secs(60));
        assert!(log.warn(format_args!("accept failed")));
        assert!(!log.warn(format_args!("accept failed")));
        assert_eq!(log.suppressed, 1);
    }
}
