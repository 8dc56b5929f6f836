//! The audit event: one JSON object per line with nested, ECS-style fields, as
//! moatd writes it to its audit log and `moat events` reads it back.
//!
//! A line looks like (wrapped here):
//!
//! ```json
//! {"@timestamp":"2026-05-20T10:11:12.123456789Z",
//!  "event":{"kind":"event","category":["process","intrusion_detection"],"type":["denied"],
//!           "action":"seccomp_denied","outcome":"failure"},
//!  "host":{"name":"node1"},
//!  "process":{"pid":42,"thread":{"id":43},"name":"curl","executable":"/usr/bin/curl"},
//!  "workload":{"name":"build"},"cgroup":{"path":"/moat/build"},
//!  "seccomp":{"syscall":"mount","syscall_nr":165,"arch":"x86_64","action":"errno","errno":"EPERM"}}
//! ```
//!
//! Writing gives exactly that shape (field order, `null`s, absent optional
//! sections). Reading is lenient: every field may be missing (a reader of an
//! older or newer moatd's log shows what it can), and `event.action` may be a
//! value this version does not know.

use serde::{Deserialize, Serialize};

/// The `event.action` values moatd writes, which are also the `action` label
/// values of `moat_audit_events_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AuditAction {
    /// A syscall refused by seccomp.
    SeccompDenied,
    /// A fork-family syscall failed.
    ForkFailed,
    /// A workload's pids limit refused a fork.
    PidsLimitReached,
    /// A workload started forking faster than the threshold.
    ForkBurst,
    /// A user namespace was created.
    UsernsCreated,
    /// The Docker authorization plugin denied a request (mode `enforce`).
    AuthzDenied,
    /// The Docker authorization plugin would have denied a request, and
    /// allowed it (mode `audit`).
    AuthzWouldDeny,
}

impl AuditAction {
    /// Every action, in label order.
    pub const ALL: [AuditAction; 7] = [
        AuditAction::SeccompDenied,
        AuditAction::ForkFailed,
        AuditAction::PidsLimitReached,
        AuditAction::ForkBurst,
        AuditAction::UsernsCreated,
        AuditAction::AuthzDenied,
        AuditAction::AuthzWouldDeny,
    ];

    /// The `event.action` value.
    pub fn as_str(self) -> &'static str {
        match self {
            AuditAction::SeccompDenied => "seccomp_denied",
            AuditAction::ForkFailed => "fork_failed",
            AuditAction::PidsLimitReached => "pids_limit_reached",
            AuditAction::ForkBurst => "fork_burst",
            AuditAction::UsernsCreated => "userns_created",
            AuditAction::AuthzDenied => "authz_denied",
            AuditAction::AuthzWouldDeny => "authz_would_deny",
        }
    }

    /// The action named `text`, if this version knows it.
    pub fn from_name(text: &str) -> Option<AuditAction> {
        AuditAction::ALL.into_iter().find(|a| a.as_str() == text)
    }

    /// Its position in [`AuditAction::ALL`].
    pub fn index(self) -> usize {
        self as usize
    }

    /// `event.category` and `event.type`.
    pub fn classification(self) -> (&'static [&'static str], &'static [&'static str]) {
        match self {
            AuditAction::SeccompDenied => (&["process", "intrusion_detection"], &["denied"]),
            AuditAction::ForkFailed => (&["process"], &["start"]),
            AuditAction::PidsLimitReached => (&["process"], &["denied"]),
            AuditAction::ForkBurst => (&["process"], &["info"]),
            AuditAction::UsernsCreated => (&["process"], &["change"]),
            AuditAction::AuthzDenied => (&["intrusion_detection"], &["denied"]),
            AuditAction::AuthzWouldDeny => (&["intrusion_detection"], &["allowed"]),
        }
    }

    /// `event.outcome`, when the action has one.
    pub fn outcome(self) -> Option<&'static str> {
        match self {
            AuditAction::SeccompDenied
            | AuditAction::ForkFailed
            | AuditAction::PidsLimitReached
            | AuditAction::AuthzDenied => Some("failure"),
            AuditAction::UsernsCreated | AuditAction::AuthzWouldDeny => Some("success"),
            AuditAction::ForkBurst => None,
        }
    }
}

/// One audit event.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct AuditEvent {
    /// RFC 3339 with nanoseconds, UTC (see [`crate::time::rfc3339_nanos`]).
    #[serde(rename = "@timestamp")]
    pub timestamp: String,
    /// `event.*`.
    pub event: EventFields,
    /// `host.*`.
    pub host: HostFields,
    /// `process.*`, for events of one task.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub process: Option<ProcessFields>,
    /// `workload.*`.
    pub workload: WorkloadFields,
    /// `cgroup.*`.
    pub cgroup: CgroupFields,
    /// `seccomp.*`, for `seccomp_denied`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seccomp: Option<SeccompFields>,
    /// `error.*`: the errno of `fork_failed`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorFields>,
    /// `pids.*`, for `pids_limit_reached`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pids: Option<PidsFields>,
    /// `fork_burst.*`, for `fork_burst`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fork_burst: Option<ForkBurstFields>,
    /// `authz.*`, for `authz_denied` and `authz_would_deny`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub authz: Option<AuthzFields>,
}

/// `event.*`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct EventFields {
    /// Always `event`.
    pub kind: String,
    /// ECS categories.
    pub category: Vec<String>,
    /// ECS types.
    #[serde(rename = "type")]
    pub kind_type: Vec<String>,
    /// One of the [`AuditAction`] values (or a newer one).
    pub action: String,
    /// `failure` for refusals, `success` for a namespace created.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub outcome: Option<String>,
}

/// `host.*`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct HostFields {
    /// The node's host name.
    pub name: String,
}

/// `process.*`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct ProcessFields {
    /// Process id (tgid), in the initial pid namespace.
    pub pid: u32,
    /// `process.thread.*`.
    pub thread: ThreadFields,
    /// The task's `comm`.
    pub name: String,
    /// `/proc/<pid>/exe` when it could still be read.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub executable: Option<String>,
}

/// `process.thread.*`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct ThreadFields {
    /// Thread id.
    pub id: u32,
}

/// `workload.*`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct WorkloadFields {
    /// The workload label (as in the metrics).
    pub name: String,
}

/// `cgroup.*`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct CgroupFields {
    /// Path relative to the hierarchy's root, `null` when it could not be resolved.
    pub path: Option<String>,
}

/// `seccomp.*`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct SeccompFields {
    /// Syscall name for the arch, or the number as text.
    pub syscall: String,
    /// Syscall number (x32 numbers keep bit 30).
    pub syscall_nr: i32,
    /// Architecture name (`x86_64`, `x86`, `x32`, ...).
    pub arch: String,
    /// `errno`, `trap` or `kill`.
    pub action: String,
    /// `EPERM` etc. for `errno`, `null` otherwise.
    pub errno: Option<String>,
}

/// `error.*`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct ErrorFields {
    /// The errno name, e.g. `EAGAIN`.
    pub code: String,
}

/// `pids.*`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct PidsFields {
    /// `pids.current` when read.
    pub current: u64,
    /// `pids.max`, `null` for `max`.
    pub limit: Option<u64>,
    /// The `max` count of `pids.events`, in total.
    pub limit_hits: u64,
    /// Hits since the previous reading.
    pub new_hits: u64,
}

/// `fork_burst.*`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct ForkBurstFields {
    /// Forks per second measured.
    pub rate: u64,
    /// The configured threshold.
    pub threshold: u64,
}

/// `authz.*`: one Docker API request the authorization plugin judged.
///
/// Every string comes from the request (the URI as the client sent it, the
/// user's certificate name) or from the policy file: readers print them
/// escaped.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct AuthzFields {
    /// `enforce` or `audit`.
    pub mode: String,
    /// The client certificate's common name; empty on the unix socket.
    pub user: String,
    /// The HTTP method.
    pub method: String,
    /// The request URI as the client sent it (version prefix and query
    /// included), at most [`AuthzFields::MAX_URI`] bytes.
    pub uri: String,
    /// The endpoint's bounded label (`containers/create`, `other`, ...), as in
    /// `moat_authz_requests_total`.
    pub endpoint: String,
    /// The policy rule that denies it, or a rule of the plugin itself
    /// (`request`, `request-uri`, `request-body`, `container-inspect`,
    /// `start-gate`).
    pub rule: String,
    /// The message the client is shown (for `authz_would_deny`, would be).
    pub message: String,
    /// The container the decision is about, when the plugin inspected one
    /// (at `containers/{id}/start` and `/restart`): its full id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub container: Option<String>,
}

impl AuthzFields {
    /// The longest `uri` written; a longer one is cut (at a character
    /// boundary) and ends in `...`.
    pub const MAX_URI: usize = 2048;
}

/// Why a line of an audit log is not an audit event.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LineError {
    /// The line is not JSON at all.
    #[error("invalid JSON ({reason})")]
    Json {
        /// What the JSON parser said.
        reason: String,
    },
    /// The line is JSON, but not an object.
    #[error("not a JSON object")]
    NotObject,
    /// A field has a value of the wrong type.
    #[error("not a moat audit event ({reason})")]
    Shape {
        /// What the deserializer said, with the field.
        reason: String,
    },
    /// The object has no `event.action`.
    #[error("not a moat audit event (no event.action)")]
    NoAction,
}

impl AuditEvent {
    /// An event of `action` with the fields every event has.
    pub fn new(
        action: AuditAction,
        timestamp: String,
        host: &str,
        workload: &str,
        path: Option<String>,
    ) -> Self {
        let (category, kind_type) = action.classification();
        let strings = |list: &[&str]| list.iter().map(|s| (*s).to_owned()).collect();
        AuditEvent {
            timestamp,
            event: EventFields {
                kind: "event".to_owned(),
                category: strings(category),
                kind_type: strings(kind_type),
                action: action.as_str().to_owned(),
                outcome: action.outcome().map(str::to_owned),
            },
            host: HostFields {
                name: host.to_owned(),
            },
            process: None,
            workload: WorkloadFields {
                name: workload.to_owned(),
            },
            cgroup: CgroupFields { path },
            seccomp: None,
            error: None,
            pids: None,
            fork_burst: None,
            authz: None,
        }
    }

    /// The action, if this version knows it.
    pub fn action(&self) -> Option<AuditAction> {
        AuditAction::from_name(&self.event.action)
    }

    /// Reads one line of an audit log (without its newline).
    pub fn parse_line(raw: &[u8]) -> Result<AuditEvent, LineError> {
        let event: AuditEvent = match serde_json::from_slice(raw) {
            Ok(event) => event,
            // Tell the kinds of failure apart for the reader's warning.
            Err(err) => {
                return Err(match serde_json::from_slice::<serde_json::Value>(raw) {
                    Err(err) => LineError::Json {
                        reason: err.to_string(),
                    },
                    Ok(value) if !value.is_object() => LineError::NotObject,
                    Ok(_) => LineError::Shape {
                        reason: err.to_string(),
                    },
                })
            }
        };
        if event.event.action.is_empty() {
            return Err(LineError::NoAction);
        }
        Ok(event)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_the_documented_shape() {
        let mut event = AuditEvent::new(
            AuditAction::SeccompDenied,
            "2026-05-20T10:11:12.123456789Z".to_owned(),
            "node1",
            "build",
            Some("/moat/build".to_owned()),
        );
        event.process = Some(ProcessFields {
            pid: 42,
            thread: ThreadFields { id: 43 },
            name: "curl".to_owned(),
            executable: Some("/usr/bin/curl".to_owned()),
        });
        event.seccomp = Some(SeccompFields {
            syscall: "mount".to_owned(),
            syscall_nr: 165,
            arch: "x86_64".to_owned(),
            action: "errno".to_owned(),
            errno: Some("EPERM".to_owned()),
        });
        let line = serde_json::to_string(&event).unwrap();
        assert_eq!(
            line,
            r#"{"@timestamp":"2026-05-20T10:11:12.123456789Z","event":{"kind":"event","category":["process","intrusion_detection"],"type":["denied"],"action":"seccomp_denied","outcome":"failure"},"host":{"name":"node1"},"process":{"pid":42,"thread":{"id":43},"name":"curl","executable":"/usr/bin/curl"},"workload":{"name":"build"},"cgroup":{"path":"/moat/build"},"seccomp":{"syscall":"mount","syscall_nr":165,"arch":"x86_64","action":"errno","errno":"EPERM"}}"#
        );
        assert_eq!(AuditEvent::parse_line(line.as_bytes()).unwrap(), event);
        assert_eq!(event.action(), Some(AuditAction::SeccompDenied));

        let burst = AuditEvent::new(AuditAction::ForkBurst, String::new(), "n", "w", None);
        let json = serde_json::to_value(&burst).unwrap();
        assert!(json["event"].get("outcome").is_none());
        assert_eq!(json["cgroup"]["path"], serde_json::Value::Null);
    }

    #[test]
    fn reads_leniently_and_names_what_is_wrong() {
        let minimal =
            AuditEvent::parse_line(br#"{"event":{"action":"some_newer_action"}}"#).unwrap();
        assert_eq!(minimal.event.action, "some_newer_action");
        assert_eq!(minimal.action(), None);
        let authz = AuditEvent::parse_line(br#"{"event":{"action":"authz_denied"}}"#).unwrap();
        assert_eq!(authz.action(), Some(AuditAction::AuthzDenied));
        assert!(matches!(
            AuditEvent::parse_line(b"{"),
            Err(LineError::Json { .. })
        ));
        assert_eq!(AuditEvent::parse_line(b"[1]"), Err(LineError::NotObject));
        assert_eq!(
            AuditEvent::parse_line(br#"{"event":{}}"#),
            Err(LineError::NoAction)
        );
        assert!(matches!(
            AuditEvent::parse_line(br#"{"event":{"action":"x"},"pids":{"limit":"many"}}"#),
            Err(LineError::Shape { .. })
        ));
    }

    #[test]
    fn writes_an_authz_denial() {
        let mut event = AuditEvent::new(
            AuditAction::AuthzDenied,
            "2026-05-20T10:11:12.123456789Z".to_owned(),
            "node1",
            "docker",
            None,
        );
        event.authz = Some(AuthzFields {
            mode: "enforce".to_owned(),
            user: String::new(),
            method: "POST".to_owned(),
            uri: "/v1.41/containers/create".to_owned(),
            endpoint: "containers/create".to_owned(),
            rule: "privileged".to_owned(),
            message: "no (HostConfig.Privileged: true)".to_owned(),
            container: None,
        });
        let line = serde_json::to_string(&event).unwrap();
        assert_eq!(
            line,
            r#"{"@timestamp":"2026-05-20T10:11:12.123456789Z","event":{"kind":"event","category":["intrusion_detection"],"type":["denied"],"action":"authz_denied","outcome":"failure"},"host":{"name":"node1"},"workload":{"name":"docker"},"cgroup":{"path":null},"authz":{"mode":"enforce","user":"","method":"POST","uri":"/v1.41/containers/create","endpoint":"containers/create","rule":"privileged","message":"no (HostConfig.Privileged: true)"}}"#
        );
        assert_eq!(AuditEvent::parse_line(line.as_bytes()).unwrap(), event);
    }

    #[test]
    fn actions_round_trip() {
        for action in AuditAction::ALL {
            assert_eq!(AuditAction::from_name(action.as_str()), Some(action));
            assert_eq!(AuditAction::ALL[action.index()], action);
        }
    }
}
