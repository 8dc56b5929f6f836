//! `[authz]`: the Docker authorization plugin moatd serves (see
//! [`crate::authz`]).

use std::{fmt, path::PathBuf};

use serde::Deserialize;

/// Where dockerd looks for a plugin named `moat`.
pub const DEFAULT_SOCKET: &str = "/run/docker/plugins/moat.sock";

/// The Docker API socket moatd inspects containers through.
pub const DEFAULT_DOCKER_SOCKET: &str = "/run/docker.sock";

/// The longest path a unix socket address holds (`sun_path` is 108 bytes,
/// NUL included).
const MAX_SOCKET_PATH: usize = 107;

/// What the plugin does with a request the policy denies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AuthzMode {
    /// Deny it.
    Enforce,
    /// Allow it, and record that enforce would have denied it.
    Audit,
}

impl AuthzMode {
    /// `enforce` or `audit`.
    pub fn as_str(self) -> &'static str {
        match self {
            AuthzMode::Enforce => "enforce",
            AuthzMode::Audit => "audit",
        }
    }
}

impl fmt::Display for AuthzMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `[authz]`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthzConfig {
    /// Whether moatd serves the plugin.
    pub enabled: bool,
    /// The plugin's socket; dockerd names the plugin after the file
    /// (`moat.sock` is plugin `moat`).
    pub socket: PathBuf,
    /// The node policy; a missing file means the built-in baseline.
    pub policy: PathBuf,
    /// `enforce` or `audit`.
    pub mode: AuthzMode,
    /// The Docker API socket, for the container inspect at start.
    pub docker_socket: PathBuf,
    /// How long the container inspect at start may take, in milliseconds.
    pub inspect_timeout_ms: u64,
    /// How long one plugin request may take from its first header byte to
    /// its answer, in milliseconds (the inspect included).
    pub request_timeout_ms: u64,
    /// How long a connection may stay idle between requests, in milliseconds.
    pub idle_timeout_ms: u64,
    /// Plugin connections open at once; at the cap a new one closes the
    /// oldest idle one, or waits in the socket's backlog.
    pub max_connections: u32,
    /// Container inspects in progress at once; more starts wait for a slot.
    pub max_inspects: u32,
}

impl Default for AuthzConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            socket: PathBuf::from(DEFAULT_SOCKET),
            policy: PathBuf::from(moat_policy::DEFAULT_POLICY_PATH),
            mode: AuthzMode::Enforce,
            docker_socket: PathBuf::from(DEFAULT_DOCKER_SOCKET),
            inspect_timeout_ms: 5_000,
            request_timeout_ms: 10_000,
            idle_timeout_ms: 30_000,
            max_connections: 256,
            max_inspects: 32,
        }
    }
}

/// The keys of `[authz]`, for suggestions.
pub(super) const KEYS: &[&str] = &[
    "enabled",
    "socket",
    "policy",
    "mode",
    "docker_socket",
    "inspect_timeout_ms",
    "request_timeout_ms",
    "idle_timeout_ms",
    "max_connections",
    "max_inspects",
];

impl AuthzConfig {
    /// The plugin's name, as dockerd knows it: the socket's file name without
    /// `.sock`.
    pub fn plugin_name(&self) -> String {
        self.socket
            .file_name()
            .map(|n| n.to_string_lossy())
            .map(|n| n.strip_suffix(".sock").unwrap_or(&n).to_owned())
            .unwrap_or_default()
    }

    /// Checks what types alone cannot: returns the offending key and why.
    pub(super) fn validate(&self) -> Result<(), (&'static str, String)> {
        let socket = self.socket.to_string_lossy();
        if !self.socket.is_absolute() {
            return Err((
                "authz.socket",
                format!("{socket:?} must be an absolute path"),
            ));
        }
        if socket.len() > MAX_SOCKET_PATH {
            return Err((
                "authz.socket",
                format!(
                    "{socket:?} is {} bytes long; a unix socket path holds at most {MAX_SOCKET_PATH}",
                    socket.len()
                ),
            ));
        }
        let name = self.plugin_name();
        if !socket.ends_with(".sock") || name.is_empty() {
            return Err((
                "authz.socket",
                format!(
                    "{socket:?} must name a file NAME.sock: dockerd finds plugin NAME at \
                     /run/docker/plugins/NAME.sock"
                ),
            ));
        }
        if !self.policy.is_absolute() {
            return Err((
                "authz.policy",
                format!(
                    "{:?} must be an absolute path",
                    self.policy.display().to_string()
                ),
            ));
        }
        let docker = self.docker_socket.to_string_lossy();
        if !self.docker_socket.is_absolute() || docker.len() > MAX_SOCKET_PATH {
            return Err((
                "authz.docker_socket",
                format!("{docker:?} must be an absolute path of at most {MAX_SOCKET_PATH} bytes"),
            ));
        }
        in_range(
            "authz.inspect_timeout_ms",
            self.inspect_timeout_ms,
            100,
            60_000,
        )?;
        in_range(
            "authz.request_timeout_ms",
            self.request_timeout_ms,
            100,
            120_000,
        )?;
        if self.request_timeout_ms <= self.inspect_timeout_ms {
            return Err((
                "authz.request_timeout_ms",
                format!(
                    "{} must be above authz.inspect_timeout_ms ({}): a start waits for its \
                     inspect within the request's time",
                    self.request_timeout_ms, self.inspect_timeout_ms
                ),
            ));
        }
        in_range(
            "authz.idle_timeout_ms",
            self.idle_timeout_ms,
            100,
            3_600_000,
        )?;
        in_range(
            "authz.max_connections",
            u64::from(self.max_connections),
            4,
            65_536,
        )?;
        in_range(
            "authz.max_inspects",
            u64::from(self.max_inspects),
            1,
            u64::from(self.max_connections / 2),
        )
        .map_err(|(key, reason)| {
            (
                key,
                format!(
                    "{reason} (at most half of authz.max_connections: the inspect requests \
                     themselves need connections while their starts wait)"
                ),
            )
        })?;
        Ok(())
    }
}

/// `Ok` when `min <= value <= max`, else the key and why.
fn in_range(
    key: &'static str,
    value: u64,
    min: u64,
    max: u64,
) -> Result<(), (&'static str, String)> {
    if (min..=max).contains(&value) {
        Ok(())
    } else {
        Err((
            key,
            format!("{value} is out of range: expected {min} to {max}"),
        ))
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use crate::config::Config;

    fn parse(text: &str) -> Result<Config, String> {
        Config::parse(text, Path::new("/etc/moat/moatd.toml")).map_err(|e| e.to_string())
    }

    #[test]
    fn the_section_parses_and_names_bad_keys() {
        let c = parse("[authz]\nenabled = true\nmode = \"audit\"\nsocket = \"/run/docker/plugins/moat-x.sock\"\n")
            .unwrap();
        assert!(c.authz.enabled);
        assert_eq!(c.authz.mode, super::AuthzMode::Audit);
        assert_eq!(c.authz.plugin_name(), "moat-x");
        for (text, key, reason) in [
            ("mode = \"enforcing\"", "authz.mode", "unknown variant"),
            ("socket = \"moat.sock\"", "authz.socket", "absolute"),
            (
                "socket = \"/run/docker/plugins/moat\"",
                "authz.socket",
                "NAME.sock",
            ),
            ("policy = \"policy.toml\"", "authz.policy", "absolute"),
            (
                "inspect_timeout_ms = 10",
                "authz.inspect_timeout_ms",
                "out of range",
            ),
            (
                "request_timeout_ms = 2000",
                "authz.request_timeout_ms",
                "above authz.inspect_timeout_ms",
            ),
            ("max_inspects = 200", "authz.max_inspects", "at most half"),
            ("enable = true", "authz.enable", "did you mean `enabled`"),
        ] {
            let err = parse(&format!("[authz]\n{text}\n")).unwrap_err();
            assert!(
                err.contains(&format!("moatd.toml: {key}: ")) && err.contains(reason),
                "{text}: {err}"
            );
        }
        let long = format!("[authz]\nsocket = \"/{}.sock\"\n", "a".repeat(120));
        assert!(parse(&long).unwrap_err().contains("at most 107"));
    }
}
