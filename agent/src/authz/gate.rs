//! Closing the window between the start-time inspect and the start itself.
//!
//! At `containers/{name}/start` moatd inspects container `name` and judges
//! its configuration; dockerd then resolves `name` again when the start
//! handler runs. If `name` meant another container by then, the start would
//! run a container nobody judged. The only requests that change which
//! container a name means, and that the policy allows, are renames
//! (`POST /containers/{id}/rename`): a create can only add a container the
//! policy judged at create, and an update changes what the body check also
//! judges. So starts and renames exclude each other, from their `AuthZReq`
//! until their `AuthZRes` (the handler has run):
//!
//! - a start waits until no rename is pending or running, then holds the
//!   gate (shared with other starts) through its inspect and its handler;
//! - a rename announces itself (new starts wait behind it, so a stream of
//!   starts cannot starve it), waits until no start holds the gate, then
//!   holds it through its handler.
//!
//! Waits are bounded (a request that cannot get the gate in time is
//! denied); a hold whose `AuthZRes` never comes (a plugin after moat in the
//! chain denied the request) expires after [`HOLD_MAX`].

use std::{
    collections::BTreeMap,
    sync::Mutex,
    time::{Duration, Instant},
};

use tokio::sync::Notify;

/// How long a hold lasts without its `AuthZRes`.
pub const HOLD_MAX: Duration = Duration::from_secs(60);

/// Which side of the gate a request is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// `containers/{id}/start` or `/restart`.
    Start,
    /// `containers/{id}/rename`.
    Rename,
}

#[derive(Debug)]
struct Hold {
    side: Side,
    expires: Instant,
    /// Answered with an allow: now waits for its `AuthZRes`.
    allowed: bool,
}

/// The gate (see the module's comment).
#[derive(Debug, Default)]
pub struct Gate {
    holds: Mutex<BTreeMap<u64, Hold>>,
    next_id: Mutex<u64>,
    changed: Notify,
}

/// A hold on the gate; released when dropped unless [`Ticket::allowed`]
/// hands it to the request's `AuthZRes`.
#[derive(Debug)]
pub struct Ticket<'a> {
    gate: &'a Gate,
    id: u64,
    keep: bool,
}

impl Ticket<'_> {
    /// The request was allowed: the hold lasts until its `AuthZRes` (or
    /// [`HOLD_MAX`]).
    pub fn allowed(mut self) {
        if let Some(hold) = self.gate.lock().get_mut(&self.id) {
            hold.allowed = true;
        }
        self.keep = true;
    }
}

impl Drop for Ticket<'_> {
    fn drop(&mut self) {
        if !self.keep {
            self.gate.lock().remove(&self.id);
            self.gate.changed.notify_waiters();
        }
    }
}

impl Gate {
    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<u64, Hold>> {
        self.holds.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn purge(holds: &mut BTreeMap<u64, Hold>, now: Instant) {
        holds.retain(|_, h| h.expires > now);
    }

    /// Waits until `side` may proceed (at most until `deadline`) and holds
    /// the gate; `None` when the deadline passed first.
    pub async fn enter(&self, side: Side, deadline: Instant) -> Option<Ticket<'_>> {
        let id = {
            let mut next = self.next_id.lock().unwrap_or_else(|p| p.into_inner());
            *next += 1;
            *next
        };
        // A rename is visible from the start (it blocks new starts); a
        // start only once it may proceed.
        if side == Side::Rename {
            self.lock().insert(
                id,
                Hold {
                    side,
                    expires: Instant::now() + HOLD_MAX,
                    allowed: false,
                },
            );
        }
        let ticket = Ticket {
            gate: self,
            id,
            keep: false,
        };
        loop {
            let notified = self.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let now = Instant::now();
            let wake = {
                let mut holds = self.lock();
                Self::purge(&mut holds, now);
                let blocking = |h: &Hold| match side {
                    Side::Start => h.side == Side::Rename,
                    Side::Rename => h.side == Side::Start,
                };
                // A rename waits for the starts that held the gate before
                // it announced itself; a start waits for every rename.
                let next_expiry = holds
                    .values()
                    .filter(|h| blocking(h))
                    .map(|h| h.expires)
                    .min();
                match next_expiry {
                    None => {
                        if side == Side::Start {
                            holds.insert(
                                id,
                                Hold {
                                    side,
                                    expires: now + HOLD_MAX,
                                    allowed: false,
                                },
                            );
                        }
                        return Some(ticket);
                    }
                    Some(expiry) => expiry.min(deadline),
                }
            };
            if now >= deadline {
                return None;
            }
            let _ = tokio::time::timeout_at(wake.into(), notified).await;
        }
    }

    /// The `AuthZRes` of an allowed request of `side` arrived: its handler
    /// has run, the oldest such hold ends.
    pub fn finished(&self, side: Side) {
        let mut holds = self.lock();
        Self::purge(&mut holds, Instant::now());
        let oldest = holds
            .iter()
            .find(|(_, h)| h.side == side && h.allowed)
            .map(|(id, _)| *id);
        if let Some(id) = oldest {
            holds.remove(&id);
            drop(holds);
            self.changed.notify_waiters();
        }
    }

    /// Whether any allowed request of `side` waits for its `AuthZRes`.
    pub fn awaits_response(&self, side: Side) -> bool {
        self.lock().values().any(|h| h.side == side && h.allowed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn soon(ms: u64) -> Instant {
        Instant::now() + Duration::from_millis(ms)
    }

    #[tokio::test]
    async fn a_rename_waits_for_a_running_start_and_blocks_new_ones() {
        let gate = Gate::default();
        let start = gate.enter(Side::Start, soon(100)).await.unwrap();
        start.allowed();
        // The start's handler runs: a rename cannot get in.
        assert!(gate.enter(Side::Rename, soon(50)).await.is_none());
        assert!(gate.awaits_response(Side::Start));
        gate.finished(Side::Start);
        let rename = gate.enter(Side::Rename, soon(100)).await.unwrap();
        // While the rename holds the gate, starts wait.
        assert!(gate.enter(Side::Start, soon(50)).await.is_none());
        drop(rename); // denied: released at once
        assert!(gate.enter(Side::Start, soon(50)).await.is_some());
    }

    #[tokio::test]
    async fn a_waiting_start_gets_in_when_the_rename_finishes() {
        let gate = std::sync::Arc::new(Gate::default());
        gate.enter(Side::Rename, soon(100)).await.unwrap().allowed();
        let g = gate.clone();
        let waiter = tokio::spawn(async move { g.enter(Side::Start, soon(2000)).await.is_some() });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!waiter.is_finished());
        gate.finished(Side::Rename);
        assert!(waiter.await.unwrap());
    }

    #[tokio::test]
    async fn starts_share_the_gate() {
        let gate = Gate::default();
        let a = gate.enter(Side::Start, soon(50)).await.unwrap();
        let b = gate.enter(Side::Start, soon(50)).await.unwrap();
        a.allowed();
        b.allowed();
        gate.finished(Side::Start);
        assert!(gate.awaits_response(Side::Start));
        gate.finished(Side::Start);
        assert!(!gate.awaits_response(Side::Start));
    }
}
