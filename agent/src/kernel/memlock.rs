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
    let unlimited = libc::rlimit {
        rlim_cur: libc::RLIM_INFINITY,
        rlim_max: libc::RLIM_INFINITY,
    };
    // SAFETY: setrlimit only reads the struct we pass, which lives across the call.
    let ret = unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &unlimited) };
    if ret == 0 {
        log::debug!("raised RLIMIT_MEMLOCK to unlimited");
        true
    } else {
        log::debug!(
            "could not raise RLIMIT_MEMLOCK ({}); continuing, kernels since 5.11 do not need it",
            std::io::Error::last_os_error()
        );
        false
    }
}
