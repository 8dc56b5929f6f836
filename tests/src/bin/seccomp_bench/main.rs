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
//!
//! [`parse::from_file`]: moat_runtime::seccomp::parse::from_file
//! [`load::install`]: moat_runtime::seccomp::load::install
//! [`Program::evaluate`]: moat_runtime::seccomp::bpf::Program::evaluate
//! [`kernel_caches`]: analysis::kernel_caches

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use moat_runtime::caps::CapSet;
use moat_runtime::seccomp::bpf::MAX_INSNS;
use moat_runtime::seccomp::compile::{self, Dispatch};
use moat_runtime::seccomp::{builtin, compile_for_host};
use moat_tests::bench::{self, Args, Row};
use moat_tests::results::Results;

use compile_time::{compile_times, options, CompileFigures};
use json::{compile_comparisons, filter_comparisons, filter_plot};
use outside::{Outside, Work};
use report::{conditions, machine, render};
use variants::{per_syscall_rows, syscall_costs, How, Variant, CRUN, MOAT_RUN};
use workloads::{loop_report, WORKLOADS};

mod analysis;
mod compile_time;
mod json;
mod outside;
mod report;
mod variants;
mod workloads;

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

fn first_line(s: &str) -> &str {
    s.lines().find(|l| !l.trim().is_empty()).unwrap_or(s).trim()
}

/// Indices of the variants in [`measure`]'s list.
const NO_FILTER: usize = 0;
const TREE: usize = 1;
const MOAT: usize = 3;
const CRUN_V: usize = 4;

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
