//! moat's node agent as a library: everything `moatd` does, so that tests and other
//! binaries drive the same code.
//!
//! The data flows one way, and the folders say where each step lives:
//!
//! - [`kernel`]: the eBPF programs: loading and attaching them (a kernel hook), the
//!   map reader (a map read) and the ring-buffer reader.
//! - [`collect`]: the one collector that reads the kernel side and turns cgroup ids
//!   into workloads (a label decision), reads the pids cgroups and detects fork
//!   bursts, and publishes an immutable snapshot.
//! - [`export`]: what leaves moatd: `/metrics` (a metric), the HTTP server and the
//!   audit log (an audit event). Exporters only read what the collector published.
//! - [`authz`]: the Docker authorization plugin (an authorization decision).
//! - [`config`]: moatd's configuration file; [`daemon`]: the wiring of all of it;
//!   [`notify`]: readiness, status and watchdog pings for the service manager.

pub mod authz;
pub mod collect;
pub mod config;
pub mod daemon;
pub mod export;
pub mod kernel;
pub mod notify;
