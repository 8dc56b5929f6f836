//! The moatd binary on the real kernel (root with BPF): ready to serve within
//! 500 ms of its start, a clean exit 0 within 2 s of SIGTERM or SIGINT, and SIGHUP
//! reopening a rotated audit log.

mod common;
mod moatd_common;

use std::{
    fs,
    io::Write as _,
    net::SocketAddr,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::mpsc,
    thread,
    time::{Duration, Instant},
};

use moatd_common::{get, request, served_address, spawn_moatd, temp_dir, wait_for};
use nix::{
    sys::signal::{kill, Signal},
    unistd::Pid,
};

/// How long moatd may take to say it is running (a loaded CI machine, debug build).
const STARTUP: Duration = Duration::from_secs(30);
/// How long moatd may take to exit after SIGTERM or SIGINT.
const SHUTDOWN: Duration = Duration::from_secs(2);
/// Time from start to a served `/metrics`.
const READY: Duration = Duration::from_millis(500);

/// A running moatd with its stderr forwarded line by line.
struct Moatd {
    child: Child,
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
    addr: Option<SocketAddr>,
}

impl Moatd {
    fn spawn(args: &[&str]) -> Moatd {
        let (child, lines) = spawn_moatd(["--log", "info"].iter().chain(args));
        Moatd {
            child,
            lines,
            seen: Vec::new(),
            addr: None,
        }
    }

    /// Waits for a stderr line containing `needle`; returns it.
    fn wait_line(&mut self, needle: &str, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let remaining = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(remaining) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if line.contains(needle) {
                        return line;
                    }
                }
                Err(_) => {
                    let status = self.child.try_wait().ok().flatten();
                    panic!(
                        "moatd did not log {needle:?} within {timeout:?} (exit: {status:?}); stderr: {:#?}",
                        self.seen
                    );
                }
            }
        }
    }

    /// Waits for the "running" line and reads the listen address from it.
    fn wait_running(&mut self) -> SocketAddr {
        let addr = served_address(&self.wait_line("running", STARTUP));
        self.addr = Some(addr);
        addr
    }

    fn signal(&self, signal: Signal) {
        kill(Pid::from_raw(self.child.id() as i32), signal).expect("signalling moatd");
    }

    /// Waits for the exit; panics past `timeout`.
    fn wait_exit(&mut self, timeout: Duration) -> std::process::ExitStatus {
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                self.seen.extend(self.lines.try_iter());
                // The forwarding thread may still be reading the last lines.
                thread::sleep(Duration::from_millis(20));
                self.seen.extend(self.lines.try_iter());
                return status;
            }
            if start.elapsed() > timeout {
                panic!(
                    "moatd still running {timeout:?} after the signal; stderr: {:#?}",
                    self.seen
                );
            }
            thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Moatd {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn stops_cleanly_on(signal: Signal) {
    let tmp = temp_dir(&format!("stop-{}", signal.as_str()));
    let dir = tmp.path();
    let log = dir.join("audit.jsonl");
    let mut moatd = Moatd::spawn(&[
        "--listen",
        "127.0.0.1:0",
        "--audit-log",
        log.to_str().unwrap(),
    ]);
    let addr = moatd.wait_running();
    assert_eq!(get(addr, "/metrics").status, 200);

    moatd.signal(signal);
    let signalled = Instant::now();
    let status = moatd.wait_exit(SHUTDOWN);
    let took = signalled.elapsed();
    assert!(
        status.success(),
        "moatd exited with {status} after {signal}; stderr: {:#?}",
        moatd.seen
    );
    let name = signal.as_str();
    assert!(
        moatd
            .seen
            .iter()
            .any(|l| l.contains(&format!("received {name}")) && l.contains("left attached")),
        "moatd did not log that it left its programs attached on {name}; stderr: {:#?}",
        moatd.seen
    );
    // The port is free again.
    assert!(
        std::net::TcpListener::bind(addr).is_ok(),
        "{addr} still bound"
    );
    eprintln!("moatd exited {took:?} after {name}");
}

#[test]
fn moatd_exits_zero_on_sigterm() {
    skip_without_bpf!();
    stops_cleanly_on(Signal::SIGTERM);
}

#[test]
fn moatd_exits_zero_on_sigint() {
    skip_without_bpf!();
    stops_cleanly_on(Signal::SIGINT);
}

/// How long one start of moatd takes until `/metrics` answers with
/// `moat_build_info`; moatd is stopped cleanly after.
fn time_to_first_scrape() -> Duration {
    let tmp = temp_dir("ready");
    let dir = tmp.path();
    let log = dir.join("audit.jsonl");
    // A free port, chosen now (moatd needs a known one to be polled before it logs).
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let started = Instant::now();
    let mut moatd = Moatd::spawn(&[
        "--listen",
        &addr.to_string(),
        "--audit-log",
        log.to_str().unwrap(),
    ]);
    let ready = loop {
        if let Ok(response) = request(addr, "GET", "/metrics", &[]) {
            if response.status == 200 && response.body.contains("moat_build_info") {
                break started.elapsed();
            }
        }
        if started.elapsed() > STARTUP {
            panic!("moatd never served /metrics; stderr: {:#?}", moatd.seen);
        }
        thread::sleep(Duration::from_millis(2));
    };
    eprintln!("moatd served /metrics {ready:?} after it was started");
    moatd.signal(Signal::SIGTERM);
    assert!(moatd.wait_exit(SHUTDOWN).success());
    ready
}

#[test]
fn moatd_serves_metrics_within_500ms_of_start() {
    skip_without_bpf!();
    // The goal is moatd's own start-up cost, not the machine's load: the best
    // of three starts is judged, so a start that lost the CPU to a parallel
    // build does not decide it, while a moatd that is slow every time still fails.
    let mut best = Duration::MAX;
    for _ in 0..3 {
        best = best.min(time_to_first_scrape());
        if best < READY {
            break;
        }
    }
    assert!(
        best < READY,
        "moatd served /metrics only {best:?} after it was started, at best of 3 (goal {READY:?})"
    );
}

/// A pids cgroup `<pids mount>/<parent>/<name>` with `pids.max` 1, removed on drop.
struct LimitedCgroup {
    parent: PathBuf,
    dir: PathBuf,
}

impl LimitedCgroup {
    fn create(pids_mount: &Path, parent: &str, name: &str) -> LimitedCgroup {
        let parent = pids_mount.join(parent);
        let dir = parent.join(name);
        fs::create_dir_all(&parent).unwrap();
        // On cgroup v2 the parent hands the controller down to its children.
        let subtree = parent.join("cgroup.subtree_control");
        if subtree.exists() {
            fs::write(&subtree, "+pids").unwrap();
        }
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join("pids.max"), "1").unwrap();
        LimitedCgroup { parent, dir }
    }

    /// Makes one fork in the cgroup fail: a shell moved into it (which fills its
    /// limit of 1) tries to run a command.
    fn hit_limit(&self) {
        let mut shell = Command::new("sh")
            .args(["-c", "read line; /bin/true"])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        fs::write(self.dir.join("cgroup.procs"), shell.id().to_string()).unwrap();
        shell.stdin.take().unwrap().write_all(b"go\n").unwrap();
        let _ = shell.wait();
    }

    fn hits(&self) -> u64 {
        moat_agent::collect::pids::parse_events_max(
            &fs::read_to_string(self.dir.join("pids.events")).unwrap_or_default(),
        )
    }
}

impl Drop for LimitedCgroup {
    fn drop(&mut self) {
        let _ = fs::remove_dir(&self.dir);
        let _ = fs::remove_dir(&self.parent);
    }
}

fn pids_limit_events(path: &Path) -> usize {
    fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains("\"action\":\"pids_limit_reached\""))
        .count()
}

#[test]
fn sighup_reopens_the_audit_log_after_rotation() {
    skip_without_bpf!();
    let layout =
        moat_agent::collect::attribution::CgroupLayout::detect(Path::new("/sys/fs/cgroup"));
    let Some(pids_mount) = layout.pids_mount else {
        eprintln!("SKIP: no pids controller on this host");
        return;
    };
    let tmp = temp_dir("sighup");
    let dir = tmp.path();
    let log = dir.join("audit.jsonl");
    let parent = format!("moat-test-{}", std::process::id());
    let config = dir.join("moatd.toml");
    fs::write(
        &config,
        format!(
            "[audit]\nlog = \"{}\"\n[workloads]\nmoat_parent = \"{parent}\"\npoll_interval_ms = 50\n",
            log.display()
        ),
    )
    .unwrap();
    let cgroup = LimitedCgroup::create(&pids_mount, &parent, "w1");
    let mut moatd = Moatd::spawn(&[
        "--config",
        config.to_str().unwrap(),
        "--listen",
        "127.0.0.1:0",
    ]);
    let addr = moatd.wait_running();
    // Let the first poll record the cgroup (hits before that are history).
    thread::sleep(Duration::from_millis(200));

    cgroup.hit_limit();
    assert_eq!(
        cgroup.hits(),
        1,
        "the fork was not refused by the pids limit"
    );
    wait_for(
        Duration::from_secs(5),
        "the first pids_limit_reached event",
        || (pids_limit_events(&log) == 1).then_some(()),
    );

    let rotated = dir.join("audit.jsonl.1");
    fs::rename(&log, &rotated).unwrap();
    moatd.signal(Signal::SIGHUP);
    moatd.wait_line("reopened audit log", Duration::from_secs(5));
    assert!(log.exists(), "SIGHUP did not recreate {}", log.display());

    cgroup.hit_limit();
    wait_for(
        Duration::from_secs(5),
        "the second event in the new file",
        || (pids_limit_events(&log) == 1).then_some(()),
    );
    assert_eq!(pids_limit_events(&rotated), 1);
    // (The kernel side may also have written a fork_failed record for the refused fork.)
    let text = fs::read_to_string(&log).unwrap();
    let line = text
        .lines()
        .find(|l| l.contains("\"action\":\"pids_limit_reached\""))
        .unwrap();
    let event: serde_json::Value = serde_json::from_str(line).unwrap();
    assert_eq!(event["workload"]["name"], "w1");
    assert_eq!(event["cgroup"]["path"], format!("/{parent}/w1"));
    assert_eq!(event["pids"]["limit"], 1);

    let body = get(addr, "/metrics").body;
    assert_eq!(
        moatd_common::sample(
            &body,
            "moat_audit_events_total{action=\"pids_limit_reached\"}"
        ),
        Some(2.0),
        "{body}"
    );
    moatd.signal(Signal::SIGTERM);
    assert!(moatd.wait_exit(SHUTDOWN).success());
    drop(cgroup);
}
