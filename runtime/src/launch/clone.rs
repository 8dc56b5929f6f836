//! `clone3(2)`, so the child is born inside its cgroup (`CLONE_INTO_CGROUP`)
//! and, when asked, in a new user namespace: it never runs an instruction
//! outside its limits.

use std::os::fd::{AsRawFd, BorrowedFd};

/// `CLONE_INTO_CGROUP` (Linux 5.7).
const CLONE_INTO_CGROUP: u64 = 0x2_0000_0000;

/// `struct clone_args` up to `cgroup` (`CLONE_ARGS_SIZE_VER2`), for
/// `clone3(2)`; public so tests that drive the syscall directly share it.
#[repr(C)]
#[derive(Debug, Default)]
#[allow(missing_docs)] // the kernel's field names, documented in clone(2)
pub struct CloneArgs {
    pub flags: u64,
    pub pidfd: u64,
    pub child_tid: u64,
    pub parent_tid: u64,
    pub exit_signal: u64,
    pub stack: u64,
    pub stack_size: u64,
    pub tls: u64,
    pub set_tid: u64,
    pub set_tid_size: u64,
    pub cgroup: u64,
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
