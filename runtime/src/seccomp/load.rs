//! Installing a compiled filter into the calling thread (and, with TSYNC,
//! every thread of the process) with `seccomp(2)`.
//!
//! libseccomp's own `seccomp_load` is not used: moat chooses the flags and
//! the moment, and the same path serves profiles compiled elsewhere.

use super::bpf::{Program, SockFilter};
use super::error::LoadError;

const SECCOMP_SET_MODE_FILTER: libc::c_ulong = 1;
const SECCOMP_FILTER_FLAG_TSYNC: u32 = 1;

#[repr(C)]
struct SockFprog {
    len: libc::c_ushort,
    filter: *const SockFilter,
}

/// Sets `no_new_privs`, which an unprivileged caller needs before it may
/// install a filter.
pub fn set_no_new_privs() -> Result<(), LoadError> {
    // SAFETY: prctl with integer arguments only.
    let rc = unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) };
    if rc != 0 {
        return Err(LoadError::NoNewPrivs(std::io::Error::last_os_error()));
    }
    Ok(())
}

/// Installs `program` with `flags` (`SECCOMP_FILTER_FLAG_*` bits).
///
/// Async-signal-safe apart from error construction, so it can run between
/// fork and exec.
pub fn install(program: &Program, flags: u32) -> Result<(), LoadError> {
    let prog = SockFprog {
        len: program.len() as libc::c_ushort,
        filter: program.0.as_ptr(),
    };
    // SAFETY: `prog` points to `len` valid instructions that outlive the
    // call; the kernel copies them.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_seccomp,
            SECCOMP_SET_MODE_FILTER,
            libc::c_ulong::from(flags),
            &prog as *const SockFprog,
        )
    };
    if rc < 0 {
        return Err(LoadError::Install {
            flags,
            error: std::io::Error::last_os_error(),
        });
    }
    if rc > 0 && flags & SECCOMP_FILTER_FLAG_TSYNC != 0 {
        return Err(LoadError::Tsync { tid: rc });
    }
    Ok(())
}
