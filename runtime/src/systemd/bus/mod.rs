//! A small, blocking D-Bus client: one Unix socket, `EXTERNAL`
//! authentication, method calls and the signals that arrive meanwhile.
//!
//! Why not `zbus`: moat's supervisor starts its init with a raw `clone3`
//! and the child then runs Rust code that allocates, which is only sound
//! in a single-threaded process. zbus's blocking API drives an async
//! executor on threads of its own, and moat talks to systemd both before
//! and after that clone. It would also bring an async runtime's worth of
//! crates into the `moat` binary for the five calls moat makes. This
//! client has no thread and no dependency, and is enough for systemd:
//! little-endian messages, no file-descriptor passing.

pub mod wire;

use std::collections::VecDeque;
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

pub use wire::{Kind, Message, Value};

/// Why a D-Bus exchange failed.
#[derive(Debug, thiserror::Error)]
pub enum BusError {
    /// The socket could not be connected to.
    #[error("connecting to the D-Bus socket {}", path.display())]
    Connect {
        /// The socket.
        path: PathBuf,
        /// The error.
        #[source]
        error: std::io::Error,
    },
    /// The server refused moat's authentication.
    #[error("{}: the bus refused EXTERNAL authentication as uid {uid} (it answered {answer:?})", path.display())]
    Auth {
        /// The socket.
        path: PathBuf,
        /// moat's uid.
        uid: u32,
        /// The server's line.
        answer: String,
    },
    /// Reading or writing the socket failed.
    #[error("{what} on the D-Bus connection")]
    Io {
        /// What was being done.
        what: &'static str,
        /// The error.
        #[source]
        error: std::io::Error,
    },
    /// The peer sent bytes that are not D-Bus.
    #[error("the D-Bus peer sent a malformed message")]
    Wire(#[source] wire::WireError),
    /// The call returned an error.
    #[error("{method}: {name}: {message}")]
    Remote {
        /// `Interface.Member` called.
        method: String,
        /// The D-Bus error name (e.g. `org.freedesktop.systemd1.UnitExists`).
        name: String,
        /// The error's text.
        message: String,
    },
    /// No answer in time.
    #[error("no answer to {what} within {waited:?}")]
    Timeout {
        /// What was awaited.
        what: String,
        /// How long.
        waited: Duration,
    },
    /// The peer closed the connection.
    #[error("the D-Bus peer closed the connection while moat waited for {what}")]
    Closed {
        /// What was awaited.
        what: String,
    },
}

impl BusError {
    /// The D-Bus error name, for an error reply.
    pub fn remote_name(&self) -> Option<&str> {
        match self {
            BusError::Remote { name, .. } => Some(name),
            _ => None,
        }
    }
}

/// How long a call may take, as sd-bus's default.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(25);

/// A connection to a bus daemon or to a peer (systemd's private socket).
#[derive(Debug)]
pub struct Bus {
    sock: UnixStream,
    path: PathBuf,
    serial: u32,
    /// Messages read while waiting for something else (signals).
    queued: VecDeque<Message>,
    /// Whether this is a bus daemon (which wants `Hello` and routes by
    /// destination) rather than a peer.
    daemon: bool,
}

impl Bus {
    /// Connects to the socket at `path` and authenticates; with `daemon`,
    /// also says `Hello` to the bus daemon.
    pub fn connect(path: &Path, daemon: bool) -> Result<Bus, BusError> {
        let sock = UnixStream::connect(path).map_err(|error| BusError::Connect {
            path: path.to_owned(),
            error,
        })?;
        let mut bus = Bus {
            sock,
            path: path.to_owned(),
            serial: 0,
            queued: VecDeque::new(),
            daemon,
        };
        bus.authenticate()?;
        if daemon {
            bus.call(
                "org.freedesktop.DBus",
                "/org/freedesktop/DBus",
                "org.freedesktop.DBus",
                "Hello",
                vec![],
            )?;
        }
        Ok(bus)
    }

    /// Whether the peer is a bus daemon.
    pub fn is_daemon(&self) -> bool {
        self.daemon
    }

    fn authenticate(&mut self) -> Result<(), BusError> {
        // SAFETY: getuid cannot fail.
        let uid = unsafe { libc::geteuid() };
        let hex: String = uid
            .to_string()
            .bytes()
            .map(|b| format!("{b:02x}"))
            .collect();
        // BEGIN goes in the same write as AUTH, as sd-bus's own clients
        // send it: a server reads both at once and is running before the
        // first message comes. Sent apart, BEGIN and the first message can
        // arrive in one read, and systemd 252's private socket then leaves
        // the message unprocessed until the next event on the connection
        // (seen in the kernel lab as calls unanswered for 25 s).
        let hello = format!("\0AUTH EXTERNAL {hex}\r\nBEGIN\r\n");
        self.write_all(hello.as_bytes(), "writing the authentication")?;
        let line = self.read_line()?;
        if !line.starts_with("OK ") {
            return Err(BusError::Auth {
                path: self.path.clone(),
                uid,
                answer: line,
            });
        }
        Ok(())
    }

    fn read_line(&mut self) -> Result<String, BusError> {
        let deadline = (Instant::now() + CALL_TIMEOUT, CALL_TIMEOUT);
        let mut line = Vec::new();
        let mut byte = [0u8; 1];
        while !line.ends_with(b"\r\n") {
            if line.len() > 512 {
                return Err(BusError::Auth {
                    path: self.path.clone(),
                    uid: 0,
                    answer: String::from_utf8_lossy(&line).into_owned(),
                });
            }
            self.read_exact(&mut byte, deadline, "the authentication answer")?;
            line.push(byte[0]);
        }
        line.truncate(line.len() - 2);
        Ok(String::from_utf8_lossy(&line).into_owned())
    }

    fn write_all(&mut self, bytes: &[u8], what: &'static str) -> Result<(), BusError> {
        self.sock
            .write_all(bytes)
            .map_err(|error| BusError::Io { what, error })
    }

    fn read_exact(
        &mut self,
        buf: &mut [u8],
        (deadline, span): (Instant, Duration),
        what: &str,
    ) -> Result<(), BusError> {
        let mut n = 0;
        while n < buf.len() {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(BusError::Timeout {
                    what: what.to_owned(),
                    waited: span,
                });
            }
            self.sock
                .set_read_timeout(Some(left))
                .map_err(|error| BusError::Io {
                    what: "setting a read timeout",
                    error,
                })?;
            match self.sock.read(&mut buf[n..]) {
                Ok(0) => {
                    return Err(BusError::Closed {
                        what: what.to_owned(),
                    })
                }
                Ok(k) => n += k,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) => {}
                Err(error) => {
                    return Err(BusError::Io {
                        what: "reading",
                        error,
                    })
                }
            }
        }
        Ok(())
    }

    /// Reads the next message, waiting until `deadline`.
    fn read_message(
        &mut self,
        deadline: (Instant, Duration),
        what: &str,
    ) -> Result<Message, BusError> {
        let mut head = [0u8; 16];
        self.read_exact(&mut head, deadline, what)?;
        let total = Message::total_len(&head).map_err(BusError::Wire)?;
        let mut bytes = vec![0u8; total];
        bytes[..16].copy_from_slice(&head);
        self.read_exact(&mut bytes[16..], deadline, what)?;
        Message::decode(&bytes).map_err(BusError::Wire)
    }

    /// Sends a call and returns its serial.
    pub fn send(&mut self, message: &Message) -> Result<u32, BusError> {
        self.serial = self.serial.wrapping_add(1).max(1);
        let bytes = message.encode(self.serial);
        self.write_all(&bytes, "sending a message")?;
        Ok(self.serial)
    }

    /// Calls `interface.member` on `path` of `destination` (ignored by a
    /// peer) and returns the reply's body. An error reply is
    /// [`BusError::Remote`]. Signals that arrive meanwhile are kept for
    /// [`Bus::wait_signal`].
    pub fn call(
        &mut self,
        destination: &str,
        path: &str,
        interface: &str,
        member: &str,
        body: Vec<Value>,
    ) -> Result<Vec<Value>, BusError> {
        let dest = self.daemon.then_some(destination);
        let serial = self.send(&Message::call(dest, path, interface, member, body))?;
        let method = format!("{interface}.{member}");
        let started = Instant::now();
        let deadline = (started + CALL_TIMEOUT, CALL_TIMEOUT);
        log::debug!(
            "D-Bus {}: calling {method} (serial {serial})",
            self.path.display()
        );
        loop {
            let m = self.read_message(deadline, &method)?;
            if m.reply_serial != Some(serial) || !matches!(m.kind, Kind::Return | Kind::Error) {
                log::debug!("D-Bus: while waiting for {method}: {m}");
                if m.kind == Kind::Signal {
                    self.queued.push_back(m);
                }
                continue;
            }
            log::debug!(
                "D-Bus: {method} answered ({:?}) after {:?}",
                m.kind,
                started.elapsed()
            );
            if m.kind == Kind::Error {
                return Err(BusError::Remote {
                    method,
                    name: m.error_name.unwrap_or_default(),
                    message: m
                        .body
                        .first()
                        .and_then(Value::as_str)
                        .unwrap_or_default()
                        .to_owned(),
                });
            }
            return Ok(m.body);
        }
    }

    /// Waits until `timeout` for a signal that `wanted` accepts (queued
    /// ones first), dropping the others.
    pub fn wait_signal(
        &mut self,
        what: &str,
        timeout: Duration,
        mut wanted: impl FnMut(&Message) -> bool,
    ) -> Result<Message, BusError> {
        while let Some(m) = self.queued.pop_front() {
            if wanted(&m) {
                return Ok(m);
            }
        }
        let deadline = (Instant::now() + timeout, timeout);
        loop {
            let m = self.read_message(deadline, what)?;
            if m.kind == Kind::Signal && wanted(&m) {
                return Ok(m);
            }
        }
    }
}

#[cfg(test)]
mod tests;
