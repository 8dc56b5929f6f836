//! The HTTP server's configured bounds, over a fake kernel source (unprivileged):
//! a connection lives at most `http.connection_timeout_ms` however busy it is
//! (a request in progress is answered first), a request head over
//! `http.max_header_bytes` is answered 431, and each is counted in
//! `moat_http_connections_rejected_total{reason}`. The attacks with the default
//! bounds are in `tests/tests/agent_http_limits.rs`, on the real moatd.

mod moatd_common;

use std::{
    io::{Read as _, Write as _},
    net::TcpStream,
    path::PathBuf,
    sync::Arc,
    time::{Duration, Instant},
};

use moat_agent::{
    collect::attribution::CgroupLayout,
    config::{AuditTarget, Config},
    daemon::{self, Running},
};
use moatd_common::{get, sample, temp_dir, FakeKernel};
use tokio::runtime::Runtime;

struct Agent {
    runtime: Runtime,
    running: Option<Running>,
    _tmp: tempfile::TempDir,
}

impl Agent {
    fn start(name: &str, tweak: impl FnOnce(&mut Config)) -> Agent {
        let tmp = temp_dir(name);
        let v2 = tmp.path().join("v2");
        std::fs::create_dir_all(&v2).unwrap();
        let mut config = Config::default();
        config.http.listen = "127.0.0.1:0".parse().unwrap();
        config.audit.log = AuditTarget::File(tmp.path().join("audit.jsonl"));
        tweak(&mut config);
        let layout = CgroupLayout {
            v2_mount: v2,
            pids_mount: None::<PathBuf>,
        };
        let runtime = Runtime::new().unwrap();
        let (_records, records_rx) = tokio::sync::mpsc::channel(1);
        let running = {
            let _guard = runtime.enter();
            let listener = daemon::bind(&config).unwrap();
            daemon::start(
                &config,
                &layout,
                listener,
                Arc::new(FakeKernel::default()),
                records_rx,
            )
            .unwrap()
        };
        Agent {
            runtime,
            running: Some(running),
            _tmp: tmp,
        }
    }

    fn addr(&self) -> std::net::SocketAddr {
        self.running.as_ref().unwrap().local_addr()
    }

    fn rejected(&self, reason: &str) -> f64 {
        let body = get(self.addr(), "/metrics").body;
        sample(
            &body,
            &format!("moat_http_connections_rejected_total{{reason=\"{reason}\"}}"),
        )
        .unwrap_or_else(|| panic!("no rejected series for {reason}:\n{body}"))
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        if let Some(running) = self.running.take() {
            self.runtime.block_on(running.shutdown());
        }
    }
}

/// Reads one response (head and `Content-Length` body) from a kept-alive
/// connection; `None` at EOF.
fn read_response(stream: &mut TcpStream) -> Option<String> {
    let mut data = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        if let Some(end) = data.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&data[..end]).into_owned();
            let length: usize = head
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length:")
                        .map(|v| v.trim().parse().unwrap())
                })
                .unwrap_or(0);
            while data.len() < end + 4 + length {
                let n = stream.read(&mut buf).ok()?;
                if n == 0 {
                    return None;
                }
                data.extend_from_slice(&buf[..n]);
            }
            return Some(head);
        }
        let n = stream.read(&mut buf).ok()?;
        if n == 0 {
            return None;
        }
        data.extend_from_slice(&buf[..n]);
    }
}

#[test]
fn a_busy_kept_alive_connection_is_closed_at_its_lifetime_bound() {
    let agent = Agent::start("http-lifetime", |c| {
        c.http.connection_timeout_ms = 1_000;
        c.http.header_timeout_ms = 500;
    });
    let mut stream = TcpStream::connect(agent.addr()).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let start = Instant::now();
    let mut answered = 0;
    // A request every 200 ms: never idle for the header timeout, so only the
    // lifetime bound can end it.
    let ended = loop {
        if stream
            .write_all(b"GET /metrics HTTP/1.1\r\nHost: moatd\r\n\r\n")
            .is_err()
        {
            break start.elapsed();
        }
        match read_response(&mut stream) {
            Some(head) => {
                assert!(head.starts_with("HTTP/1.1 200"), "{head}");
                answered += 1;
            }
            None => break start.elapsed(),
        }
        assert!(
            start.elapsed() < Duration::from_secs(4),
            "the connection was still open after {answered} requests"
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    eprintln!("closed after {ended:?} and {answered} answered requests");
    assert!(answered >= 3, "{answered} requests answered");
    assert!(
        ended >= Duration::from_millis(900) && ended < Duration::from_millis(2_500),
        "closed after {ended:?}"
    );
    assert_eq!(agent.rejected("connection_timeout"), 1.0);
    assert_eq!(agent.rejected("header_timeout"), 0.0);
}

#[test]
fn a_request_head_over_the_bound_is_answered_431() {
    let agent = Agent::start("http-431", |c| c.http.max_header_bytes = 8192);
    let mut stream = TcpStream::connect(agent.addr()).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut request = b"GET /metrics HTTP/1.1\r\nHost: moatd\r\nX-Big: ".to_vec();
    request.extend(std::iter::repeat_n(b'a', 9000));
    request.extend_from_slice(b"\r\n\r\n");
    // moatd may close before all of it is sent; the answer is what matters.
    let _ = stream.write_all(&request);
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 431"), "{answer}");
    assert_eq!(agent.rejected("header_too_large"), 1.0);

    // Just under the bound is fine.
    let mut stream = TcpStream::connect(agent.addr()).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut request = b"GET / HTTP/1.1\r\nHost: moatd\r\nX-Big: ".to_vec();
    request.extend(std::iter::repeat_n(b'a', 6000));
    request.extend_from_slice(b"\r\nConnection: close\r\n\r\n");
    stream.write_all(&request).unwrap();
    let head = read_response(&mut stream).expect("an answer");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
}

#[test]
fn the_open_connections_gauge_counts_what_is_open() {
    let agent = Agent::start("http-open", |_| {});
    let held: Vec<TcpStream> = (0..5)
        .map(|_| TcpStream::connect(agent.addr()).unwrap())
        .collect();
    let open = moatd_common::wait_for(Duration::from_secs(5), "5 open connections", || {
        let body = get(agent.addr(), "/metrics").body;
        // The scrape's own connection is open too.
        sample(&body, "moat_http_connections_open").filter(|&n| n == 6.0)
    });
    assert_eq!(open, 6.0);
    drop(held);
    moatd_common::wait_for(Duration::from_secs(5), "only the scrape's", || {
        let body = get(agent.addr(), "/metrics").body;
        sample(&body, "moat_http_connections_open").filter(|&n| n == 1.0)
    });
}
