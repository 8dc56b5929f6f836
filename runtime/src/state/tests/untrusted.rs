//! What the state directory refuses: entries that are not regular files,
//! oversized records, directories others could write, symbolic links
//! anywhere moat writes.

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::symlink;
use std::path::Path;
use std::time::{Duration, Instant};

use super::*;

fn mkfifo(path: &Path) {
    let c = CString::new(path.as_os_str().as_bytes()).unwrap();
    // SAFETY: a valid C string.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
}

fn chmod(path: &Path, mode: u32) {
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
}

fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// Lists the workloads and checks the one bad entry's message.
fn assert_listed_as_error(dir: &StateDir, file: &Path, needle: &str) {
    let start = Instant::now();
    let (records, errors) = dir.list_with_errors().unwrap();
    assert!(start.elapsed() < Duration::from_secs(5), "listing blocked");
    assert!(records.is_empty(), "{records:?}");
    assert_eq!(errors.len(), 1, "{errors:?}");
    let e = errors[0].to_string();
    assert!(e.starts_with(&file.display().to_string()), "{e}");
    assert!(e.contains(needle), "{needle:?} not in {e}");
    assert!(matches!(errors[0], StateError::Untrusted { .. }), "{e}");
    // Under the lock it stops the caller, naming the file.
    let e = dir.lock().unwrap().running().unwrap_err().to_string();
    assert!(e.contains(needle), "{e}");
}

#[test]
fn a_fifo_record_is_refused_without_blocking() {
    let t = TempRoot::new("fifo");
    let dir = StateDir::open(&t.0).unwrap();
    let f = t.0.join("workloads/x.json");
    mkfifo(&f);
    assert_listed_as_error(&dir, &f, "is a FIFO, not a regular file");
    let e = dir.record("x").unwrap_err().to_string();
    assert!(e.contains("FIFO"), "{e}");
}

#[test]
fn a_symlink_record_is_not_followed() {
    let t = TempRoot::new("symrec");
    let dir = StateDir::open(&t.0).unwrap();
    let f = t.0.join("workloads/z.json");
    symlink("/dev/zero", &f).unwrap();
    assert_listed_as_error(&dir, &f, "is a symbolic link, not a regular file");
    // Also when it points at a good record.
    fs::remove_file(&f).unwrap();
    let target = t.0.join("elsewhere.json");
    fs::write(&target, serde_json::to_vec(&record("z", me())).unwrap()).unwrap();
    symlink(&target, &f).unwrap();
    assert_listed_as_error(&dir, &f, "symbolic link");
}

#[test]
fn a_directory_or_device_record_is_refused() {
    let t = TempRoot::new("devrec");
    let dir = StateDir::open(&t.0).unwrap();
    let f = t.0.join("workloads/d.json");
    fs::create_dir(&f).unwrap();
    assert_listed_as_error(&dir, &f, "is a directory, not a regular file");
    fs::remove_dir(&f).unwrap();
    if is_root() {
        let c = CString::new(f.as_os_str().as_bytes()).unwrap();
        // SAFETY: a valid C string; makedev(1, 5) is /dev/zero.
        let rc = unsafe { libc::mknod(c.as_ptr(), libc::S_IFCHR | 0o600, libc::makedev(1, 5)) };
        assert_eq!(rc, 0);
        assert_listed_as_error(&dir, &f, "is a character device");
    }
}

#[test]
fn records_are_read_up_to_a_bound() {
    let t = TempRoot::new("big");
    let dir = StateDir::open(&t.0).unwrap();
    // A valid record padded with spaces to exactly the bound is read...
    let mut bytes = serde_json::to_vec(&record("big", me())).unwrap();
    bytes.resize(MAX_RECORD_BYTES as usize, b' ');
    let f = t.0.join("workloads/big.json");
    fs::write(&f, &bytes).unwrap();
    assert_eq!(dir.record("big").unwrap().unwrap().name, "big");
    // ...one byte more is not.
    bytes.push(b' ');
    fs::write(&f, &bytes).unwrap();
    assert_listed_as_error(
        &dir,
        &f,
        "is 262145 bytes, more than a record may have (262144)",
    );
    // Nor is a huge sparse one, which costs nothing on disk.
    fs::File::create(&f).unwrap().set_len(1 << 34).unwrap();
    assert_listed_as_error(&dir, &f, "is 17179869184 bytes");
}

#[test]
fn a_record_too_large_to_read_back_is_not_written() {
    let t = TempRoot::new("bigw");
    let dir = StateDir::open(&t.0).unwrap();
    let mut rec = record("w", me());
    rec.command = vec!["x".repeat(MAX_RECORD_BYTES as usize)];
    let e = dir.lock().unwrap().insert(&rec).unwrap_err().to_string();
    assert!(e.contains("more than moat reads back"), "{e}");
    assert!(dir.list().unwrap().is_empty());
    // What moat run records is cut to fit.
    rec.command = WorkloadRecord::command_for_record(&rec.command);
    dir.lock().unwrap().insert(&rec).unwrap();
    assert_eq!(dir.record("w").unwrap(), Some(rec));
}

#[test]
fn commands_are_cut_for_the_record() {
    let short = vec!["sleep".to_owned(), "30".to_owned()];
    assert_eq!(WorkloadRecord::command_for_record(&short), short);
    let long = vec![
        "sh".to_owned(),
        "-c".to_owned(),
        "é".repeat(MAX_COMMAND_BYTES),
        "tail".to_owned(),
    ];
    let cut = WorkloadRecord::command_for_record(&long);
    assert_eq!(cut.len(), 4, "{:?}", &cut[3]);
    assert_eq!(&cut[..2], &long[..2]);
    // Cut at a character boundary, within the budget.
    assert_eq!(cut[2].len(), MAX_COMMAND_BYTES - 4);
    let left = 2 * MAX_COMMAND_BYTES - (MAX_COMMAND_BYTES - 4) + 4;
    assert_eq!(cut[3], format!("[{left} more bytes not recorded]"));
}

#[test]
fn writes_never_follow_a_symlink_at_a_temporary_name() {
    let t = TempRoot::new("tmpsym");
    let dir = StateDir::open(&t.0).unwrap();
    let victim = t.0.join("victim");
    fs::write(&victim, "victim\n").unwrap();
    // The names an older moat used, and names like the ones used now.
    for sub in ["workloads", "exits"] {
        symlink(&victim, t.0.join(sub).join(".web.json.tmp")).unwrap();
        symlink(
            &victim,
            t.0.join(sub).join(".web.json.tmp-0000000000000000"),
        )
        .unwrap();
    }
    let lock = dir.lock().unwrap();
    let rec = record("web", me());
    lock.insert(&rec).unwrap();
    lock.write_exit(&ExitRecord {
        name: "web".to_string(),
        pid: None,
        exit_code: 0,
        signal: None,
        pids_limit_hits: 0,
        started_at_unix_ms: 0,
        ended_at_unix_ms: 0,
        error: None,
    })
    .unwrap();
    assert_eq!(fs::read_to_string(&victim).unwrap(), "victim\n");
    for f in ["workloads/web.json", "exits/web.json"] {
        let m = fs::symlink_metadata(t.0.join(f)).unwrap();
        assert!(m.file_type().is_file(), "{f}");
    }
    // Leftover temporaries go (the links, not what they point to); other
    // names are not moat's and stay.
    lock.remove_temporaries().unwrap();
    for sub in ["workloads", "exits"] {
        let d = t.0.join(sub);
        assert!(fs::symlink_metadata(d.join(".web.json.tmp-0000000000000000")).is_err());
        assert!(fs::symlink_metadata(d.join(".web.json.tmp")).is_ok());
    }
    assert_eq!(fs::read_to_string(&victim).unwrap(), "victim\n");
}

#[test]
fn a_state_directory_others_can_write_is_refused() {
    let t = TempRoot::new("perm");
    StateDir::open(&t.0).unwrap();
    let refused = |needle: &str, at: &Path| {
        let e = StateDir::open(&t.0).unwrap_err();
        assert!(matches!(e, StateError::Untrusted { .. }), "{e:?}");
        let e = e.to_string();
        assert!(e.starts_with(&at.display().to_string()), "{e}");
        assert!(e.contains(needle), "{needle:?} not in {e}");
    };
    chmod(&t.0, 0o770);
    refused("writable by group or others (mode 0770)", &t.0);
    chmod(&t.0, 0o1777);
    refused("writable by group or others (mode 1777)", &t.0);
    chmod(&t.0, 0o700);
    let w = t.0.join("workloads");
    chmod(&w, 0o702);
    refused("writable by group or others", &w);
    chmod(&w, 0o700);
    if is_root() {
        std::os::unix::fs::chown(&t.0, Some(65534), None).unwrap();
        refused("owned by uid 65534, not by root", &t.0);
        std::os::unix::fs::chown(&t.0, Some(0), None).unwrap();
        std::os::unix::fs::chown(t.0.join("exits"), Some(65534), None).unwrap();
        refused("owned by uid 65534", &t.0.join("exits"));
        std::os::unix::fs::chown(t.0.join("exits"), Some(0), None).unwrap();
    }
    StateDir::open(&t.0).unwrap();
}

#[test]
fn symbolic_links_in_place_of_state_directories_are_refused() {
    let t = TempRoot::new("symdir");
    fs::create_dir_all(t.0.join("real")).unwrap();
    chmod(&t.0.join("real"), 0o700);
    symlink(t.0.join("real"), t.0.join("state")).unwrap();
    let e = StateDir::open(&t.0.join("state")).unwrap_err().to_string();
    assert!(e.contains("is a symbolic link, not a directory"), "{e}");
    StateDir::open(&t.0.join("real")).unwrap();
    fs::remove_dir(t.0.join("real/exits")).unwrap();
    symlink(t.0.join("real/workloads"), t.0.join("real/exits")).unwrap();
    let e = StateDir::open(&t.0.join("real")).unwrap_err().to_string();
    assert!(
        e.starts_with(&t.0.join("real/exits").display().to_string()),
        "{e}"
    );
    assert!(e.contains("symbolic link"), "{e}");
}

#[test]
fn a_parent_others_could_rename_is_refused() {
    let t = TempRoot::new("parent");
    let state = t.0.join("shared/state");
    fs::create_dir_all(&state).unwrap();
    chmod(&state, 0o700);
    chmod(&t.0.join("shared"), 0o777);
    let e = StateDir::open(&state).unwrap_err().to_string();
    assert!(
        e.starts_with(&t.0.join("shared").display().to_string()),
        "{e}"
    );
    assert!(e.contains("without the sticky bit"), "{e}");
    assert!(e.contains(&state.display().to_string()), "{e}");
    // With the sticky bit (as /tmp has) others cannot rename it.
    chmod(&t.0.join("shared"), 0o1777);
    StateDir::open(&state).unwrap();
}

#[test]
fn a_lock_file_that_is_not_a_regular_file_is_refused() {
    let t = TempRoot::new("lockf");
    let dir = StateDir::open(&t.0).unwrap();
    let lock = t.0.join("lock");
    mkfifo(&lock);
    let e = dir.lock().unwrap_err().to_string();
    assert!(e.starts_with(&lock.display().to_string()), "{e}");
    assert!(e.contains("is a FIFO"), "{e}");
    fs::remove_file(&lock).unwrap();
    let target = t.0.join("target");
    fs::write(&target, "").unwrap();
    symlink(&target, &lock).unwrap();
    let e = dir.lock().unwrap_err().to_string();
    assert!(e.contains("is a symbolic link"), "{e}");
    fs::remove_file(&lock).unwrap();
    // Made new when missing, private.
    drop(dir.lock().unwrap());
    assert_eq!(
        fs::metadata(&lock).unwrap().permissions().mode() & 0o777,
        0o600
    );
}
