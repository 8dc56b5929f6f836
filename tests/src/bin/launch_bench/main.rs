//! `launch_bench`: how long `moat run` takes to launch `/bin/true`, side by
//! side with crun and runc launching it from an OCI bundle under an
//! equivalent configuration, with bubblewrap launching it under the same
//! seccomp filter, and with plain `/bin/true` as the floor.
//!
//! Run it with `scripts/bench.sh --only launch` (installs crun, runc, bubblewrap
//! and busybox, builds in release mode, makes crun work
//! on this hybrid cgroup host, writes `docs/benchmarks-launch.md`) or
//! directly as root; `--quick` is a smoke run of a few seconds whose figures
//! mean little, and it skips a peer that is not installed or does not run
//! here (saying why). The report (Markdown) goes to stdout, progress to
//! stderr; with `--json PATH` the figures also go to PATH as
//! [`moat_tests::results::Results`] (harness `launch`, section `Launch`, plot
//! `launch`) for `bench_report`. The exit status is 0 only if every variant
//! that was not skipped ran and exited 0 every time.
//!
//! # Variants
//!
//! * `/bin/true`: spawned directly; the floor (fork/exec of a tiny program).
//! * `moat run --pids-limit 100 --userns auto --cgroup-parent moat-bench --
//!   /bin/true`, with the built-in default seccomp profile and Docker's
//!   default capabilities. `MOAT_SUBUID_FILE`/`MOAT_SUBGID_FILE` point at
//!   private files holding `moat:100000:6553600` (so the user namespace maps
//!   0:100000:65536) and `MOAT_STATE_DIR` at a private directory.
//! * `moat run` again, the same way but with an empty seccomp cache before
//!   every run (`MOAT_CACHE_DIR` pointing at a private directory that is
//!   removed, untimed, before each run): the cold launch, which compiles the
//!   profile and stores it. The warm `moat run` above uses the default cache
//!   under its private state directory, filled by the warm-up rounds, as
//!   every launch after the first of a profile does.
//! * With `--compare-moat PATH`, another moat binary run the same way (warm),
//!   in the same rounds: before/after ratios that the machine's load hits
//!   alike.
//! * `crun run` and `runc run` of `/bin/true` from one OCI bundle (a busybox
//!   rootfs: `bin/busybox` and `bin/true` linking to it), each with its own
//!   `--root` state directory and a fresh container id per run. The
//!   `config.json` and its seccomp object are [`moat_tests::oci`]'s: `crun
//!   spec --rootless` made equivalent to the moat run (uid/gid mapping
//!   0:100000:65536, `pids.limit` 100, cgroups under `moat-bench`, Docker's
//!   default capabilities, `noNewPrivileges`, moat's built-in profile
//!   resolved for this host in OCI form, checked by a round trip through
//!   moat's parser). moat makes user, PID, mount, cgroup and IPC
//!   namespaces (and its cgroups), but no network or UTS namespace and no
//!   rootfs; which namespaces and cgroups each variant really got is
//!   measured and reported (below).
//! * `bwrap --unshare-user --uid 0 --gid 0 --ro-bind / / --seccomp 3 --
//!   /bin/true`: bubblewrap with the same filter, as the raw cBPF program
//!   `moat profile compile default` writes (compiled once before timing,
//!   untimed, into a private file that is opened for each run and passed
//!   as fd 3). The root is the host's, bound read-only: the least that lets
//!   `/bin/true` run. bwrap sets no pids limit (it makes no cgroup) and maps
//!   a single uid (0 to root), so it does less than the others.
//!
//! # Timing
//!
//! After the warm-up rounds (discarded), every timed round runs each variant
//! once, in an order rotated from one round to the next so that drifting
//! machine noise hits all variants alike. One run is timed from outside with
//! `Instant`: from just before `spawn` (the `Command` is built before) until
//! `wait4` has reaped the process, stdout to a file, stderr to a file.
//! Figures are the median, min and max over the timed rounds; ratios divide
//! medians by crun's median (the goal: moat's warm median at most
//! [`GOAL_RATIO`] of it; the cold launch is reported without a goal). Every
//! run must exit 0, or the bench fails.
//!
//! # Memory
//!
//! The peak RSS of each launcher comes from the `rusage` that `wait4` returns
//! for that process: `ru_maxrss` of the launcher process itself (not the
//! harness's `RUSAGE_CHILDREN` total). Note that the kernel folds into it the
//! peaks of the launcher's own children that it reaped (`RUSAGE_BOTH`): for
//! moat that is the workload, which before its `execve` is a copy of moat;
//! for runc it includes `runc init`, a re-execution of runc. The Markdown
//! gives the largest value over the timed runs; the JSON gives the median,
//! min and max over them.
//!
//! # Namespaces and cgroups
//!
//! Before timing, each launcher runs a probe instead of `/bin/true`
//! (`busybox sh -c` printing `/proc/self/ns/*`, `/proc/self/cgroup` and
//! `/proc/self/uid_map`); the report lists the namespaces that differ from
//! the harness's own and the cgroups the workload was in. For crun, runc and
//! bwrap the probe doubles as the check that they accept the configuration.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use moat_tests::bench::{self, ms, Args};
use moat_tests::oci::{self, Container};
use moat_tests::results::Results;

use conditions::{conditions, machine};
use json::{comparisons, plot};
use launcher::{compile_bpf, Launcher, Work};
use probe::{check_dev_null, probe_all, PROBE_SCRIPT};
use report::render;
use variants::{find_variants, Kind, Variant};

mod conditions;
mod json;
mod launcher;
mod probe;
mod report;
mod variants;

/// The cgroup parent of every variant's cgroups.
const CGROUP_PARENT: &str = "moat-bench";
/// The workload's pids limit.
const PIDS_LIMIT: u64 = 100;
/// Namespaces as `/proc/self/ns` names them (not the `*_for_children` ones).
const NAMESPACES: [&str; 8] = ["cgroup", "ipc", "mnt", "net", "pid", "time", "user", "uts"];
/// The descriptor bwrap reads its seccomp program from.
const BWRAP_SECCOMP_FD: i32 = 3;
/// The report section of every figure.
const SECTION: &str = "Launch";
/// The goal: moat's median launch at most this fraction of crun's.
const GOAL_RATIO: f64 = 0.75;

const USAGE: &str = "\
usage: launch_bench [--quick] [--warmups N] [--rounds N] [--moat PATH]
                    [--compare-moat PATH] [--bundle DIR] [--busybox PATH]
                    [--json PATH]

  --quick          smoke run (1 warm-up, 5 rounds, a few seconds); skips crun,
                   runc or bwrap when not installed or not working here,
                   saying why
  --warmups N      discarded rounds first (default 10)
  --rounds N       timed rounds; each runs every variant once (default 30)
  --moat PATH      the moat binary (default: `moat` beside this program)
  --compare-moat PATH
                   another moat binary (e.g. a build of main), timed in the
                   same rounds as one more variant, for before/after ratios
                   on a busy machine
  --bundle DIR     OCI bundle whose rootfs/ (with bin/true) exists; its
                   config.json is (re)written here (default: a private
                   bundle built from --busybox)
  --busybox PATH   static busybox for the private bundle and for the
                   namespace probes (default /bin/busybox)
  --json PATH      also write the figures as benchmark results (JSON) to PATH

Needs root. Progress goes to stderr, the Markdown report to stdout.";

/// Command-line options.
struct Opts {
    quick: bool,
    warmups: usize,
    rounds: usize,
    moat: PathBuf,
    compare_moat: Option<PathBuf>,
    bundle: Option<PathBuf>,
    busybox: PathBuf,
    json: Option<PathBuf>,
}

fn parse_args(args: &mut Args) -> Result<Opts, String> {
    let quick = args.quick();
    let mut opts = Opts {
        quick,
        warmups: if quick { 1 } else { 10 },
        rounds: if quick { 5 } else { 30 },
        moat: std::env::current_exe()
            .map_err(|e| format!("cannot find this program's path: {e}"))?
            .with_file_name("moat"),
        compare_moat: None,
        bundle: None,
        busybox: PathBuf::from("/bin/busybox"),
        json: None,
    };
    while let Some(a) = args.next_flag() {
        match a.as_str() {
            "--warmups" => opts.warmups = args.number(&a)?,
            "--rounds" => opts.rounds = args.positive(&a)?,
            "--moat" => opts.moat = args.value(&a)?.into(),
            "--compare-moat" => opts.compare_moat = Some(args.value(&a)?.into()),
            "--bundle" => opts.bundle = Some(args.value(&a)?.into()),
            "--busybox" => opts.busybox = args.value(&a)?.into(),
            "--json" => opts.json = Some(args.output_path(&a)?),
            other => return Err(bench::unknown_flag(other)),
        }
    }
    Ok(opts)
}

fn main() -> ExitCode {
    bench::main("launch_bench", USAGE, parse_args, |opts| {
        // SAFETY: geteuid cannot fail.
        if unsafe { libc::geteuid() } != 0 {
            return Err(
                "needs root (moat run with a user namespace map, rootful crun and runc)".into(),
            );
        }
        let work = Work::new()?;
        let outcome = run(&opts, &work);
        work.cleanup();
        let (report, results) = outcome?;
        if let Some(path) = &opts.json {
            results.write(path)?;
        }
        Ok(report)
    })
}

fn run(opts: &Opts, work: &Work) -> Result<(String, Results), String> {
    let started = Instant::now();
    check_dev_null()?;
    if !opts.moat.is_file() {
        return Err(format!(
            "{}: no moat binary (build it: cargo build --release --bin moat, or pass --moat)",
            opts.moat.display()
        ));
    }
    if let Some(other) = opts.compare_moat.as_ref().filter(|m| !m.is_file()) {
        return Err(format!("--compare-moat {}: no such file", other.display()));
    }

    // The bundle and its seccomp profile.
    let bundle = match &opts.bundle {
        Some(b) => b.clone(),
        None => work.dir.join("bundle"),
    };
    let have_busybox = opts.busybox.is_file();
    let mut bundle_problem = None;
    if opts.bundle.is_some() {
        if !bundle.join("rootfs/bin/true").exists() {
            return Err(format!(
                "{}: no rootfs/bin/true in the bundle",
                bundle.display()
            ));
        }
    } else if have_busybox {
        oci::build_rootfs(&bundle, &opts.busybox)?;
    } else {
        bundle_problem = Some(format!(
            "no static busybox at {} for the bundle's rootfs (Debian: busybox-static)",
            opts.busybox.display()
        ));
    }
    let resolved = oci::resolved_default()?;
    let seccomp = oci::oci_seccomp(&resolved)?;
    oci::check_round_trip(&seccomp, &resolved)?;

    let mut variants = find_variants(opts, bundle_problem.as_deref())?;
    // bwrap's filter, compiled once and untimed.
    let mut bpf = None;
    if variants
        .iter()
        .any(|v| v.kind == Kind::Bwrap && v.skipped.is_none())
    {
        let path = work.dir.join("default.bpf");
        compile_bpf(&opts.moat, &path)?;
        bpf = Some(path);
    }

    // Probes: which namespaces and cgroups each launcher gives its workload;
    // for crun, runc and bwrap also the check that they accept the
    // configuration.
    let mut launcher = Launcher {
        opts,
        work,
        bundle: bundle.clone(),
        bpf,
        seq: 0,
    };
    let container = |args| Container {
        args,
        seccomp: &seccomp,
        cgroup_parent: CGROUP_PARENT,
        pids_limit: PIDS_LIMIT,
    };
    let probe_args = [
        "/bin/busybox",
        "sh",
        "-c",
        PROBE_SCRIPT,
        "sh",
        "/bin/busybox",
    ];
    if bundle_problem.is_none() {
        oci::write_config(&bundle, &container(&probe_args))?;
    }
    probe_all(opts, &mut launcher, &mut variants, have_busybox)?;
    if bundle_problem.is_none() {
        oci::write_config(&bundle, &container(&["/bin/true"]))?;
    }

    time_rounds(opts, &mut launcher, &mut variants)?;

    let conditions = conditions(opts, work, &resolved, &seccomp, started.elapsed());
    let machine = machine(&variants);
    let report = render(&variants, &conditions, &machine);
    let mut results = Results::new("launch", opts.quick);
    results.comparisons = comparisons(&variants);
    results.plots = vec![plot(&variants)];
    results.machine = machine;
    results.conditions = conditions;
    Ok((report, results))
}

/// The warm-ups, then the timed rounds, each running every variant that is
/// not skipped once, in rotating order.
fn time_rounds(
    opts: &Opts,
    launcher: &mut Launcher,
    variants: &mut [Variant],
) -> Result<(), String> {
    let active: Vec<usize> = (0..variants.len())
        .filter(|&i| variants[i].skipped.is_none())
        .collect();
    let total = opts.warmups + opts.rounds;
    for round in 0..total {
        let timed = round >= opts.warmups;
        let mut line = if timed {
            format!("round {}/{}:", round - opts.warmups + 1, opts.rounds)
        } else {
            format!("warm-up {}/{}:", round + 1, opts.warmups)
        };
        for k in 0..active.len() {
            let i = active[(k + round) % active.len()];
            let s = launcher.time_once(&variants[i])?;
            let _ = write!(line, " {} {:.1} ms", variants[i].kind.label(), ms(s.wall));
            if timed {
                variants[i].samples.push(s);
            }
        }
        eprintln!("launch_bench: {line}");
    }
    Ok(())
}

fn first_line(s: &str) -> &str {
    s.lines().find(|l| !l.trim().is_empty()).unwrap_or(s).trim()
}
