//! Workload cgroups on the real kernel: limits, joining, killing a fork
//! bomb, rollback, and both places the pids controller can live (a v1
//! hierarchy on hybrid hosts, and cgroup v2, reached here by unmounting the
//! v1 pids hierarchy for the duration of one test).
//!
//! Needs root. Every test uses parents of its own (`moat-test-<pid>-<n>`)
//! and removes them. All tests take one lock, because the v2 test changes
//! the host's layout while it runs.

use std::fs;
use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant};

use moat_runtime::cgroup::{
    detect, CgroupConfig, CgroupError, Layout, PidsLimit, PidsLocation, WorkloadCgroups,
};

const V1_PIDS: &str = "/sys/fs/cgroup/pids";
const HYBRID_V2: &str = "/sys/fs/cgroup/unified";

/// Serialises every test of this file: the v2 test moves the pids
/// controller away from v1 while it runs.
static SERIAL: Mutex<()> = Mutex::new(());

/// The same across processes (other test binaries that move the pids
/// controller can take it too): shared while a test relies on the layout,
/// exclusive while one changes it.
const LAYOUT_LOCK: &str = "/tmp/moat-cgroup-layout.lock";

struct Serial {
    _file: fs::File,
    _guard: MutexGuard<'static, ()>,
}

fn serial(exclusive: bool) -> Serial {
    let guard = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let file = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(LAYOUT_LOCK)
        .unwrap();
    let op = if exclusive {
        libc::LOCK_EX
    } else {
        libc::LOCK_SH
    };
    // SAFETY: flock on a descriptor we own; blocks until granted.
    let rc = unsafe { libc::flock(std::os::fd::AsRawFd::as_raw_fd(&file), op) };
    assert_eq!(rc, 0, "flock {LAYOUT_LOCK}");
    Serial {
        _file: file,
        _guard: guard,
    }
}

/// Why these tests cannot run here, if they cannot.
fn skip_reason() -> Option<String> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Some("not root".to_owned());
    }
    let text = fs::read_to_string("/proc/cgroups").unwrap_or_default();
    let enabled = text.lines().any(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        f.first() == Some(&"pids") && f.get(3) == Some(&"1")
    });
    (!enabled).then(|| "no cgroup pids controller (see /proc/cgroups)".to_owned())
}

macro_rules! require_prerequisites {
    () => {
        if let Some(reason) = skip_reason() {
            println!("SKIP: {reason}");
            return;
        }
    };
}

/// A config with a parent of its own, and a guard that removes that parent
/// (and anything left below it) from every hierarchy when dropped.
fn test_config(layout: &Layout) -> (CgroupConfig, ParentGuard) {
    static N: AtomicUsize = AtomicUsize::new(0);
    let parent = format!(
        "moat-test-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    );
    let mut dirs = vec![layout.pids.mount().join(&parent)];
    if layout.v2_mount != layout.pids.mount() {
        dirs.push(layout.v2_mount.join(&parent));
    }
    let cfg = CgroupConfig {
        parent,
        ..CgroupConfig::default()
    };
    (cfg, ParentGuard { dirs })
}

struct ParentGuard {
    dirs: Vec<PathBuf>,
}

impl Drop for ParentGuard {
    fn drop(&mut self) {
        for dir in &self.dirs {
            if let Err(e) = remove_tree(dir) {
                eprintln!("cleanup: {}: {e}", dir.display());
            }
        }
    }
}

/// Kills what is in a cgroup tree and removes it, children first.
fn remove_tree(dir: &Path) -> std::io::Result<()> {
    if !dir.is_dir() {
        return Ok(());
    }
    for entry in fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            remove_tree(&path)?;
        }
    }
    let kill = dir.join("cgroup.kill");
    if kill.exists() {
        let _ = fs::write(&kill, "1");
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let procs = fs::read_to_string(dir.join("cgroup.procs")).unwrap_or_default();
        for pid in procs
            .split_whitespace()
            .filter_map(|p| p.parse::<i32>().ok())
        {
            // SAFETY: kill with integer arguments; these are test processes.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
        match fs::remove_dir(dir) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) if Instant::now() > deadline => return Err(e),
            Err(_) => thread::sleep(Duration::from_millis(20)),
        }
    }
}

/// Orphans of killed workloads are reparented to PID 1, which on this
/// machine reaps them only every couple of seconds; until then they stay
/// charged to the (removed, dying) pids cgroup. As a launcher should, the
/// tests adopt their orphans and reap them at once.
fn become_subreaper() {
    // SAFETY: prctl with integer arguments.
    let rc = unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
    assert_eq!(rc, 0, "PR_SET_CHILD_SUBREAPER");
}

/// Reaps every child that has exited, until the workload has no task
/// charged (or 10 s pass). Only called once the test's own `Child` has
/// been waited for, so it cannot steal its status.
fn reap_until_uncharged(wl: &WorkloadCgroups) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        // SAFETY: waitpid with a null status pointer.
        while unsafe { libc::waitpid(-1, std::ptr::null_mut(), libc::WNOHANG) } > 0 {}
        let current = wl.pids_current().unwrap();
        if current == 0 || Instant::now() > deadline {
            return current;
        }
        thread::sleep(Duration::from_millis(20));
    }
}

fn read_trim(p: impl AsRef<Path>) -> String {
    let p = p.as_ref();
    fs::read_to_string(p)
        .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
        .trim()
        .to_owned()
}

/// The cgroup id as the kernel's file handles give it, which is what
/// `bpf_get_current_cgroup_id()` and `bpftool cgroup` report.
fn cgroup_id_from_handle(dir: &Path) -> u64 {
    #[repr(C)]
    struct FileHandle {
        handle_bytes: u32,
        handle_type: i32,
        f_handle: [u8; 8],
    }
    let mut fh = FileHandle {
        handle_bytes: 8,
        handle_type: 0,
        f_handle: [0; 8],
    };
    let mut mount_id: libc::c_int = 0;
    let path = std::ffi::CString::new(dir.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: valid path, a handle buffer of the size declared in it.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_name_to_handle_at,
            libc::AT_FDCWD,
            path.as_ptr(),
            &mut fh as *mut FileHandle,
            &mut mount_id as *mut libc::c_int,
            0,
        )
    };
    assert_eq!(
        rc,
        0,
        "name_to_handle_at: {}",
        std::io::Error::last_os_error()
    );
    u64::from_ne_bytes(fh.f_handle)
}

/// The line of `/proc/<pid>/cgroup` for hierarchy `id` (`0` for v2) or
/// controller list `ctrl`.
fn proc_cgroup(pid: u32, hierarchy_field: &str) -> Option<String> {
    let text = fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
    text.lines().find_map(|l| {
        let mut f = l.splitn(3, ':');
        let (_, ctrls, path) = (f.next()?, f.next()?, f.next()?);
        (ctrls == hierarchy_field).then(|| path.to_owned())
    })
}

fn sleeper() -> Child {
    Command::new("sleep").arg("30").spawn().unwrap()
}

// ---- the checks, run on whichever layout is current ---------------------

/// Limits, paths, ids, joining, killing and removing one workload.
fn check_basic(layout: &Layout) {
    let (cfg, _guard) = test_config(layout);
    let wl = WorkloadCgroups::create(layout, &cfg, "basic", PidsLimit::Max(64)).unwrap();
    let pids_parent = layout.pids.mount().join(&cfg.parent);
    assert_eq!(wl.pids_dir(), pids_parent.join("basic"));
    assert_eq!(wl.v2_dir(), layout.v2_mount.join(&cfg.parent).join("basic"));
    assert_eq!(read_trim(wl.pids_dir().join("pids.max")), "64");
    assert_eq!(read_trim(pids_parent.join("pids.max")), "512");
    assert!(wl.v2_dir().is_dir());
    assert_eq!(wl.pids_limit().unwrap(), Some(64));
    assert_eq!(wl.pids_current().unwrap(), 0);
    assert_eq!(wl.limit_hits().unwrap(), 0);
    match &layout.pids {
        PidsLocation::V1 { .. } => {
            assert!(!wl.pids_on_v2());
            assert_ne!(wl.pids_dir(), wl.v2_dir());
        }
        PidsLocation::V2 { .. } => {
            assert!(wl.pids_on_v2());
            assert_eq!(wl.pids_dir(), wl.v2_dir());
            let root = read_trim(layout.v2_mount.join("cgroup.subtree_control"));
            assert!(root.split(' ').any(|c| c == "pids"), "root: {root:?}");
            let parent = read_trim(
                layout
                    .v2_mount
                    .join(&cfg.parent)
                    .join("cgroup.subtree_control"),
            );
            assert_eq!(parent, "pids");
        }
    }

    // The id eBPF sees is the identity directory's inode number.
    let id = wl.v2_id().unwrap();
    assert_eq!(id, cgroup_id_from_handle(wl.v2_dir()));
    assert_eq!(id, fs::metadata(wl.v2_dir()).unwrap().ino());

    // Join a child: it is in both cgroups, and counted.
    let mut child = sleeper();
    wl.join(child.id() as i32).unwrap();
    let rel = format!("/{}/basic", cfg.parent);
    assert_eq!(proc_cgroup(child.id(), "").as_deref(), Some(rel.as_str()));
    if !wl.pids_on_v2() {
        assert_eq!(
            proc_cgroup(child.id(), "pids").as_deref(),
            Some(rel.as_str())
        );
    }
    assert!(wl.pids_current().unwrap() >= 1);

    wl.kill_all().unwrap();
    let status = child.wait().unwrap();
    assert_eq!(status.signal(), Some(libc::SIGKILL), "{status:?}");
    assert_eq!(wl.pids_current().unwrap(), 0, "reaped, so uncharged");

    let (pids_dir, v2_dir) = (wl.pids_dir().to_owned(), wl.v2_dir().to_owned());
    wl.remove().unwrap();
    assert!(!pids_dir.exists() && !v2_dir.exists());
    assert!(pids_parent.is_dir(), "the parent stays");
}

/// A child made with `clone3(CLONE_INTO_CGROUP)` on the fd from `v2_fd`
/// starts in the identity cgroup, and `kill_all` kills it.
fn check_clone_into_cgroup(layout: &Layout) {
    use moat_runtime::launch::clone::CloneArgs;
    const CLONE_INTO_CGROUP: u64 = 0x2_0000_0000;

    let (cfg, _guard) = test_config(layout);
    let wl = WorkloadCgroups::create(layout, &cfg, "clone3", PidsLimit::Max(8)).unwrap();
    let fd = wl.v2_fd().unwrap();
    let mut args = CloneArgs {
        flags: CLONE_INTO_CGROUP,
        exit_signal: libc::SIGCHLD as u64,
        cgroup: std::os::fd::AsRawFd::as_raw_fd(&fd) as u64,
        ..CloneArgs::default()
    };
    // SAFETY: a fork-like clone3 (no CLONE_VM); the child only calls the
    // async-signal-safe pause() until it is killed.
    let pid = unsafe {
        libc::syscall(
            libc::SYS_clone3,
            &mut args as *mut CloneArgs,
            std::mem::size_of::<CloneArgs>(),
        )
    };
    if pid == 0 {
        loop {
            // SAFETY: pause has no preconditions.
            unsafe { libc::pause() };
        }
    }
    assert!(pid > 0, "clone3: {}", std::io::Error::last_os_error());
    let pid = pid as i32;
    let rel = format!("/{}/clone3", cfg.parent);
    assert_eq!(proc_cgroup(pid as u32, "").as_deref(), Some(rel.as_str()));
    wl.join_pids_only(pid).unwrap();
    if !wl.pids_on_v2() {
        assert_eq!(
            proc_cgroup(pid as u32, "pids").as_deref(),
            Some(rel.as_str())
        );
    }
    assert_eq!(wl.pids_current().unwrap(), 1);
    wl.kill_all().unwrap();
    let mut status = 0;
    // SAFETY: waiting for our own child.
    assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
    assert!(libc::WIFSIGNALED(status) && libc::WTERMSIG(status) == libc::SIGKILL);
    wl.remove().unwrap();
}

/// A shell that, once joined and released, forks far more than its limit.
fn fork_bomb() -> Child {
    Command::new("sh")
        .arg("-c")
        .arg("read go; for i in $(seq 100); do sleep 30 & done; wait")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

fn release(child: &mut Child) {
    child.stdin.take().unwrap().write_all(b"go\n").unwrap();
}

fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        thread::sleep(Duration::from_millis(20));
    }
}

/// A fork bomb in a workload limited to 20 tasks stays at 20, the hits are
/// counted, and `kill_all` ends it.
fn check_fork_bomb(layout: &Layout) {
    become_subreaper();
    let (cfg, _guard) = test_config(layout);
    let wl = WorkloadCgroups::create(layout, &cfg, "bomb", PidsLimit::Max(20)).unwrap();
    let mut sh = fork_bomb();
    wl.join(sh.id() as i32).unwrap();
    release(&mut sh);
    wait_for("a refused fork", || wl.limit_hits().unwrap() > 0);
    let current = wl.pids_current().unwrap();
    assert!((1..=20).contains(&current), "pids.current {current}");
    let peak = read_trim(wl.pids_dir().join("pids.peak"));
    assert_eq!(peak, "20", "pids.peak");
    println!(
        "fork bomb: pids.current {current}, pids.events max {}",
        wl.limit_hits().unwrap()
    );

    let start = Instant::now();
    wl.kill_all().unwrap();
    println!("kill_all took {:?}", start.elapsed());
    let status = sh.wait().unwrap();
    // The shell is killed, or has already given up after a refused fork.
    assert!(
        status.signal() == Some(libc::SIGKILL) || status.code().is_some(),
        "{status:?}"
    );
    assert_eq!(reap_until_uncharged(&wl), 0, "zombies left charged");
    wl.remove().unwrap();
}

/// Forks refused by the parent's cap, in a workload without a limit of its
/// own: v1 counts them in the workload's `pids.events`; so does v2 before
/// Linux 6.11, and since then (when `pids.events.local` appeared) v2 counts
/// them where the limit is, in the parent's.
fn check_parent_cap(layout: &Layout) {
    become_subreaper();
    let (mut cfg, _guard) = test_config(layout);
    cfg.parent_pids_max = 10;
    let wl = WorkloadCgroups::create(layout, &cfg, "capped", PidsLimit::Inherit).unwrap();
    assert_eq!(wl.pids_limit().unwrap(), None);
    let parent = layout.pids.mount().join(&cfg.parent);
    let parent_hits = || {
        let text = read_trim(parent.join("pids.events"));
        text.lines()
            .find_map(|l| l.strip_prefix("max "))
            .unwrap()
            .parse::<u64>()
            .unwrap()
    };
    let mut sh = fork_bomb();
    wl.join(sh.id() as i32).unwrap();
    release(&mut sh);
    match layout.pids {
        PidsLocation::V1 { .. } => {
            wait_for("a refused fork counted in the workload", || {
                wl.limit_hits().unwrap() > 0
            });
        }
        PidsLocation::V2 { .. } if parent.join("pids.events.local").exists() => {
            wait_for("a refused fork counted in the parent", || parent_hits() > 0);
            assert_eq!(
                wl.limit_hits().unwrap(),
                0,
                "v2 counts the parent's cap there"
            );
        }
        PidsLocation::V2 { .. } => {
            wait_for(
                "a refused fork counted in the workload (Linux < 6.11)",
                || wl.limit_hits().unwrap() > 0,
            );
        }
    }
    assert!(wl.pids_current().unwrap() <= 10);
    wl.kill_all().unwrap();
    sh.wait().unwrap();
    assert_eq!(reap_until_uncharged(&wl), 0);
    wl.remove().unwrap();
}

/// `kill_all` also kills processes that are only in the v1 pids cgroup
/// (not in the identity cgroup that `cgroup.kill` covers).
fn check_kill_without_cgroup_kill(layout: &Layout) {
    if matches!(layout.pids, PidsLocation::V2 { .. }) {
        return; // one cgroup: join_pids_only is a no-op
    }
    let (cfg, _guard) = test_config(layout);
    let wl = WorkloadCgroups::create(layout, &cfg, "pidsonly", PidsLimit::Max(8)).unwrap();
    let mut child = sleeper();
    wl.join_pids_only(child.id() as i32).unwrap();
    assert_eq!(proc_cgroup(child.id(), "").as_deref(), Some("/"));
    wl.kill_all().unwrap();
    assert_eq!(child.wait().unwrap().signal(), Some(libc::SIGKILL));
    wl.remove().unwrap();
}

// ---- tests --------------------------------------------------------------

/// This machine's layout (hybrid: pids on v1, identity on the unified
/// hierarchy); on a v2-only host the same checks run on v2.
#[test]
fn workload_cgroups_on_the_current_layout() {
    require_prerequisites!();
    let _serial = serial(false);
    let layout = detect(&CgroupConfig::default()).unwrap();
    println!("layout: {layout:?}");
    if Path::new(HYBRID_V2).is_dir() && is_v1_pids_mounted() {
        assert_eq!(
            layout,
            Layout {
                pids: PidsLocation::V1 {
                    mount: V1_PIDS.into()
                },
                v2_mount: HYBRID_V2.into(),
            }
        );
    }
    check_basic(&layout);
    check_clone_into_cgroup(&layout);
    check_kill_without_cgroup_kill(&layout);
}

#[test]
fn fork_bomb_is_contained_on_the_current_layout() {
    require_prerequisites!();
    let _serial = serial(false);
    let layout = detect(&CgroupConfig::default()).unwrap();
    check_fork_bomb(&layout);
    check_parent_cap(&layout);
}

#[test]
fn create_rolls_back_and_refuses_duplicates() {
    require_prerequisites!();
    let _serial = serial(false);
    let layout = detect(&CgroupConfig::default()).unwrap();

    // A second create of a live name fails and leaves the first intact.
    let (cfg, _guard) = test_config(&layout);
    let first = WorkloadCgroups::create(&layout, &cfg, "dup", PidsLimit::Max(64)).unwrap();
    let e = WorkloadCgroups::create(&layout, &cfg, "dup", PidsLimit::Max(5)).unwrap_err();
    assert!(matches!(e, CgroupError::AlreadyExists { .. }), "{e:?}");
    println!("duplicate: {e}");
    assert!(first.pids_dir().is_dir() && first.v2_dir().is_dir());
    assert_eq!(first.pids_limit().unwrap(), Some(64));

    // A leftover (its owner gone) that still has a process is refused;
    // one without processes is taken over.
    let mut child = sleeper();
    first.join(child.id() as i32).unwrap();
    drop(first);
    let e = WorkloadCgroups::create(&layout, &cfg, "dup", PidsLimit::Max(5)).unwrap_err();
    assert!(e.to_string().contains("still has 1 process"), "{e}");
    let stale = WorkloadCgroups::open(&layout, &cfg, "dup").unwrap();
    stale.kill_all().unwrap();
    child.wait().unwrap();
    let again = WorkloadCgroups::create(&layout, &cfg, "dup", PidsLimit::Max(5)).unwrap();
    assert_eq!(again.pids_limit().unwrap(), Some(5));
    again.remove().unwrap();

    // A limit the kernel refuses, in a fresh parent: nothing is left, not
    // even the parent this call created, on either hierarchy.
    let (cfg, _guard2) = test_config(&layout);
    let e = WorkloadCgroups::create(&layout, &cfg, "huge", PidsLimit::Max(u64::MAX)).unwrap_err();
    println!("refused limit: {e}");
    assert!(e.to_string().contains("/huge/pids.max"), "{e}");
    assert!(!layout.pids.mount().join(&cfg.parent).exists());
    assert!(!layout.v2_mount.join(&cfg.parent).exists());

    // The same with an existing parent: only the workload goes.
    let keep = WorkloadCgroups::create(&layout, &cfg, "keep", PidsLimit::Inherit).unwrap();
    let e = WorkloadCgroups::create(&layout, &cfg, "huge", PidsLimit::Max(1 << 40)).unwrap_err();
    assert!(e.raw_os_error().is_some(), "{e:?}");
    assert!(!layout.pids.mount().join(&cfg.parent).join("huge").exists());
    assert!(!layout.v2_mount.join(&cfg.parent).join("huge").exists());
    assert!(keep.pids_dir().is_dir());
    keep.remove().unwrap();
}

fn is_v1_pids_mounted() -> bool {
    fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .any(|l| {
            let f: Vec<&str> = l.split(' ').collect();
            f.get(4) == Some(&V1_PIDS)
                && l.split(" - ").nth(1).is_some_and(|rest| {
                    let r: Vec<&str> = rest.split(' ').collect();
                    r.first() == Some(&"cgroup")
                        && r.get(2).is_some_and(|o| o.split(',').any(|x| x == "pids"))
                })
        })
}

/// Cgroups in the pids hierarchy that is mounted at `V1_PIDS`, counting
/// removed ones still pinned by unreaped zombies (`/proc/cgroups`).
fn v1_pids_cgroup_count() -> Option<u64> {
    let text = fs::read_to_string("/proc/cgroups").ok()?;
    text.lines().find_map(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        (f.first() == Some(&"pids")).then(|| f.get(2)?.parse().ok())?
    })
}

fn v2_lists_pids(file: &str) -> bool {
    fs::read_to_string(Path::new(HYBRID_V2).join(file))
        .unwrap_or_default()
        .split_whitespace()
        .any(|c| c == "pids")
}

/// Puts the pids controller back on v1 when dropped, whatever happened.
struct V1Restore {
    /// Whether `pids` was already on in the v2 root's subtree_control.
    root_had_pids: bool,
    parents: Vec<PathBuf>,
    restored: bool,
}

impl V1Restore {
    /// Every step is attempted even if an earlier one failed: putting pids
    /// back on v1 matters more than a clean error.
    fn restore(&mut self) -> Result<(), String> {
        if self.restored {
            return Ok(());
        }
        let mut errors = Vec::new();
        for p in &self.parents {
            if let Err(e) = remove_tree(p) {
                errors.push(format!("removing {}: {e}", p.display()));
            }
        }
        let subtree = Path::new(HYBRID_V2).join("cgroup.subtree_control");
        if !self.root_had_pids && v2_lists_pids("cgroup.subtree_control") {
            if let Err(e) = fs::write(&subtree, "-pids") {
                errors.push(format!("writing -pids to {}: {e}", subtree.display()));
            }
        }
        // Never mount it twice (a failed umount leaves it mounted).
        if !is_v1_pids_mounted() {
            if let Err(e) = remount_v1_pids() {
                errors.push(e);
            }
        }
        if errors.is_empty() {
            self.restored = true;
            Ok(())
        } else {
            Err(errors.join("; "))
        }
    }
}

/// `mount -t cgroup -o pids none /sys/fs/cgroup/pids`. Rebinding fails with
/// EBUSY while v2 still has pids cgroups, including removed ones that wait
/// for zombies to be reaped, so it is retried for a while.
fn remount_v1_pids() -> Result<(), String> {
    fs::create_dir_all(V1_PIDS).map_err(|e| format!("mkdir {V1_PIDS}: {e}"))?;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        // SAFETY: waitpid with a null status pointer; reaps our orphans.
        while unsafe { libc::waitpid(-1, std::ptr::null_mut(), libc::WNOHANG) } > 0 {}
        match nix::mount::mount(
            Some("none"),
            V1_PIDS,
            Some("cgroup"),
            nix::mount::MsFlags::empty(),
            Some("pids"),
        ) {
            Ok(()) => return Ok(()),
            Err(nix::errno::Errno::EBUSY) if Instant::now() < deadline => {
                thread::sleep(Duration::from_millis(100))
            }
            Err(e) => return Err(format!("mount -t cgroup -o pids none {V1_PIDS}: {e}")),
        }
    }
}

impl Drop for V1Restore {
    fn drop(&mut self) {
        if let Err(e) = self.restore() {
            eprintln!("FAILED TO RESTORE the v1 pids hierarchy: {e}");
        }
    }
}

/// The same checks with the pids controller on cgroup v2, made so for the
/// test by unmounting the (empty) v1 pids hierarchy, then restored.
#[test]
fn workload_cgroups_with_pids_on_v2() {
    require_prerequisites!();
    let _serial = serial(true);
    if !(Path::new(HYBRID_V2).is_dir() && is_v1_pids_mounted()) {
        println!(
            "not a hybrid host with pids on v1; the other tests cover this layout: {:?}",
            detect(&CgroupConfig::default())
        );
        return;
    }
    let others: Vec<String> = fs::read_dir(V1_PIDS)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.path().is_dir())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    if !others.is_empty() {
        println!("SKIP: {V1_PIDS} is in use ({others:?}); not moving pids to v2");
        return;
    }
    // Removed cgroups linger until their zombies are reaped (PID 1 does so
    // every couple of seconds here); unmounting then would keep the
    // hierarchy alive and pids would not move.
    wait_for("no lingering v1 pids cgroups", || {
        v1_pids_cgroup_count() == Some(1)
    });

    let mut restore = V1Restore {
        root_had_pids: v2_lists_pids("cgroup.subtree_control"),
        parents: Vec::new(),
        restored: false,
    };
    if let Err(e) = nix::mount::umount(V1_PIDS) {
        // EBUSY: something outside this test (here, the machine's init
        // holds the hierarchy) keeps it mounted; pids cannot move to v2.
        println!("SKIP: cannot unmount {V1_PIDS} ({e}); pids cannot be moved to cgroup v2 on this machine");
        restore.restored = true;
        return;
    }
    // The hierarchy goes when its last reference does; a reference held
    // outside this mount (a lazily detached mount of it, say) keeps it, and
    // pids, on v1. That is the machine, not moat: put it back and skip.
    let deadline = Instant::now() + Duration::from_secs(2);
    while !v2_lists_pids("cgroup.controllers") && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(20));
    }
    if !v2_lists_pids("cgroup.controllers") {
        restore.restore().expect("put pids back on cgroup v1");
        println!(
            "SKIP: {V1_PIDS} unmounted, but its hierarchy stayed alive (referenced outside this \
             mount; see /proc/cgroups), so pids cannot move to cgroup v2 on this machine"
        );
        return;
    }
    let layout = detect(&CgroupConfig::default()).unwrap();
    assert_eq!(
        layout,
        Layout {
            pids: PidsLocation::V2 {
                mount: HYBRID_V2.into()
            },
            v2_mount: HYBRID_V2.into(),
        }
    );
    // What exists before the checks is not ours and is never touched.
    let before: Vec<PathBuf> = fs::read_dir(HYBRID_V2)
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| p.is_dir())
        .collect();
    let result = std::panic::catch_unwind(|| {
        check_basic(&layout);
        check_clone_into_cgroup(&layout);
        check_kill_without_cgroup_kill(&layout);
        check_fork_bomb(&layout);
        check_parent_cap(&layout);
        let events = read_trim(Path::new(HYBRID_V2).join("cgroup.stat"));
        println!("v2 root cgroup.stat after the checks:\n{events}");
    });
    // The checks' guards removed their parents; whatever a failed check
    // left must go before pids can move back.
    restore.parents = fs::read_dir(HYBRID_V2)
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| {
            p.is_dir()
                && !before.contains(p)
                && p.file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with("moat-test-"))
        })
        .collect();
    let restored = restore.restore();
    if let Err(panic) = result {
        std::panic::resume_unwind(panic);
    }
    restored.unwrap();
    assert!(is_v1_pids_mounted());
    assert!(!v2_lists_pids("cgroup.controllers"));
    let layout = detect(&CgroupConfig::default()).unwrap();
    assert_eq!(
        layout.pids,
        PidsLocation::V1 {
            mount: V1_PIDS.into()
        }
    );
}
