//! `clone3(2)`, so the child is born inside its cgroup (`CLONE_INTO_CGROUP`)
//! and, when asked, in a new user namespace: it never runs an instruction
//! outside its limits.

use std::os::fd::{AsRawFd, BorrowedFd};

/// `CLONE_INTO_CGROUP` (Linux 5.7).
const CLONE_INTO_CGROUP: u64 = 0x2_0000_0000;

#[repr(C)]
#[derive(Default)]
struct CloneArgs {
    flags: u64,
    pidfd: u64,
    child_tid: u64,
    parent_tid: u64,
    exit_signal: u64,
    stack: u64,
    stack_size: u64,
    tls: u64,
    set_tid: u64,
    set_tid_size: u64,
    cgroup: u64,
}

/// Which side of the clone we are on.
pub enum Forked {
    /// In the parent, with the child's pid.
    Parent(i32),
    /// In the child.
    Child,
}

/// Forks like `fork(2)` with extra `flags` (e.g. `CLONE_NEWUSER`), placing
/// the child in the cgroup `cgroup` when given.
///
/// # Safety
/// The caller must be single-threaded: like `fork`, the child gets a copy
/// of only the calling thread, and this bypasses libc's fork handlers.
pub unsafe fn clone3(flags: u64, cgroup: Option<BorrowedFd<'_>>) -> std::io::Result<Forked> {
    let mut args = CloneArgs {
        flags,
        exit_signal: libc::SIGCHLD as u64,
        ..Default::default()
    };
    if let Some(fd) = cgroup {
        args.flags |= CLONE_INTO_CGROUP;
        args.cgroup = fd.as_raw_fd() as u64;
    }
    // SAFETY: `args` is a valid clone_args of the size passed; stack 0
    // makes the child continue on a copy of our stack, as fork does.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_clone3,
            &mut args as *mut CloneArgs,
            std::mem::size_of::<CloneArgs>(),
        )
    };
    match rc {
        -1 => Err(std::io::Error::last_os_error()),
        0 => Ok(Forked::Child),
        pid => Ok(Forked::Parent(pid as i32)),
    }
}
