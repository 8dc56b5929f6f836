//! moat's runtime library: the policy model and the mechanisms that apply it
//! to a workload: the seccomp profile engine, capability sets, pids cgroups,
//! user namespaces, the state of running workloads, and the launcher that
//! puts them together for `moat run`.

pub mod caps;
pub mod cgroup;
pub mod errno;
pub mod launch;
pub mod record;
pub mod seccomp;
pub mod state;
pub mod suggest;
pub mod systemd;
mod trust;
pub mod userns;
