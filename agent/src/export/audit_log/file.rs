//! The audit log file: opened so that it can never block moatd nor be a file an
//! unprivileged user planted, and appended to so that only whole lines reach it.
//!
//! - **Opening** (`O_RDWR | O_APPEND | O_CREAT | O_NOFOLLOW | O_NONBLOCK |
//!   O_CLOEXEC`, mode 0640): a symbolic link at the path is not followed
//!   (`ELOOP`), nothing at the path can make `open(2)` block (`O_NONBLOCK`; a
//!   FIFO opened read-write never waits for a peer either), and `fstat(2)` then
//!   refuses anything that is not a regular file owned by moatd's user with a
//!   single link ([`OpenError`]).
//! - **A partial last line** (moatd killed in the middle of a write): it is
//!   terminated with a newline when the file is opened, so the fragment stands
//!   alone as one unparseable line (which `moat events` skips with a warning)
//!   and the next event starts a line of its own. The fragment is kept rather
//!   than cut: an audit log is not rewritten.
//! - **Appending**: a batch of whole lines goes out in `write(2)` calls on the
//!   `O_APPEND` descriptor; if the disk fills (or any error) part-way, the part
//!   of a line that did reach the file is cut off again (`ftruncate(2)` back to
//!   the end of the last whole line, when nothing else wrote since). Should that
//!   fail too, the next write starts with a newline. [`Appended`] says how many
//!   lines are on disk, so the counts are exactly what the file holds.
//! - **A log deleted under moatd** (link count 0): the path is opened again
//!   before the next write rather than writing into a file nobody can read.

use std::{
    fs::{self, File, OpenOptions},
    io::{self, Seek as _, Write as _},
    os::unix::fs::{FileExt as _, MetadataExt as _, OpenOptionsExt as _, PermissionsExt as _},
    path::{Path, PathBuf},
};

use crate::config::AuditTarget;

/// Why the audit log cannot be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// `open(2)` (or creating its directory) failed.
    #[error("cannot open {}", path.display())]
    Io {
        /// The audit log's path.
        path: PathBuf,
        /// The error.
        #[source]
        source: io::Error,
    },
    /// The path is a symbolic link, which is not followed.
    #[error("{} is a symbolic link: moatd does not follow one there", path.display())]
    Symlink {
        /// The audit log's path.
        path: PathBuf,
    },
    /// The path is not a regular file.
    #[error("{} is a {kind}, not a regular file", path.display())]
    NotRegular {
        /// The audit log's path.
        path: PathBuf,
        /// What it is.
        kind: &'static str,
    },
    /// The file belongs to another user, who could read or rewrite the log.
    #[error("{} belongs to uid {owner}, not to moatd's uid {uid}", path.display())]
    NotOwned {
        /// The audit log's path.
        path: PathBuf,
        /// Its owner.
        owner: u32,
        /// moatd's effective uid.
        uid: u32,
    },
    /// The file has other names, through which it could be read or replaced.
    #[error("{} has {links} hard links: moatd writes only to a file of one name", path.display())]
    Linked {
        /// The audit log's path.
        path: PathBuf,
        /// Its link count.
        links: u64,
    },
}

/// Where lines go.
#[derive(Debug)]
enum Sink {
    /// A regular file opened and checked as described above.
    File(File),
    /// Standard output (a duplicate of descriptor 1: closing it leaves stdout
    /// open), written as it is (a pipe or a terminal).
    Stdout(File),
}

/// An open audit log.
#[derive(Debug)]
pub struct AuditFile {
    sink: Sink,
    /// The last write left part of a line that could not be cut off: the next
    /// write starts with a newline.
    needs_newline: bool,
}

/// What an append did.
#[derive(Debug)]
pub struct Appended {
    /// Whole lines of the batch now in the file, from the first.
    pub lines: usize,
    /// Why the rest is not, if some is not.
    pub error: Option<io::Error>,
}

impl AuditFile {
    /// Opens `target`: standard output, or the file as described in the module
    /// documentation (its directory created if needed), terminating a partial
    /// last line.
    pub fn open(target: &AuditTarget) -> Result<AuditFile, OpenError> {
        let path = match target {
            AuditTarget::Stdout => {
                let stdout = io::stdout();
                let fd = std::os::fd::AsFd::as_fd(&stdout)
                    .try_clone_to_owned()
                    .map_err(|source| OpenError::Io {
                        path: PathBuf::from("-"),
                        source,
                    })?;
                return Ok(AuditFile {
                    sink: Sink::Stdout(File::from(fd)),
                    needs_newline: false,
                });
            }
            AuditTarget::File(path) => path,
        };
        let io_error = |source| OpenError::Io {
            path: path.clone(),
            source,
        };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            fs::create_dir_all(dir).map_err(io_error)?;
            warn_if_others_can_write(dir);
        }
        // Read too: the last byte tells whether the file ends in a partial line.
        let file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .mode(0o640)
            .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_NOCTTY | libc::O_CLOEXEC)
            .open(path)
            .map_err(|err| match err.raw_os_error() {
                Some(libc::ELOOP) => OpenError::Symlink { path: path.clone() },
                // O_NONBLOCK: a FIFO without a reader (or a socket).
                Some(libc::ENXIO) => OpenError::NotRegular {
                    path: path.clone(),
                    kind: "FIFO or socket",
                },
                _ => io_error(err),
            })?;
        let meta = file.metadata().map_err(io_error)?;
        check_file(path, &meta)?;
        let mut file = AuditFile {
            sink: Sink::File(file),
            needs_newline: false,
        };
        file.terminate_partial_line(path, meta.len());
        Ok(file)
    }

    /// Whether the file has been deleted (no name left): writing on would reach
    /// nobody. Standard output never is.
    pub fn is_deleted(&self) -> bool {
        match &self.sink {
            Sink::File(file) => file.metadata().is_ok_and(|m| m.nlink() == 0),
            Sink::Stdout(_) => false,
        }
    }

    /// Appends `buf`, whole lines ending at the offsets `ends` (exclusive, in
    /// order, the last one `buf.len()`), keeping partial lines out of the file.
    pub fn append(&mut self, buf: &[u8], ends: &[usize]) -> Appended {
        let prefix = usize::from(self.needs_newline);
        let mut data = Vec::with_capacity(prefix + buf.len());
        if self.needs_newline {
            data.push(b'\n');
        }
        data.extend_from_slice(buf);
        let mut done = 0;
        let mut error = None;
        while done < data.len() {
            let file = match &mut self.sink {
                Sink::File(file) | Sink::Stdout(file) => file,
            };
            match file.write(&data[done..]) {
                Ok(0) => {
                    error = Some(io::Error::from(io::ErrorKind::WriteZero));
                    break;
                }
                Ok(n) => done += n,
                Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
                Err(err) => {
                    error = Some(err);
                    break;
                }
            }
        }
        if prefix > 0 && done > 0 {
            self.needs_newline = false;
        }
        let written = done.saturating_sub(prefix);
        let lines = ends.iter().take_while(|&&end| end <= written).count();
        let line_boundary = prefix.min(done) + if lines == 0 { 0 } else { ends[lines - 1] };
        let fragment = done - line_boundary;
        if fragment > 0 && !self.cut_fragment(fragment as u64) {
            self.needs_newline = true;
        }
        Appended { lines, error }
    }

    /// Removes the last `len` bytes, the start of a line that could not be
    /// written whole; false if that is not possible (standard output, another
    /// writer appended since, `ftruncate` failed).
    fn cut_fragment(&mut self, len: u64) -> bool {
        let Sink::File(file) = &mut self.sink else {
            return false;
        };
        // O_APPEND leaves the offset at the end of what this write appended.
        let (Ok(end), Ok(meta)) = (file.stream_position(), file.metadata()) else {
            return false;
        };
        if meta.len() != end || end < len {
            return false;
        }
        match file.set_len(end - len) {
            Ok(()) => true,
            Err(err) => {
                log::warn!("cannot cut a partial line off the audit log: {err}");
                false
            }
        }
    }

    /// Terminates a partial last line of a file of `len` bytes.
    fn terminate_partial_line(&mut self, path: &Path, len: u64) {
        let Sink::File(file) = &mut self.sink else {
            return;
        };
        if len == 0 {
            return;
        }
        let mut last = [0u8; 1];
        if file.read_exact_at(&mut last, len - 1).is_err() || last[0] == b'\n' {
            return;
        }
        log::warn!(
            "{} ends in a partial line (moatd was stopped in the middle of a write?): \
             terminating it so that the next event starts a line",
            path.display()
        );
        self.needs_newline = true;
        let appended = self.append(b"", &[]);
        if let Some(err) = appended.error {
            log::warn!("cannot terminate the partial line now ({err}); the next write will");
        }
    }
}

fn check_file(path: &Path, meta: &fs::Metadata) -> Result<(), OpenError> {
    let kind = meta.file_type();
    if !kind.is_file() {
        use std::os::unix::fs::FileTypeExt as _;
        let kind = if kind.is_fifo() {
            "FIFO"
        } else if kind.is_char_device() {
            "character device"
        } else if kind.is_block_device() {
            "block device"
        } else if kind.is_socket() {
            "socket"
        } else if kind.is_dir() {
            "directory"
        } else {
            "special file"
        };
        return Err(OpenError::NotRegular {
            path: path.to_owned(),
            kind,
        });
    }
    let uid = nix::unistd::geteuid().as_raw();
    if meta.uid() != uid {
        return Err(OpenError::NotOwned {
            path: path.to_owned(),
            owner: meta.uid(),
            uid,
        });
    }
    if meta.nlink() > 1 {
        return Err(OpenError::Linked {
            path: path.to_owned(),
            links: meta.nlink(),
        });
    }
    Ok(())
}

/// Warns when users other than moatd's can rename or replace files in the
/// audit log's directory (a world-writable one, say): what they put at the
/// path is refused at the next reopen, but they can move the log away.
fn warn_if_others_can_write(dir: &Path) {
    let Ok(meta) = fs::metadata(dir) else { return };
    let uid = nix::unistd::geteuid().as_raw();
    let mode = meta.permissions().mode();
    if meta.uid() != uid || mode & 0o022 != 0 {
        log::warn!(
            "the audit log's directory {} is writable by other users (owner uid {}, mode {:o}): \
             they can move the log away; give it its own directory, e.g. /var/log/moat",
            dir.display(),
            meta.uid(),
            mode & 0o7777
        );
    }
}
