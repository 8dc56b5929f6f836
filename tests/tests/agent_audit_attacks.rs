//! The audit log under a full disk, a crash, and a path an attacker swaps
//! (issue 10, items 2 to 4), as attacks on the real moatd with denial storms
//! from seccomp-filtered workloads under `moat run`:
//!
//! - the log on a 64 KiB tmpfs filled by a storm: only whole lines reach it,
//!   `moat_audit_events_total` equals the lines on disk for every action, the
//!   events that did not fit are counted as `write_failed`, and once space is
//!   freed the next events are all written;
//! - moatd SIGKILLed during a storm (and a log ending mid-line): after a
//!   restart every new event is a line of its own;
//! - the path replaced by a FIFO, then SIGHUP: moatd never blocks, keeps
//!   counting exactly, and stops promptly on SIGTERM;
//! - a symbolic link planted by an unprivileged user in a world-writable
//!   directory: never followed, at start or at SIGHUP.
//!
//! moatd sees every process on the node, and other tests run at the same time,
//! so the log also holds other workloads' events: what is exact here is per
//! line and per action, and for the test's own workload. The exact count of
//! dropped events, with every event known, is in
//! `agent/tests/moatd_audit_log.rs`.

use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use moat_api::{
    audit::{AuditAction, AuditEvent},
    exposition::Exposition,
};
use moat_tests::moatd::{pids_on_v1, pids_on_v2, wait_for, Moatd, Options, TempDir};

const NR_GETPRIORITY: u32 = 140;

/// `perl -e WORKER NR N`: makes syscall NR N times, prints how many failed
/// with EACCES.
const WORKER: &str = r#"
my ($nr, $n) = @ARGV;
my $seen = 0;
for (1 .. $n) {
    $! = 0;
    $seen++ if syscall($nr, 0, 0) == -1 && ($! + 0) == 13;
}
print "$seen\n";
"#;

/// Enough for a storm's records to reach moatd unthrottled.
const UNTHROTTLED: &str = "[audit]\nrate_limit = 1000000\nrate_burst = 1000000\n";

static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|p| p.into_inner())
}

macro_rules! skip_unless_able {
    () => {
        if !moat_tests::is_root() {
            eprintln!("SKIP: moatd and moat run need root");
            return;
        }
        if !pids_on_v1() && !pids_on_v2() {
            eprintln!("SKIP: no pids cgroup controller on this machine");
            return;
        }
        if !Path::new("/usr/bin/perl").exists() {
            eprintln!("SKIP: the workloads are perl programs and /usr/bin/perl is missing");
            return;
        }
        if !cfg!(target_arch = "x86_64") {
            eprintln!("SKIP: the workloads use x86_64 syscall numbers");
            return;
        }
    };
}

/// A profile that refuses getpriority with EACCES.
fn profile(dir: &TempDir) -> String {
    let path = dir.join("deny-getpriority.json");
    std::fs::write(
        &path,
        r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{"names":["getpriority"],"action":"SCMP_ACT_ERRNO","errnoRet":13}]}"#,
    )
    .unwrap();
    path.display().to_string()
}

/// `moat run` of the worker: `n` denied getpriority calls.
fn storm(agent: &Moatd, name: &str, profile: &str, n: u32) -> Command {
    let mut c = agent.run_cmd(
        name,
        &["--seccomp-profile", profile],
        &[
            "perl",
            "-e",
            WORKER,
            &NR_GETPRIORITY.to_string(),
            &n.to_string(),
        ],
    );
    c.stdin(Stdio::null());
    c
}

fn run_storm(agent: &Moatd, name: &str, profile: &str, n: u32) {
    let o: Output = storm(agent, name, profile, n).output().unwrap();
    assert!(
        o.status.success(),
        "{name}: {:?}: {}",
        o.status,
        String::from_utf8_lossy(&o.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&o.stdout).trim(), n.to_string());
}

/// The lines of `path`, parsed (or their text when they do not parse).
fn lines_of(path: &Path) -> Vec<Result<AuditEvent, String>> {
    let data = std::fs::read(path).unwrap_or_default();
    data.split(|&b| b == b'\n')
        .filter(|l| !l.is_empty())
        .map(|l| AuditEvent::parse_line(l).map_err(|_| String::from_utf8_lossy(l).into_owned()))
        .collect()
}

fn of_workload(lines: &[Result<AuditEvent, String>], workload: &str) -> usize {
    lines
        .iter()
        .filter(|l| l.as_ref().is_ok_and(|e| e.workload.name == workload))
        .count()
}

fn metrics(agent: &Moatd) -> Exposition {
    let body = agent
        .get_metrics()
        .unwrap_or_else(|| panic!("GET /metrics failed; moatd:\n{}", agent.log_text()));
    Exposition::parse(&body).unwrap()
}

fn written(m: &Exposition, action: AuditAction) -> f64 {
    m.get("moat_audit_events_total", &[("action", action.as_str())])
        .unwrap_or(0.0)
}

fn dropped(m: &Exposition, reason: &str) -> f64 {
    m.get("moat_audit_events_dropped_total", &[("reason", reason)])
        .unwrap_or(0.0)
}

/// Everything moatd's writer accounted for: written and dropped in moatd.
fn accounted(m: &Exposition) -> f64 {
    AuditAction::ALL.iter().map(|a| written(m, *a)).sum::<f64>()
        + ["write_failed", "log_unavailable", "queue_full"]
            .iter()
            .map(|r| dropped(m, r))
            .sum::<f64>()
}

/// Waits until the workload's `n` denials are counted, then until the writer
/// has been idle for half a second; returns the metrics then.
fn settle(agent: &Moatd, workload: &str, n: u32) -> Exposition {
    wait_for(Duration::from_secs(10), "the workload's denials", || {
        let m = metrics(agent);
        let counted = m
            .family("moat_seccomp_denials_total")
            .filter(|s| s.label("workload") == Some(workload))
            .map(|s| s.value)
            .sum::<f64>();
        (counted == f64::from(n)).then_some(())
    });
    let mut last = accounted(&metrics(agent));
    loop {
        std::thread::sleep(Duration::from_millis(500));
        let m = metrics(agent);
        let now = accounted(&m);
        if now == last {
            return m;
        }
        last = now;
    }
}

/// Checks that every line parses and that `moat_audit_events_total` equals
/// the lines on disk for every action.
fn check_counts_equal_lines(m: &Exposition, lines: &[Result<AuditEvent, String>]) {
    let bad: Vec<&String> = lines.iter().filter_map(|l| l.as_ref().err()).collect();
    assert!(bad.is_empty(), "{} lines do not parse: {bad:?}", bad.len());
    for action in AuditAction::ALL {
        let on_disk = lines
            .iter()
            .filter(|l| l.as_ref().is_ok_and(|e| e.action() == Some(action)))
            .count();
        assert_eq!(
            written(m, action),
            on_disk as f64,
            "moat_audit_events_total{{action=\"{}\"}} vs lines on disk",
            action.as_str()
        );
    }
}

/// A tmpfs of `size` mounted on a fresh directory, unmounted on drop.
struct Tmpfs {
    dir: TempDir,
}

impl Tmpfs {
    fn mount(size: &str) -> Tmpfs {
        let dir = TempDir::new("audit-tmpfs");
        nix::mount::mount(
            Some("tmpfs"),
            dir.path(),
            Some("tmpfs"),
            nix::mount::MsFlags::empty(),
            Some(format!("size={size},mode=0755").as_str()),
        )
        .expect("mounting a tmpfs");
        Tmpfs { dir }
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = nix::mount::umount2(self.dir.path(), nix::mount::MntFlags::MNT_DETACH);
    }
}

#[test]
fn a_storm_on_a_full_disk_leaves_whole_lines_and_exact_counts() {
    skip_unless_able!();
    let _serial = serial();
    let fs = Tmpfs::mount("64k");
    let filler = fs.dir.join("filler");
    std::fs::write(&filler, vec![0u8; 24 * 1024]).unwrap();
    let log = fs.dir.join("audit.jsonl");
    let agent = Moatd::start_with(
        "audit-full",
        &Options {
            config: UNTHROTTLED.to_owned(),
            audit_log: Some(log.clone()),
            ..Options::default()
        },
    );
    let profiles = TempDir::new("audit-full-profiles");
    let profile = profile(&profiles);

    const N: u32 = 1_000;
    run_storm(&agent, "full-storm", &profile, N);
    let m = settle(&agent, "full-storm", N);
    let lines = lines_of(&log);
    let ours = of_workload(&lines, "full-storm");
    let failed = dropped(&m, "write_failed");
    eprintln!(
        "full disk: {} lines ({} bytes), {ours} of the storm's {N}; write_failed {failed}",
        lines.len(),
        std::fs::metadata(&log).unwrap().len()
    );
    assert!(
        std::fs::read(&log).unwrap().ends_with(b"\n"),
        "the log ends mid-line"
    );
    check_counts_equal_lines(&m, &lines);
    assert!(ours < N as usize, "the disk never filled: {ours} lines");
    // Every one of the storm's events that is not on disk was counted as
    // write_failed (and other workloads' too, if any).
    assert!(
        failed >= f64::from(N) - ours as f64,
        "write_failed {failed} < {} events of the storm not on disk",
        N as usize - ours
    );
    assert_eq!(dropped(&m, "log_unavailable"), 0.0);

    // Space comes back: the next storm is written whole.
    std::fs::remove_file(&filler).unwrap();
    const N2: u32 = 20;
    run_storm(&agent, "full-after", &profile, N2);
    let m = settle(&agent, "full-after", N2);
    let lines = lines_of(&log);
    check_counts_equal_lines(&m, &lines);
    assert_eq!(of_workload(&lines, "full-after"), N2 as usize);
    assert_eq!(of_workload(&lines, "full-storm"), ours);
}

#[test]
fn after_a_crash_in_a_storm_every_new_event_is_a_line_of_its_own() {
    skip_unless_able!();
    let _serial = serial();
    let dir = TempDir::new("audit-crash");
    let log = dir.join("audit.jsonl");
    let options = Options {
        config: UNTHROTTLED.to_owned(),
        audit_log: Some(log.clone()),
        ..Options::default()
    };
    let profiles = TempDir::new("audit-crash-profiles");
    let profile = profile(&profiles);

    let mut first = Moatd::start_with("audit-crash1", &options);
    let mut workload: Child = storm(&first, "crash-storm", &profile, 300_000)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_for(Duration::from_secs(10), "the storm's first events", || {
        (of_workload(&lines_of(&log), "crash-storm") > 100).then_some(())
    });
    first.signal(libc::SIGKILL);
    wait_for(Duration::from_secs(5), "moatd to die", || first.try_wait());
    let _ = workload.kill();
    let _ = workload.wait();
    // SIGKILL may or may not have cut a line; make sure the log ends mid-line,
    // as it does when the kill lands inside a write.
    let mut data = std::fs::read(&log).unwrap();
    let killed_mid_line = !data.ends_with(b"\n");
    if !killed_mid_line {
        data.extend_from_slice(br#"{"@timestamp":"2026-12-05T10:00:00.1"#);
        std::fs::write(&log, &data).unwrap();
    }
    let before = lines_of(&log).len();
    drop(first);

    let second = Moatd::start_with("audit-crash2", &options);
    const N: u32 = 10;
    run_storm(&second, "crash-after", &profile, N);
    // The new workload's events, as far as they parse (a line glued to the
    // fragment would not).
    let start = Instant::now();
    let lines = loop {
        let lines = lines_of(&log);
        if of_workload(&lines, "crash-after") >= N as usize
            || start.elapsed() > Duration::from_secs(5)
        {
            break lines;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    eprintln!(
        "crash: SIGKILL {} mid-line; {before} lines before the restart, {} after",
        if killed_mid_line {
            "landed"
        } else {
            "did not land"
        },
        lines.len()
    );
    // The fragment is one unparseable line; everything after it parses, the
    // new workload's events all of them.
    let after: Vec<&Result<AuditEvent, String>> = lines[before..].iter().collect();
    assert!(
        after.iter().all(|l| l.is_ok()),
        "lines written after the restart that do not parse: {:?}",
        after.iter().filter(|l| l.is_err()).collect::<Vec<_>>()
    );
    assert_eq!(of_workload(&lines, "crash-after"), N as usize);
    assert!(std::fs::read(&log).unwrap().ends_with(b"\n"));
}

fn mkfifo(path: &Path) {
    nix::unistd::mkfifo(path, nix::sys::stat::Mode::from_bits_truncate(0o666)).unwrap();
}

#[test]
fn a_fifo_at_the_path_after_sighup_neither_blocks_moatd_nor_loses_count() {
    skip_unless_able!();
    let _serial = serial();
    let dir = TempDir::new("audit-fifo");
    let log = dir.join("audit.jsonl");
    let rotated = dir.join("audit.jsonl.1");
    let mut agent = Moatd::start_with(
        "audit-fifo",
        &Options {
            config: UNTHROTTLED.to_owned(),
            audit_log: Some(log.clone()),
            ..Options::default()
        },
    );
    let profiles = TempDir::new("audit-fifo-profiles");
    let profile = profile(&profiles);

    std::fs::rename(&log, &rotated).unwrap();
    mkfifo(&log);
    agent.signal(libc::SIGHUP);
    // moatd says what it did with the FIFO (an old moatd blocked in open(2)
    // says nothing; the counts below then show it).
    let start = Instant::now();
    while !agent.log_text().contains("reopen") && start.elapsed() < Duration::from_secs(3) {
        std::thread::sleep(Duration::from_millis(50));
    }
    const N: u32 = 150;
    run_storm(&agent, "fifo-storm", &profile, N);
    let m = settle(&agent, "fifo-storm", N);
    // Everything went on to the rotated file, counted exactly.
    let lines = lines_of(&rotated);
    check_counts_equal_lines(&m, &lines);
    assert_eq!(of_workload(&lines, "fifo-storm"), N as usize);
    assert_eq!(dropped(&m, "write_failed"), 0.0);

    // The rotated file deleted as well: dropped and counted, never blocked.
    std::fs::remove_file(&rotated).unwrap();
    let unavailable_before = dropped(&m, "log_unavailable");
    run_storm(&agent, "fifo-storm2", &profile, N);
    let m = settle(&agent, "fifo-storm2", N);
    assert!(
        dropped(&m, "log_unavailable") - unavailable_before >= f64::from(N),
        "log_unavailable went from {unavailable_before} to {}",
        dropped(&m, "log_unavailable")
    );

    agent.signal(libc::SIGTERM);
    let signalled = Instant::now();
    let status = wait_for(Duration::from_secs(5), "moatd to exit on SIGTERM", || {
        agent.try_wait()
    });
    eprintln!("fifo: moatd exited {:?} after SIGTERM", signalled.elapsed());
    assert!(status.success(), "{status}: {}", agent.log_text());
    assert!(signalled.elapsed() < Duration::from_secs(3));
}

/// Runs `ln -s TARGET LINK` as user nobody.
fn plant_symlink(target: &Path, link: &Path) {
    let o = Command::new("ln")
        .arg("-s")
        .arg(target)
        .arg(link)
        .uid(65534)
        .gid(65534)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
}

#[test]
fn a_symlink_planted_in_a_world_writable_directory_is_never_followed() {
    skip_unless_able!();
    let _serial = serial();
    // Without the sticky bit the kernel's protected_symlinks does not apply:
    // only moatd's O_NOFOLLOW stands between the link and the target. With
    // it, the kernel refuses too (EACCES); either way nothing is written.
    for mode in [0o777, 0o1777] {
        symlink_attack(mode);
    }
}

fn symlink_attack(mode: u32) {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = TempDir::new("audit-symlink");
    let shared: PathBuf = dir.join("shared");
    std::fs::create_dir(&shared).unwrap();
    std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(mode)).unwrap();
    // A root-only file the attacker wants moatd to write into.
    let target = dir.join("precious");
    std::fs::write(&target, "root's data\n").unwrap();
    let log = shared.join("audit.jsonl");

    // Planted before moatd starts: refused, moatd exits 1.
    plant_symlink(&target, &log);
    let mut agent = Moatd::spawn(
        "audit-symlink1",
        &Options {
            audit_log: Some(log.clone()),
            ..Options::default()
        },
    );
    let status = wait_for(
        Duration::from_secs(20),
        "moatd to refuse the log or write through the link",
        || {
            let written = std::fs::read_to_string(&target).unwrap() != "root's data\n";
            let exited = agent.try_wait();
            (written || exited.is_some()).then_some(exited)
        },
    );
    assert_eq!(
        std::fs::read_to_string(&target).unwrap(),
        "root's data\n",
        "mode {mode:o}: moatd wrote through the link; moatd: {}",
        agent.log_text()
    );
    assert_eq!(
        status.and_then(|s| s.code()),
        Some(1),
        "mode {mode:o}: {}",
        agent.log_text()
    );
    if mode & 0o1000 == 0 {
        assert!(
            agent.log_text().contains("symbolic link"),
            "{}",
            agent.log_text()
        );
    }
    drop(agent);

    // Planted between a rotation and the SIGHUP: refused, the old file used.
    std::fs::remove_file(&log).unwrap();
    let agent = Moatd::start_with(
        "audit-symlink2",
        &Options {
            config: UNTHROTTLED.to_owned(),
            audit_log: Some(log.clone()),
            ..Options::default()
        },
    );
    let rotated = shared.join("audit.jsonl.1");
    std::fs::rename(&log, &rotated).unwrap();
    plant_symlink(&target, &log);
    agent.signal(libc::SIGHUP);
    let profiles = TempDir::new("audit-symlink-profiles");
    run_storm(&agent, "symlink-storm", &profile(&profiles), 20);
    settle(&agent, "symlink-storm", 20);
    assert_eq!(
        std::fs::read_to_string(&target).unwrap(),
        "root's data\n",
        "mode {mode:o}: moatd wrote through the link after SIGHUP; moatd: {}",
        agent.log_text()
    );
    assert!(
        agent.log_text().contains("cannot reopen audit log"),
        "{}",
        agent.log_text()
    );
    assert_eq!(of_workload(&lines_of(&rotated), "symlink-storm"), 20);
}

#[test]
fn a_blocked_audit_writer_does_not_hold_up_sigterm() {
    skip_unless_able!();
    let _serial = serial();
    // Standard output is a pipe nobody reads: once its 64 KiB are full, every
    // write of the audit log blocks.
    let mut agent = Moatd::start_with(
        "audit-blocked",
        &Options {
            config: UNTHROTTLED.to_owned(),
            audit_log: Some(PathBuf::from("-")),
            stdout_unread: true,
            ..Options::default()
        },
    );
    let profiles = TempDir::new("audit-blocked-profiles");
    const N: u32 = 2_000;
    run_storm(&agent, "blocked-storm", &profile(&profiles), N);
    // The pipe holds about 150 of these events: the writer is stuck in write(2).
    wait_for(
        Duration::from_secs(10),
        "the storm's denials counted",
        || {
            let m = metrics(&agent);
            let counted = m
                .family("moat_seccomp_denials_total")
                .filter(|s| s.label("workload") == Some("blocked-storm"))
                .map(|s| s.value)
                .sum::<f64>();
            (counted == f64::from(N)).then_some(())
        },
    );
    agent.signal(libc::SIGTERM);
    let signalled = Instant::now();
    let start = Instant::now();
    let status = loop {
        if let Some(status) = agent.try_wait() {
            break status;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "moatd still runs 10 s after SIGTERM; moatd:\n{}",
            agent.log_text()
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    eprintln!(
        "blocked writer: moatd exited {:?} after SIGTERM",
        signalled.elapsed()
    );
    assert!(status.success(), "{status}: {}", agent.log_text());
    assert!(
        signalled.elapsed() < Duration::from_secs(4),
        "moatd took {:?} to stop",
        signalled.elapsed()
    );
}
