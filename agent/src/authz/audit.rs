//! The plugin's audit events (`authz_denied`, `authz_would_deny`), handed to
//! the audit writer without ever making a decision wait for it.

use std::{
    sync::Arc,
    time::{SystemTime, UNIX_EPOCH},
};

use moat_api::{
    audit::{AuditAction, AuditEvent, AuthzFields},
    metrics::workload::DOCKER_PREFIX,
    time::rfc3339_nanos,
};
use tokio::sync::mpsc;

use crate::export::audit_log::AuditStats;

/// Events queued between the plugin and the audit writer's own queue.
const QUEUE: usize = 4096;

/// What one event says about a request.
#[derive(Debug, Clone)]
pub struct Denial<'a> {
    /// `authz_denied` or `authz_would_deny`.
    pub action: AuditAction,
    /// `enforce` or `audit`.
    pub mode: &'a str,
    /// The client certificate's name.
    pub user: &'a str,
    /// The HTTP method.
    pub method: &'a str,
    /// The request URI.
    pub uri: &'a str,
    /// The endpoint's label.
    pub endpoint: &'a str,
    /// The rule.
    pub rule: &'a str,
    /// The message.
    pub message: &'a str,
    /// The inspected container's id.
    pub container: Option<&'a str>,
}

/// Sends the plugin's audit events to the writer.
#[derive(Debug, Clone)]
pub struct AuditSink {
    queue: mpsc::Sender<AuditEvent>,
    stats: Arc<AuditStats>,
    host: String,
}

impl AuditSink {
    /// A sink feeding `writer` (whose drops are counted in `stats`), and the
    /// task that forwards its queue to the writer: it ends once every sink
    /// is dropped and its queue is drained.
    pub fn new(
        writer: mpsc::Sender<AuditEvent>,
        stats: Arc<AuditStats>,
        host: String,
    ) -> (
        AuditSink,
        impl std::future::Future<Output = ()> + Send + 'static,
    ) {
        let (queue, mut rx) = mpsc::channel::<AuditEvent>(QUEUE);
        let forward = async move {
            while let Some(event) = rx.recv().await {
                if writer.send(event).await.is_err() {
                    break;
                }
            }
        };
        (AuditSink { queue, stats, host }, forward)
    }

    /// Queues an event for `denial`; counted as dropped (`queue_full`) when
    /// the queue is full.
    pub fn send(&self, denial: &Denial<'_>) {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as i128);
        let workload = match denial.container {
            Some(id) => format!("{DOCKER_PREFIX}{}", id.get(..12).unwrap_or(id)),
            None => "docker".to_owned(),
        };
        let mut event = AuditEvent::new(
            denial.action,
            rfc3339_nanos(now),
            &self.host,
            &workload,
            None,
        );
        event.authz = Some(AuthzFields {
            mode: denial.mode.to_owned(),
            user: denial.user.to_owned(),
            method: denial.method.to_owned(),
            uri: truncate(denial.uri, AuthzFields::MAX_URI),
            endpoint: denial.endpoint.to_owned(),
            rule: denial.rule.to_owned(),
            message: denial.message.to_owned(),
            container: denial.container.map(str::to_owned),
        });
        if self.queue.try_send(event).is_err() {
            self.stats.count_queue_full();
        }
    }
}

/// `text` cut to at most `max` bytes (at a character boundary), marked
/// with `...` when cut.
fn truncate(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_owned();
    }
    let mut end = max - 3;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &text[..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_uris_are_cut_at_a_character() {
        assert_eq!(truncate("/abc", 10), "/abc");
        assert_eq!(truncate("/abcdefghijk", 8), "/abcd...");
        assert_eq!(truncate("/ééééé", 8), "/éé...");
    }
}
