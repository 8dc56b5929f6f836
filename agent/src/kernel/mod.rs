//! The kernel side: everything that touches moat's eBPF programs, and nothing that
//! interprets what they count.
//!
//! - [`loader`]: loads the embedded object and attaches its programs to their
//!   hooks ([`Kernel`]); [`params`] resolves what the programs are given at load
//!   time (struct offsets from the kernel's [`btf`], the rate limit, `pid_max`,
//!   the cgroup facts of [`cgroups`]); [`config`] is the load-time settings.
//! - [`maps`]: the map reader, per-CPU counters summed into a [`KernelSnapshot`].
//! - [`ring`]: the ring-buffer reader, audit records decoded into [`AuditRecord`]s.
//! - [`records`]: the plain types the rest of the agent sees of the kernel side, and
//!   the [`KernelSource`] trait tests fake.
//! - [`tracing`]: which refusals are counted (the tier) and how (the
//!   mechanism), as configured and as chosen at load time.
//! - [`pins`]: the programs and maps kept attached across restarts of moatd.
//! - [`mounts`], [`memlock`]: tracefs and bpffs, and the `RLIMIT_MEMLOCK` bump.
//!
//! What the programs count, how, and what they cannot see is described once, in
//! `docs/kernel-side.md` (and in `ebpf/moat-ebpf`, which implements it).
//!
//! Nothing here imports the collector, the exporters or the configuration file's
//! types: the data flows one way, from here to `crate::collect`.

mod attach;
pub mod btf;
pub mod cgroups;
pub mod config;
pub mod error;
pub mod loader;
pub mod maps;
pub mod memlock;
pub mod mounts;
pub mod params;
pub mod pins;
pub mod records;
pub mod ring;
pub mod tracing;

pub use config::KernelConfig;
pub use error::{Error, Result};
pub use loader::{ebpf_object, Kernel};
pub use pins::PinState;
pub use records::{
    AuditKind, AuditRecord, DenialAction, DenialCount, KernelSnapshot, KernelSource,
    ProcessEventCount, ProcessEventKind, RetiredPids,
};
pub use ring::{decode_record, AuditReader};
pub use tracing::{DenialTier, Mechanism, MechanismChoice, TracingMode};
