//! The cache directory: trusted as the state directory is, used only
//! through its descriptor.
//!
//! A directory is used only if it is a real directory (not a symbolic
//! link), root's (or the caller's), not writable by group or others, and
//! no directory above it lets others replace it. Entries are opened
//! relative to its descriptor without following symbolic links, and used
//! only if they are regular files with the same owner and mode rules, no
//! larger than an entry can be. They are written to a new temporary file
//! (`O_CREAT|O_EXCL|O_NOFOLLOW`, random name) and renamed into place, so
//! a reader sees a whole entry or none; no lock is needed, and two
//! launches that compile the same filter at once both rename a correct
//! entry over the other's. Nothing is synced: an entry a crash cut short
//! fails its check and is compiled again.

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};

use nix::dir::Dir;
use nix::errno::Errno;
use nix::fcntl::{openat, renameat, AtFlags, OFlag};
use nix::sys::stat::{fstat, fstatat, FileStat, Mode};
use nix::unistd::{unlinkat, UnlinkatFlags};

use super::entry::{self, Entry, MAX_ENTRY_SIZE};
use super::CacheError;
use crate::trust;

/// Most entries kept; past it the oldest are removed. With the largest
/// entries that is about 2 MiB.
pub const MAX_ENTRIES: usize = 64;

/// A temporary file older than this is a killed writer's, and removed.
const STALE_TEMP_SECS: i64 = 600;

const SUFFIX: &str = ".bpf";
const TEMP_MARK: &str = ".tmp-";

/// An opened, checked cache directory.
#[derive(Debug)]
pub struct CacheDir {
    fd: OwnedFd,
    path: PathBuf,
}

fn io(path: &Path, op: &'static str, e: Errno) -> CacheError {
    CacheError::Io {
        path: path.to_path_buf(),
        op,
        error: io::Error::from(e),
    }
}

fn untrusted(path: &Path, reason: impl Into<String>) -> CacheError {
    CacheError::Untrusted {
        path: path.to_path_buf(),
        reason: reason.into(),
    }
}

/// The entry's file name for a key digest.
pub fn file_name(key: &[u8; 32]) -> String {
    let mut s: String = key.iter().map(|b| format!("{b:02x}")).collect();
    s.push_str(SUFFIX);
    s
}

impl CacheDir {
    /// Opens the directory `path`, creating it (and missing parents, mode
    /// 0700) first, and checks it and the directories above it.
    pub fn open(path: &Path) -> Result<CacheDir, CacheError> {
        use std::os::unix::fs::DirBuilderExt;
        if let Err(error) = std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(path)
        {
            // Whatever is in the way is refused below, with its kind.
            if error.kind() != io::ErrorKind::AlreadyExists {
                return Err(CacheError::Io {
                    path: path.to_path_buf(),
                    op: "create directory",
                    error,
                });
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
            Err(e) => return Err(io(path, "open directory", e)),
        };
        let st = fstat(&fd).map_err(|e| io(path, "stat", e))?;
        if !trust::is_kind(st.st_mode, libc::S_IFDIR) {
            return Err(untrusted(path, "is not a directory"));
        }
        trust::check_owner_and_mode(st.st_uid, st.st_mode).map_err(|r| untrusted(path, r))?;
        let real = std::fs::read_link(format!(
            "/proc/self/fd/{}",
            std::os::fd::AsRawFd::as_raw_fd(&fd)
        ))
        .map_err(|error| CacheError::Io {
            path: path.to_path_buf(),
            op: "resolve",
            error,
        })?;
        trust::check_ancestors(&real).map_err(|(dir, why)| {
            untrusted(
                &dir,
                format!("{why} (it holds the cache {})", path.display()),
            )
        })?;
        Ok(CacheDir {
            fd,
            path: path.to_path_buf(),
        })
    }

    /// The directory's path, for messages.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The entry of `key`: `Ok(None)` when there is none, an error (naming
    /// the file and why) when there is one that must not be used.
    pub fn read(&self, key: &[u8; 32]) -> Result<Option<Entry>, CacheError> {
        let name = file_name(key);
        let path = self.path.join(&name);
        let flags = OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC;
        // A FIFO or device could block or act on open: look first.
        let before = match fstatat(&self.fd, name.as_str(), AtFlags::AT_SYMLINK_NOFOLLOW) {
            Ok(st) => st,
            Err(Errno::ENOENT) => return Ok(None),
            Err(e) => return Err(io(&path, "stat", e)),
        };
        check_file(&path, &before)?;
        let fd = match openat(&self.fd, name.as_str(), flags, Mode::empty()) {
            Ok(fd) => fd,
            Err(Errno::ENOENT) => return Ok(None),
            Err(e) => return Err(io(&path, "open", e)),
        };
        let st = fstat(&fd).map_err(|e| io(&path, "stat", e))?;
        check_file(&path, &st)?;
        let mut bytes = Vec::with_capacity(st.st_size.max(0) as usize);
        File::from(fd)
            .take(MAX_ENTRY_SIZE as u64 + 1)
            .read_to_end(&mut bytes)
            .map_err(|error| CacheError::Io {
                path: path.clone(),
                op: "read",
                error,
            })?;
        entry::decode(key, &bytes)
            .map(Some)
            .map_err(|reason| CacheError::Invalid { path, reason })
    }

    /// Stores `e` as the entry of `key` (replacing any), then keeps the
    /// directory within [`MAX_ENTRIES`].
    pub fn write(&self, key: &[u8; 32], e: &Entry) -> Result<(), CacheError> {
        let name = file_name(key);
        let tmp = format!(".{name}{TEMP_MARK}{}", random_hex());
        let tmp_path = self.path.join(&tmp);
        let flags =
            OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
        let fd = openat(
            &self.fd,
            tmp.as_str(),
            flags,
            Mode::from_bits_truncate(0o600),
        )
        .map_err(|e| io(&tmp_path, "create", e))?;
        let written = File::from(fd)
            .write_all(&entry::encode(key, e))
            .map_err(|error| CacheError::Io {
                path: tmp_path.clone(),
                op: "write",
                error,
            })
            .and_then(|()| {
                renameat(&self.fd, tmp.as_str(), &self.fd, name.as_str())
                    .map_err(|e| io(&self.path.join(&name), "rename into", e))
            });
        if written.is_err() {
            let _ = unlinkat(&self.fd, tmp.as_str(), UnlinkatFlags::NoRemoveDir);
        }
        written?;
        self.evict()
    }

    /// Removes the oldest entries past [`MAX_ENTRIES`] and the temporary
    /// files of writers killed long ago. Only names moat writes are
    /// touched; one another launch removed first is no error.
    pub fn evict(&self) -> Result<(), CacheError> {
        let now = now_secs();
        let mut entries = Vec::new();
        for name in self.names()? {
            let Ok(st) = fstatat(&self.fd, name.as_str(), AtFlags::AT_SYMLINK_NOFOLLOW) else {
                continue;
            };
            if is_temporary(&name) {
                if now - st.st_mtime > STALE_TEMP_SECS {
                    self.remove(&name)?;
                }
            } else if is_entry(&name) {
                entries.push((st.st_mtime, st.st_mtime_nsec, name));
            }
        }
        if entries.len() > MAX_ENTRIES {
            entries.sort();
            let excess = entries.len() - MAX_ENTRIES;
            for (_, _, name) in entries.into_iter().take(excess) {
                self.remove(&name)?;
            }
        }
        Ok(())
    }

    fn remove(&self, name: &str) -> Result<(), CacheError> {
        match unlinkat(&self.fd, name, UnlinkatFlags::NoRemoveDir) {
            Ok(()) | Err(Errno::ENOENT) => Ok(()),
            Err(e) => Err(io(&self.path.join(name), "remove", e)),
        }
    }

    /// The names in the directory (`.` and `..` left out).
    pub fn names(&self) -> Result<Vec<String>, CacheError> {
        let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC;
        let dir = Dir::openat(self.fd.as_fd(), ".", flags, Mode::empty())
            .map_err(|e| io(&self.path, "list directory", e))?;
        let mut names = Vec::new();
        for entry in dir {
            let entry = entry.map_err(|e| io(&self.path, "list directory", e))?;
            if let Ok(name) = entry.file_name().to_str() {
                if name != "." && name != ".." {
                    names.push(name.to_owned());
                }
            }
        }
        names.sort();
        Ok(names)
    }
}

/// An entry must be a regular file, root's (or the caller's), writable by
/// nobody else, and no larger than an entry can be.
fn check_file(path: &Path, st: &FileStat) -> Result<(), CacheError> {
    if !trust::is_kind(st.st_mode, libc::S_IFREG) {
        return Err(untrusted(
            path,
            format!("is {}, not a regular file", trust::file_kind(st.st_mode)),
        ));
    }
    trust::check_owner_and_mode(st.st_uid, st.st_mode).map_err(|r| untrusted(path, r))?;
    if st.st_size > MAX_ENTRY_SIZE as i64 {
        return Err(untrusted(
            path,
            format!(
                "is {} bytes, more than an entry can be ({MAX_ENTRY_SIZE})",
                st.st_size
            ),
        ));
    }
    Ok(())
}

/// Whether `name` is an entry's file name (64 hex digits and `.bpf`).
pub fn is_entry(name: &str) -> bool {
    name.strip_suffix(SUFFIX)
        .is_some_and(|h| h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// Whether `name` is one of [`CacheDir::write`]'s temporary files.
pub fn is_temporary(name: &str) -> bool {
    name.starts_with('.') && name.contains(TEMP_MARK)
}

fn now_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// 16 random hex digits for a temporary name. It needs to be unlikely to
/// collide, not secret (`O_EXCL` and `O_NOFOLLOW` protect the file), so
/// the time and pid stand in should `getrandom` fail.
fn random_hex() -> String {
    let mut b = [0u8; 8];
    // SAFETY: getrandom writes at most `b.len()` bytes into `b`.
    let n = unsafe { libc::getrandom(b.as_mut_ptr().cast(), b.len(), 0) };
    if n != b.len() as isize {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        b = (t ^ (u64::from(std::process::id()) << 32)).to_le_bytes();
    }
    b.iter().map(|x| format!("{x:02x}")).collect()
}
