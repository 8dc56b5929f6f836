//! A private setting for driving `moat run` and `moat ps` as an attacker
//! would: its own state directory, cgroup parent and sub-id range, and the
//! means to watch what a command costs (time, peak memory) and to stop one
//! that hangs.

use std::io::Read;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

use crate::moatd::{
    cgroup_roots, moat, pids_on_v1, pids_on_v2, v2_root, CgroupParent, TempDir, PIDS_V1,
};

/// How many ids each [`RunEnv`]'s sub-id range holds (ten auto slots).
pub const SUBID_COUNT: u32 = 655_360;

/// A private state directory, cgroup parent and sub-id files; on drop every
/// process left in the parent's cgroups is killed and the cgroups removed.
pub struct RunEnv {
    /// Holds `state/`, `subuid`, `subgid` and whatever a test adds.
    pub dir: TempDir,
    /// The first id of `moat`'s sub-id range, distinct per tag so that a
    /// test that signals "all processes of its uid" cannot hit another
    /// test's workloads.
    pub subid_start: u32,
    /// `--cgroup-parent` of every `moat run` made through [`RunEnv::run`].
    pub parent: CgroupParent,
}

impl RunEnv {
    /// A fresh setting, or `None` (after printing `SKIP: ...`) when `moat
    /// run` cannot work here: not root, or no pids controller.
    pub fn new(tag: &str) -> Option<RunEnv> {
        if !crate::is_root() {
            eprintln!("SKIP: moat run needs root");
            return None;
        }
        if !pids_on_v1() && !pids_on_v2() {
            eprintln!("SKIP: no pids cgroup controller on this machine");
            return None;
        }
        let dir = TempDir::new(&format!("st-{tag}"));
        // 4_000_000 + up to 4096 slots of SUBID_COUNT stays below 2^32.
        let slot = tag
            .bytes()
            .fold(0u32, |h, b| h.wrapping_mul(31).wrapping_add(b.into()))
            % 4096;
        let subid_start = 4_000_000 + slot * SUBID_COUNT;
        let line = format!("moat:{subid_start}:{SUBID_COUNT}\n");
        std::fs::write(dir.join("subuid"), &line).unwrap();
        std::fs::write(dir.join("subgid"), &line).unwrap();
        Some(RunEnv {
            dir,
            subid_start,
            parent: CgroupParent(format!("moat-s-{tag}-{}", std::process::id())),
        })
    }

    /// The state directory (`MOAT_STATE_DIR`).
    pub fn state(&self) -> PathBuf {
        self.dir.join("state")
    }

    /// `moat` with this setting's state directory and sub-id files.
    pub fn cmd(&self) -> Command {
        let mut c = moat();
        c.env("MOAT_STATE_DIR", self.state())
            .env("MOAT_SUBUID_FILE", self.dir.join("subuid"))
            .env("MOAT_SUBGID_FILE", self.dir.join("subgid"));
        c
    }

    /// `moat run --cgroup-parent <ours> ARGS`, not started.
    pub fn run_cmd(&self, args: &[&str]) -> Command {
        let mut c = self.cmd();
        c.args(["run", "--cgroup-parent", &self.parent.0])
            .args(args);
        c
    }

    /// `moat run --cgroup-parent <ours> ARGS`, run to the end.
    pub fn run(&self, args: &[&str]) -> Output {
        self.run_cmd(args).output().expect("run moat")
    }

    /// `moat ps --json`, parsed; panics if it fails.
    pub fn ps_json(&self) -> Vec<serde_json::Value> {
        let o = self.cmd().args(["ps", "--json"]).output().unwrap();
        assert!(o.status.success(), "moat ps: {}", stderr(&o));
        let v: serde_json::Value = serde_json::from_slice(&o.stdout)
            .unwrap_or_else(|e| panic!("moat ps --json: {e}: {}", stdout(&o)));
        v.as_array().expect("a JSON array").clone()
    }

    /// Waits until `moat ps --json` lists `name` with a workload pid, and
    /// returns its row.
    pub fn wait_started(&self, name: &str) -> serde_json::Value {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(row) = self
                .ps_json()
                .into_iter()
                .find(|r| r["name"] == name && r["pid"].is_number())
            {
                return row;
            }
            assert!(
                Instant::now() < deadline,
                "{name} never showed up in moat ps"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The directory of the pids hierarchy that holds workload cgroups.
    pub fn pids_root(&self) -> &'static Path {
        crate::moatd::pids_root()
    }

    /// A workload's cgroup directories under `parent`: pids, then v2 (the
    /// same directory twice when pids is on v2).
    pub fn cgroups_of(&self, parent: &str, name: &str) -> [PathBuf; 2] {
        [
            self.pids_root().join(parent).join(name),
            v2_root().join(parent).join(name),
        ]
    }

    /// The names of the cgroup directories under our parent, in either
    /// hierarchy, sorted and deduplicated.
    pub fn cgroups_under_parent(&self) -> Vec<String> {
        let mut names = Vec::new();
        for root in cgroup_roots() {
            if let Ok(entries) = std::fs::read_dir(root.join(&self.parent.0)) {
                for e in entries.flatten() {
                    if e.path().is_dir() {
                        names.push(e.file_name().to_string_lossy().into_owned());
                    }
                }
            }
        }
        names.sort();
        names.dedup();
        names
    }

    /// The exit record of workload `name`.
    pub fn exit_record(&self, name: &str) -> serde_json::Value {
        let p = self.exit_record_path(name);
        let text = std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
        serde_json::from_str(&text).unwrap()
    }

    /// Where the exit record of `name` is.
    pub fn exit_record_path(&self, name: &str) -> PathBuf {
        self.state().join("exits").join(format!("{name}.json"))
    }

    /// The workload records in the state directory (file names).
    pub fn record_files(&self) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(self.state().join("workloads"))
            .map(|d| {
                d.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        names.sort();
        names
    }
}

impl Drop for RunEnv {
    fn drop(&mut self) {
        kill_cgroups_under(&self.parent.0);
    }
}

/// Kills every process in the cgroups below `parent` (both hierarchies)
/// and removes those cgroups, deepest first, so that the parent can be
/// removed.
pub fn kill_cgroups_under(parent: &str) {
    fn below(dir: &Path, out: &mut Vec<PathBuf>) {
        if let Ok(entries) = std::fs::read_dir(dir) {
            for e in entries.flatten().filter(|e| e.path().is_dir()) {
                out.push(e.path());
                below(&e.path(), out);
            }
        }
    }
    let mut dirs = Vec::new();
    // Both hierarchies whatever the layout now (see `CgroupParent`).
    for root in [Path::new(PIDS_V1), v2_root()] {
        below(&root.join(parent), &mut dirs);
    }
    for d in &dirs {
        let _ = std::fs::write(d.join("cgroup.kill"), "1");
        let procs = std::fs::read_to_string(d.join("cgroup.procs")).unwrap_or_default();
        for pid in procs
            .split_whitespace()
            .filter_map(|p| p.parse::<i32>().ok())
        {
            // SAFETY: kill(2) with a pid and a signal number.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
    }
    // Killed processes leave their cgroups once reaped.
    std::thread::sleep(Duration::from_millis(100));
    for d in dirs.iter().rev() {
        let _ = std::fs::remove_dir(d);
    }
}

/// How a command ended when run by [`run_bounded`].
#[derive(Debug)]
pub struct Bounded {
    /// Its status, or `None` if it was killed for running too long.
    pub status: Option<ExitStatus>,
    /// What it wrote.
    pub stdout: String,
    /// What it wrote to stderr.
    pub stderr: String,
    /// Its peak resident memory, in KiB (`ru_maxrss`).
    pub max_rss_kib: i64,
    /// How long it ran.
    pub elapsed: Duration,
}

/// Runs `cmd` (stdin closed), killing it after `timeout`; reports its peak
/// memory, so that a test can tell a bounded read from an unbounded one.
// The child is reaped with wait4(2), which also gives its rusage.
#[allow(clippy::zombie_processes)]
pub fn run_bounded(mut cmd: Command, timeout: Duration) -> Bounded {
    let start = Instant::now();
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let pid = child.id() as libc::pid_t;
    let mut out = child.stdout.take().unwrap();
    let mut err = child.stderr.take().unwrap();
    let out_t = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = out.read_to_string(&mut s);
        s
    });
    let err_t = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = err.read_to_string(&mut s);
        s
    });
    let mut timed_out = false;
    loop {
        let mut status = 0;
        // SAFETY: zeroed rusage is valid plain data for the kernel to fill.
        let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
        // SAFETY: waiting for our own child with valid out-pointers.
        let rc = unsafe { libc::wait4(pid, &mut status, libc::WNOHANG, &mut usage) };
        if rc == pid {
            return Bounded {
                status: (!timed_out).then(|| ExitStatus::from_raw(status)),
                stdout: out_t.join().unwrap(),
                stderr: err_t.join().unwrap(),
                max_rss_kib: usage.ru_maxrss,
                elapsed: start.elapsed(),
            };
        }
        assert!(rc == 0, "wait4: {}", std::io::Error::last_os_error());
        if !timed_out && start.elapsed() > timeout {
            timed_out = true;
            // SAFETY: killing our own child.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// A child's standard output, as text.
pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// A child's standard error, as text.
pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// A command's stdout as text (short name for the containment tests).
pub fn out(o: &Output) -> String {
    stdout(o)
}

/// A command's stderr as text (short name for the containment tests).
pub fn err(o: &Output) -> String {
    stderr(o)
}
