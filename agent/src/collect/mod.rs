//! Collection: turning what the kernel side counts into what moatd reports.
//!
//! - [`attribution`]: which workload a cgroup id or a task belongs to (label
//!   decisions, the label cap, the hierarchy cache, the cgroup watcher).
//! - [`pids`]: the workloads' pids cgroups; [`burst`]: fork bursts.
//! - [`names`]: syscall, errno and architecture names for labels and events.

pub mod attribution;
pub mod burst;
pub mod names;
pub mod pids;
