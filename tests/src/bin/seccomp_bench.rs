//! `seccomp_bench`: how long the seccomp engine takes to build a filter, and
//! what the installed filter costs per system call, in this process and
//! under the real runtimes (`moat run`, and crun with the same profile).
//!
//! Run it with `scripts/bench.sh --only seccomp` (release build; makes crun work on
//! this hybrid cgroup host; writes `docs/benchmarks-seccomp.md`) or
//! directly; `--quick` is a smoke run of a few seconds whose figures mean
//! little. The report (Markdown) goes to stdout, progress to stderr; with
//! `--json PATH` the figures also go to PATH as
//! [`moat_tests::results::Results`] (harness `seccomp`, sections `Filter
//! cost` and `Profile compile time`, plot `filter-cost`) for
//! `bench_report`. The exit status is 0 only if every measurement that was
//! not skipped ran and every sanity check passed.
//!
//! # Method
//!
//! Compile times are measured first, unpinned: the compiler builds each
//! architecture's filter on its own thread, as in a real launch. Then the
//! process is pinned to one CPU (`sched_setaffinity`, the highest-numbered
//! CPU it may use) for the per-syscall loops; forked children inherit it,
//! and the loops run under `moat run` and crun pin themselves to it
//! (`--cpu`), since joining a cpuset cgroup resets a task's affinity.
//!
//! **Compile time.** One iteration is everything a launch does to get a
//! program: parse the built-in default profile's JSON
//! ([`builtin::default_profile`]), then [`compile_for_host`] (detect the
//! host, resolve for Docker's default capabilities, compile with libseccomp
//! and export the BPF) with `Dispatch::Auto`. After the warm-up iterations,
//! each timed iteration is measured on its own with `Instant`; the report
//! gives the median, min and max. Separate loops of the same length give
//! the median of each stage (parse; host detection and resolve; libseccomp
//! compile and export), of a compile for the native architecture only (the
//! resolved sub-architectures dropped: not what moat runs, but it shows
//! what they cost), of a compile with `Dispatch::Linear`, and of a compile
//! with `Layout::Combined`: one libseccomp filter holding every
//! architecture, exported at once, which is how libseccomp alone (and so
//! runc and crun) builds a multi-architecture filter; it is the baseline of
//! the JSON's compile figures. The largest (by file size) profile in
//! `../shared/fixtures` that compiles is timed like the default one (both
//! layouts), parsed with [`parse::from_file`] (so its timing includes
//! reading the file from the page cache); without the folder its row says
//! "skipped" and the notes say why.
//!
//! **Per-syscall cost.** Five variants:
//!
//! * in this process's forked children: no filter; the default profile
//!   compiled with `Dispatch::BinaryTree` (what `Dispatch::Auto` picks for
//!   it; the report checks this), and the same compiled with
//!   `Dispatch::Linear`. Each child installs its filter with
//!   [`load::install`] (after `no_new_privs` when not root), runs the loops
//!   and sends the results to the parent through a pipe;
//! * `moat run --userns auto --pids-limit 100 --cgroup-parent moat-bench --
//!   seccomp_bench --loop all --calls N --cpu C`: the same loops as a
//!   workload of the real runtime, with its built-in default profile (sub-ids
//!   and state in private files and directories). Needs root;
//! * crun: `crun run` of a bundle whose rootfs holds this program and the
//!   shared libraries `ldd` lists (same paths), with the configuration of
//!   [`moat_tests::oci`] (moat's default profile in OCI form, user
//!   namespace, pids limit, cgroups under `moat-bench`) and
//!   `process.args` the same loop. Needs root, crun, and a cgroup layout
//!   crun accepts (on a hybrid host: `scripts/lib/crun-hybrid.sh`); it is
//!   skipped, saying why, when any is missing or crun refuses to run.
//!
//! The loops (`--loop`, also run in the forked children): for each
//! workload, one call whose result and errno are recorded, a warm-up of a
//! tenth of the calls, then a timed tight loop of `libc::syscall` calls;
//! one line `ns_per_call first_ret first_errno` per workload. Workloads:
//!
//! * `getppid`: allowed unconditionally by the profile;
//! * `socket+close`: `socket(AF_UNIX, SOCK_DGRAM, 0)` then `close(fd)`,
//!   timed together per iteration (two syscalls; `socket` goes through the
//!   profile's checks on the address family, `close` is allowed
//!   unconditionally); nothing is subtracted; a tenth as many iterations as
//!   the other loops have calls;
//! * `mount` denied: `mount(NULL, NULL, NULL, 0, NULL)`. With a filter it
//!   falls through to the default action, `EPERM`, without entering the
//!   mount code; without one the kernel itself fails it (`EFAULT` from the
//!   NULL path), so "filter / no filter" is not a filter overhead here, and
//!   "linear / tree" or "moat run / crun" are the figures to read. The
//!   errnos seen are reported.
//!
//! The variants are interleaved in rounds: every round runs each variant
//! once, in an order rotated from round to round, so drifting machine noise
//! hits all variants alike; one extra round first is run and discarded (a
//! crun that fails in it is skipped). Figures are medians over the rounds;
//! every round's value is listed too. In the JSON, moat's figure is the
//! `moat run` one (the product as shipped, runtime included), beside the
//! peers "no filter" and "crun"; the in-process filter is a series of the
//! plot.
//!
//! **Static analysis.** For each workload's syscall the report gives how
//! many BPF instructions each program executes (a counting interpreter,
//! checked against the runtime's own [`Program::evaluate`]), and whether
//! the kernel's seccomp action cache (Linux 5.11+) skips the program
//! entirely: the kernel emulates each filter at attach time for every
//! native syscall number and caches those it allows whatever the
//! arguments; [`kernel_caches`] is a port of that emulation
//! (`seccomp_is_const_allow`). `getppid` and `close` are cached, so for them
//! the dispatch strategy cannot matter; `socket` (argument checks) and
//! `mount` (denied) run the program on every call.
//!
//! # Internal loop mode
//!
//! `seccomp_bench --loop getppid|socket|mount|all [--calls N] [--cpu C]`
//! runs only the loops, in this process, with whatever filter it was
//! started under, and prints their lines (the format above) on stdout; the
//! `moat run` and crun variants start it so.

use std::fmt::Write as _;
use std::fs;
use std::io::{Read, Write};
use std::os::fd::OwnedFd;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::time::Instant;

use moat_runtime::caps::CapSet;
use moat_runtime::seccomp::bpf::{Program, SeccompData, MAX_INSNS};
use moat_runtime::seccomp::compile::{self, Dispatch, Layout};
use moat_runtime::seccomp::{builtin, compile_for_host, load, parse, resolve, Source};
use moat_tests::bench::{self, Args, Row, Stats};
use moat_tests::oci::{self, CgroupParents, Container, HOST_ID, ID_RANGE};
use moat_tests::results::{Comparison, Goal, Peer, Plot, PlotKind, Point, Results, Series, Value};

/// Goal for compiling the built-in default profile, in ms (median).
const COMPILE_GOAL_MS: f64 = 5.0;
/// The cgroup parent of the `moat run` and crun workloads.
const CGROUP_PARENT: &str = "moat-bench";
/// Their pids limit.
const PIDS_LIMIT: u64 = 100;
/// Where this program is copied in the crun bundle's rootfs.
const IN_ROOTFS: &str = "/seccomp_bench";
/// The name of the JSON's peer for `Layout::Combined`.
const SINGLE_FILTER: &str = "libseccomp single filter";

/// How much work one run does.
#[derive(Debug, Clone, Copy)]
struct Config {
    compile_warmup: usize,
    compile_runs: usize,
    rounds: usize,
    /// Calls per timed loop for `getppid` and `mount`.
    calls: u64,
    /// Iterations per timed loop for `socket+close` (slower per iteration).
    socket_calls: u64,
    quick: bool,
}

impl Config {
    const FULL: Config = Config {
        compile_warmup: 20,
        compile_runs: 200,
        rounds: 7,
        calls: 2_000_000,
        socket_calls: 200_000,
        quick: false,
    };
    const QUICK: Config = Config {
        compile_warmup: 2,
        compile_runs: 10,
        rounds: 3,
        calls: 20_000,
        socket_calls: 2_000,
        quick: true,
    };
}

const USAGE: &str = "\
usage: seccomp_bench [--quick] [--rounds N] [--calls N] [--compile-runs N]
                     [--moat PATH] [--json PATH]

  --quick           tiny counts (a smoke run of a few seconds at most)
  --rounds N        interleaved rounds of the per-syscall measurements (default 7)
  --calls N         calls per timed loop for getppid and mount (default 2000000);
                    socket+close runs N/10 iterations
  --compile-runs N  timed compilations per profile (default 200, after 20 warm-ups)
  --moat PATH       the moat binary of the `moat run` variant (default: `moat`
                    beside this program)
  --json PATH       also write the figures as benchmark results (JSON) to PATH

The `moat run` and crun variants need root; crun is skipped, saying why, when
it is not installed or refuses this host (scripts/bench.sh makes it
work on a hybrid cgroup host). Progress goes to stderr, the Markdown report to
stdout.";

/// What the command line asks for.
enum Mode {
    /// The benchmark.
    Bench(Opts),
    /// The internal `--loop` mode.
    Loop(LoopOpts),
}

/// Options of the benchmark.
struct Opts {
    cfg: Config,
    moat: PathBuf,
    json: Option<PathBuf>,
}

/// Options of `--loop`.
struct LoopOpts {
    /// Indices into [`WORKLOADS`].
    workloads: Vec<usize>,
    cfg: Config,
    cpu: Option<usize>,
}

fn parse_args(args: &mut Args) -> Result<Mode, String> {
    let mut cfg = if args.quick() {
        Config::QUICK
    } else {
        Config::FULL
    };
    let (mut moat, mut json, mut workload, mut cpu) = (None, None, None, None);
    while let Some(a) = args.next_flag() {
        match a.as_str() {
            "--rounds" => cfg.rounds = args.positive(&a)?,
            "--calls" => {
                cfg.calls = args.positive(&a)?;
                cfg.socket_calls = (cfg.calls / 10).max(1);
            }
            "--compile-runs" => cfg.compile_runs = args.positive(&a)?,
            "--moat" => moat = Some(PathBuf::from(args.value(&a)?)),
            "--json" => json = Some(args.output_path(&a)?),
            "--loop" => workload = Some(args.value(&a)?),
            "--cpu" => cpu = Some(args.number(&a)?),
            other => return Err(bench::unknown_flag(other)),
        }
    }
    if let Some(name) = workload {
        return Ok(Mode::Loop(LoopOpts {
            workloads: loop_workloads(&name)?,
            cfg,
            cpu,
        }));
    }
    if cpu.is_some() {
        return Err("--cpu goes with --loop".into());
    }
    let moat = match moat {
        Some(m) => m,
        None => std::env::current_exe()
            .map_err(|e| format!("cannot find this program's path: {e}"))?
            .with_file_name("moat"),
    };
    Ok(Mode::Bench(Opts { cfg, moat, json }))
}

/// The workloads `--loop NAME` runs: one by its syscall's name, or `all`.
fn loop_workloads(name: &str) -> Result<Vec<usize>, String> {
    if name == "all" {
        return Ok((0..WORKLOADS.len()).collect());
    }
    match WORKLOADS.iter().position(|w| w.syscall == name) {
        Some(i) => Ok(vec![i]),
        None => Err(format!(
            "--loop: unknown workload {name:?} (one of {}, all)",
            WORKLOADS
                .iter()
                .map(|w| w.syscall)
                .collect::<Vec<_>>()
                .join(", ")
        )),
    }
}

fn main() -> ExitCode {
    bench::main("seccomp_bench", USAGE, parse_args, |mode| match mode {
        Mode::Bench(opts) => {
            let (report, results) = run(&opts)?;
            if let Some(path) = &opts.json {
                results.write(path)?;
            }
            Ok(report)
        }
        Mode::Loop(l) => run_loop(&l),
    })
}

/// `--loop`: pins to `--cpu` if given, runs the loops, returns their lines.
fn run_loop(l: &LoopOpts) -> Result<String, String> {
    if let Some(cpu) = l.cpu {
        pin_to(cpu)?;
    }
    Ok(loop_report(&l.workloads, l.cfg))
}

fn run(opts: &Opts) -> Result<(String, Results), String> {
    let work = Work::new()?;
    let outcome = measure(opts, &work);
    work.cleanup();
    outcome
}

/// Everything the report shows, gathered by [`measure`].
struct Measured {
    rows: Vec<Row>,
    notes: Vec<String>,
    compile: CompileFigures,
    variants: Vec<Variant>,
    /// `samples[variant][workload]`: ns per call (or iteration), a round each.
    samples: Vec<Vec<Vec<f64>>>,
    cpu: usize,
}

fn measure(opts: &Opts, work: &Work) -> Result<(String, Results), String> {
    let cfg = opts.cfg;
    let started = Instant::now();
    let caps = CapSet::docker_default();
    let mut rows = Vec::new();
    let mut notes = Vec::new();

    // Unpinned: the compiler builds each architecture's filter on its own
    // thread, as it does in a real launch.
    let compile = compile_times(cfg, &caps, &mut rows, &mut notes)?;
    let cpu = pin_to_one_cpu()?;
    eprintln!("pinned to CPU {cpu}");

    // The programs measured below.
    let profile = builtin::default_profile().map_err(|e| e.to_string())?;
    let compile_with = |dispatch| {
        compile_for_host(&profile, builtin::SOURCE, &caps, options(dispatch))
            .map(|(_, c)| c)
            .map_err(|e| e.to_string())
    };
    let auto = compile_with(Dispatch::Auto)?;
    let tree = compile_with(Dispatch::BinaryTree)?;
    let linear = compile_with(Dispatch::Linear)?;
    for (what, c) in [("binary tree", &tree), ("linear", &linear)] {
        rows.push(Row::with_goal(
            format!("Program length, {what}"),
            format!("{} insns", c.program.len()),
            format!("≤ {MAX_INSNS} (kernel limit)"),
            c.program.len() <= MAX_INSNS,
        ));
    }
    notes.push(format!(
        "The default profile has {} syscalls in the filter; `Dispatch::Auto` picks {} \
         (threshold: {} syscalls), and its program is {} the `BinaryTree` one.",
        auto.syscalls_in_filter.len(),
        if auto.binary_tree {
            "the binary tree"
        } else {
            "the linear chain"
        },
        compile::BINARY_TREE_THRESHOLD,
        if auto.program == tree.program {
            "identical to"
        } else {
            "NOT identical to"
        },
    ));

    let outside = Outside::new(opts, work, cpu)?;
    let mut variants = vec![
        Variant::fork("no filter", None, 0),
        Variant::fork("tree", Some(tree.program), tree.flags),
        Variant::fork("linear", Some(linear.program), linear.flags),
        Variant {
            name: MOAT_RUN,
            how: How::MoatRun,
            skipped: outside.moat_problem(cfg.quick)?,
        },
        Variant {
            name: CRUN,
            how: How::Crun,
            skipped: outside.crun_problem(),
        },
    ];
    for v in &variants {
        if let Some(why) = &v.skipped {
            eprintln!("skipping {}: {why}", v.name);
        }
    }
    let (samples, outcomes) = syscall_costs(cfg, &mut variants, &outside, started)?;
    per_syscall_rows(&variants, &samples, &mut rows);
    for (w, wl) in WORKLOADS.iter().enumerate() {
        let seen: Vec<String> = variants
            .iter()
            .enumerate()
            .filter_map(|(v, var)| Some(format!("{} → {}", var.name, outcomes[v][w]?)))
            .collect();
        notes.push(format!(
            "{}: first call returned {}.",
            wl.what,
            seen.join("; ")
        ));
    }
    eprintln!("done in {:.1} s", started.elapsed().as_secs_f64());

    let m = Measured {
        rows,
        notes,
        compile,
        variants,
        samples,
        cpu,
    };
    let conditions = conditions(cfg, &m, &outside);
    let machine = machine();
    let report = render(cfg, &m, &conditions, &machine);
    let mut results = Results::new("seccomp", cfg.quick);
    results.comparisons = filter_comparisons(&m);
    results.comparisons.extend(compile_comparisons(&m.compile));
    results.plots = vec![filter_plot(&m)];
    results.machine = machine;
    results.conditions = conditions;
    Ok((report, results))
}

/// The rows of the main table for the per-syscall costs: every variant's
/// median, the ratios and differences, and the static analysis.
fn per_syscall_rows(variants: &[Variant], samples: &[Vec<Vec<f64>>], rows: &mut Vec<Row>) {
    let native = moat_runtime::seccomp::arch::Host::detect()
        .ok()
        .and_then(|h| h.native.audit_arch());
    let median = |v: usize, w: usize| {
        (variants[v].skipped.is_none() && !samples[v][w].is_empty())
            .then(|| Stats::of(&samples[v][w]).median)
    };
    let (none, tr, lin, mr, cr) = (0, 1, 2, 3, 4);
    for (w, wl) in WORKLOADS.iter().enumerate() {
        for (v, var) in variants.iter().enumerate() {
            let value = match (median(v, w), &var.skipped) {
                (Some(m), _) => format!("{m:.1} ns/{}", wl.unit),
                (None, Some(why)) => format!("skipped: {why}"),
                (None, None) => "skipped".into(),
            };
            rows.push(Row::info(format!("{}, {}", wl.label, var.name), value));
        }
        let skipped = || "n/a (a variant was skipped)".to_string();
        let ratio = |a: usize, b: usize| match (median(a, w), median(b, w)) {
            (Some(x), Some(y)) => format!("{:.3}×", x / y),
            _ => skipped(),
        };
        let delta = |a: usize, b: usize| match (median(a, w), median(b, w)) {
            (Some(x), Some(y)) => format!("{:+.1} ns", x - y),
            _ => skipped(),
        };
        for (what, value) in [
            ("tree / no filter", ratio(tr, none)),
            ("linear / no filter", ratio(lin, none)),
            ("linear / tree", ratio(lin, tr)),
            ("moat run / no filter", ratio(mr, none)),
            ("crun / no filter", ratio(cr, none)),
            ("moat run / crun", ratio(mr, cr)),
            ("tree − no filter", delta(tr, none)),
            ("linear − no filter", delta(lin, none)),
            ("linear − tree", delta(lin, tr)),
            ("moat run − crun", delta(mr, cr)),
        ] {
            rows.push(Row::info(format!("{}: {what}", wl.label), value));
        }
        for v in [tr, lin] {
            let Some(program) = variants[v].program() else {
                continue;
            };
            let (value, cached) = match native.map(|arch| analyse(program, wl, arch)) {
                Some(Ok(a)) => (format!("{} insns", a.executed), a.cached),
                Some(Err(e)) => (format!("n/a ({e})"), false),
                None => ("n/a (unknown native arch)".into(), false),
            };
            rows.push(Row::info(
                format!(
                    "{}: BPF insns run for `{}`, {}",
                    wl.label, wl.syscall, variants[v].name
                ),
                if cached {
                    format!("{value} (skipped: kernel action cache)")
                } else {
                    value
                },
            ));
        }
    }
}

/// The compile times the JSON needs (ms, one per timed run).
struct CompileFigures {
    /// The default profile as moat compiles it.
    default: Vec<f64>,
    /// The default profile as one libseccomp filter (`Layout::Combined`).
    default_combined: Vec<f64>,
    /// The largest fixture: its file name and the times of both layouts,
    /// or why it was not timed.
    fixture: Result<(String, Vec<f64>, Vec<f64>), String>,
}

/// Times one whole compile of the profile `load` returns (parse included),
/// laid out as `layout`.
fn time_whole(
    cfg: Config,
    caps: &CapSet,
    source: &Source,
    layout: Layout,
    load: impl Fn() -> Result<moat_runtime::seccomp::profile::Profile, String>,
) -> Result<Vec<f64>, String> {
    let mut ms = time_compiles(cfg, 1, |t| {
        let profile = load()?;
        let opts = compile::Options {
            layout,
            ..options(Dispatch::Auto)
        };
        compile_for_host(&profile, source.clone(), caps, opts).map_err(|e| e.to_string())?;
        t[0] = Instant::now();
        Ok(())
    })?;
    Ok(ms.swap_remove(0))
}

/// Part 1: compile times of the default profile (whole, by stage, linear,
/// as one libseccomp filter) and of the largest fixture.
fn compile_times(
    cfg: Config,
    caps: &CapSet,
    rows: &mut Vec<Row>,
    notes: &mut Vec<String>,
) -> Result<CompileFigures, String> {
    eprintln!(
        "compiling the default profile: {} warm-ups, {} timed runs",
        cfg.compile_warmup, cfg.compile_runs
    );
    let builtin_profile = || builtin::default_profile().map_err(|e| e.to_string());
    let whole = time_whole(
        cfg,
        caps,
        &builtin::SOURCE,
        Layout::PerArch,
        builtin_profile,
    )?;
    let s = Stats::of(&whole);
    rows.push(Row::with_goal(
        "Compile default profile, median",
        format!("{:.3} ms", s.median),
        format!("< {COMPILE_GOAL_MS} ms"),
        s.median < COMPILE_GOAL_MS,
    ));
    rows.push(Row::info(
        "Compile default profile, min",
        format!("{:.3} ms", s.min),
    ));
    rows.push(Row::info(
        "Compile default profile, max",
        format!("{:.3} ms", s.max),
    ));

    eprintln!("compiling the default profile stage by stage");
    let stages = time_compiles(cfg, 3, |t| {
        let profile = builtin::default_profile().map_err(|e| e.to_string())?;
        t[0] = Instant::now();
        let target = resolve::Target {
            host: moat_runtime::seccomp::arch::Host::detect()?,
            caps: caps.clone(),
        };
        let resolved = resolve::resolve(&profile, builtin::SOURCE, &target);
        t[1] = Instant::now();
        compile::compile(&resolved, options(Dispatch::Auto)).map_err(|e| e.to_string())?;
        t[2] = Instant::now();
        Ok(())
    })?;
    for (i, stage) in [
        "parse JSON",
        "detect host + resolve",
        "compile to BPF (libseccomp, export)",
    ]
    .iter()
    .enumerate()
    {
        rows.push(Row::info(
            format!("Compile default profile, stage: {stage}, median"),
            format!("{:.3} ms", Stats::of(&stages[i]).median),
        ));
    }

    eprintln!("compiling the default profile for the native architecture only");
    let mut native_len = 0;
    let native_only = time_compiles(cfg, 1, |t| {
        let profile = builtin::default_profile().map_err(|e| e.to_string())?;
        let host = moat_runtime::seccomp::arch::Host::detect()?;
        let native = host.native;
        let target = resolve::Target {
            host,
            caps: caps.clone(),
        };
        let mut resolved = resolve::resolve(&profile, builtin::SOURCE, &target);
        resolved.architectures.retain(|a| *a == native);
        let c = compile::compile(&resolved, options(Dispatch::Auto)).map_err(|e| e.to_string())?;
        native_len = c.program.len();
        t[0] = Instant::now();
        Ok(())
    })?;
    rows.push(Row::info(
        "Compile default profile, native architecture only (sub-architectures dropped), median",
        format!("{:.3} ms", Stats::of(&native_only[0]).median),
    ));
    notes.push(format!(
        "\"Native architecture only\" is not what moat runs: it drops the profile's \
         sub-architectures (on x86_64: x86 and x32) after resolving, to show what they \
         cost in libseccomp; its program is {native_len} insns."
    ));

    eprintln!("compiling the default profile with Dispatch::Linear");
    let lin = time_compiles(cfg, 1, |t| {
        let profile = builtin::default_profile().map_err(|e| e.to_string())?;
        compile_for_host(&profile, builtin::SOURCE, caps, options(Dispatch::Linear))
            .map_err(|e| e.to_string())?;
        t[0] = Instant::now();
        Ok(())
    })?;
    rows.push(Row::info(
        "Compile default profile with `Dispatch::Linear`, median",
        format!("{:.3} ms", Stats::of(&lin[0]).median),
    ));

    eprintln!("compiling the default profile as one libseccomp filter (Layout::Combined)");
    let combined = time_whole(
        cfg,
        caps,
        &builtin::SOURCE,
        Layout::Combined,
        builtin_profile,
    )?;
    rows.push(Row::info(
        "Compile default profile as one libseccomp filter (`Layout::Combined`), median",
        format!("{:.3} ms", Stats::of(&combined).median),
    ));
    notes.push(
        "`Layout::Combined` is libseccomp's own way with several architectures (one filter \
         holding them all, exported at once), as runc and crun use it; moat compiles one \
         filter per architecture and chains them (`Layout::PerArch`), with the same verdicts."
            .into(),
    );

    let fixture = time_fixture(cfg, caps, rows, notes)?;
    Ok(CompileFigures {
        default: whole,
        default_combined: combined,
        fixture,
    })
}

/// Times the largest fixture profile in both layouts; `Err` in the outer
/// result is a failure, in the inner one the reason it was not timed.
#[allow(clippy::type_complexity)]
fn time_fixture(
    cfg: Config,
    caps: &CapSet,
    rows: &mut Vec<Row>,
    notes: &mut Vec<String>,
) -> Result<Result<(String, Vec<f64>, Vec<f64>), String>, String> {
    let path = match largest_fixture(caps, notes) {
        Ok(p) => p,
        Err(why) => {
            eprintln!("no fixture profile to time ({why}); skipping");
            rows.push(Row::info("Compile largest fixture", "skipped (see notes)"));
            return Ok(Err(why));
        }
    };
    let name = file_name(&path);
    eprintln!(
        "compiling fixture {name}: {} warm-ups, {} timed runs per layout",
        cfg.compile_warmup, cfg.compile_runs
    );
    let source = Source::File(path.clone());
    let load = || parse::from_file(&path).map_err(|e| e.to_string());
    let per_arch = time_whole(cfg, caps, &source, Layout::PerArch, load)?;
    let combined = time_whole(cfg, caps, &source, Layout::Combined, load)?;
    let s = Stats::of(&per_arch);
    for (what, v) in [("median", s.median), ("min", s.min), ("max", s.max)] {
        rows.push(Row::info(
            format!("Compile fixture {name}, {what}"),
            format!("{v:.3} ms"),
        ));
    }
    rows.push(Row::info(
        format!("Compile fixture {name} as one libseccomp filter (`Layout::Combined`), median"),
        format!("{:.3} ms", Stats::of(&combined).median),
    ));
    Ok(Ok((name, per_arch, combined)))
}

/// Part 2: runs the interleaved rounds (plus one discarded warm-up round).
/// Returns `samples[variant][workload]` (ns per call, one per round) and
/// the first call's outcome per variant and workload (`None` for a skipped
/// variant). A crun that fails in the warm-up round is skipped from then
/// on; any other failure stops the bench.
#[allow(clippy::type_complexity)]
fn syscall_costs(
    cfg: Config,
    variants: &mut [Variant],
    outside: &Outside,
    started: Instant,
) -> Result<(Vec<Vec<Vec<f64>>>, Vec<Vec<Option<Outcome>>>), String> {
    let mut samples = vec![vec![Vec::new(); WORKLOADS.len()]; variants.len()];
    let mut outcomes: Vec<Vec<Option<Outcome>>> = vec![vec![None; WORKLOADS.len()]; variants.len()];
    for round in 0..=cfg.rounds {
        for k in 0..variants.len() {
            let v = (round + k) % variants.len();
            if variants[v].skipped.is_some() {
                continue;
            }
            eprintln!(
                "{}: {} ({:.1} s elapsed)",
                if round == 0 {
                    "warm-up round (discarded)".to_string()
                } else {
                    format!("round {round}/{}", cfg.rounds)
                },
                variants[v].name,
                started.elapsed().as_secs_f64()
            );
            let results = match run_variant(&variants[v], cfg, outside) {
                Ok(r) => r,
                Err(e) if round == 0 && matches!(variants[v].how, How::Crun) => {
                    eprintln!("skipping crun: {e}");
                    variants[v].skipped = Some(format!("crun refused to run: {}", first_line(&e)));
                    continue;
                }
                Err(e) => return Err(e),
            };
            for (w, r) in results.into_iter().enumerate() {
                let first = Outcome {
                    ret: r.ret,
                    errno: r.errno,
                };
                match outcomes[v][w] {
                    Some(o) if !o.same_kind(&first) => {
                        return Err(format!(
                            "{} under {}: first call gave {first} in one round, {o} in another",
                            WORKLOADS[w].label, variants[v].name
                        ))
                    }
                    _ => outcomes[v][w] = Some(first),
                }
                if round > 0 {
                    samples[v][w].push(r.ns_per_call);
                }
            }
        }
    }
    check_outcomes(variants, &outcomes)?;
    Ok((samples, outcomes))
}

fn first_line(s: &str) -> &str {
    s.lines().find(|l| !l.trim().is_empty()).unwrap_or(s).trim()
}

/// Runs every workload once under `v`.
fn run_variant(v: &Variant, cfg: Config, outside: &Outside) -> Result<Vec<ChildResult>, String> {
    match &v.how {
        How::Fork { .. } => run_child(v, cfg),
        How::MoatRun => outside.run(v.name, outside.moat_command()?),
        How::Crun => outside.run(v.name, outside.crun_command()?),
    }
}

/// A private temporary directory (sub-id files, moat's state, crun's state
/// and bundle) and the cgroup parents that did not exist before the bench.
struct Work {
    dir: PathBuf,
    parents: CgroupParents,
}

impl Work {
    fn new() -> Result<Work, String> {
        let dir = std::env::temp_dir().join(format!("moat-seccomp-bench-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        // The workloads' root (host uid 100000) must reach the bundle.
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o755))
            .map_err(|e| format!("{}: {e}", dir.display()))?;
        Ok(Work {
            dir,
            parents: CgroupParents::before(CGROUP_PARENT),
        })
    }

    /// Removes the directory and the `moat-bench` cgroups this run made.
    fn cleanup(&self) {
        self.parents.remove("seccomp_bench");
        if let Err(e) = fs::remove_dir_all(&self.dir) {
            eprintln!(
                "seccomp_bench: warning: could not remove {}: {e}",
                self.dir.display()
            );
        }
    }

    /// An empty file of ours for a workload's stdin (never `/dev/null`,
    /// see [`oci::runtime_command`]).
    fn stdin(&self) -> Result<fs::File, String> {
        let path = self.dir.join("stdin");
        fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| format!("{}: {e}", path.display()))
    }
}

/// What the `moat run` and crun variants need: this program, moat, crun
/// and its bundle, and the CPU the loops pin themselves to.
struct Outside<'a> {
    cfg: Config,
    work: &'a Work,
    exe: PathBuf,
    moat: PathBuf,
    cpu: usize,
    root: bool,
    /// crun and its bundle, or why the crun variant is skipped.
    crun: Result<(PathBuf, PathBuf), String>,
    seq: std::cell::Cell<u64>,
}

impl<'a> Outside<'a> {
    fn new(opts: &Opts, work: &'a Work, cpu: usize) -> Result<Outside<'a>, String> {
        let exe =
            std::env::current_exe().map_err(|e| format!("cannot find this program's path: {e}"))?;
        let root = nix::unistd::geteuid().is_root();
        let mut o = Outside {
            cfg: opts.cfg,
            work,
            exe,
            moat: opts.moat.clone(),
            cpu,
            root,
            crun: Err(String::new()),
            seq: std::cell::Cell::new(0),
        };
        if root {
            let ids = format!("moat:{HOST_ID}:{}\n", ID_RANGE * 100);
            for f in ["subuid", "subgid"] {
                let path = work.dir.join(f);
                fs::write(&path, &ids).map_err(|e| format!("{}: {e}", path.display()))?;
            }
        }
        o.crun = o.setup_crun();
        Ok(o)
    }

    /// The loop's arguments, as this program takes them.
    fn loop_args(&self, exe: &str) -> Vec<String> {
        [
            exe,
            "--loop",
            "all",
            "--calls",
            &self.cfg.calls.to_string(),
            "--cpu",
            &self.cpu.to_string(),
        ]
        .map(String::from)
        .to_vec()
    }

    /// Why the `moat run` variant cannot run (`None` when it can); outside
    /// `--quick` a missing moat binary is an error.
    fn moat_problem(&self, quick: bool) -> Result<Option<String>, String> {
        if !self.root {
            return Ok(Some(
                "needs root (moat run with a user namespace map)".into(),
            ));
        }
        if !self.moat.is_file() {
            let why = format!(
                "no moat binary at {} (cargo build --release --bin moat, or --moat PATH)",
                self.moat.display()
            );
            return if quick { Ok(Some(why)) } else { Err(why) };
        }
        Ok(None)
    }

    /// Why the crun variant cannot run, if it cannot.
    fn crun_problem(&self) -> Option<String> {
        self.crun.as_ref().err().cloned()
    }

    /// Finds crun, checks the cgroup layout, and builds the bundle: this
    /// program and its libraries in the rootfs, the configuration of
    /// [`oci`] running the loop.
    fn setup_crun(&self) -> Result<(PathBuf, PathBuf), String> {
        if !self.root {
            return Err("needs root (rootful crun)".into());
        }
        let crun = oci::which("crun").ok_or("crun is not installed (Debian: crun)")?;
        if let Some(why) = oci::crun_layout_problem() {
            return Err(why);
        }
        let bundle = self.work.dir.join("bundle");
        let rootfs = bundle.join("rootfs");
        oci::make_mount_points(&rootfs).map_err(|e| format!("building the bundle: {e}"))?;
        oci::copy_with_libraries(&rootfs, &self.exe, IN_ROOTFS)
            .map_err(|e| format!("building the bundle: {e}"))?;
        let resolved = oci::resolved_default()?;
        let seccomp = oci::oci_seccomp(&resolved)?;
        oci::check_round_trip(&seccomp, &resolved)?;
        let args = self.loop_args(IN_ROOTFS);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        oci::write_config(
            &bundle,
            &Container {
                args: &args,
                seccomp: &seccomp,
                cgroup_parent: CGROUP_PARENT,
                pids_limit: PIDS_LIMIT,
            },
        )?;
        Ok((crun, bundle))
    }

    /// `moat run … -- <this program> --loop all …`.
    fn moat_command(&self) -> Result<Command, String> {
        let mut c = Command::new(&self.moat);
        c.env("MOAT_SUBUID_FILE", self.work.dir.join("subuid"))
            .env("MOAT_SUBGID_FILE", self.work.dir.join("subgid"))
            .env("MOAT_STATE_DIR", self.work.dir.join("state"))
            .args(["run", "--userns", "auto", "--pids-limit"])
            .arg(PIDS_LIMIT.to_string())
            .args(["--cgroup-parent", CGROUP_PARENT, "--"])
            .args(self.loop_args(&self.exe.to_string_lossy()));
        c.stdin(self.work.stdin()?);
        Ok(c)
    }

    /// `crun run` of the loop's bundle, as a fresh container.
    fn crun_command(&self) -> Result<Command, String> {
        let (crun, bundle) = self.crun.as_ref().map_err(Clone::clone)?;
        self.seq.set(self.seq.get() + 1);
        let id = format!("seccomp-bench-{}-{}", std::process::id(), self.seq.get());
        Ok(oci::runtime_command(
            crun,
            &self.work.dir.join("crun-root"),
            bundle,
            &id,
            self.work.stdin()?,
        ))
    }

    /// Runs `cmd` (a loop under a runtime) and reads its lines.
    fn run(&self, name: &str, mut cmd: Command) -> Result<Vec<ChildResult>, String> {
        let out = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .output()
            .map_err(|e| format!("{name}: cannot start: {e}"))?;
        let stdout = String::from_utf8_lossy(&out.stdout);
        if !out.status.success() {
            return Err(format!(
                "{name} failed ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        parse_child_output(&stdout)
            .ok_or_else(|| format!("{name} printed unreadable results: {stdout:?}"))
    }
}

fn options(dispatch: Dispatch) -> compile::Options {
    compile::Options {
        dispatch,
        ..Default::default()
    }
}

fn file_name(p: &Path) -> String {
    p.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| p.display().to_string())
}

/// Runs `f` `compile_warmup` times untimed, then `compile_runs` times timed
/// one by one. `f` records `marks` instants (its last one is when it is
/// done); returns, per mark, the time in ms since the previous mark (the
/// first from the start of the run).
fn time_compiles(
    cfg: Config,
    marks: usize,
    mut f: impl FnMut(&mut [Instant]) -> Result<(), String>,
) -> Result<Vec<Vec<f64>>, String> {
    let mut t = vec![Instant::now(); marks];
    for _ in 0..cfg.compile_warmup {
        f(&mut t)?;
    }
    let mut ms = vec![Vec::with_capacity(cfg.compile_runs); marks];
    for _ in 0..cfg.compile_runs {
        let start = Instant::now();
        f(&mut t)?;
        let mut prev = start;
        for (i, at) in t.iter().enumerate() {
            ms[i].push(bench::ms(at.duration_since(prev)));
            prev = *at;
        }
    }
    Ok(ms)
}

/// The largest `.json` file in `../shared/fixtures` (by size) that parses
/// and compiles, or why there is none; why it is skipped or why larger
/// files were passed over also goes into `notes`.
fn largest_fixture(caps: &CapSet, notes: &mut Vec<String>) -> Result<PathBuf, String> {
    let skip = |notes: &mut Vec<String>, why: String| {
        notes.push(format!("Fixture timing skipped: {why}."));
        Err(why)
    };
    let Some(dir) = moat_tests::fixtures_dir() else {
        let missing = moat_tests::workspace_root().join("../shared/fixtures");
        return skip(notes, format!("{} does not exist", missing.display()));
    };
    let entries = match std::fs::read_dir(&dir) {
        Ok(e) => e,
        Err(e) => return skip(notes, format!("cannot list {}: {e}", dir.display())),
    };
    let mut files: Vec<(u64, PathBuf)> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .filter_map(|p| Some((std::fs::metadata(&p).ok()?.len(), p)))
        .collect();
    files.sort_by(|a, b| b.cmp(a));
    for (size, path) in files {
        let result = parse::from_file(&path)
            .map_err(|e| e.to_string())
            .and_then(|p| {
                compile_for_host(
                    &p,
                    Source::File(path.clone()),
                    caps,
                    options(Dispatch::Auto),
                )
                .map_err(|e| e.to_string())
            });
        match result {
            Ok((_, c)) => {
                notes.push(format!(
                    "Fixture timed: `{}` ({size} bytes, the largest that compiles; {} syscalls in \
                     the filter, `Auto` picks {}, {} insns).",
                    file_name(&path),
                    c.syscalls_in_filter.len(),
                    if c.binary_tree { "the tree" } else { "linear" },
                    c.program.len()
                ));
                return Ok(path);
            }
            Err(e) => notes.push(format!(
                "Fixture `{}` ({size} bytes) passed over: {}.",
                file_name(&path),
                e.lines().next().unwrap_or("error")
            )),
        }
    }
    skip(notes, format!("no profile in {} compiles", dir.display()))
}

/// A timed loop.
struct Workload {
    label: &'static str,
    /// The plot's x value.
    short: &'static str,
    what: &'static str,
    unit: &'static str,
    socket: bool,
    body: fn() -> libc::c_long,
    /// The syscall the filter decides on (for the static analysis).
    syscall: &'static str,
    nr: libc::c_long,
    args: [u64; 6],
}

const WORKLOADS: [Workload; 3] = [
    Workload {
        label: "getppid (allowed)",
        short: "getppid",
        what: "`getppid()`",
        unit: "call",
        socket: false,
        body: call_getppid,
        syscall: "getppid",
        nr: libc::SYS_getppid,
        args: [0; 6],
    },
    Workload {
        label: "socket+close (arg-filtered)",
        short: "socket+close",
        what: "`socket(AF_UNIX, SOCK_DGRAM, 0)` (then closed)",
        unit: "iter",
        socket: true,
        body: call_socket_close,
        syscall: "socket",
        nr: libc::SYS_socket,
        args: [libc::AF_UNIX as u64, libc::SOCK_DGRAM as u64, 0, 0, 0, 0],
    },
    Workload {
        label: "mount (denied)",
        short: "mount",
        what: "`mount(NULL, NULL, NULL, 0, NULL)`",
        unit: "call",
        socket: false,
        body: call_mount,
        syscall: "mount",
        nr: libc::SYS_mount,
        args: [0; 6],
    },
];

/// Returns the result of `syscall` and sets errno as libc does.
fn call_getppid() -> libc::c_long {
    // SAFETY: no arguments.
    unsafe { libc::syscall(libc::SYS_getppid) }
}

fn call_socket_close() -> libc::c_long {
    // Arguments are passed as full longs: seccomp sees whole registers.
    // SAFETY: integer arguments only; the fd is ours to close.
    unsafe {
        let fd = libc::syscall(
            libc::SYS_socket,
            libc::AF_UNIX as libc::c_long,
            libc::SOCK_DGRAM as libc::c_long,
            0 as libc::c_long,
        );
        if fd >= 0 {
            libc::syscall(libc::SYS_close, fd);
        }
        fd
    }
}

fn call_mount() -> libc::c_long {
    let null: libc::c_long = 0;
    // SAFETY: NULL pointers, which the kernel refuses (or the filter first).
    unsafe { libc::syscall(libc::SYS_mount, null, null, null, null, null) }
}

/// What the first call of a workload returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Outcome {
    ret: i64,
    errno: i32,
}

impl Outcome {
    /// Whether both succeeded, or both failed with the same errno (a
    /// successful `getppid` returns a different pid under each launch).
    fn same_kind(&self, other: &Outcome) -> bool {
        (self.ret >= 0 && other.ret >= 0) || self == other
    }
}

impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.ret < 0 {
            write!(f, "-1 {}", errno_name(self.errno))
        } else {
            write!(f, "{} (success)", self.ret)
        }
    }
}

fn errno_name(e: i32) -> String {
    match e {
        libc::EPERM => "EPERM".into(),
        libc::EFAULT => "EFAULT".into(),
        libc::EINVAL => "EINVAL".into(),
        libc::EACCES => "EACCES".into(),
        libc::ENOENT => "ENOENT".into(),
        libc::EAFNOSUPPORT => "EAFNOSUPPORT".into(),
        e => format!("errno {e}"),
    }
}

/// One workload's result from a child.
struct ChildResult {
    ns_per_call: f64,
    ret: i64,
    errno: i32,
}

/// Forks a child that installs `v`'s filter and runs every workload;
/// returns its results in `WORKLOADS` order.
fn run_child(v: &Variant, cfg: Config) -> Result<Vec<ChildResult>, String> {
    let (rd, wr) = nix::unistd::pipe().map_err(|e| format!("pipe: {e}"))?;
    // SAFETY: this program never starts a thread, so the child may do
    // anything the parent could; it leaves with _exit and never returns.
    match unsafe { nix::unistd::fork() }.map_err(|e| format!("fork: {e}"))? {
        nix::unistd::ForkResult::Child => {
            drop(rd);
            let code =
                std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| child_main(v, cfg, wr)))
                    .unwrap_or(101);
            // SAFETY: leaving the child without running the parent's code.
            unsafe { libc::_exit(code) }
        }
        nix::unistd::ForkResult::Parent { child } => {
            drop(wr);
            let mut text = String::new();
            let read = std::fs::File::from(rd).read_to_string(&mut text);
            let status =
                nix::sys::wait::waitpid(child, None).map_err(|e| format!("waitpid: {e}"))?;
            read.map_err(|e| format!("reading from the {} child: {e}", v.name))?;
            if status != nix::sys::wait::WaitStatus::Exited(child, 0) {
                return Err(format!(
                    "the {} child failed ({status:?}): {}",
                    v.name,
                    text.trim()
                ));
            }
            parse_child_output(&text)
                .ok_or_else(|| format!("the {} child sent unreadable results: {text:?}", v.name))
        }
    }
}

fn parse_child_output(text: &str) -> Option<Vec<ChildResult>> {
    let out: Vec<ChildResult> = text
        .lines()
        .map(|l| {
            let mut f = l.split_whitespace();
            Some(ChildResult {
                ns_per_call: f.next()?.parse().ok()?,
                ret: f.next()?.parse().ok()?,
                errno: f.next()?.parse().ok()?,
            })
        })
        .collect::<Option<_>>()?;
    (out.len() == WORKLOADS.len()).then_some(out)
}

/// The child: install the filter, time every workload, write one line
/// `ns_per_call first_ret first_errno` per workload. Returns the exit code.
fn child_main(v: &Variant, cfg: Config, wr: OwnedFd) -> i32 {
    let mut out = std::fs::File::from(wr);
    if let How::Fork {
        program: Some(program),
        flags,
    } = &v.how
    {
        if !nix::unistd::geteuid().is_root() {
            if let Err(e) = load::set_no_new_privs() {
                let _ = writeln!(out, "no_new_privs: {e}");
                return 1;
            }
        }
        if let Err(e) = load::install(program, *flags) {
            let _ = writeln!(out, "installing the filter: {e}");
            return 1;
        }
    }
    let all: Vec<usize> = (0..WORKLOADS.len()).collect();
    match out.write_all(loop_report(&all, cfg).as_bytes()) {
        Ok(()) => 0,
        Err(_) => 1,
    }
}

/// Runs the timed loops of `workloads` (indices into [`WORKLOADS`]) in this
/// process, under whatever filter it has: one line `ns_per_call first_ret
/// first_errno` each.
fn loop_report(workloads: &[usize], cfg: Config) -> String {
    let mut report = String::new();
    for &i in workloads {
        let w = &WORKLOADS[i];
        let n = if w.socket {
            cfg.socket_calls
        } else {
            cfg.calls
        };
        // The first call's result, errno cleared first so a stale value
        // cannot show.
        // SAFETY: errno is thread-local.
        unsafe { *libc::__errno_location() = 0 };
        let ret = (w.body)();
        let errno = if ret < 0 {
            std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
        } else {
            0
        };
        for _ in 0..n / 10 {
            std::hint::black_box((w.body)());
        }
        let t = Instant::now();
        for _ in 0..n {
            std::hint::black_box((w.body)());
        }
        let ns = t.elapsed().as_nanos() as f64 / n as f64;
        let _ = writeln!(report, "{ns} {ret} {errno}");
    }
    report
}

/// Refuses results that show the measurement is not what it claims: the
/// allowed calls succeed (`getppid` is 0 in a new pid namespace, whose
/// parent is outside it) and, under a filter, `mount` fails with `EPERM`.
fn check_outcomes(variants: &[Variant], outcomes: &[Vec<Option<Outcome>>]) -> Result<(), String> {
    for (v, var) in variants.iter().enumerate() {
        for (w, wl) in WORKLOADS.iter().enumerate() {
            let Some(o) = outcomes[v][w] else {
                continue;
            };
            let ok = match w {
                0 if matches!(var.how, How::Fork { .. }) => o.ret > 0,
                0 | 1 => o.ret >= 0,
                _ if var.filtered() => o.ret < 0 && o.errno == libc::EPERM,
                _ => o.ret < 0,
            };
            if !ok {
                return Err(format!(
                    "{} under {}: unexpected first result {o}",
                    wl.what, var.name
                ));
            }
        }
    }
    Ok(())
}

/// The name of the `moat run` variant.
const MOAT_RUN: &str = "moat run";
/// The name of the crun variant.
const CRUN: &str = "crun";

/// A filter configuration whose loops are timed, or why it is skipped.
struct Variant {
    name: &'static str,
    how: How,
    skipped: Option<String>,
}

/// How a [`Variant`]'s loops are run.
enum How {
    /// In a forked child of this process that installs `program` (none:
    /// no filter) itself.
    Fork {
        program: Option<Program>,
        flags: u32,
    },
    /// As a `moat run` workload (`--loop all`).
    MoatRun,
    /// In a crun container (`--loop all`).
    Crun,
}

impl Variant {
    fn fork(name: &'static str, program: Option<Program>, flags: u32) -> Variant {
        Variant {
            name,
            how: How::Fork { program, flags },
            skipped: None,
        }
    }

    /// The program a forked variant installs.
    fn program(&self) -> Option<&Program> {
        match &self.how {
            How::Fork { program, .. } => program.as_ref(),
            _ => None,
        }
    }

    /// Whether the loops run under a seccomp filter.
    fn filtered(&self) -> bool {
        !matches!(self.how, How::Fork { program: None, .. })
    }
}

/// Indices of the variants in [`measure`]'s list.
const NO_FILTER: usize = 0;
const TREE: usize = 1;
const MOAT: usize = 3;
const CRUN_V: usize = 4;

/// The report section of the per-syscall figures.
const FILTER_COST: &str = "Filter cost";
/// The report section of the compile figures.
const COMPILE_TIME: &str = "Profile compile time";

/// A variant's samples for workload `w`, or why there are none.
fn value(m: &Measured, v: usize, w: usize) -> Value {
    match &m.variants[v].skipped {
        Some(why) => Value::Skipped(why.clone()),
        None => Value::measured(&m.samples[v][w]),
    }
}

/// The JSON's per-syscall figures: `moat run` beside no filter and crun.
fn filter_comparisons(m: &Measured) -> Vec<Comparison> {
    WORKLOADS
        .iter()
        .enumerate()
        .map(|(w, wl)| Comparison {
            note: None,
            section: FILTER_COST.into(),
            figure: wl.label.into(),
            unit: format!("ns/{}", wl.unit),
            moat: value(m, MOAT, w),
            peers: vec![
                Peer {
                    name: "no filter".into(),
                    value: value(m, NO_FILTER, w),
                },
                Peer {
                    name: CRUN.into(),
                    value: value(m, CRUN_V, w),
                },
            ],
            // Without a filter, mount runs the kernel's own error path: a
            // ratio to it is no filter overhead. crun runs the same filter.
            baseline: Some(if wl.syscall == "mount" {
                CRUN.into()
            } else {
                "no filter".into()
            }),
            goal: None,
        })
        .collect()
}

/// The JSON's compile figures: moat's layout beside libseccomp's own.
fn compile_comparisons(c: &CompileFigures) -> Vec<Comparison> {
    let single = |xs: &[f64]| Peer {
        name: SINGLE_FILTER.into(),
        value: Value::measured(xs),
    };
    let default = Value::measured(&c.default);
    let met = default.median().map(|m| m < COMPILE_GOAL_MS);
    let (fixture, fixture_peer) = match &c.fixture {
        Ok((_, per_arch, combined)) => (Value::measured(per_arch), single(combined)),
        Err(why) => (
            Value::Skipped(why.clone()),
            Peer {
                name: SINGLE_FILTER.into(),
                value: Value::Skipped(why.clone()),
            },
        ),
    };
    vec![
        Comparison {
            note: None,
            section: COMPILE_TIME.into(),
            figure: "compile the default profile".into(),
            unit: "ms".into(),
            moat: default,
            peers: vec![single(&c.default_combined)],
            baseline: Some(SINGLE_FILTER.into()),
            goal: Some(Goal {
                text: format!("< {COMPILE_GOAL_MS} ms"),
                met,
            }),
        },
        Comparison {
            note: None,
            section: COMPILE_TIME.into(),
            figure: "compile the largest fixture profile".into(),
            unit: "ms".into(),
            moat: fixture,
            peers: vec![fixture_peer],
            baseline: Some(SINGLE_FILTER.into()),
            goal: None,
        },
    ]
}

/// The `filter-cost` plot: a bar per system call and variant.
fn filter_plot(m: &Measured) -> Plot {
    let series = [
        (NO_FILTER, "no filter"),
        (TREE, "moat filter (in-process)"),
        (MOAT, MOAT_RUN),
        (CRUN_V, CRUN),
    ]
    .iter()
    .filter(|(v, _)| m.variants[*v].skipped.is_none())
    .map(|&(v, name)| Series {
        name: name.into(),
        points: WORKLOADS
            .iter()
            .enumerate()
            .map(|(w, wl)| Point::of(wl.short, &m.samples[v][w]))
            .collect(),
    })
    .collect();
    Plot {
        id: "filter-cost".into(),
        title: "Cost of a system call under the default seccomp profile".into(),
        x_label: "system call".into(),
        y_label: "ns per call (socket+close: per pair)".into(),
        kind: PlotKind::Bars,
        series,
    }
}

/// The Markdown report.
fn render(
    cfg: Config,
    m: &Measured,
    conditions: &[String],
    machine: &[(String, String)],
) -> String {
    let mut s = String::new();
    bench::write_table(&mut s, &m.rows);
    bench::write_machine(&mut s, machine);

    bench::write_conditions(&mut s, conditions);

    let _ = writeln!(s, "\n### Per-round values (ns per call or iteration)\n");
    bench::write_round_header(&mut s, cfg.rounds);
    for (w, wl) in WORKLOADS.iter().enumerate() {
        for (v, var) in m.variants.iter().enumerate() {
            if var.skipped.is_some() {
                continue;
            }
            let _ = write!(s, "| {} | {} |", wl.label, var.name);
            for x in &m.samples[v][w] {
                let _ = write!(s, " {x:.1} |");
            }
            let _ = writeln!(s);
        }
    }
    s
}

/// How the figures were made, one sentence each (the Markdown's
/// conditions and the JSON's).
fn conditions(cfg: Config, m: &Measured, outside: &Outside) -> Vec<String> {
    let mut c = vec![
        format!(
            "Mode: {}; build: {}.",
            bench::mode(cfg.quick),
            bench::build()
        ),
        format!(
            "Pinned to CPU {}; forked children inherit the pinning, the loops under `moat run` \
             and crun pin themselves to it (`--cpu`).",
            m.cpu
        ),
        format!(
            "Compile time: every loop is {} warm-ups, then {} timed runs (whole: parse + \
             detect host + resolve + libseccomp compile + export, `Dispatch::Auto`, Docker's \
             default capabilities; stage medians come from a separate loop). The JSON's \
             baseline \"{SINGLE_FILTER}\" is the same compile with `Layout::Combined`.",
            cfg.compile_warmup, cfg.compile_runs
        ),
        format!(
            "Per-syscall cost: {} rounds after one discarded warm-up round, each running every \
             variant once (order rotated per round); each run times {} calls of `getppid`, {} \
             iterations of `socket`+`close` (both syscalls timed, nothing subtracted) and {} \
             calls of `mount`, each after a warm-up of a tenth as many; figures are medians \
             over the rounds. `tree` is the default profile compiled with \
             `Dispatch::BinaryTree`, `linear` with `Dispatch::Linear`, both installed by a \
             forked child of the harness.",
            cfg.rounds, cfg.calls, cfg.socket_calls, cfg.calls
        ),
        format!(
            "`moat run`: `{} run --userns auto --pids-limit {PIDS_LIMIT} --cgroup-parent \
             {CGROUP_PARENT} -- seccomp_bench --loop all --calls {} --cpu {}` (built-in \
             default profile, Docker's default capabilities, `no_new_privs`); it is moat's \
             figure in the JSON: the filter as the product installs it.",
            outside.moat.display(),
            cfg.calls,
            m.cpu
        ),
        format!(
            "crun: `crun run` of a bundle whose rootfs holds `seccomp_bench` (as `{IN_ROOTFS}`) \
             and the libraries `ldd` lists; `config.json` as launch_bench's (`crun spec \
             --rootless` with user namespace 0:{HOST_ID}:{ID_RANGE}, `pids.limit` \
             {PIDS_LIMIT}, Docker's default capabilities, `noNewPrivileges`) with moat's \
             built-in profile resolved for this host in OCI form; crun compiles it with its \
             own libseccomp."
        ),
        "`mount` is denied by the filter before the mount code runs, while without a filter \
         the kernel's own (slower) error path runs, so its \"/ no filter\" ratios are below 1 \
         and are not a filter overhead; read its \"linear / tree\" and \"moat run / crun\" \
         figures (the JSON's baseline for it is crun)."
            .to_string(),
        "\"BPF insns run\" is computed, not measured: the instructions the program executes \
         for that syscall (counting interpreter, checked against the runtime's), and whether \
         the kernel's seccomp action cache (a port of its `seccomp_is_const_allow` emulation) \
         lets the kernel skip the program for it."
            .to_string(),
        format!(
            "libseccomp {}; `net.core.bpf_jit_enable` = {}.",
            compile::libseccomp_version(),
            read_trimmed("/proc/sys/net/core/bpf_jit_enable")
        ),
    ];
    for v in &m.variants {
        if let Some(why) = &v.skipped {
            c.push(format!("Variant {} skipped: {why}.", v.name));
        }
    }
    c.extend(m.notes.iter().cloned());
    c
}

/// The machine ([`bench::machine`]) and crun's version.
fn machine() -> Vec<(String, String)> {
    let mut out = bench::machine();
    let crun = match oci::which("crun") {
        None => "not installed".to_string(),
        Some(path) => match Command::new(&path)
            .arg("--version")
            .stdin(Stdio::null())
            .stderr(Stdio::null())
            .output()
        {
            Ok(o) if o.status.success() => {
                format!("`{}`", first_line(&String::from_utf8_lossy(&o.stdout)))
            }
            Ok(o) => format!("(`crun --version` failed: {})", o.status),
            Err(e) => format!("(`crun --version`: {e})"),
        },
    };
    out.push(("crun".into(), crun));
    out
}

fn read_trimmed(path: &str) -> String {
    std::fs::read_to_string(path)
        .map(|t| t.trim().to_string())
        .unwrap_or_else(|e| format!("(unreadable: {e})"))
}

/// Pins the process to the highest-numbered CPU it may run on; returns it.
fn pin_to_one_cpu() -> Result<usize, String> {
    use nix::sched::{sched_getaffinity, CpuSet};
    use nix::unistd::Pid;
    let allowed =
        sched_getaffinity(Pid::from_raw(0)).map_err(|e| format!("sched_getaffinity: {e}"))?;
    let cpu = (0..CpuSet::count())
        .rev()
        .find(|&c| allowed.is_set(c).unwrap_or(false))
        .ok_or("no CPU in the affinity mask")?;
    pin_to(cpu)?;
    Ok(cpu)
}

/// Pins the process to `cpu`.
fn pin_to(cpu: usize) -> Result<(), String> {
    use nix::sched::{sched_setaffinity, CpuSet};
    use nix::unistd::Pid;
    let mut one = CpuSet::new();
    one.set(cpu)
        .map_err(|e| format!("CpuSet::set({cpu}): {e}"))?;
    sched_setaffinity(Pid::from_raw(0), &one)
        .map_err(|e| format!("sched_setaffinity to CPU {cpu}: {e}"))
}

const SECCOMP_RET_ALLOW: u32 = 0x7fff_0000;

/// What a program does for one workload's syscall, found without the
/// kernel.
struct Analysis {
    /// Instructions the program executes for it.
    executed: usize,
    /// Whether the kernel's action cache skips the program for it.
    cached: bool,
}

/// Runs `program` on the workload's syscall (native `arch`) counting
/// instructions, checked against the runtime's interpreter, and asks the
/// emulated action cache about it.
fn analyse(program: &Program, w: &Workload, arch: u32) -> Result<Analysis, String> {
    let data = SeccompData {
        nr: w.nr as i32,
        arch,
        instruction_pointer: 0,
        args: w.args,
    };
    let (executed, ret) = trace(program, &data).ok_or("unsupported instruction")?;
    let expected = program.evaluate(&data).map_err(|e| e.to_string())?;
    if ret != expected {
        return Err(format!(
            "trace returned {ret:#x}, the interpreter {expected:#x}"
        ));
    }
    Ok(Analysis {
        executed,
        cached: kernel_caches(program, w.nr as u32, arch)?,
    })
}

/// Whether the kernel's seccomp action cache (Linux 5.11+,
/// `seccomp_is_const_allow`) would mark syscall `nr` on `arch` as always
/// allowed by `p`, so the filter is skipped for it. A port of the kernel's
/// emulator: it follows the program with only `nr` and `arch` known and
/// gives up on any other load or instruction.
fn kernel_caches(p: &Program, nr: u32, arch: u32) -> Result<bool, String> {
    let mut a = 0u32;
    let mut pc = 0usize;
    while pc < p.len() {
        let i = p.0[pc];
        match i.code {
            0x20 => match i.k {
                0 => a = nr,
                4 => a = arch,
                _ => return Ok(false),
            },
            0x06 => return Ok(i.k == SECCOMP_RET_ALLOW),
            0x05 => pc += i.k as usize,
            0x15 | 0x25 | 0x35 | 0x45 => {
                let taken = match i.code {
                    0x15 => a == i.k,
                    0x25 => a > i.k,
                    0x35 => a >= i.k,
                    _ => a & i.k != 0,
                };
                pc += usize::from(if taken { i.jt } else { i.jf });
            }
            0x54 => a &= i.k,
            _ => return Err(format!("pc {pc}: opcode {:#x}", i.code)),
        }
        pc += 1;
    }
    Ok(false)
}

/// Runs `p` on `data` counting executed instructions; `None` on an opcode
/// outside the subset libseccomp emits.
fn trace(p: &Program, data: &SeccompData) -> Option<(usize, u32)> {
    let (mut a, mut x) = (0u32, 0u32);
    let mut mem = [0u32; 16];
    let mut pc = 0usize;
    let mut steps = 0usize;
    // seccomp_data is in native byte order: on little-endian the low word
    // of a u64 comes first.
    let half = |v: u64, second: bool| {
        if second == cfg!(target_endian = "little") {
            (v >> 32) as u32
        } else {
            v as u32
        }
    };
    let word = |k: u32| -> Option<u32> {
        Some(match k {
            0 => data.nr as u32,
            4 => data.arch,
            8 | 12 => half(data.instruction_pointer, k == 12),
            16..=63 if k.is_multiple_of(4) => half(
                data.args[((k - 16) / 8) as usize],
                !(k - 16).is_multiple_of(8),
            ),
            _ => return None,
        })
    };
    while pc < p.len() {
        let i = p.0[pc];
        steps += 1;
        let src = if i.code & 0x08 != 0 { x } else { i.k };
        match i.code {
            0x20 => a = word(i.k)?,
            0x00 => a = i.k,
            0x01 => x = i.k,
            0x60 => a = *mem.get(i.k as usize)?,
            0x61 => x = *mem.get(i.k as usize)?,
            0x02 => *mem.get_mut(i.k as usize)? = a,
            0x03 => *mem.get_mut(i.k as usize)? = x,
            0x54 | 0x5c => a &= src,
            0x44 | 0x4c => a |= src,
            0x07 => x = a,
            0x87 => a = x,
            0x06 => return Some((steps, i.k)),
            0x05 => pc += i.k as usize,
            0x15 | 0x1d | 0x25 | 0x2d | 0x35 | 0x3d | 0x45 | 0x4d => {
                let taken = match i.code & 0xf0 {
                    0x10 => a == src,
                    0x20 => a > src,
                    0x30 => a >= src,
                    _ => a & src != 0,
                };
                pc += usize::from(if taken { i.jt } else { i.jf });
            }
            _ => return None,
        }
        pc += 1;
    }
    None
}
