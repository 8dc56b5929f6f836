//! The agent without eBPF: the daemon's tasks over a fake kernel source and fake
//! cgroup trees (directories whose inode numbers stand for cgroup ids), served on a
//! loopback port. Unprivileged.

mod moatd_common;

use std::{
    fs,
    os::unix::fs::MetadataExt as _,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::Arc,
    time::Duration,
};

use moat_agent::{
    collect::attribution::CgroupLayout,
    collect::attribution::V1_PIDS_ID_FLAG,
    config::{AuditTarget, Config},
    daemon::{self, Running},
    kernel::{
        AuditKind, AuditRecord, DenialAction, DenialCount, KernelSnapshot, ProcessEventCount,
        ProcessEventKind, RetiredPids,
    },
};
use moatd_common::{get, request, sample, temp_dir, wait_for, FakeKernel};
use tokio::{runtime::Runtime, sync::mpsc};

const X86_64: u32 = 0xC000_003E;
const CONTAINER: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
/// Prometheus 2.42's default scrape `Accept` header.
const PROMETHEUS_ACCEPT: &str = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";

/// A daemon over a fake tree, with everything a test needs to drive it.
struct Fixture {
    runtime: Runtime,
    running: Option<Running>,
    kernel: Arc<FakeKernel>,
    records: mpsc::Sender<AuditRecord>,
    dir: PathBuf,
    _tmp: tempfile::TempDir,
    audit_log: PathBuf,
}

impl Fixture {
    /// Starts a daemon whose v2 tree has `cgroups` (paths relative to its root) and
    /// whose pids tree has `pids` (relative path, pids.max, pids.events max).
    fn start(
        name: &str,
        cgroups: &[&str],
        pids: &[(&str, &str, u64)],
        tweak: impl FnOnce(&mut Config),
    ) -> Fixture {
        let tmp = temp_dir(name);
        let dir = tmp.path().to_owned();
        let v2 = dir.join("v2");
        let pids_root = dir.join("pids");
        for cgroup in cgroups {
            fs::create_dir_all(v2.join(cgroup)).unwrap();
        }
        fs::create_dir_all(&v2).unwrap();
        for (path, max, hits) in pids {
            write_pids(&pids_root.join(path), 1, max, *hits);
        }
        fs::create_dir_all(&pids_root).unwrap();
        let audit_log = dir.join("log/audit.jsonl");
        let mut config = Config::default();
        config.http.listen = "127.0.0.1:0".parse().unwrap();
        config.audit.log = AuditTarget::File(audit_log.clone());
        config.workloads.poll_interval_ms = 50;
        tweak(&mut config);
        let layout = CgroupLayout {
            v2_mount: v2,
            pids_mount: Some(pids_root),
        };
        let runtime = Runtime::new().unwrap();
        let kernel = Arc::new(FakeKernel::default());
        let (records, records_rx) = mpsc::channel(64);
        let running = {
            let _guard = runtime.enter();
            let listener = daemon::bind(&config).unwrap();
            daemon::start(&config, &layout, listener, kernel.clone(), records_rx).unwrap()
        };
        Fixture {
            runtime,
            running: Some(running),
            kernel,
            records,
            dir,
            _tmp: tmp,
            audit_log,
        }
    }

    fn addr(&self) -> std::net::SocketAddr {
        self.running.as_ref().unwrap().local_addr()
    }

    /// The cgroup id (inode) of a fake v2 cgroup.
    fn id(&self, cgroup: &str) -> u64 {
        fs::metadata(self.dir.join("v2").join(cgroup))
            .unwrap()
            .ino()
    }

    fn set(&self, snapshot: KernelSnapshot) {
        *self.kernel.snapshot.lock().unwrap() = snapshot;
    }

    fn metrics(&self) -> String {
        let response = get(self.addr(), "/metrics");
        assert_eq!(response.status, 200, "{}", response.body);
        response.body
    }

    fn audit_lines(&self, path: &Path) -> Vec<serde_json::Value> {
        fs::read_to_string(path)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).expect("audit line is JSON"))
            .collect()
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        if let Some(running) = self.running.take() {
            self.runtime.block_on(running.shutdown());
        }
    }
}

fn write_pids(dir: &Path, current: u64, max: &str, hits: u64) {
    fs::create_dir_all(dir).unwrap();
    fs::write(dir.join("pids.current"), format!("{current}\n")).unwrap();
    fs::write(dir.join("pids.max"), format!("{max}\n")).unwrap();
    fs::write(dir.join("pids.events"), format!("max {hits}\n")).unwrap();
}

fn denial(cgroup_id: u64, nr: i32, action: DenialAction, errno: u16, count: u64) -> DenialCount {
    DenialCount {
        cgroup_id,
        arch: X86_64,
        syscall_nr: nr,
        action,
        errno,
        count,
    }
}

fn event(cgroup_id: u64, kind: ProcessEventKind, errno: u16, count: u64) -> ProcessEventCount {
    ProcessEventCount {
        cgroup_id,
        kind,
        errno,
        count,
    }
}

fn docker_path() -> String {
    format!("docker/{CONTAINER}")
}

fn sample_snapshot(f: &Fixture) -> KernelSnapshot {
    let (web, web_sub, db, root, docker) = (
        f.id("moat/web"),
        f.id("moat/web/sub"),
        f.id("moat/db"),
        f.id(""),
        f.id(&docker_path()),
    );
    KernelSnapshot {
        denials: vec![
            denial(web, 165, DenialAction::Errno, 1, 5),
            denial(web_sub, 165, DenialAction::Errno, 1, 2),
            denial(db, 39, DenialAction::Trap, 0, 2),
            denial(db, 39, DenialAction::Kill, 0, 1),
            denial(root, 100_000, DenialAction::Errno, 38, 1),
            denial(docker, 165, DenialAction::Errno, 1, 4),
        ],
        process_events: vec![
            event(web, ProcessEventKind::ForkProcess, 0, 10),
            event(web, ProcessEventKind::ForkThread, 0, 3),
            event(web, ProcessEventKind::Exec, 0, 9),
            event(web, ProcessEventKind::Exit, 0, 8),
            event(web, ProcessEventKind::ForkFailed, 11, 6),
            event(web, ProcessEventKind::UsernsCreated, 0, 1),
            event(root, ProcessEventKind::ForkProcess, 0, 100),
        ],
        map_full: vec![("DENIALS", 3)],
        audit_dropped: vec![("rate_limited", 7), ("buffer_full", 0)],
    }
}

const TREE: &[&str] = &["moat/web/sub", "moat/db", "system.slice/ssh.service"];

fn tree() -> Vec<String> {
    let mut cgroups: Vec<String> = TREE.iter().map(|s| (*s).to_owned()).collect();
    cgroups.push(docker_path());
    cgroups
}

fn start_default(name: &str) -> Fixture {
    let cgroups = tree();
    let cgroups: Vec<&str> = cgroups.iter().map(String::as_str).collect();
    Fixture::start(
        name,
        &cgroups,
        &[("moat/web", "64", 2), (&docker_path(), "max", 0)],
        |_| {},
    )
}

#[test]
fn metrics_have_the_documented_names_labels_and_values() {
    let f = start_default("names");
    f.set(sample_snapshot(&f));
    // The pids reading comes from the poller.
    let body = wait_for(Duration::from_secs(5), "the pids gauges", || {
        let body = f.metrics();
        sample(&body, "moat_pids_current{workload=\"web\"}").map(|_| body)
    });
    let expect = |series: &str, value: f64| {
        assert_eq!(sample(&body, series), Some(value), "{series} in:\n{body}");
    };
    expect(
        "moat_seccomp_denials_total{workload=\"web\",syscall=\"mount\",action=\"errno\",errno=\"EPERM\"}",
        7.0,
    );
    expect(
        "moat_seccomp_denials_total{workload=\"db\",syscall=\"getpid\",action=\"trap\",errno=\"\"}",
        2.0,
    );
    expect(
        "moat_seccomp_denials_total{workload=\"db\",syscall=\"getpid\",action=\"kill\",errno=\"\"}",
        1.0,
    );
    expect(
        "moat_seccomp_denials_total{workload=\"host\",syscall=\"100000\",action=\"errno\",errno=\"ENOSYS\"}",
        1.0,
    );
    expect(
        "moat_seccomp_denials_total{workload=\"docker:0123456789ab\",syscall=\"mount\",action=\"errno\",errno=\"EPERM\"}",
        4.0,
    );
    expect("moat_forks_total{workload=\"web\",kind=\"process\"}", 10.0);
    expect("moat_forks_total{workload=\"web\",kind=\"thread\"}", 3.0);
    expect(
        "moat_forks_total{workload=\"host\",kind=\"process\"}",
        100.0,
    );
    expect("moat_execs_total{workload=\"web\"}", 9.0);
    expect("moat_exits_total{workload=\"web\"}", 8.0);
    expect(
        "moat_fork_failures_total{workload=\"web\",errno=\"EAGAIN\"}",
        6.0,
    );
    expect("moat_userns_created_total{workload=\"web\"}", 1.0);
    expect("moat_pids_current{workload=\"web\"}", 1.0);
    expect("moat_pids_limit{workload=\"web\"}", 64.0);
    expect("moat_pids_limit_hits_total{workload=\"web\"}", 2.0);
    expect("moat_pids_current{workload=\"docker:0123456789ab\"}", 1.0);
    assert_eq!(
        sample(&body, "moat_pids_limit{workload=\"docker:0123456789ab\"}"),
        None,
        "pids.max of max has no limit sample"
    );
    expect("moat_ebpf_map_full_total{map=\"DENIALS\"}", 3.0);
    expect(
        "moat_audit_events_dropped_total{reason=\"rate_limited\"}",
        7.0,
    );
    expect(
        "moat_audit_events_dropped_total{reason=\"buffer_full\"}",
        0.0,
    );
    expect(
        "moat_audit_events_dropped_total{reason=\"write_failed\"}",
        0.0,
    );
    expect("moat_audit_events_total{action=\"seccomp_denied\"}", 0.0);
    expect("moat_workload_label_overflow_total", 0.0);
    let release = nix::sys::utsname::uname().unwrap();
    expect(
        &format!(
            "moat_build_info{{version=\"{}\",kernel=\"{}\"}}",
            env!("CARGO_PKG_VERSION"),
            release.release().to_string_lossy()
        ),
        1.0,
    );
    assert!(body.contains("# TYPE moat_seccomp_denials_total counter"));
    assert!(body.contains("# TYPE moat_pids_current gauge"));
    assert!(body.contains("# TYPE moat_build_info gauge"));
    assert!(body.contains("process_resident_memory_bytes "));
    assert!(body.contains("process_cpu_seconds_total "));

    // Every moat_* family is one of the table.
    let allowed: Vec<&str> = moat_api::metrics::FAMILIES.iter().map(|s| s.name).collect();
    for line in body.lines().filter(|l| l.starts_with("# TYPE moat_")) {
        let name = line.split_whitespace().nth(2).unwrap();
        assert!(allowed.contains(&name), "unexpected family {name}");
    }
    promtool_check(&body);
}

/// `promtool check metrics` (Prometheus's own linter) accepts the exposition.
fn promtool_check(body: &str) {
    let Ok(mut child) = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
    else {
        eprintln!("SKIP (promtool part): promtool is not installed (Debian package prometheus)");
        return;
    };
    use std::io::Write as _;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(body.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success() && out.stdout.is_empty(),
        "promtool check metrics: {}\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn openmetrics_is_served_when_asked_for() {
    let f = start_default("openmetrics");
    f.set(sample_snapshot(&f));
    let om = request(
        f.addr(),
        "GET",
        "/metrics",
        &[("Accept", PROMETHEUS_ACCEPT)],
    )
    .unwrap();
    assert_eq!(om.status, 200);
    assert_eq!(
        om.header("content-type"),
        Some("application/openmetrics-text; version=1.0.0; charset=utf-8")
    );
    assert!(om.body.ends_with("# EOF\n"), "{}", om.body);
    assert!(om.body.contains("# TYPE moat_seccomp_denials counter\n"));
    assert!(om.body.contains("# TYPE process_cpu_seconds counter\n"));
    assert!(om.body.contains(
        "moat_seccomp_denials_total{workload=\"web\",syscall=\"mount\",action=\"errno\",errno=\"EPERM\"} 7\n"
    ));
    check_openmetrics_structure(&om.body);

    let text = request(
        f.addr(),
        "GET",
        "/metrics",
        &[("Accept", "text/plain;version=0.0.4")],
    )
    .unwrap();
    assert_eq!(
        text.header("content-type"),
        Some("text/plain; version=0.0.4; charset=utf-8")
    );
    assert!(!text.body.contains("# EOF"));
    let plain = get(f.addr(), "/metrics");
    assert_eq!(
        plain.header("content-type"),
        Some("text/plain; version=0.0.4; charset=utf-8")
    );
}

/// The rules of OpenMetrics 1.0 that a text-format exposition would break: one
/// TYPE per family before its samples, families contiguous, counter samples named
/// `<family>_total`, nothing after `# EOF`.
fn check_openmetrics_structure(body: &str) {
    let mut families = std::collections::HashSet::new();
    let mut current: Option<(String, String)> = None;
    let lines: Vec<&str> = body.lines().collect();
    assert_eq!(lines.last(), Some(&"# EOF"));
    for line in &lines[..lines.len() - 1] {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut parts = rest.split_whitespace();
            let (name, kind) = (parts.next().unwrap(), parts.next().unwrap());
            assert!(
                families.insert(name.to_owned()),
                "family {name} declared twice"
            );
            current = Some((name.to_owned(), kind.to_owned()));
            continue;
        }
        if line.starts_with("# HELP ") || line.starts_with("# UNIT ") {
            let name = line.split_whitespace().nth(2).unwrap();
            assert_eq!(Some(name), current.as_ref().map(|c| c.0.as_str()), "{line}");
            continue;
        }
        assert!(!line.starts_with('#'), "unexpected comment {line}");
        let (family, kind) = current.as_ref().expect("sample before any TYPE");
        let name = line.split(['{', ' ']).next().unwrap();
        match kind.as_str() {
            "counter" => assert_eq!(name, format!("{family}_total"), "{line}"),
            "gauge" => assert_eq!(name, family, "{line}"),
            other => panic!("unexpected type {other}"),
        }
    }
}

#[test]
fn landing_page_404_and_405() {
    let f = start_default("pages");
    let page = get(f.addr(), "/");
    assert_eq!(page.status, 200);
    assert_eq!(
        page.header("content-type"),
        Some("text/html; charset=utf-8")
    );
    assert!(page.body.contains("<a href=\"/metrics\">"), "{}", page.body);
    assert_eq!(get(f.addr(), "/metricz").status, 404);
    assert_eq!(
        request(f.addr(), "POST", "/metrics", &[]).unwrap().status,
        405
    );
    let head = request(f.addr(), "HEAD", "/metrics", &[]).unwrap();
    assert_eq!(head.status, 200);
    assert!(head.body.is_empty());
}

#[test]
fn workload_labels_are_capped() {
    let f = Fixture::start(
        "cap",
        &["moat/a", "moat/b", "moat/c", "moat/d"],
        &[],
        |config| config.workloads.max_labels = 2,
    );
    let denials = ["a", "b", "c", "d"]
        .iter()
        .map(|w| denial(f.id(&format!("moat/{w}")), 165, DenialAction::Errno, 1, 1))
        .collect();
    f.set(KernelSnapshot {
        denials,
        ..Default::default()
    });
    for _ in 0..3 {
        let body = f.metrics();
        let series = |w: &str| {
            sample(
                &body,
                &format!("moat_seccomp_denials_total{{workload=\"{w}\",syscall=\"mount\",action=\"errno\",errno=\"EPERM\"}}"),
            )
        };
        assert_eq!(series("a"), Some(1.0), "{body}");
        assert_eq!(series("b"), Some(1.0));
        assert_eq!(series("c"), None);
        assert_eq!(series("other"), Some(2.0));
        // Each refused workload counts once, however often it is scraped.
        assert_eq!(
            sample(&body, "moat_workload_label_overflow_total"),
            Some(2.0)
        );
    }
}

/// `CLOCK_BOOTTIME` now, in nanoseconds, as the kernel stamps records.
fn boot_ns() -> u64 {
    moat_agent::collect::events::boottime_ns() as u64
}

#[test]
fn kernel_records_become_audit_lines() {
    let f = start_default("records");
    let web = f.id("moat/web");
    let pid = std::process::id();
    let record = |kind| AuditRecord {
        boot_ns: boot_ns(),
        pid,
        tid: pid,
        cgroup_id: web,
        comm: "tester".to_owned(),
        kind,
    };
    let sent = [
        record(AuditKind::SeccompDenied {
            arch: X86_64,
            syscall_nr: 165,
            action: DenialAction::Errno,
            errno: 1,
        }),
        record(AuditKind::SeccompDenied {
            arch: X86_64,
            syscall_nr: 39,
            action: DenialAction::Trap,
            errno: 0,
        }),
        record(AuditKind::ForkFailed { errno: 11 }),
        record(AuditKind::UsernsCreated),
    ];
    for r in sent {
        f.records.blocking_send(r).unwrap();
    }
    let lines = wait_for(Duration::from_secs(5), "4 audit lines", || {
        let lines = f.audit_lines(&f.audit_log);
        (lines.len() >= 4).then_some(lines)
    });
    let denied = &lines[0];
    assert_eq!(denied["event"]["action"], "seccomp_denied");
    assert_eq!(denied["event"]["kind"], "event");
    assert_eq!(
        denied["event"]["category"],
        serde_json::json!(["process", "intrusion_detection"])
    );
    assert_eq!(denied["event"]["type"], serde_json::json!(["denied"]));
    assert_eq!(denied["process"]["pid"], pid);
    assert_eq!(denied["process"]["thread"]["id"], pid);
    assert_eq!(denied["process"]["name"], "tester");
    assert_eq!(
        denied["process"]["executable"],
        fs::read_link("/proc/self/exe").unwrap().to_str().unwrap()
    );
    assert_eq!(denied["workload"]["name"], "web");
    assert_eq!(denied["cgroup"]["path"], "/moat/web");
    assert_eq!(denied["host"]["name"], daemon::host_name());
    assert_eq!(
        denied["seccomp"],
        serde_json::json!({"syscall": "mount", "syscall_nr": 165, "arch": "x86_64",
                           "action": "errno", "errno": "EPERM"})
    );
    // @timestamp: RFC 3339 with nanoseconds, within a minute of now.
    let stamp = denied["@timestamp"].as_str().unwrap();
    assert_eq!(
        stamp.len(),
        "2026-05-20T10:11:12.123456789Z".len(),
        "{stamp}"
    );
    let now = moat_api::time::rfc3339_nanos(moat_agent::collect::events::realtime_ns());
    assert_eq!(&stamp[..15], &now[..15], "{stamp} vs {now}");
    assert_eq!(lines[1]["seccomp"]["action"], "trap");
    assert_eq!(lines[1]["seccomp"]["errno"], serde_json::Value::Null);
    assert_eq!(lines[2]["event"]["action"], "fork_failed");
    assert_eq!(lines[2]["error"]["code"], "EAGAIN");
    assert_eq!(lines[3]["event"]["action"], "userns_created");

    let body = f.metrics();
    assert_eq!(
        sample(&body, "moat_audit_events_total{action=\"seccomp_denied\"}"),
        Some(2.0)
    );
    assert_eq!(
        sample(&body, "moat_audit_events_total{action=\"fork_failed\"}"),
        Some(1.0)
    );
    assert_eq!(
        sample(&body, "moat_audit_events_total{action=\"userns_created\"}"),
        Some(1.0)
    );
}

/// The audit lines whose `event.action` is `action`.
fn with_action<'a>(
    lines: &'a [serde_json::Value],
    action: &'a str,
) -> impl Iterator<Item = &'a serde_json::Value> {
    lines.iter().filter(move |l| l["event"]["action"] == action)
}

#[test]
fn pids_limit_hits_and_fork_bursts_become_audit_events() {
    let f = Fixture::start("derived", &["moat/w1"], &[("moat/w1", "4", 0)], |config| {
        config.audit.fork_burst_threshold = 1000;
    });
    let w1 = f.id("moat/w1");
    let forks = |n| KernelSnapshot {
        process_events: vec![event(w1, ProcessEventKind::ForkProcess, 0, n)],
        ..Default::default()
    };
    f.set(forks(1_000_000));
    // Let the poller prime on the current hit count and fork total.
    std::thread::sleep(Duration::from_millis(200));
    write_pids(&f.dir.join("pids/moat/w1"), 4, "4", 3);
    // A million forks in one 50 ms interval is a burst.
    f.set(forks(2_000_000));
    let lines = wait_for(Duration::from_secs(5), "both events", || {
        let lines = f.audit_lines(&f.audit_log);
        let has = |action| with_action(&lines, action).next().is_some();
        (has("pids_limit_reached") && has("fork_burst")).then_some(lines)
    });
    let pids = with_action(&lines, "pids_limit_reached").next().unwrap();
    assert_eq!(pids["workload"]["name"], "w1");
    assert_eq!(pids["cgroup"]["path"], "/moat/w1");
    assert_eq!(pids["pids"]["limit"], 4);
    assert_eq!(pids["pids"]["limit_hits"], 3);
    assert_eq!(pids["pids"]["new_hits"], 3);
    let burst = with_action(&lines, "fork_burst").next().unwrap();
    assert_eq!(burst["workload"]["name"], "w1");
    assert_eq!(burst["cgroup"]["path"], "/moat/w1");
    assert_eq!(burst["fork_burst"]["threshold"], 1000);
    assert!(burst["fork_burst"]["rate"].as_u64().unwrap() > 1000);

    // Once per burst: the rate stays high (the total keeps growing) but no second event.
    // (The total grows every 5 ms, so every 50 ms poll interval sees growth.)
    for step in 1..=100 {
        f.set(forks(2_000_000 + step * 100_000));
        std::thread::sleep(Duration::from_millis(5));
    }
    let bursts = with_action(&f.audit_lines(&f.audit_log), "fork_burst").count();
    assert_eq!(bursts, 1);
    let body = f.metrics();
    assert_eq!(
        sample(&body, "moat_audit_events_total{action=\"fork_burst\"}"),
        Some(1.0)
    );
    assert_eq!(
        sample(
            &body,
            "moat_audit_events_total{action=\"pids_limit_reached\"}"
        ),
        Some(1.0)
    );
    assert_eq!(
        sample(&body, "moat_pids_limit_hits_total{workload=\"w1\"}"),
        Some(3.0)
    );
}

/// A workload's pids cgroup removed between two polls: its final count comes
/// from the kernel side's record, the counter takes it once (never going down
/// when the cgroup goes away), and the hits not seen alive become an event.
#[test]
fn hits_of_pids_cgroups_removed_between_polls_are_counted_once() {
    let f = Fixture::start("retired", &[], &[("moat/w1", "5", 0)], |config| {
        config.workloads.poll_interval_ms = 50;
    });
    let w1 = fs::metadata(f.dir.join("pids/moat/w1")).unwrap().ino();
    std::thread::sleep(Duration::from_millis(200));
    write_pids(&f.dir.join("pids/moat/w1"), 5, "5", 2);
    wait_for(Duration::from_secs(5), "w1's hits read alive", || {
        sample(&f.metrics(), "moat_pids_limit_hits_total{workload=\"w1\"}").filter(|&v| v == 2.0)
    });
    // w1 gets 5 more refusals and is removed before the next poll; w2 is born,
    // hits its limit 4 times and is removed between two polls.
    fs::remove_dir_all(f.dir.join("pids/moat/w1")).unwrap();
    *f.kernel.retired.lock().unwrap() = vec![
        RetiredPids {
            cgroup_id: V1_PIDS_ID_FLAG | w1,
            hits: 7,
            path: Some("/moat/w1".to_owned()),
        },
        RetiredPids {
            cgroup_id: V1_PIDS_ID_FLAG | 999_999_999,
            hits: 4,
            path: Some("/moat/w2".to_owned()),
        },
        // Not a workload's pids cgroup: ignored.
        RetiredPids {
            cgroup_id: V1_PIDS_ID_FLAG | 999_999_998,
            hits: 100,
            path: Some("/user.slice".to_owned()),
        },
    ];
    let body = wait_for(Duration::from_secs(5), "the removed cgroups' hits", || {
        let body = f.metrics();
        (sample(&body, "moat_pids_limit_hits_total{workload=\"w2\"}") == Some(4.0)).then_some(body)
    });
    assert_eq!(
        sample(&body, "moat_pids_limit_hits_total{workload=\"w1\"}"),
        Some(7.0)
    );
    assert_eq!(sample(&body, "moat_pids_current{workload=\"w1\"}"), None);
    // Still exactly that, polls later.
    std::thread::sleep(Duration::from_millis(300));
    let body = f.metrics();
    assert_eq!(
        sample(&body, "moat_pids_limit_hits_total{workload=\"w1\"}"),
        Some(7.0)
    );
    assert_eq!(
        sample(&body, "moat_pids_limit_hits_total{workload=\"w2\"}"),
        Some(4.0)
    );
    let lines = f.audit_lines(&f.audit_log);
    let new_hits: Vec<(String, u64)> = with_action(&lines, "pids_limit_reached")
        .map(|e| {
            (
                e["workload"]["name"].as_str().unwrap().to_owned(),
                e["pids"]["new_hits"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        new_hits,
        [
            ("w1".to_owned(), 2),
            ("w1".to_owned(), 5),
            ("w2".to_owned(), 4)
        ]
    );
}

#[test]
fn reopening_the_audit_log_follows_a_rename() {
    let f = start_default("reopen");
    let web = f.id("moat/web");
    let record = || AuditRecord {
        boot_ns: boot_ns(),
        pid: 1,
        tid: 1,
        cgroup_id: web,
        comm: "x".to_owned(),
        kind: AuditKind::UsernsCreated,
    };
    f.records.blocking_send(record()).unwrap();
    wait_for(Duration::from_secs(5), "the first line", || {
        (f.audit_lines(&f.audit_log).len() == 1).then_some(())
    });
    let rotated = f.audit_log.with_extension("jsonl.1");
    fs::rename(&f.audit_log, &rotated).unwrap();
    f.running.as_ref().unwrap().reopen_audit_log();
    wait_for(Duration::from_secs(5), "the reopened log", || {
        f.audit_log.exists().then_some(())
    });
    f.records.blocking_send(record()).unwrap();
    wait_for(Duration::from_secs(5), "the line in the new file", || {
        (f.audit_lines(&f.audit_log).len() == 1).then_some(())
    });
    assert_eq!(f.audit_lines(&rotated).len(), 1);
}

#[test]
fn scrapes_are_fast_with_a_thousand_workloads() {
    let names: Vec<String> = (0..1000).map(|i| format!("moat/w{i}")).collect();
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    let f = Fixture::start("thousand", &refs, &[], |config| {
        config.workloads.max_labels = 2000;
    });
    let mut snapshot = KernelSnapshot::default();
    for name in &names {
        let id = f.id(name);
        snapshot
            .denials
            .push(denial(id, 165, DenialAction::Errno, 1, 1));
        for kind in [
            ProcessEventKind::ForkProcess,
            ProcessEventKind::ForkThread,
            ProcessEventKind::Exec,
            ProcessEventKind::Exit,
        ] {
            snapshot.process_events.push(event(id, kind, 0, 5));
        }
    }
    f.set(snapshot);
    let _ = f.metrics();
    let started = std::time::Instant::now();
    let rounds = 5;
    for _ in 0..rounds {
        let body = f.metrics();
        assert_eq!(
            sample(&body, "moat_forks_total{workload=\"w999\",kind=\"thread\"}"),
            Some(5.0)
        );
    }
    let each = started.elapsed() / rounds;
    eprintln!("/metrics with 1000 workloads (5000 series): {each:?} per scrape");
    assert!(
        each < Duration::from_millis(500),
        "a scrape took {each:?} (debug build)"
    );
}

/// A real Prometheus scrapes the agent (it asks for OpenMetrics first) and stores
/// the series: the exposition parses with Prometheus's own OpenMetrics parser.
#[test]
fn a_real_prometheus_scrapes_it() {
    let Ok(version) = Command::new("prometheus").arg("--version").output() else {
        eprintln!("SKIP: prometheus is not installed (Debian package prometheus)");
        return;
    };
    assert!(version.status.success());
    let f = start_default("prometheus");
    f.set(sample_snapshot(&f));
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let config = f.dir.join("prometheus.yml");
    fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n\
             scrape_configs:\n  - job_name: moatd\n    static_configs:\n      - targets: ['{}']\n",
            f.addr()
        ),
    )
    .unwrap();
    let mut prometheus = Command::new("prometheus")
        .arg(format!("--config.file={}", config.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            f.dir.join("tsdb").display()
        ))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let api: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let query = |q: &str| -> Option<serde_json::Value> {
        let path = format!("/api/v1/query?query={}", q);
        let response = request(api, "GET", &path, &[]).ok()?;
        let json: serde_json::Value = serde_json::from_str(&response.body).ok()?;
        let result = json["data"]["result"].as_array()?.first()?.clone();
        Some(result)
    };
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let result = wait_for(
            Duration::from_secs(30),
            "Prometheus to store a sample",
            || query("moat_seccomp_denials_total%7Bworkload%3D%22web%22%2Caction%3D%22errno%22%7D"),
        );
        assert_eq!(result["value"][1], "7");
        // The scrape used OpenMetrics: Prometheus keeps the target's last error empty
        // and marks it up.
        let targets = request(api, "GET", "/api/v1/targets", &[]).unwrap();
        let json: serde_json::Value = serde_json::from_str(&targets.body).unwrap();
        let target = &json["data"]["activeTargets"][0];
        assert_eq!(target["health"], "up", "{target}");
        assert_eq!(target["lastError"], "", "{target}");
    }));
    let _ = prometheus.kill();
    let _ = prometheus.wait();
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
}
