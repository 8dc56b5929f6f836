//! moatd's configuration: a TOML file (default [`DEFAULT_CONFIG_PATH`]) whose every
//! option has a default, overridden by command-line flags.
//!
//! `agent/moatd.example.toml` documents each option; a test checks that it parses
//! and equals [`Config::default`]. A bad file is refused as a whole with one line
//! naming the file, the key and the reason, e.g.
//! `/etc/moat/moatd.toml: audit.rate_limit: invalid type: string "x", expected u32`;
//! unknown keys are refused with a suggestion, since a silently ignored typo
//! leaves an option at its default.

use std::{
    fmt,
    net::SocketAddr,
    os::unix::fs::OpenOptionsExt as _,
    path::{Path, PathBuf},
};

use serde::Deserialize;

mod authz;
mod keys;
mod tracing;

pub use tracing::TracingSection;

#[cfg(test)]
use keys::SECTION_KEYS;
use keys::{key_error, line_column};

use crate::kernel::{config::KernelField, KernelConfig};
pub use authz::{AuthzConfig, AuthzMode};

/// Where moatd looks for its configuration when `--config` is not given. A missing
/// file there means built-in defaults.
pub const DEFAULT_CONFIG_PATH: &str = moat_api::defaults::CONFIG_PATH;

/// Default address of the HTTP server (`/metrics` and the landing page).
pub const DEFAULT_LISTEN: &str = moat_api::defaults::LISTEN;

/// Default audit log.
pub const DEFAULT_AUDIT_LOG: &str = moat_api::defaults::AUDIT_LOG;

/// The largest configuration file read (the example, every option commented,
/// is a few KiB).
pub const MAX_CONFIG_BYTES: u64 = 1 << 20;

/// The most workload labels `workloads.max_labels` may allow: each is a set of
/// series in every scrape, and a cap is what keeps them bounded.
pub const MAX_LABELS: u64 = 100_000;

/// The whole configuration.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// The HTTP server.
    pub http: HttpConfig,
    /// Audit events.
    pub audit: AuditConfig,
    /// How events are attributed to workloads, and the pids cgroups read.
    pub workloads: WorkloadsConfig,
    /// Sizes of the kernel side's maps and buffers.
    pub kernel: KernelSection,
    /// The Docker authorization plugin.
    pub authz: AuthzConfig,
    /// Which seccomp refusals are counted, and how.
    pub tracing: TracingSection,
}

/// `[http]`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    /// Address and port `/metrics` and `/` are served on.
    pub listen: SocketAddr,
    /// Connections open at once. At the cap, a new connection closes the
    /// oldest one that is waiting for a request (or is refused when every one
    /// is being served). Lowered at start to leave descriptors for the rest of
    /// moatd when `RLIMIT_NOFILE` is small.
    pub max_connections: u32,
    /// The largest request head (request line and headers) read, in bytes; a
    /// larger one is answered 431 and the connection closed.
    pub max_header_bytes: u32,
    /// How long a request's head may take to arrive, in milliseconds, from the
    /// connection's start or the end of the previous response: an idle or
    /// trickling connection is closed after it.
    pub header_timeout_ms: u64,
    /// How long a connection may stay open, in milliseconds; a request in
    /// progress then gets at most one more second.
    pub connection_timeout_ms: u64,
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            listen: DEFAULT_LISTEN.parse().expect("valid default address"),
            max_connections: 256,
            max_header_bytes: 16 * 1024,
            header_timeout_ms: 5_000,
            connection_timeout_ms: 60_000,
        }
    }
}

/// Where audit events are written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuditTarget {
    /// Standard output (`-`).
    Stdout,
    /// A file, appended to and reopened on SIGHUP.
    File(PathBuf),
}

impl AuditTarget {
    /// Parses `-` as stdout and anything else as a path.
    pub fn parse(text: &str) -> Self {
        if text == "-" {
            AuditTarget::Stdout
        } else {
            AuditTarget::File(PathBuf::from(text))
        }
    }
}

impl fmt::Display for AuditTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AuditTarget::Stdout => f.write_str("-"),
            AuditTarget::File(path) => write!(f, "{}", path.display()),
        }
    }
}

impl<'de> Deserialize<'de> for AuditTarget {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        if text.is_empty() {
            return Err(serde::de::Error::custom(
                "must not be empty: give a file path, or \"-\" for standard output",
            ));
        }
        Ok(AuditTarget::parse(&text))
    }
}

/// `[audit]`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuditConfig {
    /// The JSON-lines audit log, or `-` for standard output.
    pub log: AuditTarget,
    /// Audit records the kernel delivers per cgroup and second once the burst is
    /// spent; the rest are dropped and counted
    /// (`moat_audit_events_dropped_total{reason="rate_limited"}`). 0 disables the
    /// kernel's audit records.
    pub rate_limit: u32,
    /// Audit records a cgroup may emit at once before `rate_limit` applies.
    pub rate_burst: u32,
    /// Forks per second (processes and threads) above which a workload gets one
    /// `fork_burst` event per burst.
    pub fork_burst_threshold: u64,
}

impl Default for AuditConfig {
    fn default() -> Self {
        Self {
            log: AuditTarget::File(PathBuf::from(DEFAULT_AUDIT_LOG)),
            rate_limit: 100,
            rate_burst: 200,
            fork_burst_threshold: 1000,
        }
    }
}

/// `[workloads]`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WorkloadsConfig {
    /// The most distinct workload label values besides `host` and `other`.
    pub max_labels: usize,
    /// The cgroup under which `moat run` places workloads (its `--cgroup-parent`),
    /// relative to each hierarchy's root.
    pub moat_parent: String,
    /// The cgroup Docker's cgroupfs driver places containers under.
    pub docker_parent: String,
    /// The slices Docker's systemd driver places containers' scopes
    /// (`docker-<id>.scope`) under.
    pub docker_scope_parents: Vec<String>,
    /// Where the cgroup file systems are mounted.
    pub cgroup_root: PathBuf,
    /// The kubelet's pod log folders (`<namespace>_<pod>_<uid>`), which name
    /// the pods whose cgroups it made.
    pub kubernetes_pod_logs: PathBuf,
    /// How often pids cgroups and fork rates are read, in milliseconds.
    pub poll_interval_ms: u64,
}

impl Default for WorkloadsConfig {
    fn default() -> Self {
        Self {
            max_labels: 500,
            moat_parent: moat_api::defaults::CGROUP_PARENT.to_owned(),
            docker_parent: moat_api::defaults::DOCKER_PARENT.to_owned(),
            docker_scope_parents: vec![moat_api::defaults::DOCKER_SCOPE_PARENT.to_owned()],
            cgroup_root: PathBuf::from("/sys/fs/cgroup"),
            kubernetes_pod_logs: PathBuf::from("/var/log/pods"),
            poll_interval_ms: 1000,
        }
    }
}

/// `[kernel]`: sizes fixed when the programs load.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KernelSection {
    /// Size of the audit ring buffer in bytes (a power of two, a multiple of the
    /// page size).
    pub ring_buffer_bytes: u32,
    /// Distinct (cgroup, arch, syscall, action, errno) denial keys.
    pub denial_map_entries: u32,
    /// Distinct (cgroup, event kind, errno) process-event keys.
    pub process_map_entries: u32,
    /// Cgroups whose audit rate-limit state is remembered.
    pub rate_map_entries: u32,
    /// Audit records queued between the ring buffer reader and the writer.
    pub audit_channel_capacity: usize,
    /// Leave the programs attached and pinned when moatd stops, and adopt them
    /// at the next start (default true); false detaches them at exit.
    pub keep_pinned: bool,
}

impl Default for KernelSection {
    fn default() -> Self {
        let kernel = KernelConfig::default();
        Self {
            ring_buffer_bytes: kernel.ring_buffer_bytes,
            denial_map_entries: kernel.denial_map_entries,
            process_map_entries: kernel.process_map_entries,
            rate_map_entries: kernel.rate_map_entries,
            audit_channel_capacity: kernel.audit_channel_capacity,
            keep_pinned: true,
        }
    }
}

/// A configuration that cannot be used, rendered as `file: key: reason`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read (a missing explicit `--config` among others).
    #[error("{}: {reason}", file.display())]
    Read {
        /// The file.
        file: PathBuf,
        /// Why.
        reason: String,
    },
    /// The file is not valid TOML.
    #[error("{}:{line}:{column}: {reason}", file.display())]
    Syntax {
        /// The file.
        file: PathBuf,
        /// 1-based line of the error.
        line: usize,
        /// 1-based column.
        column: usize,
        /// What the TOML parser said.
        reason: String,
    },
    /// A key has a value of the wrong type or an invalid value, or is unknown.
    #[error("{}: {key}: {reason}", file.display())]
    Key {
        /// The file (or `--flag` for a command-line override).
        file: PathBuf,
        /// Dotted key, e.g. `audit.rate_limit`.
        key: String,
        /// Why.
        reason: String,
    },
}

impl Config {
    /// Loads the configuration.
    ///
    /// With `explicit` (`--config`), that file must exist. Without it,
    /// [`DEFAULT_CONFIG_PATH`] is read if it exists, and a missing file means
    /// defaults.
    pub fn load(explicit: Option<&Path>) -> Result<Config, ConfigError> {
        match explicit {
            Some(path) => Self::load_file(path),
            None => {
                let path = Path::new(DEFAULT_CONFIG_PATH);
                match std::fs::metadata(path) {
                    Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(Config::default()),
                    _ => Self::load_file(path),
                }
            }
        }
    }

    /// Reads and parses one file.
    ///
    /// Only a regular file of at most [`MAX_CONFIG_BYTES`] is read: a FIFO would
    /// block the start, and `/dev/zero` would never end.
    pub fn load_file(path: &Path) -> Result<Config, ConfigError> {
        use std::io::Read as _;
        let refuse = |reason: String| ConfigError::Read {
            file: path.to_owned(),
            reason,
        };
        let file = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
            .open(path)
            .map_err(|err| {
                refuse(if err.kind() == std::io::ErrorKind::NotFound {
                    "no such file".to_owned()
                } else {
                    format!("cannot read: {err}")
                })
            })?;
        let meta = file
            .metadata()
            .map_err(|err| refuse(format!("cannot read: {err}")))?;
        if !meta.is_file() {
            return Err(refuse("not a regular file".to_owned()));
        }
        let mut data = Vec::new();
        file.take(MAX_CONFIG_BYTES + 1)
            .read_to_end(&mut data)
            .map_err(|err| refuse(format!("cannot read: {err}")))?;
        if data.len() as u64 > MAX_CONFIG_BYTES {
            return Err(refuse(format!(
                "larger than {MAX_CONFIG_BYTES} bytes: not a moatd configuration"
            )));
        }
        let text = String::from_utf8(data).map_err(|_| refuse("not UTF-8 text".to_owned()))?;
        Self::parse(&text, path)
    }

    /// Parses the text of a configuration file; `file` only names it in errors.
    pub fn parse(text: &str, file: &Path) -> Result<Config, ConfigError> {
        let deserializer = toml::de::Deserializer::parse(text).map_err(|err| {
            let (line, column) = err
                .span()
                .map(|span| line_column(text, span.start))
                .unwrap_or((1, 1));
            ConfigError::Syntax {
                file: file.to_owned(),
                line,
                column,
                reason: err.message().trim().to_owned(),
            }
        })?;
        let config: Config = serde_path_to_error::deserialize(deserializer).map_err(|err| {
            let path = err.path().to_string();
            let message = err.inner().message().trim().to_owned();
            key_error(file, &path, &message)
        })?;
        config
            .validate()
            .map_err(|(key, reason)| ConfigError::Key {
                file: file.to_owned(),
                key: key.to_owned(),
                reason,
            })?;
        Ok(config)
    }

    /// Checks what types alone cannot: returns the offending key and why.
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        let http = &self.http;
        in_range(
            "http.max_connections",
            u64::from(http.max_connections),
            1,
            1 << 20,
        )?;
        // hyper refuses (panics on) a read buffer below 8 KiB.
        in_range(
            "http.max_header_bytes",
            u64::from(http.max_header_bytes),
            8192,
            1 << 20,
        )?;
        in_range(
            "http.header_timeout_ms",
            http.header_timeout_ms,
            100,
            600_000,
        )?;
        in_range(
            "http.connection_timeout_ms",
            http.connection_timeout_ms,
            1_000,
            86_400_000,
        )?;
        self.authz.validate()?;
        check_cgroup_relative(&self.workloads.moat_parent)
            .map_err(|reason| ("workloads.moat_parent", reason))?;
        check_cgroup_relative(&self.workloads.docker_parent)
            .map_err(|reason| ("workloads.docker_parent", reason))?;
        if self.workloads.docker_scope_parents.len() > 64 {
            return Err((
                "workloads.docker_scope_parents",
                format!(
                    "{} parents: at most 64",
                    self.workloads.docker_scope_parents.len()
                ),
            ));
        }
        for parent in &self.workloads.docker_scope_parents {
            check_cgroup_relative(parent)
                .map_err(|reason| ("workloads.docker_scope_parents", reason))?;
        }
        if !self.workloads.cgroup_root.is_absolute() {
            return Err((
                "workloads.cgroup_root",
                format!(
                    "{:?} must be an absolute path",
                    self.workloads.cgroup_root.display().to_string()
                ),
            ));
        }
        if !self.workloads.kubernetes_pod_logs.is_absolute() {
            return Err((
                "workloads.kubernetes_pod_logs",
                format!(
                    "{:?} must be an absolute path",
                    self.workloads.kubernetes_pod_logs.display().to_string()
                ),
            ));
        }
        if self.workloads.poll_interval_ms < 10 || self.workloads.poll_interval_ms > 60_000 {
            return Err((
                "workloads.poll_interval_ms",
                format!(
                    "{} is out of range: expected 10 to 60000",
                    self.workloads.poll_interval_ms
                ),
            ));
        }
        in_range(
            "workloads.max_labels",
            self.workloads.max_labels as u64,
            1,
            MAX_LABELS,
        )?;
        if self.audit.fork_burst_threshold == 0 {
            return Err((
                "audit.fork_burst_threshold",
                "must be at least 1 fork per second".to_owned(),
            ));
        }
        if let Err(err) = self.kernel_config().validate() {
            let key = match err.field {
                KernelField::AuditRatePerSec => "audit.rate_limit",
                KernelField::AuditBurst => "audit.rate_burst",
                KernelField::RingBufferBytes => "kernel.ring_buffer_bytes",
                KernelField::DenialMapEntries => "kernel.denial_map_entries",
                KernelField::ProcessMapEntries => "kernel.process_map_entries",
                KernelField::RateMapEntries => "kernel.rate_map_entries",
                KernelField::AuditChannelCapacity => "kernel.audit_channel_capacity",
                KernelField::Mechanism => "tracing.mechanism",
            };
            return Err((key, format!("{}: {}", err.value, err.reason)));
        }
        Ok(())
    }

    /// The kernel side's settings.
    pub fn kernel_config(&self) -> KernelConfig {
        KernelConfig {
            audit_rate_per_sec: self.audit.rate_limit,
            audit_burst: self.audit.rate_burst,
            ring_buffer_bytes: self.kernel.ring_buffer_bytes,
            denial_map_entries: self.kernel.denial_map_entries,
            process_map_entries: self.kernel.process_map_entries,
            rate_map_entries: self.kernel.rate_map_entries,
            audit_channel_capacity: self.kernel.audit_channel_capacity,
            cgroup_root: self.workloads.cgroup_root.clone(),
            denials: self.tracing.denials,
            mechanism: self.tracing.mechanism,
            record_pin_dir: crate::kernel::config::record_pin_dir_from_env(),
            keep_pinned: self.kernel.keep_pinned,
        }
    }

    /// Applies `--listen`.
    pub fn override_listen(&mut self, listen: SocketAddr) {
        self.http.listen = listen;
    }

    /// Applies `--audit-log`.
    pub fn override_audit_log(&mut self, target: AuditTarget) {
        self.audit.log = target;
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

/// A relative cgroup path such as `moat` or `a/b`: non-empty components of the
/// characters cgroup names may have in labels.
fn check_cgroup_relative(value: &str) -> Result<(), String> {
    if value.starts_with('/') {
        return Err(format!(
            "{value:?} must be relative to each hierarchy's root, e.g. \"moat\""
        ));
    }
    for part in value.split('/') {
        if part.is_empty() || part == "." || part == ".." {
            return Err(format!("{value:?}: empty, `.` or `..` component"));
        }
        if !part
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.@+".contains(&b))
        {
            return Err(format!(
                "{value:?}: component {part:?}: only ASCII letters, digits and - _ . @ + are allowed"
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
