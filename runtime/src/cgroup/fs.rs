//! Reading and writing cgroup interface files, with errors that carry the
//! path and the operation.
//!
//! Unit tests run against a plain directory tree standing in for cgroupfs.
//! Under `cfg(test)` only, `create_dir` fills a new directory with the
//! interface files the kernel would show, and a test can make writes to
//! chosen files or removals of chosen directories fail, to exercise
//! rollback.

use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::path::Path;
use std::thread;
use std::time::{Duration, Instant};

use super::error::{CgroupError, Operation};

/// What a unit test can make fail.
#[cfg(test)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Writes to a file of the given name.
    Write,
    /// Removal of a directory of the given name.
    Remove,
}

#[cfg(test)]
thread_local! {
    /// Injected failures in this thread: what, which file name, which errno.
    static FAULTS: std::cell::RefCell<Vec<(Fault, String, i32)>> =
        const { std::cell::RefCell::new(Vec::new()) };
}

/// Makes every later `fault` operation in this thread on a file or
/// directory called `name` fail with `errno`, until [`clear_faults`].
#[cfg(test)]
pub fn inject(fault: Fault, name: &str, errno: i32) {
    FAULTS.with(|f| f.borrow_mut().push((fault, name.to_owned(), errno)));
}

/// Undoes [`inject`].
#[cfg(test)]
pub fn clear_faults() {
    FAULTS.with(|f| f.borrow_mut().clear());
}

#[cfg(test)]
fn injected(fault: Fault, path: &Path) -> Option<io::Error> {
    let name = path.file_name()?.to_str()?;
    FAULTS.with(|f| {
        f.borrow()
            .iter()
            .find(|(k, n, _)| *k == fault && n == name)
            .map(|(_, _, errno)| io::Error::from_raw_os_error(*errno))
    })
}

/// Stands in for the kernel in unit tests: fills a directory just made in a
/// fake tree with the interface files cgroupfs would show. A parent with
/// `cgroup.subtree_control` is v2: the child gets the controllers it
/// delegates. A parent with `tasks` is a v1 pids hierarchy.
#[cfg(test)]
fn fake_kernel_mkdir(path: &Path) {
    let Some(parent) = path.parent() else { return };
    let put = |name: &str, text: &str| {
        let _ = fs::write(path.join(name), text);
    };
    let mut pids = parent.join("tasks").exists();
    if let Ok(delegated) = fs::read_to_string(parent.join("cgroup.subtree_control")) {
        let controllers: Vec<&str> = delegated
            .split_whitespace()
            .map(|w| w.trim_start_matches('+'))
            .collect();
        pids = controllers.contains(&"pids");
        put("cgroup.controllers", &controllers.join(" "));
        put("cgroup.subtree_control", "");
        put("cgroup.kill", "");
    } else if pids {
        put("tasks", "");
    }
    put("cgroup.procs", "");
    if pids {
        put("pids.max", "max\n");
        put("pids.current", "0\n");
        put("pids.events", "max 0\n");
    }
}

/// Reads a whole interface file.
pub fn read(path: &Path) -> Result<String, CgroupError> {
    fs::read_to_string(path).map_err(|e| CgroupError::io(Operation::Read, path, e))
}

/// Writes `value` to an interface file in one `write(2)`, which is how
/// cgroupfs expects to receive it. The file is not created: on cgroupfs a
/// missing file means a controller is not enabled, and `ENOENT` says that
/// better than whatever `O_CREAT` would provoke.
pub fn write(path: &Path, value: &str) -> Result<(), CgroupError> {
    let err = |e| {
        CgroupError::io(
            Operation::Write {
                value: value.to_owned(),
            },
            path,
            e,
        )
    };
    #[cfg(test)]
    if let Some(e) = injected(Fault::Write, path) {
        return Err(err(e));
    }
    let mut file = OpenOptions::new()
        .write(true)
        // The fake trees of unit tests are regular files, which unlike
        // cgroupfs keep the old content's tail.
        .truncate(cfg!(test))
        .open(path)
        .map_err(err)?;
    file.write_all(value.as_bytes()).map_err(err)
}

/// Reads a file holding one unsigned integer (`pids.current`).
pub fn read_u64(path: &Path) -> Result<u64, CgroupError> {
    let text = read(path)?;
    let trimmed = text.trim();
    trimmed.parse().map_err(|_| CgroupError::Parse {
        path: path.to_owned(),
        content: trimmed.to_owned(),
        reason: "expected an unsigned integer",
    })
}

/// Reads a limit file holding an unsigned integer or `max` (`None`).
pub fn read_max(path: &Path) -> Result<Option<u64>, CgroupError> {
    let text = read(path)?;
    let trimmed = text.trim();
    if trimmed == "max" {
        return Ok(None);
    }
    trimmed.parse().map(Some).map_err(|_| CgroupError::Parse {
        path: path.to_owned(),
        content: trimmed.to_owned(),
        reason: "expected an unsigned integer or \"max\"",
    })
}

/// Reads one key of a flat-keyed file (`pids.events`: `max 3`). A missing
/// key is an error: every kernel with the file writes the keys moat reads.
pub fn read_key(path: &Path, key: &str) -> Result<u64, CgroupError> {
    let text = read(path)?;
    let value = text.lines().find_map(|line| {
        let mut words = line.split_whitespace();
        (words.next() == Some(key)).then(|| words.next())?
    });
    value
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| CgroupError::Parse {
            path: path.to_owned(),
            content: text.trim().to_owned(),
            reason: "expected a line \"<key> <unsigned integer>\" for the key asked for",
        })
}

/// Reads `cgroup.procs`: the thread-group ids in the cgroup. v1 may list a
/// process twice and in any order; the result is sorted and deduplicated.
pub fn read_procs(dir: &Path) -> Result<Vec<i32>, CgroupError> {
    let path = dir.join("cgroup.procs");
    let text = read(&path)?;
    let mut pids = Vec::new();
    for word in text.split_whitespace() {
        let pid = word.parse().map_err(|_| CgroupError::Parse {
            path: path.clone(),
            content: word.to_owned(),
            reason: "expected one process id per line",
        })?;
        pids.push(pid);
    }
    pids.sort_unstable();
    pids.dedup();
    Ok(pids)
}

/// Whether a space-separated list file (`cgroup.controllers`,
/// `cgroup.subtree_control`) names `controller`. A leading `+` is ignored so
/// that the fake trees of unit tests, where the written `+pids` stays as it
/// is, read like the kernel's.
pub fn list_contains(path: &Path, controller: &str) -> Result<bool, CgroupError> {
    let text = read(path)?;
    Ok(text
        .split_whitespace()
        .any(|w| w.trim_start_matches('+') == controller))
}

/// Creates one cgroup directory. Returns `Ok(false)` when it exists already
/// (a concurrent creator or an earlier run), so that callers can tell what
/// they own and must undo.
pub fn create_dir(path: &Path) -> Result<bool, CgroupError> {
    match fs::create_dir(path) {
        Ok(()) => {
            #[cfg(test)]
            fake_kernel_mkdir(path);
            Ok(true)
        }
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists && path.is_dir() => Ok(false),
        Err(e) => Err(CgroupError::io(Operation::CreateDir, path, e)),
    }
}

/// `dir` and every cgroup below it, parents before children. A directory
/// that is gone (meanwhile) is left out.
pub fn subtree(dir: &Path) -> Result<Vec<std::path::PathBuf>, CgroupError> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        let entries = match fs::read_dir(&d) {
            Ok(e) => e,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(CgroupError::io(Operation::Read, &d, e)),
        };
        let mut children = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|e| CgroupError::io(Operation::Read, &d, e))?;
            // cgroupfs holds interface files and child cgroups, nothing else.
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                children.push(entry.path());
            }
        }
        out.push(d);
        todo.extend(children);
    }
    Ok(out)
}

/// Removes the cgroup `dir` and every cgroup below it, children first;
/// see [`remove_dir`]. The common case, no cgroup below, costs one `rmdir`
/// and no directory listing.
pub fn remove_tree(dir: &Path) -> Result<(), CgroupError> {
    match remove_dir_once(dir) {
        Ok(()) => return Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(_) => {}
    }
    let dirs = subtree(dir)?;
    for d in dirs.iter().rev() {
        remove_dir(d).map_err(|e| CgroupError::io(Operation::RemoveDir, d, e))?;
    }
    Ok(())
}

/// How long `rmdir` is retried on `EBUSY`: a cgroup whose last process has
/// just been killed can report busy for a moment while the exit completes.
pub const REMOVE_RETRY: Duration = Duration::from_secs(2);

/// Removes one cgroup directory; a directory that is already gone counts as
/// removed. Retries `EBUSY` for [`REMOVE_RETRY`].
pub fn remove_dir(path: &Path) -> Result<(), io::Error> {
    let start = Instant::now();
    let mut pause = Duration::from_millis(5);
    loop {
        match remove_dir_once(path) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) && start.elapsed() < REMOVE_RETRY => {
                thread::sleep(pause);
                pause = (pause * 2).min(Duration::from_millis(100));
            }
            Err(e) => return Err(e),
        }
    }
}

/// Removes a shared parent that `create` made, when undoing a failed
/// `create`. A parent that is no longer empty is left alone without error:
/// another workload started to use it meanwhile.
pub fn remove_parent_dir(path: &Path) -> Result<(), io::Error> {
    match remove_dir_once(path) {
        Err(e)
            if e.kind() == io::ErrorKind::NotFound
                || matches!(e.raw_os_error(), Some(libc::EBUSY | libc::ENOTEMPTY)) =>
        {
            Ok(())
        }
        other => other,
    }
}

/// `rmdir` on cgroupfs removes a cgroup with its interface files (and
/// fails with `EBUSY` while it has children or processes). A plain
/// directory standing in for it in unit tests holds real files, which are
/// removed first unless it has subdirectories.
fn remove_dir_once(path: &Path) -> io::Result<()> {
    #[cfg(test)]
    {
        if let Some(e) = injected(Fault::Remove, path) {
            return Err(e);
        }
        let entries: Vec<_> = fs::read_dir(path)
            .map(|d| d.flatten().collect())
            .unwrap_or_default();
        if entries.iter().all(|e| !e.path().is_dir()) {
            for entry in entries {
                let _ = fs::remove_file(entry.path());
            }
        }
    }
    fs::remove_dir(path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cgroup::tests::TempTree;

    #[test]
    fn reads_values_and_reports_bad_content() {
        let t = TempTree::new("fs-read");
        let p = t.path().join("pids.max");
        fs::write(&p, "max\n").unwrap();
        assert_eq!(read_max(&p).unwrap(), None);
        fs::write(&p, "64\n").unwrap();
        assert_eq!(read_max(&p).unwrap(), Some(64));
        fs::write(&p, "lots\n").unwrap();
        let e = read_max(&p).unwrap_err().to_string();
        assert!(e.contains("pids.max") && e.contains("\"lots\""), "{e}");

        let c = t.path().join("pids.current");
        fs::write(&c, "7\n").unwrap();
        assert_eq!(read_u64(&c).unwrap(), 7);
        fs::write(&c, "-1\n").unwrap();
        assert!(read_u64(&c).is_err());

        let missing = t.path().join("nope");
        let e = read_u64(&missing).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::ENOENT));
        assert!(e.to_string().starts_with("reading "), "{e}");
    }

    #[test]
    fn flat_keyed_files() {
        let t = TempTree::new("fs-keys");
        let p = t.path().join("pids.events");
        fs::write(&p, "max 3\n").unwrap();
        assert_eq!(read_key(&p, "max").unwrap(), 3);
        // A key that only starts like the one asked for does not match.
        fs::write(&p, "max.imposed 9\nmax 4\n").unwrap();
        assert_eq!(read_key(&p, "max").unwrap(), 4);
        fs::write(&p, "other 1\n").unwrap();
        assert!(read_key(&p, "max").is_err());
        fs::write(&p, "max x\n").unwrap();
        assert!(read_key(&p, "max").is_err());
    }

    #[test]
    fn procs_are_sorted_and_deduplicated() {
        let t = TempTree::new("fs-procs");
        fs::write(t.path().join("cgroup.procs"), "30\n10\n30\n").unwrap();
        assert_eq!(read_procs(t.path()).unwrap(), vec![10, 30]);
        fs::write(t.path().join("cgroup.procs"), "").unwrap();
        assert_eq!(read_procs(t.path()).unwrap(), Vec::<i32>::new());
        fs::write(t.path().join("cgroup.procs"), "1\nzz\n").unwrap();
        assert!(read_procs(t.path()).is_err());
    }

    #[test]
    fn injected_write_failure_names_file_and_value() {
        let t = TempTree::new("fs-inject");
        fs::write(t.path().join("pids.max"), "max\n").unwrap();
        inject(Fault::Write, "pids.max", libc::EINVAL);
        let e = write(&t.path().join("pids.max"), "64").unwrap_err();
        clear_faults();
        assert_eq!(e.raw_os_error(), Some(libc::EINVAL));
        let msg = e.to_string();
        assert!(
            msg.starts_with("writing \"64\" to ") && msg.contains("pids.max"),
            "{msg}"
        );
        write(&t.path().join("pids.max"), "64").unwrap();
        assert_eq!(fs::read_to_string(t.path().join("pids.max")).unwrap(), "64");
        // Not created when missing, as on cgroupfs.
        let e = write(&t.path().join("cgroup.kill"), "1").unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::ENOENT));
    }

    #[test]
    fn create_and_remove_dirs() {
        let t = TempTree::new("fs-dirs");
        let d = t.path().join("a");
        assert!(create_dir(&d).unwrap());
        assert!(!create_dir(&d).unwrap());
        fs::write(d.join("pids.max"), "max").unwrap();
        remove_dir(&d).unwrap();
        assert!(!d.exists());
        remove_dir(&d).unwrap(); // already gone is fine
                                 // A file where a directory should be is an error, not "exists".
        let f = t.path().join("file");
        fs::write(&f, "").unwrap();
        assert!(create_dir(&f).is_err());
        assert!(create_dir(&t.path().join("missing/child")).is_err());
    }
}
