//! Errors of the seccomp profile engine.

use std::path::PathBuf;

/// Where a profile came from, for messages: a file path or the built-in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// A profile read from this file.
    File(PathBuf),
    /// A built-in profile, by name.
    Builtin(&'static str),
    /// Standard input (the path `-`).
    Stdin,
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Source::File(p) => write!(f, "{}", p.display()),
            Source::Builtin(n) => write!(f, "<built-in profile {n}>"),
            Source::Stdin => f.write_str("<standard input>"),
        }
    }
}

/// A profile could not be read or is not valid. Every variant renders as one
/// line naming the file, the field (as a JSON path) and the reason.
#[derive(Debug, thiserror::Error)]
pub enum ProfileError {
    /// The file could not be read.
    #[error("{source_name}: cannot read profile: {error}")]
    Read {
        /// The profile's source.
        source_name: Source,
        /// The underlying I/O error.
        error: std::io::Error,
    },
    /// The path is not a regular file (a FIFO, a device, a directory...).
    #[error("{source_name}: not a regular file ({kind}); a profile must be a regular file, or `-` for standard input")]
    NotRegular {
        /// The profile's source.
        source_name: Source,
        /// What the path is instead.
        kind: &'static str,
    },
    /// The input is larger than moat reads.
    #[error("{source_name}: {}", too_large(*size, *cap))]
    TooLarge {
        /// The profile's source.
        source_name: Source,
        /// The file's size, when known before reading.
        size: Option<u64>,
        /// The limit.
        cap: u64,
    },
    /// The file is not valid JSON.
    #[error("{source_name}: invalid JSON at line {line}, column {column}: {reason}")]
    Json {
        /// The profile's source.
        source_name: Source,
        /// 1-based line of the error.
        line: usize,
        /// 1-based column of the error.
        column: usize,
        /// What the JSON parser saw.
        reason: String,
    },
    /// The JSON is well-formed but a field is wrong.
    #[error("{source_name}: {field}: {reason}")]
    Field {
        /// The profile's source.
        source_name: Source,
        /// JSON path of the offending field, e.g. `syscalls[3].args[0].op`.
        field: String,
        /// Why it is refused.
        reason: String,
    },
}

fn too_large(size: Option<u64>, cap: u64) -> String {
    let mib = cap >> 20;
    match size {
        Some(n) => format!("profile is {n} bytes; the limit is {cap} bytes ({mib} MiB)"),
        None => format!("profile is larger than the limit of {cap} bytes ({mib} MiB)"),
    }
}

/// A profile resolved fine but could not be turned into a kernel filter.
#[derive(Debug, thiserror::Error)]
pub enum CompileError {
    /// libseccomp refused an operation.
    #[error("{source_name}: {field}: libseccomp refused {what}: {error}")]
    Libseccomp {
        /// The profile's source.
        source_name: Source,
        /// JSON path of the rule being compiled (or `defaultAction`).
        field: String,
        /// The operation that failed.
        what: String,
        /// libseccomp's error.
        error: libseccomp::error::SeccompError,
    },
    /// A syscall name is unknown to libseccomp and strict mode is on.
    #[error("{source_name}: {field}: unknown syscall {name:?} (strict mode refuses what Docker would skip)")]
    UnknownSyscall {
        /// The profile's source.
        source_name: Source,
        /// JSON path of the name.
        field: String,
        /// The syscall name.
        name: String,
    },
    /// An architecture or feature this libseccomp does not support.
    #[error("{source_name}: {field}: {reason}")]
    Unsupported {
        /// The profile's source.
        source_name: Source,
        /// JSON path of the field.
        field: String,
        /// What is missing.
        reason: String,
    },
    /// Exporting the program from libseccomp failed.
    #[error("{source_name}: exporting the BPF program failed: {reason}")]
    Export {
        /// The profile's source.
        source_name: Source,
        /// Why.
        reason: String,
    },
}

/// The kernel refused to install a filter.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// `prctl(PR_SET_NO_NEW_PRIVS)` failed.
    #[error("setting no_new_privs failed: {0}")]
    NoNewPrivs(std::io::Error),
    /// `seccomp(SECCOMP_SET_MODE_FILTER)` failed.
    #[error("seccomp(SECCOMP_SET_MODE_FILTER, flags={flags:#x}) failed: {error}")]
    Install {
        /// The filter flags passed.
        flags: u32,
        /// The kernel's error.
        error: std::io::Error,
    },
    /// TSYNC could not synchronise a thread.
    #[error("seccomp TSYNC failed: thread {tid} could not be synchronised")]
    Tsync {
        /// The thread that blocked synchronisation.
        tid: i64,
    },
}
