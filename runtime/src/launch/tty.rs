//! The workload's terminal. A workload must never hold moat's own terminal:
//! from the same session, `ioctl(TIOCSTI)` would push keystrokes into the
//! operator's shell (CVE-2017-5226 in bubblewrap; runc and crun give the
//! container a pty of its own). So the workload always starts a new session,
//! and when any of moat's standard streams is a terminal, those streams of
//! the workload are the slave of a new pty instead, its controlling
//! terminal. moat relays between its terminal and the pty's master
//! ([`super::relay`]), with its own terminal in raw mode meanwhile, so line
//! editing, ^C, ^Z and window sizes are the workload's pty's business.

use std::io;
use std::os::fd::{FromRawFd, OwnedFd, RawFd};

/// Which of moat's standard streams (0, 1, 2) are terminals.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct StdioTtys(pub [bool; 3]);

impl StdioTtys {
    /// Looks at moat's own descriptors 0, 1 and 2.
    pub fn detect() -> StdioTtys {
        // SAFETY: isatty only queries the descriptor.
        StdioTtys([0, 1, 2].map(|fd| unsafe { libc::isatty(fd) } == 1))
    }

    /// Whether any of them is a terminal (so the workload gets a pty).
    pub fn any(self) -> bool {
        self.0.iter().any(|t| *t)
    }

    /// The terminal whose settings and size the pty copies: stdin's if it
    /// is one, else stdout's, else stderr's.
    pub fn reference(self) -> Option<RawFd> {
        (0..3).find(|&fd| self.0[fd as usize])
    }

    /// Where the pty's output goes: stdout if it is a terminal, else stderr
    /// if it is one (the workload's other streams are pipes or files).
    pub fn output(self) -> Option<RawFd> {
        [1, 2].into_iter().find(|&fd| self.0[fd as usize])
    }
}

/// A new pty: the master stays with moat, the slave goes to the workload.
#[derive(Debug)]
pub struct Pty {
    /// The master side (non-blocking, close-on-exec).
    pub master: OwnedFd,
    /// The slave side (close-on-exec; the workload dups it onto its
    /// standard streams).
    pub slave: OwnedFd,
}

impl Pty {
    /// Opens a pty whose slave has the settings and size of `reference`.
    pub fn open(reference: RawFd) -> io::Result<Pty> {
        let flags = libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC;
        // SAFETY: opening the pty multiplexer; the fd is owned below.
        let m = unsafe { libc::posix_openpt(flags) };
        if m < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: a descriptor we just opened and own.
        let master = unsafe { OwnedFd::from_raw_fd(m) };
        // SAFETY: unlockpt on our master.
        if unsafe { libc::unlockpt(m) } != 0 {
            return Err(io::Error::last_os_error());
        }
        // TIOCGPTPEER (Linux 4.13) opens the slave through the master, with
        // no path lookup in /dev/pts that could be raced.
        // SAFETY: ioctl on our master with integer flags.
        let s = unsafe { libc::ioctl(m, libc::TIOCGPTPEER, flags) };
        if s < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: the new slave descriptor, owned here.
        let slave = unsafe { OwnedFd::from_raw_fd(s) };
        if let Some(t) = get_termios(reference) {
            // SAFETY: tcsetattr with a termios read from a terminal.
            unsafe { libc::tcsetattr(s, libc::TCSANOW, &t) };
        }
        copy_window_size(reference, m);
        set_nonblocking(m)?;
        Ok(Pty { master, slave })
    }
}

fn get_termios(fd: RawFd) -> Option<libc::termios> {
    // SAFETY: tcgetattr into a zeroed local structure.
    let mut t: libc::termios = unsafe { std::mem::zeroed() };
    // SAFETY: a valid pointer.
    (unsafe { libc::tcgetattr(fd, &mut t) } == 0).then_some(t)
}

fn set_nonblocking(fd: RawFd) -> io::Result<()> {
    // SAFETY: fcntl with integer arguments.
    unsafe {
        let fl = libc::fcntl(fd, libc::F_GETFL);
        if fl < 0 || libc::fcntl(fd, libc::F_SETFL, fl | libc::O_NONBLOCK) < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Copies the window size of terminal `from` to pty master `to` (the
/// kernel then sends SIGWINCH to the pty's foreground process group).
pub fn copy_window_size(from: RawFd, to: RawFd) {
    // SAFETY: TIOCGWINSZ/TIOCSWINSZ with a local winsize.
    unsafe {
        let mut ws: libc::winsize = std::mem::zeroed();
        if libc::ioctl(from, libc::TIOCGWINSZ, &mut ws) == 0 {
            libc::ioctl(to, libc::TIOCSWINSZ, &ws);
        }
    }
}

/// moat's terminal in raw mode while it relays; the saved settings come
/// back when this is dropped (on every return path and unwinding).
#[derive(Debug)]
pub struct RawMode {
    fd: RawFd,
    saved: libc::termios,
}

impl RawMode {
    /// Puts terminal `fd` in raw mode: input goes to the workload's pty
    /// byte by byte, with no echo and no signals generated here.
    pub fn enter(fd: RawFd) -> io::Result<RawMode> {
        let saved = get_termios(fd).ok_or_else(io::Error::last_os_error)?;
        let mut raw = saved;
        // SAFETY: cfmakeraw edits a local termios.
        unsafe { libc::cfmakeraw(&mut raw) };
        // SAFETY: tcsetattr with a valid termios.
        if unsafe { libc::tcsetattr(fd, libc::TCSADRAIN, &raw) } != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(RawMode { fd, saved })
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        // SAFETY: restoring settings read from the same terminal.
        unsafe { libc::tcsetattr(self.fd, libc::TCSADRAIN, &self.saved) };
    }
}
