//! Socket activation (`sd_listen_fds(3)`): the listening socket systemd
//! passes for the plugin, so that dockerd may start, and queue its requests
//! in the socket's backlog, before moatd has loaded its eBPF programs, and
//! while moatd restarts.
//!
//! systemd passes sockets as descriptors 3, 4, ... and says so in
//! `LISTEN_PID` (the process they are for), `LISTEN_FDS` (how many) and
//! `LISTEN_FDNAMES` (their `FileDescriptorName=`, `:`-separated). moatd
//! takes the one named [`FD_NAME`] (or the only one, from a systemd too old
//! to name them), checks that it is a listening unix stream socket bound to
//! the configured path, and clears the variables so that no child inherits
//! them.

use std::{
    os::fd::{AsRawFd as _, BorrowedFd, FromRawFd as _, OwnedFd, RawFd},
    os::unix::net::UnixListener,
    path::{Path, PathBuf},
};

use nix::sys::socket::{getsockname, getsockopt, sockopt, SockType, UnixAddr};

/// The `FileDescriptorName=` of the plugin's socket in `moatd-authz.socket`.
pub const FD_NAME: &str = "moat-authz";

/// The first descriptor systemd passes.
const SD_LISTEN_FDS_START: RawFd = 3;

/// The environment systemd sets, as read at start.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListenEnv {
    /// `LISTEN_PID`.
    pub pid: Option<String>,
    /// `LISTEN_FDS`.
    pub fds: Option<String>,
    /// `LISTEN_FDNAMES`.
    pub names: Option<String>,
}

impl ListenEnv {
    /// Reads the variables and removes them from the environment. Call it
    /// before any other thread runs (it changes the environment).
    pub fn take() -> ListenEnv {
        let get = |k: &str| std::env::var(k).ok();
        let env = ListenEnv {
            pid: get("LISTEN_PID"),
            fds: get("LISTEN_FDS"),
            names: get("LISTEN_FDNAMES"),
        };
        for k in ["LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"] {
            std::env::remove_var(k);
        }
        env
    }
}

/// Why a passed descriptor cannot be the plugin's socket.
#[derive(Debug, thiserror::Error)]
pub enum ListenFdError {
    /// The variables do not follow the protocol.
    #[error("socket activation: {reason}")]
    Protocol {
        /// Why.
        reason: String,
    },
    /// The descriptor is not a listening unix stream socket.
    #[error("socket activation: descriptor {fd} ({FD_NAME}): {reason}")]
    NotAListener {
        /// The descriptor.
        fd: RawFd,
        /// Why.
        reason: String,
    },
    /// The socket is bound elsewhere than `authz.socket` says.
    #[error(
        "socket activation: descriptor {fd} ({FD_NAME}) is bound to {}, but authz.socket is {}: \
         make moatd-authz.socket's ListenStream= and authz.socket the same path",
        bound.display(),
        configured.display()
    )]
    WrongPath {
        /// The descriptor.
        fd: RawFd,
        /// Where it is bound.
        bound: PathBuf,
        /// Where the configuration says the plugin's socket is.
        configured: PathBuf,
    },
}

/// The index among the passed descriptors of the plugin's, if systemd
/// passed it to this process.
pub fn plugin_fd(env: &ListenEnv, my_pid: u32) -> Result<Option<RawFd>, ListenFdError> {
    let protocol = |reason: String| ListenFdError::Protocol { reason };
    let (Some(pid), Some(fds)) = (&env.pid, &env.fds) else {
        return Ok(None);
    };
    if pid.trim().parse::<u32>().ok() != Some(my_pid) {
        // Meant for another process (our parent's, inherited): not ours.
        return Ok(None);
    }
    let count: usize = fds
        .trim()
        .parse()
        .map_err(|_| protocol(format!("LISTEN_FDS={fds:?} is not a number")))?;
    if count == 0 || count > 1024 {
        return Err(protocol(format!("LISTEN_FDS={count} is out of range")));
    }
    let index = match &env.names {
        Some(names) => {
            let names: Vec<&str> = names.split(':').collect();
            if names.len() != count {
                return Err(protocol(format!(
                    "LISTEN_FDNAMES names {} descriptors, LISTEN_FDS says {count}",
                    names.len()
                )));
            }
            match names.iter().position(|n| *n == FD_NAME) {
                Some(i) => i,
                None => return Ok(None),
            }
        }
        // A systemd too old to name descriptors: only an unambiguous one.
        None if count == 1 => 0,
        None => {
            return Err(protocol(format!(
                "{count} descriptors passed without LISTEN_FDNAMES: cannot tell which is {FD_NAME}"
            )))
        }
    };
    Ok(Some(SD_LISTEN_FDS_START + index as RawFd))
}

/// Takes descriptor `fd` as the plugin's listener, after checking it is a
/// listening unix stream socket bound to `configured`.
///
/// # Safety
///
/// `fd` must be a descriptor this process owns and nothing else uses: one
/// systemd passed, as [`plugin_fd`] found it.
pub unsafe fn take_listener(fd: RawFd, configured: &Path) -> Result<UnixListener, ListenFdError> {
    let not = |reason: String| ListenFdError::NotAListener { fd, reason };
    // SAFETY: the caller guarantees `fd` is open and ours; borrowed only
    // for the checks below.
    let borrowed = unsafe { BorrowedFd::borrow_raw(fd) };
    let kind =
        getsockopt(&borrowed, sockopt::SockType).map_err(|e| not(format!("not a socket ({e})")))?;
    if kind != SockType::Stream {
        return Err(not(format!("a {kind:?} socket, not a stream socket")));
    }
    let listening = getsockopt(&borrowed, sockopt::AcceptConn)
        .map_err(|e| not(format!("cannot read SO_ACCEPTCONN ({e})")))?;
    if !listening {
        return Err(not("not listening".to_owned()));
    }
    let addr: UnixAddr =
        getsockname(borrowed.as_raw_fd()).map_err(|e| not(format!("not a unix socket ({e})")))?;
    let Some(bound) = addr.path() else {
        return Err(not("an unnamed or abstract unix socket".to_owned()));
    };
    if bound != configured {
        return Err(ListenFdError::WrongPath {
            fd,
            bound: bound.to_owned(),
            configured: configured.to_owned(),
        });
    }
    // SAFETY: as above; from here the listener owns and closes it.
    let owned = unsafe { OwnedFd::from_raw_fd(fd) };
    nix::fcntl::fcntl(
        &owned,
        nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC),
    )
    .map_err(|e| not(format!("cannot set FD_CLOEXEC ({e})")))?;
    let listener = UnixListener::from(owned);
    listener
        .set_nonblocking(true)
        .map_err(|e| not(format!("cannot make it non-blocking ({e})")))?;
    Ok(listener)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pid: &str, fds: &str, names: Option<&str>) -> ListenEnv {
        ListenEnv {
            pid: Some(pid.into()),
            fds: Some(fds.into()),
            names: names.map(Into::into),
        }
    }

    #[test]
    fn finds_the_named_descriptor_for_this_process_only() {
        assert_eq!(plugin_fd(&ListenEnv::default(), 7).unwrap(), None);
        assert_eq!(plugin_fd(&env("8", "1", Some(FD_NAME)), 7).unwrap(), None);
        assert_eq!(
            plugin_fd(&env("7", "1", Some(FD_NAME)), 7).unwrap(),
            Some(3)
        );
        assert_eq!(
            plugin_fd(&env("7", "2", Some("metrics:moat-authz")), 7).unwrap(),
            Some(4)
        );
        assert_eq!(plugin_fd(&env("7", "1", Some("other")), 7).unwrap(), None);
        assert_eq!(plugin_fd(&env("7", "1", None), 7).unwrap(), Some(3));
        for bad in [
            env("7", "x", None),
            env("7", "0", None),
            env("7", "2", None),
            env("7", "2", Some(FD_NAME)),
        ] {
            assert!(plugin_fd(&bad, 7).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn refuses_what_is_not_the_configured_listener() {
        use std::os::fd::IntoRawFd as _;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("moat.sock");
        let listener = UnixListener::bind(&path).unwrap();
        let fd = listener.into_raw_fd();
        let other = dir.path().join("other.sock");
        // SAFETY: `fd` is ours and unused elsewhere.
        let err = unsafe { take_listener(fd, &other) }.unwrap_err();
        assert!(matches!(err, ListenFdError::WrongPath { .. }), "{err}");
        // SAFETY: as above (the failed call did not take it).
        let listener = unsafe { take_listener(fd, &path) }.unwrap();
        drop(listener);

        let file = std::fs::File::open("/dev/null").unwrap();
        let fd = file.into_raw_fd();
        // SAFETY: as above.
        let err = unsafe { take_listener(fd, &path) }.unwrap_err();
        assert!(err.to_string().contains("not a socket"), "{err}");
        // SAFETY: `fd` is still ours.
        drop(unsafe { OwnedFd::from_raw_fd(fd) });
    }
}
