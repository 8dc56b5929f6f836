//! `agent_bench`: what the node agent `moatd` costs the node and how it holds
//! up under load, side by side with a bpftrace script that counts the same
//! events.
//!
//! Run it as root with `scripts/bench.sh --only agent` (release build; installs
//! bpftrace; writes `docs/benchmarks-agent.md`) or directly; `--quick` is a
//! smoke run of a few seconds whose figures mean little (bpftrace is skipped
//! when it is not installed). The report (Markdown) goes to stdout, progress
//! to stderr; with `--json PATH` the same figures are also written to PATH as
//! `moat_tests::results::Results` (harness `agent`: sections "Tracing
//! overhead", "Agent under load" and "Scale of the exposition", plots
//! `overhead` and `metrics-scale`) for `bench_report`. The exit status is 0
//! only if every measurement ran and every sanity check passed. Every cgroup
//! it creates is removed, every process it starts is stopped and every eBPF
//! program it loads is detached, on failure too.
//!
//! # Method
//!
//! `moatd` is the binary next to this one (`--moatd` to override), started
//! as `moatd --config <tmp> --listen 127.0.0.1:<free port> --audit-log <tmp>`;
//! the temporary configuration only raises `workloads.max_labels` to 2000 so
//! that 1000 workloads keep their own labels (the default cap is 500). It is
//! *ready* at the first `GET /metrics` answered with 200 (moatd binds its
//! listener before loading the programs, so that request waits for them);
//! start-to-ready is measured from just before the spawn.
//!
//! **Overhead.** A worker process is forked at the very start, before any
//! agent exists, and runs the workloads on request: a loop of `getppid`
//! (raw `syscall`, ns/call), a fork/`_exit`/`waitpid` loop (µs/iteration),
//! and hashing a fixed file list (the regular files under `/usr/share/doc`,
//! sorted, not following symlinks) with `sha256sum` run as child processes
//! 64 files at a time, output discarded (wall time of the whole list). Five
//! variants: no agent; `moatd` running; `bpftrace` running the script shown
//! in the report (the closest bpftrace equivalent of moatd's counting:
//! per-tid enter/exit pairing with an unpaired exit counted as a denial per
//! (cgroup, syscall, return value), a forked child's first return marked as
//! paired, and fork/exec/exit counts per cgroup); and two floors, `empty
//! sys_exit` and `empty sys_enter+sys_exit`: raw-tracepoint programs of two
//! instructions (`r0 = 0; exit`) that the harness loads with bpf(2) and
//! attaches to those tracepoints (see `floor.rs`). The floors are what the
//! machine charges for running any program there: no agent on those
//! tracepoints can cost less, and moatd over the pair is the cost of its own
//! logic. Each round starts a variant's agent, waits for it to be ready
//! (bpftrace: its `BEGIN` probe has printed; a floor: attached) and 0.3 s
//! more (the no-agent variant waits too), runs the three workloads, and
//! stops it (SIGTERM for moatd, SIGINT for bpftrace, waited for; a floor's
//! descriptors are closed); the variants' order is rotated from round to
//! round so drifting noise hits all alike. One warm-up pass of the workloads
//! without an agent comes first (page cache) and is discarded. Figures are
//! medians over the rounds; ratios are medians over medians. moatd's goal
//! on each workload is a ratio to no agent *and* being cheaper than
//! bpftrace.
//!
//! **Storm.** A fresh moatd. After it is ready and 0.5 s idle, its `VmRSS`
//! is the idle RSS. A child compiled a filter with moat's engine (allow all,
//! `getppid` → `ERRNO(EACCES)`) before it was forked, is moved into the v2
//! cgroup `<v2 mount>/moat/bench-storm` (label `bench-storm`), installs the
//! filter and calls `getppid` N times, counting the `EACCES` it gets. While
//! it runs, a thread times `GET /metrics` every 50 ms. After it exits and
//! the audit log has stopped growing: the `moat_seccomp_denials_total`
//! series of `bench-storm` (must equal N exactly), the audit lines of that
//! workload, `moat_audit_events_dropped_total` by reason, moatd's CPU time
//! (utime + stime of `/proc/<pid>/stat`, after minus before the storm), its
//! `VmHWM` (peak RSS since its start) and `VmRSS`.
//!
//! **Many workloads.** For each level N, a fresh moatd, then N cgroups
//! `<v2 mount>/moat/bench-<i>`, each receiving a short child that forks and
//! reaps one grandchild (a counted process fork and two exits in that
//! cgroup). Then one untimed scrape (it attributes the N new cgroup ids:
//! reported as "first scrape"), then 20 timed `GET /metrics` (median, max),
//! the body size and the number of `bench-*` workload labels in it (must be
//! N). The cgroups are removed after each level. The latency goal (median
//! under 50 ms) is set for 1000 workloads and judged on every level of at
//! least that many.

use std::fmt::Write as _;
use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use moat_runtime::caps::CapSet;
use moat_runtime::seccomp::{compile, compile_for_host, load, parse, Source};
use moat_tests::bench::{self, Args, Row, Stats};
use moat_tests::results::Goal;
use moat_tests::which;

use overhead::{hash_file_list, overhead, Overhead, Worker, VARIANTS, WORKLOADS};
use piped::PipedChild;

mod floor;
mod json;
mod overhead;
mod piped;

/// Goals, from issue 4.
const GOAL_GETPPID: f64 = 1.35;
const GOAL_FORK: f64 = 1.03;
const GOAL_HASH: f64 = 1.01;
const GOAL_READY_MS: f64 = 500.0;
const GOAL_STORM_SCRAPE_MS: f64 = 100.0;
const GOAL_MANY_SCRAPE_MS: f64 = 50.0;
/// The workload count [`GOAL_MANY_SCRAPE_MS`] is set for.
const GOAL_MANY_AT: usize = 1000;

/// Files per `sha256sum` process in the hashing workload.
const HASH_BATCH: usize = 64;
/// Pause after an agent is ready (and in the no-agent variant too) before
/// the overhead workloads run.
const SETTLE: Duration = Duration::from_millis(300);
/// Name (label) of the storm workload's cgroup.
const STORM_NAME: &str = "bench-storm";
/// `errno` the storm's filter returns for `getppid`.
const STORM_ERRNO: i64 = libc::EACCES as i64;

/// The bpftrace script of the third overhead variant.
const BPFTRACE_SCRIPT: &str = r#"BEGIN { printf("READY\n"); }
tracepoint:raw_syscalls:sys_enter { @entered[tid] = 1; }
tracepoint:raw_syscalls:sys_exit
{
  if (@entered[tid]) { delete(@entered[tid]); }
  else { @denied[cgroup, args->id, args->ret] = count(); }
}
tracepoint:sched:sched_process_fork { @entered[args->child_pid] = 1; @forks[cgroup] = count(); }
tracepoint:sched:sched_process_exec { @execs[cgroup] = count(); }
tracepoint:sched:sched_process_exit { @exits[cgroup] = count(); }
END { clear(@entered); }
"#;

#[derive(Debug, Clone)]
struct Config {
    quick: bool,
    rounds: usize,
    calls: u64,
    forks: u64,
    hash_files: usize,
    storm: i64,
    levels: Vec<usize>,
    scrapes: usize,
    moatd: Option<PathBuf>,
    bpftrace: bool,
    floor: bool,
    json: Option<PathBuf>,
}

impl Config {
    fn full() -> Config {
        Config {
            quick: false,
            // Nine rounds of 4000 forks: the fork/exit loop is what the
            // VM's noise hits hardest, and its goal (1.03) is the tightest.
            rounds: 9,
            calls: 3_000_000,
            forks: 4_000,
            hash_files: usize::MAX,
            storm: 1_000_000,
            levels: vec![10, 100, 1000],
            scrapes: 20,
            moatd: None,
            bpftrace: true,
            floor: true,
            json: None,
        }
    }

    fn quick() -> Config {
        Config {
            quick: true,
            rounds: 1,
            calls: 200_000,
            forks: 100,
            hash_files: 128,
            storm: 20_000,
            levels: vec![3, 10],
            scrapes: 5,
            moatd: None,
            bpftrace: true,
            floor: true,
            json: None,
        }
    }
}

const USAGE: &str = "\
usage: agent_bench [--quick] [--rounds N] [--calls N] [--forks N] [--storm N]
                   [--levels N,N,...] [--moatd PATH] [--no-bpftrace] [--no-floor]
                   [--json PATH]

  --quick         tiny counts (a smoke run of a few seconds); bpftrace skipped if absent
  --rounds N      interleaved overhead rounds (default 9)
  --calls N       getppid calls per loop (default 3000000)
  --forks N       fork/exit/wait iterations per loop (default 4000)
  --storm N       denied syscalls in the storm (default 1000000)
  --levels LIST   workload counts for the /metrics scaling figure (default 10,100,1000)
  --moatd PATH    the moatd binary (default: next to this program)
  --no-bpftrace   skip the bpftrace variant
  --no-floor      skip the empty-program variants (empty sys_exit, empty sys_enter+sys_exit)
  --json PATH     also write the results for bench_report (moat_tests::results) to PATH

Needs root (eBPF, cgroups).";

fn parse_args(args: &mut Args) -> Result<Config, String> {
    let mut cfg = if args.quick() {
        Config::quick()
    } else {
        Config::full()
    };
    while let Some(a) = args.next_flag() {
        match a.as_str() {
            "--rounds" => cfg.rounds = args.positive(&a)?,
            "--calls" => cfg.calls = args.positive(&a)?,
            "--forks" => cfg.forks = args.positive(&a)?,
            "--storm" => cfg.storm = args.positive(&a)?,
            "--levels" => {
                let v = args.value(&a)?;
                cfg.levels = v
                    .split(',')
                    .map(|n| n.trim().parse::<usize>().ok().filter(|&n| n > 0))
                    .collect::<Option<_>>()
                    .ok_or_else(|| format!("--levels needs positive numbers, not {v:?}"))?;
            }
            "--moatd" => cfg.moatd = Some(PathBuf::from(args.value(&a)?)),
            "--no-bpftrace" => cfg.bpftrace = false,
            "--no-floor" => cfg.floor = false,
            "--json" => cfg.json = Some(args.output_path(&a)?),
            other => return Err(bench::unknown_flag(other)),
        }
    }
    Ok(cfg)
}

fn main() -> ExitCode {
    bench::main("agent_bench", USAGE, parse_args, run)
}

/// Where things are, and what the run created (removed on drop).
struct Env {
    moatd: PathBuf,
    bpftrace: Option<PathBuf>,
    /// `<v2 mount>/moat`.
    parent: PathBuf,
    created_parent: bool,
    tmp: PathBuf,
    config: PathBuf,
    started: Instant,
}

impl Drop for Env {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.tmp);
        if self.created_parent {
            let _ = std::fs::remove_dir(&self.parent);
        }
    }
}

impl Env {
    fn progress(&self, what: impl std::fmt::Display) {
        eprintln!("[{:6.1} s] {what}", self.started.elapsed().as_secs_f64());
    }
}

fn v2_mount() -> PathBuf {
    let unified = Path::new("/sys/fs/cgroup/unified");
    if unified.join("cgroup.procs").exists() {
        unified.to_path_buf()
    } else {
        PathBuf::from("/sys/fs/cgroup")
    }
}

fn run(cfg: Config) -> Result<String, String> {
    let started = Instant::now();
    if !nix::unistd::geteuid().is_root() {
        return Err("needs root (loading eBPF programs, creating cgroups)".into());
    }
    // The worker is forked first, while this process has no thread, no agent
    // and no descriptor worth inheriting.
    let files = hash_file_list(cfg.hash_files)?;
    let worker = Worker::start(cfg.calls, cfg.forks, files.clone())?;

    let moatd = match &cfg.moatd {
        Some(p) => p.clone(),
        None => std::env::current_exe()
            .map_err(|e| format!("current_exe: {e}"))?
            .with_file_name("moatd"),
    };
    if !moatd.is_file() {
        return Err(format!(
            "{} does not exist: build it (cargo build --release --bin moatd) or pass --moatd",
            moatd.display()
        ));
    }
    let bpftrace = if cfg.bpftrace {
        which("bpftrace")
    } else {
        None
    };
    if cfg.bpftrace && bpftrace.is_none() && !cfg.quick {
        return Err("bpftrace is not installed (scripts/setup.sh installs it); \
                    pass --no-bpftrace to skip that variant"
            .into());
    }
    let mount = v2_mount();
    if !mount.join("cgroup.procs").exists() {
        return Err(format!("no cgroup v2 hierarchy at {}", mount.display()));
    }
    let parent = mount.join("moat");
    let created_parent = !parent.exists();
    if created_parent {
        std::fs::create_dir(&parent).map_err(|e| format!("mkdir {}: {e}", parent.display()))?;
    }
    let tmp = std::env::temp_dir().join(format!("agent-bench-{}", std::process::id()));
    let env = Env {
        moatd,
        bpftrace,
        parent,
        created_parent,
        tmp: tmp.clone(),
        config: tmp.join("moatd.toml"),
        started,
    };
    std::fs::create_dir_all(&env.tmp).map_err(|e| format!("mkdir {}: {e}", tmp.display()))?;
    std::fs::write(&env.config, "[workloads]\nmax_labels = 2000\n")
        .map_err(|e| format!("writing {}: {e}", env.config.display()))?;
    std::fs::write(env.tmp.join("count.bt"), BPFTRACE_SCRIPT)
        .map_err(|e| format!("writing the bpftrace script: {e}"))?;
    for name in std::iter::once(STORM_NAME.to_string())
        .chain((0..cfg.levels.iter().copied().max().unwrap_or(0)).map(|i| format!("bench-{i}")))
    {
        if env.parent.join(&name).exists() {
            return Err(format!(
                "{} already exists (a workload of that name, or a previous run's leftover); \
                 remove it first",
                env.parent.join(&name).display()
            ));
        }
    }

    let mut ready_ms = Vec::new();
    let overhead = overhead(&cfg, &env, &worker, &mut ready_ms)?;
    drop(worker);
    let storm = storm(&cfg, &env, &mut ready_ms)?;
    let many = many_workloads(&cfg, &env, &mut ready_ms)?;
    env.progress("done");

    let m = Measured {
        overhead,
        storm,
        many,
        ready_ms,
        hash_files: files.len(),
    };
    let mut rows = Vec::new();
    let mut notes = Vec::new();
    m.overhead.rows(&mut rows);
    ready_rows(&m.ready_ms, &mut rows);
    m.storm.rows(&cfg, &mut rows, &mut notes);
    for level in &m.many {
        level.rows(&cfg, &mut rows);
    }
    let machine = machine(&env);
    let conditions = conditions(&cfg, &m, notes);
    let report = render(&cfg, &rows, &machine, &conditions, &m.overhead);
    if let Some(path) = &cfg.json {
        json::results(&cfg, &m, machine, conditions).write(path)?;
    }
    Ok(report)
}

/// Everything the run measured.
struct Measured {
    overhead: Overhead,
    storm: Storm,
    many: Vec<Many>,
    /// Start-to-ready of every moatd started, in ms.
    ready_ms: Vec<f64>,
    /// How many files the hashing workload hashes.
    hash_files: usize,
}

fn ready_rows(ready_ms: &[f64], rows: &mut Vec<Row>) {
    let ready = Stats::of(ready_ms);
    rows.push(Row::with_goal(
        format!(
            "Start-to-ready (spawn → first `/metrics` 200), median of {} starts",
            ready_ms.len()
        ),
        format!("{:.1} ms", ready.median),
        format!("< {GOAL_READY_MS} ms"),
        ready.median < GOAL_READY_MS,
    ));
    rows.push(Row::with_goal(
        "Start-to-ready, max",
        format!("{:.1} ms", ready.max),
        format!("< {GOAL_READY_MS} ms"),
        ready.max < GOAL_READY_MS,
    ));
}

// ---------------------------------------------------------------------------
// Agents.

/// A running moatd.
struct Moatd {
    child: Child,
    addr: SocketAddr,
    audit: PathBuf,
    log: PathBuf,
    ready_ms: f64,
}

impl Moatd {
    fn start(env: &Env, tag: &str) -> Result<Moatd, String> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(|e| format!("finding a free port: {e}"))?
            .port();
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let audit = env.tmp.join(format!("audit-{tag}.jsonl"));
        let log = env.tmp.join(format!("moatd-{tag}.log"));
        let log_file =
            std::fs::File::create(&log).map_err(|e| format!("creating {}: {e}", log.display()))?;
        let t = Instant::now();
        let child = Command::new(&env.moatd)
            .arg("--config")
            .arg(&env.config)
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

    fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(5)..].join(" / ")
    }

    fn metrics(&self) -> Result<Response, String> {
        let r = http_get(self.addr, "/metrics").map_err(|e| format!("GET /metrics: {e}"))?;
        if r.status != 200 {
            return Err(format!("GET /metrics: status {}", r.status));
        }
        Ok(r)
    }

    /// SIGTERM, then waits (SIGKILL after 10 s); an error unless it exited 0.
    fn stop(mut self) -> Result<(), String> {
        let status = stop_child(&mut self.child, libc::SIGTERM)?;
        if !status.success() {
            return Err(format!("moatd ended with {status}: {}", self.log_tail()));
        }
        Ok(())
    }
}

impl Drop for Moatd {
    fn drop(&mut self) {
        let _ = stop_child(&mut self.child, libc::SIGTERM);
    }
}

/// Sends `sig` and waits; SIGKILL after 10 s.
fn stop_child(child: &mut Child, sig: i32) -> Result<std::process::ExitStatus, String> {
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
struct Bpftrace {
    child: Child,
}

impl Bpftrace {
    fn start(env: &Env, bin: &Path) -> Result<Bpftrace, String> {
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

    fn stop(mut self) -> Result<(), String> {
        stop_child(&mut self.child, libc::SIGINT).map(|_| ())
    }
}

impl Drop for Bpftrace {
    fn drop(&mut self) {
        let _ = stop_child(&mut self.child, libc::SIGINT);
    }
}

// ---------------------------------------------------------------------------
// HTTP.

struct Response {
    status: u16,
    body: String,
}

/// `GET path` with `Connection: close`.
fn http_get(addr: SocketAddr, path: &str) -> std::io::Result<Response> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)?;
    let raw = String::from_utf8_lossy(&raw);
    let (head, body) = raw.split_once("\r\n\r\n").unwrap_or((&raw, ""));
    let status = head
        .lines()
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    Ok(Response {
        status,
        body: body.to_string(),
    })
}

/// Sum of the samples of `metric` whose label set contains every `labels`
/// pair (`key="value"`); `None` when there is none.
fn sample_sum(body: &str, metric: &str, labels: &[&str]) -> Option<f64> {
    let mut found = None;
    for line in body.lines() {
        let Some(rest) = line.strip_prefix(metric) else {
            continue;
        };
        let (set, value) = if let Some(r) = rest.strip_prefix('{') {
            match r.split_once("} ") {
                Some(x) => x,
                None => continue,
            }
        } else if let Some(v) = rest.strip_prefix(' ') {
            ("", v)
        } else {
            continue;
        };
        let parts: Vec<&str> = set.split(',').collect();
        if labels.iter().all(|l| parts.contains(l)) {
            if let Ok(v) = value.trim().parse::<f64>() {
                *found.get_or_insert(0.0) += v;
            }
        }
    }
    found
}

// ---------------------------------------------------------------------------
// Cgroups.

/// Cgroup directories made by the run; processes left in them are killed
/// and the directories removed on drop.
struct Cgroups {
    dirs: Vec<PathBuf>,
}

impl Cgroups {
    fn new() -> Cgroups {
        Cgroups { dirs: Vec::new() }
    }

    fn create(&mut self, path: PathBuf) -> Result<&Path, String> {
        std::fs::create_dir(&path).map_err(|e| format!("mkdir {}: {e}", path.display()))?;
        self.dirs.push(path);
        Ok(self.dirs.last().expect("just pushed"))
    }

    fn remove_all(&mut self) -> Result<(), String> {
        let mut failed = Vec::new();
        for dir in self.dirs.drain(..) {
            if let Err(e) = remove_cgroup(&dir) {
                failed.push(format!("{}: {e}", dir.display()));
            }
        }
        if failed.is_empty() {
            Ok(())
        } else {
            Err(format!("cannot remove cgroups: {}", failed.join("; ")))
        }
    }
}

impl Drop for Cgroups {
    fn drop(&mut self) {
        let _ = self.remove_all();
    }
}

fn remove_cgroup(dir: &Path) -> std::io::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let procs = std::fs::read_to_string(dir.join("cgroup.procs")).unwrap_or_default();
        for pid in procs.lines().filter_map(|l| l.trim().parse::<i32>().ok()) {
            // SAFETY: plain kill(2) of a process in our own cgroup.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
        match std::fs::remove_dir(dir) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) if Instant::now() > deadline => return Err(e),
            Err(_) => std::thread::sleep(Duration::from_millis(10)),
        }
    }
}

/// A forked child stopped on a pipe until [`Held::release`]; it then runs
/// `body` and exits with its result.
struct Held(PipedChild);

impl Held {
    /// `body` gets the write end of the result pipe.
    fn fork(body: impl FnOnce(&mut std::fs::File) -> i32) -> Result<Held, String> {
        PipedChild::fork(|mut go, mut out| {
            let mut b = [0u8];
            if go.read_exact(&mut b).is_ok() {
                body(&mut out)
            } else {
                1
            }
        })
        .map(Held)
    }

    fn join(&self, cgroup: &Path) -> Result<(), String> {
        let pid = self.0.pid();
        std::fs::write(cgroup.join("cgroup.procs"), pid.to_string())
            .map_err(|e| format!("moving {pid} into {}: {e}", cgroup.display()))
    }

    fn release(&mut self) -> Result<(), String> {
        let mut go = self.0.to.take().ok_or("released twice")?;
        go.write_all(b"g")
            .map_err(|e| format!("releasing the child: {e}"))
    }

    /// Waits for the child; its output and whether it exited 0.
    fn wait(mut self) -> Result<String, String> {
        let mut out = String::new();
        let _ = self.0.from.read_to_string(&mut out);
        let status = self.0.reap();
        if libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0 {
            Ok(out)
        } else {
            Err(format!("child ended with wait status {status:#x}: {out}"))
        }
    }
}

// ---------------------------------------------------------------------------
// /proc.

/// utime + stime of `pid`, in ms.
fn cpu_ms(pid: i32) -> Result<f64, String> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map_err(|e| format!("/proc/{pid}/stat: {e}"))?;
    // Fields after the parenthesised command: state is field 3; utime and
    // stime are fields 14 and 15.
    let rest = stat.rsplit_once(')').ok_or("bad /proc/pid/stat")?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok());
    let (u, s) = (ticks(11), ticks(12));
    // SAFETY: sysconf takes an integer.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    match (u, s) {
        (Some(u), Some(s)) => Ok((u + s) * 1e3 / hz),
        _ => Err("bad /proc/pid/stat".into()),
    }
}

/// A `kB` field of /proc/<pid>/status, in MiB.
fn status_mib(pid: i32, field: &str) -> Result<f64, String> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .map_err(|e| format!("/proc/{pid}/status: {e}"))?;
    text.lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
        .map(|kb| kb / 1024.0)
        .ok_or_else(|| format!("no {field} in /proc/{pid}/status"))
}

// ---------------------------------------------------------------------------
// Part 2 and 3: the storm, RSS.

struct Storm {
    seen: i64,
    counted: Option<f64>,
    secs: f64,
    audit_lines: usize,
    audit_lines_total: usize,
    dropped: Vec<(String, f64)>,
    cpu_ms: f64,
    rss_idle: f64,
    rss_after: f64,
    hwm: f64,
    scrape_ms: Vec<f64>,
    scrape_errors: usize,
}

impl Storm {
    fn rows(&self, cfg: &Config, rows: &mut Vec<Row>, notes: &mut Vec<String>) {
        rows.push(Row::with_goal(
            "Storm: denials the workload saw",
            format!("{}", self.seen),
            format!("= {}", cfg.storm),
            self.seen == cfg.storm,
        ));
        let counted = self.counted.unwrap_or(f64::NAN);
        rows.push(Row::with_goal(
            format!("Storm: `moat_seccomp_denials_total{{workload=\"{STORM_NAME}\"}}`"),
            format!("{counted:.0}"),
            format!("= {} exactly", cfg.storm),
            counted == cfg.storm as f64,
        ));
        rows.push(Row::info(
            "Storm: duration",
            format!(
                "{:.0} ms ({:.0} denials/s)",
                self.secs * 1e3,
                cfg.storm as f64 / self.secs
            ),
        ));
        rows.push(Row::info(
            "Storm: audit events delivered (audit log lines of the workload)",
            format!("{}", self.audit_lines),
        ));
        let total: f64 = self.dropped.iter().map(|(_, n)| n).sum();
        let by: Vec<String> = self
            .dropped
            .iter()
            .filter(|(_, n)| *n > 0.0)
            .map(|(r, n)| format!("{r} {n:.0}"))
            .collect();
        rows.push(Row::info(
            "Storm: audit events dropped (`moat_audit_events_dropped_total`, all reasons)",
            if by.is_empty() {
                format!("{total:.0}")
            } else {
                format!("{total:.0} ({})", by.join(", "))
            },
        ));
        rows.push(Row::info(
            "Storm: moatd CPU time (utime+stime)",
            format!(
                "{:.0} ms ({:.1}% of one CPU over the storm)",
                self.cpu_ms,
                self.cpu_ms / (self.secs * 1e3) * 100.0
            ),
        ));
        let s = Stats::of(&self.scrape_ms);
        rows.push(Row::with_goal(
            format!(
                "Storm: `/metrics` latency, max of {} samples (every 50 ms)",
                self.scrape_ms.len()
            ),
            format!("{:.1} ms", s.max),
            format!("< {GOAL_STORM_SCRAPE_MS} ms"),
            s.max < GOAL_STORM_SCRAPE_MS && self.scrape_errors == 0 && !self.scrape_ms.is_empty(),
        ));
        rows.push(Row::info(
            "Storm: `/metrics` latency, p50",
            format!("{:.1} ms", s.median),
        ));
        rows.push(Row::info(
            "RSS at idle (VmRSS after start)",
            format!("{:.1} MiB", self.rss_idle),
        ));
        rows.push(Row::info(
            "RSS after the storm (VmRSS)",
            format!("{:.1} MiB", self.rss_after),
        ));
        rows.push(Row::info(
            "Peak RSS through the storm (VmHWM)",
            format!("{:.1} MiB", self.hwm),
        ));
        notes.push(format!(
            "Storm audit log: {} lines of `{STORM_NAME}` out of {} in all; the rest are other \
             processes of the node (which the agent sees too).",
            self.audit_lines, self.audit_lines_total
        ));
        if self.scrape_errors > 0 {
            notes.push(format!(
                "{} `/metrics` requests failed during the storm.",
                self.scrape_errors
            ));
        }
    }
}

fn storm_filter() -> Result<(moat_runtime::seccomp::bpf::Program, u32), String> {
    let json = format!(
        r#"{{"defaultAction": "SCMP_ACT_ALLOW",
            "archMap": [{{"architecture": "SCMP_ARCH_X86_64",
                          "subArchitectures": ["SCMP_ARCH_X86", "SCMP_ARCH_X32"]}}],
            "syscalls": [{{"names": ["getppid"], "action": "SCMP_ACT_ERRNO", "errnoRet": {STORM_ERRNO}}}]}}"#
    );
    let source = Source::Builtin("agent_bench storm");
    let profile = parse::from_str(&json, source.clone()).map_err(|e| e.to_string())?;
    let (_, c) = compile_for_host(
        &profile,
        source,
        &CapSet::docker_default(),
        compile::Options::default(),
    )
    .map_err(|e| e.to_string())?;
    Ok((c.program, c.flags))
}

fn storm(cfg: &Config, env: &Env, ready_ms: &mut Vec<f64>) -> Result<Storm, String> {
    env.progress(format_args!(
        "storm: starting moatd, then {} denied syscalls",
        cfg.storm
    ));
    let moatd = Moatd::start(env, "storm")?;
    ready_ms.push(moatd.ready_ms);
    std::thread::sleep(Duration::from_millis(500));
    let pid = moatd.pid();
    let rss_idle = status_mib(pid, "VmRSS")?;

    let (program, flags) = storm_filter()?;
    let mut cgroups = Cgroups::new();
    let dir = cgroups.create(env.parent.join(STORM_NAME))?.to_path_buf();
    let n = cfg.storm;
    let mut child = Held::fork(move |out| {
        if load::set_no_new_privs().is_err() || load::install(&program, flags).is_err() {
            let _ = write!(out, "installing the filter failed");
            return 1;
        }
        let mut denied = 0i64;
        for _ in 0..n {
            // SAFETY: no arguments.
            let r = unsafe { libc::syscall(libc::SYS_getppid) };
            if r == -1 && std::io::Error::last_os_error().raw_os_error() == Some(STORM_ERRNO as i32)
            {
                denied += 1;
            }
        }
        let _ = write!(out, "{denied}");
        0
    })?;
    child.join(&dir)?;

    let cpu_before = cpu_ms(pid)?;
    let done = Arc::new(AtomicBool::new(false));
    let sampler = {
        let done = done.clone();
        let addr = moatd.addr;
        std::thread::spawn(move || {
            let (mut lat, mut errors) = (Vec::new(), 0usize);
            let mut next = Instant::now();
            while !done.load(Ordering::SeqCst) {
                let t = Instant::now();
                match http_get(addr, "/metrics") {
                    Ok(r) if r.status == 200 => lat.push(bench::ms(t.elapsed())),
                    _ => errors += 1,
                }
                next += Duration::from_millis(50);
                let now = Instant::now();
                if next > now {
                    std::thread::sleep(next - now);
                } else {
                    next = now;
                }
            }
            (lat, errors)
        })
    };
    let t = Instant::now();
    child.release()?;
    let out = child.wait();
    let secs = t.elapsed().as_secs_f64();
    done.store(true, Ordering::SeqCst);
    let (scrape_ms, scrape_errors) = sampler.join().map_err(|_| "the sampler panicked")?;
    let seen: i64 = out?
        .trim()
        .parse()
        .map_err(|_| "the storm child reported no count")?;

    // Let the audit writer catch up: the log must not grow for 300 ms.
    let lines = |p: &Path| -> (usize, usize) {
        let text = std::fs::read_to_string(p).unwrap_or_default();
        let mut ours = 0;
        let mut all = 0;
        for l in text.lines() {
            all += 1;
            if serde_json::from_str::<serde_json::Value>(l)
                .ok()
                .is_some_and(|v| v["workload"]["name"] == STORM_NAME)
            {
                ours += 1;
            }
        }
        (ours, all)
    };
    let mut last = std::fs::metadata(&moatd.audit)
        .map(|m| m.len())
        .unwrap_or(0);
    let mut stable_since = Instant::now();
    let settle = Instant::now();
    while stable_since.elapsed() < Duration::from_millis(300)
        && settle.elapsed() < Duration::from_secs(10)
    {
        std::thread::sleep(Duration::from_millis(50));
        let len = std::fs::metadata(&moatd.audit)
            .map(|m| m.len())
            .unwrap_or(0);
        if len != last {
            last = len;
            stable_since = Instant::now();
        }
    }
    let cpu = cpu_ms(pid)? - cpu_before;
    let (audit_lines, audit_lines_total) = lines(&moatd.audit);
    let body = moatd.metrics()?.body;
    let label = format!("workload=\"{STORM_NAME}\"");
    let counted = sample_sum(&body, "moat_seccomp_denials_total", &[&label]);
    let dropped = ["rate_limited", "buffer_full", "write_failed"]
        .iter()
        .map(|r| {
            let l = format!("reason=\"{r}\"");
            (
                r.to_string(),
                sample_sum(&body, "moat_audit_events_dropped_total", &[&l]).unwrap_or(0.0),
            )
        })
        .collect();
    let rss_after = status_mib(pid, "VmRSS")?;
    let hwm = status_mib(pid, "VmHWM")?;
    moatd.stop()?;
    cgroups.remove_all()?;
    env.progress(format_args!(
        "storm: {seen} denials seen in {secs:.2} s, {} counted",
        counted.unwrap_or(f64::NAN)
    ));
    Ok(Storm {
        seen,
        counted,
        secs,
        audit_lines,
        audit_lines_total,
        dropped,
        cpu_ms: cpu,
        rss_idle,
        rss_after,
        hwm,
        scrape_ms,
        scrape_errors,
    })
}

// ---------------------------------------------------------------------------
// Part 4: /metrics with many workloads.

struct Many {
    n: usize,
    first_ms: f64,
    /// The timed scrapes, in ms.
    scrape_ms: Vec<f64>,
    bytes: usize,
    series: usize,
    labels: usize,
    setup_s: f64,
}

impl Many {
    /// The latency goal, set for [`GOAL_MANY_AT`] workloads and judged on
    /// every level at least that large (more workloads only make it harder).
    fn goal(&self) -> Option<Goal> {
        (self.n >= GOAL_MANY_AT).then(|| Goal {
            text: format!("< {GOAL_MANY_SCRAPE_MS} ms (median)"),
            met: Some(Stats::of(&self.scrape_ms).median < GOAL_MANY_SCRAPE_MS),
        })
    }

    fn rows(&self, cfg: &Config, rows: &mut Vec<Row>) {
        let scrape = Stats::of(&self.scrape_ms);
        let label = format!(
            "`/metrics` latency with {} workloads, median of {}",
            self.n, cfg.scrapes
        );
        let value = format!("{:.1} ms (max {:.1})", scrape.median, scrape.max);
        match self.goal() {
            Some(g) => rows.push(Row::with_goal(label, value, g.text, g.met == Some(true))),
            None => rows.push(Row::info(label, value)),
        }
        rows.push(Row::info(
            format!("`/metrics` first scrape with {} new workloads", self.n),
            format!("{:.1} ms", self.first_ms),
        ));
        rows.push(Row::info(
            format!("`/metrics` body with {} workloads", self.n),
            format!("{} bytes, {} series", self.bytes, self.series),
        ));
        rows.push(Row::with_goal(
            format!(
                "`bench-*` workload labels in `/metrics` with {} workloads",
                self.n
            ),
            format!("{}", self.labels),
            format!("= {}", self.n),
            self.labels == self.n,
        ));
        let _ = self.setup_s;
    }
}

fn many_workloads(cfg: &Config, env: &Env, ready_ms: &mut Vec<f64>) -> Result<Vec<Many>, String> {
    let mut out = Vec::new();
    for &n in &cfg.levels {
        env.progress(format_args!("/metrics with {n} workloads: starting moatd"));
        let moatd = Moatd::start(env, &format!("many-{n}"))?;
        ready_ms.push(moatd.ready_ms);
        let mut cgroups = Cgroups::new();
        let t = Instant::now();
        for i in 0..n {
            let dir = cgroups
                .create(env.parent.join(format!("bench-{i}")))?
                .to_path_buf();
            let mut child = Held::fork(|_| {
                // SAFETY: the grandchild exits at once; reaping it.
                unsafe {
                    let pid = libc::fork();
                    if pid == 0 {
                        libc::_exit(0);
                    }
                    if pid < 0 {
                        return 1;
                    }
                    libc::waitpid(pid, std::ptr::null_mut(), 0);
                }
                0
            })?;
            child.join(&dir)?;
            child.release()?;
            child.wait()?;
        }
        let setup_s = t.elapsed().as_secs_f64();
        env.progress(format_args!(
            "{n} workloads made in {setup_s:.1} s; scraping"
        ));
        let t = Instant::now();
        moatd.metrics()?;
        let first_ms = bench::ms(t.elapsed());
        let mut lat = Vec::new();
        let mut body = String::new();
        for _ in 0..cfg.scrapes {
            let t = Instant::now();
            body = moatd.metrics()?.body;
            lat.push(bench::ms(t.elapsed()));
        }
        let mut names: Vec<&str> = body
            .lines()
            .filter_map(|l| l.split_once("workload=\"bench-")?.1.split_once('"'))
            .map(|(n, _)| n)
            .filter(|n| n.parse::<usize>().is_ok())
            .collect();
        names.sort_unstable();
        names.dedup();
        out.push(Many {
            n,
            first_ms,
            scrape_ms: lat,
            bytes: body.len(),
            series: body
                .lines()
                .filter(|l| !l.starts_with('#') && !l.is_empty())
                .count(),
            labels: names.len(),
            setup_s,
        });
        moatd.stop()?;
        cgroups.remove_all()?;
    }
    Ok(out)
}

// ---------------------------------------------------------------------------
// The report.

/// The machine and the peers' versions, for the report and the JSON.
fn machine(env: &Env) -> Vec<(String, String)> {
    let mut machine = bench::machine();
    machine.push((
        "bpftrace".into(),
        env.bpftrace
            .as_ref()
            .and_then(|b| Command::new(b).arg("--version").output().ok())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .unwrap_or_else(|| "not installed".into()),
    ));
    machine.push(("moatd".into(), format!("`{}`", env.moatd.display())));
    machine
}

/// How the figures were made, one sentence each (the report's
/// `### Conditions` items and the JSON's `conditions`); `notes` last.
fn conditions(cfg: &Config, m: &Measured, notes: Vec<String>) -> Vec<String> {
    let o = &m.overhead;
    let mut c = vec![
        format!(
            "Mode: {}; build: {}.",
            bench::mode(cfg.quick),
            bench::build()
        ),
        format!(
            "Overhead: {} interleaved rounds (variant order rotated per round) after one \
             discarded pass without an agent; each round starts the variant's agent, runs {} \
             `getppid` calls, {} fork/`_exit`/`waitpid` iterations and `sha256sum` over {} \
             files of `/usr/share/doc` ({} per process), then stops the agent. Figures are \
             medians over the rounds. The workloads run in a process forked before any agent, \
             in the harness's own cgroup (attributed to `host`).",
            cfg.rounds, o.calls, o.forks, m.hash_files, HASH_BATCH
        ),
        "Floor variants: `empty sys_exit` and `empty sys_enter+sys_exit` attach raw-tracepoint \
         programs of two instructions (`r0 = 0; exit`), loaded with bpf(2) by the harness \
         itself, to those tracepoints: the fixed price this machine charges for running any \
         program there, which no agent goes below. `moatd / empty sys_enter+sys_exit` is the \
         cost of moatd's own logic over that floor."
            .to_string(),
        "Overhead plot: each bar is a variant's median over the no-agent median of the same \
         workload; its error bar spans the variant's fastest and slowest round over that same \
         no-agent median."
            .to_string(),
        format!(
            "moatd runs with `workloads.max_labels = 2000` (so {} workloads keep their labels), \
             everything else at its defaults (audit: 100/s per cgroup after a burst of 200).",
            cfg.levels.iter().copied().max().unwrap_or(0)
        ),
        format!(
            "Storm: {} `getppid` calls denied with `EACCES` by a filter compiled by moat's \
             engine, one process in `<v2 mount>/moat/{STORM_NAME}`; `/metrics` timed every 50 ms \
             meanwhile from another thread ({} samples).",
            cfg.storm,
            m.storm.scrape_ms.len()
        ),
        format!(
            "Many workloads: for each of {:?}, a fresh moatd and that many cgroups \
             `<v2 mount>/moat/bench-<i>`, each given a child that forks once; one untimed \
             scrape, then {} timed ones.",
            cfg.levels, cfg.scrapes
        ),
        "The machine is a 2-CPU VM shared with other work: the agent, the workloads and the \
         scrapes compete for the same CPUs."
            .to_string(),
    ];
    c.extend(notes);
    c
}

/// The Markdown report: the table, the machine, the conditions, the
/// per-round overhead values and the bpftrace script.
fn render(
    cfg: &Config,
    rows: &[Row],
    machine: &[(String, String)],
    conditions: &[String],
    o: &Overhead,
) -> String {
    let mut s = String::new();
    bench::write_table(&mut s, rows);
    bench::write_machine(&mut s, machine);
    bench::write_conditions(&mut s, conditions);

    let _ = writeln!(s, "\n### Overhead, per-round values\n");
    bench::write_round_header(&mut s, cfg.rounds);
    for (w, wl) in WORKLOADS.iter().enumerate() {
        for (v, var) in VARIANTS.iter().enumerate() {
            if o.samples[v][w].is_empty() {
                continue;
            }
            let _ = write!(s, "| {} ({}) | {var} |", wl.label, wl.unit);
            for x in &o.samples[v][w] {
                let _ = write!(s, " {x:.1} |");
            }
            let _ = writeln!(s);
        }
    }

    let _ = writeln!(s, "\n### The bpftrace script (variant `bpftrace`)\n");
    let _ = writeln!(
        s,
        "The closest bpftrace equivalent of what moatd counts: an unpaired `sys_exit` is a \
         denial, counted per (cgroup, syscall, return value); a new task's first return is \
         marked as paired; forks, execs and exits are counted per cgroup. bpftrace has only \
         hash maps (moatd uses a tid-indexed array and per-CPU hash maps), and it does not skip \
         threads already blocked in a syscall when it attaches.\n"
    );
    let _ = writeln!(s, "```\n{}```", BPFTRACE_SCRIPT);
    s
}
