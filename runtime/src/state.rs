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

use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io::{self, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::userns::UserNamespace;

/// Where the state lives unless told otherwise (`/run` is a tmpfs, so
/// records vanish with a reboot, as the processes they describe do).
pub const DEFAULT_STATE_DIR: &str = "/run/moat";

/// The longest workload name.
pub const MAX_NAME_LEN: usize = 64;

const WORKLOADS_DIR: &str = "workloads";
const EXITS_DIR: &str = "exits";
const LOCK_FILE: &str = "lock";
const RECORD_EXT: &str = ".json";
/// Suffix of the temp file a record is written to before the rename;
/// readers skip these.
const TEMP_EXT: &str = ".tmp";

/// The state directory could not be used, or a request on it is refused.
/// Every variant renders as one line naming the file or name at fault.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// A file system operation failed.
    #[error("{}: cannot {op}: {error}", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// What was being done, e.g. `create directory`, `lock`, `rename`.
        op: &'static str,
        /// The underlying I/O error.
        error: io::Error,
    },
    /// A record file cannot be parsed.
    #[error("{}: corrupt state record: {reason}", file.display())]
    Corrupt {
        /// The record file.
        file: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// A live workload already has this name.
    #[error(
        "a workload named {name:?} is already running (moat run pid {supervisor_pid}{}); \
         choose another --name",
        workload_pid.map(|p| format!(", workload pid {p}")).unwrap_or_default()
    )]
    NameTaken {
        /// The name.
        name: String,
        /// The `moat run` process of the running workload.
        supervisor_pid: i32,
        /// The workload's own process, if started.
        workload_pid: Option<i32>,
    },
    /// A workload name is not allowed.
    #[error("invalid workload name {name:?}: {reason}")]
    InvalidName {
        /// The name as given.
        name: String,
        /// Why it is refused.
        reason: String,
    },
    /// A process could not be identified.
    #[error("/proc/{pid}/stat: {reason}")]
    Proc {
        /// The process id.
        pid: i32,
        /// Why.
        reason: String,
    },
}

/// A process named so that a recycled pid is not mistaken for it: the pid
/// and its start time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ProcessRef {
    /// Process id (in the initial pid namespace).
    pub pid: i32,
    /// Field 22 of `/proc/PID/stat`: clock ticks after boot at which the
    /// process started.
    pub start_time: u64,
}

impl ProcessRef {
    /// Identifies the running process `pid`.
    pub fn of(pid: i32) -> Result<ProcessRef, StateError> {
        let (_, start_time) = read_stat(pid)?;
        Ok(ProcessRef { pid, start_time })
    }

    /// Whether this very process still runs: the pid exists, has the same
    /// start time (so it was not reused) and is not a zombie (a killed
    /// process whose parent has not reaped it is gone for our purposes).
    pub fn is_alive(&self) -> bool {
        match read_stat(self.pid) {
            Ok((state, start_time)) => {
                start_time == self.start_time && !matches!(state, 'Z' | 'X' | 'x')
            }
            Err(_) => false,
        }
    }
}

/// Reads the state letter and start time of `pid`.
fn read_stat(pid: i32) -> Result<(char, u64), StateError> {
    if pid <= 0 {
        return Err(StateError::Proc {
            pid,
            reason: "not a process id".to_string(),
        });
    }
    let text = fs::read_to_string(format!("/proc/{pid}/stat")).map_err(|e| StateError::Proc {
        pid,
        reason: if e.kind() == io::ErrorKind::NotFound {
            "no such process".to_string()
        } else {
            e.to_string()
        },
    })?;
    parse_stat(&text).map_err(|reason| StateError::Proc { pid, reason })
}

/// Parses the state (field 3) and start time (field 22) of a
/// `/proc/PID/stat` line.
fn parse_stat(text: &str) -> Result<(char, u64), String> {
    // Field 2 is the command name in parentheses, and may itself contain
    // spaces and parentheses; it ends at the last ')'.
    let after = text
        .rfind(')')
        .map(|i| &text[i + 1..])
        .ok_or_else(|| "no ')' after the command name".to_string())?;
    let fields: Vec<&str> = after.split_whitespace().collect();
    // fields[0] is field 3 (state), so field 22 is fields[19].
    let state = fields
        .first()
        .and_then(|s| s.chars().next())
        .ok_or_else(|| "no state field".to_string())?;
    let start = fields
        .get(19)
        .ok_or_else(|| format!("{} fields, start time (field 22) missing", fields.len() + 2))?;
    let start_time = start
        .parse::<u64>()
        .map_err(|_| format!("start time (field 22) {start:?} is not a number"))?;
    Ok((state, start_time))
}

/// A running workload, as `root/workloads/<name>.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkloadRecord {
    /// The workload's name (also the file name).
    pub name: String,
    /// The `moat run` process.
    pub supervisor: ProcessRef,
    /// The workload, once started.
    pub pid: Option<ProcessRef>,
    /// The command and its arguments.
    pub command: Vec<String>,
    /// `default`, `unconfined` or a path.
    pub seccomp_profile: String,
    /// The applied user namespace, if any.
    pub userns: Option<UserNamespace>,
    /// Whether the user namespace was allocated by `--userns auto`.
    pub userns_auto: bool,
    /// The workload's own pids limit; `None` for no own limit or unlimited.
    pub pids_limit: Option<u64>,
    /// The pids limit as given: `64`, `unlimited`, `inherit`.
    pub pids_limit_text: String,
    /// The workload's pids cgroup (v1 hierarchy).
    pub cgroup_pids: PathBuf,
    /// The workload's cgroup in the unified (v2) hierarchy.
    pub cgroup_v2: PathBuf,
    /// When the workload was started, in ms after the Unix epoch.
    pub started_at_unix_ms: u64,
    /// The namespaces the workload has of its own, as `/proc/PID/ns` names
    /// them (`cgroup`, `ipc`, `mnt`, `pid`, `user`); empty in records
    /// written before moat recorded them.
    #[serde(default)]
    pub namespaces: Vec<String>,
}

impl WorkloadRecord {
    /// Whether the supervisor or the workload still runs. A SIGKILLed
    /// supervisor leaves the workload running, and while it runs its user
    /// namespace range must stay reserved.
    pub fn is_alive(&self) -> bool {
        self.supervisor.is_alive() || self.pid.is_some_and(|p| p.is_alive())
    }
}

/// How a workload ended, as `root/exits/<name>.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExitRecord {
    /// The workload's name.
    pub name: String,
    /// The workload's pid, if it was started.
    pub pid: Option<i32>,
    /// Exit code (128 + signal when killed by one, as shells report it).
    pub exit_code: i32,
    /// The signal that killed it, if any.
    pub signal: Option<i32>,
    /// How often the pids limit refused a fork.
    pub pids_limit_hits: u64,
    /// Start, ms after the Unix epoch.
    pub started_at_unix_ms: u64,
    /// End, ms after the Unix epoch.
    pub ended_at_unix_ms: u64,
    /// Why the workload could not be run, if it could not.
    pub error: Option<String>,
}

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
        loop {
            // SAFETY: flock on a file descriptor we own; no memory involved.
            let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) };
            if rc == 0 {
                break;
            }
            let error = io::Error::last_os_error();
            if error.kind() != io::ErrorKind::Interrupted {
                return Err(StateError::Io {
                    path,
                    op: "lock",
                    error,
                });
            }
        }
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

/// Holds the state lock; every modification goes through it.
#[derive(Debug)]
pub struct StateLock<'a> {
    dir: &'a StateDir,
    _file: File,
}

impl StateLock<'_> {
    /// Running records; stale ones (not alive) are removed from the
    /// directory and returned separately so the caller can clean their
    /// cgroups. Returns `(running, stale)`. A record that cannot be parsed
    /// is treated as stale: it is removed, with a warning naming the file
    /// (it cannot be returned, having no readable content).
    pub fn running(&self) -> Result<(Vec<WorkloadRecord>, Vec<WorkloadRecord>), StateError> {
        let mut running = Vec::new();
        let mut stale = Vec::new();
        for (path, rec) in self.dir.scan()? {
            match rec {
                Ok(r) if r.is_alive() => running.push(r),
                Ok(r) => {
                    remove_if_exists(&path)?;
                    stale.push(r);
                }
                Err(e) => {
                    log::warn!("{e}; removing it");
                    remove_if_exists(&path)?;
                }
            }
        }
        sort_by_start(&mut running);
        Ok((running, stale))
    }

    /// Adds a record; error [`StateError::NameTaken`] if a live record with
    /// this name exists (a stale or corrupt one is replaced).
    pub fn insert(&self, rec: &WorkloadRecord) -> Result<(), StateError> {
        validate_name(&rec.name)?;
        let path = self.dir.workload_path(&rec.name);
        match read_record(&path, &rec.name) {
            Ok(Some(old)) if old.is_alive() => {
                return Err(StateError::NameTaken {
                    name: rec.name.clone(),
                    supervisor_pid: old.supervisor.pid,
                    workload_pid: old.pid.map(|p| p.pid),
                })
            }
            Ok(_) => {}
            Err(e) => log::warn!("{e}; replacing it"),
        }
        write_atomic(&path, rec)
    }

    /// Replaces the record of `rec.name` (writes it if it is missing).
    pub fn update(&self, rec: &WorkloadRecord) -> Result<(), StateError> {
        validate_name(&rec.name)?;
        write_atomic(&self.dir.workload_path(&rec.name), rec)
    }

    /// Removes the record of `name`; removing a missing record is not an
    /// error (the workload may have been cleaned up as stale already).
    pub fn remove(&self, name: &str) -> Result<(), StateError> {
        validate_name(name)?;
        remove_if_exists(&self.dir.workload_path(name))
    }

    /// Writes the exit record of `rec.name`, replacing an older one.
    pub fn write_exit(&self, rec: &ExitRecord) -> Result<(), StateError> {
        validate_name(&rec.name)?;
        write_atomic(&self.dir.exit_path(&rec.name), rec)
    }
}

/// Reads a workload record; `None` if the file does not exist.
fn read_record(path: &Path, name: &str) -> Result<Option<WorkloadRecord>, StateError> {
    read_named(path, name, |r: &WorkloadRecord| &r.name)
}

/// Reads the record of workload `name` (whose own name `name_of` gives);
/// `None` if the file does not exist.
fn read_named<T: DeserializeOwned>(
    path: &Path,
    name: &str,
    name_of: impl Fn(&T) -> &str,
) -> Result<Option<T>, StateError> {
    let Some(bytes) = read_optional(path)? else {
        return Ok(None);
    };
    let rec: T = serde_json::from_slice(&bytes).map_err(|e| StateError::Corrupt {
        file: path.to_path_buf(),
        reason: e.to_string(),
    })?;
    // A record under another name's file would let two workloads share a
    // name; such a file was not written by us.
    let found = name_of(&rec);
    if found != name {
        return Err(StateError::Corrupt {
            file: path.to_path_buf(),
            reason: format!(
                "it holds the record of {found:?}, not of the workload its file name says"
            ),
        });
    }
    Ok(Some(rec))
}

fn read_optional(path: &Path) -> Result<Option<Vec<u8>>, StateError> {
    match fs::read(path) {
        Ok(b) => Ok(Some(b)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(error) => Err(StateError::Io {
            path: path.to_path_buf(),
            op: "read",
            error,
        }),
    }
}

fn remove_if_exists(path: &Path) -> Result<(), StateError> {
    match fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(error) => Err(StateError::Io {
            path: path.to_path_buf(),
            op: "remove",
            error,
        }),
    }
}

/// Writes `value` as JSON to `path` through a temp file and a rename, so
/// that readers never see a partial record. Callers hold the lock, so one
/// fixed temp name per record suffices (and a crashed writer's leftover is
/// overwritten rather than accumulating).
fn write_atomic<T: Serialize>(path: &Path, value: &T) -> Result<(), StateError> {
    let file_name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = path.with_file_name(format!(".{file_name}{TEMP_EXT}"));
    let io_err = |path: &Path, op, error| StateError::Io {
        path: path.to_path_buf(),
        op,
        error,
    };
    let mut bytes = serde_json::to_vec_pretty(value)
        .map_err(|e| io_err(path, "encode", io::Error::other(e)))?;
    bytes.push(b'\n');
    let result = (|| {
        let mut f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(|e| io_err(&tmp, "create", e))?;
        f.write_all(&bytes).map_err(|e| io_err(&tmp, "write", e))?;
        // Without this a crash after the rename could leave an empty file
        // on a disk-backed state directory.
        f.sync_all().map_err(|e| io_err(&tmp, "sync", e))?;
        fs::rename(&tmp, path).map_err(|e| io_err(path, "rename temp file into", e))
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// Validates a workload name: `[a-zA-Z0-9_.-]`, 1..=64 chars, not `.` or
/// `..`. The error says which character is invalid.
pub fn validate_name(name: &str) -> Result<(), StateError> {
    let err = |reason: String| StateError::InvalidName {
        name: name.to_string(),
        reason,
    };
    if name.is_empty() {
        return Err(err("it is empty".to_string()));
    }
    if let Some((i, c)) = name.chars().enumerate().find(|&(_, c)| !allowed_char(c)) {
        return Err(err(format!(
            "character {c:?} at position {} is not allowed (use letters, digits, '_', '.' and '-')",
            i + 1
        )));
    }
    // Only ASCII is left, so bytes are characters.
    if name.len() > MAX_NAME_LEN {
        return Err(err(format!(
            "it is {} characters long; at most {MAX_NAME_LEN} are allowed",
            name.len()
        )));
    }
    if name == "." || name == ".." {
        return Err(err("\".\" and \"..\" are reserved".to_string()));
    }
    Ok(())
}

fn allowed_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-')
}

/// A default name from the command: basename of argv\[0\] sanitised to the
/// allowed set (other characters become `_`), plus `-` and 6 random hex
/// chars, total <= 64. An empty basename becomes `workload`.
pub fn generate_name(command: &str) -> String {
    const SUFFIX_LEN: usize = 7; // "-" and 6 hex digits
    let base = command
        .trim_end_matches('/')
        .rsplit('/')
        .next()
        .unwrap_or("");
    let mut name: String = base
        .chars()
        .map(|c| if allowed_char(c) { c } else { '_' })
        .take(MAX_NAME_LEN - SUFFIX_LEN)
        .collect();
    if name.is_empty() {
        name.push_str("workload");
    }
    let mut bytes = [0u8; 3];
    random_bytes(&mut bytes);
    name.push('-');
    for b in bytes {
        name.push_str(&format!("{b:02x}"));
    }
    name
}

/// Fills `buf` from the kernel's random source. Names need to be unlikely
/// to collide, not secret, so a last resort of time and pid is acceptable
/// where neither `getrandom` nor `/dev/urandom` works.
fn random_bytes(buf: &mut [u8]) {
    let mut filled = 0;
    while filled < buf.len() {
        let rest = &mut buf[filled..];
        // SAFETY: the pointer and length describe `rest`, which is valid
        // for writes of that many bytes.
        let n = unsafe { libc::getrandom(rest.as_mut_ptr().cast(), rest.len(), 0) };
        if n > 0 {
            filled += n as usize;
        } else if n < 0 && io::Error::last_os_error().kind() == io::ErrorKind::Interrupted {
            continue;
        } else {
            break;
        }
    }
    if filled == buf.len() {
        return;
    }
    if let Ok(mut f) = File::open("/dev/urandom") {
        if io::Read::read_exact(&mut f, buf).is_ok() {
            return;
        }
    }
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let mix = nanos ^ (u128::from(std::process::id()) << 64);
    for (i, b) in buf.iter_mut().enumerate() {
        *b = (mix >> ((i % 16) * 8)) as u8;
    }
}

/// Milliseconds after the Unix epoch, for the `*_unix_ms` fields.
pub fn now_unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;
    use std::process::{Child, Command};
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    static COUNTER: AtomicUsize = AtomicUsize::new(0);

    /// A state root under the system temp dir, removed on drop.
    struct TempRoot(PathBuf);

    impl TempRoot {
        fn new(tag: &str) -> TempRoot {
            let n = COUNTER.fetch_add(1, Ordering::Relaxed);
            let p =
                std::env::temp_dir().join(format!("moat-state-{tag}-{}-{n}", std::process::id()));
            let _ = fs::remove_dir_all(&p);
            TempRoot(p)
        }
    }

    impl Drop for TempRoot {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    /// A `sleep` child, killed and reaped on drop.
    struct Sleeper(Child);

    impl Sleeper {
        fn new() -> Sleeper {
            Sleeper(
                Command::new("sleep")
                    .arg("30")
                    .spawn()
                    .expect("spawn sleep"),
            )
        }
        fn pid(&self) -> i32 {
            self.0.id() as i32
        }
        fn process_ref(&self) -> ProcessRef {
            ProcessRef::of(self.pid()).expect("sleep is running")
        }
    }

    impl Drop for Sleeper {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }

    fn me() -> ProcessRef {
        ProcessRef::of(std::process::id() as i32).unwrap()
    }

    fn record(name: &str, supervisor: ProcessRef) -> WorkloadRecord {
        WorkloadRecord {
            name: name.to_string(),
            supervisor,
            pid: None,
            command: vec!["sleep".to_string(), "30".to_string()],
            seccomp_profile: "default".to_string(),
            userns: Some(UserNamespace::from_maps(vec![crate::userns::IdMap {
                container_id: 0,
                host_id: 100000,
                size: 65536,
            }])),
            userns_auto: true,
            pids_limit: Some(64),
            pids_limit_text: "64".to_string(),
            cgroup_pids: PathBuf::from("/sys/fs/cgroup/pids/moat/x"),
            cgroup_v2: PathBuf::from("/sys/fs/cgroup/moat/x"),
            started_at_unix_ms: 1_700_000_000_000,
            namespaces: Vec::new(),
        }
    }

    /// A reference to a process that has exited and been reaped.
    fn dead_ref() -> ProcessRef {
        let mut s = Sleeper::new();
        let r = s.process_ref();
        s.0.kill().unwrap();
        s.0.wait().unwrap();
        r
    }

    #[test]
    fn validate_name_accepts_the_allowed_set() {
        for n in [
            "a",
            "web-1",
            "A_b.c-9",
            "-x",
            ".hidden",
            "...",
            &"x".repeat(64),
        ] {
            validate_name(n).unwrap_or_else(|e| panic!("{n:?}: {e}"));
        }
    }

    #[test]
    fn validate_name_refusals() {
        let msg = |n: &str| validate_name(n).unwrap_err().to_string();
        assert!(msg("").contains("it is empty"));
        let e = msg(&"x".repeat(65));
        assert!(e.contains("65 characters long; at most 64"), "{e}");
        assert!(msg(".").contains("reserved"));
        assert!(msg("..").contains("reserved"));
        let e = msg("a/b");
        assert!(e.contains("character '/' at position 2"), "{e}");
        let e = msg("web 1");
        assert!(e.contains("character ' ' at position 4"), "{e}");
        let e = msg("héllo");
        assert!(e.contains("character 'é' at position 2"), "{e}");
        let e = msg("../etc");
        assert!(e.contains("'/'"), "{e}");
    }

    fn check_generated(name: &str, prefix: &str) {
        validate_name(name).unwrap_or_else(|e| panic!("{name:?}: {e}"));
        assert!(name.len() <= MAX_NAME_LEN, "{name}");
        let (base, hex) = name.rsplit_once('-').unwrap();
        assert_eq!(base, prefix, "{name}");
        assert_eq!(hex.len(), 6, "{name}");
        assert!(hex.chars().all(|c| c.is_ascii_hexdigit()), "{name}");
    }

    #[test]
    fn generate_name_from_commands() {
        check_generated(&generate_name("/usr/bin/sleep"), "sleep");
        check_generated(&generate_name("sleep"), "sleep");
        check_generated(&generate_name("./my prog!"), "my_prog_");
        check_generated(&generate_name("/opt/app/"), "app");
        check_generated(&generate_name("ünï"), "_n_");
        check_generated(&generate_name(""), "workload");
        check_generated(&generate_name("/"), "workload");
        check_generated(&generate_name(".."), "..");
        let long = "a".repeat(200);
        let n = generate_name(&long);
        assert_eq!(n.len(), 64);
        check_generated(&n, &"a".repeat(57));
    }

    #[test]
    fn generated_names_differ() {
        let a = generate_name("x");
        let b = generate_name("x");
        let c = generate_name("x");
        // Three equal draws of 24 random bits would be a broken source.
        assert!(a != b || b != c, "{a} {b} {c}");
    }

    #[test]
    fn open_creates_private_directories() {
        let t = TempRoot::new("open");
        let root = t.0.join("nested/state");
        let dir = StateDir::open(&root).unwrap();
        assert_eq!(dir.root(), root);
        for d in [root.clone(), root.join("workloads"), root.join("exits")] {
            let mode = fs::metadata(&d).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o700, "{}", d.display());
        }
        // Opening again is fine.
        StateDir::open(&root).unwrap();
    }

    #[test]
    fn open_reports_the_path() {
        let t = TempRoot::new("open-fail");
        fs::create_dir_all(&t.0).unwrap();
        let file = t.0.join("file");
        fs::write(&file, "").unwrap();
        let e = StateDir::open(&file.join("state")).unwrap_err().to_string();
        assert!(e.contains(&file.display().to_string()), "{e}");
        assert!(e.contains("cannot create directory"), "{e}");
    }

    #[test]
    fn record_round_trip() {
        let t = TempRoot::new("roundtrip");
        let dir = StateDir::open(&t.0).unwrap();
        let mut rec = record("web", me());
        {
            let lock = dir.lock().unwrap();
            lock.insert(&rec).unwrap();
            rec.pid = Some(me());
            lock.update(&rec).unwrap();
        }
        assert_eq!(dir.list().unwrap(), vec![rec.clone()]);
        assert_eq!(dir.record("web").unwrap(), Some(rec.clone()));
        assert_eq!(dir.record("other").unwrap(), None);
        let text = fs::read_to_string(t.0.join("workloads/web.json")).unwrap();
        let back: WorkloadRecord = serde_json::from_str(&text).unwrap();
        assert_eq!(back, rec);
        let mode = fs::metadata(t.0.join("workloads/web.json"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        // No temp file left behind.
        let names: Vec<_> = fs::read_dir(t.0.join("workloads"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("web.json")]);

        let lock = dir.lock().unwrap();
        let (running, stale) = lock.running().unwrap();
        assert_eq!(running, vec![rec]);
        assert!(stale.is_empty());
        lock.remove("web").unwrap();
        lock.remove("web").unwrap(); // idempotent
        assert!(dir.list().unwrap().is_empty());
    }

    #[test]
    fn exit_record_round_trip() {
        let t = TempRoot::new("exit");
        let dir = StateDir::open(&t.0).unwrap();
        assert_eq!(dir.exit_record("web").unwrap(), None);
        let exit = ExitRecord {
            name: "web".to_string(),
            pid: Some(1234),
            exit_code: 137,
            signal: Some(9),
            pids_limit_hits: 3,
            started_at_unix_ms: 1,
            ended_at_unix_ms: 2,
            error: None,
        };
        dir.lock().unwrap().write_exit(&exit).unwrap();
        assert_eq!(dir.exit_record("web").unwrap(), Some(exit.clone()));
        let newer = ExitRecord {
            exit_code: 0,
            signal: None,
            error: Some("boom".to_string()),
            ..exit
        };
        dir.lock().unwrap().write_exit(&newer).unwrap();
        assert_eq!(dir.exit_record("web").unwrap(), Some(newer));
    }

    #[test]
    fn corrupt_exit_record_is_an_error_naming_the_file() {
        let t = TempRoot::new("exit-corrupt");
        let dir = StateDir::open(&t.0).unwrap();
        let path = t.0.join("exits/web.json");
        fs::write(&path, "{ not json").unwrap();
        let e = dir.exit_record("web").unwrap_err().to_string();
        assert!(e.starts_with(&path.display().to_string()), "{e}");
        assert!(e.contains("corrupt state record"), "{e}");
    }

    #[test]
    fn invalid_names_are_refused_before_touching_files() {
        let t = TempRoot::new("badname");
        let dir = StateDir::open(&t.0).unwrap();
        let lock = dir.lock().unwrap();
        let rec = record("../escape", me());
        assert!(matches!(
            lock.insert(&rec),
            Err(StateError::InvalidName { .. })
        ));
        assert!(matches!(
            lock.update(&rec),
            Err(StateError::InvalidName { .. })
        ));
        assert!(matches!(
            lock.remove(".."),
            Err(StateError::InvalidName { .. })
        ));
        assert!(matches!(
            dir.exit_record("a/b"),
            Err(StateError::InvalidName { .. })
        ));
        assert!(!t.0.join("escape.json").exists());
    }

    #[test]
    fn process_ref_of_self_and_bad_pids() {
        let r = me();
        assert_eq!(r.pid, std::process::id() as i32);
        assert!(r.start_time > 0);
        assert!(r.is_alive());
        for pid in [0, -1] {
            let e = ProcessRef::of(pid).unwrap_err().to_string();
            assert!(e.contains("not a process id"), "{e}");
        }
        // pid_max is at most 2^22.
        let e = ProcessRef::of(i32::MAX).unwrap_err().to_string();
        assert!(e.contains("no such process"), "{e}");
    }

    #[test]
    fn parse_stat_handles_odd_command_names() {
        let mut fields: Vec<String> = (3..=52).map(|i| i.to_string()).collect();
        fields[0] = "S".to_string();
        let tail = fields.join(" ");
        assert_eq!(
            parse_stat(&format!("42 (a) b) (c) {tail}\n")),
            Ok(('S', 22))
        );
        assert_eq!(parse_stat(&format!("42 (x y) {tail}")), Ok(('S', 22)));
        assert!(parse_stat("42 no paren").unwrap_err().contains("')'"));
        assert!(parse_stat("42 (x) S 1 2").unwrap_err().contains("field 22"));
        let mut bad = fields.clone();
        bad[19] = "x".to_string();
        assert!(parse_stat(&format!("42 (x) {}", bad.join(" ")))
            .unwrap_err()
            .contains("not a number"));
        assert!(parse_stat("42 (x)").is_err());
    }

    #[test]
    fn exited_supervisor_is_stale() {
        let r = dead_ref();
        assert!(!r.is_alive());
        assert!(!record("w", r).is_alive());
    }

    #[test]
    fn zombie_supervisor_is_stale() {
        let mut s = Sleeper::new();
        let r = s.process_ref();
        assert!(r.is_alive());
        s.0.kill().unwrap();
        // Not reaped yet: wait until the kernel shows it as a zombie.
        let deadline = Instant::now() + Duration::from_secs(10);
        while read_stat(r.pid).ok().map(|(st, _)| st) != Some('Z') {
            assert!(Instant::now() < deadline, "child never became a zombie");
            std::thread::sleep(Duration::from_millis(5));
        }
        assert!(!r.is_alive());
        assert!(!record("w", r).is_alive());
    }

    #[test]
    fn reused_pid_is_stale() {
        let real = me();
        let reused = ProcessRef {
            pid: real.pid,
            start_time: real.start_time + 1,
        };
        assert!(!reused.is_alive());
        assert!(!record("w", reused).is_alive());
    }

    #[test]
    fn live_workload_keeps_a_record_alive_without_its_supervisor() {
        let workload = Sleeper::new();
        let mut rec = record("w", dead_ref());
        assert!(!rec.is_alive());
        rec.pid = Some(workload.process_ref());
        assert!(rec.is_alive());
    }

    #[test]
    fn running_removes_and_returns_stale_records() {
        let t = TempRoot::new("stale");
        let dir = StateDir::open(&t.0).unwrap();
        let sup = Sleeper::new();
        let live = record("live", sup.process_ref());
        let dead = record("dead", dead_ref());
        let reused = record(
            "reused",
            ProcessRef {
                pid: sup.pid(),
                start_time: sup.process_ref().start_time + 1,
            },
        );
        {
            let lock = dir.lock().unwrap();
            for r in [&live, &dead, &reused] {
                lock.insert(r).unwrap();
            }
        }
        // The unlocked listing reports all, stale included, and deletes none.
        assert_eq!(dir.list().unwrap().len(), 3);
        assert_eq!(dir.list().unwrap().len(), 3);

        let lock = dir.lock().unwrap();
        let (running, mut stale) = lock.running().unwrap();
        assert_eq!(running, vec![live.clone()]);
        stale.sort_by(|a, b| a.name.cmp(&b.name));
        assert_eq!(stale, vec![dead, reused]);
        assert_eq!(dir.list().unwrap(), vec![live]);
        let (_, stale) = lock.running().unwrap();
        assert!(stale.is_empty());
    }

    #[test]
    fn corrupt_records_do_not_crash_anything() {
        let t = TempRoot::new("corrupt");
        let dir = StateDir::open(&t.0).unwrap();
        let good = record("good", me());
        dir.lock().unwrap().insert(&good).unwrap();
        let w = t.0.join("workloads");
        fs::write(w.join("bad.json"), "{\"name\": \"bad\", trunc").unwrap();
        fs::write(w.join("empty.json"), "").unwrap();
        // A record filed under another name.
        let mut other = record("other", me());
        other.name = "impostor".to_string();
        fs::write(w.join("other.json"), serde_json::to_vec(&other).unwrap()).unwrap();
        fs::write(w.join("bad name.json"), serde_json::to_vec(&good).unwrap()).unwrap();
        // Not records at all: ignored.
        fs::write(w.join(".good.json.tmp"), "partial").unwrap();
        fs::write(w.join("README"), "x").unwrap();

        assert_eq!(dir.list().unwrap(), vec![good.clone()]);
        let (records, errors) = dir.list_with_errors().unwrap();
        assert_eq!(records, vec![good.clone()]);
        let mut msgs: Vec<String> = errors.iter().map(|e| e.to_string()).collect();
        msgs.sort();
        assert_eq!(msgs.len(), 4, "{msgs:?}");
        for (m, file) in msgs
            .iter()
            .zip(["bad name.json", "bad.json", "empty.json", "other.json"])
        {
            assert!(m.starts_with(&w.join(file).display().to_string()), "{m}");
            assert!(m.contains("corrupt state record"), "{m}");
        }
        assert!(msgs[3].contains("\"impostor\""), "{}", msgs[3]);
        assert!(matches!(dir.record("bad"), Err(StateError::Corrupt { .. })));

        // Under the lock they are treated as stale and removed.
        let lock = dir.lock().unwrap();
        let (running, stale) = lock.running().unwrap();
        assert_eq!(running, vec![good]);
        assert!(stale.is_empty());
        for f in ["bad.json", "empty.json", "other.json", "bad name.json"] {
            assert!(!w.join(f).exists(), "{f}");
        }
        assert!(w.join("README").exists());
    }

    #[test]
    fn insert_refuses_a_live_name_and_replaces_a_stale_or_corrupt_one() {
        let t = TempRoot::new("taken");
        let dir = StateDir::open(&t.0).unwrap();
        let lock = dir.lock().unwrap();
        let sup = Sleeper::new();
        let first = record("web", sup.process_ref());
        lock.insert(&first).unwrap();
        let second = record("web", me());
        let e = lock.insert(&second).unwrap_err();
        match &e {
            StateError::NameTaken {
                name,
                supervisor_pid,
                workload_pid,
            } => {
                assert_eq!(name, "web");
                assert_eq!(*supervisor_pid, sup.pid());
                assert_eq!(*workload_pid, None);
            }
            other => panic!("{other:?}"),
        }
        assert!(e.to_string().contains("already running"), "{e}");
        assert_eq!(dir.record("web").unwrap(), Some(first));

        let stale = record("api", dead_ref());
        lock.insert(&stale).unwrap();
        let fresh = record("api", me());
        lock.insert(&fresh).unwrap();
        assert_eq!(dir.record("api").unwrap(), Some(fresh));

        fs::write(t.0.join("workloads/db.json"), "garbage").unwrap();
        let db = record("db", me());
        lock.insert(&db).unwrap();
        assert_eq!(dir.record("db").unwrap(), Some(db));
    }

    #[test]
    fn lock_is_exclusive() {
        let t = TempRoot::new("lock");
        let dir = Arc::new(StateDir::open(&t.0).unwrap());
        let released = Arc::new(AtomicBool::new(false));
        let guard = dir.lock().unwrap();
        let waiter = {
            let dir = Arc::clone(&dir);
            let released = Arc::clone(&released);
            std::thread::spawn(move || {
                let _g = dir.lock().unwrap();
                released.load(Ordering::SeqCst)
            })
        };
        std::thread::sleep(Duration::from_millis(200));
        released.store(true, Ordering::SeqCst);
        drop(guard);
        assert!(
            waiter.join().unwrap(),
            "second lock was granted while the first was held"
        );
    }
}
