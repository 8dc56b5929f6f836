//! Every metric family moatd serves, with its help text, type and labels, and
//! the fixed label values. moatd serves exactly [`FAMILIES`] (besides the
//! standard `process_*` metrics); `moat stats`, the dashboards' tests and the
//! agent's tests name series through these constants rather than copies.

/// Whether a family is a counter, a gauge or a histogram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricKind {
    /// Only goes up (reset on restart); named `..._total`.
    Counter,
    /// Goes up and down.
    Gauge,
    /// Observations in cumulative buckets: served as `<name>_bucket{le}`,
    /// `<name>_sum` and `<name>_count`.
    Histogram,
}

/// One metric family.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MetricSpec {
    /// The name, as in the Prometheus text format (counters end in `_total`).
    pub name: &'static str,
    /// The `# HELP` text.
    pub help: &'static str,
    /// Counter or gauge.
    pub kind: MetricKind,
    /// Label names, in the order they are written.
    pub labels: &'static [&'static str],
}

/// `moat_seccomp_denials_total`.
pub const SECCOMP_DENIALS: MetricSpec = MetricSpec {
    name: "moat_seccomp_denials_total",
    help: "Syscalls refused by a seccomp filter, by workload, syscall (name for the caller's architecture, number when unknown), action (errno, trap, kill) and errno (empty for trap and kill).",
    kind: MetricKind::Counter,
    labels: &["workload", "syscall", "action", "errno"],
};
/// `moat_forks_total`.
pub const FORKS: MetricSpec = MetricSpec {
    name: "moat_forks_total",
    help: "New tasks, by workload and kind (process or thread).",
    kind: MetricKind::Counter,
    labels: &["workload", "kind"],
};
/// `moat_execs_total`.
pub const EXECS: MetricSpec = MetricSpec {
    name: "moat_execs_total",
    help: "Successful execve and execveat calls, by workload.",
    kind: MetricKind::Counter,
    labels: &["workload"],
};
/// `moat_exits_total`.
pub const EXITS: MetricSpec = MetricSpec {
    name: "moat_exits_total",
    help: "Processes that ended (last thread exited), by workload.",
    kind: MetricKind::Counter,
    labels: &["workload"],
};
/// `moat_fork_failures_total`.
pub const FORK_FAILURES: MetricSpec = MetricSpec {
    name: "moat_fork_failures_total",
    help: "fork, vfork, clone and clone3 calls that failed, by workload and errno (EAGAIN for a pids limit).",
    kind: MetricKind::Counter,
    labels: &["workload", "errno"],
};
/// `moat_userns_created_total`.
pub const USERNS_CREATED: MetricSpec = MetricSpec {
    name: "moat_userns_created_total",
    help: "User namespaces created (clone, clone3 or unshare with CLONE_NEWUSER), by workload.",
    kind: MetricKind::Counter,
    labels: &["workload"],
};
/// `moat_pids_current`.
pub const PIDS_CURRENT: MetricSpec = MetricSpec {
    name: "moat_pids_current",
    help: "Tasks (threads included) in the workload's pids cgroup.",
    kind: MetricKind::Gauge,
    labels: &["workload"],
};
/// `moat_pids_limit`.
pub const PIDS_LIMIT: MetricSpec = MetricSpec {
    name: "moat_pids_limit",
    help: "pids.max of the workload's pids cgroup; absent when it is max (no limit of its own).",
    kind: MetricKind::Gauge,
    labels: &["workload"],
};
/// `moat_pids_limit_hits_total`.
pub const PIDS_LIMIT_HITS: MetricSpec = MetricSpec {
    name: "moat_pids_limit_hits_total",
    help: "Forks refused by the workload's pids limit (the max count of pids.events), its removed pids cgroups' final counts included.",
    kind: MetricKind::Counter,
    labels: &["workload"],
};
/// `moat_audit_events_total`.
pub const AUDIT_EVENTS: MetricSpec = MetricSpec {
    name: "moat_audit_events_total",
    help: "Audit events whose whole line is in the audit log, by action.",
    kind: MetricKind::Counter,
    labels: &["action"],
};
/// `moat_audit_events_dropped_total`.
pub const AUDIT_EVENTS_DROPPED: MetricSpec = MetricSpec {
    name: "moat_audit_events_dropped_total",
    help: "Audit events not written, each counted once, by reason: rate_limited and buffer_full in the kernel; queue_full, write_failed and log_unavailable in moatd.",
    kind: MetricKind::Counter,
    labels: &["reason"],
};
/// `moat_ebpf_map_full_total`.
pub const EBPF_MAP_FULL: MetricSpec = MetricSpec {
    name: "moat_ebpf_map_full_total",
    help: "Updates of an eBPF map that failed because it was full, by map.",
    kind: MetricKind::Counter,
    labels: &["map"],
};
/// `moat_workload_label_overflow_total`.
pub const WORKLOAD_LABEL_OVERFLOW: MetricSpec = MetricSpec {
    name: "moat_workload_label_overflow_total",
    help: "Workloads labelled \"other\" because the number of workload labels reached its cap.",
    kind: MetricKind::Counter,
    labels: &[],
};
/// `moat_build_info`.
pub const BUILD_INFO: MetricSpec = MetricSpec {
    name: "moat_build_info",
    help: "Always 1; the moatd version and the running kernel's release as labels.",
    kind: MetricKind::Gauge,
    labels: &["version", "kernel"],
};
/// `moat_tracing_mode`.
pub const TRACING_MODE: MetricSpec = MetricSpec {
    name: "moat_tracing_mode",
    help: "Always 1; which seccomp denials this node counts (denials: all = ERRNO, TRAP and KILL; fatal = TRAP and KILL only, no ERRNO, failed forks or user namespaces) and how (mechanism: fexit, pairing, or signal for the fatal tier).",
    kind: MetricKind::Gauge,
    labels: &["denials", "mechanism"],
};
/// `moat_ebpf_pins_info`.
pub const EBPF_PINS_INFO: MetricSpec = MetricSpec {
    name: "moat_ebpf_pins_info",
    help: "Always 1; what moatd found at start in its bpffs pin directory: reused = the programs and maps pinned by an earlier moatd of the same layout were adopted (counters continue), created = none were pinned, replaced = pins of another layout (build, map or ring sizes, tracing settings) were detached and removed first, unpinned = [kernel] keep_pinned is off.",
    kind: MetricKind::Gauge,
    labels: &["state"],
};

/// `moat_http_connections_open`.
pub const HTTP_CONNECTIONS_OPEN: MetricSpec = MetricSpec {
    name: "moat_http_connections_open",
    help: "HTTP connections open to moatd now (at most http.max_connections).",
    kind: MetricKind::Gauge,
    labels: &[],
};
/// `moat_http_connections_rejected_total`.
pub const HTTP_CONNECTIONS_REJECTED: MetricSpec = MetricSpec {
    name: "moat_http_connections_rejected_total",
    help: "HTTP connections moatd refused or closed before their request was answered, by reason (see the reason label's values in moat_api::metrics::http_reject_reason).",
    kind: MetricKind::Counter,
    labels: &["reason"],
};

/// `moat_authz_requests_total`.
pub const AUTHZ_REQUESTS: MetricSpec = MetricSpec {
    name: "moat_authz_requests_total",
    help: "Docker API requests the authorization plugin decided (AuthZReq), by decision (allow, deny, would_deny in audit mode, error: denied, or allowed in audit mode, because the plugin could not judge) and endpoint (a bounded set, other for the rest).",
    kind: MetricKind::Counter,
    labels: &["decision", "endpoint"],
};
/// `moat_authz_request_duration_seconds`.
pub const AUTHZ_REQUEST_DURATION: MetricSpec = MetricSpec {
    name: "moat_authz_request_duration_seconds",
    help: "Time the authorization plugin took to decide an AuthZReq, from its body read to its answer (the container inspect at start included).",
    kind: MetricKind::Histogram,
    labels: &[],
};
/// `moat_authz_policy_reloads_total`.
pub const AUTHZ_POLICY_RELOADS: MetricSpec = MetricSpec {
    name: "moat_authz_policy_reloads_total",
    help:
        "Policy reloads on SIGHUP, by result (success, or failure: the policy in force was kept).",
    kind: MetricKind::Counter,
    labels: &["result"],
};
/// `moat_authz_policy_info`.
pub const AUTHZ_POLICY_INFO: MetricSpec = MetricSpec {
    name: "moat_authz_policy_info",
    help: "Always 1; the authorization plugin's mode (enforce or audit), the policy in force (its file, or baseline) and the SHA-256 of its text as labels.",
    kind: MetricKind::Gauge,
    labels: &["mode", "source", "sha256"],
};

/// Every `moat_*` family, in the order moatd serves them. The `moat_authz_*`
/// families are served when the authorization plugin is enabled.
pub const FAMILIES: [&MetricSpec; 22] = [
    &SECCOMP_DENIALS,
    &FORKS,
    &EXECS,
    &EXITS,
    &FORK_FAILURES,
    &USERNS_CREATED,
    &PIDS_CURRENT,
    &PIDS_LIMIT,
    &PIDS_LIMIT_HITS,
    &AUDIT_EVENTS,
    &AUDIT_EVENTS_DROPPED,
    &EBPF_MAP_FULL,
    &WORKLOAD_LABEL_OVERFLOW,
    &HTTP_CONNECTIONS_OPEN,
    &HTTP_CONNECTIONS_REJECTED,
    &BUILD_INFO,
    &TRACING_MODE,
    &EBPF_PINS_INFO,
    &AUTHZ_REQUESTS,
    &AUTHZ_REQUEST_DURATION,
    &AUTHZ_POLICY_RELOADS,
    &AUTHZ_POLICY_INFO,
];

/// Values of the `workload` label that are not a workload's name.
pub mod workload {
    /// Everything that is not a recognised workload.
    pub const HOST: &str = "host";
    /// Workloads beyond the label cap.
    pub const OTHER: &str = "other";
    /// The prefix of Docker containers' labels (`docker:<12 hex>`).
    pub const DOCKER_PREFIX: &str = "docker:";
}

/// Values of the `action` label of `moat_seccomp_denials_total`.
pub mod denial_action {
    /// `SECCOMP_RET_ERRNO`.
    pub const ERRNO: &str = "errno";
    /// `SECCOMP_RET_TRAP`.
    pub const TRAP: &str = "trap";
    /// `SECCOMP_RET_KILL_THREAD` / `KILL_PROCESS`.
    pub const KILL: &str = "kill";
}

/// Values of the `kind` label of `moat_forks_total`.
pub mod fork_kind {
    /// A new process.
    pub const PROCESS: &str = "process";
    /// A new thread.
    pub const THREAD: &str = "thread";
}

/// Values of the `reason` label of `moat_audit_events_dropped_total`.
pub mod drop_reason {
    /// The kernel's per-cgroup rate limit refused the record.
    pub const RATE_LIMITED: &str = "rate_limited";
    /// The kernel's ring buffer was full.
    pub const BUFFER_FULL: &str = "buffer_full";
    /// moatd's derived events (pids_limit_reached, fork_burst) waited for the
    /// audit writer longer than its queue holds, or the authorization plugin's
    /// events came faster than the writer took them.
    pub const QUEUE_FULL: &str = "queue_full";
    /// Writing the line failed (a full disk, an I/O error); the log holds no
    /// part of it.
    pub const WRITE_FAILED: &str = "write_failed";
    /// There was no audit log to write to: its path cannot be opened, or is not
    /// a regular file of moatd's.
    pub const LOG_UNAVAILABLE: &str = "log_unavailable";
}

/// Every value of the `reason` label of `moat_audit_events_dropped_total`, all
/// present (at 0 until something is dropped).
pub const DROP_REASONS: [&str; 5] = [
    drop_reason::RATE_LIMITED,
    drop_reason::BUFFER_FULL,
    drop_reason::QUEUE_FULL,
    drop_reason::WRITE_FAILED,
    drop_reason::LOG_UNAVAILABLE,
];

/// Values of the `reason` label of `moat_http_connections_rejected_total`.
pub mod http_reject_reason {
    /// A new connection was refused: every connection slot was serving a
    /// request.
    pub const LIMIT: &str = "limit";
    /// An idle connection (waiting for a request) was closed to make room for
    /// a new one at the connection cap.
    pub const EVICTED: &str = "evicted";
    /// A request's headers did not arrive within `http.header_timeout_ms` (of
    /// the connection's start, or of the previous response on a kept-alive
    /// connection).
    pub const HEADER_TIMEOUT: &str = "header_timeout";
    /// A request's headers were larger than `http.max_header_bytes` (answered
    /// 431, then closed).
    pub const HEADER_TOO_LARGE: &str = "header_too_large";
    /// The connection reached `http.connection_timeout_ms` (a request in
    /// progress is finished first, for at most a second).
    pub const CONNECTION_TIMEOUT: &str = "connection_timeout";
    /// `accept(2)` failed (out of descriptors or memory): the connection waits
    /// in the kernel's queue.
    pub const ACCEPT_FAILED: &str = "accept_failed";
}

/// Every value of the `reason` label of `moat_http_connections_rejected_total`,
/// all present (at 0 until it happens).
pub const HTTP_REJECT_REASONS: [&str; 6] = [
    http_reject_reason::LIMIT,
    http_reject_reason::EVICTED,
    http_reject_reason::HEADER_TIMEOUT,
    http_reject_reason::HEADER_TOO_LARGE,
    http_reject_reason::CONNECTION_TIMEOUT,
    http_reject_reason::ACCEPT_FAILED,
];

/// Values of the `decision` label of `moat_authz_requests_total`.
pub mod authz_decision {
    /// Allowed by the policy.
    pub const ALLOW: &str = "allow";
    /// Denied by the policy (mode `enforce`).
    pub const DENY: &str = "deny";
    /// Allowed although the policy denies it (mode `audit`).
    pub const WOULD_DENY: &str = "would_deny";
    /// The plugin could not judge the request (an unreadable plugin request,
    /// a container inspect that failed, a timeout): denied in mode
    /// `enforce`, allowed in mode `audit`.
    pub const ERROR: &str = "error";
    /// Every value, all present (at 0) for every endpoint.
    pub const ALL: [&str; 4] = [ALLOW, DENY, WOULD_DENY, ERROR];
}

/// Values of the `result` label of `moat_authz_policy_reloads_total`.
pub mod authz_reload {
    /// The new policy is in force.
    pub const SUCCESS: &str = "success";
    /// The file did not load; the policy in force was kept.
    pub const FAILURE: &str = "failure";
    /// Both values, present (at 0) from the start.
    pub const ALL: [&str; 2] = [SUCCESS, FAILURE];
}

/// The upper bounds (seconds) of `moat_authz_request_duration_seconds`'
/// buckets (and `+Inf`): decisions take microseconds, a start with its
/// container inspect milliseconds.
pub const AUTHZ_DURATION_BUCKETS: [f64; 14] = [
    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0,
    5.0,
];

/// The series names a family's samples have: the name itself, or for a
/// histogram its `_bucket`, `_sum` and `_count` series.
pub fn sample_names(spec: &MetricSpec) -> Vec<String> {
    match spec.kind {
        MetricKind::Histogram => ["_bucket", "_sum", "_count"]
            .iter()
            .map(|suffix| format!("{}{suffix}", spec.name))
            .collect(),
        MetricKind::Counter | MetricKind::Gauge => vec![spec.name.to_owned()],
    }
}

/// The family named `name`, if moatd serves it.
pub fn family(name: &str) -> Option<&'static MetricSpec> {
    FAMILIES.into_iter().find(|spec| spec.name == name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_counters_end_in_total() {
        for (i, spec) in FAMILIES.iter().enumerate() {
            assert!(spec.name.starts_with("moat_"), "{}", spec.name);
            assert_eq!(
                spec.kind == MetricKind::Counter,
                spec.name.ends_with("_total"),
                "{}",
                spec.name
            );
            assert!(FAMILIES[..i].iter().all(|s| s.name != spec.name));
            assert_eq!(family(spec.name), Some(*spec));
        }
    }
}
