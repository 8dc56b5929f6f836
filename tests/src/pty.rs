//! A real pty pair for terminal tests: the test plays the terminal (it
//! holds the master) and the program under test gets the slave as its
//! standard streams and controlling terminal, as in a login shell.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// A pty: the terminal side (master) and the program side (slave).
pub struct Pty {
    /// The master.
    pub master: OwnedFd,
    /// The slave.
    pub slave: OwnedFd,
}

impl Pty {
    /// A new pty with window size `rows` x `cols`.
    pub fn open(rows: u16, cols: u16) -> Pty {
        // SAFETY: opening the multiplexer; owned below.
        let m = unsafe { libc::posix_openpt(libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC) };
        assert!(m >= 0, "posix_openpt: {}", std::io::Error::last_os_error());
        // SAFETY: our descriptor.
        let master = unsafe { OwnedFd::from_raw_fd(m) };
        // SAFETY: unlockpt and TIOCGPTPEER on our master.
        let s = unsafe {
            assert_eq!(libc::unlockpt(m), 0);
            libc::ioctl(
                m,
                libc::TIOCGPTPEER,
                libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC,
            )
        };
        assert!(s >= 0, "TIOCGPTPEER: {}", std::io::Error::last_os_error());
        // SAFETY: the new slave descriptor.
        let slave = unsafe { OwnedFd::from_raw_fd(s) };
        let pty = Pty { master, slave };
        pty.set_size(rows, cols);
        pty
    }

    /// Sets the window size (the kernel sends SIGWINCH to the slave's
    /// foreground process group).
    pub fn set_size(&self, rows: u16, cols: u16) {
        let ws = libc::winsize {
            ws_row: rows,
            ws_col: cols,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        // SAFETY: TIOCSWINSZ with a valid winsize.
        let rc = unsafe { libc::ioctl(self.master.as_raw_fd(), libc::TIOCSWINSZ, &ws) };
        assert_eq!(rc, 0);
    }

    /// Makes `cmd` run with the slave as stdin, stdout, stderr and
    /// controlling terminal, in a session of its own.
    pub fn attach(&self, cmd: &mut Command) {
        let dup = |_| Stdio::from(self.slave.try_clone().expect("dup the slave"));
        cmd.stdin(dup(0)).stdout(dup(1)).stderr(dup(2));
        // SAFETY: setsid and ioctl are async-signal-safe.
        unsafe {
            cmd.pre_exec(move || {
                if libc::setsid() < 0 || libc::ioctl(0, libc::TIOCSCTTY, 0) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
    }

    /// Types `bytes` at the terminal.
    pub fn write(&self, bytes: &[u8]) {
        // SAFETY: writing a local buffer to our master.
        let n = unsafe { libc::write(self.master.as_raw_fd(), bytes.as_ptr().cast(), bytes.len()) };
        assert_eq!(
            n,
            bytes.len() as isize,
            "{}",
            std::io::Error::last_os_error()
        );
    }

    /// The slave's terminal settings.
    pub fn termios(&self) -> libc::termios {
        // SAFETY: tcgetattr into a zeroed local structure.
        let mut t: libc::termios = unsafe { std::mem::zeroed() };
        // SAFETY: a valid pointer.
        let rc = unsafe { libc::tcgetattr(self.slave.as_raw_fd(), &mut t) };
        assert_eq!(rc, 0);
        t
    }

    /// Whatever sits in the slave's input queue: what a shell reading this
    /// terminal would read next. Switches the slave to raw mode first so
    /// that an incomplete line counts too.
    pub fn pending_input(&self) -> Vec<u8> {
        let s = self.slave.as_raw_fd();
        let mut t = self.termios();
        // SAFETY: cfmakeraw on a local copy, tcsetattr, fcntl and read on
        // our own descriptor.
        unsafe {
            libc::cfmakeraw(&mut t);
            t.c_cc[libc::VMIN] = 0;
            t.c_cc[libc::VTIME] = 0;
            libc::tcsetattr(s, libc::TCSANOW, &t);
        }
        let mut out = Vec::new();
        let mut buf = [0u8; 256];
        loop {
            // SAFETY: reading into a local buffer.
            let n = unsafe { libc::read(s, buf.as_mut_ptr().cast(), buf.len()) };
            if n <= 0 {
                return out;
            }
            out.extend_from_slice(&buf[..n as usize]);
        }
    }
}

/// Collects everything written to the terminal (the master's output) on a
/// thread.
pub struct Screen {
    text: Arc<Mutex<Vec<u8>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Screen {
    /// Starts reading `master`.
    pub fn start(master: RawFd) -> Screen {
        let text = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (t, s) = (text.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while !s.load(Ordering::Relaxed) {
                let mut p = libc::pollfd {
                    fd: master,
                    events: libc::POLLIN,
                    revents: 0,
                };
                // SAFETY: poll and read on the master, which outlives the
                // thread (joined on drop).
                unsafe {
                    if libc::poll(&mut p, 1, 20) > 0 && p.revents & libc::POLLIN != 0 {
                        let n = libc::read(master, buf.as_mut_ptr().cast(), buf.len());
                        if n > 0 {
                            t.lock().unwrap().extend_from_slice(&buf[..n as usize]);
                        }
                    } else if p.revents & libc::POLLHUP != 0 {
                        std::thread::sleep(Duration::from_millis(20));
                    }
                }
            }
        });
        Screen {
            text,
            stop,
            thread: Some(thread),
        }
    }

    /// Everything shown so far.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.text.lock().unwrap()).into_owned()
    }

    /// Waits until the screen shows `what`; panics with the screen after
    /// `timeout`.
    pub fn wait_for(&self, what: &str, timeout: Duration) {
        let start = Instant::now();
        while !self.text().contains(what) {
            assert!(
                start.elapsed() < timeout,
                "{what:?} not shown within {timeout:?}; screen: {:?}",
                self.text()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Screen {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
