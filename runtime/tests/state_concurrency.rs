//! Concurrent `moat run`s share the state directory: each takes the lock,
//! reads the running workloads, allocates a `--userns auto` range and
//! inserts its record. These tests run that sequence from many threads and
//! from many processes at once and check that no two workloads got
//! overlapping id ranges or the same name, and that the ranges are free
//! again once the workloads are gone.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use moat_runtime::state::{generate_name, now_unix_ms, ProcessRef, StateDir, WorkloadRecord};
use moat_runtime::userns::{allocate, IdMap, UserNamespace, AUTO_SIZE};

const WORKERS: usize = 8;
const SUBID: &str = "moat:100000:6553600\n";
const SUBID_START: u64 = 100_000;
const SUBID_END: u64 = 100_000 + 6_553_600;
/// Held between reading the running workloads and inserting the record:
/// without the lock, every worker would see the same free slot.
const RACE_WINDOW: Duration = Duration::from_millis(20);
/// Set in a re-executed copy of this binary to make it a worker process.
const WORKER_ENV: &str = "MOAT_STATE_CONCURRENCY_WORKER";

static COUNTER: AtomicUsize = AtomicUsize::new(0);

/// A temp directory holding a state root and subuid/subgid files.
struct Fixture(PathBuf);

impl Fixture {
    fn new(tag: &str) -> Fixture {
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let p = std::env::temp_dir().join(format!(
            "moat-state-concurrency-{tag}-{}-{n}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        std::fs::write(p.join("subuid"), SUBID).unwrap();
        std::fs::write(p.join("subgid"), SUBID).unwrap();
        Fixture(p)
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// What one `moat run` does before starting its workload: lock, clean up,
/// allocate, insert. `supervisor` stands for the `moat run` process.
fn register(root: &Path, supervisor: ProcessRef) -> WorkloadRecord {
    let dir = StateDir::open(&root.join("state")).unwrap();
    let lock = dir.lock().unwrap();
    let (running, _stale) = lock.running().unwrap();
    let in_use: Vec<UserNamespace> = running.iter().filter_map(|r| r.userns.clone()).collect();
    let ns = allocate(&root.join("subuid"), &root.join("subgid"), &in_use).unwrap();
    std::thread::sleep(RACE_WINDOW);
    let rec = WorkloadRecord {
        name: generate_name("/bin/sleep"),
        supervisor,
        pid: None,
        command: vec!["sleep".into(), "30".into()],
        seccomp_profile: "default".into(),
        userns: Some(ns),
        userns_auto: true,
        uid: 0,
        gid: 0,
        pids_limit: None,
        pids_limit_text: "inherit".into(),
        cgroup_pids: PathBuf::new(),
        cgroup_v2: PathBuf::new(),
        unit: None,
        started_at_unix_ms: now_unix_ms(),
        namespaces: Vec::new(),
    };
    lock.insert(&rec).unwrap();
    rec
}

fn only_map(maps: &[IdMap]) -> IdMap {
    assert_eq!(maps.len(), 1, "{maps:?}");
    maps[0]
}

/// All names unique; all uid ranges, and all gid ranges, pairwise disjoint
/// and inside the delegated ids.
fn assert_disjoint(records: &[WorkloadRecord]) {
    assert_eq!(records.len(), WORKERS);
    let mut names: Vec<&str> = records.iter().map(|r| r.name.as_str()).collect();
    names.sort_unstable();
    names.dedup();
    assert_eq!(names.len(), WORKERS, "duplicate names");
    for pick in [
        (|ns: &UserNamespace| only_map(&ns.uid_map)) as fn(&UserNamespace) -> IdMap,
        |ns: &UserNamespace| only_map(&ns.gid_map),
    ] {
        let maps: Vec<IdMap> = records
            .iter()
            .map(|r| pick(r.userns.as_ref().expect("userns recorded")))
            .collect();
        for (i, a) in maps.iter().enumerate() {
            assert_eq!(a.size, AUTO_SIZE);
            assert_eq!(a.container_id, 0);
            assert!(
                u64::from(a.host_id) >= SUBID_START && a.host_end() <= SUBID_END,
                "{a}"
            );
            for b in &maps[..i] {
                assert!(!a.host_overlaps(b.host_id, b.size), "{a} overlaps {b}");
            }
        }
    }
}

/// After the workloads are gone: every record comes back as stale; once
/// the caller removes them the directory is empty and the lowest slot is
/// free again.
fn assert_all_stale(root: &Path, names: &[String]) {
    let dir = StateDir::open(&root.join("state")).unwrap();
    let lock = dir.lock().unwrap();
    let (running, stale) = lock.running().unwrap();
    assert!(running.is_empty(), "{running:?}");
    let mut stale_names: Vec<String> = stale.into_iter().map(|r| r.name).collect();
    stale_names.sort();
    let mut expected = names.to_vec();
    expected.sort();
    assert_eq!(stale_names, expected);
    for name in &stale_names {
        lock.remove(name).unwrap();
    }
    assert!(dir.list().unwrap().is_empty());
    let (running, stale) = lock.running().unwrap();
    assert!(running.is_empty() && stale.is_empty());
    let ns = allocate(&root.join("subuid"), &root.join("subgid"), &[]).unwrap();
    assert_eq!(only_map(&ns.uid_map).host_id, 100_000);
    assert_eq!(only_map(&ns.gid_map).host_id, 100_000);
}

/// Kills, on drop, the listed processes that are still the same processes,
/// so that a failing test does not leave its sleeps behind.
struct KillOnDrop(Vec<ProcessRef>);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        for p in &self.0 {
            if p.is_alive() {
                // SAFETY: kill(2) with a pid and a signal number; no memory
                // involved.
                unsafe { libc::kill(p.pid, libc::SIGKILL) };
            }
        }
    }
}

fn sleep_child() -> Child {
    // No inherited pipes: a worker's output pipe must close when the worker
    // exits, not when its sleep does.
    Command::new("sleep")
        .arg("30")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn sleep")
}

#[test]
fn concurrent_threads_get_disjoint_ranges_and_unique_names() {
    let fx = Fixture::new("threads");
    let barrier = Arc::new(Barrier::new(WORKERS));
    let handles: Vec<_> = (0..WORKERS)
        .map(|_| {
            let root = fx.0.clone();
            let barrier = Arc::clone(&barrier);
            std::thread::spawn(move || {
                let child = sleep_child();
                let supervisor = ProcessRef::of(child.id() as i32).unwrap();
                barrier.wait();
                (register(&root, supervisor), child)
            })
        })
        .collect();
    let results: Vec<_> = handles.into_iter().map(|h| h.join()).collect();
    let mut children = Vec::new();
    let mut records = Vec::new();
    let mut guard = KillOnDrop(Vec::new());
    for r in results {
        // A panicking worker dropped (without killing) its child; only the
        // others can be cleaned up here.
        let (rec, child) = r.expect("worker thread panicked");
        guard.0.push(rec.supervisor);
        records.push(rec);
        children.push(child);
    }

    assert_disjoint(&records);
    let dir = StateDir::open(&fx.0.join("state")).unwrap();
    let (running, _) = dir.lock().unwrap().running().unwrap();
    assert_eq!(running.len(), WORKERS);

    for c in &mut children {
        c.kill().unwrap();
        c.wait().unwrap();
    }
    let names: Vec<String> = records.into_iter().map(|r| r.name).collect();
    assert_all_stale(&fx.0, &names);
}

/// Run only inside a re-executed copy of this binary (see
/// [`concurrent_processes_get_disjoint_ranges_and_unique_names`]); a no-op
/// otherwise.
#[test]
// The sleep is deliberately left running when the worker exits (see below);
// init reaps it once the parent test kills it.
#[allow(clippy::zombie_processes)]
fn worker_process() {
    let Some(root) = std::env::var_os(WORKER_ENV) else {
        return;
    };
    let root = PathBuf::from(root);
    // The sleep outlives this worker, as a workload outlives a SIGKILLed
    // `moat run`; the parent test kills it by the pid in the record.
    let child = sleep_child();
    let supervisor = ProcessRef::of(child.id() as i32).unwrap();
    let go = root.join("go");
    let deadline = Instant::now() + Duration::from_secs(30);
    while !go.exists() {
        assert!(Instant::now() < deadline, "never told to go");
        std::thread::sleep(Duration::from_millis(1));
    }
    register(&root, supervisor);
}

#[test]
fn concurrent_processes_get_disjoint_ranges_and_unique_names() {
    let fx = Fixture::new("procs");
    let exe = std::env::current_exe().unwrap();
    let workers: Vec<Child> = (0..WORKERS)
        .map(|_| {
            Command::new(&exe)
                .args(["worker_process", "--exact", "--test-threads=1", "--quiet"])
                .env(WORKER_ENV, &fx.0)
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    // Released together so that they contend for the lock.
    std::fs::write(fx.0.join("go"), "").unwrap();
    let outputs: Vec<_> = workers
        .into_iter()
        .map(|w| w.wait_with_output().unwrap())
        .collect();

    let dir = StateDir::open(&fx.0.join("state")).unwrap();
    let records = dir.list().unwrap();
    // The sleeps were started by the workers; each record identifies its
    // sleep by pid and start time, checked right before the kill.
    let sleeps = KillOnDrop(records.iter().map(|r| r.supervisor).collect());
    for out in outputs {
        assert!(
            out.status.success(),
            "worker failed: {}\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    assert_disjoint(&records);
    assert!(records.iter().all(WorkloadRecord::is_alive));

    drop(sleeps);
    // Orphans are reaped by init; a zombie already counts as dead.
    let deadline = Instant::now() + Duration::from_secs(10);
    while records.iter().any(|r| r.supervisor.is_alive()) {
        assert!(Instant::now() < deadline, "sleeps did not die");
        std::thread::sleep(Duration::from_millis(10));
    }
    let names: Vec<String> = records.into_iter().map(|r| r.name).collect();
    assert_all_stale(&fx.0, &names);
}
