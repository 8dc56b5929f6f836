//! A SIGSYS handler for workloads under a TRAP filter: it counts the signals
//! seccomp raised (`si_code == SYS_SECCOMP`), which the workload reports.

use std::sync::atomic::{AtomicI64, Ordering};

/// `si_code` of a SIGSYS raised by seccomp.
pub const SYS_SECCOMP: i32 = 1;

static SEEN: AtomicI64 = AtomicI64::new(0);

extern "C" fn on_sigsys(_sig: libc::c_int, info: *mut libc::siginfo_t, _ctx: *mut libc::c_void) {
    // SAFETY: the kernel passes a valid siginfo to an SA_SIGINFO handler.
    if unsafe { (*info).si_code } == SYS_SECCOMP {
        SEEN.fetch_add(1, Ordering::SeqCst);
    }
}

/// Installs the handler in the calling process (a forked workload).
pub fn install_handler() {
    // SAFETY: a zeroed sigaction with a valid handler and flags.
    unsafe {
        let mut action: libc::sigaction = std::mem::zeroed();
        action.sa_sigaction = on_sigsys as *const () as usize;
        action.sa_flags = libc::SA_SIGINFO;
        libc::sigemptyset(&mut action.sa_mask);
        assert_eq!(
            libc::sigaction(libc::SIGSYS, &action, std::ptr::null_mut()),
            0
        );
    }
}

/// The SIGSYS signals from seccomp the handler has seen in this process.
pub fn seen() -> i64 {
    SEEN.load(Ordering::SeqCst)
}
