//! The run's figures as [`Results`] of harness `agent`: what `--json PATH`
//! writes for `bench_report`. The Markdown report on stdout and these carry
//! the same measurements and the same verdicts (both come from the types
//! of `main.rs`); the JSON keeps the raw spreads (min, max, runs) that the
//! Markdown table rounds away.

use moat_tests::bench::Stats;
use moat_tests::results::{Comparison, Goal, Peer, Plot, PlotKind, Point, Results, Series, Value};

use super::overhead::{
    Overhead, VARIANTS, V_BPFTRACE, V_EXIT, V_FATAL, V_MOATD, V_NONE, V_PAIR, WORKLOADS,
};
use super::{Config, Many, Measured, GOAL_READY_MS, GOAL_STORM_SCRAPE_MS, STORM_NAME};

const OVERHEAD: &str = "Tracing overhead";
const LOAD: &str = "Agent under load";
const SCALE: &str = "Scale of the exposition";

/// The results of the run.
pub(super) fn results(
    cfg: &Config,
    m: &Measured,
    machine: Vec<(String, String)>,
    conditions: Vec<String>,
) -> Results {
    let mut r = Results::new("agent", cfg.quick);
    overhead(&m.overhead, &mut r.comparisons);
    under_load(cfg, m, &mut r.comparisons);
    for level in &m.many {
        scale(level, &mut r.comparisons);
    }
    r.plots.push(overhead_plot(&m.overhead));
    r.plots.push(scale_plot(&m.many));
    r.machine = machine;
    r.conditions = conditions;
    r
}

/// A figure of moat alone, without peer, ratio or goal.
fn alone(section: &str, figure: impl Into<String>, unit: &str, moat: Value) -> Comparison {
    Comparison {
        note: None,
        section: section.into(),
        figure: figure.into(),
        unit: unit.into(),
        moat,
        peers: Vec::new(),
        baseline: None,
        goal: None,
    }
}

fn peer(o: &Overhead, v: usize, w: usize) -> Peer {
    Peer {
        name: VARIANTS[v].into(),
        value: o.value(v, w),
    }
}

/// One row per workload (moatd against no agent, bpftrace and the floor),
/// and after the getppid loop its ratio to the empty-program floor.
fn overhead(o: &Overhead, out: &mut Vec<Comparison>) {
    for (w, wl) in WORKLOADS.iter().enumerate() {
        out.push(Comparison {
            // The floor explains the getppid figure; on the heavier
            // workloads it is within the noise and a note would mislead.
            note: if w == 0 {
                floor_note(o, w)
            } else {
                noise_note(o, w)
            },
            peers: [V_NONE, V_BPFTRACE, V_EXIT, V_PAIR, V_FATAL]
                .iter()
                .map(|&v| peer(o, v, w))
                .collect(),
            baseline: Some(VARIANTS[V_NONE].into()),
            goal: o.goal(w),
            ..alone(OVERHEAD, wl.label, wl.unit, o.value(V_MOATD, w))
        });
        if w == 0 {
            out.push(Comparison {
                note: Some(mechanism_note(o)),
                peers: vec![peer(o, V_PAIR, w), peer(o, V_EXIT, w)],
                baseline: Some(VARIANTS[V_PAIR].into()),
                goal: Some(o.goal_over_floor(w)),
                ..alone(
                    OVERHEAD,
                    format!("{}: moatd over the empty-program floor", wl.label),
                    wl.unit,
                    o.value(V_MOATD, w),
                )
            });
            out.push(Comparison {
                note: Some(
                    "moatd with [tracing] denials = \"fatal\": TRAP and KILL only, from \
                     signal_generate and the exit tracepoint, no program on any syscall"
                        .into(),
                ),
                peers: vec![peer(o, V_NONE, w)],
                baseline: Some(VARIANTS[V_NONE].into()),
                goal: Some(o.goal_fatal(w)),
                ..alone(
                    OVERHEAD,
                    format!("{}: moatd, fatal tier", wl.label),
                    wl.unit,
                    o.value(V_FATAL, w),
                )
            });
        }
    }
}

/// Which mechanism the moatd rows measured, and so whether fexit's timing
/// is in this report (issue 14 asks that its absence be said).
fn mechanism_note(o: &Overhead) -> String {
    match o.mechanism.as_deref() {
        Some("pairing") => "moatd ran the sys_enter/sys_exit pairing (moat_tracing_mode): \
             `auto` falls back to it where the kernel refuses BPF tracing programs, as this \
             one does. The fexit mechanism, which `auto` picks where they are allowed, is \
             not timed here: no kernel on this machine runs it outside the QEMU guests of \
             the kernel lab (scripts/test-kernels.sh), which check its counts"
            .into(),
        Some(other) => format!(
            "moatd ran the {other} mechanism (moat_tracing_mode): with no program on the \
             syscall tracepoints it does not pay this floor, which measures the pairing's hooks"
        ),
        None => "moatd's tracing mechanism could not be read from its /metrics".into(),
    }
}

/// What the empty-program floor says about workload `w`: the price of
/// merely attaching to the syscall tracepoints, which bounds from below
/// what any agent that sees seccomp denials this way can reach here.
fn floor_note(o: &Overhead, w: usize) -> Option<String> {
    let med = |v: usize| o.value(v, w).median();
    let (none, exit, pair, moatd) = (med(V_NONE)?, med(V_EXIT)?, med(V_PAIR)?, med(V_MOATD)?);
    Some(format!(
        "the empty-program floor: attaching two-instruction programs costs {:.2}× no agent on \
         sys_exit alone and {:.2}× on sys_enter+sys_exit, before any of moatd's logic runs; \
         moatd's own work adds {:.2}× over that floor",
        exit / none,
        pair / none,
        moatd / pair
    ))
}

/// When the no-agent rounds of workload `w` spread wider than the goal's
/// margin, the verdict says more about the machine's noise than about the
/// agent: say so, with the spread.
fn noise_note(o: &Overhead, w: usize) -> Option<String> {
    let Value::Measured {
        median, min, max, ..
    } = o.value(V_NONE, w)
    else {
        return None;
    };
    let margin = WORKLOADS[w].goal? - 1.0;
    let (low, high) = (min / median, max / median);
    (high - low > margin).then(|| {
        format!(
            "within the noise: without any agent the rounds alone spread from {low:.2}× to \
             {high:.2}× their median, wider than the goal's {:.0} % margin; read the verdict \
             with that in mind",
            margin * 100.0
        )
    })
}

/// The storm, moatd's memory and its start-to-ready.
fn under_load(cfg: &Config, m: &Measured, out: &mut Vec<Comparison>) {
    let s = &m.storm;
    let exact = |figure: &str, unit: &str, x: f64| alone(LOAD, figure, unit, Value::Exact(x));
    out.push(Comparison {
        note: None,
        goal: Some(Goal {
            text: format!("= {}", cfg.storm),
            met: Some(s.seen == cfg.storm),
        }),
        ..exact("storm: denials the workload saw", "count", s.seen as f64)
    });
    let counted = match s.counted {
        Some(n) => Value::Exact(n),
        None => Value::Skipped(format!(
            "no moat_seccomp_denials_total series of workload {STORM_NAME} in /metrics"
        )),
    };
    out.push(Comparison {
        note: None,
        goal: Some(Goal {
            text: format!("= {} exactly (every denial the workload saw)", cfg.storm),
            met: Some(s.counted == Some(cfg.storm as f64) && s.seen == cfg.storm),
        }),
        ..alone(
            LOAD,
            format!(
                "storm: denials counted (moat_seccomp_denials_total{{workload=\"{STORM_NAME}\"}})"
            ),
            "count",
            counted,
        )
    });
    out.push(exact("storm: duration", "ms", s.secs * 1e3));
    out.push(exact(
        "storm: audit events delivered (audit log lines of the workload)",
        "count",
        s.audit_lines as f64,
    ));
    for (reason, n) in &s.dropped {
        out.push(exact(
            &format!("storm: audit events dropped, reason {reason}"),
            "count",
            *n,
        ));
    }
    out.push(exact("storm: moatd CPU time (utime+stime)", "ms", s.cpu_ms));
    out.push(exact("moatd RSS at idle (VmRSS)", "MiB", s.rss_idle));
    out.push(exact(
        "moatd RSS after the storm (VmRSS)",
        "MiB",
        s.rss_after,
    ));
    out.push(exact(
        "moatd peak RSS through the storm (VmHWM)",
        "MiB",
        s.hwm,
    ));
    let scrape = Stats::of(&s.scrape_ms);
    out.push(Comparison {
        note: None,
        goal: Some(Goal {
            text: format!("< {GOAL_STORM_SCRAPE_MS} ms (every sample)"),
            met: Some(
                scrape.max < GOAL_STORM_SCRAPE_MS
                    && s.scrape_errors == 0
                    && !s.scrape_ms.is_empty(),
            ),
        }),
        ..alone(
            LOAD,
            "storm: /metrics latency (every 50 ms)",
            "ms",
            Value::measured(&s.scrape_ms),
        )
    });
    out.push(Comparison {
        note: None,
        goal: Some(Goal {
            text: format!("< {GOAL_READY_MS} ms (every start)"),
            met: Some(Stats::of(&m.ready_ms).max < GOAL_READY_MS),
        }),
        ..alone(
            LOAD,
            "start-to-ready (spawn → first /metrics 200)",
            "ms",
            Value::measured(&m.ready_ms),
        )
    });
}

/// One level of the many-workloads figure.
fn scale(l: &Many, out: &mut Vec<Comparison>) {
    let n = l.n;
    out.push(Comparison {
        note: None,
        goal: l.goal(),
        ..alone(
            SCALE,
            format!("/metrics latency, {n} workloads"),
            "ms",
            Value::measured(&l.scrape_ms),
        )
    });
    let exact = |figure: String, unit: &str, x: f64| alone(SCALE, figure, unit, Value::Exact(x));
    out.push(exact(
        format!("/metrics first scrape, {n} new workloads"),
        "ms",
        l.first_ms,
    ));
    out.push(exact(
        format!("/metrics body, {n} workloads"),
        "bytes",
        l.bytes as f64,
    ));
    out.push(exact(
        format!("/metrics series, {n} workloads"),
        "count",
        l.series as f64,
    ));
    out.push(Comparison {
        note: None,
        goal: Some(Goal {
            text: format!("= {n}"),
            met: Some(l.labels == n),
        }),
        ..exact(
            format!("workload labels in /metrics, {n} workloads"),
            "count",
            l.labels as f64,
        )
    });
}

/// Each variant's time relative to no agent, per workload; the error bar is
/// the variant's fastest and slowest round over the same no-agent median
/// (so the bar's median always lies within it).
fn overhead_plot(o: &Overhead) -> Plot {
    let series = [V_MOATD, V_FATAL, V_BPFTRACE, V_EXIT, V_PAIR]
        .iter()
        .filter(|&&v| o.skipped[v].is_none())
        .map(|&v| Series {
            name: VARIANTS[v].into(),
            points: WORKLOADS
                .iter()
                .enumerate()
                .filter_map(|(w, wl)| {
                    let base = o.median(V_NONE, w)?;
                    let s = Stats::of(&o.samples[v][w]);
                    Some(Point {
                        x: wl.short.into(),
                        median: s.median / base,
                        min: s.min / base,
                        max: s.max / base,
                    })
                })
                .collect(),
        })
        .collect();
    Plot {
        id: "overhead".into(),
        title: "Tracing overhead: time relative to no agent".into(),
        x_label: "workload".into(),
        y_label: "× no agent (1 = no cost)".into(),
        kind: PlotKind::Bars,
        series,
    }
}

/// `/metrics` latency against the number of workloads.
fn scale_plot(many: &[Many]) -> Plot {
    Plot {
        id: "metrics-scale".into(),
        title: "/metrics latency by number of workloads".into(),
        x_label: "workloads (cgroups with their own label)".into(),
        y_label: "ms".into(),
        kind: PlotKind::Lines,
        series: vec![Series {
            name: "/metrics latency (ms)".into(),
            points: many
                .iter()
                .map(|l| Point::of(l.n.to_string(), &l.scrape_ms))
                .collect(),
        }],
    }
}
