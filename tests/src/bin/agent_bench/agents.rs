//! The agents under test: moatd, and bpftrace as a peer.

use super::*;

/// A running moatd.
pub(super) struct Moatd {
    pub(super) child: Child,
    /// Its private pin directory (`MOAT_BPF_DIR`), removed on drop: each
    /// start loads fresh programs, and none stays attached after the bench.
    pins: PathBuf,
    pub(super) addr: SocketAddr,
    pub(super) audit: PathBuf,
    pub(super) log: PathBuf,
    pub(super) ready_ms: f64,
}

impl Moatd {
    pub(super) fn start(env: &Env, tag: &str) -> Result<Moatd, String> {
        Self::start_with(env, tag, &env.config)
    }

    /// Starts moatd with the configuration file `config`.
    pub(super) fn start_with(env: &Env, tag: &str, config: &Path) -> Result<Moatd, String> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(|e| format!("finding a free port: {e}"))?
            .port();
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let audit = env.tmp.join(format!("audit-{tag}.jsonl"));
        let log = env.tmp.join(format!("moatd-{tag}.log"));
        let log_file =
            std::fs::File::create(&log).map_err(|e| format!("creating {}: {e}", log.display()))?;
        static STARTED: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let pins = PathBuf::from(format!(
            "/sys/fs/bpf/moat-bench-{}-{}",
            std::process::id(),
            STARTED.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        ));
        let t = Instant::now();
        let child = Command::new(&env.moatd)
            .env("MOAT_BPF_DIR", &pins)
            .arg("--config")
            .arg(config)
            .arg("--listen")
            .arg(addr.to_string())
            .arg("--audit-log")
            .arg(&audit)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log_file)
            .spawn()
            .map_err(|e| format!("starting {}: {e}", env.moatd.display()))?;
        let mut m = Moatd {
            child,
            pins,
            addr,
            audit,
            log,
            ready_ms: f64::NAN,
        };
        loop {
            if let Ok(r) = http_get(addr, "/metrics") {
                if r.status == 200 {
                    m.ready_ms = bench::ms(t.elapsed());
                    return Ok(m);
                }
            }
            if let Ok(Some(status)) = m.child.try_wait() {
                return Err(format!(
                    "moatd exited at start ({status}): {}",
                    m.log_tail()
                ));
            }
            if t.elapsed() > Duration::from_secs(20) {
                return Err(format!("moatd not ready after 20 s: {}", m.log_tail()));
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    pub(super) fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    pub(super) fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(5)..].join(" / ")
    }

    /// The body of `GET /metrics`.
    pub(super) fn metrics(&self) -> Result<String, String> {
        let r = http_get(self.addr, "/metrics").map_err(|e| format!("GET /metrics: {e}"))?;
        if r.status != 200 {
            return Err(format!("GET /metrics: status {}", r.status));
        }
        Ok(r.body)
    }

    /// SIGTERM, then waits (SIGKILL after 10 s); an error unless it exited 0.
    pub(super) fn stop(mut self) -> Result<(), String> {
        let status = stop_child(&mut self.child, libc::SIGTERM)?;
        if !status.success() {
            return Err(format!("moatd ended with {status}: {}", self.log_tail()));
        }
        Ok(())
    }
}

impl Drop for Moatd {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = stop_child(&mut self.child, libc::SIGTERM);
        }
        moat_tests::moatd::remove_pins(&self.pins);
    }
}

/// Sends `sig` and waits; SIGKILL after 10 s.
pub(super) fn stop_child(child: &mut Child, sig: i32) -> Result<std::process::ExitStatus, String> {
    if let Ok(Some(s)) = child.try_wait() {
        return Ok(s);
    }
    // SAFETY: signalling our own child, not yet reaped.
    unsafe { libc::kill(child.id() as i32, sig) };
    let t = Instant::now();
    loop {
        match child.try_wait() {
            Ok(Some(s)) => return Ok(s),
            Ok(None) if t.elapsed() > Duration::from_secs(10) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("pid {} ignored signal {sig}; killed", child.id()));
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(5)),
            Err(e) => return Err(format!("waiting for pid {}: {e}", child.id())),
        }
    }
}

/// A running bpftrace with the counting script.
pub(super) struct Bpftrace {
    pub(super) child: Child,
}

impl Bpftrace {
    pub(super) fn start(env: &Env, bin: &Path) -> Result<Bpftrace, String> {
        let out = env.tmp.join("bpftrace.out");
        let err = env.tmp.join("bpftrace.err");
        let file = |p: &Path| std::fs::File::create(p).map_err(|e| format!("{}: {e}", p.display()));
        let t = Instant::now();
        let child = Command::new(bin)
            .arg(env.tmp.join("count.bt"))
            .stdin(Stdio::null())
            .stdout(file(&out)?)
            .stderr(file(&err)?)
            .spawn()
            .map_err(|e| format!("starting bpftrace: {e}"))?;
        let mut b = Bpftrace { child };
        loop {
            if std::fs::read_to_string(&out).is_ok_and(|t| t.contains("READY")) {
                return Ok(b);
            }
            if let Ok(Some(s)) = b.child.try_wait() {
                return Err(format!(
                    "bpftrace exited at start ({s}): {}",
                    std::fs::read_to_string(&err).unwrap_or_default().trim()
                ));
            }
            if t.elapsed() > Duration::from_secs(60) {
                return Err("bpftrace not attached after 60 s".into());
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    pub(super) fn stop(mut self) -> Result<(), String> {
        stop_child(&mut self.child, libc::SIGINT).map(|_| ())
    }
}

impl Drop for Bpftrace {
    fn drop(&mut self) {
        let _ = stop_child(&mut self.child, libc::SIGINT);
    }
}
