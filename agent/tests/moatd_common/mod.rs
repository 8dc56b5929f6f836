//! Helpers shared by moatd's integration tests: a fake kernel source, a minimal
//! HTTP client, the moatd binary started with its log followed, waiting with a
//! deadline, and root checks.
#![allow(dead_code)]

use std::{
    ffi::OsStr,
    io::{BufRead as _, BufReader, Read as _, Write as _},
    net::{SocketAddr, TcpStream},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{mpsc, Mutex},
    thread,
    time::{Duration, Instant},
};

use moat_agent::kernel::{KernelSnapshot, KernelSource};

/// A kernel source whose snapshot the test sets.
#[derive(Default)]
pub struct FakeKernel {
    pub snapshot: Mutex<KernelSnapshot>,
}

impl KernelSource for FakeKernel {
    fn snapshot(&self) -> moat_agent::kernel::Result<KernelSnapshot> {
        Ok(self.snapshot.lock().unwrap().clone())
    }
}

/// An HTTP response: status, headers (lower-case names) and body.
#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// `METHOD path` on `addr` with extra headers, HTTP/1.1 with `Connection: close`.
pub fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> std::io::Result<Response> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut text = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (name, value) in headers {
        text.push_str(&format!("{name}: {value}\r\n"));
    }
    text.push_str("\r\n");
    stream.write_all(text.as_bytes())?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw)?;
    let raw = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = raw.split_once("\r\n\r\n").unwrap_or((&raw, ""));
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    Ok(Response {
        status,
        headers,
        body: body.to_owned(),
    })
}

/// `GET path`.
pub fn get(addr: SocketAddr, path: &str) -> Response {
    request(addr, "GET", path, &[]).expect("HTTP request")
}

/// Starts the `moatd` binary with `args` (standard input and output to /dev/null)
/// and a thread that reads its standard error: each line is echoed to the test's
/// standard error as `moatd: <line>` and sent to the returned receiver. The thread
/// keeps draining the pipe after the receiver is dropped, so moatd never blocks on
/// a full pipe.
pub fn spawn_moatd<S: AsRef<OsStr>>(
    args: impl IntoIterator<Item = S>,
) -> (Child, mpsc::Receiver<String>) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_moatd"))
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawning moatd");
    let stderr = child.stderr.take().unwrap();
    let (tx, lines) = mpsc::channel();
    thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            eprintln!("moatd: {line}");
            let _ = tx.send(line);
        }
    });
    (child, lines)
}

/// The listen address in moatd's "running" log line
/// (`... serving http://<addr>/metrics ...`).
pub fn served_address(line: &str) -> SocketAddr {
    line.split("http://")
        .nth(1)
        .and_then(|rest| rest.split('/').next())
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("no address in {line:?}"))
}

/// Polls `f` every 10 ms until it returns `Some`, or panics with `what` after `timeout`.
pub fn wait_for<T>(timeout: Duration, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(value) = f() {
            return value;
        }
        if start.elapsed() > timeout {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The value of the sample `name{labels}` in a text exposition, e.g.
/// `sample(&body, "moat_forks_total{workload=\"a\",kind=\"process\"}")`.
pub fn sample(body: &str, series: &str) -> Option<f64> {
    body.lines().find_map(|line| {
        line.strip_prefix(series)?
            .strip_prefix(' ')?
            .trim()
            .parse()
            .ok()
    })
}

/// A fresh temporary directory for one test.
pub fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("moatd-test-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Why a root-only test cannot run here, if it cannot.
pub fn not_root() -> Option<String> {
    (!nix::unistd::geteuid().is_root()).then(|| "not root: this test needs root".to_owned())
}

/// Whether `path` exists and is a directory.
pub fn is_dir(path: &Path) -> bool {
    path.is_dir()
}

/// Returns early from the calling test, saying why, when `$reason` is `Some`.
#[macro_export]
macro_rules! skip_if {
    ($reason:expr) => {
        if let Some(reason) = $reason {
            eprintln!("SKIP: {reason}");
            return;
        }
    };
}
