//! The Docker authorization plugin in end-to-end tests: a real `moatd`
//! serving it under a plugin name of its own (other tests run at the same
//! time, and dockerd finds every plugin in `/run/docker/plugins`), its socket
//! bound by moatd or passed the way systemd passes it (`LISTEN_FDS`), and a
//! client of the plugin protocol.

use std::ffi::{CString, OsStr};
use std::io::{Read as _, Write as _};
use std::net::SocketAddr;
use std::os::fd::{AsRawFd as _, RawFd};
use std::os::unix::ffi::OsStrExt as _;
use std::os::unix::fs::PermissionsExt as _;
use std::os::unix::net::{UnixListener, UnixStream};
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// Where dockerd looks for plugins, whatever its `--exec-root`.
pub const PLUGIN_DIR: &str = "/run/docker/plugins";

/// A plugin name no other test uses: `moat-t<pid>-<n>`.
pub fn unique_plugin_name() -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    format!(
        "moat-t{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// How a test's moatd serves the plugin.
#[derive(Debug, Clone)]
pub struct PluginSetup {
    /// The plugin's name (`--authorization-plugin=NAME`).
    pub name: String,
    /// `/run/docker/plugins/NAME.sock`.
    pub socket: PathBuf,
    /// The Docker API socket moatd inspects containers through.
    pub docker_socket: PathBuf,
    /// The policy file (missing: the baseline).
    pub policy: PathBuf,
    /// `enforce` or `audit`.
    pub mode: &'static str,
    /// Where the configuration, the audit log and the logs go.
    pub dir: PathBuf,
}

impl PluginSetup {
    /// A plugin with a fresh name, its files in `dir`, judging requests of
    /// the daemon at `docker_socket`.
    pub fn new(dir: &Path, docker_socket: &Path) -> PluginSetup {
        let name = unique_plugin_name();
        PluginSetup {
            socket: Path::new(PLUGIN_DIR).join(format!("{name}.sock")),
            name,
            docker_socket: docker_socket.to_owned(),
            policy: dir.join("policy.toml"),
            mode: "enforce",
            dir: dir.to_owned(),
        }
    }

    /// The audit log moatd writes.
    pub fn audit_log(&self) -> PathBuf {
        self.dir.join("audit.jsonl")
    }

    fn write_config(&self) -> PathBuf {
        let config = self.dir.join(format!("moatd-{}.toml", self.name));
        // The plugin's tests start moatds one after another and beside other
        // tests' in the default pin directory: they detach their programs at
        // exit instead of keeping them pinned (and locked) there.
        std::fs::write(
            &config,
            format!(
                "[audit]\nlog = \"{}\"\n\n[kernel]\nkeep_pinned = false\n\n\
                 [authz]\nenabled = true\nsocket = \"{}\"\n\
                 policy = \"{}\"\nmode = \"{}\"\ndocker_socket = \"{}\"\n",
                self.audit_log().display(),
                self.socket.display(),
                self.policy.display(),
                self.mode,
                self.docker_socket.display()
            ),
        )
        .unwrap();
        config
    }
}

/// The plugin's socket held the way systemd holds it: bound and listening
/// in this process, handed to each moatd started with it, and still
/// accepting connections (into its backlog) while no moatd runs. Removed on
/// drop.
pub struct HeldSocket {
    listener: UnixListener,
    path: PathBuf,
}

impl HeldSocket {
    /// Binds `path` (mode 0600).
    pub fn bind(path: &Path) -> HeldSocket {
        let _ = std::fs::remove_file(path);
        let listener = UnixListener::bind(path).unwrap_or_else(|e| panic!("bind {path:?}: {e}"));
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
        HeldSocket {
            listener,
            path: path.to_owned(),
        }
    }

    /// The listening descriptor.
    pub fn fd(&self) -> RawFd {
        self.listener.as_raw_fd()
    }
}

impl Drop for HeldSocket {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// What the child runs instead of returning to `Command`: everything
/// allocated before the fork, so that the pre-exec hook only makes
/// async-signal-safe calls.
struct ExecWithFd {
    path: CString,
    _argv: Vec<CString>,
    argv_ptrs: Vec<*const libc::c_char>,
    _envs: Vec<CString>,
    env_ptrs: Vec<*const libc::c_char>,
    pid_entry: Vec<u8>,
    pid_slot: usize,
    fd: RawFd,
}

// SAFETY: the pointers point into the struct's own vectors, which move with
// it into the child's pre-exec hook; nothing else uses them.
unsafe impl Send for ExecWithFd {}
// SAFETY: as above.
unsafe impl Sync for ExecWithFd {}

impl ExecWithFd {
    /// In the child: the descriptor at 3, `LISTEN_PID` set to the child's
    /// pid, then execve.
    fn exec(&mut self) -> std::io::Result<()> {
        // SAFETY: getpid, dup2, fcntl and execve are async-signal-safe; the
        // buffers were allocated before the fork and are only written here.
        unsafe {
            let mut pid = libc::getpid() as u32;
            let mut digits = [0u8; 10];
            let mut n = 0;
            loop {
                digits[n] = b'0' + (pid % 10) as u8;
                n += 1;
                pid /= 10;
                if pid == 0 {
                    break;
                }
            }
            let prefix = b"LISTEN_PID=".len();
            for i in 0..n {
                self.pid_entry[prefix + i] = digits[n - 1 - i];
            }
            self.pid_entry[prefix + n] = 0;
            self.env_ptrs[self.pid_slot] = self.pid_entry.as_ptr().cast();
            if self.fd == 3 {
                if libc::fcntl(3, libc::F_SETFD, 0) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            } else if libc::dup2(self.fd, 3) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            libc::execve(
                self.path.as_ptr(),
                self.argv_ptrs.as_ptr(),
                self.env_ptrs.as_ptr(),
            );
        }
        Err(std::io::Error::last_os_error())
    }
}

fn cstring(s: &OsStr) -> CString {
    CString::new(s.as_bytes()).expect("no NUL in arguments")
}

/// Starts `program` with `args` as systemd starts a socket-activated service:
/// `fd` as descriptor 3, `LISTEN_FDS=1`, `LISTEN_FDNAMES=moat-authz` and
/// `LISTEN_PID` set to its own pid (in a pre-exec hook, since the pid is
/// known only after the fork). Standard error is piped.
pub fn spawn_with_listen_fd<S: AsRef<OsStr>>(
    program: &Path,
    args: impl IntoIterator<Item = S>,
    fd: RawFd,
) -> Child {
    let mut argv = vec![cstring(program.as_os_str())];
    argv.extend(args.into_iter().map(|a| cstring(a.as_ref())));
    let mut argv_ptrs: Vec<*const libc::c_char> = argv.iter().map(|a| a.as_ptr()).collect();
    argv_ptrs.push(std::ptr::null());
    let mut envs: Vec<CString> = std::env::vars_os()
        .filter(|(k, _)| !k.as_bytes().starts_with(b"LISTEN_"))
        .map(|(k, v)| {
            let mut kv = k.as_bytes().to_vec();
            kv.push(b'=');
            kv.extend_from_slice(v.as_bytes());
            CString::new(kv).expect("no NUL in the environment")
        })
        .collect();
    envs.push(CString::new("LISTEN_FDS=1").unwrap());
    envs.push(CString::new("LISTEN_FDNAMES=moat-authz").unwrap());
    let mut env_ptrs: Vec<*const libc::c_char> = envs.iter().map(|e| e.as_ptr()).collect();
    let pid_slot = env_ptrs.len();
    let mut pid_entry = b"LISTEN_PID=".to_vec();
    pid_entry.resize(pid_entry.len() + 12, 0);
    env_ptrs.push(pid_entry.as_ptr().cast());
    env_ptrs.push(std::ptr::null());
    let mut exec = ExecWithFd {
        path: cstring(program.as_os_str()),
        _argv: argv,
        argv_ptrs,
        _envs: envs,
        env_ptrs,
        pid_entry,
        pid_slot,
        fd,
    };
    let mut cmd = Command::new(program);
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    // SAFETY: the hook only makes async-signal-safe calls (see `exec`).
    unsafe { cmd.pre_exec(move || exec.exec()) };
    cmd.spawn().expect("spawning with a listening descriptor")
}

/// A moatd serving the plugin, stopped (SIGTERM) on drop.
pub struct PluginMoatd {
    child: Child,
    lines: mpsc::Receiver<String>,
    /// moatd's `/metrics` address.
    pub addr: SocketAddr,
    log: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl PluginMoatd {
    /// Starts `moatd` with `setup` (its socket `held` when given, else
    /// bound by moatd) and waits until it serves; `Err` with its log when it
    /// exits first.
    pub fn start(
        moatd: &Path,
        setup: &PluginSetup,
        held: Option<&HeldSocket>,
    ) -> Result<PluginMoatd, String> {
        let config = setup.write_config();
        let args: Vec<std::ffi::OsString> = vec![
            "--config".into(),
            config.into(),
            "--listen".into(),
            "127.0.0.1:0".into(),
            "--log".into(),
            "info".into(),
        ];
        let mut child = match held {
            Some(held) => spawn_with_listen_fd(moatd, &args, held.fd()),
            None => Command::new(moatd)
                .args(&args)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .expect("spawning moatd"),
        };
        let stderr = child.stderr.take().unwrap();
        let (tx, lines) = mpsc::channel();
        let log = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let kept = log.clone();
        let name = setup.name.clone();
        std::thread::spawn(move || {
            use std::io::BufRead as _;
            for line in std::io::BufReader::new(stderr)
                .lines()
                .map_while(Result::ok)
            {
                eprintln!("moatd[{name}]: {line}");
                kept.lock().unwrap().push(line.clone());
                let _ = tx.send(line);
            }
        });
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            match lines.recv_timeout(Duration::from_millis(100)) {
                Ok(line) if line.contains(" running (pid ") => {
                    let addr = crate::moatd::served_address(&line);
                    return Ok(PluginMoatd {
                        child,
                        lines,
                        addr,
                        log,
                    });
                }
                Ok(_) => {}
                Err(_) => {
                    if let Ok(Some(status)) = child.try_wait() {
                        std::thread::sleep(Duration::from_millis(100));
                        return Err(format!(
                            "moatd exited with {status}:\n{}",
                            log.lock().unwrap().join("\n")
                        ));
                    }
                    if Instant::now() > deadline {
                        let _ = child.kill();
                        let _ = child.wait();
                        return Err("moatd did not start within 30 s".into());
                    }
                }
            }
        }
    }

    /// moatd's pid.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends SIGHUP and waits (up to 10 s) for the log line that says how
    /// the policy reload went; returns it.
    pub fn sighup(&self) -> String {
        // SAFETY: kill(2) on our own child's pid.
        unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGHUP) };
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) if line.contains("authorization policy") => return line,
                Ok(_) => {}
                Err(_) => panic!("no policy reload logged within 10 s"),
            }
        }
    }

    /// The body of `GET /metrics`.
    pub fn metrics(&self) -> String {
        let url = moat_api::client::HttpUrl::at(self.addr, "/metrics");
        moat_api::client::get(&url).expect("GET /metrics")
    }

    /// Everything moatd logged so far.
    pub fn log(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }

    /// SIGTERM, and waits (up to 10 s, then SIGKILL); returns the exit status.
    pub fn stop(&mut self) -> Option<std::process::ExitStatus> {
        if let Ok(Some(status)) = self.child.try_wait() {
            return Some(status);
        }
        // SAFETY: kill(2) on our own child's pid.
        unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        self.child.wait().ok()
    }
}

impl Drop for PluginMoatd {
    fn drop(&mut self) {
        self.stop();
    }
}

/// `POST path` with `body` to the plugin at `socket` (`Connection: close`):
/// the status and the body.
pub fn post(socket: &Path, path: &str, body: &[u8]) -> std::io::Result<(u16, String)> {
    let mut s = UnixStream::connect(socket)?;
    s.set_read_timeout(Some(Duration::from_secs(60)))?;
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: plugin\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes())?;
    s.write_all(body)?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)?;
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    Ok((status, body.to_owned()))
}

/// The value of the sample `series` (e.g.
/// `moat_authz_requests_total{decision="deny",endpoint="containers/create"}`)
/// in a text exposition, 0 when absent.
pub fn sample(body: &str, series: &str) -> f64 {
    moat_api::exposition::Exposition::parse(body)
        .expect("a text exposition")
        .value(series)
        .unwrap_or(0.0)
}

/// Every `moat_authz_requests_total` series and its value.
pub fn authz_requests(body: &str) -> std::collections::BTreeMap<(String, String), f64> {
    let exposition = moat_api::exposition::Exposition::parse(body).expect("a text exposition");
    exposition
        .family(moat_api::metrics::AUTHZ_REQUESTS.name)
        .map(|s| {
            (
                (
                    s.label("decision").unwrap_or("").to_owned(),
                    s.label("endpoint").unwrap_or("").to_owned(),
                ),
                s.value,
            )
        })
        .collect()
}
