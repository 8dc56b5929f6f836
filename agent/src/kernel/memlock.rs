//! The `RLIMIT_MEMLOCK` bump that kernels before 5.11 need for BPF maps.
//!
//! Since 5.11 BPF memory is charged to the memory cgroup and the limit no longer
//! matters; and without `CAP_SYS_RESOURCE` (as on our build machines) the bump is
//! refused. So it is attempted, and a refusal is only worth a debug line.

/// Tries to lift `RLIMIT_MEMLOCK` to unlimited; returns whether it worked.
///
/// Never fails: a refusal is logged at debug level and loading goes on, since on
/// any kernel from 5.11 on the limit does not apply to BPF.
pub fn raise_memlock_rlimit() -> bool {
    use nix::sys::resource::{setrlimit, Resource, RLIM_INFINITY};
    match setrlimit(Resource::RLIMIT_MEMLOCK, RLIM_INFINITY, RLIM_INFINITY) {
        Ok(()) => {
            log::debug!("raised RLIMIT_MEMLOCK to unlimited");
            true
        }
        Err(err) => {
            log::debug!(
                "could not raise RLIMIT_MEMLOCK ({err}); continuing, kernels since 5.11 do not need it"
            );
            false
        }
    }
}
