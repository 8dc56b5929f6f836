//! A real `moatd` for end-to-end tests: private config, port, audit log and
//! cgroup parent, stopped on drop; plus the small pieces such tests share
//! (temporary directories, cgroup parents, where the pids controller is).

use std::ffi::OsStr;
use std::io::{BufRead as _, BufReader};
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use crate::binary;

/// The v1 pids hierarchy on hybrid hosts.
pub const PIDS_V1: &str = "/sys/fs/cgroup/pids";
/// Where hybrid hosts mount cgroup v2. On a v2-only host it names nothing
/// (or an ordinary cgroup called `unified`): tests use [`v2_root`].
pub const V2: &str = "/sys/fs/cgroup/unified";

/// Whether `path` is the root of a mounted cgroup2 file system.
fn is_cgroup2_mount(path: &str) -> bool {
    use nix::sys::statfs::{statfs, CGROUP2_SUPER_MAGIC};
    statfs(path).is_ok_and(|s| s.filesystem_type() == CGROUP2_SUPER_MAGIC)
        && Path::new(path).join("cgroup.controllers").exists()
}

/// The cgroup v2 hierarchy: `/sys/fs/cgroup` itself on v2-only hosts (most
/// distributions, and the kernel lab's guests), [`V2`] on hybrid hosts.
///
/// Decided by the file system mounted there, not by which files exist: on a
/// v2-only host `/sys/fs/cgroup/unified/cgroup.controllers` exists as soon
/// as anything makes a cgroup called `unified`.
pub fn v2_root() -> &'static Path {
    if is_cgroup2_mount("/sys/fs/cgroup") {
        Path::new("/sys/fs/cgroup")
    } else {
        Path::new(V2)
    }
}

/// A v1 hierarchy has a `tasks` file in every cgroup, the root included.
pub fn pids_on_v1() -> bool {
    Path::new(PIDS_V1).join("tasks").exists()
}

/// Whether the pids controller is available in the v2 hierarchy.
pub fn pids_on_v2() -> bool {
    std::fs::read_to_string(v2_root().join("cgroup.controllers"))
        .map(|c| c.split_whitespace().any(|x| x == "pids"))
        .unwrap_or(false)
}

/// The hierarchy that holds `moat run`'s pids cgroups: [`v2_root`] when the
/// pids controller is on v2, else the v1 pids hierarchy.
pub fn pids_root() -> &'static Path {
    if pids_on_v2() {
        v2_root()
    } else {
        Path::new(PIDS_V1)
    }
}

/// The hierarchies `moat run` makes a workload's cgroups in: the pids one
/// and the v2 one (a single root when pids is on v2).
pub fn cgroup_roots() -> Vec<&'static Path> {
    let mut roots = vec![pids_root()];
    if v2_root() != pids_root() {
        roots.push(v2_root());
    }
    roots
}

/// The environment variable that forces moatd's `[tracing] mechanism` in
/// every [`Moatd`] (unless a test's own configuration has a `[tracing]`
/// section), as `scripts/test-kernels.sh --env MOAT_TEST_TRACING_MECHANISM=fexit`
/// does to run the suites once per mechanism.
pub const MECHANISM_ENV: &str = "MOAT_TEST_TRACING_MECHANISM";

/// The environment variable that forces moatd's `[tracing] denials` tier in
/// every [`Moatd`], like [`MECHANISM_ENV`] (e.g. `fatal`, which attaches no
/// syscall tracepoint, to run the recording suite without moatd's
/// `sys_enter`).
pub const DENIALS_ENV: &str = "MOAT_TEST_TRACING_DENIALS";

/// Whether [`DENIALS_ENV`] forces the `fatal` tier, where ERRNO refusals are
/// not counted (tests that count them say so and leave those checks out).
pub fn fatal_tier_forced() -> bool {
    std::env::var(DENIALS_ENV).is_ok_and(|v| v == "fatal")
}

/// A fresh temporary directory (world-traversable, so workloads in a user
/// namespace can reach files in it), removed on drop.
pub struct TempDir(tempfile::TempDir);

impl TempDir {
    /// A new directory `$TMPDIR/moat-e2e-<tag>-XXXXXX`.
    pub fn new(tag: &str) -> TempDir {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::Builder::new()
            .prefix(&format!("moat-e2e-{tag}-"))
            .tempdir()
            .unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        TempDir(dir)
    }

    /// A path inside the directory.
    pub fn join(&self, name: &str) -> PathBuf {
        self.0.path().join(name)
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        self.0.path()
    }
}

/// A cgroup parent for `moat run --cgroup-parent`; on drop its workloads'
/// cgroups and the parent itself are removed from both hierarchies.
pub struct CgroupParent(pub String);

impl Drop for CgroupParent {
    fn drop(&mut self) {
        // Both hierarchies whatever the layout now: a test may have moved
        // the pids controller since the parent was made.
        for root in [Path::new(PIDS_V1), v2_root()] {
            let d = root.join(&self.0);
            if let Ok(entries) = std::fs::read_dir(&d) {
                for e in entries.flatten() {
                    if e.path().is_dir() {
                        let _ = std::fs::remove_dir(e.path());
                    }
                }
            }
            let _ = std::fs::remove_dir(&d);
        }
    }
}

/// `moat` with none of the environment that would change its defaults.
pub fn moat() -> Command {
    let mut c = Command::new(binary("moat"));
    c.env_remove("MOAT_AUDIT_LOG")
        .env_remove("MOAT_AGENT")
        .env_remove("MOAT_BPF_DIR");
    c
}

/// moatd running with a private config, port and audit log, watching a
/// private cgroup parent; stopped on drop (before the parent is removed).
pub struct Moatd {
    /// None while stopped (between [`Moatd::stop`] and [`Moatd::start_again`]).
    child: Option<Child>,
    port: u16,
    config: PathBuf,
    stdout_unread: bool,
    env: Vec<(String, String)>,
    /// The audit log moatd writes.
    pub audit_log: PathBuf,
    log: PathBuf,
    /// Private files: config, logs, the `moat run` state directory.
    pub dir: TempDir,
    /// The cgroup parent moatd attributes workloads under.
    pub parent: CgroupParent,
    /// The bpffs directory moatd pins its recording maps in (private, so
    /// that tests never share recording state; `MOAT_BPF_DIR`).
    pub bpf_dir: PathBuf,
}

/// How [`Moatd::start_with`] runs moatd, beyond its defaults.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// TOML appended to moatd's configuration (after its `[workloads]`
    /// section, so in sections of its own).
    pub config: String,
    /// The audit log [default: `audit.jsonl` in moatd's private directory];
    /// `-` for standard output.
    pub audit_log: Option<PathBuf>,
    /// moatd's standard output is a pipe that nobody reads (instead of
    /// /dev/null): with `audit_log` `-`, a writer that blocks.
    pub stdout_unread: bool,
    /// `workloads.poll_interval_ms` [default: 100].
    pub poll_interval_ms: Option<u64>,
    /// Environment variables set for moatd (e.g. `NOTIFY_SOCKET`).
    pub env: Vec<(String, String)>,
}

impl Moatd {
    /// Starts moatd and waits until it serves `/metrics`.
    pub fn start(tag: &str) -> Moatd {
        Self::start_with(tag, &Options::default())
    }

    /// Starts moatd with `options` and waits until it serves `/metrics`.
    pub fn start_with(tag: &str, options: &Options) -> Moatd {
        let mut agent = Self::spawn(tag, options);
        let start = Instant::now();
        loop {
            if let Some(status) = agent.child().try_wait().unwrap() {
                panic!("moatd exited with {status}:\n{}", agent.log_text());
            }
            if agent.get_metrics().is_some() {
                break;
            }
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "moatd not serving after 20 s:\n{}",
                agent.log_text()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        agent
    }

    /// Starts moatd with `options` without waiting for it.
    pub fn spawn(tag: &str, options: &Options) -> Moatd {
        let parent = CgroupParent(format!("moat-t-{tag}-{}", std::process::id()));
        let dir = TempDir::new(tag);
        // moatd watches the parent directory for new workload cgroups, but a
        // parent created after moatd started is only watched from the next
        // poll: a short workload could be gone before moatd knows its cgroup.
        // So the parent exists before moatd starts, as on a node where moat
        // has run before.
        let o = moat()
            .env("MOAT_STATE_DIR", dir.join("warmup-state"))
            .args(["run", "--cgroup-parent", &parent.0, "--name", "warmup"])
            .args(["--", "true"])
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "moat run warmup: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        let port = {
            let listener = TcpListener::bind("127.0.0.1:0").unwrap();
            listener.local_addr().unwrap().port()
        };
        let config = dir.join("moatd.toml");
        // The kernel lab runs the suites once per tracing mechanism.
        let mut forced = String::new();
        if !options.config.contains("[tracing]") {
            for (env, key) in [(MECHANISM_ENV, "mechanism"), (DENIALS_ENV, "denials")] {
                if let Ok(value) = std::env::var(env) {
                    forced.push_str(&format!("{key} = \"{value}\"\n"));
                }
            }
            if !forced.is_empty() {
                forced.insert_str(0, "[tracing]\n");
            }
        }
        std::fs::write(
            &config,
            format!(
                "[workloads]\nmoat_parent = \"{}\"\npoll_interval_ms = {}\n{}\n{forced}",
                parent.0,
                options.poll_interval_ms.unwrap_or(100),
                options.config
            ),
        )
        .unwrap();
        let audit_log = options
            .audit_log
            .clone()
            .unwrap_or_else(|| dir.join("audit.jsonl"));
        let log = dir.join("moatd.log");
        let bpf_dir = PathBuf::from(format!("/sys/fs/bpf/moat-t-{tag}-{}", std::process::id()));
        let mut agent = Moatd {
            child: None,
            port,
            audit_log,
            log,
            config,
            stdout_unread: options.stdout_unread,
            env: options.env.clone(),
            dir,
            parent,
            bpf_dir,
        };
        agent.child = Some(agent.launch(false));
        agent
    }

    /// Starts the moatd process with this agent's files; its log is appended
    /// to with `append` (a restart).
    fn launch(&self, append: bool) -> Child {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(append)
            .write(true)
            .truncate(!append)
            .open(&self.log)
            .unwrap();
        Command::new(binary("moatd"))
            .env("MOAT_BPF_DIR", &self.bpf_dir)
            .arg("--config")
            .arg(&self.config)
            .args([
                "--listen",
                &format!("127.0.0.1:{}", self.port),
                "--audit-log",
            ])
            .arg(&self.audit_log)
            .stdout(if self.stdout_unread {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stderr(log)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .spawn()
            .unwrap()
    }

    fn child(&mut self) -> &mut Child {
        self.child.as_mut().expect("moatd is running")
    }

    /// Stops moatd with SIGTERM and returns its exit status; its pins stay
    /// (the programs keep counting) until [`Moatd::start_again`] adopts them
    /// or the `Moatd` is dropped.
    pub fn stop(&mut self) -> std::process::ExitStatus {
        let mut child = self.child.take().expect("moatd is running");
        // SAFETY: kill(2) on our own child's pid.
        unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
        wait_for(Duration::from_secs(10), "moatd to exit on SIGTERM", || {
            child.try_wait().unwrap()
        })
    }

    /// Starts moatd again after [`Moatd::stop`], with the same files, port
    /// and pin directory, and waits until it serves `/metrics`.
    pub fn start_again(&mut self) {
        assert!(self.child.is_none(), "moatd is still running");
        self.child = Some(self.launch(true));
        let start = Instant::now();
        loop {
            if let Some(status) = self.child().try_wait().unwrap() {
                panic!("moatd exited with {status}:\n{}", self.log_text());
            }
            if self.get_metrics().is_some() {
                break;
            }
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "moatd not serving after 20 s:\n{}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// moatd's configuration file (rewrite it between [`Moatd::stop`] and
    /// [`Moatd::start_again`] to restart with another configuration).
    pub fn config_path(&self) -> &Path {
        &self.config
    }

    /// Whether moatd is still running; its exit status otherwise.
    pub fn try_wait(&mut self) -> Option<std::process::ExitStatus> {
        self.child().try_wait().unwrap()
    }

    /// Sends `signal` to moatd.
    pub fn signal(&self, signal: i32) {
        // SAFETY: kill(2) on our own child's pid.
        unsafe { libc::kill(self.pid() as libc::pid_t, signal) };
    }

    /// The port moatd serves on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// moatd's pid.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("moatd is running").id()
    }

    /// The `/metrics` URL.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}/metrics", self.port)
    }

    /// What moatd logged so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The audit log so far.
    pub fn audit_text(&self) -> String {
        std::fs::read_to_string(&self.audit_log).unwrap_or_default()
    }

    /// The body of GET /metrics (Prometheus text format), if it answered 200.
    pub fn get_metrics(&self) -> Option<String> {
        let url = moat_api::client::HttpUrl::parse(&self.url()).ok()?;
        moat_api::client::get(&url).ok()
    }

    /// `moat` with this agent's private state directory.
    pub fn moat(&self) -> Command {
        let mut c = moat();
        c.env("MOAT_STATE_DIR", self.dir.join("state"))
            .env("MOAT_BPF_DIR", &self.bpf_dir);
        c
    }

    /// `moat run --cgroup-parent <ours> --name NAME EXTRA -- CMD`.
    pub fn run_cmd(&self, name: &str, extra: &[&str], cmd: &[&str]) -> Command {
        let mut c = self.moat();
        c.args(["run", "--cgroup-parent", &self.parent.0, "--name", name])
            .args(extra)
            .arg("--")
            .args(cmd);
        c
    }

    /// moatd's resident memory (VmRSS), in KiB.
    pub fn rss_kib(&self) -> u64 {
        procfs::process::Process::new(self.pid() as i32)
            .and_then(|p| p.status())
            .ok()
            .and_then(|status| status.vmrss)
            .expect("VmRSS in /proc/<moatd>/status")
    }
}

impl Drop for Moatd {
    fn drop(&mut self) {
        if let Some(child) = &mut self.child {
            // SAFETY: kill(2) on our own child's pid.
            unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
            let start = Instant::now();
            while child.try_wait().ok().flatten().is_none() {
                if start.elapsed() > Duration::from_secs(10) {
                    let _ = child.kill();
                    let _ = child.wait();
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        // The pins outlive moatd (a restarted agent reuses them); a test's
        // private ones go with it.
        remove_pins(&self.bpf_dir);
    }
}

/// Removes a private pin directory and what moatd pinned in it (as
/// `moatd --unload` does): once moatd has exited, removing the link pins
/// detaches its programs.
pub fn remove_pins(dir: &Path) {
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            if e.path().is_dir() {
                for inner in std::fs::read_dir(e.path()).into_iter().flatten().flatten() {
                    let _ = std::fs::remove_file(inner.path());
                }
                let _ = std::fs::remove_dir(e.path());
            } else {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }
    let _ = std::fs::remove_dir(dir);
}

/// Starts the moatd binary `moatd` with `args` (standard input and output to /dev/null)
/// and a thread that reads its standard error: each line is echoed to the test's
/// standard error as `moatd: <line>` and sent to the returned receiver. The thread
/// keeps draining the pipe after the receiver is dropped, so moatd never blocks on
/// a full pipe.
pub fn spawn_following<S: AsRef<OsStr>>(
    moatd: &Path,
    args: impl IntoIterator<Item = S>,
) -> (Child, mpsc::Receiver<String>) {
    // A private pin directory, removed once moatd has gone (its standard
    // error closed): the programs it left attached detach then.
    static SPAWNED: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let pins = PathBuf::from(format!(
        "/sys/fs/bpf/moat-t-follow-{}-{}",
        std::process::id(),
        SPAWNED.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    ));
    let mut child = Command::new(moatd)
        .env("MOAT_BPF_DIR", &pins)
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
        remove_pins(&pins);
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
