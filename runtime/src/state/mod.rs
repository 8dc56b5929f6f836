//! The state directory (default `/run/moat`): which workloads are running
//! and how finished ones ended.
//!
//! Layout: `workloads/<name>.json` is one [`WorkloadRecord`] per running
//! workload, `exits/<name>.json` the [`ExitRecord`] of the last workload of
//! that name, and `lock` is the file whose `flock` serialises every
//! read-modify-write ([`StateDir::lock`]). Records are written to a temp
//! file and renamed into place, so an unlocked reader (`moat ps`) sees
//! either the old or the new record, never half of one.
//!
//! Nothing removes the record of a workload whose `moat run` was killed;
//! instead every record names its processes by pid *and* start time, and
//! the next locked reader ([`StateLock::running`]) drops the records whose
//! processes are gone, so the caller can clean up after them.

mod error;
mod file;
mod lock;
mod name;
mod process;
mod record;

#[cfg(test)]
mod tests;

use std::fs::{self, DirBuilder, OpenOptions};
use std::io;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};

pub use error::StateError;
pub use lock::StateLock;
pub use name::{generate_name, validate_name, MAX_NAME_LEN};
pub use process::ProcessRef;
pub use record::{now_unix_ms, ExitRecord, WorkloadRecord};

use file::{read_named, read_record};

/// Where the state lives unless told otherwise (`/run` is a tmpfs, so
/// records vanish with a reboot, as the processes they describe do).
pub const DEFAULT_STATE_DIR: &str = "/run/moat";

const WORKLOADS_DIR: &str = "workloads";
const EXITS_DIR: &str = "exits";
const LOCK_FILE: &str = "lock";
const RECORD_EXT: &str = ".json";
/// Suffix of the temp file a record is written to before the rename;
/// readers skip these.
const TEMP_EXT: &str = ".tmp";

/// The state directory.
#[derive(Debug, Clone)]
pub struct StateDir {
    root: PathBuf,
}

impl StateDir {
    /// Opens the state directory at `root`, creating `root`,
    /// `root/workloads` and `root/exits` with mode 0700 where missing
    /// (existing directories are left as they are).
    pub fn open(root: &Path) -> Result<StateDir, StateError> {
        let dir = StateDir {
            root: root.to_path_buf(),
        };
        for d in [dir.root.clone(), dir.workloads_dir(), dir.exits_dir()] {
            DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(&d)
                .map_err(|error| StateError::Io {
                    path: d.clone(),
                    op: "create directory",
                    error,
                })?;
        }
        Ok(dir)
    }

    /// The directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Exclusive flock on root/lock, held by the returned guard; all
    /// reads-modify-writes happen under it, so concurrent `moat run`s never
    /// race. Blocks until the lock is free.
    pub fn lock(&self) -> Result<StateLock<'_>, StateError> {
        let path = self.root.join(LOCK_FILE);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&path)
            .map_err(|error| StateError::Io {
                path: path.clone(),
                op: "open lock file",
                error,
            })?;
        let mut file = file;
        let file = loop {
            match Flock::lock(file, FlockArg::LockExclusive) {
                Ok(locked) => break locked,
                Err((f, Errno::EINTR)) => file = f,
                Err((_, errno)) => {
                    return Err(StateError::Io {
                        path,
                        op: "lock",
                        error: io::Error::from(errno),
                    })
                }
            }
        };
        // The lock belongs to this open file description and is released
        // when the guard closes it, also if the process dies.
        Ok(StateLock {
            dir: self,
            _file: file,
        })
    }

    /// Reads without locking (for `moat ps`): running records, including
    /// stale ones (check [`WorkloadRecord::is_alive`]; they are reported but
    /// not deleted). A record that cannot be parsed is skipped with a
    /// warning naming the file; [`StateDir::list_with_errors`] returns those
    /// as errors instead. Sorted by start time.
    pub fn list(&self) -> Result<Vec<WorkloadRecord>, StateError> {
        let (records, errors) = self.list_with_errors()?;
        for e in errors {
            log::warn!("{e}");
        }
        Ok(records)
    }

    /// Like [`StateDir::list`], but returns unreadable records as errors
    /// (each naming its file) next to the good ones.
    pub fn list_with_errors(&self) -> Result<(Vec<WorkloadRecord>, Vec<StateError>), StateError> {
        let mut records = Vec::new();
        let mut errors = Vec::new();
        for (_, rec) in self.scan()? {
            match rec {
                Ok(r) => records.push(r),
                Err(e) => errors.push(e),
            }
        }
        sort_by_start(&mut records);
        Ok((records, errors))
    }

    /// The record of the running workload `name`, if there is one (stale or
    /// not). Reads without locking.
    pub fn record(&self, name: &str) -> Result<Option<WorkloadRecord>, StateError> {
        validate_name(name)?;
        read_record(&self.workload_path(name), name)
    }

    /// The exit record of the last workload named `name`, if any.
    pub fn exit_record(&self, name: &str) -> Result<Option<ExitRecord>, StateError> {
        validate_name(name)?;
        read_named(&self.exit_path(name), name, |r: &ExitRecord| &r.name)
    }

    fn workloads_dir(&self) -> PathBuf {
        self.root.join(WORKLOADS_DIR)
    }

    fn exits_dir(&self) -> PathBuf {
        self.root.join(EXITS_DIR)
    }

    fn workload_path(&self, name: &str) -> PathBuf {
        self.workloads_dir().join(format!("{name}{RECORD_EXT}"))
    }

    fn exit_path(&self, name: &str) -> PathBuf {
        self.exits_dir().join(format!("{name}{RECORD_EXT}"))
    }

    /// Every record file with its parse result.
    fn scan(&self) -> Result<Vec<ScannedRecord>, StateError> {
        let dir = self.workloads_dir();
        let io_err = |error| StateError::Io {
            path: dir.clone(),
            op: "list directory",
            error,
        };
        let mut out = Vec::new();
        for entry in fs::read_dir(&dir).map_err(io_err)? {
            let entry = entry.map_err(io_err)?;
            let path = entry.path();
            let Some(file_name) = entry.file_name().to_str().map(str::to_string) else {
                continue; // not ours: we only write valid names
            };
            let Some(stem) = file_name.strip_suffix(RECORD_EXT) else {
                continue; // temp files and strangers
            };
            let rec = match validate_name(stem) {
                Err(e) => Err(StateError::Corrupt {
                    file: path.clone(),
                    reason: format!("the file name is not a workload name: {e}"),
                }),
                // Removed since the directory was listed (an unlocked
                // reader racing a writer): it is simply gone.
                Ok(()) => match read_record(&path, stem) {
                    Ok(None) => continue,
                    Ok(Some(r)) => Ok(r),
                    Err(e) => Err(e),
                },
            };
            out.push((path, rec));
        }
        Ok(out)
    }
}

/// Oldest first; the name breaks ties.
fn sort_by_start(records: &mut [WorkloadRecord]) {
    records.sort_by(|a, b| (a.started_at_unix_ms, &a.name).cmp(&(b.started_at_unix_ms, &b.name)));
}

/// A record file and what reading it gave.
type ScannedRecord = (PathBuf, Result<WorkloadRecord, StateError>);
