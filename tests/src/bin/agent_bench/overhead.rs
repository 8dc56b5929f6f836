//! Part 1, the overhead: the worker process that runs the workloads, the
//! variants (no agent, moatd, bpftrace and the empty-program floors) and the
//! interleaved rounds that time them.

use std::io::{Read as _, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use moat_tests::bench::{self, Row};
use moat_tests::results::{Goal, Value};

use super::floor::{self, Floor};
use super::piped::PipedChild;
use super::{
    Bpftrace, Config, Env, Moatd, GOAL_FATAL_GETPPID, GOAL_FORK, GOAL_GETPPID, GOAL_HASH,
    GOAL_OVER_FLOOR, HASH_BATCH, SETTLE,
};

// ---------------------------------------------------------------------------
// The worker process of the overhead workloads.

/// A process forked before anything else that runs a workload on request:
/// `g` the getppid loop, `f` the fork loop, `h` the hashing; it answers with
/// the duration in ns (`u64::MAX` on failure).
pub(super) struct Worker(PipedChild);

impl Worker {
    /// Forked while this process has no other thread yet.
    pub(super) fn start(calls: u64, forks: u64, files: Vec<PathBuf>) -> Result<Worker, String> {
        PipedChild::fork(|mut rd, mut wr| loop {
            let mut cmd = [0u8];
            if rd.read_exact(&mut cmd).is_err() {
                return 0;
            }
            let ns = match cmd[0] {
                b'g' => getppid_loop(calls),
                b'f' => fork_loop(forks),
                b'h' => hash_files(&files),
                _ => return 0,
            };
            if wr.write_all(&ns.to_ne_bytes()).is_err() {
                return 1;
            }
        })
        .map(Worker)
    }

    /// Runs workload `cmd`; its duration in ns.
    fn run(&self, cmd: u8) -> Result<f64, String> {
        let mut ns = [0u8; 8];
        let mut to = self.0.to.as_ref().ok_or("the worker has stopped")?;
        to.write_all(&[cmd])
            .and_then(|()| (&self.0.from).read_exact(&mut ns))
            .map_err(|e| format!("talking to the worker: {e}"))?;
        let ns = u64::from_ne_bytes(ns);
        if ns == u64::MAX {
            return Err(format!("workload {:?} failed in the worker", cmd as char));
        }
        Ok(ns as f64)
    }
}

impl Drop for Worker {
    /// Closing its pipe ends the worker's loop; it is reaped, not killed.
    fn drop(&mut self) {
        self.0.reap();
    }
}

fn getppid_loop(calls: u64) -> u64 {
    let t = Instant::now();
    for _ in 0..calls {
        // SAFETY: no arguments.
        std::hint::black_box(unsafe { libc::syscall(libc::SYS_getppid) });
    }
    t.elapsed().as_nanos() as u64
}

fn fork_loop(forks: u64) -> u64 {
    let t = Instant::now();
    for _ in 0..forks {
        // SAFETY: the child exits at once.
        let pid = unsafe { libc::fork() };
        if pid == 0 {
            // SAFETY: leaving the child.
            unsafe { libc::_exit(0) };
        }
        if pid < 0 {
            return u64::MAX;
        }
        // SAFETY: reaping our own child.
        unsafe { libc::waitpid(pid, std::ptr::null_mut(), 0) };
    }
    t.elapsed().as_nanos() as u64
}

fn hash_files(files: &[PathBuf]) -> u64 {
    let t = Instant::now();
    for chunk in files.chunks(HASH_BATCH) {
        let ok = Command::new("sha256sum")
            .args(chunk)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            return u64::MAX;
        }
    }
    t.elapsed().as_nanos() as u64
}

/// The regular files under /usr/share/doc, sorted, at most `max`.
pub(super) fn hash_file_list(max: usize) -> Result<Vec<PathBuf>, String> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for e in entries.filter_map(Result::ok) {
            let Ok(t) = e.file_type() else { continue };
            if t.is_dir() {
                walk(&e.path(), out);
            } else if t.is_file() {
                out.push(e.path());
            }
        }
    }
    let mut files = Vec::new();
    walk(Path::new("/usr/share/doc"), &mut files);
    files.sort();
    files.truncate(max);
    if files.is_empty() {
        return Err("no files under /usr/share/doc to hash".into());
    }
    Ok(files)
}

// ---------------------------------------------------------------------------
// Part 1: overhead.

/// The overhead variants, in column order; the `V_*` constants index it.
pub(super) const VARIANTS: [&str; 6] = [
    "no agent",
    "moatd",
    "bpftrace",
    "empty sys_exit",
    "empty sys_enter+sys_exit",
    "moatd fatal",
];
pub(super) const V_NONE: usize = 0;
pub(super) const V_MOATD: usize = 1;
pub(super) const V_BPFTRACE: usize = 2;
pub(super) const V_EXIT: usize = 3;
pub(super) const V_PAIR: usize = 4;
/// moatd with `[tracing] denials = "fatal"`: no program on any syscall.
pub(super) const V_FATAL: usize = 5;

/// An overhead workload.
pub(super) struct Workload {
    /// The figure's name in the report.
    pub(super) label: &'static str,
    /// Its name on the plot's x axis.
    pub(super) short: &'static str,
    /// The worker's command for it.
    cmd: u8,
    pub(super) unit: &'static str,
    /// The most moatd may cost, as a ratio to no agent (issue 4).
    pub(super) goal: f64,
}

pub(super) const WORKLOADS: [Workload; 3] = [
    Workload {
        label: "getppid loop",
        short: "getppid",
        cmd: b'g',
        unit: "ns/call",
        goal: GOAL_GETPPID,
    },
    Workload {
        label: "fork/exit/wait loop",
        short: "fork/exit",
        cmd: b'f',
        unit: "µs/iter",
        goal: GOAL_FORK,
    },
    Workload {
        label: "hash /usr/share/doc",
        short: "hash",
        cmd: b'h',
        unit: "ms",
        goal: GOAL_HASH,
    },
];

pub(super) struct Overhead {
    /// `samples[variant][workload]`, in the workload's unit, one per round.
    pub(super) samples: Vec<Vec<Vec<f64>>>,
    /// Why each variant did not run (`None`: it ran).
    pub(super) skipped: Vec<Option<String>>,
    pub(super) calls: u64,
    pub(super) forks: u64,
}

impl Overhead {
    /// Variant `v` on workload `w`: measured over the rounds, or skipped.
    pub(super) fn value(&self, v: usize, w: usize) -> Value {
        match &self.skipped[v] {
            Some(why) => Value::Skipped(why.clone()),
            None => Value::measured(&self.samples[v][w]),
        }
    }

    pub(super) fn median(&self, v: usize, w: usize) -> Option<f64> {
        self.value(v, w).median()
    }

    /// Median of `v` over median of `base` on workload `w`.
    fn ratio(&self, v: usize, base: usize, w: usize) -> Option<f64> {
        Some(self.median(v, w)? / self.median(base, w)?)
    }

    /// The goal of moatd on workload `w`: within the ratio to no agent, and
    /// cheaper than bpftrace (not judged when bpftrace was skipped, unless
    /// the ratio already misses).
    pub(super) fn goal(&self, w: usize) -> Goal {
        let wl = &WORKLOADS[w];
        let within = self.ratio(V_MOATD, V_NONE, w).map(|r| r <= wl.goal);
        let beats = match (self.median(V_MOATD, w), self.median(V_BPFTRACE, w)) {
            (Some(m), Some(b)) => Some(m < b),
            _ => None,
        };
        let met = match (within, beats) {
            (Some(false), _) | (_, Some(false)) => Some(false),
            (Some(true), Some(true)) => Some(true),
            _ => None,
        };
        Goal {
            text: format!("≤ {}× no agent and < bpftrace", wl.goal),
            met,
        }
    }

    /// moatd (the pairing here) over the empty-program floor on workload `w`.
    pub(super) fn goal_over_floor(&self, w: usize) -> Goal {
        Goal {
            text: format!("≤ {GOAL_OVER_FLOOR}× the floor"),
            met: self.ratio(V_MOATD, V_PAIR, w).map(|r| r <= GOAL_OVER_FLOOR),
        }
    }

    /// moatd's fatal tier against no agent on workload `w`.
    pub(super) fn goal_fatal(&self, w: usize) -> Goal {
        Goal {
            text: format!("≤ {GOAL_FATAL_GETPPID}× no agent"),
            met: self
                .ratio(V_FATAL, V_NONE, w)
                .map(|r| r <= GOAL_FATAL_GETPPID),
        }
    }

    pub(super) fn rows(&self, rows: &mut Vec<Row>) {
        for (w, wl) in WORKLOADS.iter().enumerate() {
            for (v, var) in VARIANTS.iter().enumerate() {
                let value = match self.median(v, w) {
                    Some(m) => format!("{m:.1} {}", wl.unit),
                    None => self.skipped_cell(v),
                };
                rows.push(Row::info(format!("{}, {var}", wl.label), value));
            }
            let goal = self.goal(w);
            rows.push(Row {
                goal: goal.text,
                met: goal.met.map_or("—", bench::yes_no).into(),
                ..Row::info(
                    format!("{}: moatd / no agent", wl.label),
                    self.ratio_cell(V_MOATD, V_NONE, w),
                )
            });
            for v in [V_BPFTRACE, V_EXIT, V_PAIR] {
                rows.push(Row::info(
                    format!("{}: {} / no agent", wl.label, VARIANTS[v]),
                    self.ratio_cell(v, V_NONE, w),
                ));
            }
            // The cost of moatd's own logic, over the machine's fixed price
            // of the tracepoints it attaches to; the syscall loop is where
            // that price dominates. And the fatal tier, which attaches to no
            // syscall hook at all.
            if w == 0 {
                let floor = self.goal_over_floor(w);
                rows.push(Row {
                    goal: floor.text,
                    met: floor.met.map_or("—", bench::yes_no).into(),
                    ..Row::info(
                        format!("{}: moatd / {}", wl.label, VARIANTS[V_PAIR]),
                        self.ratio_cell(V_MOATD, V_PAIR, w),
                    )
                });
                let fatal = self.goal_fatal(w);
                rows.push(Row {
                    goal: fatal.text,
                    met: fatal.met.map_or("—", bench::yes_no).into(),
                    ..Row::info(
                        format!("{}: {} / no agent", wl.label, VARIANTS[V_FATAL]),
                        self.ratio_cell(V_FATAL, V_NONE, w),
                    )
                });
            }
        }
    }

    fn ratio_cell(&self, v: usize, base: usize, w: usize) -> String {
        match self.ratio(v, base, w) {
            Some(r) => format!("{r:.3}×"),
            None => self.skipped_cell(if self.skipped[v].is_some() { v } else { base }),
        }
    }

    fn skipped_cell(&self, v: usize) -> String {
        format!(
            "skipped ({})",
            self.skipped[v].as_deref().unwrap_or("no runs")
        )
    }
}

/// What runs beside the workloads in one variant of a round.
enum Agent {
    None,
    Moatd(Moatd),
    Bpftrace(Bpftrace),
    Floor(floor::Attached),
}

impl Agent {
    /// Starts variant `v`'s agent and waits until it is ready.
    fn start(v: usize, env: &Env, ready_ms: &mut Vec<f64>) -> Result<Agent, String> {
        Ok(match v {
            V_MOATD => {
                let m = Moatd::start(env, "overhead")?;
                ready_ms.push(m.ready_ms);
                Agent::Moatd(m)
            }
            V_BPFTRACE => {
                let bin = env.bpftrace.as_ref().ok_or("bpftrace is not installed")?;
                Agent::Bpftrace(Bpftrace::start(env, bin)?)
            }
            V_FATAL => {
                let m = Moatd::start_with(env, "overhead-fatal", &env.config_fatal)?;
                ready_ms.push(m.ready_ms);
                Agent::Moatd(m)
            }
            V_EXIT => Agent::Floor(floor::Attached::attach(Floor::Exit)?),
            V_PAIR => Agent::Floor(floor::Attached::attach(Floor::Pair)?),
            _ => Agent::None,
        })
    }

    /// Stops the agent (the floor programs detach as their descriptors close).
    fn stop(self) -> Result<(), String> {
        match self {
            Agent::Moatd(m) => m.stop(),
            Agent::Bpftrace(b) => b.stop(),
            Agent::Floor(programs) => {
                drop(programs);
                Ok(())
            }
            Agent::None => Ok(()),
        }
    }
}

/// Why each variant cannot run here, `None` for those that can. The floor
/// is tried once (attached and detached) so that a kernel refusing it is
/// reported as a skipped variant with the kernel's answer.
fn overhead_skips(cfg: &Config, env: &Env) -> Vec<Option<String>> {
    let mut skipped = vec![None; VARIANTS.len()];
    if env.bpftrace.is_none() {
        skipped[V_BPFTRACE] = Some(if cfg.bpftrace {
            "bpftrace not installed".to_string()
        } else {
            "--no-bpftrace given".to_string()
        });
    }
    let floor = if cfg.floor {
        floor::Attached::attach(Floor::Pair)
            .err()
            .map(|e| format!("the kernel refused it: {e}"))
    } else {
        Some("--no-floor given".to_string())
    };
    skipped[V_EXIT] = floor.clone();
    skipped[V_PAIR] = floor;
    skipped
}

pub(super) fn overhead(
    cfg: &Config,
    env: &Env,
    worker: &Worker,
    ready_ms: &mut Vec<f64>,
) -> Result<Overhead, String> {
    let skipped = overhead_skips(cfg, env);
    let active: Vec<usize> = (0..VARIANTS.len())
        .filter(|&v| skipped[v].is_none())
        .collect();
    env.progress("overhead: warm-up pass without an agent (discarded)");
    for wl in &WORKLOADS {
        worker.run(wl.cmd)?;
    }
    let mut samples = vec![vec![Vec::new(); WORKLOADS.len()]; VARIANTS.len()];
    for round in 0..cfg.rounds {
        for k in 0..active.len() {
            let v = active[(round + k) % active.len()];
            env.progress(format_args!(
                "overhead round {}/{}: {}",
                round + 1,
                cfg.rounds,
                VARIANTS[v]
            ));
            let agent = Agent::start(v, env, ready_ms)?;
            // Every variant waits alike, so an agent's start-up work is over.
            std::thread::sleep(SETTLE);
            for (w, wl) in WORKLOADS.iter().enumerate() {
                let ns = worker.run(wl.cmd)?;
                let value = match w {
                    0 => ns / cfg.calls as f64,
                    1 => ns / 1e3 / cfg.forks as f64,
                    _ => ns / 1e6,
                };
                samples[v][w].push(value);
            }
            agent.stop()?;
        }
    }
    Ok(Overhead {
        samples,
        skipped,
        calls: cfg.calls,
        forks: cfg.forks,
    })
}
