//! Unit tests of the state directory, on temporary directories.

mod boot;
mod untrusted;

use super::process::{parse_stat, read_stat};
use super::*;
use crate::userns::UserNamespace;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
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
        let p = std::env::temp_dir().join(format!("moat-state-{tag}-{}-{n}", std::process::id()));
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
        uid: 0,
        gid: 0,
        pids_limit: Some(64),
        pids_limit_text: "64".to_string(),
        cgroup_pids: PathBuf::from("/sys/fs/cgroup/pids/moat/x"),
        cgroup_v2: PathBuf::from("/sys/fs/cgroup/moat/x"),
        unit: None,
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
fn records_of_older_versions_read_without_uid_and_gid() {
    let t = TempRoot::new("old");
    let dir = StateDir::open(&t.0).unwrap();
    let mut v = serde_json::to_value(record("old", me())).unwrap();
    let obj = v.as_object_mut().unwrap();
    obj.remove("uid");
    obj.remove("gid");
    fs::write(
        t.0.join("workloads/old.json"),
        serde_json::to_vec(&v).unwrap(),
    )
    .unwrap();
    let back = dir.record("old").unwrap().unwrap();
    assert_eq!((back.uid, back.gid), (0, 0));
    assert_eq!(back, record("old", me()));
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
fn running_returns_stale_records_and_removes_nothing() {
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
    assert_eq!(stale, vec![dead.clone(), reused.clone()]);
    // Still there until the caller, having reclaimed what they name,
    // removes them.
    assert_eq!(dir.list().unwrap().len(), 3);
    let (_, again) = lock.running().unwrap();
    assert_eq!(again.len(), 2);
    lock.remove(&dead.name).unwrap();
    lock.remove(&reused.name).unwrap();
    assert_eq!(dir.list().unwrap(), vec![live]);
    let (_, stale) = lock.running().unwrap();
    assert!(stale.is_empty());
}

#[test]
fn corrupt_records_are_reported_by_name_and_refused_under_the_lock() {
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

    // Under the lock they are errors: a record moat cannot read may stand
    // for a running workload whose ids must not be handed out again.
    let lock = dir.lock().unwrap();
    let e = lock.running().unwrap_err().to_string();
    assert!(e.starts_with(&w.display().to_string()), "{e}");
    assert!(e.contains("corrupt state record"), "{e}");
    for f in [
        "bad.json",
        "empty.json",
        "other.json",
        "bad name.json",
        "README",
    ] {
        assert!(w.join(f).exists(), "{f}");
    }
}

#[test]
fn insert_refuses_a_live_a_stale_or_a_corrupt_name() {
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

    // A stale record names what may still exist: it is not overwritten.
    let stale = record("api", dead_ref());
    lock.insert(&stale).unwrap();
    let fresh = record("api", me());
    let e = lock.insert(&fresh).unwrap_err();
    assert!(matches!(e, StateError::StaleName { .. }), "{e:?}");
    assert!(e.to_string().contains("api.json"), "{e}");
    assert_eq!(dir.record("api").unwrap(), Some(stale));
    lock.remove("api").unwrap();
    lock.insert(&fresh).unwrap();
    assert_eq!(dir.record("api").unwrap(), Some(fresh));

    fs::write(t.0.join("workloads/db.json"), "garbage").unwrap();
    let db = record("db", me());
    let e = lock.insert(&db).unwrap_err();
    assert!(matches!(e, StateError::Corrupt { .. }), "{e:?}");
    assert_eq!(
        fs::read_to_string(t.0.join("workloads/db.json")).unwrap(),
        "garbage"
    );
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
