//! The authorization plugin's server, driven over its unix socket as dockerd
//! drives it, with a stand-in for the Docker API on another unix socket (the
//! real daemon is in `tests/tests/authz_dockerd.rs`): the protocol's
//! endpoints, the recorded requests of `agent/policy/tests/requests` decided
//! exactly as the policy crate decides them, the start-time inspect (deny,
//! allow, failure, timeout), the bounds (size, slow clients, time), audit
//! mode, the start/rename gate and policy reloads.

use std::{
    path::{Path, PathBuf},
    sync::Arc,
    time::{Duration, Instant},
};

use moat_agent::{
    authz::{self, policy::LoadedPolicy, systemd::ListenEnv, PluginSocket},
    config::{AuthzConfig, AuthzMode},
    export::{
        audit_log::AuditStats,
        metrics::authz::{AuthzStats, Verdict},
    },
};
use moat_api::audit::{AuditAction, AuditEvent};
use moat_policy::endpoint::Endpoint;
use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::{UnixListener, UnixStream},
    sync::mpsc,
};

fn policy_tests() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("policy/tests")
}

fn recorded(name: &str) -> Vec<u8> {
    std::fs::read(policy_tests().join("requests").join(name)).unwrap()
}

/// An AuthZReq for `method uri` with a JSON `body` forwarded.
fn request(method: &str, uri: &str, body: Option<&str>) -> Vec<u8> {
    let mut req = moat_policy::AuthzRequest {
        method: method.into(),
        uri: uri.into(),
        body: body.map(|b| b.as_bytes().to_vec()),
        ..Default::default()
    };
    if let Some(b) = body {
        req.headers
            .insert("Content-Type".into(), "application/json".into());
        req.headers
            .insert("Content-Length".into(), b.len().to_string());
    }
    serde_json::to_vec(&req).unwrap()
}

/// A stand-in for the Docker API: `GET /containers/NAME/json` answers the
/// recorded inspect output `inspect-NAME.json`, `hang` never answers, and
/// anything else is 404 as dockerd says it.
async fn fake_docker(socket: PathBuf) {
    use http_body_util::Full;
    use hyper::{body::Bytes, server::conn::http1, service::service_fn, Response};
    let listener = UnixListener::bind(&socket).unwrap();
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            return;
        };
        tokio::spawn(async move {
            let service = service_fn(|req: hyper::Request<hyper::body::Incoming>| async move {
                let path = req.uri().path().to_owned();
                let name = path
                    .strip_prefix("/containers/")
                    .and_then(|p| p.strip_suffix("/json"))
                    .unwrap_or("");
                if name == "hang" {
                    tokio::time::sleep(Duration::from_secs(3600)).await;
                }
                let file = policy_tests().join(format!("inspect/inspect-{name}.json"));
                let response = match std::fs::read(&file) {
                    Ok(body) => Response::new(Full::new(Bytes::from(body))),
                    Err(_) => {
                        let body = format!(r#"{{"message":"No such container: {name}"}}"#);
                        let mut r = Response::new(Full::new(Bytes::from(body)));
                        *r.status_mut() = hyper::StatusCode::NOT_FOUND;
                        r
                    }
                };
                Ok::<_, std::convert::Infallible>(response)
            });
            let _ = http1::Builder::new()
                .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                .await;
        });
    }
}

/// A plugin served from a temporary directory.
struct Plugin {
    dir: tempfile::TempDir,
    socket: PathBuf,
    running: Option<authz::Running>,
    stats: Arc<AuthzStats>,
    audit_stats: Arc<AuditStats>,
    events: mpsc::Receiver<AuditEvent>,
}

impl Plugin {
    async fn start(tweak: impl FnOnce(&mut AuthzConfig)) -> Plugin {
        Plugin::start_with(tweak, 1024).await
    }

    /// With an audit writer queue of `audit_queue` events.
    async fn start_with(tweak: impl FnOnce(&mut AuthzConfig), audit_queue: usize) -> Plugin {
        let dir = tempfile::Builder::new()
            .prefix("moat-authz-server-")
            .tempdir()
            .unwrap();
        let mut config = AuthzConfig {
            enabled: true,
            socket: dir.path().join("moat-test.sock"),
            policy: dir.path().join("policy.toml"),
            docker_socket: dir.path().join("docker.sock"),
            inspect_timeout_ms: 500,
            request_timeout_ms: 1_500,
            idle_timeout_ms: 1_000,
            ..AuthzConfig::default()
        };
        tweak(&mut config);
        tokio::spawn(fake_docker(dir.path().join("docker.sock")));
        let loaded: LoadedPolicy = authz::load_policy(&config.policy).unwrap();
        let socket = PluginSocket::open(&config, &ListenEnv::default()).unwrap();
        let stats = Arc::new(AuthzStats::default());
        let audit_stats = Arc::new(AuditStats::default());
        let (tx, events) = mpsc::channel(audit_queue);
        let running = authz::start(
            &config,
            socket,
            loaded,
            stats.clone(),
            authz::Sinks {
                audit_events: tx,
                audit_stats: audit_stats.clone(),
                host: "test".into(),
            },
        )
        .unwrap();
        Plugin {
            socket: config.socket.clone(),
            dir,
            running: Some(running),
            stats,
            audit_stats,
            events,
        }
    }

    /// `POST path` with `body` on a fresh connection: status and body.
    async fn post(&self, path: &str, body: &[u8]) -> (u16, String) {
        post(&self.socket, path, body).await
    }

    /// The plugin's answer to an AuthZReq.
    async fn authz(&self, body: &[u8]) -> serde_json::Value {
        let (status, text) = self.post("/AuthZPlugin.AuthZReq", body).await;
        assert_eq!(status, 200, "{text}");
        serde_json::from_str(&text).unwrap()
    }

    /// The next audit event (they reach the writer through a queue).
    async fn event(&mut self) -> AuditEvent {
        tokio::time::timeout(Duration::from_secs(2), self.events.recv())
            .await
            .ok()
            .flatten()
            .expect("an audit event")
    }
}

/// One HTTP/1.1 request on `socket`, `Connection: close`.
async fn post(socket: &Path, path: &str, body: &[u8]) -> (u16, String) {
    let mut s = UnixStream::connect(socket).await.unwrap();
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: plugin\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).await.unwrap();
    s.write_all(body).await.unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).await.unwrap();
    parse_response(&raw)
}

fn parse_response(raw: &[u8]) -> (u16, String) {
    let text = String::from_utf8_lossy(raw);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, body.to_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn activation_and_unknown_paths() {
    let p = Plugin::start(|_| {}).await;
    assert_eq!(
        p.post("/Plugin.Activate", b"").await,
        (200, r#"{"Implements":["authz"]}"#.to_owned())
    );
    assert_eq!(p.post("/Plugin.Nope", b"").await.0, 404);
    assert_eq!(p.post("/VolumeDriver.Create", b"{}").await.0, 404);
    let res = p
        .post("/AuthZPlugin.AuthZRes", &recorded("info.json"))
        .await;
    assert_eq!(res, (200, r#"{"Allow":true}"#.to_owned()));
    // The socket is the server's own: mode 0600.
    use std::os::unix::fs::PermissionsExt as _;
    let mode = std::fs::metadata(&p.socket).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recorded_requests_are_answered_as_the_policy_decides() {
    let p = Plugin::start(|_| {}).await;
    let policy = moat_policy::baseline();
    let mut expected_denials = 0;
    let mut files: Vec<_> = std::fs::read_dir(policy_tests().join("requests"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        // A start also inspects its container: tested below.
        .filter(|p| {
            !p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("start-")
        })
        .collect();
    files.sort();
    assert!(files.len() > 30, "{files:?}");
    for file in &files {
        let bytes = std::fs::read(file).unwrap();
        let want = moat_policy::evaluate_wire(&policy, &bytes);
        let got = p.authz(&bytes).await;
        assert_eq!(
            got,
            serde_json::to_value(want.to_response()).unwrap(),
            "{}",
            file.display()
        );
        expected_denials += usize::from(!want.allow);
    }
    assert!(expected_denials > 20);
    let denied: u64 = Endpoint::ALL
        .iter()
        .map(|e| p.stats.requests(Verdict::Deny, *e))
        .sum();
    let allowed: u64 = Endpoint::ALL
        .iter()
        .map(|e| p.stats.requests(Verdict::Allow, *e))
        .sum();
    assert_eq!(denied as usize, expected_denials);
    assert_eq!((denied + allowed) as usize, files.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_start_is_judged_on_the_configuration_the_daemon_stored() {
    let mut p = Plugin::start(|_| {}).await;
    // The request itself is fine; the stored configuration is privileged.
    let answer = p
        .authz(&request("POST", "/v1.41/containers/privileged/start", None))
        .await;
    assert_eq!(answer["Allow"], false, "{answer}");
    let msg = answer["Msg"].as_str().unwrap();
    assert!(msg.ends_with("[rule: privileged]"), "{msg}");
    let event = p.event().await;
    assert_eq!(event.action(), Some(AuditAction::AuthzDenied));
    let authz = event.authz.unwrap();
    assert_eq!(authz.rule, "privileged");
    assert_eq!(authz.endpoint, "containers/{id}/start");
    assert!(authz.container.unwrap().starts_with("980adcd653a8"));
    assert_eq!(event.workload.name, "docker:980adcd653a8");

    // Restart starts a stopped container: judged alike.
    let answer = p
        .authz(&request("POST", "/containers/bind-etc/restart?t=1", None))
        .await;
    assert_eq!(answer["Allow"], false, "{answer}");
    assert!(
        answer["Msg"].as_str().unwrap().contains("[rule: "),
        "{answer}"
    );
    p.event().await;

    let answer = p
        .authz(&request("POST", "/v1.41/containers/plain/start", None))
        .await;
    assert_eq!(answer, serde_json::json!({"Allow": true}));

    // No such container, or no answer: denied, naming why.
    let answer = p
        .authz(&request("POST", "/v1.41/containers/gone/start", None))
        .await;
    let msg = answer["Msg"].as_str().unwrap();
    assert!(
        msg.contains("No such container: gone") && msg.ends_with("[rule: container-inspect]"),
        "{msg}"
    );
    let started = Instant::now();
    let answer = p
        .authz(&request("POST", "/v1.41/containers/hang/start", None))
        .await;
    let took = started.elapsed();
    let msg = answer["Msg"].as_str().unwrap();
    assert!(msg.contains("did not answer within 500 ms"), "{msg}");
    assert!(took < Duration::from_millis(1400), "{took:?}");
    assert_eq!(
        p.stats.requests(Verdict::Error, Endpoint::ContainerStart),
        2
    );
    assert_eq!(p.stats.requests(Verdict::Deny, Endpoint::ContainerStart), 1);
    assert_eq!(
        p.stats.requests(Verdict::Allow, Endpoint::ContainerStart),
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_inspect_fails_closed_when_docker_is_unreachable() {
    let p = Plugin::start(|c| c.docker_socket = PathBuf::from("/nonexistent/docker.sock")).await;
    let answer = p
        .authz(&request("POST", "/v1.41/containers/plain/start", None))
        .await;
    let msg = answer["Msg"].as_str().unwrap();
    assert_eq!(answer["Allow"], false);
    assert!(
        msg.contains("cannot connect to the Docker API at /nonexistent/docker.sock"),
        "{msg}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bounds_size_slow_clients_and_time() {
    let p = Plugin::start(|_| {}).await;

    // Over 4 MiB: denied, not read to the end.
    let big = vec![b' '; moat_policy::wire::MAX_REQUEST_BYTES + 1];
    let answer = p.authz(&big).await;
    assert_eq!(answer["Allow"], false);
    assert!(
        answer["Msg"]
            .as_str()
            .unwrap()
            .contains("larger than the 4194304 bytes"),
        "{answer}"
    );

    // A client that sends half a request and stops, and one that stops in
    // the headers: neither holds anything up.
    let mut stalled_body = UnixStream::connect(&p.socket).await.unwrap();
    stalled_body
        .write_all(
            b"POST /AuthZPlugin.AuthZReq HTTP/1.1\r\nHost: p\r\nContent-Length: 100\r\n\r\n{\"Req",
        )
        .await
        .unwrap();
    let mut stalled_head = UnixStream::connect(&p.socket).await.unwrap();
    stalled_head
        .write_all(b"POST /AuthZPlugin.AuthZReq HTTP/1.1\r\nHost:")
        .await
        .unwrap();
    let create = recorded("create-privileged.json");
    for _ in 0..50 {
        let t = Instant::now();
        let answer = p.authz(&create).await;
        assert_eq!(answer["Allow"], false);
        assert!(
            t.elapsed() < Duration::from_millis(500),
            "{:?}",
            t.elapsed()
        );
    }
    // The stalled body is answered with a denial at request_timeout_ms, the
    // stalled head closed at idle_timeout_ms.
    let started = Instant::now();
    let mut raw = Vec::new();
    stalled_body.read_to_end(&mut raw).await.unwrap();
    let (status, body) = parse_response(&raw);
    assert_eq!(status, 200);
    assert!(body.contains(r#""Allow":false"#), "{body}");
    assert!(body.contains("did not arrive in time"), "{body}");
    let mut raw = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(3), stalled_head.read_to_end(&mut raw))
        .await
        .expect("the stalled connection is closed");
    assert!(started.elapsed() < Duration::from_secs(3));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_held_open_without_requests_cannot_keep_dockerd_out() {
    let p = Plugin::start(|c| {
        c.max_connections = 4;
        c.idle_timeout_ms = 20_000;
        c.request_timeout_ms = 30_000;
    })
    .await;
    // The cap, filled with connections that send nothing or half a head.
    let mut held = Vec::new();
    for i in 0..6 {
        let mut s = UnixStream::connect(&p.socket).await.unwrap();
        if i % 2 == 1 {
            s.write_all(b"POST /AuthZPlugin.AuthZReq HTTP/1.1\r\nHost:")
                .await
                .unwrap();
        }
        held.push(s);
    }
    let create = recorded("create-privileged.json");
    for _ in 0..10 {
        let t = Instant::now();
        let answer = tokio::time::timeout(Duration::from_secs(5), p.authz(&create))
            .await
            .expect("answered while idle connections fill the cap");
        assert_eq!(answer["Allow"], false);
        assert!(t.elapsed() < Duration::from_secs(1), "{:?}", t.elapsed());
    }
    // The oldest idle ones were closed to make room.
    let mut closed = 0;
    for s in &mut held {
        let mut byte = [0u8; 1];
        if let Ok(Ok(0)) = tokio::time::timeout(Duration::from_millis(100), s.read(&mut byte)).await
        {
            closed += 1;
        }
    }
    assert!(closed >= 3, "{closed} of the held connections were closed");
}

/// A stuck audit writer (its queue full, never read) does not hold up a
/// decision: the events it cannot take are counted as dropped. (The plugin
/// only ever `try_send`s; its own thread is what
/// `a_blocked_moatd_runtime_never_holds_up_a_decision` tests.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_audit_queue_drops_and_counts_instead_of_waiting() {
    let p = Plugin::start_with(|_| {}, 1).await;
    let create = recorded("create-privileged.json");
    let started = Instant::now();
    let n = 6000;
    let mut s = UnixStream::connect(&p.socket).await.unwrap();
    let head = format!(
        "POST /AuthZPlugin.AuthZReq HTTP/1.1\r\nHost: p\r\nContent-Length: {}\r\n\r\n",
        create.len()
    );
    let mut buf = Vec::new();
    for _ in 0..n {
        s.write_all(head.as_bytes()).await.unwrap();
        s.write_all(&create).await.unwrap();
        // One answer (its body ends the JSON object).
        loop {
            let mut chunk = [0u8; 4096];
            let k = s.read(&mut chunk).await.unwrap();
            assert!(
                k > 0,
                "the plugin closed the connection: {:?}",
                String::from_utf8_lossy(&buf)
            );
            buf.extend_from_slice(&chunk[..k]);
            if let Some(end) = buf.windows(3).position(|w| w == b"]\"}") {
                buf.drain(..end + 3);
                break;
            }
        }
    }
    eprintln!("{n} denials in {:?}", started.elapsed());
    assert!(started.elapsed() < Duration::from_secs(30));
    assert_eq!(
        p.stats.requests(Verdict::Deny, Endpoint::ContainerCreate),
        n
    );
    // The writer's queue holds 1, the plugin's 4096, one is in between.
    let dropped = p.audit_stats.queue_full();
    assert!(dropped >= n - 4096 - 2, "{dropped} dropped");
}

/// The plugin answers while every worker of the runtime that started it
/// (moatd's, which also runs `/metrics` and the signal handling) is
/// blocked: dockerd waits for each decision with no timeout.
#[test]
fn a_blocked_moatd_runtime_never_holds_up_a_decision() {
    use std::io::{Read as _, Write as _};
    let moatd = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let p = moatd.block_on(Plugin::start(|_| {}));
    let (blocked_tx, blocked_rx) = std::sync::mpsc::channel();
    moatd.spawn(async move {
        let _ = blocked_tx.send(());
        std::thread::sleep(Duration::from_secs(5));
    });
    blocked_rx
        .recv_timeout(Duration::from_secs(5))
        .expect("the worker runs the blocking task");
    let create = recorded("create-privileged.json");
    let started = Instant::now();
    let mut s = std::os::unix::net::UnixStream::connect(&p.socket).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    let head = format!(
        "POST /AuthZPlugin.AuthZReq HTTP/1.1\r\nHost: p\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n",
        create.len()
    );
    s.write_all(head.as_bytes()).unwrap();
    s.write_all(&create).unwrap();
    let mut raw = Vec::new();
    let read = s.read_to_end(&mut raw);
    let took = started.elapsed();
    assert!(
        read.is_ok(),
        "no answer within 2 s while moatd's runtime is blocked: {read:?}"
    );
    let (status, body) = parse_response(&raw);
    assert_eq!(status, 200, "{body}");
    let answer: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(answer["Allow"], false, "{body}");
    assert!(took < Duration::from_secs(1), "answered in {took:?}");
    assert_eq!(
        p.stats.requests(Verdict::Deny, Endpoint::ContainerCreate),
        1
    );
    drop(p);
    moatd.shutdown_background();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_mode_allows_and_records() {
    let mut p = Plugin::start(|c| c.mode = AuthzMode::Audit).await;
    let answer = p.authz(&recorded("create-privileged.json")).await;
    assert_eq!(answer, serde_json::json!({"Allow": true}));
    let event = p.event().await;
    assert_eq!(event.action(), Some(AuditAction::AuthzWouldDeny));
    let authz = event.authz.unwrap();
    assert_eq!(
        (authz.mode.as_str(), authz.rule.as_str()),
        ("audit", "privileged")
    );
    assert_eq!(
        p.stats
            .requests(Verdict::WouldDeny, Endpoint::ContainerCreate),
        1
    );
    // A failed inspect is an error, allowed in audit mode.
    let answer = p
        .authz(&request("POST", "/v1.41/containers/gone/start", None))
        .await;
    assert_eq!(answer, serde_json::json!({"Allow": true}));
    assert_eq!(p.event().await.authz.unwrap().rule, "container-inspect");
    assert_eq!(
        p.stats.requests(Verdict::Error, Endpoint::ContainerStart),
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rename_waits_for_an_allowed_start_to_finish() {
    let p = Arc::new(Plugin::start(|c| c.request_timeout_ms = 3_000).await);
    let start = request("POST", "/v1.41/containers/plain/start", None);
    assert_eq!(p.authz(&start).await["Allow"], true);
    // The start's handler is running (no AuthZRes yet): the rename waits.
    let rename = request("POST", "/v1.41/containers/plain/rename?name=x", None);
    let q = p.clone();
    let waiting = tokio::spawn(async move { (q.authz(&rename).await, Instant::now()) });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!waiting.is_finished(), "the rename did not wait");
    let finished = Instant::now();
    let res = p.post("/AuthZPlugin.AuthZRes", &start).await;
    assert_eq!(res.0, 200);
    let (answer, at) = waiting.await.unwrap();
    assert_eq!(answer["Allow"], true, "{answer}");
    assert!(at >= finished);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_applies_a_valid_policy_and_keeps_the_old_one_otherwise() {
    let mut p = Plugin::start(|_| {}).await;
    let path = p.dir.path().join("policy.toml");
    let running = p.running.take().unwrap();
    let create = recorded("create-privileged.json");
    assert_eq!(p.authz(&create).await["Allow"], false);

    // A policy that allows privileged containers to everyone.
    std::fs::write(
        &path,
        "extends = \"baseline\"\n[[exception]]\nrule = \"privileged\"\n",
    )
    .unwrap();
    running.reload_policy();
    assert_eq!(p.authz(&create).await["Allow"], true);
    assert_eq!(p.stats.reloads(), (1, 0));
    assert_eq!(p.stats.policy().source, path.display().to_string());

    // A broken file: the policy in force stays.
    std::fs::write(
        &path,
        "extends = \"baseline\"\n[[exception]]\nrule = \"privilegd\"\n",
    )
    .unwrap();
    running.reload_policy();
    assert_eq!(p.authz(&create).await["Allow"], true);
    assert_eq!(p.stats.reloads(), (1, 1));
    running.shutdown().await;
    assert!(!p.socket.exists(), "the socket is removed at exit");
}
