//! The scope's keeper: a small process moat forks to hold the workload's
//! systemd scope open.
//!
//! A scope needs a process to exist, and systemd removes its cgroup the
//! moment the last process leaves it. The keeper is the process the scope
//! is created with, so that the workload's cgroup can be made (and the
//! command born in it, with its limit) before the command exists, and
//! stays until moat has read the workload's counters after its end
//! (`pids.events`, which goes with the cgroup). It sits in the scope's leaf
//! `supervisor`, outside the workload's own cgroup, so it never counts
//! against the workload's pids limit. It closes every descriptor but its
//! pipe, ignores the signals `systemctl stop` and terminals send (moat
//! releases it once the workload is gone), and dies with moat
//! (`PR_SET_PDEATHSIG`).

use std::os::fd::{AsRawFd, OwnedFd};

/// A running keeper; [`Keeper::release`] ends it.
#[derive(Debug)]
pub(super) struct Keeper {
    /// Its pid.
    pub(super) pid: i32,
    /// The write end of its pipe: closing it lets the keeper exit.
    hold: Option<OwnedFd>,
}

impl Keeper {
    /// Forks the keeper. The caller must be single-threaded.
    pub(super) fn spawn() -> std::io::Result<Keeper> {
        let (read, write) =
            nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(std::io::Error::from)?;
        // SAFETY: getpid cannot fail.
        let parent = unsafe { libc::getpid() };
        // SAFETY: moat run is single-threaded here; the child makes only
        // async-signal-safe calls before it exits.
        let pid = unsafe { libc::fork() };
        if pid < 0 {
            return Err(std::io::Error::last_os_error());
        }
        if pid == 0 {
            keep(parent, read.as_raw_fd());
        }
        drop(read);
        Ok(Keeper {
            pid,
            hold: Some(write),
        })
    }

    /// Lets the keeper exit and reaps it (it may have been reaped already
    /// by the supervisor's loop, or killed by systemd).
    pub(super) fn release(mut self) {
        self.hold = None;
        let mut status = 0;
        loop {
            // SAFETY: waiting for our own child.
            let rc = unsafe { libc::waitpid(self.pid, &mut status, 0) };
            if rc >= 0 || std::io::Error::last_os_error().raw_os_error() != Some(libc::EINTR) {
                return;
            }
        }
    }

    /// Kills and reaps the keeper.
    pub(super) fn kill(self) {
        // SAFETY: signalling our own child.
        unsafe { libc::kill(self.pid, libc::SIGKILL) };
        self.release();
    }
}

/// The keeper's life: waits for end of file on `fd`, then exits.
fn keep(parent: libc::pid_t, fd: libc::c_int) -> ! {
    // SAFETY: prctl, signal, getppid, read and _exit are async-signal-safe
    // and take integer arguments or local buffers.
    unsafe {
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0);
        if libc::getppid() != parent {
            libc::_exit(0);
        }
        libc::prctl(libc::PR_SET_NAME, c"moat-keeper".as_ptr(), 0, 0, 0);
        for sig in [libc::SIGTERM, libc::SIGINT, libc::SIGHUP, libc::SIGQUIT] {
            libc::signal(sig, libc::SIG_IGN);
        }
    }
    super::fds::close_all_except(&[fd]);
    let mut byte = 0u8;
    loop {
        // SAFETY: reading one byte into a local.
        let n = unsafe { libc::read(fd, (&mut byte as *mut u8).cast(), 1) };
        if n < 0 && super::failure::errno() == libc::EINTR {
            continue;
        }
        // SAFETY: leaving the forked process without unwinding.
        unsafe { libc::_exit(0) }
    }
}
