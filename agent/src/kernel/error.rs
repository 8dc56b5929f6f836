//! The agent library's error type.

use aya::{maps::MapError, programs::ProgramError, EbpfError};

/// Shorthand for results whose error is [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What can go wrong while loading, attaching or reading moat's eBPF programs.
///
/// Each variant names the program, map or tracepoint involved, so that a log line
/// says what failed without a backtrace.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The binary was built with `AYA_BUILD_SKIP`, so it carries no eBPF object.
    #[error(
        "this build embeds no eBPF object (it was built with AYA_BUILD_SKIP); rebuild without it"
    )]
    NoEmbeddedObject,

    /// The kernel or aya refused the eBPF object as a whole (maps, BTF, relocations).
    #[error("loading the embedded eBPF object ({size} bytes) failed")]
    LoadObject {
        /// Size of the embedded object, to tell a truncated build from a refusal.
        size: usize,
        /// What aya reported.
        #[source]
        source: EbpfError,
    },

    /// The bpffs directory for the pins cannot be made or read.
    #[error("creating or reading the eBPF pin directory {} failed", path.display())]
    PinDir {
        /// The directory (`MOAT_BPF_DIR`).
        path: std::path::PathBuf,
        /// What the file system said.
        #[source]
        source: std::io::Error,
    },

    /// The record-only `sys_enter` program cannot be pinned for `moat`.
    #[error("pinning the recording program at {} failed", path.display())]
    PinProgram {
        /// Where it was to be pinned.
        path: std::path::PathBuf,
        /// What aya or the file system said.
        #[source]
        source: std::io::Error,
    },

    /// Another process (a running moatd) holds the pin directory's lock.
    #[error(
        "another moatd is using the pinned eBPF programs in {} (its lock is held); stop it \
         first, or give this one its own directory with MOAT_BPF_DIR",
        path.display()
    )]
    PinsInUse {
        /// The pin directory.
        path: std::path::PathBuf,
    },

    /// Removing or renaming a pin failed.
    #[error("removing or renaming the eBPF pins in {} failed", path.display())]
    Unpin {
        /// The pin or directory.
        path: std::path::PathBuf,
        /// What the file system said.
        #[source]
        source: std::io::Error,
    },

    /// Pinning the link of an attached program failed.
    #[error("pinning the link of eBPF program `{name}` at {} failed", path.display())]
    PinLink {
        /// Name of the program.
        name: &'static str,
        /// The pin's path.
        path: std::path::PathBuf,
        /// What aya reported.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },

    /// A pinned map or link of this layout could not be opened.
    #[error("opening the pinned eBPF object {} failed", path.display())]
    OpenPin {
        /// The pin's path.
        path: std::path::PathBuf,
        /// What aya reported.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },

    /// The object lacks a program the agent expects: the agent and eBPF crate disagree.
    #[error("the eBPF object has no program named `{name}`")]
    MissingProgram {
        /// Name of the program that was looked up.
        name: &'static str,
    },

    /// A program exists but is not of the expected type.
    #[error("eBPF program `{name}` is not a {expected} program")]
    ProgramType {
        /// Name of the program.
        name: &'static str,
        /// The program type the agent expected.
        expected: &'static str,
        /// What aya reported.
        #[source]
        source: ProgramError,
    },

    /// The kernel refused to load a program (verifier, permissions, program type).
    #[error("loading eBPF program `{name}` into the kernel failed")]
    LoadProgram {
        /// Name of the program.
        name: &'static str,
        /// What aya reported, including the verifier log when there is one.
        #[source]
        source: ProgramError,
    },

    /// Attaching a loaded program to its hook failed.
    #[error("attaching eBPF program `{name}` to raw tracepoint `{tracepoint}` failed")]
    Attach {
        /// Name of the program.
        name: &'static str,
        /// The raw tracepoint it was attached to.
        tracepoint: &'static str,
        /// What aya reported.
        #[source]
        source: ProgramError,
    },

    /// `mechanism = "fexit"` was asked for and the kernel refused it.
    #[error(
        "[tracing] mechanism = \"fexit\" was asked for, but this kernel refuses moat's fexit \
         programs (on __secure_computing, kernel_clone, schedule_tail, ksys_unshare: \
         BPF_PROG_TYPE_TRACING not allowed, or no BTF for a function); use mechanism = \"auto\" \
         or \"pairing\""
    )]
    FexitUnavailable {
        /// What aya reported for the first program refused.
        #[source]
        source: ProgramError,
    },

    /// The object lacks a map the agent expects.
    #[error("the eBPF object has no map named `{name}`")]
    MissingMap {
        /// Name of the map that was looked up.
        name: &'static str,
    },

    /// A map exists but its type, key or value size is not what the agent expects.
    #[error("eBPF map `{name}` does not have the expected type or layout")]
    MapType {
        /// Name of the map.
        name: &'static str,
        /// What aya reported.
        #[source]
        source: MapError,
    },

    /// Reading a map slot failed.
    #[error("reading slot {index} of eBPF map `{name}` failed")]
    ReadMap {
        /// Name of the map.
        name: &'static str,
        /// The slot that was read.
        index: u32,
        /// What aya reported.
        #[source]
        source: MapError,
    },

    /// The kernel's BTF could not be read, or lacks a field the programs need.
    #[error(transparent)]
    Btf(#[from] crate::kernel::btf::BtfError),

    /// A [`crate::kernel::KernelConfig`] value is out of range.
    #[error("invalid kernel-side setting")]
    InvalidConfig(#[from] crate::kernel::config::InvalidSetting),

    /// A kernel file the loader reads (e.g. `/proc/sys/kernel/pid_max`) is unreadable.
    #[error("reading {path} failed")]
    ReadFile {
        /// The file.
        path: &'static str,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },

    /// Iterating a hash map failed.
    #[error("reading eBPF map `{name}` failed")]
    ReadHashMap {
        /// Name of the map.
        name: &'static str,
        /// What aya reported.
        #[source]
        source: MapError,
    },

    /// The audit ring buffer has already been handed out.
    #[error("the audit ring buffer was already taken (audit_records/audit_reader once per load)")]
    AuditReaderTaken,

    /// The audit reader thread could not be started.
    #[error("starting the audit ring buffer reader thread failed")]
    SpawnReader(#[source] std::io::Error),
}
