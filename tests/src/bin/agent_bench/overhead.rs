//! Part 1, the overhead: the workloads, the variants (no agent, moatd,
//! bpftrace and the empty-program floors) and the interleaved rounds that
//! time them (in the worker process, `worker.rs`).

use moat_tests::bench::{self, Row};
use moat_tests::results::{Goal, Value};

use super::floor::{self, Floor};
use super::worker::Worker;
use super::{
    Bpftrace, Config, Env, Moatd, GOAL_FATAL_GETPPID, GOAL_FORK, GOAL_GETPPID, GOAL_HASH,
    GOAL_OVER_FLOOR, SETTLE,
};

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
    /// What one measurement is divided into to give the unit.
    per: Per,
    /// The most moatd may cost, as a ratio to no agent (issue 4); none for
    /// a workload measured to show a cost rather than to meet a goal.
    pub(super) goal: Option<f64>,
}

/// The divisor of a workload's duration.
enum Per {
    /// ns per getppid call.
    Call,
    /// µs per fork iteration.
    Fork,
    /// µs per ping-pong round trip.
    RoundTrip,
    /// ms for the whole workload.
    Whole,
}

pub(super) const WORKLOADS: [Workload; 4] = [
    Workload {
        label: "getppid loop",
        short: "getppid",
        cmd: b'g',
        unit: "ns/call",
        per: Per::Call,
        goal: Some(GOAL_GETPPID),
    },
    Workload {
        label: "fork/exit/wait loop",
        short: "fork/exit",
        cmd: b'f',
        unit: "µs/iter",
        per: Per::Fork,
        goal: Some(GOAL_FORK),
    },
    Workload {
        label: "hash /usr/share/doc",
        short: "hash",
        cmd: b'h',
        unit: "ms",
        per: Per::Whole,
        goal: Some(GOAL_HASH),
    },
    Workload {
        label: "pipe ping-pong on one CPU",
        short: "ping-pong",
        cmd: b'p',
        unit: "µs/round trip",
        per: Per::RoundTrip,
        goal: None,
    },
];

pub(super) struct Overhead {
    /// `samples[variant][workload]`, in the workload's unit, one per round.
    pub(super) samples: Vec<Vec<Vec<f64>>>,
    /// Why each variant did not run (`None`: it ran).
    pub(super) skipped: Vec<Option<String>>,
    pub(super) calls: u64,
    pub(super) forks: u64,
    pub(super) round_trips: u64,
    /// The tracing mechanism the `moatd` variant ran (`moat_tracing_mode`),
    /// if its `/metrics` said.
    pub(super) mechanism: Option<String>,
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
    /// None for a workload without a goal.
    pub(super) fn goal(&self, w: usize) -> Option<Goal> {
        let wl = &WORKLOADS[w];
        let limit = wl.goal?;
        let within = self.ratio(V_MOATD, V_NONE, w).map(|r| r <= limit);
        let beats = match (self.median(V_MOATD, w), self.median(V_BPFTRACE, w)) {
            (Some(m), Some(b)) => Some(m < b),
            _ => None,
        };
        let met = match (within, beats) {
            (Some(false), _) | (_, Some(false)) => Some(false),
            (Some(true), Some(true)) => Some(true),
            _ => None,
        };
        Some(Goal {
            text: format!("≤ {limit}× no agent and < bpftrace"),
            met,
        })
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
                    // Three significant digits at least (ping-pong: ~2 µs).
                    Some(m) if m < 10.0 => format!("{m:.3} {}", wl.unit),
                    Some(m) => format!("{m:.1} {}", wl.unit),
                    None => self.skipped_cell(v),
                };
                rows.push(Row::info(format!("{}, {var}", wl.label), value));
            }
            let ratio = Row::info(
                format!("{}: moatd / no agent", wl.label),
                self.ratio_cell(V_MOATD, V_NONE, w),
            );
            rows.push(match self.goal(w) {
                Some(goal) => Row {
                    goal: goal.text,
                    met: goal.met.map_or("—", bench::yes_no).into(),
                    ..ratio
                },
                None => ratio,
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
    let mut mechanism = None;
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
            if let (V_MOATD, Agent::Moatd(m), None) = (v, &agent, &mechanism) {
                mechanism = m.metrics().ok().as_deref().and_then(tracing_mechanism);
            }
            // Every variant waits alike, so an agent's start-up work is over.
            std::thread::sleep(SETTLE);
            for (w, wl) in WORKLOADS.iter().enumerate() {
                let ns = worker.run(wl.cmd)?;
                let value = match wl.per {
                    Per::Call => ns / cfg.calls as f64,
                    Per::Fork => ns / 1e3 / cfg.forks as f64,
                    Per::RoundTrip => ns / 1e3 / cfg.round_trips as f64,
                    Per::Whole => ns / 1e6,
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
        round_trips: cfg.round_trips,
        mechanism,
    })
}

/// The `mechanism` label of `moat_tracing_mode` in a `/metrics` body.
fn tracing_mechanism(metrics: &str) -> Option<String> {
    let line = metrics
        .lines()
        .find(|l| l.starts_with("moat_tracing_mode{"))?;
    let rest = &line[line.find("mechanism=\"")? + "mechanism=\"".len()..];
    Some(rest[..rest.find('"')?].to_string())
}
