//! Copying between moat's terminal and the workload's pty master while the
//! workload runs, driven by the supervisor's `poll` loop.
//!
//! The pty master is non-blocking (moat's own descriptor); moat's terminal
//! is left as it is (the shell shares that open file, and would inherit a
//! non-blocking one), so it is only read or written when `poll` says it is
//! ready. Each direction has a small buffer: when the workload does not
//! read its input, moat stops reading its terminal instead of blocking, and
//! keeps handling signals.

use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::time::{Duration, Instant};

const BUF: usize = 4096;

#[derive(Debug)]
struct Buf {
    data: Box<[u8; BUF]>,
    start: usize,
    end: usize,
}

impl Buf {
    fn new() -> Buf {
        Buf {
            data: Box::new([0; BUF]),
            start: 0,
            end: 0,
        }
    }

    fn is_empty(&self) -> bool {
        self.start == self.end
    }

    fn has_room(&self) -> bool {
        self.end < BUF
    }

    /// Reads from `fd` into the free tail; `Ok(0)` is end of file.
    fn fill(&mut self, fd: RawFd) -> Result<usize, i32> {
        let free = &mut self.data[self.end..];
        // SAFETY: reading into the free part of our buffer.
        let n = unsafe { libc::read(fd, free.as_mut_ptr().cast(), free.len()) };
        if n < 0 {
            return Err(super::failure::errno());
        }
        self.end += n as usize;
        Ok(n as usize)
    }

    /// Writes what is buffered to `fd`.
    fn flush(&mut self, fd: RawFd) -> Result<(), i32> {
        let pending = &self.data[self.start..self.end];
        // SAFETY: writing from our buffer.
        let n = unsafe { libc::write(fd, pending.as_ptr().cast(), pending.len()) };
        if n < 0 {
            return Err(super::failure::errno());
        }
        self.start += n as usize;
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        }
        Ok(())
    }

    fn clear(&mut self) {
        self.start = 0;
        self.end = 0;
    }
}

/// The relay between moat's terminal and the workload's pty.
#[derive(Debug)]
pub struct Relay {
    master: OwnedFd,
    /// moat's stdin, when it is a terminal and not yet at end of file.
    input: Option<RawFd>,
    /// Where the pty's output goes (moat's stdout or stderr terminal);
    /// `None` discards it.
    output: Option<RawFd>,
    /// moat's terminal whose window size the pty follows.
    reference: RawFd,
    to_master: Buf,
    to_output: Buf,
    /// The master read end of file or EIO: no slave is open any more.
    master_done: bool,
}

/// What one relay descriptor waits for, as `poll` wants it.
fn want(fd: RawFd, events: libc::c_short) -> libc::pollfd {
    libc::pollfd {
        fd: if events == 0 { -1 } else { fd },
        events,
        revents: 0,
    }
}

fn ready(p: &libc::pollfd, events: libc::c_short) -> bool {
    p.fd >= 0 && p.revents & (events | libc::POLLHUP | libc::POLLERR) != 0
}

impl Relay {
    /// A relay for pty `master`, reading `input` and writing `output`.
    pub fn new(
        master: OwnedFd,
        input: Option<RawFd>,
        output: Option<RawFd>,
        reference: RawFd,
    ) -> Relay {
        Relay {
            master,
            input,
            output,
            reference,
            to_master: Buf::new(),
            to_output: Buf::new(),
            master_done: false,
        }
    }

    /// Follows a change of moat's terminal's size (on SIGWINCH).
    pub fn resize(&self) {
        super::tty::copy_window_size(self.reference, self.master.as_raw_fd());
    }

    /// The three descriptors to poll: input, master, output (unused slots
    /// have fd -1, which `poll` ignores).
    pub fn poll_set(&self) -> [libc::pollfd; 3] {
        let m = self.master.as_raw_fd();
        let input = match self.input {
            Some(fd) if self.to_master.has_room() => want(fd, libc::POLLIN),
            _ => want(-1, 0),
        };
        let mut master_events = 0;
        if !self.master_done && self.to_output.has_room() {
            master_events |= libc::POLLIN;
        }
        if !self.master_done && !self.to_master.is_empty() {
            master_events |= libc::POLLOUT;
        }
        let output = match self.output {
            Some(fd) if !self.to_output.is_empty() => want(fd, libc::POLLOUT),
            _ => want(-1, 0),
        };
        [input, want(m, master_events), output]
    }

    /// Moves data as far as `poll` said the descriptors were ready.
    pub fn service(&mut self, set: &[libc::pollfd; 3]) {
        let m = self.master.as_raw_fd();
        if let Some(fd) = self.input {
            if self.to_master.has_room() && ready(&set[0], libc::POLLIN) {
                match self.to_master.fill(fd) {
                    Ok(0) => self.input = None,
                    Ok(_) => {}
                    Err(libc::EAGAIN | libc::EINTR) => {}
                    Err(_) => self.input = None,
                }
            }
        }
        if set[1].fd >= 0 && set[1].revents & libc::POLLOUT != 0 {
            match self.to_master.flush(m) {
                Ok(()) | Err(libc::EAGAIN | libc::EINTR) => {}
                Err(_) => self.to_master.clear(),
            }
        }
        if !self.master_done && self.to_output.has_room() && ready(&set[1], libc::POLLIN) {
            self.read_master();
        }
        if let Some(fd) = self.output {
            if ready(&set[2], libc::POLLOUT) {
                match self.to_output.flush(fd) {
                    Ok(()) | Err(libc::EAGAIN | libc::EINTR) => {}
                    // moat's terminal is gone: discard the rest.
                    Err(_) => self.output = None,
                }
            }
        }
        if self.output.is_none() {
            self.to_output.clear();
        }
    }

    fn read_master(&mut self) {
        match self.to_output.fill(self.master.as_raw_fd()) {
            Ok(0) => self.master_done = true,
            Ok(_) | Err(libc::EAGAIN | libc::EINTR) => {}
            // EIO: every slave descriptor is closed.
            Err(_) => self.master_done = true,
        }
    }

    /// After the workload ended: passes on what it wrote until every slave
    /// descriptor is closed (its processes are gone) and the output is
    /// written, for at most `timeout`.
    pub fn drain(&mut self, timeout: Duration) {
        self.input = None;
        self.to_master.clear();
        let deadline = Instant::now() + timeout;
        while !(self.master_done && self.to_output.is_empty()) {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return;
            }
            let mut set = self.poll_set();
            // SAFETY: poll on a local array of three pollfds.
            let n = unsafe { libc::poll(set.as_mut_ptr(), 3, left.as_millis().max(1) as i32) };
            if n < 0 && super::failure::errno() != libc::EINTR {
                return;
            }
            self.service(&set);
        }
    }
}
