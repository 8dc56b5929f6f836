//! The plugin's unix socket: bound by moatd (replacing a stale one safely,
//! mode 0600, removed at exit), or passed by systemd ([`super::systemd`]).
//!
//! Whoever can connect to the socket answers for every Docker API request,
//! and whoever can replace it decides for the daemon. So:
//! - its directory must be a directory owned by root (or moatd's user) that
//!   no one else may write; a missing one is created mode 0700;
//! - an existing path is replaced only when it is a socket no process
//!   serves (a moatd that died); a live socket or anything else is refused;
//! - the socket is bound under a temporary name, set to mode 0600 and then
//!   renamed into place, so the path never accepts connections with the
//!   umask's mode;
//! - at exit it is removed only if the path is still the socket moatd
//!   bound (not one a newer moatd put there).

use std::{
    fs, io,
    os::unix::{
        fs::{DirBuilderExt as _, FileTypeExt as _, MetadataExt as _, PermissionsExt as _},
        net::{UnixListener, UnixStream},
    },
    path::{Path, PathBuf},
};

/// Why the plugin's socket cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum SocketError {
    /// The socket's directory is unsafe or unusable.
    #[error("{}: {reason}", dir.display())]
    Directory {
        /// The directory.
        dir: PathBuf,
        /// Why.
        reason: String,
    },
    /// Another process serves the socket.
    #[error(
        "{}: another process is serving this socket (another moatd?); stop it first",
        path.display()
    )]
    InUse {
        /// The socket.
        path: PathBuf,
    },
    /// Something other than a socket is at the path.
    #[error("{}: exists and is {kind}, not a socket: refusing to replace it", path.display())]
    NotASocket {
        /// The path.
        path: PathBuf,
        /// What it is.
        kind: &'static str,
    },
    /// A system call failed.
    #[error("{}: {what}", path.display())]
    Io {
        /// The path.
        path: PathBuf,
        /// What was being done.
        what: &'static str,
        /// The error.
        #[source]
        source: io::Error,
    },
}

fn io_error<'a>(path: &'a Path, what: &'static str) -> impl FnOnce(io::Error) -> SocketError + 'a {
    move |source| SocketError::Io {
        path: path.to_owned(),
        what,
        source,
    }
}

/// The socket moatd bound itself.
#[derive(Debug)]
pub struct BoundSocket {
    path: PathBuf,
    /// Device, inode and change time: inode numbers are reused at once.
    identity: (u64, u64, i64, i64),
}

fn identity(meta: &fs::Metadata) -> (u64, u64, i64, i64) {
    (meta.dev(), meta.ino(), meta.ctime(), meta.ctime_nsec())
}

impl Drop for BoundSocket {
    fn drop(&mut self) {
        self.remove();
    }
}

impl BoundSocket {
    /// The socket's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Removes the socket file if it is still the one bound here (also done
    /// when dropped).
    pub fn remove(&self) {
        match fs::symlink_metadata(&self.path) {
            Ok(meta) if identity(&meta) == self.identity => {
                if let Err(err) = fs::remove_file(&self.path) {
                    log::warn!("cannot remove {}: {err}", self.path.display());
                }
            }
            Ok(_) => log::info!(
                "{} is no longer the socket this moatd bound; left in place",
                self.path.display()
            ),
            Err(_) => {}
        }
    }
}

/// Binds the plugin's socket at `path` (see the module's comment).
pub fn bind(path: &Path) -> Result<(UnixListener, BoundSocket), SocketError> {
    let dir = path.parent().unwrap_or(Path::new("/"));
    ensure_directory(dir)?;
    match fs::symlink_metadata(path) {
        Err(err) if err.kind() == io::ErrorKind::NotFound => {}
        Err(err) => return Err(io_error(path, "cannot inspect the existing path")(err)),
        Ok(meta) if meta.file_type().is_socket() => match UnixStream::connect(path) {
            Ok(_) => return Err(SocketError::InUse { path: path.into() }),
            Err(err) if err.kind() == io::ErrorKind::ConnectionRefused => {
                log::info!("replacing the stale socket {}", path.display());
            }
            // Gone in the meantime, or not ours to judge: the rename below
            // replaces a socket only.
            Err(_) => {}
        },
        Ok(meta) => {
            let t = meta.file_type();
            let kind = if t.is_dir() {
                "a directory"
            } else if t.is_symlink() {
                "a symbolic link"
            } else if t.is_file() {
                "a regular file"
            } else {
                "a special file"
            };
            return Err(SocketError::NotASocket {
                path: path.into(),
                kind,
            });
        }
    }

    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    let _ = fs::remove_file(&tmp);
    let listener = UnixListener::bind(&tmp).map_err(io_error(&tmp, "cannot bind"))?;
    let placed = fs::set_permissions(&tmp, fs::Permissions::from_mode(0o600))
        .map_err(io_error(&tmp, "cannot set mode 0600"))
        .and_then(|()| {
            fs::rename(&tmp, path).map_err(io_error(path, "cannot move the socket into place"))
        });
    if let Err(err) = placed {
        let _ = fs::remove_file(&tmp);
        return Err(err);
    }
    listener
        .set_nonblocking(true)
        .map_err(io_error(path, "cannot make the socket non-blocking"))?;
    let meta =
        fs::symlink_metadata(path).map_err(io_error(path, "cannot stat the bound socket"))?;
    Ok((
        listener,
        BoundSocket {
            path: path.to_owned(),
            identity: identity(&meta),
        },
    ))
}

/// Creates `dir` (mode 0700) if missing, and checks that only root or
/// moatd's user may change what is in it.
fn ensure_directory(dir: &Path) -> Result<(), SocketError> {
    let fail = |reason: String| SocketError::Directory {
        dir: dir.to_owned(),
        reason,
    };
    if !dir.exists() {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|err| fail(format!("cannot create the socket's directory: {err}")))?;
    }
    let meta = fs::metadata(dir).map_err(|err| fail(format!("cannot read: {err}")))?;
    if !meta.is_dir() {
        return Err(fail("not a directory".to_owned()));
    }
    let me = nix::unistd::geteuid().as_raw();
    if meta.uid() != 0 && meta.uid() != me {
        return Err(fail(format!(
            "owned by uid {}: whoever owns the plugin socket's directory can replace the socket",
            meta.uid()
        )));
    }
    if meta.mode() & 0o022 != 0 {
        return Err(fail(format!(
            "mode {:04o} lets other users replace the plugin socket: `chmod go-w {}`",
            meta.mode() & 0o7777,
            dir.display()
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_a_stale_socket_and_refuses_a_live_one_or_a_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("moat.sock");

        // A stale socket: bound, then its listener closed.
        drop(UnixListener::bind(&path).unwrap());
        let (listener, bound) = bind(&path).unwrap();
        let mode = fs::metadata(&path).unwrap().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert!(UnixStream::connect(&path).is_ok());

        // Live: refused, and left alone.
        let err = bind(&path).unwrap_err();
        assert!(matches!(err, SocketError::InUse { .. }), "{err}");
        assert!(UnixStream::connect(&path).is_ok());

        drop(listener);
        drop(bound);
        assert!(!path.exists());

        fs::write(&path, "not a socket").unwrap();
        let err = bind(&path).unwrap_err().to_string();
        assert!(err.contains("is a regular file, not a socket"), "{err}");
        assert_eq!(fs::read_to_string(&path).unwrap(), "not a socket");
    }

    #[test]
    fn removal_leaves_a_socket_bound_by_someone_else() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("moat.sock");
        let (listener, bound) = bind(&path).unwrap();
        drop(listener);
        fs::remove_file(&path).unwrap();
        let _newer = UnixListener::bind(&path).unwrap();
        drop(bound);
        assert!(path.exists(), "a newer socket must stay");
    }

    #[test]
    fn an_unsafe_directory_is_refused_and_a_missing_one_created_private() {
        let dir = tempfile::tempdir().unwrap();
        let open = dir.path().join("open");
        fs::create_dir(&open).unwrap();
        fs::set_permissions(&open, fs::Permissions::from_mode(0o777)).unwrap();
        let err = bind(&open.join("moat.sock")).unwrap_err().to_string();
        assert!(
            err.contains("lets other users replace the plugin socket"),
            "{err}"
        );

        let missing = dir.path().join("a/b");
        let (_listener, _bound) = bind(&missing.join("moat.sock")).unwrap();
        assert_eq!(fs::metadata(&missing).unwrap().mode() & 0o777, 0o700);
    }
}
