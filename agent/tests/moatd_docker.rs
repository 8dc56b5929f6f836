//! A real dockerd (Debian's docker.io) on a private socket, a busybox image made
//! with `docker import`, and the real `moatd`: a container that calls a syscall
//! Docker's default seccomp profile denies (`unshare(CLONE_NEWUSER)`, EPERM) N
//! times is counted exactly N times under `docker:<first 12 hex of its id>`, and
//! its audit events carry that workload.
//!
//! Two containers are run:
//! - one as dockerd runs it (on this host runc also places it in a v2 cgroup,
//!   `0::/docker/<id>`, so it is attributed by its v2 cgroup id);
//! - on hybrid hosts, one whose processes are moved to the v2 root cgroup before
//!   they start denying, as Docker's cgroupfs driver leaves containers where the
//!   runtime joins v1 cgroups only: the programs then key its counts by its v1
//!   pids cgroup (`V1_PIDS_ID_FLAG | <kernfs node id>`), which moatd resolves in
//!   the pids hierarchy.
//!
//! Skipped (with `SKIP: <reason>`) only when not root or when dockerd is not
//! installed or does not start. `scripts/setup.sh` installs docker.io and
//! busybox-static.
//!
//! Everything lives in a short directory under /tmp (unix socket paths are
//! limited to 108 bytes), removed by a drop guard that also removes the
//! containers, stops moatd and dockerd and unmounts what dockerd left mounted.

mod moatd_common;

use std::{
    ffi::CString,
    fs,
    io::Write as _,
    net::SocketAddr,
    os::unix::{ffi::OsStrExt as _, fs::symlink},
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
    thread,
    time::{Duration, Instant},
};

use moatd_common::{get, not_root, sample, served_address, spawn_moatd};
use nix::{
    sys::signal::{kill, Signal},
    unistd::Pid,
};

const DOCKERD: &str = "/usr/sbin/dockerd";
/// Debian's client, not whatever else may be first on `PATH`.
const DOCKER: &str = "/usr/bin/docker";
/// Denied syscalls per container.
const N: u32 = 50;
const IMAGE: &str = "moat-test-busybox:latest";

/// The container's command: N attempts, each one denied `unshare(CLONE_NEWUSER)`
/// (busybox's `unshare -U` calls it once and exits 1 on EPERM).
fn denial_loop() -> String {
    format!("i=0; while [ $i -lt {N} ]; do unshare -U true 2>/dev/null; i=$((i+1)); done")
}

/// Everything the test started, stopped and removed on drop, in order.
struct Env {
    dir: PathBuf,
    sock: String,
    containers: Vec<String>,
    moatd: Option<Child>,
    dockerd: Option<Child>,
    /// The `docker` parent cgroups dockerd creates in each hierarchy that did not
    /// exist before: removed at the end (if empty), leaving the host as it was.
    new_cgroup_parents: Vec<PathBuf>,
}

/// `/sys/fs/cgroup/<hierarchy>/docker` for every mounted hierarchy, and the v2
/// root's on v2-only hosts.
fn docker_cgroup_parents() -> Vec<PathBuf> {
    let root = Path::new("/sys/fs/cgroup");
    let mut dirs = vec![root.join("docker")];
    if let Ok(entries) = fs::read_dir(root) {
        for entry in entries.flatten() {
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                dirs.push(entry.path().join("docker"));
            }
        }
    }
    dirs
}

impl Env {
    fn docker(&self, args: &[&str]) -> Output {
        Command::new(DOCKER)
            .arg("-H")
            .arg(&self.sock)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("running docker")
    }

    fn docker_ok(&self, args: &[&str]) -> String {
        let out = self.docker(args);
        assert!(
            out.status.success(),
            "docker {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    fn dockerd_log(&self) -> String {
        let log = fs::read_to_string(self.dir.join("dockerd.log")).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(15)..].join("\n")
    }
}

/// SIGTERM, then SIGKILL after `grace`; reaps the child.
fn stop(child: &mut Child, grace: Duration) {
    if child.try_wait().ok().flatten().is_some() {
        return;
    }
    let _ = kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM);
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline {
        if child.try_wait().ok().flatten().is_some() {
            return;
        }
        thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// Mount points under `dir`, deepest first.
fn mounts_under(dir: &Path) -> Vec<PathBuf> {
    let text = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mut mounts: Vec<PathBuf> = text
        .lines()
        .filter_map(|line| line.split(' ').nth(4))
        // Octal escapes (spaces and the like) do not occur in the test's paths.
        .map(PathBuf::from)
        .filter(|m| m.starts_with(dir))
        .collect();
    mounts.sort_by_key(|m| std::cmp::Reverse(m.components().count()));
    mounts.dedup();
    mounts
}

impl Drop for Env {
    fn drop(&mut self) {
        if self.dockerd.is_some() {
            for id in &self.containers {
                let _ = self.docker(&["rm", "-f", id]);
            }
        }
        if let Some(moatd) = &mut self.moatd {
            stop(moatd, Duration::from_secs(5));
        }
        if let Some(dockerd) = &mut self.dockerd {
            // dockerd stops its own containerd on SIGTERM.
            stop(dockerd, Duration::from_secs(20));
        }
        // A containerd left behind by a killed dockerd.
        let containerd_pid = self.dir.join("exec/containerd/containerd.pid");
        if let Some(pid) = fs::read_to_string(containerd_pid)
            .ok()
            .and_then(|p| p.trim().parse::<i32>().ok())
        {
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
        }
        for mount in mounts_under(&self.dir) {
            if let Ok(path) = CString::new(mount.as_os_str().as_bytes()) {
                // SAFETY: a NUL-terminated path.
                unsafe { libc::umount2(path.as_ptr(), libc::MNT_DETACH) };
            }
        }
        for parent in &self.new_cgroup_parents {
            // Fails (harmlessly) if something else has put a cgroup in it since.
            let _ = fs::remove_dir(parent);
        }
        if let Err(err) = fs::remove_dir_all(&self.dir) {
            eprintln!("removing {}: {err}", self.dir.display());
        }
    }
}

/// Starts dockerd; `Err` says why it cannot run here.
fn start_dockerd(env: &mut Env) -> Result<(), String> {
    let dir = &env.dir;
    let log = fs::File::create(dir.join("dockerd.log")).unwrap();
    let child = Command::new(DOCKERD)
        .args([
            "--iptables=false",
            "--ip6tables=false",
            "--bridge=none",
            "--storage-driver=vfs",
            "--exec-opt",
            "native.cgroupdriver=cgroupfs",
        ])
        .arg("--host")
        .arg(&env.sock)
        .arg("--data-root")
        .arg(dir.join("data"))
        .arg("--exec-root")
        .arg(dir.join("exec"))
        .arg("--pidfile")
        .arg(dir.join("docker.pid"))
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .map_err(|e| format!("cannot start {DOCKERD}: {e}"))?;
    env.dockerd = Some(child);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if env.docker(&["version"]).status.success() {
            return Ok(());
        }
        if let Some(status) = env.dockerd.as_mut().unwrap().try_wait().ok().flatten() {
            return Err(format!(
                "dockerd exited with {status}: {}",
                env.dockerd_log()
            ));
        }
        if Instant::now() > deadline {
            return Err(format!(
                "dockerd did not answer within 30 s: {}",
                env.dockerd_log()
            ));
        }
        thread::sleep(Duration::from_millis(100));
    }
}

/// Imports a rootfs of static busybox and its applet links as [`IMAGE`].
fn import_busybox(env: &Env) {
    let busybox = ["/bin/busybox", "/usr/bin/busybox"]
        .into_iter()
        .map(Path::new)
        .find(|p| p.exists())
        .expect("busybox (busybox-static) is installed: scripts/setup.sh installs it");
    let rootfs = env.dir.join("rootfs");
    fs::create_dir_all(rootfs.join("bin")).unwrap();
    fs::create_dir_all(rootfs.join("tmp")).unwrap();
    fs::copy(busybox, rootfs.join("bin/busybox")).unwrap();
    for applet in ["sh", "unshare", "true", "cat", "sleep"] {
        symlink("busybox", rootfs.join("bin").join(applet)).unwrap();
    }
    let tar = env.dir.join("rootfs.tar");
    let status = Command::new("tar")
        .arg("-C")
        .arg(&rootfs)
        .arg("-cf")
        .arg(&tar)
        .arg(".")
        .status()
        .expect("running tar");
    assert!(status.success(), "tar failed");
    env.docker_ok(&["import", tar.to_str().unwrap(), IMAGE]);
}

/// A running moatd; returns its address once it serves.
fn start_moatd(env: &mut Env) -> SocketAddr {
    let config = env.dir.join("moatd.toml");
    let audit_log = env.dir.join("audit.jsonl");
    fs::write(
        &config,
        format!("[audit]\nlog = \"{}\"\n", audit_log.display()),
    )
    .unwrap();
    let (child, rx) = spawn_moatd([
        "--config",
        config.to_str().unwrap(),
        "--listen",
        "127.0.0.1:0",
        "--log",
        "info",
        "--audit-log",
        audit_log.to_str().unwrap(),
    ]);
    env.moatd = Some(child);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let line = rx
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .expect("moatd did not say it is running within 30 s");
        if line.contains("running") {
            return served_address(&line);
        }
    }
}

/// The full container id from a `--cidfile`, once docker has written it.
fn container_id(cidfile: &Path) -> String {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(id) = fs::read_to_string(cidfile) {
            let id = id.trim().to_owned();
            if id.len() == 64 {
                return id;
            }
        }
        assert!(Instant::now() < deadline, "no container id in {cidfile:?}");
        thread::sleep(Duration::from_millis(20));
    }
}

/// Polls `/metrics` until the container's unshare denial counter is N (up to 5 s);
/// returns the last value seen.
fn denials_of(addr: SocketAddr, id: &str) -> Option<f64> {
    let series = format!(
        "moat_seccomp_denials_total{{workload=\"docker:{}\",syscall=\"unshare\",action=\"errno\",errno=\"EPERM\"}}",
        &id[..12]
    );
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let body = get(addr, "/metrics").body;
        let value = sample(&body, &series);
        if value == Some(f64::from(N)) || Instant::now() > deadline {
            eprintln!("{series} {value:?}");
            return value;
        }
        thread::sleep(Duration::from_millis(50));
    }
}

/// Waits (up to 5 s) for a `seccomp_denied` audit event of the container.
fn audit_has_denial(dir: &Path, id: &str) -> bool {
    let workload = format!("docker:{}", &id[..12]);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let text = fs::read_to_string(dir.join("audit.jsonl")).unwrap_or_default();
        let found = text
            .lines()
            .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
            .any(|event| {
                event["event"]["action"] == "seccomp_denied"
                    && event["workload"]["name"] == workload.as_str()
                    && event["seccomp"]["syscall"] == "unshare"
                    && event["seccomp"]["errno"] == "EPERM"
            });
        if found || Instant::now() > deadline {
            return found;
        }
        thread::sleep(Duration::from_millis(50));
    }
}

/// The hybrid host's v2 mount when pids is on a v1 hierarchy.
fn hybrid_v2_mount() -> Option<PathBuf> {
    let layout =
        moat_agent::collect::attribution::CgroupLayout::detect(Path::new("/sys/fs/cgroup"));
    let pids = layout.pids_mount?;
    (pids != layout.v2_mount && layout.v2_mount.join("cgroup.procs").exists())
        .then_some(layout.v2_mount)
}

#[test]
fn denials_in_a_real_docker_container_are_counted_under_its_id() {
    skip_if!(not_root());
    if !Path::new(DOCKERD).exists() || !Path::new(DOCKER).exists() {
        eprintln!(
            "SKIP: docker.io is not installed ({DOCKERD}, {DOCKER}); scripts/setup.sh installs it"
        );
        return;
    }
    let started = Instant::now();
    let dir = PathBuf::from(format!("/tmp/moat-dk-{}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).unwrap();
    let mut env = Env {
        sock: format!("unix://{}/docker.sock", dir.display()),
        dir,
        containers: Vec::new(),
        moatd: None,
        dockerd: None,
        new_cgroup_parents: docker_cgroup_parents()
            .into_iter()
            .filter(|d| !d.exists())
            .collect(),
    };
    if let Err(reason) = start_dockerd(&mut env) {
        eprintln!("SKIP: {reason}");
        return;
    }
    import_busybox(&env);
    let addr = start_moatd(&mut env);

    // 1. A container as dockerd runs it.
    let cidfile = env.dir.join("plain.cid");
    let out = Command::new(DOCKER)
        .arg("-H")
        .arg(&env.sock)
        .args(["run", "--rm", "--network", "none", "--cidfile"])
        .arg(&cidfile)
        .args([IMAGE, "sh", "-c", &denial_loop()])
        .stdin(Stdio::null())
        .output()
        .expect("docker run");
    let id = container_id(&cidfile);
    env.containers.push(id.clone());
    assert!(
        out.status.success(),
        "docker run failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        denials_of(addr, &id),
        Some(f64::from(N)),
        "denials of container {id}"
    );
    assert!(
        audit_has_denial(&env.dir, &id),
        "no seccomp_denied audit event with workload docker:{}: {}",
        &id[..12],
        fs::read_to_string(env.dir.join("audit.jsonl")).unwrap_or_default()
    );

    // 2. A container only in v1 cgroups (hybrid hosts only).
    let Some(v2_mount) = hybrid_v2_mount() else {
        eprintln!("not a hybrid host: the v1-only container is not run");
        return;
    };
    let cidfile = env.dir.join("v1.cid");
    let script = format!("read go; {}", denial_loop());
    let mut run = Command::new(DOCKER)
        .arg("-H")
        .arg(&env.sock)
        .args(["run", "-i", "--rm", "--network", "none", "--cidfile"])
        .arg(&cidfile)
        .args([IMAGE, "sh", "-c", &script])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("docker run");
    let v1_id = container_id(&cidfile);
    env.containers.push(v1_id.clone());
    let deadline = Instant::now() + Duration::from_secs(20);
    let pid = loop {
        let out = env.docker(&["inspect", "-f", "{{.State.Pid}}", &v1_id]);
        let pid: u32 = String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse()
            .unwrap_or(0);
        if pid > 0 {
            break pid;
        }
        assert!(Instant::now() < deadline, "container {v1_id} did not start");
        thread::sleep(Duration::from_millis(20));
    };
    fs::write(v2_mount.join("cgroup.procs"), pid.to_string()).expect("moving to the v2 root");
    let cgroups = fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
    assert!(cgroups.lines().any(|l| l == "0::/"), "{cgroups}");
    assert!(
        cgroups
            .lines()
            .any(|l| l.contains(":pids:") && l.ends_with(&v1_id)),
        "{cgroups}"
    );
    {
        let mut stdin = run.stdin.take().unwrap();
        stdin.write_all(b"go\n").unwrap();
    }
    let out = run.wait_with_output().expect("docker run");
    assert!(
        out.status.success(),
        "docker run failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        denials_of(addr, &v1_id),
        Some(f64::from(N)),
        "denials of the v1-only container {v1_id}"
    );
    assert!(
        audit_has_denial(&env.dir, &v1_id),
        "no seccomp_denied audit event with workload docker:{}",
        &v1_id[..12]
    );
    eprintln!("done in {:?}", started.elapsed());
}
