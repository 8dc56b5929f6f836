//! `moat events` and `moat stats`, driven as a user drives them.
//!
//! - events: formatting, `--json` passthrough, `--workload` filtering and
//!   malformed-line warnings from a hand-written audit log; `--follow` across
//!   appends, partial lines, rotation and truncation, stopped by SIGTERM.
//! - stats: `--no-stream` and streaming against a fake `/metrics` served by the
//!   test, with known counter increases; an unreachable or failing agent.
//! - end to end (root): the real moatd, a workload denied `unshare`, its event in
//!   `moat events`, and a running workload's pids and limit in `moat stats`.

use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use moat_tests::moatd::{pids_on_v1, pids_on_v2, Moatd, TempDir};

/// `moat` with a fixed time zone (two hours east of UTC, no DST) and none of the
/// environment that would change its defaults.
fn moat() -> Command {
    let mut c = moat_tests::moatd::moat();
    c.env("TZ", "EET-2");
    c
}

fn out(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn err(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// A seccomp denial as moatd writes it.
fn denial(ts: &str, workload: &str, syscall: &str, pid: u32, comm: &str) -> String {
    format!(
        r#"{{"@timestamp":"{ts}","event":{{"kind":"event","category":["process","intrusion_detection"],"type":["denied"],"action":"seccomp_denied","outcome":"failure"}},"host":{{"name":"node1"}},"process":{{"pid":{pid},"thread":{{"id":{pid}}},"name":"{comm}","executable":"/usr/bin/{comm}"}},"workload":{{"name":"{workload}"}},"cgroup":{{"path":"/moat/{workload}"}},"seccomp":{{"syscall":"{syscall}","syscall_nr":272,"arch":"x86_64","action":"errno","errno":"EPERM"}}}}"#
    )
}

/// The sample log: events of every action, a blank line, two malformed lines
/// (3 and 9), and a last line without a newline.
fn sample_log() -> Vec<String> {
    vec![
        denial("2026-05-20T10:11:12.123456789Z", "evt", "unshare", 42, "unshare"),
        String::new(),
        r#"{"@timestamp":"2026-05-20T10:11:12Z","event":{"action":"#.to_owned(),
        r#"{"@timestamp":"2026-05-20T10:11:13.5Z","event":{"kind":"event","category":["process","intrusion_detection"],"type":["denied"],"action":"seccomp_denied","outcome":"failure"},"host":{"name":"node1"},"process":{"pid":7,"thread":{"id":8},"name":"my app"},"workload":{"name":"web"},"cgroup":{"path":"/moat/web"},"seccomp":{"syscall":"ptrace","syscall_nr":101,"arch":"x86_64","action":"trap","errno":null}}"#.to_owned(),
        r#"{"@timestamp":"2026-05-20T10:11:14.000000001Z","event":{"kind":"event","category":["process"],"type":["start"],"action":"fork_failed","outcome":"failure"},"host":{"name":"node1"},"process":{"pid":9,"thread":{"id":9},"name":"bomb"},"workload":{"name":"web"},"cgroup":{"path":"/moat/web"},"error":{"code":"EAGAIN"}}"#.to_owned(),
        r#"{"@timestamp":"2026-05-20T10:11:15.999Z","event":{"kind":"event","category":["process"],"type":["denied"],"action":"pids_limit_reached","outcome":"failure"},"host":{"name":"node1"},"workload":{"name":"evt"},"cgroup":{"path":"/moat/evt"},"pids":{"current":50,"limit":50,"limit_hits":7,"new_hits":3}}"#.to_owned(),
        r#"{"@timestamp":"2026-05-20T10:11:16Z","event":{"kind":"event","category":["process"],"type":["info"],"action":"fork_burst"},"host":{"name":"node1"},"workload":{"name":"host"},"cgroup":{"path":"/"},"fork_burst":{"rate":1525,"threshold":1000}}"#.to_owned(),
        r#"{"@timestamp":"2026-05-20T10:11:17Z","event":{"kind":"event","category":["process"],"type":["change"],"action":"userns_created","outcome":"success"},"host":{"name":"node1"},"process":{"pid":11,"thread":{"id":11},"name":"unshare"},"workload":{"name":"evt"},"cgroup":{"path":"/moat/evt"}}"#.to_owned(),
        "[1, 2]".to_owned(),
        r#"{"@timestamp":"2026-05-20T23:59:59.9999Z","event":{"kind":"event","category":["process"],"type":["change"],"action":"userns_created","outcome":"success"},"host":{"name":"node1"},"process":{"pid":12,"thread":{"id":12},"name":"bwrap"},"workload":{"name":"web"},"cgroup":{"path":"/moat/web"}}"#.to_owned(),
    ]
}

fn write_sample_log(path: &Path) -> Vec<String> {
    let lines = sample_log();
    std::fs::write(path, lines.join("\n")).unwrap();
    lines
}

#[test]
fn events_are_printed_readably() {
    let dir = TempDir::new("fmt");
    let log = dir.join("audit.jsonl");
    write_sample_log(&log);
    let o = moat()
        .args(["events", "--file"])
        .arg(&log)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", err(&o));
    let stdout = out(&o);
    let lines: Vec<&str> = stdout.lines().collect();
    let expected = [
        "2026-05-20T12:11:12.123+02:00  evt               seccomp_denied      syscall=unshare action=errno errno=EPERM pid=42 comm=unshare",
        "2026-05-20T12:11:13.500+02:00  web               seccomp_denied      syscall=ptrace action=trap pid=7 tid=8 comm=\"my app\"",
        "2026-05-20T12:11:14.000+02:00  web               fork_failed         errno=EAGAIN pid=9 comm=bomb",
        "2026-05-20T12:11:15.999+02:00  evt               pids_limit_reached  current=50 limit=50 hits=7 new_hits=3",
        "2026-05-20T12:11:16.000+02:00  host              fork_burst          rate=1525/s threshold=1000/s",
        "2026-05-20T12:11:17.000+02:00  evt               userns_created      pid=11 comm=unshare",
        "2026-05-21T01:59:59.999+02:00  web               userns_created      pid=12 comm=bwrap",
    ];
    assert_eq!(lines, expected, "stdout:\n{stdout}");

    // Malformed lines are skipped with a warning naming the file and line.
    let stderr = err(&o);
    let warnings: Vec<&str> = stderr.lines().filter(|l| l.contains("warning")).collect();
    assert_eq!(warnings.len(), 2, "{stderr}");
    assert!(
        warnings[0].contains(&format!("{}: line 3: ", log.display())),
        "{stderr}"
    );
    assert!(warnings[0].contains("invalid JSON"), "{stderr}");
    assert!(warnings[1].contains("line 9: "), "{stderr}");
    assert!(warnings[1].contains("not a JSON object"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");

    // UTC when the time zone says so.
    let o = moat()
        .env("TZ", "UTC")
        .args(["events", "--file"])
        .arg(&log)
        .output()
        .unwrap();
    assert!(
        out(&o).starts_with("2026-05-20T10:11:12.123+00:00  evt "),
        "{}",
        out(&o)
    );
}

#[test]
fn events_json_passthrough_and_workload_filter() {
    let dir = TempDir::new("json");
    let log = dir.join("audit.jsonl");
    let input = write_sample_log(&log);

    // --json: the valid lines, byte for byte.
    let o = moat()
        .args(["events", "--json", "--file"])
        .arg(&log)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", err(&o));
    let valid: Vec<&str> = input
        .iter()
        .enumerate()
        .filter(|(i, l)| !l.is_empty() && *i != 2 && *i != 8)
        .map(|(_, l)| l.as_str())
        .collect();
    assert_eq!(out(&o), format!("{}\n", valid.join("\n")));

    // --workload with --json.
    let o = moat()
        .args(["events", "--json", "--workload", "evt", "--file"])
        .arg(&log)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", err(&o));
    let lines: Vec<serde_json::Value> = out(&o)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 3, "{}", out(&o));
    for line in &lines {
        assert_eq!(line["workload"]["name"], "evt");
    }
    assert_eq!(lines[0]["seccomp"]["syscall"], "unshare");

    // --workload, readable, twice; the log named by MOAT_AUDIT_LOG.
    let o = moat()
        .env("MOAT_AUDIT_LOG", &log)
        .args(["events", "--workload", "web", "--workload", "host"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", err(&o));
    let stdout = out(&o);
    let workloads: Vec<&str> = stdout
        .lines()
        .map(|l| l.split_whitespace().nth(1).unwrap())
        .collect();
    assert_eq!(workloads, ["web", "web", "host", "web"], "{stdout}");

    // A workload without events: nothing, successfully.
    let o = moat()
        .args(["events", "--workload", "nobody", "--file"])
        .arg(&log)
        .output()
        .unwrap();
    assert!(o.status.success());
    assert_eq!(out(&o), "");
}

#[test]
fn events_missing_log_says_where_it_comes_from() {
    let dir = TempDir::new("missing");
    let log = dir.join("nope.jsonl");
    let o = moat()
        .args(["events", "--file"])
        .arg(&log)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1), "{}", err(&o));
    let stderr = err(&o);
    assert!(stderr.contains(&log.display().to_string()), "{stderr}");
    assert!(stderr.contains("moatd writes"), "{stderr}");
    assert!(stderr.contains("--file"), "{stderr}");
    assert_eq!(out(&o), "");

    // The same with --follow, and the log named by MOAT_AUDIT_LOG.
    let o = moat()
        .env("MOAT_AUDIT_LOG", &log)
        .args(["events", "--follow"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1), "{}", err(&o));

    let o = moat().args(["events", "--help"]).output().unwrap();
    assert!(o.status.success());
    for word in [
        "--follow",
        "--workload",
        "--json",
        "--file",
        "MOAT_AUDIT_LOG",
    ] {
        assert!(out(&o).contains(word), "{word} in\n{}", out(&o));
    }
}

/// The lines a child writes to its stdout, as they come.
fn lines_of(child: &mut Child) -> Receiver<String> {
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

/// The next line, within a few seconds.
fn next_line(rx: &Receiver<String>, what: &str) -> String {
    rx.recv_timeout(Duration::from_secs(5))
        .unwrap_or_else(|e| panic!("no line for {what}: {e}"))
}

fn sigterm(child: &Child) {
    // SAFETY: kill(2) on our own child's pid.
    let rc = unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
    assert_eq!(rc, 0);
}

/// Waits for the child's exit, killing it after `timeout`.
fn wait_with_timeout(child: &mut Child, timeout: Duration) -> std::process::ExitStatus {
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if start.elapsed() > timeout {
            let _ = child.kill();
            panic!("the child did not exit within {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn append(path: &Path, text: &str) {
    let mut f = std::fs::OpenOptions::new().append(true).open(path).unwrap();
    f.write_all(text.as_bytes()).unwrap();
}

#[test]
fn events_follow_appends_rotation_and_truncation() {
    let dir = TempDir::new("follow");
    let log = dir.join("audit.jsonl");
    let ts = "2026-05-20T10:11:12.000Z";
    std::fs::write(&log, denial(ts, "w", "a1", 1, "one") + "\n").unwrap();
    let mut child = moat()
        .args(["events", "--follow", "--workload", "w", "--file"])
        .arg(&log)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let rx = lines_of(&mut child);
    assert!(next_line(&rx, "a1").contains("syscall=a1"));

    // An appended line, written in two pieces: nothing until it is complete.
    let a2 = denial(ts, "w", "a2", 2, "two") + "\n";
    let (head, tail) = a2.split_at(40);
    append(&log, head);
    assert!(
        rx.recv_timeout(Duration::from_millis(600)).is_err(),
        "a partial line was printed"
    );
    append(&log, tail);
    assert!(next_line(&rx, "a2").contains("syscall=a2"));

    // Rotation: renamed, a late write to the old file, then a new file.
    let rotated = dir.join("audit.jsonl.1");
    std::fs::rename(&log, &rotated).unwrap();
    append(&rotated, &(denial(ts, "w", "a3", 3, "three") + "\n"));
    std::thread::sleep(Duration::from_millis(300));
    std::fs::write(&log, denial(ts, "w", "a4", 4, "four") + "\n").unwrap();
    assert!(next_line(&rx, "a3 (old file)").contains("syscall=a3"));
    assert!(next_line(&rx, "a4 (new file)").contains("syscall=a4"));
    append(&log, &(denial(ts, "w", "a5", 5, "five") + "\n"));
    assert!(next_line(&rx, "a5").contains("syscall=a5"));

    // Truncation in place, with a shorter line.
    std::fs::OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(&log)
        .unwrap()
        .write_all(b"{\"event\":{\"action\":\"fork_burst\"},\"workload\":{\"name\":\"w\"}}\n")
        .unwrap();
    let line = next_line(&rx, "the line after truncation");
    assert!(line.contains("fork_burst"), "{line}");

    // A filtered-out workload and a malformed line while following.
    append(&log, &(denial(ts, "other", "x", 6, "six") + "\n{oops\n"));
    append(&log, &(denial(ts, "w", "a7", 7, "seven") + "\n"));
    assert!(next_line(&rx, "a7").contains("syscall=a7"));

    sigterm(&child);
    let status = wait_with_timeout(&mut child, Duration::from_secs(5));
    assert_eq!(status.code(), Some(0), "{status:?}");
    let mut errors = String::new();
    stderr.read_to_string(&mut errors).unwrap();
    assert!(errors.contains("was replaced"), "{errors}");
    assert!(errors.contains("was truncated"), "{errors}");
    assert!(
        errors.contains("line 3: skipping malformed line"),
        "{errors}"
    );
    assert_eq!(errors.matches("warning").count(), 1, "{errors}");
    assert!(rx.try_recv().is_err(), "nothing else was printed");
}

#[test]
fn events_without_follow_filter_like_with() {
    let dir = TempDir::new("nofollow");
    let log = dir.join("audit.jsonl");
    std::fs::write(&log, "\n\n").unwrap();
    let o = moat()
        .args(["events", "--file"])
        .arg(&log)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", err(&o));
    assert_eq!(out(&o), "");
    assert_eq!(err(&o), "", "blank lines are not malformed");
}

/// A fake agent: serves `responses` in turn (cycling) to every request on a
/// local port, and records the requests.
struct FakeAgent {
    port: u16,
    requests: Arc<Mutex<Vec<(Instant, String)>>>,
}

impl FakeAgent {
    fn start(responses: Vec<String>) -> FakeAgent {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let seen = requests.clone();
        std::thread::spawn(move || {
            for (i, stream) in listener.incoming().enumerate() {
                let Ok(mut stream) = stream else { continue };
                let head = read_head(&mut stream);
                seen.lock().unwrap().push((Instant::now(), head));
                let _ = stream.write_all(responses[i % responses.len()].as_bytes());
            }
        });
        FakeAgent { port, requests }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}/metrics", self.port)
    }
}

fn read_head(stream: &mut TcpStream) -> String {
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match stream.read(&mut byte) {
            Ok(1) => head.push(byte[0]),
            _ => break,
        }
    }
    String::from_utf8_lossy(&head).into_owned()
}

fn with_length(body: &str) -> String {
    format!(
        "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
}

fn chunked(body: &str) -> String {
    let (a, b) = body.split_at(body.len() / 2);
    format!(
        "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\nTransfer-Encoding: chunked\r\n\r\n{:x}\r\n{a}\r\n{:x}\r\n{b}\r\n0\r\n\r\n",
        a.len(),
        b.len()
    )
}

const SCRAPE_1: &str = "\
# HELP moat_forks_total Processes and threads created.
# TYPE moat_forks_total counter
moat_forks_total{workload=\"a\",kind=\"process\"} 100
moat_forks_total{workload=\"a\",kind=\"thread\"} 20
moat_forks_total{workload=\"host\",kind=\"process\"} 500
# TYPE moat_seccomp_denials_total counter
moat_seccomp_denials_total{workload=\"a\",syscall=\"mount\",action=\"errno\",errno=\"EPERM\"} 1
moat_seccomp_denials_total{workload=\"host\",syscall=\"bpf\",action=\"kill\",errno=\"\"} 9
# TYPE moat_pids_current gauge
moat_pids_current{workload=\"b\"} 3
moat_pids_current{workload=\"nolimit\"} 2
# TYPE moat_pids_limit gauge
moat_pids_limit{workload=\"b\"} 50
moat_build_info{version=\"0.1.0\",kernel=\"6.18.0\"} 1
process_resident_memory_bytes 1.2e+07
";

const SCRAPE_2: &str = "\
# HELP moat_forks_total Processes and threads created.
# TYPE moat_forks_total counter
moat_forks_total{workload=\"a\",kind=\"process\"} 106
moat_forks_total{workload=\"a\",kind=\"thread\"} 24
moat_forks_total{workload=\"c\",kind=\"process\"} 8
moat_forks_total{workload=\"host\",kind=\"process\"} 500
# TYPE moat_seccomp_denials_total counter
moat_seccomp_denials_total{workload=\"a\",syscall=\"mount\",action=\"errno\",errno=\"EPERM\"} 3
moat_seccomp_denials_total{workload=\"a\",syscall=\"bpf\",action=\"errno\",errno=\"EPERM\"} 3
moat_seccomp_denials_total{workload=\"host\",syscall=\"bpf\",action=\"kill\",errno=\"\"} 9
# TYPE moat_pids_current gauge
moat_pids_current{workload=\"b\"} 4
moat_pids_current{workload=\"nolimit\"} 2
# TYPE moat_pids_limit gauge
moat_pids_limit{workload=\"b\"} 50
moat_build_info{version=\"0.1.0\",kernel=\"6.18.0\"} 1
process_resident_memory_bytes 1.2e+07
";

/// The rows of a `moat stats` table, by name: (PIDS, LIMIT, FORKS/S, DENIALS/S).
fn parse_table(text: &str) -> Vec<(String, String, String, f64, f64)> {
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().unwrap().split_whitespace().collect();
    assert_eq!(
        header,
        ["NAME", "PIDS", "LIMIT", "FORKS/S", "DENIALS/S"],
        "{text}"
    );
    lines
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            assert_eq!(f.len(), 5, "{l}");
            (
                f[0].to_owned(),
                f[1].to_owned(),
                f[2].to_owned(),
                f[3].parse().unwrap(),
                f[4].parse().unwrap(),
            )
        })
        .collect()
}

fn check_sample_table(text: &str) {
    let rows = parse_table(text);
    let names: Vec<&str> = rows.iter().map(|r| r.0.as_str()).collect();
    // host only forked before: no row.
    assert_eq!(names, ["a", "b", "c", "nolimit"], "{text}");
    let (_, pids, limit, forks, denials) = &rows[0];
    assert_eq!((pids.as_str(), limit.as_str()), ("-", "-"));
    // 10 forks and 5 denials over about one second.
    assert!((5.0..=20.0).contains(forks), "forks/s {forks}\n{text}");
    assert!(
        (2.5..=10.0).contains(denials),
        "denials/s {denials}\n{text}"
    );
    assert_eq!(rows[1].1, "4");
    assert_eq!(rows[1].2, "50");
    assert_eq!((rows[1].3, rows[1].4), (0.0, 0.0));
    // A series born between the scrapes counts from zero.
    assert!((4.0..=16.0).contains(&rows[2].3), "{text}");
    assert_eq!((rows[3].1.as_str(), rows[3].2.as_str()), ("2", "max"));
}

#[test]
fn stats_no_stream_computes_rates_from_two_scrapes() {
    let agent = FakeAgent::start(vec![with_length(SCRAPE_1), chunked(SCRAPE_2)]);
    let start = Instant::now();
    let o = moat()
        .args(["stats", "--no-stream", "--agent", &agent.url()])
        .output()
        .unwrap();
    let took = start.elapsed();
    assert!(o.status.success(), "{}", err(&o));
    assert!(
        took >= Duration::from_millis(900),
        "two scrapes a second apart: {took:?}"
    );
    check_sample_table(&out(&o));
    {
        let requests = agent.requests.lock().unwrap();
        assert_eq!(requests.len(), 2);
        let gap = requests[1].0 - requests[0].0;
        assert!(gap >= Duration::from_millis(900), "{gap:?}");
        for (_, head) in requests.iter() {
            assert!(head.starts_with("GET /metrics HTTP/1.1\r\n"), "{head}");
            assert!(
                head.contains(&format!("Host: 127.0.0.1:{}\r\n", agent.port)),
                "{head}"
            );
        }
    }

    // MOAT_AGENT, without a path: /metrics is implied.
    let o = moat()
        .env("MOAT_AGENT", format!("http://127.0.0.1:{}", agent.port))
        .args(["stats", "--no-stream"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", err(&o));
    check_sample_table(&out(&o));
    assert_eq!(agent.requests.lock().unwrap().len(), 4);
}

#[test]
fn stats_streams_tables_until_sigterm() {
    let agent = FakeAgent::start(vec![with_length(SCRAPE_1), with_length(SCRAPE_2)]);
    let mut child = moat()
        .args(["stats", "--agent", &agent.url()])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let rx = lines_of(&mut child);
    // The first table (scrapes 1 and 2), a blank line, the header of the next.
    let mut first = String::new();
    loop {
        let line = next_line(&rx, "the first table");
        if line.is_empty() {
            break;
        }
        first.push_str(&line);
        first.push('\n');
    }
    check_sample_table(&first);
    assert!(
        !first.contains('\x1b'),
        "no escape codes when not on a terminal"
    );
    let header = next_line(&rx, "the second table");
    assert!(header.starts_with("NAME "), "{header}");
    sigterm(&child);
    let status = wait_with_timeout(&mut child, Duration::from_secs(5));
    assert_eq!(status.code(), Some(0), "{status:?}");
}

#[test]
fn stats_unreachable_or_failing_agent() {
    let port = {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let url = format!("http://127.0.0.1:{port}/metrics");
    let o = moat()
        .args(["stats", "--no-stream", "--agent", &url])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1), "{}", err(&o));
    let stderr = err(&o);
    assert!(stderr.contains(&url), "{stderr}");
    assert!(stderr.contains("Is moatd running?"), "{stderr}");
    assert_eq!(out(&o), "");

    // Streaming mode fails the same way when the agent is down from the start.
    let o = moat()
        .env("MOAT_AGENT", &url)
        .args(["stats"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1), "{}", err(&o));
    assert!(err(&o).contains(&url), "{}", err(&o));

    let agent = FakeAgent::start(vec![
        "HTTP/1.1 500 Internal Server Error\r\nContent-Length: 32\r\n\r\nreading the kernel maps failed\r\n"
            .to_owned(),
    ]);
    let o = moat()
        .args(["stats", "--no-stream", "--agent", &agent.url()])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1), "{}", err(&o));
    assert!(
        err(&o).contains("HTTP status 500: reading the kernel maps failed"),
        "{}",
        err(&o)
    );

    let o = moat()
        .args(["stats", "--agent", "https://x/metrics"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1), "{}", err(&o));
    assert!(err(&o).contains("https is not supported"), "{}", err(&o));

    let o = moat().args(["stats", "--help"]).output().unwrap();
    assert!(o.status.success());
    let help = out(&o);
    for word in [
        "--no-stream",
        "two scrapes",
        "--agent",
        "MOAT_AGENT",
        "9740",
    ] {
        assert!(help.contains(word), "{word} in\n{help}");
    }
}

/// A hostile server on the port `moat stats` is pointed at: a chunk
/// announced as 2^64 - 1 bytes is an error, not a crash (the exposition_reader
/// fuzz target found the overflow), and what it says in an error reaches the
/// terminal escaped.
#[test]
fn stats_survives_what_a_hostile_agent_says() {
    let agent = FakeAgent::start(vec![
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nffffffffffffffff\r\nab\r\n0\r\n\r\n"
            .to_owned(),
    ]);
    let o = moat()
        .args(["stats", "--no-stream", "--agent", &agent.url()])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1), "{}", err(&o));
    assert!(err(&o).contains("cut short"), "{}", err(&o));

    let body = "\u{1b}]0;owned\u{7}\u{1b}[2J\u{9b}31m\u{202e}";
    let agent = FakeAgent::start(vec![
        format!(
            "HTTP/1.1 500 Internal Server Error\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        ),
        format!(
            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\nnot{body} metrics\n",
            body.len() + 12
        ),
    ]);
    for _ in 0..2 {
        let o = moat()
            .args(["stats", "--no-stream", "--agent", &agent.url()])
            .output()
            .unwrap();
        assert_eq!(o.status.code(), Some(1), "{}", err(&o));
        let stderr = err(&o);
        assert!(
            !stderr
                .lines()
                .any(|l| l.chars().any(moat_api::text::is_unsafe)),
            "raw control or bidi characters: {stderr:?}"
        );
        assert!(stderr.contains("]0;owned"), "{stderr}");
    }
}

/// A log that is one endless line (320 MiB here) is read in bounded memory
/// (moat runs with 256 MiB of address space), skipped with a warning, and the
/// events after it are printed.
#[test]
fn events_skip_a_line_longer_than_any_event() {
    use std::os::unix::process::CommandExt as _;
    let dir = TempDir::new("long");
    let log = dir.join("audit.jsonl");
    {
        let mut file = std::io::BufWriter::new(std::fs::File::create(&log).unwrap());
        let block = vec![b'x'; 1 << 20];
        for _ in 0..320 {
            file.write_all(&block).unwrap();
        }
        file.write_all(b"\n").unwrap();
        let after = denial("2026-05-20T10:11:12Z", "after", "mount", 1, "sh");
        file.write_all(after.as_bytes()).unwrap();
        file.write_all(b"\n").unwrap();
    }
    let mut command = moat();
    command.args(["events", "--file"]).arg(&log);
    // SAFETY: only setrlimit(2) between fork and exec.
    unsafe {
        command.pre_exec(|| {
            let limit = libc::rlimit {
                rlim_cur: 256 << 20,
                rlim_max: 256 << 20,
            };
            if libc::setrlimit(libc::RLIMIT_AS, &limit) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let o = command.output().unwrap();
    assert!(o.status.success(), "{}", err(&o));
    assert!(
        err(&o).contains("line 1: skipping a line longer than 1048576 bytes"),
        "{}",
        err(&o)
    );
    assert_eq!(out(&o).lines().count(), 1, "{}", out(&o));
    assert!(out(&o).contains("after"), "{}", out(&o));
}

// ---------------------------------------------------------------------------
// End to end, as root: the real moatd.

#[test]
fn end_to_end_with_the_real_moatd() {
    if !moat_tests::is_root() {
        eprintln!("SKIP: moatd and moat run need root");
        return;
    }
    if !pids_on_v1() && !pids_on_v2() {
        eprintln!("SKIP: no pids cgroup controller on this machine");
        return;
    }
    let _layout = moat_tests::cgroup_layout_lock(false);
    let agent = Moatd::start("evst");

    // The default profile refuses unshare(CLONE_NEWUSER) with EPERM.
    let o = agent
        .run_cmd("evt", &[], &["unshare", "--user", "true"])
        .output()
        .unwrap();
    assert!(!o.status.success(), "unshare was allowed: {}", err(&o));
    assert!(err(&o).contains("Operation not permitted"), "{}", err(&o));

    let start = Instant::now();
    let line = loop {
        let o = agent
            .moat()
            .args(["events", "--workload", "evt", "--file"])
            .arg(&agent.audit_log)
            .output()
            .unwrap();
        // The log appears with the first event.
        if o.status.success() {
            if let Some(line) = out(&o).lines().find(|l| l.contains("syscall=unshare")) {
                break line.to_owned();
            }
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "no unshare denial for evt in {}:\n{}\nmoatd:\n{}",
            agent.audit_log.display(),
            std::fs::read_to_string(&agent.audit_log).unwrap_or_default(),
            agent.log_text()
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    let fields: Vec<&str> = line.split_whitespace().collect();
    assert_eq!(fields[1], "evt", "{line}");
    assert_eq!(fields[2], "seccomp_denied", "{line}");
    assert!(line.contains("action=errno errno=EPERM"), "{line}");
    assert!(line.contains("comm=unshare"), "{line}");
    let o = agent
        .moat()
        .args(["events", "--json", "--workload", "evt", "--file"])
        .arg(&agent.audit_log)
        .output()
        .unwrap();
    let event: serde_json::Value = out(&o)
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .find(|e| e["seccomp"]["syscall"] == "unshare")
        .expect("the denial as JSON");
    assert_eq!(event["seccomp"]["errno"], "EPERM");
    assert_eq!(event["workload"]["name"], "evt");

    // A running workload with a pids limit shows up in stats.
    let mut st = agent
        .run_cmd("st", &["--pids-limit", "50"], &["sleep", "5"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let start = Instant::now();
    let row = loop {
        let o = agent
            .moat()
            .args(["stats", "--no-stream", "--agent", &agent.url()])
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", err(&o));
        let stdout = out(&o);
        if let Some(row) = parse_table(&stdout).into_iter().find(|r| r.0 == "st") {
            break row;
        }
        assert!(
            start.elapsed() < Duration::from_secs(3),
            "no row for st:\n{stdout}\nmoatd:\n{}",
            agent.log_text()
        );
    };
    assert_eq!((row.1.as_str(), row.2.as_str()), ("1", "50"), "{row:?}");
    let status = wait_with_timeout(&mut st, Duration::from_secs(15));
    assert!(status.success(), "moat run st: {status:?}");
}
