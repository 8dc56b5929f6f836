//! `seccomp_bench`: how long the seccomp engine takes to build a filter, and
//! what the installed filter costs per system call.
//!
//! Run it with `scripts/bench-seccomp.sh` (release build; writes
//! `docs/benchmarks-seccomp.md`) or directly; `--quick` is a smoke run of a
//! second or two whose figures mean little. The report (Markdown) goes to
//! stdout, progress to stderr; the exit status is 0 only if every
//! measurement ran and every sanity check passed.
//!
//! # Method
//!
//! Compile times are measured first, unpinned: the compiler builds each
//! architecture's filter on its own thread, as in a real launch. Then the
//! process is pinned to one CPU (`sched_setaffinity`, the highest-numbered
//! CPU it may use) for the per-syscall loops; forked children inherit it.
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
//! what they cost), and of a compile with `Dispatch::Linear`. The largest
//! (by file size) profile in `../shared/fixtures` that compiles is timed
//! like the default one, parsed with [`parse::from_file`] (so its timing
//! includes reading the file from the page cache); without the folder its
//! row says "skipped" and the notes say why.
//!
//! **Per-syscall cost.** Three variants: no filter, the default profile
//! compiled with `Dispatch::BinaryTree` (what `Dispatch::Auto` picks for
//! it; the report checks this), and the same compiled with
//! `Dispatch::Linear`. Each measurement is a forked child that installs its
//! filter with [`load::install`] (after `no_new_privs` when not root), then
//! for each workload makes one call whose result and errno it records, runs
//! a warm-up of a tenth of the calls and then a timed tight loop of
//! `libc::syscall` calls, and sends ns/call and the first result to the
//! parent through a pipe. Workloads:
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
//!   "linear / tree" is the figure to read. The errnos seen are reported.
//!
//! The variants are interleaved in rounds: every round runs each variant
//! once, in an order rotated from round to round, so drifting machine noise
//! hits all variants alike; one extra round first is run and discarded.
//! Figures are medians over the rounds; every round's value is listed too.
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

use std::fmt::Write as _;
use std::io::{Read, Write};
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use moat_runtime::caps::CapSet;
use moat_runtime::seccomp::bpf::{Program, SeccompData, MAX_INSNS};
use moat_runtime::seccomp::compile::{self, Dispatch};
use moat_runtime::seccomp::{builtin, compile_for_host, load, parse, resolve, Source};
use moat_tests::bench::{self, Args, Row, Stats};

/// Goal for compiling the built-in default profile, in ms (median).
const COMPILE_GOAL_MS: f64 = 5.0;

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

  --quick           tiny counts (a smoke run of a few seconds at most)
  --rounds N        interleaved rounds of the per-syscall measurements (default 7)
  --calls N         calls per timed loop for getppid and mount (default 2000000);
                    socket+close runs N/10 iterations
  --compile-runs N  timed compilations per profile (default 200, after 20 warm-ups)";

fn parse_args(args: &mut Args) -> Result<Config, String> {
    let mut cfg = if args.quick() {
        Config::QUICK
    } else {
        Config::FULL
    };
    while let Some(a) = args.next_flag() {
        match a.as_str() {
            "--rounds" => cfg.rounds = args.positive(&a)?,
            "--calls" => {
                cfg.calls = args.positive(&a)?;
                cfg.socket_calls = (cfg.calls / 10).max(1);
            }
            "--compile-runs" => cfg.compile_runs = args.positive(&a)?,
            other => return Err(bench::unknown_flag(other)),
        }
    }
    Ok(cfg)
}

fn main() -> ExitCode {
    bench::main("seccomp_bench", USAGE, parse_args, run)
}

fn run(cfg: Config) -> Result<String, String> {
    let started = Instant::now();
    let caps = CapSet::docker_default();
    let mut rows = Vec::new();
    let mut notes = Vec::new();

    // Unpinned: the compiler builds each architecture's filter on its own
    // thread, as it does in a real launch.
    compile_times(cfg, &caps, &mut rows, &mut notes)?;
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

    let variants = [
        Variant {
            name: "no filter",
            program: None,
            flags: 0,
        },
        Variant {
            name: "tree",
            program: Some(tree.program),
            flags: tree.flags,
        },
        Variant {
            name: "linear",
            program: Some(linear.program),
            flags: linear.flags,
        },
    ];
    let native = moat_runtime::seccomp::arch::Host::detect()
        .ok()
        .and_then(|h| h.native.audit_arch());
    let (samples, outcomes) = syscall_costs(cfg, &variants, started)?;
    let medians: Vec<Vec<f64>> = samples
        .iter()
        .map(|per_w| per_w.iter().map(|s| Stats::of(s).median).collect())
        .collect();
    let (none, tr, lin) = (0, 1, 2);
    for (w, wl) in WORKLOADS.iter().enumerate() {
        for (v, var) in variants.iter().enumerate() {
            rows.push(Row::info(
                format!("{}, {}", wl.label, var.name),
                format!("{:.1} ns/{}", medians[v][w], wl.unit),
            ));
        }
        let ratio = |a: usize, b: usize| format!("{:.3}×", medians[a][w] / medians[b][w]);
        let delta = |a: usize, b: usize| format!("{:+.1} ns", medians[a][w] - medians[b][w]);
        for (what, value) in [
            ("tree / no filter", ratio(tr, none)),
            ("linear / no filter", ratio(lin, none)),
            ("linear / tree", ratio(lin, tr)),
            ("tree − no filter", delta(tr, none)),
            ("linear − no filter", delta(lin, none)),
            ("linear − tree", delta(lin, tr)),
        ] {
            rows.push(Row::info(format!("{}: {what}", wl.label), value));
        }
        for v in [tr, lin] {
            let program = variants[v].program.as_ref().expect("filtered variant");
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
    for (w, wl) in WORKLOADS.iter().enumerate() {
        let seen: Vec<String> = variants
            .iter()
            .enumerate()
            .map(|(v, var)| format!("{} → {}", var.name, outcomes[v][w]))
            .collect();
        notes.push(format!(
            "{}: first call returned {}.",
            wl.what,
            seen.join("; ")
        ));
    }
    eprintln!("done in {:.1} s", started.elapsed().as_secs_f64());

    Ok(render(cfg, cpu, &rows, &notes, &variants, &samples))
}

/// Part 1: compile times of the default profile (whole, by stage, and
/// linear) and of the largest fixture.
fn compile_times(
    cfg: Config,
    caps: &CapSet,
    rows: &mut Vec<Row>,
    notes: &mut Vec<String>,
) -> Result<(), String> {
    eprintln!(
        "compiling the default profile: {} warm-ups, {} timed runs",
        cfg.compile_warmup, cfg.compile_runs
    );
    let whole = time_compiles(cfg, 1, |t| {
        let profile = builtin::default_profile().map_err(|e| e.to_string())?;
        compile_for_host(&profile, builtin::SOURCE, caps, options(Dispatch::Auto))
            .map_err(|e| e.to_string())?;
        t[0] = Instant::now();
        Ok(())
    })?;
    let s = Stats::of(&whole[0]);
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

    match largest_fixture(caps, notes) {
        Some(path) => {
            let name = file_name(&path);
            eprintln!(
                "compiling fixture {name}: {} warm-ups, {} timed runs",
                cfg.compile_warmup, cfg.compile_runs
            );
            let ms = time_compiles(cfg, 1, |t| {
                let profile = parse::from_file(&path).map_err(|e| e.to_string())?;
                compile_for_host(
                    &profile,
                    Source::File(path.clone()),
                    caps,
                    options(Dispatch::Auto),
                )
                .map_err(|e| e.to_string())?;
                t[0] = Instant::now();
                Ok(())
            })?;
            let s = Stats::of(&ms[0]);
            for (what, v) in [("median", s.median), ("min", s.min), ("max", s.max)] {
                rows.push(Row::info(
                    format!("Compile fixture {name}, {what}"),
                    format!("{v:.3} ms"),
                ));
            }
        }
        None => {
            eprintln!("no fixture profile to time (see the notes); skipping");
            rows.push(Row::info("Compile largest fixture", "skipped (see notes)"));
        }
    }
    Ok(())
}

/// Part 2: runs the interleaved rounds (plus one discarded warm-up round).
/// Returns `samples[variant][workload]` (ns per call, one per round) and
/// the first call's outcome per variant and workload.
#[allow(clippy::type_complexity)]
fn syscall_costs(
    cfg: Config,
    variants: &[Variant],
    started: Instant,
) -> Result<(Vec<Vec<Vec<f64>>>, Vec<Vec<Outcome>>), String> {
    let mut samples = vec![vec![Vec::new(); WORKLOADS.len()]; variants.len()];
    let mut outcomes: Vec<Vec<Option<Outcome>>> = vec![vec![None; WORKLOADS.len()]; variants.len()];
    for round in 0..=cfg.rounds {
        for k in 0..variants.len() {
            let v = (round + k) % variants.len();
            let var = &variants[v];
            eprintln!(
                "{}: {} ({:.1} s elapsed)",
                if round == 0 {
                    "warm-up round (discarded)".to_string()
                } else {
                    format!("round {round}/{}", cfg.rounds)
                },
                var.name,
                started.elapsed().as_secs_f64()
            );
            let results = run_child(var, cfg)?;
            for (w, r) in results.into_iter().enumerate() {
                let first = Outcome {
                    ret: r.ret,
                    errno: r.errno,
                };
                match outcomes[v][w] {
                    Some(o) if o != first => {
                        return Err(format!(
                            "{} under {}: first call gave {first} in one round, {o} in another",
                            WORKLOADS[w].label, var.name
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
    let outcomes: Vec<Vec<Outcome>> = outcomes
        .into_iter()
        .map(|per_w| {
            per_w
                .into_iter()
                .map(|o| o.expect("every round ran"))
                .collect()
        })
        .collect();
    check_outcomes(variants, &outcomes)?;
    Ok((samples, outcomes))
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
/// and compiles; why it is `None` or why larger files were passed over goes
/// into `notes`.
fn largest_fixture(caps: &CapSet, notes: &mut Vec<String>) -> Option<PathBuf> {
    let Some(dir) = moat_tests::fixtures_dir() else {
        notes.push(format!(
            "Fixture timing skipped: {} does not exist.",
            moat_tests::workspace_root()
                .join("../shared/fixtures")
                .display()
        ));
        return None;
    };
    let entries = match std::fs::read_dir(&dir) {
        Ok(e) => e,
        Err(e) => {
            notes.push(format!(
                "Fixture timing skipped: cannot list {}: {e}.",
                dir.display()
            ));
            return None;
        }
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
                return Some(path);
            }
            Err(e) => notes.push(format!(
                "Fixture `{}` ({size} bytes) passed over: {}.",
                file_name(&path),
                e.lines().next().unwrap_or("error")
            )),
        }
    }
    notes.push(format!(
        "Fixture timing skipped: no profile in {} compiles.",
        dir.display()
    ));
    None
}

/// A filter configuration measured in its own child.
struct Variant {
    name: &'static str,
    program: Option<Program>,
    flags: u32,
}

/// A timed loop.
struct Workload {
    label: &'static str,
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
    if let Some(program) = &v.program {
        if !nix::unistd::geteuid().is_root() {
            if let Err(e) = load::set_no_new_privs() {
                let _ = writeln!(out, "no_new_privs: {e}");
                return 1;
            }
        }
        if let Err(e) = load::install(program, v.flags) {
            let _ = writeln!(out, "installing the filter: {e}");
            return 1;
        }
    }
    let mut report = String::new();
    for w in &WORKLOADS {
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
    match out.write_all(report.as_bytes()) {
        Ok(()) => 0,
        Err(_) => 1,
    }
}

/// Refuses results that show the measurement is not what it claims.
fn check_outcomes(variants: &[Variant], outcomes: &[Vec<Outcome>]) -> Result<(), String> {
    for (v, var) in variants.iter().enumerate() {
        for (w, wl) in WORKLOADS.iter().enumerate() {
            let o = outcomes[v][w];
            let ok = match w {
                0 => o.ret > 0,
                1 => o.ret >= 0,
                _ if var.program.is_some() => o.ret < 0 && o.errno == libc::EPERM,
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

fn render(
    cfg: Config,
    cpu: usize,
    rows: &[Row],
    notes: &[String],
    variants: &[Variant],
    samples: &[Vec<Vec<f64>>],
) -> String {
    let mut s = String::new();
    bench::write_table(&mut s, rows);
    bench::write_machine(&mut s, &bench::machine());

    let _ = writeln!(s, "\n### Conditions\n");
    let _ = writeln!(
        s,
        "- Mode: {}; build: {}.",
        bench::mode(cfg.quick),
        bench::build()
    );
    let _ = writeln!(s, "- Pinned to CPU {cpu}; children inherit the pinning.");
    let _ = writeln!(
        s,
        "- Compile time: every loop is {} warm-ups, then {} timed runs (whole: parse + \
         detect host + resolve + libseccomp compile + export, `Dispatch::Auto`, Docker's \
         default capabilities; stage medians come from a separate loop).",
        cfg.compile_warmup, cfg.compile_runs
    );
    let _ = writeln!(
        s,
        "- Per-syscall cost: {} rounds after one discarded warm-up round, each running every \
         variant once in a forked child (order rotated per round); each child times {} calls \
         of `getppid`, {} iterations of `socket`+`close` (both syscalls timed, nothing \
         subtracted) and {} calls of `mount`, each after a warm-up of a tenth as many; \
         figures are medians over the rounds. `tree` is the default profile compiled with \
         `Dispatch::BinaryTree`, `linear` with `Dispatch::Linear`.",
        cfg.rounds, cfg.calls, cfg.socket_calls, cfg.calls
    );
    let _ = writeln!(
        s,
        "- `mount` is denied by the filter before the mount code runs, while without a filter \
         the kernel's own (slower) error path runs, so its \"/ no filter\" ratios are below 1 \
         and are not a filter overhead; read its \"linear / tree\" figure."
    );
    let _ = writeln!(
        s,
        "- \"BPF insns run\" is computed, not measured: the instructions the program executes \
         for that syscall (counting interpreter, checked against the runtime's), and whether \
         the kernel's seccomp action cache (a port of its `seccomp_is_const_allow` emulation) \
         lets the kernel skip the program for it."
    );
    let _ = writeln!(
        s,
        "- libseccomp {}; `net.core.bpf_jit_enable` = {}.",
        compile::libseccomp_version(),
        read_trimmed("/proc/sys/net/core/bpf_jit_enable")
    );
    for n in notes {
        let _ = writeln!(s, "- {n}");
    }

    let _ = writeln!(s, "\n### Per-round values (ns per call or iteration)\n");
    let _ = write!(s, "| Workload | Variant |");
    for r in 1..=cfg.rounds {
        let _ = write!(s, " R{r} |");
    }
    let _ = writeln!(s);
    let _ = writeln!(s, "|---|---|{}", "---|".repeat(cfg.rounds));
    for (w, wl) in WORKLOADS.iter().enumerate() {
        for (v, var) in variants.iter().enumerate() {
            let _ = write!(s, "| {} | {} |", wl.label, var.name);
            for x in &samples[v][w] {
                let _ = write!(s, " {x:.1} |");
            }
            let _ = writeln!(s);
        }
    }
    s
}

fn read_trimmed(path: &str) -> String {
    std::fs::read_to_string(path)
        .map(|t| t.trim().to_string())
        .unwrap_or_else(|e| format!("(unreadable: {e})"))
}

/// Pins the process to the highest-numbered CPU it may run on; returns it.
fn pin_to_one_cpu() -> Result<usize, String> {
    use nix::sched::{sched_getaffinity, sched_setaffinity, CpuSet};
    use nix::unistd::Pid;
    let allowed =
        sched_getaffinity(Pid::from_raw(0)).map_err(|e| format!("sched_getaffinity: {e}"))?;
    let cpu = (0..CpuSet::count())
        .rev()
        .find(|&c| allowed.is_set(c).unwrap_or(false))
        .ok_or("no CPU in the affinity mask")?;
    let mut one = CpuSet::new();
    one.set(cpu)
        .map_err(|e| format!("CpuSet::set({cpu}): {e}"))?;
    sched_setaffinity(Pid::from_raw(0), &one).map_err(|e| format!("sched_setaffinity: {e}"))?;
    Ok(cpu)
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
