//! A forked child that talks with the harness over a pair of pipes: the
//! overhead worker (commands down, durations up) and the storm and
//! many-workload children (a go byte down, their report up) are both one.

use std::fs::File;

/// A forked child, the write end of a pipe to it and the read end of one
/// from it. Dropping it before [`PipedChild::reap`] kills the child.
pub(super) struct PipedChild {
    pid: libc::pid_t,
    /// `None` once closed, which the child reads as end of file.
    pub(super) to: Option<File>,
    pub(super) from: File,
}

impl PipedChild {
    /// Forks a child that runs `body(from_parent, to_parent)` and exits with
    /// what it returns (101 if it panics). The child dies with the harness
    /// (`PR_SET_PDEATHSIG`), so a killed bench leaves no process behind.
    pub(super) fn fork(body: impl FnOnce(File, File) -> i32) -> Result<PipedChild, String> {
        let (down_r, down_w) = nix::unistd::pipe().map_err(|e| format!("pipe: {e}"))?;
        let (up_r, up_w) = nix::unistd::pipe().map_err(|e| format!("pipe: {e}"))?;
        // SAFETY: the child only uses its pipes, runs `body` (which at most
        // allocates, glibc's malloc being fork-safe) and leaves with _exit.
        let pid = unsafe { libc::fork() };
        if pid < 0 {
            return Err(format!("fork: {}", std::io::Error::last_os_error()));
        }
        if pid == 0 {
            drop(down_w);
            drop(up_r);
            // SAFETY: integer arguments.
            unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) };
            let (rd, wr) = (File::from(down_r), File::from(up_w));
            let code = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| body(rd, wr)))
                .unwrap_or(101);
            // SAFETY: leaving the child.
            unsafe { libc::_exit(code) };
        }
        Ok(PipedChild {
            pid,
            to: Some(File::from(down_w)),
            from: File::from(up_r),
        })
    }

    /// The child's pid.
    pub(super) fn pid(&self) -> libc::pid_t {
        self.pid
    }

    /// Closes the pipe to the child and waits for it to exit; its wait
    /// status.
    pub(super) fn reap(&mut self) -> i32 {
        self.to = None;
        let mut status = 0;
        // SAFETY: reaping our own child.
        unsafe { libc::waitpid(self.pid, &mut status, 0) };
        self.pid = 0;
        status
    }
}

impl Drop for PipedChild {
    fn drop(&mut self) {
        if self.pid > 0 {
            // SAFETY: killing and reaping our own child.
            unsafe {
                libc::kill(self.pid, libc::SIGKILL);
                libc::waitpid(self.pid, std::ptr::null_mut(), 0);
            }
        }
    }
}
