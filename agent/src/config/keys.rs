//! Turning serde's messages about unknown keys into errors that name the key and
//! suggest the closest known one.

use std::path::Path;

use super::ConfigError;

/// Turns serde's message for a key into a [`ConfigError::Key`], rewriting unknown
/// fields as `unknown key` with a suggestion.
pub(super) fn key_error(file: &Path, path: &str, message: &str) -> ConfigError {
    if let Some((unknown, expected)) = parse_unknown_field(message) {
        // serde_path_to_error includes the unknown key in the path on some
        // formats and not on others: name it exactly once.
        let parent = path
            .strip_suffix(unknown.as_str())
            .map(|p| p.trim_end_matches('.'))
            .unwrap_or(path);
        let key = match parent {
            "" | "." => unknown.clone(),
            parent => format!("{parent}.{unknown}"),
        };
        let suggestion = moat_runtime::suggest::closest(&unknown, expected.iter().map(|s| &**s))
            .map(str::to_owned)
            .or_else(|| {
                // A key of a section written at the top level, or in the wrong section.
                SECTION_KEYS.iter().find_map(|(section, keys)| {
                    moat_runtime::suggest::closest(&unknown, keys.iter().copied())
                        .map(|key| format!("{key}` in section `[{section}]"))
                })
            });
        let reason = match (suggestion, expected.is_empty()) {
            (Some(best), _) => format!(
                "unknown key; did you mean `{best}`? (known keys here: {})",
                expected.join(", ")
            ),
            (None, false) => format!("unknown key (known keys here: {})", expected.join(", ")),
            (None, true) => "unknown key".to_owned(),
        };
        return ConfigError::Key {
            file: file.to_owned(),
            key,
            reason,
        };
    }
    ConfigError::Key {
        file: file.to_owned(),
        key: if path.is_empty() || path == "." {
            "(top level)".to_owned()
        } else {
            path.to_owned()
        },
        reason: message.to_owned(),
    }
}

/// Every section's keys, to point a key written in the wrong place to its section.
pub(super) const SECTION_KEYS: &[(&str, &[&str])] = &[
    (
        "http",
        &[
            "listen",
            "max_connections",
            "max_header_bytes",
            "header_timeout_ms",
            "connection_timeout_ms",
        ],
    ),
    (
        "audit",
        &["log", "rate_limit", "rate_burst", "fork_burst_threshold"],
    ),
    (
        "workloads",
        &[
            "max_labels",
            "moat_parent",
            "docker_parent",
            "docker_scope_parents",
            "cgroup_root",
            "kubernetes_pod_logs",
            "poll_interval_ms",
        ],
    ),
    (
        "kernel",
        &[
            "ring_buffer_bytes",
            "denial_map_entries",
            "process_map_entries",
            "rate_map_entries",
            "audit_channel_capacity",
            "keep_pinned",
        ],
    ),
    ("authz", super::authz::KEYS),
    ("tracing", &["denials", "mechanism"]),
];

/// Reads serde's `unknown field `x`, expected one of `a`, `b`` (or `expected `a``,
/// or `there are no fields`) into the field and the candidates.
fn parse_unknown_field(message: &str) -> Option<(String, Vec<String>)> {
    let rest = message.strip_prefix("unknown field `")?;
    let end = rest.find('`')?;
    let field = rest[..end].to_owned();
    let tail = &rest[end + 1..];
    let expected = tail
        .split('`')
        .skip(1)
        .step_by(2)
        .map(str::to_owned)
        .collect();
    Some((field, expected))
}

/// 1-based line and column of byte `offset` in `text`.
pub(super) fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, column)
}
