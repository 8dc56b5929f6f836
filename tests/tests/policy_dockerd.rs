//! The policy reads a create body as the real daemon does: for each trick
//! (folded, duplicate and null keys, merged objects, reused slice elements,
//! deprecated top-level fields), the decision on the raw request equals the
//! decision on the configuration dockerd 20.10 actually stored (`GET
//! /containers/{id}/json`), and both are the expected rule.
//!
//! Starts a private dockerd (vfs storage, no bridge, no iptables, its own
//! socket and directories) with a busybox image imported from a tarball.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use moat_policy::{baseline, evaluate, evaluate_inspect, AuthzRequest, InspectJson};
use moat_tests::moatd::TempDir;
use moat_tests::which;

struct Dockerd {
    child: Child,
    sock: PathBuf,
    _dir: TempDir,
}

impl Dockerd {
    fn start() -> Option<Dockerd> {
        if !moat_tests::is_root() {
            eprintln!("SKIP: dockerd needs root");
            return None;
        }
        let (Some(dockerd), Some(docker), Some(busybox)) =
            (which("dockerd"), which("docker"), which("busybox"))
        else {
            eprintln!("SKIP: dockerd, docker or busybox is not installed");
            return None;
        };
        let dir = TempDir::new("policy-dockerd");
        let sock = dir.join("docker.sock");
        let child = Command::new(dockerd)
            .args(["--iptables=false", "--ip6tables=false", "--bridge=none"])
            .args(["--storage-driver=vfs", "--host"])
            .arg(format!("unix://{}", sock.display()))
            .arg("--data-root")
            .arg(dir.join("data"))
            .arg("--exec-root")
            .arg(dir.join("exec"))
            .arg("--pidfile")
            .arg(dir.join("docker.pid"))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("dockerd.log")).unwrap())
            .spawn()
            .expect("start dockerd");
        let d = Dockerd {
            child,
            sock,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        while d.call("GET", "/_ping", None).map(|r| r.0) != Some(200) {
            assert!(
                Instant::now() < deadline,
                "dockerd did not answer within 60 s"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        let root = d._dir.join("rootfs");
        std::fs::create_dir_all(root.join("bin")).unwrap();
        std::fs::copy(&busybox, root.join("bin/busybox")).unwrap();
        std::os::unix::fs::symlink("busybox", root.join("bin/true")).unwrap();
        let tar = d._dir.join("rootfs.tar");
        let ok = Command::new("tar")
            .arg("-C")
            .arg(&root)
            .arg("-cf")
            .arg(&tar)
            .arg(".")
            .status()
            .unwrap()
            .success();
        assert!(ok, "tar failed");
        let out = Command::new(docker)
            .env("DOCKER_HOST", format!("unix://{}", d.sock.display()))
            .arg("import")
            .arg(&tar)
            .arg("bb:latest")
            .output()
            .unwrap();
        assert!(out.status.success(), "docker import: {out:?}");
        Some(d)
    }

    /// One HTTP/1.1 request on the daemon's socket: status and body.
    fn call(&self, method: &str, path: &str, body: Option<&[u8]>) -> Option<(u16, Vec<u8>)> {
        let mut s = UnixStream::connect(&self.sock).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(60))).ok()?;
        let body = body.unwrap_or_default();
        let head = format!(
            "{method} {path} HTTP/1.1\r\nHost: docker\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        );
        s.write_all(head.as_bytes()).ok()?;
        s.write_all(body).ok()?;
        let mut raw = Vec::new();
        s.read_to_end(&mut raw).ok()?;
        let split = raw.windows(4).position(|w| w == b"\r\n\r\n")?;
        let headers = String::from_utf8_lossy(&raw[..split]).to_ascii_lowercase();
        let status = headers.split_whitespace().nth(1)?.parse().ok()?;
        let payload = &raw[split + 4..];
        let payload = if headers.contains("transfer-encoding: chunked") {
            dechunk(payload)
        } else {
            payload.to_vec()
        };
        Some((status, payload))
    }
}

impl Drop for Dockerd {
    fn drop(&mut self) {
        // SAFETY: kill(2) on our own child's pid.
        unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn dechunk(mut b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(eol) = b.windows(2).position(|w| w == b"\r\n") {
        let size =
            usize::from_str_radix(String::from_utf8_lossy(&b[..eol]).trim(), 16).unwrap_or(0);
        if size == 0 {
            break;
        }
        out.extend_from_slice(&b[eol + 2..eol + 2 + size]);
        b = &b[eol + 2 + size + 2..];
    }
    out
}

fn id_of(body: &[u8]) -> String {
    let v: serde_json::Value = serde_json::from_slice(body).unwrap();
    v["Id"].as_str().unwrap().to_string()
}

/// Create bodies and the baseline rule both the request and the stored
/// configuration must be denied by (`None`: allowed).
const CASES: &[(&str, &[u8], Option<&str>)] = &[
    ("plain", br#"{"Image":"bb","Cmd":["true"],"HostConfig":{"NetworkMode":"none"}}"#, None),
    ("lower-case keys", br#"{"Image":"bb","Cmd":["true"],"hostconfig":{"privileged":true}}"#, Some("privileged")),
    ("top-level field", br#"{"Image":"bb","Cmd":["true"],"Privileged":true}"#, Some("privileged")),
    ("duplicate, last wins", br#"{"Image":"bb","Cmd":["true"],"HostConfig":{"Privileged":false,"Privileged":true}}"#, Some("privileged")),
    ("duplicate, last wins (allow)", br#"{"Image":"bb","Cmd":["true"],"HostConfig":{"Privileged":true,"Privileged":false}}"#, None),
    ("null keeps a bool", br#"{"Image":"bb","Cmd":["true"],"HostConfig":{"Privileged":true,"privileged":null}}"#, Some("privileged")),
    ("objects merge", br#"{"Image":"bb","Cmd":["true"],"HostConfig":{"NetworkMode":"none"},"hostconfig":{"Privileged":true}}"#, Some("privileged")),
    ("long s", "{\"Image\":\"bb\",\"Cmd\":[\"true\"],\"HostConfig\":{\"\u{17F}ecurityOpt\":[\"seccomp=unconfined\"]}}".as_bytes(), Some("seccomp-unconfined")),
    ("kelvin sign", "{\"Image\":\"bb\",\"Cmd\":[\"true\"],\"HostConfig\":{\"Networ\u{212A}Mode\":\"host\"}}".as_bytes(), Some("host-namespaces")),
    ("capability as a string", "{\"Image\":\"bb\",\"Cmd\":[\"true\"],\"HostConfig\":{\"CapAdd\":\"\u{17F}ys_admin\"}}".as_bytes(), Some("capabilities")),
    ("null element keeps the bind", br#"{"Image":"bb","Cmd":["true"],"HostConfig":{"Binds":["/etc:/x"],"binds":[null]}}"#, Some("host-paths")),
    ("mounts merge", br#"{"Image":"bb","Cmd":["true"],"HostConfig":{"Mounts":[{"Type":"bind","Source":"/etc","Target":"/b"}],"mounts":[{"Target":"/c"}]}}"#, Some("host-paths")),
    ("a shorter array leaves an element behind", br#"{"Image":"bb","Cmd":["true"],"HostConfig":{"Binds":["/srv/a:/a","/etc:/b"],"binds":["/srv/c:/c"],"BINDS":["/srv/d:/d",null]}}"#, Some("host-paths")),
    ("emptied masked paths", br#"{"Image":"bb","Cmd":["true"],"HostConfig":{"MaskedPaths":null,"maskedpaths":[]}}"#, Some("systempaths-unconfined")),
    ("a key with an invalid byte is no field", b"{\"Image\":\"bb\",\"Cmd\":[\"true\"],\"HostConfig\":{\"Privileged\xff\":true}}", None),
    ("pointer reset by null", br#"{"Image":"bb","Cmd":["true"],"HostConfig":{"PidsLimit":-1,"pidslimit":null}}"#, None),
];

#[test]
fn the_policy_reads_create_bodies_as_dockerd_stores_them() {
    let Some(d) = Dockerd::start() else { return };
    let policy = baseline();
    for (name, body, rule) in CASES {
        let mut req = AuthzRequest {
            method: "POST".into(),
            uri: "/v1.41/containers/create".into(),
            body: Some(body.to_vec()),
            ..Default::default()
        };
        req.headers
            .insert("Content-Type".into(), "application/json".into());
        let asked = evaluate(&policy, &req);
        assert_eq!(asked.rule.as_deref(), *rule, "{name}: request: {asked:?}");

        let (status, created) = d
            .call("POST", "/v1.41/containers/create", Some(body))
            .unwrap();
        assert_eq!(status, 201, "{name}: {}", String::from_utf8_lossy(&created));
        let id = id_of(&created);
        let (status, inspect) = d
            .call("GET", &format!("/v1.41/containers/{id}/json"), None)
            .unwrap();
        assert_eq!(status, 200, "{name}");
        let stored = evaluate_inspect(&policy, "", &InspectJson::parse(&inspect).unwrap());
        assert_eq!(
            stored.rule.as_deref(),
            *rule,
            "{name}: stored configuration: {stored:?}"
        );
        let (status, _) = d
            .call("DELETE", &format!("/v1.41/containers/{id}?force=1"), None)
            .unwrap();
        assert_eq!(status, 204, "{name}");
    }
}
