//! `authz_bench`: what moat's Docker authorization plugin costs: how fast
//! it decides, and what it adds to `docker run`.
//!
//! Run it as root with `scripts/bench.sh --only authz` (release build;
//! writes `docs/benchmarks-authz.md`) or directly; `--quick` is a smoke run
//! of a few seconds whose figures mean little. The report (Markdown) goes to
//! stdout, progress to stderr; with `--json PATH` the same figures are also
//! written to PATH as `moat_tests::results::Results` (harness `authz`,
//! section "Docker authorization") for `bench_report`. The exit status is 0
//! only if every measurement ran and every sanity check passed. Everything
//! it starts (moatd, two dockerds) is stopped and removed, on failure too.
//!
//! # Method
//!
//! `moatd` is the binary next to this one (`--moatd` to override), started
//! with `[authz] enabled` on a socket of its own in `/run/docker/plugins`
//! (plugin `moat-t<pid>-<n>`), the built-in baseline, enforce mode.
//!
//! **Decision latency.** The requests are the recorded `AuthZReq` bodies of
//! `agent/policy/tests/requests/*.json` (what dockerd 20.10 sent for real CLI
//! commands: creates with every baseline option and without, exec, update,
//! plugin, service, swarm, volume and info requests), in a fixed round-robin
//! order; the `start-*` ones are left out, since a start's decision waits
//! for a container inspect (its cost is in the `docker run` figure). They
//! are sent as `POST /AuthZPlugin.AuthZReq` over 4 keep-alive connections
//! (dockerd's client keeps its connections too) at a fixed rate (`--rate`,
//! 1000/s), open loop: request i is due at `t0 + i / rate`, on connection
//! `i mod 4`. A request's latency runs from the moment it was due (when the
//! connection was still busy with an earlier answer: the queueing counts)
//! or from when it was written (when the thread woke late: the harness's
//! own timer jitter does not), to the end of its answer. 200 requests warm
//! up first. Each round lasts `--seconds`; the figures are the median over
//! `--rounds` of each round's p50 and p99. Every answer is checked against
//! `moat_policy::evaluate_wire` on the same bytes, and moatd's
//! `moat_authz_requests_total` must have grown by exactly the requests sent;
//! the share of decisions moatd itself timed at 1 ms or less
//! (`moat_authz_request_duration_seconds`) is reported beside.
//!
//! **`docker run`.** Two dockerds of this harness (vfs storage, no bridge,
//! the same busybox image imported), one with `--authorization-plugin` and
//! one without. Each round runs `docker run --rm --network none IMAGE true`
//! (Debian's client) once on each, the order alternating from round to
//! round; two rounds warm up. The figure is the median wall time of each
//! side, and their ratio. With the plugin, one run asks it about each of its
//! API requests (create, attach, wait, start, the removal...) and at start
//! moatd inspects the container through the daemon. The CPU time (user +
//! system, from `/proc/<pid>/stat`) each daemon and moatd used over the
//! measured runs, per run, shows what the plugin costs whatever the load of
//! the machine (the wall times of a shared VM move with its neighbours).

mod docker_run;
mod latency;
mod report;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use moat_tests::authz::{PluginMoatd, PluginSetup};
use moat_tests::bench::{self, Args};
use moat_tests::dockerd::Dockerd;

/// Goals, from issue 12.
const GOAL_P99_MS: f64 = 1.0;
const GOAL_RUN_RATIO: f64 = 1.05;

#[derive(Debug, Clone)]
struct Config {
    quick: bool,
    rate: u32,
    seconds: f64,
    rounds: usize,
    runs: usize,
    moatd: Option<PathBuf>,
    json: Option<PathBuf>,
}

impl Config {
    fn full() -> Config {
        Config {
            quick: false,
            rate: 1000,
            seconds: 10.0,
            rounds: 3,
            runs: 30,
            moatd: None,
            json: None,
        }
    }

    fn quick() -> Config {
        Config {
            quick: true,
            rate: 1000,
            seconds: 1.0,
            rounds: 1,
            runs: 2,
            moatd: None,
            json: None,
        }
    }
}

const USAGE: &str = "\
usage: authz_bench [--quick] [--rate N] [--seconds S] [--rounds N] [--runs N]
                   [--moatd PATH] [--json PATH]

  --quick        a smoke run of a few seconds
  --rate N       plugin requests per second (default 1000)
  --seconds S    length of each latency round (default 10)
  --rounds N     latency rounds (default 3)
  --runs N       `docker run` pairs (default 30)
  --moatd PATH   the moatd binary (default: next to this program)
  --json PATH    also write the results for bench_report (moat_tests::results) to PATH

Needs root (moatd loads eBPF programs; dockerd).";

fn parse_args(args: &mut Args) -> Result<Config, String> {
    let mut cfg = if args.quick() {
        Config::quick()
    } else {
        Config::full()
    };
    while let Some(a) = args.next_flag() {
        match a.as_str() {
            "--rate" => cfg.rate = args.positive(&a)?,
            "--seconds" => {
                cfg.seconds = args.number(&a)?;
                if !(cfg.seconds > 0.0 && cfg.seconds <= 3600.0) {
                    return Err("--seconds must be above 0 and at most 3600".into());
                }
            }
            "--rounds" => cfg.rounds = args.positive(&a)?,
            "--runs" => cfg.runs = args.positive(&a)?,
            "--moatd" => cfg.moatd = Some(PathBuf::from(args.value(&a)?)),
            "--json" => cfg.json = Some(args.output_path(&a)?),
            other => return Err(bench::unknown_flag(other)),
        }
    }
    Ok(cfg)
}

fn main() -> ExitCode {
    bench::main("authz_bench", USAGE, parse_args, run)
}

/// Progress on stderr, with the time since the start.
fn progress(started: Instant, what: impl std::fmt::Display) {
    eprintln!("[{:6.1} s] {what}", started.elapsed().as_secs_f64());
}

/// Everything the run measured.
struct Measured {
    latency: latency::Latency,
    runs: docker_run::Runs,
}

fn run(cfg: Config) -> Result<String, String> {
    let started = Instant::now();
    if !moat_tests::is_root() {
        return Err("needs root (moatd loads eBPF programs; dockerd)".into());
    }
    if let Some(reason) = moat_tests::dockerd::unavailable() {
        return Err(reason);
    }
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
    // The daemon with the plugin exists (not yet started) so that moatd
    // knows its socket for the start-time inspect.
    let plain = Dockerd::new("ab-plain");
    let judged = Dockerd::new("ab-authz");
    let setup = PluginSetup::new(judged.dir(), judged.socket());
    let agent = PluginMoatd::start(&moatd, &setup, None)?;
    progress(started, format!("moatd serves plugin {}", setup.name));

    let latency = latency::measure(&cfg, &setup, &agent, started)?;
    let runs = docker_run::measure(&cfg, plain, judged, &setup.name, agent.pid(), started)?;
    progress(started, "done");

    let m = Measured { latency, runs };
    let machine = report::machine(&moatd);
    let conditions = report::conditions(&cfg, &m);
    let rows = report::rows(&m);
    if let Some(path) = &cfg.json {
        report::results(&cfg, &m, machine.clone(), conditions.clone()).write(path)?;
    }
    Ok(report::render(&cfg, &rows, &machine, &conditions, &m))
}
