//! A directory of the state, opened once, checked, and then used only
//! through its descriptor.
//!
//! The state decides what moat kills, removes and hands out, so nothing in
//! it may come from anyone but root. A directory is used only if it is a
//! real directory (not a symbolic link), root's (or the caller's), and not
//! writable by group or others; the directories above the state directory
//! must not let others replace it either. Entries are opened relative to
//! the directory's descriptor, never followed if they are symbolic links,
//! checked to be regular files before they are opened (opening a FIFO can
//! block, opening a device can have effects) and read up to a bound.
//! Records are written to a temporary file that is created new
//! (`O_CREAT|O_EXCL|O_NOFOLLOW`) under an unpredictable name, then renamed
//! into place.

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};

use nix::dir::Dir;
use nix::errno::Errno;
use nix::fcntl::{openat, renameat, AtFlags, OFlag};
use nix::sys::stat::{fstat, fstatat, mkdirat, FileStat, Mode};
use nix::unistd::{unlinkat, UnlinkatFlags};

use super::error::StateError;
use super::name::random_hex;
use crate::trust;

/// The largest record moat reads or writes. A record holds a command line
/// (cut to [`super::MAX_COMMAND_BYTES`]) and at most 340 lines of each id
/// map, which pretty-printed take about 70 KiB.
pub const MAX_RECORD_BYTES: u64 = 256 * 1024;

/// What a temporary file's name has between the record's name and the
/// random part: `.NAME.json.tmp-0123456789abcdef`.
const TEMP_MARK: &str = ".tmp-";

/// A checked directory of the state.
#[derive(Debug)]
pub(super) struct TrustedDir {
    fd: OwnedFd,
    path: PathBuf,
}

fn io_err(path: &Path, op: &'static str, errno: Errno) -> StateError {
    StateError::Io {
        path: path.to_path_buf(),
        op,
        error: io::Error::from(errno),
    }
}

fn untrusted(path: &Path, reason: impl Into<String>) -> StateError {
    StateError::Untrusted {
        path: path.to_path_buf(),
        reason: reason.into(),
    }
}

/// Checks a directory's metadata.
fn check_dir(path: &Path, st: &FileStat) -> Result<(), StateError> {
    if !trust::is_kind(st.st_mode, libc::S_IFDIR) {
        return Err(untrusted(
            path,
            format!("is {}, not a directory", trust::file_kind(st.st_mode)),
        ));
    }
    trust::check_owner_and_mode(st.st_uid, st.st_mode).map_err(|r| {
        untrusted(
            path,
            format!("{r}; only root may be able to change moat's state"),
        )
    })
}

/// Why an entry that is not a regular file is refused.
fn not_regular(path: &Path, mode: u32) -> StateError {
    untrusted(
        path,
        format!(
            "is {}, not a regular file; moat only writes regular files here (remove it)",
            trust::file_kind(mode)
        ),
    )
}

impl TrustedDir {
    /// Opens the directory `path`, creating it (and missing parents) with
    /// mode 0700 first when `create` is set, and checks it and the
    /// directories above it.
    pub fn open(path: &Path, create: bool) -> Result<TrustedDir, StateError> {
        if create {
            use std::os::unix::fs::DirBuilderExt;
            // An existing directory is checked below, not changed.
            if let Err(error) = std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(path)
            {
                // A symbolic link to a directory counts as existing for
                // DirBuilder; anything else that is in the way is refused
                // below with a clearer message.
                if error.kind() != io::ErrorKind::AlreadyExists {
                    return Err(StateError::Io {
                        path: path.to_path_buf(),
                        op: "create directory",
                        error,
                    });
                }
            }
        }
        let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
        let fd = match nix::fcntl::open(path, flags, Mode::empty()) {
            Ok(fd) => fd,
            Err(Errno::ELOOP | Errno::ENOTDIR) => {
                let kind = std::fs::symlink_metadata(path)
                    .map(|m| trust::file_kind(std::os::unix::fs::MetadataExt::mode(&m)))
                    .unwrap_or("not a directory");
                return Err(untrusted(path, format!("is {kind}, not a directory")));
            }
            Err(e) => return Err(io_err(path, "open directory", e)),
        };
        let st = fstat(&fd).map_err(|e| io_err(path, "stat", e))?;
        check_dir(path, &st)?;
        let real = std::fs::read_link(format!(
            "/proc/self/fd/{}",
            std::os::fd::AsRawFd::as_raw_fd(&fd)
        ))
        .map_err(|error| StateError::Io {
            path: path.to_path_buf(),
            op: "resolve",
            error,
        })?;
        trust::check_ancestors(&real).map_err(|(dir, why)| {
            untrusted(
                &dir,
                format!("{why} (it holds the state directory {})", path.display()),
            )
        })?;
        Ok(TrustedDir {
            fd,
            path: path.to_path_buf(),
        })
    }

    /// The sub-directory `name`, made with mode 0700 if missing, checked
    /// like this one.
    pub fn subdir(&self, name: &str) -> Result<TrustedDir, StateError> {
        let path = self.path.join(name);
        match mkdirat(&self.fd, name, Mode::from_bits_truncate(0o700)) {
            Ok(()) | Err(Errno::EEXIST) => {}
            Err(e) => return Err(io_err(&path, "create directory", e)),
        }
        let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
        let fd = match openat(&self.fd, name, flags, Mode::empty()) {
            Ok(fd) => fd,
            Err(Errno::ELOOP | Errno::ENOTDIR) => {
                let st = fstatat(&self.fd, name, AtFlags::AT_SYMLINK_NOFOLLOW)
                    .map_err(|e| io_err(&path, "stat", e))?;
                return Err(untrusted(
                    &path,
                    format!("is {}, not a directory", trust::file_kind(st.st_mode)),
                ));
            }
            Err(e) => return Err(io_err(&path, "open directory", e)),
        };
        let st = fstat(&fd).map_err(|e| io_err(&path, "stat", e))?;
        check_dir(&path, &st)?;
        Ok(TrustedDir { fd, path })
    }

    /// The directory's path, for messages.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Opens the regular file `name` with `flags` (plus `O_NOFOLLOW`,
    /// `O_NONBLOCK` and `O_CLOEXEC`); `None` if it does not exist, unless
    /// `create` is set, which makes a new one (mode 0600). Anything but a
    /// regular file is refused before it is opened.
    fn open_regular(
        &self,
        name: &str,
        flags: OFlag,
        create: bool,
    ) -> Result<Option<(File, FileStat)>, StateError> {
        let path = self.path.join(name);
        let flags = flags | OFlag::O_NOFOLLOW | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC;
        // The entry can change between the look and the open only if root
        // changes it; retried a few times, then reported.
        for _ in 0..3 {
            let before = match fstatat(&self.fd, name, AtFlags::AT_SYMLINK_NOFOLLOW) {
                Ok(st) => st,
                Err(Errno::ENOENT) if create => {
                    let excl = flags | OFlag::O_CREAT | OFlag::O_EXCL;
                    match openat(&self.fd, name, excl, Mode::from_bits_truncate(0o600)) {
                        Ok(fd) => {
                            let st = fstat(&fd).map_err(|e| io_err(&path, "stat", e))?;
                            return Ok(Some((File::from(fd), st)));
                        }
                        Err(Errno::EEXIST) => continue,
                        Err(e) => return Err(io_err(&path, "create", e)),
                    }
                }
                Err(Errno::ENOENT) => return Ok(None),
                Err(e) => return Err(io_err(&path, "stat", e)),
            };
            if !trust::is_kind(before.st_mode, libc::S_IFREG) {
                return Err(not_regular(&path, before.st_mode));
            }
            let fd = match openat(&self.fd, name, flags, Mode::empty()) {
                Ok(fd) => fd,
                Err(Errno::ENOENT | Errno::ELOOP) => continue,
                Err(e) => return Err(io_err(&path, "open", e)),
            };
            let st = fstat(&fd).map_err(|e| io_err(&path, "stat", e))?;
            if (st.st_dev, st.st_ino) != (before.st_dev, before.st_ino) {
                continue;
            }
            return Ok(Some((File::from(fd), st)));
        }
        Err(untrusted(&path, "it kept changing while moat opened it"))
    }

    /// Reads the record file `name`, at most [`MAX_RECORD_BYTES`]; `None`
    /// if it does not exist.
    pub fn read(&self, name: &str) -> Result<Option<Vec<u8>>, StateError> {
        let path = self.path.join(name);
        let Some((file, st)) = self.open_regular(name, OFlag::O_RDONLY, false)? else {
            return Ok(None);
        };
        let too_big = |size: u64| {
            untrusted(
                &path,
                format!("is {size} bytes, more than a record may have ({MAX_RECORD_BYTES})"),
            )
        };
        let size = u64::try_from(st.st_size).unwrap_or(0);
        if size > MAX_RECORD_BYTES {
            return Err(too_big(size));
        }
        let mut bytes = Vec::with_capacity(size as usize);
        file.take(MAX_RECORD_BYTES + 1)
            .read_to_end(&mut bytes)
            .map_err(|error| StateError::Io {
                path: path.clone(),
                op: "read",
                error,
            })?;
        if bytes.len() as u64 > MAX_RECORD_BYTES {
            return Err(too_big(bytes.len() as u64));
        }
        Ok(Some(bytes))
    }

    /// Writes `bytes` as the file `name`: to a new temporary file, then
    /// renamed over `name`, so that a reader sees the old or the new
    /// content, never a part. With `durable`, the file and then the
    /// directory are synced, so that the content survives a crash;
    /// otherwise a crash may leave it empty or cut (see
    /// [`super::StateDir::lock`] for why records need not survive one).
    pub fn write_atomic(&self, name: &str, bytes: &[u8], durable: bool) -> Result<(), StateError> {
        let path = self.path.join(name);
        if bytes.len() as u64 > MAX_RECORD_BYTES {
            return Err(untrusted(
                &path,
                format!(
                    "a record of {} bytes would be more than moat reads back ({MAX_RECORD_BYTES})",
                    bytes.len()
                ),
            ));
        }
        let tmp = format!(".{name}{TEMP_MARK}{}", random_hex(8));
        let tmp_path = self.path.join(&tmp);
        let flags =
            OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
        let fd = openat(
            &self.fd,
            tmp.as_str(),
            flags,
            Mode::from_bits_truncate(0o600),
        )
        .map_err(|e| io_err(&tmp_path, "create", e))?;
        let mut file = File::from(fd);
        let result = (|| {
            let err = |op, error| StateError::Io {
                path: tmp_path.clone(),
                op,
                error,
            };
            file.write_all(bytes).map_err(|e| err("write", e))?;
            if durable {
                file.sync_all().map_err(|e| err("sync", e))?;
            }
            renameat(&self.fd, tmp.as_str(), &self.fd, name)
                .map_err(|e| io_err(&path, "rename temp file into", e))?;
            if durable {
                nix::unistd::fsync(&self.fd).map_err(|e| io_err(&self.path, "sync", e))?;
            }
            Ok(())
        })();
        if result.is_err() {
            let _ = unlinkat(&self.fd, tmp.as_str(), UnlinkatFlags::NoRemoveDir);
        }
        result
    }

    /// Removes the file `name`; a missing one is no error.
    pub fn remove(&self, name: &str) -> Result<(), StateError> {
        match unlinkat(&self.fd, name, UnlinkatFlags::NoRemoveDir) {
            Ok(()) | Err(Errno::ENOENT) => Ok(()),
            Err(e) => Err(io_err(&self.path.join(name), "remove", e)),
        }
    }

    /// Opens (creating it if missing) the lock file `name` for `flock`.
    pub fn open_lock(&self, name: &str) -> Result<File, StateError> {
        let path = self.path.join(name);
        let (file, st) = self
            .open_regular(name, OFlag::O_RDWR, true)?
            .ok_or_else(|| untrusted(&path, "vanished while being created"))?;
        trust::check_owner_and_mode(st.st_uid, st.st_mode).map_err(|r| untrusted(&path, r))?;
        Ok(file)
    }

    /// The names of the entries, `.` and `..` left out; names that are not
    /// UTF-8 are left out too (moat writes none).
    pub fn names(&self) -> Result<Vec<String>, StateError> {
        let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC;
        let dir = Dir::openat(self.fd.as_fd(), ".", flags, Mode::empty())
            .map_err(|e| io_err(&self.path, "list directory", e))?;
        let mut names = Vec::new();
        for entry in dir {
            let entry = entry.map_err(|e| io_err(&self.path, "list directory", e))?;
            if let Ok(name) = entry.file_name().to_str() {
                if name != "." && name != ".." {
                    names.push(name.to_owned());
                }
            }
        }
        names.sort();
        Ok(names)
    }

    /// Removes the temporary files a killed writer left. Only the holder of
    /// the state lock may call this: it is the only writer.
    pub fn remove_temporaries(&self) -> Result<(), StateError> {
        for name in self.names()? {
            if is_temporary(&name) {
                self.remove(&name)?;
            }
        }
        Ok(())
    }
}

/// Whether `name` is one of [`TrustedDir::write_atomic`]'s temporary files.
pub(super) fn is_temporary(name: &str) -> bool {
    name.starts_with('.') && name.contains(TEMP_MARK)
}
