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
//! * `crun run` and `runc run` of `/bin/true` from one OCI bundle (a busybox
//!   rootfs: `bin/busybox` and `bin/true` linking to it), each with its own
//!   `--root` state directory and a fresh container id per run. The
//!   `config.json` and its seccomp object are [`moat_tests::oci`]'s: `crun
//!   spec --rootless` made equivalent to the moat run (uid/gid mapping
//!   0:100000:65536, `pids.limit` 100, cgroups under `moat-bench`, Docker's
//!   default capabilities, `noNewPrivileges`, moat's built-in profile
//!   resolved for this host in OCI form, checked by a round trip through
//!   moat's parser). moat itself makes only a user namespace (and its
//!   cgroups); which namespaces and cgroups each variant really got is
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
//! medians by crun's median (the goal: moat at or below it). Every run must
//! exit 0, or the bench fails.
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
use std::fs::{self, File};
use std::os::fd::AsRawFd;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use moat_runtime::seccomp::resolve;
use moat_tests::bench::{self, ms, Args, Row, Stats};
use moat_tests::oci::{self, CgroupParents, Container, HOST_ID, ID_RANGE, OCI_NAMESPACES};
use moat_tests::results::{Comparison, Goal, Peer, Plot, PlotKind, Point, Results, Series, Value};
use serde_json::Value as Json;

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

const USAGE: &str = "\
usage: launch_bench [--quick] [--warmups N] [--rounds N] [--moat PATH]
                    [--bundle DIR] [--busybox PATH] [--json PATH]

  --quick          smoke run (1 warm-up, 5 rounds, a few seconds); skips crun,
                   runc or bwrap when not installed or not working here,
                   saying why
  --warmups N      discarded rounds first (default 10)
  --rounds N       timed rounds; each runs every variant once (default 30)
  --moat PATH      the moat binary (default: `moat` beside this program)
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
        bundle: None,
        busybox: PathBuf::from("/bin/busybox"),
        json: None,
    };
    while let Some(a) = args.next_flag() {
        match a.as_str() {
            "--warmups" => opts.warmups = args.number(&a)?,
            "--rounds" => opts.rounds = args.positive(&a)?,
            "--moat" => opts.moat = args.value(&a)?.into(),
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

/// A private temporary directory (state, sub-id files, logs, the default
/// bundle, bwrap's filter), and the cgroup parents that did not exist
/// before the bench.
struct Work {
    dir: PathBuf,
    parents: CgroupParents,
}

impl Work {
    fn new() -> Result<Work, String> {
        let dir = std::env::temp_dir().join(format!("moat-launch-bench-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        // The containers' root (host uid 100000) must reach the bundle.
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o755))
            .map_err(|e| format!("{}: {e}", dir.display()))?;
        let ids = format!("moat:{HOST_ID}:{}\n", ID_RANGE * 100);
        for f in ["subuid", "subgid"] {
            fs::write(dir.join(f), &ids).map_err(|e| format!("{f}: {e}"))?;
        }
        Ok(Work {
            dir,
            parents: CgroupParents::before(CGROUP_PARENT),
        })
    }

    /// `name` in the directory, opened for writing (truncated) or reading
    /// (created empty if missing).
    fn file(&self, name: &str, write: bool) -> Result<File, String> {
        let path = self.dir.join(name);
        fs::OpenOptions::new()
            .read(!write)
            .write(true)
            .create(true)
            .truncate(write)
            .open(&path)
            .map_err(|e| format!("{}: {e}", path.display()))
    }

    /// Removes the directory and the `moat-bench` cgroups this run made
    /// (children first; a cgroup still in use stays, with a warning).
    fn cleanup(&self) {
        self.parents.remove("launch_bench");
        if let Err(e) = fs::remove_dir_all(&self.dir) {
            eprintln!(
                "launch_bench: warning: could not remove {}: {e}",
                self.dir.display()
            );
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Floor,
    Moat,
    Crun,
    Runc,
    Bwrap,
}

impl Kind {
    /// Every variant, in the order of the report's rows.
    const ALL: [Kind; 5] = [Kind::Moat, Kind::Crun, Kind::Runc, Kind::Bwrap, Kind::Floor];

    /// The name in the Markdown report.
    fn label(self) -> &'static str {
        match self {
            Kind::Floor => "/bin/true",
            Kind::Moat => "moat run",
            Kind::Crun => "crun run",
            Kind::Runc => "runc run",
            Kind::Bwrap => "bwrap",
        }
    }

    /// The name in the JSON results (a peer's column, a plot's x value).
    fn peer(self) -> &'static str {
        match self {
            Kind::Floor => "/bin/true",
            Kind::Moat => "moat",
            Kind::Crun => "crun",
            Kind::Runc => "runc",
            Kind::Bwrap => "bwrap",
        }
    }

    /// The peer program found on `PATH`.
    fn program(self) -> Option<&'static str> {
        match self {
            Kind::Crun => Some("crun"),
            Kind::Runc => Some("runc"),
            Kind::Bwrap => Some("bwrap"),
            _ => None,
        }
    }

    /// The Debian package of the peer program.
    fn package(self) -> Option<&'static str> {
        match self {
            Kind::Bwrap => Some("bubblewrap"),
            k => k.program(),
        }
    }
}

/// One timed run.
#[derive(Clone, Copy)]
struct Sample {
    wall: Duration,
    /// `ru_maxrss` in KiB.
    maxrss_kib: i64,
}

/// A variant to measure, or why it is skipped.
struct Variant {
    kind: Kind,
    /// The launcher (the peer program's path for crun, runc and bwrap).
    exe: PathBuf,
    skipped: Option<String>,
    probe: Option<Probe>,
    samples: Vec<Sample>,
}

/// What a probe saw from inside the workload.
struct Probe {
    /// Namespaces that differ from the harness's.
    new_namespaces: Vec<&'static str>,
    /// `/proc/self/cgroup` lines that differ from the harness's own.
    cgroups: Vec<String>,
    /// `/proc/self/uid_map`, one line per extent, whitespace collapsed.
    uid_map: Vec<String>,
}

/// Launch commands for every variant.
struct Launcher<'a> {
    opts: &'a Opts,
    work: &'a Work,
    bundle: PathBuf,
    /// bwrap's seccomp program (raw cBPF), when bwrap is measured.
    bpf: Option<PathBuf>,
    seq: u64,
}

impl Launcher<'_> {
    /// The command that runs `argv` under `v` (for crun and runc `argv` is
    /// in the bundle's `config.json` instead). Its stdin is an empty file
    /// of ours, never `/dev/null` (see [`oci::runtime_command`]).
    fn command(&mut self, v: &Variant, argv: &[&str]) -> Result<Command, String> {
        let stdin = self.work.file("stdin", false)?;
        let mut c = match v.kind {
            Kind::Floor => {
                let mut c = Command::new(argv[0]);
                c.args(&argv[1..]);
                c
            }
            Kind::Moat => {
                let mut c = Command::new(&v.exe);
                c.env("MOAT_SUBUID_FILE", self.work.dir.join("subuid"))
                    .env("MOAT_SUBGID_FILE", self.work.dir.join("subgid"))
                    .env("MOAT_STATE_DIR", self.work.dir.join("state"))
                    .args(["run", "--pids-limit", &PIDS_LIMIT.to_string()])
                    .args(["--userns", "auto", "--cgroup-parent", CGROUP_PARENT, "--"])
                    .args(argv);
                c
            }
            Kind::Crun | Kind::Runc => {
                self.seq += 1;
                let name = v.kind.peer();
                let id = format!("bench-{}-{}", std::process::id(), self.seq);
                let root = self.work.dir.join(format!("{name}-root"));
                return Ok(oci::runtime_command(
                    &v.exe,
                    &root,
                    &self.bundle,
                    &id,
                    stdin,
                ));
            }
            Kind::Bwrap => self.bwrap(v, argv)?,
        };
        c.stdin(stdin);
        Ok(c)
    }

    /// `bwrap … --seccomp 3 -- argv`, with the filter file opened afresh
    /// (bwrap reads it to the end, so a shared offset would be spent after
    /// one run) and handed over as fd 3.
    fn bwrap(&self, v: &Variant, argv: &[&str]) -> Result<Command, String> {
        let bpf = self
            .bpf
            .as_ref()
            .ok_or("bwrap: no compiled seccomp program")?;
        let file = File::open(bpf).map_err(|e| format!("{}: {e}", bpf.display()))?;
        let mut c = Command::new(&v.exe);
        c.args(["--unshare-user", "--uid", "0", "--gid", "0"])
            .args(["--ro-bind", "/", "/"])
            .args(["--seccomp", &BWRAP_SECCOMP_FD.to_string(), "--"])
            .args(argv);
        pass_fd(&mut c, file, BWRAP_SECCOMP_FD);
        Ok(c)
    }

    /// Runs `v` once on `/bin/true`, timed, and checks it exits 0. Its
    /// stdout and stderr go to files of ours (see [`Launcher::command`]).
    fn time_once(&mut self, v: &Variant) -> Result<Sample, String> {
        let stem = v.kind.label().replace(['/', ' '], "_");
        let log = self.work.dir.join(format!("{stem}.stderr"));
        let mut cmd = self.command(v, &["/bin/true"])?;
        cmd.stdout(self.work.file(&format!("{stem}.stdout"), true)?)
            .stderr(self.work.file(&format!("{stem}.stderr"), true)?);
        let start = Instant::now();
        let child = cmd
            .spawn()
            .map_err(|e| format!("{}: cannot start {}: {e}", v.kind.label(), v.exe.display()))?;
        let (status, ru) = wait4(child.id() as i32)?;
        let wall = start.elapsed();
        if !(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0) {
            let stderr = fs::read_to_string(&log).unwrap_or_default();
            return Err(format!(
                "{} of /bin/true failed ({}): {}",
                v.kind.label(),
                describe_status(status),
                stderr.trim()
            ));
        }
        Ok(Sample {
            wall,
            maxrss_kib: ru.ru_maxrss,
        })
    }

    /// Runs the namespace probe under `v`.
    fn probe(&mut self, v: &Variant, own: &Own) -> Result<Probe, String> {
        let busybox = self.opts.busybox.to_string_lossy().into_owned();
        let out = self
            .command(v, &[&busybox, "sh", "-c", PROBE_SCRIPT, "sh", &busybox])?
            .output()
            .map_err(|e| format!("{}: cannot start {}: {e}", v.kind.label(), v.exe.display()))?;
        let stdout = String::from_utf8_lossy(&out.stdout);
        if !out.status.success() {
            return Err(format!(
                "the probe failed ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        let mut probe = Probe {
            new_namespaces: Vec::new(),
            cgroups: Vec::new(),
            uid_map: Vec::new(),
        };
        for line in stdout.lines() {
            let (tag, rest) = line.split_once(' ').unwrap_or((line, ""));
            match tag {
                "ns" => {
                    let (name, link) = rest.split_once(' ').unwrap_or((rest, ""));
                    let Some(&ns) = NAMESPACES.iter().find(|n| **n == name) else {
                        continue;
                    };
                    let host = own
                        .ns
                        .iter()
                        .find(|(n, _)| n == ns)
                        .map(|(_, l)| l.as_str());
                    if host != Some(link.trim()) {
                        probe.new_namespaces.push(ns);
                    }
                }
                "cg" if !own.cgroups.iter().any(|c| c == rest) => {
                    probe.cgroups.push(rest.to_string());
                }
                "map" => probe
                    .uid_map
                    .push(rest.split_whitespace().collect::<Vec<_>>().join(" ")),
                _ => {}
            }
        }
        if probe.uid_map.is_empty() {
            return Err(format!("the probe printed nothing useful:\n{stdout}"));
        }
        Ok(probe)
    }
}

/// Makes `file` the child's descriptor `target`, inherited across `execve`
/// (`dup2` clears close-on-exec on the copy; when the file already has
/// that number, the flag is cleared by hand). The parent's copy closes when
/// the command is dropped.
fn pass_fd(c: &mut Command, file: File, target: i32) {
    // SAFETY: only async-signal-safe calls (dup2, fcntl) between fork and
    // exec, on descriptors the closure owns or is about to create.
    unsafe {
        c.pre_exec(move || {
            let src = file.as_raw_fd();
            let rc = if src == target {
                libc::fcntl(target, libc::F_SETFD, 0)
            } else {
                libc::dup2(src, target)
            };
            if rc < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// Compiles the built-in default profile to raw cBPF with `moat profile
/// compile` (what bwrap takes), into `out`.
fn compile_bpf(moat: &Path, out: &Path) -> Result<(), String> {
    let o = Command::new(moat)
        .args(["profile", "compile", "default", "--output"])
        .arg(out)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run {} profile compile: {e}", moat.display()))?;
    if !o.status.success() {
        return Err(format!(
            "{} profile compile default failed ({}): {}",
            moat.display(),
            o.status,
            String::from_utf8_lossy(&o.stderr).trim()
        ));
    }
    match fs::metadata(out) {
        Ok(m) if m.len() > 0 && m.len() % 8 == 0 => Ok(()),
        Ok(m) => Err(format!(
            "{}: {} bytes is not a cBPF program (8 bytes an instruction)",
            out.display(),
            m.len()
        )),
        Err(e) => Err(format!("{}: {e}", out.display())),
    }
}

/// Prints the workload's namespaces, cgroups and uid map, one tagged line
/// each. `$1` is the busybox binary: applets are run through it, so the
/// rootfs needs no more links than `bin/true`.
const PROBE_SCRIPT: &str = "\
b=$1
for n in cgroup ipc mnt net pid time user uts; do echo \"ns $n $($b readlink /proc/self/ns/$n)\"; done
$b cat /proc/self/cgroup | while read -r l; do echo \"cg $l\"; done
$b cat /proc/self/uid_map | while read -r l; do echo \"map $l\"; done";

fn wait4(pid: i32) -> Result<(i32, libc::rusage), String> {
    let mut status = 0;
    // SAFETY: rusage is plain data; zero is a valid value.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    loop {
        // SAFETY: waiting for our own child with valid out-pointers.
        let r = unsafe { libc::wait4(pid, &mut status, 0, &mut ru) };
        if r == pid {
            return Ok((status, ru));
        }
        let e = std::io::Error::last_os_error();
        if e.kind() != std::io::ErrorKind::Interrupted {
            return Err(format!("wait4({pid}): {e}"));
        }
    }
}

fn describe_status(status: i32) -> String {
    if libc::WIFEXITED(status) {
        format!("exit code {}", libc::WEXITSTATUS(status))
    } else if libc::WIFSIGNALED(status) {
        format!("killed by signal {}", libc::WTERMSIG(status))
    } else {
        format!("wait status {status:#x}")
    }
}

/// The harness's own namespaces and cgroups, which the probes compare with.
struct Own {
    /// `(name, link)` of `/proc/self/ns/<name>`.
    ns: Vec<(String, String)>,
    /// `/proc/self/cgroup` lines.
    cgroups: Vec<String>,
}

impl Own {
    fn read() -> Own {
        let ns = NAMESPACES
            .iter()
            .filter_map(|n| {
                let link = fs::read_link(format!("/proc/self/ns/{n}")).ok()?;
                Some((n.to_string(), link.to_string_lossy().into_owned()))
            })
            .collect();
        let cgroups = fs::read_to_string("/proc/self/cgroup")
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect();
        Own { ns, cgroups }
    }
}

/// runc replaces a container's stdio by its `/dev/null` when their device
/// numbers match, and a regular file has the same (0) as a pipe: a
/// `/dev/null` that is not the null device silently swallows the probe's
/// output (and every `> /dev/null` on the host fills a file).
fn check_dev_null() -> Result<(), String> {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    let m = fs::metadata("/dev/null").map_err(|e| format!("/dev/null: {e}"))?;
    if m.file_type().is_char_device() && m.rdev() == libc::makedev(1, 3) {
        return Ok(());
    }
    Err(format!(
        "/dev/null is not the null device (mode {:o}, owner {}); restore it first: \
         rm /dev/null && mknod -m 666 /dev/null c 1 3",
        m.mode(),
        m.uid()
    ))
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

/// Every variant, with the reason a peer is skipped. Outside `--quick` a
/// missing peer is an error.
fn find_variants(opts: &Opts, bundle_problem: Option<&str>) -> Result<Vec<Variant>, String> {
    let mut variants = Vec::new();
    for kind in Kind::ALL {
        let (exe, skipped) = match kind.program() {
            None if kind == Kind::Moat => (opts.moat.clone(), None),
            None => (PathBuf::from("/bin/true"), None),
            Some(p) => match oci::which(p) {
                Some(path) if kind == Kind::Bwrap => (path, None),
                Some(path) => (path, bundle_problem.map(str::to_string)),
                None => (
                    PathBuf::from(p),
                    Some(format!(
                        "{p} is not installed (Debian: {})",
                        kind.package().unwrap_or(p)
                    )),
                ),
            },
        };
        if let (Some(why), false) = (&skipped, opts.quick) {
            return Err(format!(
                "{}: {why} (scripts/setup.sh installs what it needs; --quick skips it)",
                kind.label()
            ));
        }
        if let Some(why) = &skipped {
            eprintln!("launch_bench: skipping {}: {why}", kind.label());
        }
        variants.push(Variant {
            kind,
            exe,
            skipped,
            probe: None,
            samples: Vec::new(),
        });
    }
    Ok(variants)
}

/// Runs the namespace probe under every variant that is not skipped. In
/// `--quick` a peer whose probe fails is skipped (it does not run here);
/// otherwise that is an error.
fn probe_all(
    opts: &Opts,
    launcher: &mut Launcher,
    variants: &mut [Variant],
    have_busybox: bool,
) -> Result<(), String> {
    let own = Own::read();
    for v in variants.iter_mut() {
        let needs_busybox = matches!(v.kind, Kind::Moat | Kind::Bwrap);
        if v.skipped.is_some() || v.kind == Kind::Floor || (needs_busybox && !have_busybox) {
            continue;
        }
        eprintln!("launch_bench: probing {}", v.kind.label());
        match launcher.probe(v, &own) {
            Ok(p) => v.probe = Some(p),
            Err(e) if opts.quick && v.kind != Kind::Moat => {
                let mut why = format!("it does not run here: {}", first_line(&e));
                if let (Kind::Crun, Some(layout)) = (v.kind, oci::crun_layout_problem()) {
                    why = format!("{layout} ({why})");
                }
                eprintln!("launch_bench: skipping {}: {e}", v.kind.label());
                v.skipped = Some(why);
            }
            Err(e) => return Err(format!("{}: {e}", v.kind.label())),
        }
    }
    Ok(())
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

/// Median, min and max of the wall times, in ms.
fn stats(samples: &[Sample]) -> Stats {
    Stats::of(&samples.iter().map(|s| ms(s.wall)).collect::<Vec<_>>())
}

fn rss_mib(s: &Sample) -> f64 {
    s.maxrss_kib as f64 / 1024.0
}

fn find(variants: &[Variant], k: Kind) -> Option<&Variant> {
    variants.iter().find(|v| v.kind == k)
}

/// The variant `k` when it was measured.
fn measured(variants: &[Variant], k: Kind) -> Option<&Variant> {
    find(variants, k).filter(|v| v.skipped.is_none())
}

fn skip_reason(variants: &[Variant], k: Kind) -> String {
    find(variants, k)
        .and_then(|v| v.skipped.clone())
        .unwrap_or_else(|| "not measured".into())
}

/// `f` of every timed run of `k`, or why there are none.
fn value(variants: &[Variant], k: Kind, f: fn(&Sample) -> f64) -> Value {
    match measured(variants, k) {
        Some(v) => Value::measured(&v.samples.iter().map(f).collect::<Vec<_>>()),
        None => Value::Skipped(skip_reason(variants, k)),
    }
}

/// The JSON figures: launch latency with the goal, and peak RSS.
fn comparisons(variants: &[Variant]) -> Vec<Comparison> {
    let wall = |s: &Sample| ms(s.wall);
    let peers = |kinds: &[Kind], f: fn(&Sample) -> f64| {
        kinds
            .iter()
            .map(|&k| Peer {
                name: k.peer().into(),
                value: value(variants, k, f),
            })
            .collect::<Vec<_>>()
    };
    let moat = value(variants, Kind::Moat, wall);
    let crun = value(variants, Kind::Crun, wall);
    let met = match (moat.median(), crun.median()) {
        (Some(m), Some(c)) => Some(m <= c),
        _ => None,
    };
    vec![
        Comparison {
            note: None,
            section: SECTION.into(),
            figure: "launch /bin/true".into(),
            unit: "ms".into(),
            moat,
            peers: peers(&[Kind::Crun, Kind::Runc, Kind::Bwrap, Kind::Floor], wall),
            baseline: Some("crun".into()),
            goal: Some(Goal {
                text: "≤ crun median".into(),
                met,
            }),
        },
        Comparison {
            note: None,
            section: SECTION.into(),
            figure: "peak RSS of the launcher".into(),
            unit: "MiB".into(),
            moat: value(variants, Kind::Moat, rss_mib),
            peers: peers(&[Kind::Crun, Kind::Runc, Kind::Bwrap], rss_mib),
            baseline: Some("crun".into()),
            goal: None,
        },
    ]
}

/// The `launch` plot: one bar per measured launcher.
fn plot(variants: &[Variant]) -> Plot {
    let points = Kind::ALL
        .iter()
        .filter_map(|&k| measured(variants, k))
        .map(|v| {
            let xs: Vec<f64> = v.samples.iter().map(|s| ms(s.wall)).collect();
            Point::of(v.kind.peer(), &xs)
        })
        .collect();
    Plot {
        id: "launch".into(),
        title: "Launch latency of /bin/true".into(),
        x_label: "launcher".into(),
        y_label: "ms (median; bars: min to max)".into(),
        kind: PlotKind::Bars,
        series: vec![Series {
            name: "median latency".into(),
            points,
        }],
    }
}

/// The Markdown report: the main table, the namespace table, the machine,
/// the conditions and every timed run.
fn render(variants: &[Variant], conditions: &[String], machine: &[(String, String)]) -> String {
    let mut s = String::new();
    bench::write_table(&mut s, &rows(variants));
    write_namespaces(&mut s, variants);
    bench::write_machine(&mut s, machine);
    bench::write_conditions(&mut s, conditions);
    let _ = writeln!(s, "\n### Every timed run (ms, in round order)\n");
    for v in variants.iter().filter(|v| v.skipped.is_none()) {
        let runs: Vec<String> = v
            .samples
            .iter()
            .map(|x| format!("{:.1}", ms(x.wall)))
            .collect();
        let _ = writeln!(s, "- {}: {}", v.kind.label(), runs.join(", "));
    }
    s
}

/// The rows of the main table.
fn rows(variants: &[Variant]) -> Vec<Row> {
    let median = |k: Kind| measured(variants, k).map(|v| stats(&v.samples).median);
    let crun = median(Kind::Crun);
    let mut rows = Vec::new();
    for k in Kind::ALL {
        let label = k.label();
        let Some(v) = measured(variants, k) else {
            rows.push(Row::info(
                format!("{label}, median"),
                format!("skipped: {}", skip_reason(variants, k)),
            ));
            continue;
        };
        let Stats {
            median: med,
            min,
            max,
        } = stats(&v.samples);
        let mut row = Row::info(format!("{label}, median"), format!("{med:.2} ms"));
        if k == Kind::Moat {
            match crun {
                Some(c) => {
                    row.goal = format!("≤ crun median ({c:.2} ms)");
                    row.met = bench::yes_no(med <= c).into();
                }
                None => row.goal = "≤ crun median (crun skipped)".into(),
            }
        }
        rows.push(row);
        rows.push(Row::info(format!("{label}, min"), format!("{min:.2} ms")));
        rows.push(Row::info(format!("{label}, max"), format!("{max:.2} ms")));
    }
    for k in [Kind::Moat, Kind::Runc, Kind::Bwrap, Kind::Floor] {
        let figure = format!("{} / crun run, median", k.label());
        let mut row = match (median(k), crun) {
            (Some(x), Some(c)) => Row::info(&figure, format!("{:.3}×", x / c)),
            _ => Row::info(&figure, "n/a (a variant was skipped)"),
        };
        if k == Kind::Moat {
            row.goal = "≤ 1.000×".into();
            if let (Some(x), Some(c)) = (median(k), crun) {
                row.met = bench::yes_no(x <= c).into();
            }
        }
        rows.push(row);
    }
    if let (Some(m), Some(f)) = (median(Kind::Moat), median(Kind::Floor)) {
        rows.push(Row::info(
            "moat run − /bin/true, median (launch overhead)",
            format!("{:.2} ms", m - f),
        ));
    }
    for k in [Kind::Moat, Kind::Crun, Kind::Runc, Kind::Bwrap] {
        let figure = format!(
            "Peak RSS of the {} process (`ru_maxrss`)",
            k.program().unwrap_or("moat")
        );
        match measured(variants, k) {
            Some(v) => {
                let max = v.samples.iter().map(|s| s.maxrss_kib).max().unwrap_or(0);
                rows.push(Row::info(figure, format!("{:.1} MiB", max as f64 / 1024.0)));
            }
            None => rows.push(Row::info(
                figure,
                format!("skipped: {}", skip_reason(variants, k)),
            )),
        }
    }
    rows
}

/// Appends the table of namespaces and cgroups the probes saw.
fn write_namespaces(s: &mut String, variants: &[Variant]) {
    let _ = writeln!(
        s,
        "\n### Namespaces and cgroups of the workload (measured)\n"
    );
    let _ = writeln!(
        s,
        "Seen from inside by the probe (`/proc/self/ns/*` compared with the harness's own, \
         `/proc/self/cgroup` entries other than `/`, `/proc/self/uid_map`).\n"
    );
    let _ = writeln!(
        s,
        "| Launcher | New namespaces | uid map | Cgroups (hierarchy:controllers:path) |"
    );
    let _ = writeln!(s, "|---|---|---|---|");
    let _ = writeln!(s, "| /bin/true | none | host | the harness's |");
    for v in variants.iter().filter(|v| v.kind != Kind::Floor) {
        match (&v.probe, &v.skipped) {
            (Some(p), _) => {
                let cgroups = if p.cgroups.is_empty() {
                    "the harness's".into()
                } else {
                    p.cgroups
                        .iter()
                        .map(|c| format!("`{c}`"))
                        .collect::<Vec<_>>()
                        .join("<br>")
                };
                let _ = writeln!(
                    s,
                    "| {} | {} | {} | {cgroups} |",
                    v.kind.label(),
                    if p.new_namespaces.is_empty() {
                        "none".into()
                    } else {
                        p.new_namespaces.join(", ")
                    },
                    p.uid_map.join("; "),
                );
            }
            (None, Some(why)) => {
                let _ = writeln!(s, "| {} | skipped: {why} | | |", v.kind.label());
            }
            (None, None) => {
                let _ = writeln!(s, "| {} | not probed (no busybox) | | |", v.kind.label());
            }
        }
    }
}

/// How the figures were made, one sentence each (the Markdown's
/// conditions and the JSON's).
fn conditions(
    opts: &Opts,
    work: &Work,
    resolved: &resolve::Resolved,
    seccomp: &Json,
    elapsed: Duration,
) -> Vec<String> {
    let n_args = resolved.rules.iter().filter(|r| !r.args.is_empty()).count();
    vec![
        format!(
            "Mode: {}; harness build: {}; {} warm-up rounds, then {} timed rounds, each running \
             every variant once in rotating order; whole commands timed from outside (spawn to \
             `wait4`); {:.1} s in all.",
            bench::mode(opts.quick),
            bench::build(),
            opts.warmups,
            opts.rounds,
            elapsed.as_secs_f64()
        ),
        format!(
            "moat: `{} run --pids-limit {PIDS_LIMIT} --userns auto --cgroup-parent \
             {CGROUP_PARENT} -- /bin/true` (built-in default seccomp profile, Docker's default \
             capabilities, `no_new_privs`), sub-ids `moat:{HOST_ID}:{}` from \
             `MOAT_SUBUID_FILE`/`MOAT_SUBGID_FILE`, private `MOAT_STATE_DIR`.",
            opts.moat.display(),
            ID_RANGE * 100
        ),
        format!(
            "crun, runc: `<runtime> --root <private dir> run --bundle <bundle> <fresh id>`; the \
             bundle's rootfs is a static busybox with `bin/true` linked to it; `config.json` is \
             `crun spec --rootless` (namespaces {}; its mounts, masked and read-only paths, \
             read-only root) with uid/gid map 0:{HOST_ID}:{ID_RANGE}, `pids.limit` \
             {PIDS_LIMIT}, `cgroupsPath` under `/{CGROUP_PARENT}`, Docker's default \
             capabilities, `noNewPrivileges`, no rlimits, no terminal.",
            OCI_NAMESPACES.join(", ")
        ),
        format!(
            "bwrap: `bwrap --unshare-user --uid 0 --gid 0 --ro-bind / / --seccomp \
             {BWRAP_SECCOMP_FD} -- /bin/true`, fd {BWRAP_SECCOMP_FD} being the raw cBPF of \
             `moat profile compile default` (compiled once, untimed); bwrap has no pids limit \
             (it makes no cgroup) and maps only one uid (0 to root), and it sets \
             `no_new_privs` itself."
        ),
        format!(
            "Seccomp for crun and runc: moat's built-in profile resolved for this host ({}) and \
             Docker's default capabilities, as OCI `linux.seccomp`: default {}, {} rules \
             ({n_args} with argument conditions), {} bytes of JSON; parsed back by moat's \
             parser it resolves to the same rules.",
            resolved
                .architectures
                .iter()
                .map(|a| a.name())
                .collect::<Vec<_>>()
                .join(", "),
            resolved.default_action,
            resolved.rules.len(),
            seccomp.to_string().len()
        ),
        "Peak RSS is `ru_maxrss` from `wait4` on the launcher's pid (the Markdown gives the \
         largest over the timed runs, the JSON the median, min and max). The kernel includes \
         the peaks of the launcher's reaped children in it: for moat the workload (a copy of \
         moat until its `execve`), for runc `runc init` (a re-execution of runc), for crun and \
         bwrap their own forks."
            .to_string(),
        format!("Cgroup layout: {}.", cgroup_layout()),
        format!(
            "State directories (moat's, crun's and runc's `--root`) are private ones on {}; \
             their defaults (`/run/moat`, `/run/crun`, `/run/runc`) are on {}.",
            fs_type(&work.dir),
            fs_type(Path::new("/run"))
        ),
    ]
}

/// Where the pids controller is and what cgroup v2 has (crun refuses a
/// hybrid host while v2 has any controller).
fn cgroup_layout() -> String {
    let mounts = fs::read_to_string("/proc/self/mounts").unwrap_or_default();
    let v1: Vec<String> = mounts
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.len() > 3 && f[2] == "cgroup").then(|| {
                f[3].split(',')
                    .filter(|o| {
                        !matches!(*o, "rw" | "ro" | "nosuid" | "nodev" | "noexec" | "relatime")
                    })
                    .collect::<Vec<_>>()
                    .join(",")
            })
        })
        .collect();
    let v2 = mounts.lines().find_map(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        (f.len() > 2 && f[2] == "cgroup2").then(|| f[1].to_string())
    });
    let v2_controllers = v2
        .as_ref()
        .and_then(|m| fs::read_to_string(Path::new(m).join("cgroup.controllers")).ok())
        .map(|c| c.trim().to_string());
    let v2_text = match (&v2, &v2_controllers) {
        (Some(m), Some(c)) if c.is_empty() => format!("cgroup v2 at `{m}` with no controllers"),
        (Some(m), Some(c)) => format!("cgroup v2 at `{m}` with controllers `{c}`"),
        (Some(m), None) => format!("cgroup v2 at `{m}`"),
        (None, _) => "no cgroup v2".into(),
    };
    if v1.is_empty() {
        format!("v2 only ({v2_text})")
    } else {
        format!(
            "hybrid: cgroup v1 hierarchies `{}`; {v2_text}",
            v1.join("`, `")
        )
    }
}

/// The file system type of the mount `path` is on (longest mount point
/// prefix in `/proc/self/mounts`).
fn fs_type(path: &Path) -> String {
    let mounts = fs::read_to_string("/proc/self/mounts").unwrap_or_default();
    mounts
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.len() > 2 && path.starts_with(f[1])).then(|| (f[1].len(), f[2].to_string()))
        })
        .max_by_key(|(len, _)| *len)
        .map(|(_, t)| t)
        .unwrap_or_else(|| "(unknown)".into())
}

/// The machine ([`bench::machine`]) and the peers' versions.
fn machine(variants: &[Variant]) -> Vec<(String, String)> {
    let mut out = bench::machine();
    for v in variants.iter().filter(|v| v.kind.program().is_some()) {
        let name = v.kind.program().unwrap_or_default();
        let package = v.kind.package().unwrap_or(name);
        let text = if oci::which(name).is_none() {
            "not installed".to_string()
        } else {
            format!(
                "`{}` (Debian package {package} {})",
                command_line(&v.exe.to_string_lossy(), &["--version"]),
                package_version(package)
            )
        };
        out.push((name.to_string(), text));
    }
    out.push((
        "busybox".to_string(),
        format!(
            "Debian package busybox-static {}",
            package_version("busybox-static")
        ),
    ));
    out
}

/// The first line of a command's stdout, or why there is none.
fn command_line(program: &str, args: &[&str]) -> String {
    match Command::new(program)
        .args(args)
        .stderr(Stdio::null())
        .output()
    {
        Ok(o) if o.status.success() => first_line(&String::from_utf8_lossy(&o.stdout)).to_string(),
        Ok(o) => format!("(`{program}` failed: {})", o.status),
        Err(e) => format!("(`{program}`: {e})"),
    }
}

fn package_version(package: &str) -> String {
    match Command::new("dpkg-query")
        .args(["-W", "-f", "${Version}", package])
        .stderr(Stdio::null())
        .output()
    {
        Ok(o) if o.status.success() && !o.stdout.is_empty() => {
            String::from_utf8_lossy(&o.stdout).trim().to_string()
        }
        _ => "(not installed)".into(),
    }
}
