//! The parent's side while the workload runs: forward signals, reap it.
//!
//! Signals are taken synchronously with `sigwaitinfo` (blocked before the
//! clone, so none is lost in between). A signal another process sent to
//! moat is forwarded to the workload; one the terminal generated (Ctrl-C,
//! `si_code == SI_KERNEL`) already reached the workload, which shares moat's
//! process group, so forwarding it would deliver it twice.

use std::io;

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

/// The set of signals the supervisor takes: the forwarded ones and SIGCHLD.
pub fn supervised_set() -> libc::sigset_t {
    // SAFETY: initialising a local sigset.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for s in FORWARDED.iter().chain(&[libc::SIGCHLD]) {
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

/// Waits for `pid` to end, forwarding signals to it meanwhile and reaping
/// any orphan reparented to moat.
pub fn supervise(pid: i32) -> io::Result<Outcome> {
    let set = supervised_set();
    loop {
        if let Some(o) = reap(pid)? {
            return Ok(o);
        }
        // SAFETY: siginfo is plain data filled by the kernel.
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        // SAFETY: valid pointers.
        let sig = unsafe { libc::sigwaitinfo(&set, &mut info) };
        if sig < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        if sig != libc::SIGCHLD && info.si_code != libc::SI_KERNEL {
            // SAFETY: signalling our own child.
            unsafe { libc::kill(pid, sig) };
        }
    }
}

/// Reaps every ended child; returns the outcome if `pid` was among them.
fn reap(pid: i32) -> io::Result<Option<Outcome>> {
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
        if rc == pid {
            main = decode(status);
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

fn decode(status: libc::c_int) -> Option<Outcome> {
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
