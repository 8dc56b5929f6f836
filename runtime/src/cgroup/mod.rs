//! Workload cgroups: a pids limit against fork bombs, and a cgroup v2
//! identity that moat's eBPF programs see as `bpf_get_current_cgroup_id()`.
//!
//! Every workload gets two cgroups, or one when they coincide:
//!
//! - its **pids cgroup** `<pids mount>/<parent>/<name>`, on whichever
//!   hierarchy the pids controller is bound to: a v1 hierarchy of its own on
//!   hybrid hosts (`/sys/fs/cgroup/pids`), the unified hierarchy otherwise;
//! - its **identity cgroup** `<v2 mount>/<parent>/<name>` on the unified
//!   hierarchy. The kernel's cgroup id (what eBPF reports) is always the v2
//!   one, so a workload placed only in a v1 cgroup would be
//!   indistinguishable from the host's root cgroup.
//!
//! When pids is on v2 both are the same directory. All workloads share the
//! parent (`moat` by default), which carries a node-wide cap
//! ([`CgroupConfig::parent_pids_max`]) so that many workloads together cannot
//! exhaust the node's pids either.
//!
//! [`detect`] finds the layout from `/proc/self/mountinfo`;
//! [`WorkloadCgroups`] creates, joins, measures, kills and removes one
//! workload's cgroups. Everything takes its paths from a [`Layout`] and a
//! [`CgroupConfig`], so tests can point it at a fake tree.

mod config;
mod controller;
mod create;
mod delegated;
mod error;
mod fs;
mod kill;
mod layout;
pub mod mountinfo;
mod names;
mod reclaim;
mod scope;
mod v1;
mod v2;
mod workload;

#[cfg(test)]
mod tests;

pub use config::{CgroupConfig, CgroupManager, ParsePidsLimitError, PidsLimit};
pub use delegated::{move_into_leaf, SUPERVISOR_LEAF};
pub use error::{CgroupError, Operation};
pub use kill::KILL_TIMEOUT;
pub use layout::{detect, detect_from, Layout, PidsLocation};
pub use reclaim::{check_recorded_dirs, reclaim};
pub use scope::{check_recorded_scope, remove_empty_scope, scope_dir, scope_in_use, SCOPE_PAYLOAD};
pub use workload::WorkloadCgroups;
