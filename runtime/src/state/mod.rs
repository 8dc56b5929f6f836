//! The state directory (default `/run/moat`): which workloads are running
//! and how finished ones ended.
//!
//! Layout: `workloads/<name>.json` is one [`WorkloadRecord`] per workload
//! moat started and has not finished cleaning up after, `exits/<name>.json`
//! the [`ExitRecord`] of the last workload of that name, `lock` is the
//! file whose `flock` serialises every read-modify-write
//! ([`StateDir::lock`]), and `boot_id` names the boot that wrote them
//! (`boot.rs`). Records are written to a temp file and renamed into place,
//! so an unlocked reader (`moat ps`) sees either the old or the new record,
//! never half of one.
//!
//! A record is written before anything it names exists, and removed only
//! once all of it is gone, so whatever a killed `moat run` leaves behind
//! is named by a record. Every record names its processes by pid *and*
//! start time; one whose processes are all gone is stale
//! ([`StateLock::running`] returns it), and the caller reclaims what it
//! names before removing it.
//!
//! Only root may write here: see `trusted.rs` for the checks every
//! directory and file passes before moat uses it.

mod boot;
mod error;
mod file;
mod lock;
mod name;
mod process;
mod record;
mod trusted;

#[cfg(test)]
mod tests;

use std::path::Path;

use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};

pub use error::StateError;
pub use lock::StateLock;
pub use name::{generate_name, validate_name, MAX_NAME_LEN};
pub use process::ProcessRef;
pub use record::{now_unix_ms, ExitRecord, WorkloadRecord, MAX_COMMAND_BYTES};
pub use trusted::MAX_RECORD_BYTES;

use file::{read_named, read_record};
use trusted::TrustedDir;

/// Where the state lives unless told otherwise (`/run` is a tmpfs, so
/// records vanish with a reboot, as the processes they describe do).
pub const DEFAULT_STATE_DIR: &str = "/run/moat";

const WORKLOADS_DIR: &str = "workloads";
const EXITS_DIR: &str = "exits";
const LOCK_FILE: &str = "lock";
const RECORD_EXT: &str = ".json";

/// The state directory, opened and checked.
#[derive(Debug)]
pub struct StateDir {
    root: TrustedDir,
    workloads: TrustedDir,
    exits: TrustedDir,
}

impl StateDir {
    /// Opens the state directory at `root`, creating `root`,
    /// `root/workloads` and `root/exits` with mode 0700 where missing.
    ///
    /// Each must be a directory (not a symbolic link) owned by root or the
    /// caller and writable by nobody else, and the directories above
    /// `root` must not let others replace it; otherwise this is an error
    /// naming the directory and why ([`StateError::Untrusted`]). Existing
    /// directories are checked, never changed.
    pub fn open(root: &Path) -> Result<StateDir, StateError> {
        let root = TrustedDir::open(root, true)?;
        let workloads = root.subdir(WORKLOADS_DIR)?;
        let exits = root.subdir(EXITS_DIR)?;
        Ok(StateDir {
            root,
            workloads,
            exits,
        })
    }

    /// The directory.
    pub fn root(&self) -> &Path {
        self.root.path()
    }

    /// Exclusive flock on root/lock, held by the returned guard; all
    /// reads-modify-writes happen under it, so concurrent `moat run`s never
    /// race. Blocks until the lock is free. The lock file must be a regular
    /// file (a FIFO or a symbolic link there is refused).
    ///
    /// The first lock of a boot marks the state as that boot's and removes
    /// the records a crash in an earlier boot left unreadable; from then on
    /// records are written without waiting for the disk (see `boot.rs`).
    pub fn lock(&self) -> Result<StateLock<'_>, StateError> {
        let mut file = self.root.open_lock(LOCK_FILE)?;
        let file = loop {
            match Flock::lock(file, FlockArg::LockExclusive) {
                Ok(locked) => break locked,
                Err((f, Errno::EINTR)) => file = f,
                Err((_, errno)) => {
                    return Err(StateError::Io {
                        path: self.root.path().join(LOCK_FILE),
                        op: "lock",
                        error: std::io::Error::from(errno),
                    })
                }
            }
        };
        // The lock belongs to this open file description and is released
        // when the guard closes it, also if the process dies.
        let mut lock = StateLock {
            dir: self,
            _file: file,
            durable: true,
        };
        if let Some(now) = boot::current() {
            lock.mark_boot(&now)?;
            lock.durable = false;
        }
        Ok(lock)
    }

    /// Reads without locking (for `moat ps`): every record, stale ones
    /// included (check [`WorkloadRecord::is_alive`]). A record that cannot
    /// be used (not a regular file, too large, not a record) is skipped
    /// with a warning naming it; [`StateDir::list_with_errors`] returns
    /// those as errors instead. Sorted by start time.
    pub fn list(&self) -> Result<Vec<WorkloadRecord>, StateError> {
        let (records, errors) = self.list_with_errors()?;
        for e in errors {
            log::warn!("{e}");
        }
        Ok(records)
    }

    /// Like [`StateDir::list`], but returns unusable records as errors
    /// (each naming its file) next to the good ones.
    pub fn list_with_errors(&self) -> Result<(Vec<WorkloadRecord>, Vec<StateError>), StateError> {
        let mut records = Vec::new();
        let mut errors = Vec::new();
        for rec in self.scan()? {
            match rec {
                Ok(r) => records.push(r),
                Err(e) => errors.push(e),
            }
        }
        sort_by_start(&mut records);
        Ok((records, errors))
    }

    /// The record of workload `name`, if there is one (stale or not).
    /// Reads without locking.
    pub fn record(&self, name: &str) -> Result<Option<WorkloadRecord>, StateError> {
        validate_name(name)?;
        read_record(&self.workloads, name)
    }

    /// The exit record of the last workload named `name`, if any.
    pub fn exit_record(&self, name: &str) -> Result<Option<ExitRecord>, StateError> {
        validate_name(name)?;
        read_named(&self.exits, name, |r: &ExitRecord| &r.name)
    }

    /// Every record file, read. Names that are not `*.json` are not moat's
    /// records and are left alone (temporary files among them).
    fn scan(&self) -> Result<Vec<Result<WorkloadRecord, StateError>>, StateError> {
        let mut out = Vec::new();
        for file_name in self.workloads.names()? {
            let Some(stem) = file_name.strip_suffix(RECORD_EXT) else {
                continue;
            };
            let rec = match validate_name(stem) {
                Err(e) => Err(StateError::Corrupt {
                    file: self.workloads.path().join(&file_name),
                    reason: format!("the file name is not a workload name: {e}"),
                }),
                // Removed since the directory was listed (an unlocked
                // reader racing a writer): it is simply gone.
                Ok(()) => match read_record(&self.workloads, stem) {
                    Ok(None) => continue,
                    Ok(Some(r)) => Ok(r),
                    Err(e) => Err(e),
                },
            };
            out.push(rec);
        }
        Ok(out)
    }
}

/// Oldest first; the name breaks ties.
fn sort_by_start(records: &mut [WorkloadRecord]) {
    records.sort_by(|a, b| (a.started_at_unix_ms, &a.name).cmp(&(b.started_at_unix_ms, &b.name)));
}

/// The file a record of workload `name` is kept in.
fn record_file(name: &str) -> String {
    format!("{name}{RECORD_EXT}")
}
