//! The supervisor's side while the workload runs: forward signals to moat's
//! init (which forwards them to the command), relay the workload's pty, and
//! wait for the init to end.
//!
//! Signals are taken synchronously through a `signalfd` (blocked before the
//! clone, so none is lost in between) in the same `poll` as the pty. Every
//! forwarded signal is passed on, whoever sent it: the workload has a
//! session of its own, so a signal moat's terminal generates never reaches
//! it directly. SIGWINCH resizes the workload's pty instead.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use super::relay::Relay;

/// Signals forwarded to the workload.
pub const FORWARDED: [libc::c_int; 6] = [
    libc::SIGINT,
    libc::SIGTERM,
    libc::SIGHUP,
    libc::SIGQUIT,
    libc::SIGUSR1,
    libc::SIGUSR2,
];

/// How the workload ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// It exited with this code.
    Exited(i32),
    /// A signal killed it.
    Signaled(i32),
}

impl Outcome {
    /// The exit code moat passes on: the workload's, or 128+N for signal N.
    pub fn exit_code(self) -> i32 {
        match self {
            Outcome::Exited(c) => c,
            Outcome::Signaled(s) => 128 + s,
        }
    }
}

/// The set of signals the supervisor takes: the forwarded ones, SIGCHLD
/// and SIGWINCH.
pub fn supervised_set() -> libc::sigset_t {
    // SAFETY: initialising a local sigset.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for s in FORWARDED.iter().chain(&[libc::SIGCHLD, libc::SIGWINCH]) {
            libc::sigaddset(&mut set, *s);
        }
        set
    }
}

/// Blocks the supervised signals in the calling thread; the previous mask
/// is returned so it can be restored.
pub fn block() -> io::Result<libc::sigset_t> {
    let set = supervised_set();
    // SAFETY: valid sigset pointers.
    unsafe {
        let mut old: libc::sigset_t = std::mem::zeroed();
        if libc::pthread_sigmask(libc::SIG_BLOCK, &set, &mut old) != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(old)
    }
}

/// Restores a signal mask saved by [`block`].
pub fn restore(old: &libc::sigset_t) {
    // SAFETY: a valid sigset saved earlier.
    unsafe { libc::pthread_sigmask(libc::SIG_SETMASK, old, std::ptr::null_mut()) };
}

/// Makes moat the reaper of the workload's orphans, so processes the
/// command leaves behind are reaped at once instead of lingering as zombies
/// (still charged to the pids limit) until the system's init gets to them.
pub fn become_subreaper() -> io::Result<()> {
    // SAFETY: prctl with integer arguments.
    if unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Waits for moat's init `pid` to end, forwarding signals to it, relaying
/// the workload's pty meanwhile and reaping any orphan reparented to moat.
/// Returns the init's raw wait status.
pub fn supervise(pid: i32, mut relay: Option<&mut Relay>) -> io::Result<libc::c_int> {
    let set = supervised_set();
    // SAFETY: a new signalfd for a valid, blocked set; owned below.
    let sfd = unsafe { libc::signalfd(-1, &set, libc::SFD_CLOEXEC | libc::SFD_NONBLOCK) };
    if sfd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the descriptor just created.
    let sfd = unsafe { OwnedFd::from_raw_fd(sfd) };
    loop {
        if let Some(status) = reap(pid)? {
            return Ok(status);
        }
        let mut fds = [libc::pollfd {
            fd: sfd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        }; 4];
        if let Some(r) = relay.as_deref() {
            fds[1..].copy_from_slice(&r.poll_set());
        } else {
            for f in &mut fds[1..] {
                f.fd = -1;
            }
        }
        // SAFETY: poll on a local array of pollfds.
        if unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, -1) } < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        while let Some(sig) = next_signal(&sfd) {
            match sig {
                libc::SIGCHLD => {}
                libc::SIGWINCH => {
                    if let Some(r) = relay.as_deref() {
                        r.resize();
                    }
                }
                // SAFETY: signalling our own child.
                _ => unsafe {
                    libc::kill(pid, sig);
                },
            }
        }
        if let Some(r) = relay.as_deref_mut() {
            let set: [libc::pollfd; 3] = [fds[1], fds[2], fds[3]];
            r.service(&set);
        }
    }
}

/// The next pending signal of the signalfd, if any.
fn next_signal(sfd: &OwnedFd) -> Option<libc::c_int> {
    // SAFETY: signalfd_siginfo is plain data.
    let mut info: libc::signalfd_siginfo = unsafe { std::mem::zeroed() };
    let size = std::mem::size_of::<libc::signalfd_siginfo>();
    // SAFETY: reading one record into a local structure.
    let n = unsafe {
        libc::read(
            sfd.as_raw_fd(),
            (&mut info as *mut libc::signalfd_siginfo).cast(),
            size,
        )
    };
    (n == size as isize).then_some(info.ssi_signo as libc::c_int)
}

/// Reaps every ended child; returns the raw status of `pid` if it was
/// among them.
fn reap(pid: i32) -> io::Result<Option<libc::c_int>> {
    let mut main = None;
    loop {
        let mut status = 0;
        // SAFETY: waiting for our own children.
        let rc = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) };
        if rc < 0 {
            let e = io::Error::last_os_error();
            return match e.raw_os_error() {
                Some(libc::ECHILD) => Ok(main),
                Some(libc::EINTR) => continue,
                _ => Err(e),
            };
        }
        if rc == 0 {
            return Ok(main);
        }
        if rc == pid && decode(status).is_some() {
            main = Some(status);
        }
    }
}

/// Reaps the orphans left after the workload's processes were killed, for
/// at most `timeout`.
pub fn reap_orphans(timeout: std::time::Duration) {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        let mut status = 0;
        // SAFETY: waiting for our own children.
        let rc = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) };
        if rc > 0 {
            continue;
        }
        if rc < 0 || std::time::Instant::now() >= deadline {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
}

/// Waits (blocking) for `pid` and decodes its status.
pub fn wait_blocking(pid: i32) -> io::Result<Outcome> {
    loop {
        let mut status = 0;
        // SAFETY: waiting for our own child.
        let rc = unsafe { libc::waitpid(pid, &mut status, 0) };
        if rc < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        if let Some(o) = decode(status) {
            return Ok(o);
        }
    }
}

/// The outcome a raw wait status describes (`None` for a stop or resume).
pub fn decode(status: libc::c_int) -> Option<Outcome> {
    if libc::WIFEXITED(status) {
        Some(Outcome::Exited(libc::WEXITSTATUS(status)))
    } else if libc::WIFSIGNALED(status) {
        Some(Outcome::Signaled(libc::WTERMSIG(status)))
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes_follow_the_shell_convention() {
        assert_eq!(Outcome::Exited(3).exit_code(), 3);
        assert_eq!(Outcome::Signaled(libc::SIGKILL).exit_code(), 137);
    }
}
