//! A real dockerd (Debian's docker.io 20.10) of a test's own: its own API
//! socket, data, exec root, pid file and cgroup parent under a short
//! directory in /tmp (unix socket paths hold 108 bytes), started and stopped
//! as often as the test needs (with authorization plugins or without), a
//! busybox image made with `docker import`, and raw HTTP on its socket.
//!
//! On drop it stops dockerd (which stops its containers: they get 2 s after
//! SIGTERM; no API call, so that it works whatever the plugins say), and a
//! containerd left behind, unmounts what dockerd left mounted under its
//! directory, removes its cgroup parent and the directory (kept, with
//! dockerd's log, when `MOAT_KEEP_DOCKERD_DIR` is set: for debugging).

use std::ffi::CString;
use std::io::{Read as _, Write as _};
use std::os::unix::ffi::OsStrExt as _;
use std::os::unix::fs::symlink;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// Debian's daemon.
pub const DOCKERD: &str = "/usr/sbin/dockerd";
/// Debian's client (the same version as the daemon).
pub const DOCKER: &str = "/usr/bin/docker";
/// The image every test container runs: static busybox and its applets.
pub const IMAGE: &str = "moat-test-bb:latest";

/// Why dockerd cannot be run here, if it cannot.
pub fn unavailable() -> Option<String> {
    if !crate::is_root() {
        return Some("dockerd needs root".into());
    }
    for tool in [DOCKERD, DOCKER] {
        if !Path::new(tool).exists() {
            return Some(format!(
                "{tool} is not installed (Debian package docker.io; scripts/setup.sh installs it)"
            ));
        }
    }
    if busybox().is_none() {
        return Some("busybox is not installed (busybox-static; scripts/setup.sh)".into());
    }
    None
}

fn busybox() -> Option<PathBuf> {
    ["/bin/busybox", "/usr/bin/busybox"]
        .into_iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
}

/// A raw HTTP response.
#[derive(Debug, Clone)]
pub struct Raw {
    /// The status code.
    pub status: u16,
    /// The body (de-chunked).
    pub body: Vec<u8>,
}

impl Raw {
    /// The body as text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// A private dockerd.
pub struct Dockerd {
    dir: PathBuf,
    sock: PathBuf,
    cgroup_parent: String,
    child: Option<Child>,
}

impl Dockerd {
    /// A daemon of its own in `/tmp/moat-<tag>-<pid>` (not started yet).
    pub fn new(tag: &str) -> Dockerd {
        let dir = PathBuf::from(format!("/tmp/moat-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Dockerd {
            sock: dir.join("docker.sock"),
            cgroup_parent: format!("moat-{tag}-{}", std::process::id()),
            dir,
            child: None,
        }
    }

    /// Its directory (for the tests' own files too).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// dockerd's pid, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Its API socket.
    pub fn socket(&self) -> &Path {
        &self.sock
    }

    /// `unix://<socket>`, for `docker -H`.
    pub fn host(&self) -> String {
        format!("unix://{}", self.sock.display())
    }

    /// Starts dockerd asking the authorization plugins `plugins` (which must
    /// be serving), and waits until it answers; `Err` with its log's tail.
    pub fn start(&mut self, plugins: &[&str]) -> Result<(), String> {
        assert!(self.child.is_none(), "dockerd is already running");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("dockerd.log"))
            .unwrap();
        let mut cmd = Command::new(DOCKERD);
        cmd.args([
            "--iptables=false",
            "--ip6tables=false",
            "--bridge=none",
            "--storage-driver=vfs",
            "--exec-opt",
            "native.cgroupdriver=cgroupfs",
            "--shutdown-timeout=2",
        ])
        .arg(format!("--cgroup-parent={}", self.cgroup_parent))
        .arg("--host")
        .arg(self.host())
        .arg("--data-root")
        .arg(self.dir.join("data"))
        .arg("--exec-root")
        .arg(self.dir.join("exec"))
        .arg("--pidfile")
        .arg(self.dir.join("docker.pid"));
        for p in plugins {
            cmd.arg(format!("--authorization-plugin={p}"));
        }
        let child = cmd
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .map_err(|e| format!("cannot start {DOCKERD}: {e}"))?;
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if self
                .raw_request(b"GET /_ping HTTP/1.1\r\nHost: d\r\nConnection: close\r\n\r\n")
                .is_ok_and(|r| r.status == 200)
            {
                return Ok(());
            }
            if let Some(status) = self.child.as_mut().unwrap().try_wait().ok().flatten() {
                self.child = None;
                return Err(format!("dockerd exited with {status}: {}", self.log_tail()));
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "dockerd did not answer within 60 s: {}",
                    self.log_tail()
                ));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Stops dockerd (SIGTERM; it stops its containerd and containers).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            stop_child(&mut child, Duration::from_secs(30));
        }
        // A containerd left behind by a killed dockerd.
        let pidfile = self.dir.join("exec/containerd/containerd.pid");
        if let Some(pid) = std::fs::read_to_string(pidfile)
            .ok()
            .and_then(|p| p.trim().parse::<i32>().ok())
        {
            // SAFETY: kill(2); the pid is the containerd this dockerd started.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
    }

    /// The last lines of dockerd's log.
    pub fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(self.dir.join("dockerd.log")).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }

    /// `docker -H <ours> ARGS` (Debian's client).
    pub fn docker(&self, args: &[&str]) -> Output {
        Command::new(DOCKER)
            .arg("-H")
            .arg(self.host())
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("running docker")
    }

    /// `docker ARGS`, which must succeed; its trimmed standard output.
    pub fn docker_ok(&self, args: &[&str]) -> String {
        let out = self.docker(args);
        assert!(
            out.status.success(),
            "docker {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    /// Imports a rootfs of static busybox and its applet links as [`IMAGE`].
    pub fn import_busybox(&self) {
        let rootfs = self.dir.join("rootfs");
        std::fs::create_dir_all(rootfs.join("bin")).unwrap();
        std::fs::create_dir_all(rootfs.join("tmp")).unwrap();
        std::fs::copy(busybox().expect("busybox"), rootfs.join("bin/busybox")).unwrap();
        for applet in ["sh", "true", "cat", "sleep", "id"] {
            symlink("busybox", rootfs.join("bin").join(applet)).unwrap();
        }
        let tar = self.dir.join("rootfs.tar");
        let ok = Command::new("tar")
            .arg("-C")
            .arg(&rootfs)
            .arg("-cf")
            .arg(&tar)
            .arg(".")
            .status()
            .expect("running tar")
            .success();
        assert!(ok, "tar failed");
        self.docker_ok(&["import", tar.to_str().unwrap(), IMAGE]);
    }

    /// Sends `request` (a whole HTTP/1.1 request, which should say
    /// `Connection: close`) on the API socket.
    pub fn raw_request(&self, request: &[u8]) -> std::io::Result<Raw> {
        let mut s = UnixStream::connect(&self.sock)?;
        s.set_read_timeout(Some(Duration::from_secs(90)))?;
        s.write_all(request)?;
        let mut raw = Vec::new();
        s.read_to_end(&mut raw)?;
        let split = raw
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .ok_or_else(|| std::io::Error::other("no end of headers in the response"))?;
        let head = String::from_utf8_lossy(&raw[..split]).to_ascii_lowercase();
        let status = head
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| std::io::Error::other("no status in the response"))?;
        let payload = &raw[split + 4..];
        let body = if head.contains("transfer-encoding: chunked") {
            dechunk(payload)
        } else {
            payload.to_vec()
        };
        Ok(Raw { status, body })
    }

    /// `METHOD path` with a JSON body (`Content-Length` set).
    pub fn call(&self, method: &str, path: &str, body: Option<&[u8]>) -> Raw {
        let body = body.unwrap_or_default();
        let mut request = format!(
            "{method} {path} HTTP/1.1\r\nHost: docker\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        )
        .into_bytes();
        request.extend_from_slice(body);
        self.raw_request(&request)
            .unwrap_or_else(|e| panic!("{method} {path}: {e}"))
    }

    /// Every container's full id (`GET /containers/json?all=1`).
    pub fn all_containers(&self) -> Vec<String> {
        let r = self.call("GET", "/containers/json?all=1", None);
        assert_eq!(r.status, 200, "{}", r.text());
        let list: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
        list.as_array()
            .unwrap()
            .iter()
            .filter_map(|c| c["Id"].as_str().map(str::to_owned))
            .collect()
    }
}

fn stop_child(child: &mut Child, grace: Duration) {
    if child.try_wait().ok().flatten().is_some() {
        return;
    }
    // SAFETY: kill(2) on our own child's pid.
    unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline {
        if child.try_wait().ok().flatten().is_some() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
}

fn dechunk(mut b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(eol) = b.windows(2).position(|w| w == b"\r\n") {
        let size =
            usize::from_str_radix(String::from_utf8_lossy(&b[..eol]).trim(), 16).unwrap_or(0);
        if size == 0 || b.len() < eol + 2 + size {
            break;
        }
        out.extend_from_slice(&b[eol + 2..eol + 2 + size]);
        b = &b[(eol + 4 + size).min(b.len())..];
    }
    out
}

/// Mount points under `dir`, deepest first.
fn mounts_under(dir: &Path) -> Vec<PathBuf> {
    let text = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mut mounts: Vec<PathBuf> = text
        .lines()
        .filter_map(|line| line.split(' ').nth(4))
        .map(PathBuf::from)
        .filter(|m| m.starts_with(dir))
        .collect();
    mounts.sort_by_key(|m| std::cmp::Reverse(m.components().count()));
    mounts.dedup();
    mounts
}

impl Drop for Dockerd {
    fn drop(&mut self) {
        self.stop();
        for mount in mounts_under(&self.dir) {
            if let Ok(path) = CString::new(mount.as_os_str().as_bytes()) {
                // SAFETY: a NUL-terminated path.
                unsafe { libc::umount2(path.as_ptr(), libc::MNT_DETACH) };
            }
        }
        if let Ok(entries) = std::fs::read_dir("/sys/fs/cgroup") {
            for hierarchy in entries.flatten() {
                let parent = hierarchy.path().join(&self.cgroup_parent);
                if let Ok(children) = std::fs::read_dir(&parent) {
                    for child in children.flatten().filter(|c| c.path().is_dir()) {
                        let _ = std::fs::remove_dir(child.path());
                    }
                }
                let _ = std::fs::remove_dir(&parent);
            }
        }
        let _ = std::fs::remove_dir(Path::new("/sys/fs/cgroup").join(&self.cgroup_parent));
        if std::env::var_os("MOAT_KEEP_DOCKERD_DIR").is_some() {
            return;
        }
        if let Err(err) = std::fs::remove_dir_all(&self.dir) {
            eprintln!("removing {}: {err}", self.dir.display());
        }
    }
}
