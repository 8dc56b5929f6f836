//! The service manager's notification protocol (`sd_notify(3)`), written out
//! here rather than linked from libsystemd: a datagram of `KEY=VALUE` lines sent
//! to the unix socket named by `NOTIFY_SOCKET` (a path, or an abstract name
//! written `@name`).
//!
//! moatd sends `STATUS=` lines while it starts, `READY=1` once its programs are
//! attached and `/metrics` answers, `WATCHDOG=1` from the collector's loop after
//! each reading of the kernel maps (at most every half `WATCHDOG_USEC`), and
//! `STOPPING=1` on shutdown. Without `NOTIFY_SOCKET` (moatd started by hand, or
//! by a unit that is not `Type=notify`) every call does nothing.

use std::{
    os::unix::net::{SocketAddr, UnixDatagram},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};

/// The environment variable naming the service manager's socket.
pub const NOTIFY_SOCKET: &str = "NOTIFY_SOCKET";
/// The environment variable holding the watchdog timeout, in microseconds.
pub const WATCHDOG_USEC: &str = "WATCHDOG_USEC";
/// The environment variable naming the process the watchdog is meant for.
pub const WATCHDOG_PID: &str = "WATCHDOG_PID";

/// Why `NOTIFY_SOCKET` or `WATCHDOG_USEC` cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum NotifyError {
    /// `NOTIFY_SOCKET` is neither an absolute path nor an abstract `@name`.
    #[error("NOTIFY_SOCKET={value:?}: {reason}")]
    Socket {
        /// The variable's value.
        value: String,
        /// What is wrong with it.
        reason: String,
    },
    /// `WATCHDOG_USEC` is not a positive number of microseconds.
    #[error("WATCHDOG_USEC={value:?}: not a positive number of microseconds")]
    Watchdog {
        /// The variable's value.
        value: String,
    },
    /// The datagram socket could not be created.
    #[error("creating a datagram socket for NOTIFY_SOCKET failed")]
    Io(#[from] std::io::Error),
}

/// A connection to the service manager, or nothing when moatd was not started
/// with `NOTIFY_SOCKET`. Cheap to clone: clones share the socket.
#[derive(Debug, Clone, Default)]
pub struct Notifier {
    inner: Option<Arc<Target>>,
}

#[derive(Debug)]
struct Target {
    socket: UnixDatagram,
    addr: SocketAddr,
    /// Whether a failed send was logged already (then later ones are debug).
    warned: AtomicBool,
}

impl Notifier {
    /// The notifier that `NOTIFY_SOCKET` in the environment asks for.
    pub fn from_env() -> Result<Notifier, NotifyError> {
        match std::env::var(NOTIFY_SOCKET) {
            Ok(value) if !value.is_empty() => Notifier::connect(&value),
            _ => Ok(Notifier::default()),
        }
    }

    /// A notifier sending to `socket` (`/path` or `@abstract-name`).
    pub fn connect(socket: &str) -> Result<Notifier, NotifyError> {
        let invalid = |reason: &str| NotifyError::Socket {
            value: socket.to_owned(),
            reason: reason.to_owned(),
        };
        let addr = if let Some(name) = socket.strip_prefix('@') {
            use std::os::linux::net::SocketAddrExt as _;
            SocketAddr::from_abstract_name(name.as_bytes())
                .map_err(|err| invalid(&err.to_string()))?
        } else if socket.starts_with('/') {
            SocketAddr::from_pathname(socket).map_err(|err| invalid(&err.to_string()))?
        } else {
            return Err(invalid(
                "must be an absolute path or an abstract socket name starting with @",
            ));
        };
        let socket = UnixDatagram::unbound()?;
        Ok(Notifier {
            inner: Some(Arc::new(Target {
                socket,
                addr,
                warned: AtomicBool::new(false),
            })),
        })
    }

    /// Whether a service manager listens (`NOTIFY_SOCKET` was set).
    pub fn is_enabled(&self) -> bool {
        self.inner.is_some()
    }

    /// Sends `state` (newline-separated `KEY=VALUE` lines) in one datagram. A
    /// failure is logged, never returned: the service manager going away must
    /// not stop the agent.
    pub fn send(&self, state: &str) {
        let Some(target) = &self.inner else { return };
        if let Err(err) = target.socket.send_to_addr(state.as_bytes(), &target.addr) {
            if target.warned.swap(true, Ordering::Relaxed) {
                log::debug!("sd_notify: sending {state:?} failed: {err}");
            } else {
                log::warn!("sd_notify: sending {state:?} to NOTIFY_SOCKET failed: {err}");
            }
        }
    }

    /// `STATUS=<text>`: a line for `systemctl status`.
    pub fn status(&self, text: &str) {
        self.send(&format!("STATUS={}", one_line(text)));
    }

    /// `READY=1` with a status line.
    pub fn ready(&self, text: &str) {
        self.send(&format!("READY=1\nSTATUS={}", one_line(text)));
    }

    /// `STOPPING=1` with a status line.
    pub fn stopping(&self, text: &str) {
        self.send(&format!("STOPPING=1\nSTATUS={}", one_line(text)));
    }
}

/// A status text on one line: a newline would start another `KEY=VALUE` pair.
fn one_line(text: &str) -> String {
    text.replace(['\n', '\r'], " ")
}

/// The watchdog: pinged by the collector after each reading of the kernel
/// maps, it sends `WATCHDOG=1` at most every half of the timeout the service
/// manager gave, so a collector that stops reading stops the pings.
#[derive(Debug, Clone)]
pub struct Watchdog {
    notifier: Notifier,
    /// How often a ping is sent, at most (half the timeout).
    period: Duration,
    last: Arc<Mutex<Option<Instant>>>,
    /// Set on shutdown: no ping follows `STOPPING=1`.
    stopped: Arc<AtomicBool>,
}

impl Watchdog {
    /// The watchdog `WATCHDOG_USEC` (and `WATCHDOG_PID`) ask for, or `None`
    /// when there is none for this process.
    pub fn from_env(notifier: &Notifier) -> Result<Option<Watchdog>, NotifyError> {
        if !notifier.is_enabled() {
            return Ok(None);
        }
        let Ok(usec) = std::env::var(WATCHDOG_USEC) else {
            return Ok(None);
        };
        // Set by the manager for the main process; a child that inherited the
        // variables must not ping for it.
        if let Ok(pid) = std::env::var(WATCHDOG_PID) {
            if pid.trim().parse::<u32>().ok() != Some(std::process::id()) {
                return Ok(None);
            }
        }
        let timeout = usec
            .trim()
            .parse::<u64>()
            .ok()
            .filter(|&usec| usec > 0)
            .map(Duration::from_micros)
            .ok_or(NotifyError::Watchdog { value: usec })?;
        Ok(Some(Watchdog::new(notifier.clone(), timeout)))
    }

    /// A watchdog for a manager that restarts moatd after `timeout` without a
    /// ping.
    pub fn new(notifier: Notifier, timeout: Duration) -> Watchdog {
        Watchdog {
            notifier,
            period: timeout / 2,
            last: Arc::new(Mutex::new(None)),
            stopped: Arc::new(AtomicBool::new(false)),
        }
    }

    /// How often the collector must call [`Watchdog::ping`] at least.
    pub fn period(&self) -> Duration {
        self.period
    }

    /// Stops the pings (on shutdown, before `STOPPING=1`), in every clone.
    pub fn stop(&self) {
        self.stopped.store(true, Ordering::SeqCst);
    }

    /// Sends `WATCHDOG=1` unless one went out less than a period ago, or the
    /// watchdog was stopped.
    pub fn ping(&self) {
        if self.stopped.load(Ordering::SeqCst) {
            return;
        }
        let now = Instant::now();
        let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        if last.is_some_and(|at| now.duration_since(at) < self.period) {
            return;
        }
        *last = Some(now);
        drop(last);
        self.notifier.send("WATCHDOG=1");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn listener() -> (tempfile::TempDir, UnixDatagram, String) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify");
        let socket = UnixDatagram::bind(&path).unwrap();
        socket
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        (dir, socket, path.to_str().unwrap().to_owned())
    }

    fn recv(socket: &UnixDatagram) -> String {
        let mut buf = [0u8; 4096];
        let n = socket.recv(&mut buf).unwrap();
        String::from_utf8(buf[..n].to_vec()).unwrap()
    }

    #[test]
    fn sends_to_a_path_and_keeps_status_on_one_line() {
        let (_dir, socket, path) = listener();
        let notifier = Notifier::connect(&path).unwrap();
        notifier.ready("serving\nSTOPPING=1");
        assert_eq!(recv(&socket), "READY=1\nSTATUS=serving STOPPING=1");
    }

    #[test]
    fn sends_to_an_abstract_socket() {
        use std::os::linux::net::SocketAddrExt as _;
        let name = format!("moat-notify-test-{}", std::process::id());
        let addr = SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        let socket = UnixDatagram::bind_addr(&addr).unwrap();
        Notifier::connect(&format!("@{name}"))
            .unwrap()
            .stopping("bye");
        assert_eq!(recv(&socket), "STOPPING=1\nSTATUS=bye");
    }

    #[test]
    fn refuses_a_relative_socket() {
        let err = Notifier::connect("run/notify").unwrap_err();
        assert!(
            err.to_string().contains("absolute path"),
            "unexpected error: {err}"
        );
    }

    #[test]
    fn pings_at_most_once_a_period() {
        let (_dir, socket, path) = listener();
        let watchdog = Watchdog::new(
            Notifier::connect(&path).unwrap(),
            Duration::from_millis(400),
        );
        watchdog.ping();
        watchdog.ping();
        std::thread::sleep(Duration::from_millis(250));
        watchdog.ping();
        socket.set_nonblocking(true).unwrap();
        let mut got = Vec::new();
        let mut buf = [0u8; 64];
        while let Ok(n) = socket.recv(&mut buf) {
            got.push(String::from_utf8_lossy(&buf[..n]).into_owned());
        }
        assert_eq!(got, ["WATCHDOG=1", "WATCHDOG=1"]);
    }

    #[test]
    fn without_a_socket_nothing_is_sent() {
        let notifier = Notifier::default();
        assert!(!notifier.is_enabled());
        notifier.ready("ignored");
        assert!(Watchdog::from_env(&notifier).unwrap().is_none());
    }
}
