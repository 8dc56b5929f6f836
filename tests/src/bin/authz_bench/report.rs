//! The report: the table, the machine, the conditions, and the results for
//! `bench_report`.

use std::fmt::Write as _;
use std::path::Path;

use moat_tests::bench::{self, Row, Stats};
use moat_tests::results::{Comparison, Goal, Peer, Results, Value};

use super::{docker_run, latency, Config, Measured, GOAL_P99_MS, GOAL_RUN_RATIO};

const SECTION: &str = "Docker authorization";

/// The figures' names, shared by the table and the JSON.
pub(super) fn p50_figure(cfg: &Config) -> String {
    format!("decision latency p50 at {}/s (recorded requests)", cfg.rate)
}
pub(super) fn p99_figure(cfg: &Config) -> String {
    format!("decision latency p99 at {}/s (recorded requests)", cfg.rate)
}
const RUN_FIGURE: &str = "`docker run --rm IMAGE true` with the plugin";

fn ratio(m: &Measured) -> f64 {
    Stats::of(&m.runs.judged).median / Stats::of(&m.runs.plain).median
}

pub(super) fn rows(m: &Measured) -> Vec<Row> {
    let l = &m.latency;
    let p50 = Stats::of(&l.p50).median;
    let p99 = Stats::of(&l.p99).median;
    let (plain, judged) = (Stats::of(&m.runs.plain), Stats::of(&m.runs.judged));
    vec![
        Row::info(
            format!("Decision latency p50 at {:.0} requests/s", l.achieved),
            format!("{p50:.3} ms"),
        ),
        Row::with_goal(
            format!("Decision latency p99 at {:.0} requests/s", l.achieved),
            format!("{p99:.3} ms"),
            format!("< {GOAL_P99_MS} ms"),
            p99 < GOAL_P99_MS,
        ),
        Row::info(
            "Slowest decision (max over the rounds)",
            format!("{:.3} ms", Stats::of(&l.max).max),
        ),
        Row::info(
            "Decisions moatd timed at 1 ms or less (`moat_authz_request_duration_seconds`)",
            format!("{:.2} %", l.server_within_1ms),
        ),
        Row::info(
            "moatd CPU time per decision (user + system, over the rounds)",
            format!("{:.1} µs", l.cpu_per_request_us),
        ),
        Row::with_goal(
            "Answers equal to the policy crate's decision",
            format!("{} of {}", l.sent_all - l.wrong, l.sent_all),
            "all",
            l.wrong == 0,
        ),
        Row::with_goal(
            "`moat_authz_requests_total` growth",
            format!("{:.0}", l.counted),
            format!("= {} requests sent", l.sent_all),
            l.counted == l.sent_all as f64,
        ),
        Row::info(
            "`docker run --rm IMAGE true`, no plugin (median)",
            format!("{:.1} ms", plain.median),
        ),
        Row::info(
            "`docker run --rm IMAGE true`, with the plugin (median)",
            format!("{:.1} ms", judged.median),
        ),
        Row::with_goal(
            "`docker run`: with the plugin / without",
            format!("{:.3}×", ratio(m)),
            format!("≤ {GOAL_RUN_RATIO}×"),
            ratio(m) <= GOAL_RUN_RATIO,
        ),
        Row::info(
            "CPU time per `docker run`: dockerd without the plugin",
            format!("{:.1} ms", m.runs.cpu_plain),
        ),
        Row::info(
            "CPU time per `docker run`: dockerd with the plugin + moatd",
            format!(
                "{:.1} ms ({:.1} + {:.1})",
                m.runs.cpu_judged + m.runs.cpu_moatd,
                m.runs.cpu_judged,
                m.runs.cpu_moatd
            ),
        ),
    ]
}

pub(super) fn machine(moatd: &Path) -> Vec<(String, String)> {
    let mut machine = bench::machine();
    let version = std::process::Command::new(moat_tests::dockerd::DOCKERD)
        .arg("--version")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_else(|_| "unknown".into());
    machine.push(("dockerd".into(), version));
    machine.push(("moatd".into(), format!("`{}`", moatd.display())));
    machine
}

pub(super) fn conditions(cfg: &Config, m: &Measured) -> Vec<String> {
    let l = &m.latency;
    vec![
        format!(
            "Mode: {}; build: {}.",
            bench::mode(cfg.quick),
            bench::build()
        ),
        format!(
            "Latency: {} rounds of {} s at {} requests/s (achieved {:.0}/s), after {} warm-up \
             requests, over {} keep-alive connections, open loop; {} recorded requests in \
             round-robin order ({} of them denied by the baseline). Latency runs from the \
             moment a request was due (or written, when the sending thread woke late) to the \
             end of its answer. Figures are medians over the rounds of each round's \
             percentile.",
            cfg.rounds,
            cfg.seconds,
            cfg.rate,
            l.achieved,
            latency::WARMUP,
            latency::CONNECTIONS,
            l.mix,
            l.mix_denied
        ),
        format!(
            "docker run: {} interleaved pairs after {} warm-up pairs, on two dockerds ({}) \
             started by the harness (vfs, no bridge, `--network none`), the order alternating \
             per pair; with the plugin, moatd also inspects each container at its start. CPU \
             times per run are the processes' user + system time over the measured runs \
             (`/proc/<pid>/stat`, 10 ms ticks) divided by the runs; moatd's includes all of its \
             work meanwhile (its eBPF collector sees every process the runs start).",
            m.runs.plain.len(),
            docker_run::WARMUP,
            m.runs.version
        ),
        "moatd serves the plugin with the built-in baseline in enforce mode; the machine is a \
         2-CPU VM shared with other work."
            .into(),
    ]
}

fn alone(figure: impl Into<String>, unit: &str, moat: Value) -> Comparison {
    Comparison {
        note: None,
        section: SECTION.into(),
        figure: figure.into(),
        unit: unit.into(),
        moat,
        peers: Vec::new(),
        baseline: None,
        goal: None,
    }
}

pub(super) fn results(
    cfg: &Config,
    m: &Measured,
    machine: Vec<(String, String)>,
    conditions: Vec<String>,
) -> Results {
    let l = &m.latency;
    let mut r = Results::new("authz", cfg.quick);
    r.comparisons
        .push(alone(p50_figure(cfg), "ms", Value::measured(&l.p50)));
    let p99 = Stats::of(&l.p99).median;
    r.comparisons.push(Comparison {
        goal: Some(Goal {
            text: format!("< {GOAL_P99_MS} ms"),
            met: Some(p99 < GOAL_P99_MS),
        }),
        ..alone(p99_figure(cfg), "ms", Value::measured(&l.p99))
    });
    r.comparisons.push(Comparison {
        goal: Some(Goal {
            text: format!(
                "= {} requests sent, each answered as the policy crate decides",
                l.sent_all
            ),
            met: Some(l.wrong == 0 && l.counted == l.sent_all as f64),
        }),
        ..alone(
            "decisions counted in moat_authz_requests_total",
            "count",
            Value::Exact(l.counted),
        )
    });
    r.comparisons.push(Comparison {
        peers: vec![Peer {
            name: "no plugin".into(),
            value: Value::measured(&m.runs.plain),
        }],
        baseline: Some("no plugin".into()),
        goal: Some(Goal {
            text: format!("≤ {GOAL_RUN_RATIO}× no plugin"),
            met: Some(ratio(m) <= GOAL_RUN_RATIO),
        }),
        ..alone(RUN_FIGURE, "ms", Value::measured(&m.runs.judged))
    });
    r.comparisons.push(Comparison {
        peers: vec![Peer {
            name: "no plugin".into(),
            value: Value::Exact(m.runs.cpu_plain),
        }],
        baseline: Some("no plugin".into()),
        ..alone(
            "CPU time per `docker run` (dockerd, and moatd with the plugin)",
            "ms",
            Value::Exact(m.runs.cpu_judged + m.runs.cpu_moatd),
        )
    });
    r.machine = machine;
    r.conditions = conditions;
    r
}

pub(super) fn render(
    cfg: &Config,
    rows: &[Row],
    machine: &[(String, String)],
    conditions: &[String],
    m: &Measured,
) -> String {
    let mut out = String::new();
    if cfg.quick {
        let _ = writeln!(out, "**Quick run**: the figures mean little.\n");
    }
    bench::write_table(&mut out, rows);
    bench::write_machine(&mut out, machine);
    bench::write_conditions(&mut out, conditions);
    let _ = writeln!(out, "\n### Per round\n");
    let _ = writeln!(out, "| Round | p50 (ms) | p99 (ms) | max (ms) |");
    let _ = writeln!(out, "|---|---|---|---|");
    for (i, ((p50, p99), max)) in m
        .latency
        .p50
        .iter()
        .zip(&m.latency.p99)
        .zip(&m.latency.max)
        .enumerate()
    {
        let _ = writeln!(out, "| {} | {p50:.3} | {p99:.3} | {max:.3} |", i + 1);
    }
    let _ = writeln!(out, "\n### docker run, each pair (ms)\n");
    let _ = writeln!(out, "| Pair | no plugin | with the plugin |");
    let _ = writeln!(out, "|---|---|---|");
    for (i, (a, b)) in m.runs.plain.iter().zip(&m.runs.judged).enumerate() {
        let _ = writeln!(out, "| {} | {a:.1} | {b:.1} |", i + 1);
    }
    out
}
