//! moatd and its service manager (issue 16, "systemd"): the real moatd, with a
//! real `NOTIFY_SOCKET` listener (a unix datagram socket this test binds, as
//! systemd's would be), on the real kernel.
//!
//! - The exact sequence: two `STATUS=` lines while starting, `READY=1` (with
//!   its status) only once the programs are attached and `/metrics` answers,
//!   `WATCHDOG=1` at the pace `WATCHDOG_USEC` asks, `STOPPING=1` on SIGTERM and
//!   nothing after it. The socket is an abstract one (`@name`), as systemd's
//!   is for user managers, here; a path in the watchdog test.
//! - A stalled collector stops the pings: the test stops moatd's collector
//!   thread (`moat-collect`) alone with `PTRACE_INTERRUPT`, which freezes that
//!   one thread exactly as a collector stuck in a map read or a cgroup walk
//!   would be, with no test hook in moatd. While it is stopped no `WATCHDOG=1`
//!   arrives, though moatd's other threads (the HTTP server) still answer;
//!   once it is let go the pings come back.

use std::os::linux::net::SocketAddrExt as _;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::time::{Duration, Instant};

use moat_tests::moatd::{pids_on_v1, pids_on_v2, Moatd, Options};

/// Why the tests cannot run here, if they cannot.
fn skip_reason() -> Option<&'static str> {
    if !moat_tests::is_root() {
        return Some("moatd loads eBPF programs and needs root");
    }
    if !pids_on_v1() && !pids_on_v2() {
        return Some("no pids cgroup controller on this machine");
    }
    None
}

/// The next datagram, or `None` after `timeout`.
fn recv(socket: &UnixDatagram, timeout: Duration) -> Option<String> {
    socket.set_read_timeout(Some(timeout)).unwrap();
    let mut buf = [0u8; 4096];
    match socket.recv(&mut buf) {
        Ok(n) => Some(String::from_utf8(buf[..n].to_vec()).unwrap()),
        Err(err)
            if matches!(
                err.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ) =>
        {
            None
        }
        Err(err) => panic!("recv on the notify socket: {err}"),
    }
}

/// Every datagram that arrives within `window`.
fn drain(socket: &UnixDatagram, window: Duration) -> Vec<String> {
    let end = Instant::now() + window;
    let mut got = Vec::new();
    while let Some(left) = end.checked_duration_since(Instant::now()) {
        if left.is_zero() {
            break;
        }
        match recv(socket, left) {
            Some(message) => got.push(message),
            None => break,
        }
    }
    got
}

/// The next datagram that is not a watchdog ping; the pings skipped are
/// counted in `pings`.
fn next_state(socket: &UnixDatagram, pings: &mut usize, agent: &Moatd) -> String {
    loop {
        match recv(socket, Duration::from_secs(30)) {
            Some(message) if message == "WATCHDOG=1" => *pings += 1,
            Some(message) => return message,
            None => panic!(
                "no notification from moatd within 30 s; its log:\n{}",
                agent.log_text()
            ),
        }
    }
}

/// moatd's open BPF links: one per attached program. A link made by
/// attaching shows as `anon_inode:bpf_link`; one opened from its pin (moatd
/// keeps its links pinned, and holds them open from there) as
/// `anon_inode:bpf-link`.
fn bpf_links(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .filter_map(|entry| std::fs::read_link(entry.ok()?.path()).ok())
        .filter(|target| {
            let target = target.to_string_lossy();
            target == "anon_inode:bpf_link" || target == "anon_inode:bpf-link"
        })
        .count()
}

fn notify_env(socket: &str, watchdog: Duration) -> Vec<(String, String)> {
    vec![
        ("NOTIFY_SOCKET".to_owned(), socket.to_owned()),
        ("WATCHDOG_USEC".to_owned(), watchdog.as_micros().to_string()),
    ]
}

#[test]
fn notifies_status_ready_watchdog_and_stopping_in_order() {
    if let Some(reason) = skip_reason() {
        eprintln!("SKIP: {reason}");
        return;
    }
    let name = format!("moat-test-notify-{}", std::process::id());
    let socket =
        UnixDatagram::bind_addr(&SocketAddr::from_abstract_name(name.as_bytes()).unwrap()).unwrap();
    // 1 s: a ping at most every 500 ms.
    let mut agent = Moatd::spawn(
        "notify-seq",
        &Options {
            env: notify_env(&format!("@{name}"), Duration::from_secs(1)),
            ..Options::default()
        },
    );
    let mut pings = 0;
    assert_eq!(
        next_state(&socket, &mut pings, &agent),
        "STATUS=loading and attaching the eBPF programs"
    );
    assert_eq!(
        next_state(&socket, &mut pings, &agent),
        "STATUS=programs attached; waiting for /metrics to answer"
    );
    let ready = next_state(&socket, &mut pings, &agent);
    // Checked at once, before anything else can make them so.
    let metrics = agent.get_metrics();
    let links_at_ready = bpf_links(agent.pid());
    assert_eq!(
        ready,
        format!(
            "READY=1\nSTATUS=serving http://127.0.0.1:{}/metrics; audit log {}",
            agent.port(),
            agent.audit_log.display()
        )
    );
    let metrics = metrics.expect("/metrics answers 200 when READY=1 arrives");
    assert!(
        metrics.contains("moat_build_info{"),
        "not moatd's metrics:\n{metrics}"
    );
    assert!(links_at_ready > 0, "no BPF link open when READY=1 arrived");

    // After READY only pings, at most one every 500 ms: 2 to 5 in 2 s (the
    // bounds leave room for a loaded machine on either side).
    let during = drain(&socket, Duration::from_secs(2));
    assert!(
        during.iter().all(|m| m == "WATCHDOG=1"),
        "only WATCHDOG=1 between READY and SIGTERM, got {during:?}"
    );
    assert!(
        (2..=5).contains(&during.len()),
        "{} pings in 2 s with WATCHDOG_USEC=1000000: {during:?}",
        during.len()
    );
    assert_eq!(
        bpf_links(agent.pid()),
        links_at_ready,
        "every program was attached before READY=1"
    );

    agent.signal(libc::SIGTERM);
    assert_eq!(
        next_state(&socket, &mut pings, &agent),
        "STOPPING=1\nSTATUS=stopping on SIGTERM"
    );
    let status = moat_tests::moatd::wait_for(Duration::from_secs(10), "moatd to exit", || {
        agent.try_wait()
    });
    assert!(status.success(), "moatd exited with {status}");
    let after = drain(&socket, Duration::from_millis(200));
    assert!(after.is_empty(), "nothing after STOPPING=1, got {after:?}");
}

#[test]
fn a_stalled_collector_stops_the_watchdog_pings() {
    use nix::sys::{ptrace, wait};
    use nix::unistd::Pid;

    if let Some(reason) = skip_reason() {
        eprintln!("SKIP: {reason}");
        return;
    }
    let dir = moat_tests::moatd::TempDir::new("notify-wd");
    let path = dir.join("notify");
    let socket = UnixDatagram::bind(&path).unwrap();
    // 400 ms: a ping at most every 200 ms; collector polls every 100 ms.
    let agent = Moatd::spawn(
        "notify-wd",
        &Options {
            env: notify_env(path.to_str().unwrap(), Duration::from_millis(400)),
            ..Options::default()
        },
    );
    let mut pings = 0;
    while !next_state(&socket, &mut pings, &agent).starts_with("READY=1\n") {}
    let before = drain(&socket, Duration::from_secs(1));
    assert!(
        before.len() >= 3 && before.iter().all(|m| m == "WATCHDOG=1"),
        "pings every 200 ms before the stall, got {before:?}"
    );

    let collector = std::fs::read_dir(format!("/proc/{}/task", agent.pid()))
        .unwrap()
        .filter_map(|task| {
            let task = task.ok()?;
            let comm = std::fs::read_to_string(task.path().join("comm")).ok()?;
            (comm.trim() == "moat-collect").then(|| task.file_name().to_string_lossy().into_owned())
        })
        .next()
        .expect("moatd has a moat-collect thread");
    let tid = Pid::from_raw(collector.parse().unwrap());
    ptrace::seize(tid, ptrace::Options::empty()).expect("PTRACE_SEIZE the collector thread");
    ptrace::interrupt(tid).expect("PTRACE_INTERRUPT the collector thread");
    let stopped = wait::waitpid(tid, Some(wait::WaitPidFlag::__WALL)).unwrap();
    assert!(
        matches!(stopped, wait::WaitStatus::PtraceEvent(..)),
        "the collector thread stopped: {stopped:?}"
    );
    // A ping the thread sent just before it stopped may still be queued.
    let _ = drain(&socket, Duration::from_millis(50));

    let stalled = drain(&socket, Duration::from_millis(1500));
    // The process is alive and serving: only the collector is stuck (a
    // scrape gets the last snapshot after waiting 1 s for a fresh one).
    let served = agent.get_metrics();
    ptrace::detach(tid, None).expect("PTRACE_DETACH the collector thread");
    assert!(
        stalled.is_empty(),
        "no WATCHDOG=1 while the collector is stopped, got {stalled:?}"
    );
    assert!(
        served.is_some(),
        "moatd still serves /metrics while its collector is stopped"
    );

    let resumed = drain(&socket, Duration::from_secs(1));
    assert!(
        !resumed.is_empty() && resumed.iter().all(|m| m == "WATCHDOG=1"),
        "pings again once the collector runs, got {resumed:?}"
    );
}
