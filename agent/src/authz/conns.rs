//! The plugin server's open connections, so that at the connection cap an
//! idle one (waiting for a request, or for the rest of a request's
//! headers) makes room for a new one: whoever holds connections open
//! without sending requests cannot keep dockerd out. A connection inside a
//! request is never evicted; the request's own time bound ends it.

use std::{
    collections::BTreeMap,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex,
    },
};

use tokio::sync::Notify;

/// One connection's state, shared by its task and the registry.
#[derive(Debug, Default)]
pub struct Conn {
    busy: AtomicBool,
    evict: Notify,
}

impl Conn {
    /// A request started (its headers were read).
    pub fn begin(&self) {
        self.busy.store(true, Ordering::Relaxed);
    }

    /// Its answer is ready: the connection waits for the next request.
    pub fn end(&self) {
        self.busy.store(false, Ordering::Relaxed);
    }

    /// Whether a request is in progress.
    pub fn is_busy(&self) -> bool {
        self.busy.load(Ordering::Relaxed)
    }

    /// Resolves once the registry asks this connection to close.
    pub async fn evicted(&self) {
        self.evict.notified().await;
    }
}

/// The open connections, oldest first.
#[derive(Debug, Default)]
pub struct Registry {
    open: Mutex<BTreeMap<u64, Arc<Conn>>>,
    next: Mutex<u64>,
}

/// A connection's place in the registry, left when dropped.
#[derive(Debug)]
pub struct Entry {
    registry: Arc<Registry>,
    id: u64,
    /// The connection's state.
    pub conn: Arc<Conn>,
}

impl Drop for Entry {
    fn drop(&mut self) {
        self.registry.lock().remove(&self.id);
    }
}

impl Registry {
    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<u64, Arc<Conn>>> {
        self.open.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Registers a new connection.
    pub fn enter(self: &Arc<Self>) -> Entry {
        let id = {
            let mut next = self.next.lock().unwrap_or_else(|p| p.into_inner());
            *next += 1;
            *next
        };
        let conn = Arc::new(Conn::default());
        self.lock().insert(id, conn.clone());
        Entry {
            registry: self.clone(),
            id,
            conn,
        }
    }

    /// Asks the oldest idle connection to close, and forgets it; false when
    /// every connection is inside a request.
    pub fn evict_oldest_idle(&self) -> bool {
        let mut open = self.lock();
        let oldest = open
            .iter()
            .find(|(_, c)| !c.busy.load(Ordering::Relaxed))
            .map(|(id, _)| *id);
        match oldest.and_then(|id| open.remove(&id)) {
            Some(conn) => {
                // A stored permit: seen even if the task is not waiting yet.
                conn.evict.notify_one();
                true
            }
            None => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_oldest_idle_connection_is_evicted_never_a_busy_one() {
        let registry = Arc::new(Registry::default());
        let a = registry.enter();
        let b = registry.enter();
        a.conn.begin();
        assert!(registry.evict_oldest_idle());
        tokio::time::timeout(std::time::Duration::from_secs(1), b.conn.evicted())
            .await
            .expect("b was asked to close");
        assert!(!registry.evict_oldest_idle(), "a is inside a request");
        a.conn.end();
        assert!(registry.evict_oldest_idle());
        drop((a, b));
        assert!(registry.lock().is_empty());
    }
}
