//! moat's runtime library: the policy model and the mechanisms that apply it
//! to a workload. Today: the seccomp profile engine and capability sets.

pub mod caps;
pub mod errno;
pub mod seccomp;
pub mod suggest;
