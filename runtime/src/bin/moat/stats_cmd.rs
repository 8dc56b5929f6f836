//! `moat stats`: a live table of workloads, like `docker stats`, from moatd's
//! `/metrics`: processes against the pids limit, and forks and seccomp denials
//! per second.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::io::{self, IsTerminal as _, Write as _};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context as _, Result};
use clap::Args;

use crate::events_cmd::{install_stop_handler, sleep_unless_stopped, stop_requested};
use crate::term::escape;
use moat_api::{
    client::{self, ClientError, HttpUrl},
    defaults::AGENT_URL as DEFAULT_AGENT_URL,
    exposition::{Exposition, Sample},
    metrics::{FORKS, PIDS_CURRENT, PIDS_LIMIT, SECCOMP_DENIALS},
};

/// Time between two scrapes (and between two refreshes).
const INTERVAL: Duration = Duration::from_secs(1);

#[derive(Debug, Args)]
#[command(
    about = "Live table of workloads from moatd: pids, pids limit, forks/s, denials/s",
    long_about = "Show a live table of the workloads moatd sees, refreshed every second: \
                  NAME, PIDS (processes and threads now), LIMIT (the pids limit), FORKS/S \
                  (processes and threads created per second) and DENIALS/S (syscalls refused \
                  by seccomp per second).\n\n\
                  The numbers come from moatd's /metrics: moat_pids_current and \
                  moat_pids_limit for PIDS and LIMIT, and the increase of moat_forks_total and \
                  moat_seccomp_denials_total (summed per workload) between two scrapes, \
                  divided by the time between them, for the rates. A workload is listed when \
                  it has a pids cgroup (moat workloads, Docker containers) or forked or had a \
                  syscall denied during the interval. Workloads are moat workloads by name, \
                  Docker containers as docker:<id>, systemd units by unit name, and the rest \
                  of the node as host.\n\n\
                  On a terminal the table is redrawn in place; otherwise successive tables \
                  are printed one after the other, separated by a blank line. Stop with \
                  Ctrl-C (SIGINT) or SIGTERM.",
    after_help = "Columns:\n  \
                  NAME       workload label\n  \
                  PIDS       processes and threads in its pids cgroup (- without one)\n  \
                  LIMIT      its pids.max (max: none of its own; - without a pids cgroup)\n  \
                  FORKS/S    processes and threads created per second\n  \
                  DENIALS/S  syscalls refused by seccomp per second\n\n\
                  Environment:\n  \
                  MOAT_AGENT  moatd's metrics URL when --agent is not given\n\n\
                  Exit status:\n  \
                  0  --no-stream printed its table, or stopped by SIGINT or SIGTERM\n  \
                  1  moatd cannot be reached or answered something unusable\n  \
                  2  invalid command line\n\n\
                  Examples:\n  \
                  moat stats\n  \
                  moat stats --no-stream\n  \
                  moat stats --agent http://10.0.0.5:9740/metrics"
)]
pub struct StatsArgs {
    /// Print one table and exit instead of refreshing every second. The rates
    /// need two scrapes, so this still takes about one second (two scrapes one
    /// second apart).
    #[arg(long)]
    no_stream: bool,

    /// moatd's metrics URL, http://HOST:PORT/metrics (the path defaults to
    /// /metrics) [default: $MOAT_AGENT, else http://127.0.0.1:9740/metrics].
    #[arg(long, value_name = "URL")]
    agent: Option<String>,
}

pub fn run(args: StatsArgs) -> Result<ExitCode> {
    let text = args
        .agent
        .clone()
        .or_else(|| std::env::var("MOAT_AGENT").ok().filter(|v| !v.is_empty()))
        .unwrap_or_else(|| DEFAULT_AGENT_URL.to_owned());
    let url = HttpUrl::parse(&text).context("--agent")?;
    install_stop_handler()?;
    let tty = io::stdout().is_terminal();
    match stream(&url, &text, args.no_stream, tty) {
        Ok(()) => Ok(ExitCode::SUCCESS),
        Err(err)
            if err
                .downcast_ref::<io::Error>()
                .is_some_and(|e| e.kind() == io::ErrorKind::BrokenPipe) =>
        {
            Ok(ExitCode::SUCCESS)
        }
        Err(err) => Err(err),
    }
}

fn stream(url: &HttpUrl, shown: &str, once: bool, tty: bool) -> Result<()> {
    let mut prev = Some(scrape(url, shown)?);
    let mut next = Instant::now() + INTERVAL;
    let mut first_table = true;
    loop {
        sleep_unless_stopped(next.saturating_duration_since(Instant::now()));
        if stop_requested() {
            return Ok(());
        }
        next += INTERVAL;
        // Never fall more than one interval behind (a slow scrape, a stopped process).
        let now = Instant::now();
        if next < now {
            next = now + INTERVAL;
        }
        let current = match scrape(url, shown) {
            Ok(current) => current,
            Err(err) if !once => {
                // moatd restarting: say so, and start over once it answers again.
                eprintln!("moat: {err:#}; retrying");
                prev = None;
                continue;
            }
            Err(err) => return Err(err),
        };
        let Some(before) = prev.replace(current) else {
            continue;
        };
        let table = render(&rows(&before, prev.as_ref().expect("just set")));
        let mut out = io::stdout().lock();
        if tty && !once {
            // Clear the screen and move home, like `docker stats`.
            out.write_all(b"\x1b[2J\x1b[H")?;
        } else if !first_table {
            out.write_all(b"\n")?;
        }
        out.write_all(table.as_bytes())?;
        out.flush()?;
        first_table = false;
        if once {
            return Ok(());
        }
    }
}

/// What one scrape says about each workload.
#[derive(Debug, Default, Clone, PartialEq)]
struct WorkloadSample {
    pids: Option<f64>,
    limit: Option<f64>,
    forks: f64,
    denials: f64,
}

#[derive(Debug)]
struct Scrape {
    /// Halfway through the request: the best guess of when moatd read its counters.
    at: Instant,
    workloads: BTreeMap<String, WorkloadSample>,
}

fn scrape(url: &HttpUrl, shown: &str) -> Result<Scrape> {
    let start = Instant::now();
    let body = client::get(url).map_err(|err| match err {
        ClientError::Unreachable(err) => anyhow!(
            "cannot reach moatd at {shown}: {err}. Is moatd running? Start it (as root) \
             with `moatd`, or point --agent (or MOAT_AGENT) at its /metrics"
        ),
        // What the server said is the server's choice: escaped.
        ClientError::Bad(err) => anyhow!(
            "moatd at {shown} did not answer with metrics: {}",
            escape(&err)
        ),
    })?;
    let at = start + start.elapsed() / 2;
    let exposition = Exposition::parse(&body).map_err(|err| {
        anyhow!(
            "{shown}: not a Prometheus text exposition: {}",
            escape(&err.to_string())
        )
    })?;
    Ok(Scrape {
        at,
        workloads: by_workload(&exposition.samples),
    })
}

/// Sums the series moat stats shows by their `workload` label.
fn by_workload(samples: &[Sample]) -> BTreeMap<String, WorkloadSample> {
    let mut out: BTreeMap<String, WorkloadSample> = BTreeMap::new();
    for sample in samples {
        let Some(workload) = sample.label("workload") else {
            continue;
        };
        if !sample.value.is_finite() {
            continue;
        }
        let entry = || -> WorkloadSample { WorkloadSample::default() };
        match sample.name.as_str() {
            name if name == PIDS_CURRENT.name => {
                let w = out.entry(workload.to_owned()).or_insert_with(entry);
                *w.pids.get_or_insert(0.0) += sample.value;
            }
            name if name == PIDS_LIMIT.name => {
                let w = out.entry(workload.to_owned()).or_insert_with(entry);
                *w.limit.get_or_insert(0.0) += sample.value;
            }
            name if name == FORKS.name => {
                out.entry(workload.to_owned()).or_insert_with(entry).forks += sample.value;
            }
            name if name == SECCOMP_DENIALS.name => {
                out.entry(workload.to_owned()).or_insert_with(entry).denials += sample.value;
            }
            _ => {}
        }
    }
    out
}

#[derive(Debug, Clone, PartialEq)]
struct Row {
    name: String,
    pids: Option<f64>,
    limit: Option<f64>,
    forks_per_s: f64,
    denials_per_s: f64,
}

/// Per-second increase of a counter; a counter that went down was reset (moatd
/// restarted), so its whole value is the increase, as Prometheus' `rate` takes it.
fn rate(before: f64, after: f64, seconds: f64) -> f64 {
    let delta = if after >= before {
        after - before
    } else {
        after
    };
    if seconds > 0.0 {
        delta / seconds
    } else {
        0.0
    }
}

fn rows(before: &Scrape, after: &Scrape) -> Vec<Row> {
    let seconds = after.at.saturating_duration_since(before.at).as_secs_f64();
    let names: BTreeSet<&String> = after.workloads.keys().collect();
    let none = WorkloadSample::default();
    names
        .into_iter()
        .filter_map(|name| {
            let now = &after.workloads[name];
            // A series that did not exist at the first scrape started from zero.
            let then = before.workloads.get(name).unwrap_or(&none);
            let row = Row {
                name: name.clone(),
                pids: now.pids,
                limit: now.limit,
                forks_per_s: rate(then.forks, now.forks, seconds),
                denials_per_s: rate(then.denials, now.denials, seconds),
            };
            (row.pids.is_some()
                || row.limit.is_some()
                || row.forks_per_s > 0.0
                || row.denials_per_s > 0.0)
                .then_some(row)
        })
        .collect()
}

fn render(rows: &[Row]) -> String {
    // Workload names come from cgroup names: escaped like every field printed.
    let names: Vec<String> = rows.iter().map(|r| escape(&r.name).into_owned()).collect();
    let width = names
        .iter()
        .map(|name| name.chars().count())
        .max()
        .unwrap_or(0)
        .max(20);
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<width$}  {:>8}  {:>8}  {:>10}  {:>10}",
        "NAME", "PIDS", "LIMIT", "FORKS/S", "DENIALS/S"
    );
    for (row, name) in rows.iter().zip(&names) {
        let pids = row
            .pids
            .map_or_else(|| "-".to_owned(), |p| format!("{p:.0}"));
        let limit = match (row.limit, row.pids) {
            (Some(limit), _) => format!("{limit:.0}"),
            // A pids cgroup without a limit of its own.
            (None, Some(_)) => "max".to_owned(),
            (None, None) => "-".to_owned(),
        };
        let _ = writeln!(
            out,
            "{:<width$}  {:>8}  {:>8}  {:>10.1}  {:>10.1}",
            name, pids, limit, row.forks_per_s, row.denials_per_s
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scrape_of(text: &str, at: Instant) -> Scrape {
        Scrape {
            at,
            workloads: by_workload(&Exposition::parse(text).unwrap().samples),
        }
    }

    #[test]
    fn rates_and_rows() {
        let t0 = Instant::now();
        let before = scrape_of(
            "moat_forks_total{workload=\"a\",kind=\"process\"} 10\n\
             moat_forks_total{workload=\"a\",kind=\"thread\"} 5\n\
             moat_forks_total{workload=\"host\",kind=\"process\"} 7\n\
             moat_seccomp_denials_total{workload=\"a\",syscall=\"mount\",action=\"errno\",errno=\"EPERM\"} 1\n\
             moat_pids_current{workload=\"b\"} 3\n",
            t0,
        );
        let after = scrape_of(
            "moat_forks_total{workload=\"a\",kind=\"process\"} 16\n\
             moat_forks_total{workload=\"a\",kind=\"thread\"} 9\n\
             moat_forks_total{workload=\"host\",kind=\"process\"} 7\n\
             moat_seccomp_denials_total{workload=\"a\",syscall=\"mount\",action=\"errno\",errno=\"EPERM\"} 3\n\
             moat_seccomp_denials_total{workload=\"a\",syscall=\"bpf\",action=\"errno\",errno=\"EPERM\"} 2\n\
             moat_pids_current{workload=\"b\"} 4\nmoat_pids_limit{workload=\"b\"} 50\n\
             moat_forks_total{workload=\"c\",kind=\"process\"} 6\n",
            t0 + Duration::from_secs(2),
        );
        let rows = rows(&before, &after);
        let names: Vec<&str> = rows.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(names, ["a", "b", "c"]);
        assert_eq!(rows[0].forks_per_s, 5.0);
        assert_eq!(rows[0].denials_per_s, 2.0);
        assert_eq!((rows[1].pids, rows[1].limit), (Some(4.0), Some(50.0)));
        assert_eq!(rows[2].forks_per_s, 3.0);
        let table = render(&rows);
        assert!(table.starts_with("NAME "), "{table}");
        assert!(table.contains("       4        50"), "{table}");
        assert_eq!(rate(100.0, 4.0, 2.0), 2.0, "a reset counts from zero");
    }
}
