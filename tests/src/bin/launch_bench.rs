//! `launch_bench`: how long `moat run` takes to launch `/bin/true`, side by
//! side with crun and runc launching it from an OCI bundle under an
//! equivalent configuration, and with plain `/bin/true` as the floor.
//!
//! Run it with `scripts/bench-launch.sh` (installs crun, runc and busybox,
//! builds in release mode, builds the bundle, makes crun work on this hybrid
//! cgroup host, writes `docs/benchmarks-launch.md`) or directly as root;
//! `--quick` is a smoke run of a few seconds whose figures mean little, and
//! it skips a peer that is not installed or does not run here (saying why).
//! The report (Markdown) goes to stdout, progress to stderr; the exit status
//! is 0 only if every variant that was not skipped ran and exited 0 every
//! time.
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
//!   `config.json` follows `crun spec --rootless`, i.e. the namespaces pid,
//!   network, ipc, uts, user and mount, its mounts (`/proc`, a `/dev` tmpfs,
//!   devpts, `/dev/shm`, mqueue, read-only `/sys` and `/sys/fs/cgroup`), its
//!   masked and read-only paths and a read-only root, changed to be
//!   equivalent to the moat run: uid/gid mapping 0:100000:65536,
//!   `linux.resources.pids.limit` 100, cgroups under `moat-bench`, Docker's
//!   default capabilities (bounding, effective, permitted; inheritable and
//!   ambient empty, as moat), `noNewPrivileges`, no rlimits, no terminal, and
//!   moat's built-in seccomp profile in OCI form (below). moat itself makes
//!   only a user namespace (and its cgroups); which namespaces and cgroups
//!   each variant really got is measured and reported (below).
//!
//! # Timing
//!
//! After the warm-up rounds (discarded), every timed round runs each variant
//! once, in an order rotated from one round to the next so that drifting
//! machine noise hits all variants alike. One run is timed from outside with
//! `Instant`: from just before `spawn` (the `Command` is built before) until
//! `wait4` has reaped the process, stdout to `/dev/null`, stderr to a file.
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
//! for runc it includes `runc init`, a re-execution of runc. The figure is
//! the largest value over the timed runs.
//!
//! # The OCI seccomp profile
//!
//! moat's built-in profile ([`builtin::default_profile`]) is resolved for
//! this host ([`Host::detect`]) and Docker's default capabilities with
//! [`resolve::resolve`], exactly what `moat run` compiles, and written as an
//! OCI `linux.seccomp` object: `defaultAction`, `defaultErrnoRet`,
//! `architectures` and one `syscalls` entry per resolved rule (`names`,
//! `action`, `errnoRet`, `args`). As a check, the object is parsed back with
//! moat's own parser and resolved again; the rules must come out the same.
//!
//! # Namespaces and cgroups
//!
//! Before timing, each launcher runs a probe instead of `/bin/true`
//! (`busybox sh -c` printing `/proc/self/ns/*`, `/proc/self/cgroup` and
//! `/proc/self/uid_map`); the report lists the namespaces that differ from
//! the harness's own and the cgroups the workload was in. For crun and runc
//! the probe doubles as the check that they accept the configuration.

use std::fmt::Write as _;
use std::fs::{self, File};
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use moat_runtime::caps::CapSet;
use moat_runtime::seccomp::arch::Host;
use moat_runtime::seccomp::{builtin, parse, resolve, Source};
use moat_tests::bench::{self, ms, Args, Row, Stats};
use serde_json::{json, Map, Value};

/// The cgroup parent of every variant's cgroups.
const CGROUP_PARENT: &str = "moat-bench";
/// The workload's pids limit.
const PIDS_LIMIT: u64 = 100;
/// First host id of the user namespace's range, and its size.
const HOST_ID: u32 = 100_000;
const ID_RANGE: u32 = 65_536;
/// Namespaces as `/proc/self/ns` names them (not the `*_for_children` ones).
const NAMESPACES: [&str; 8] = ["cgroup", "ipc", "mnt", "net", "pid", "time", "user", "uts"];
/// The namespaces of `crun spec --rootless`, in OCI spelling.
const OCI_NAMESPACES: [&str; 6] = ["pid", "network", "ipc", "uts", "user", "mount"];

const USAGE: &str = "\
usage: launch_bench [--quick] [--warmups N] [--rounds N] [--moat PATH]
                    [--bundle DIR] [--busybox PATH]

  --quick          smoke run (1 warm-up, 5 rounds, a few seconds); skips crun
                   or runc when not installed or not working here, saying why
  --warmups N      discarded rounds first (default 10)
  --rounds N       timed rounds; each runs every variant once (default 30)
  --moat PATH      the moat binary (default: `moat` beside this program)
  --bundle DIR     OCI bundle whose rootfs/ (with bin/true) exists; its
                   config.json is (re)written here (default: a private
                   bundle built from --busybox)
  --busybox PATH   static busybox for the private bundle and for moat's
                   namespace probe (default /bin/busybox)

Needs root. Progress goes to stderr, the Markdown report to stdout.";

/// Command-line options.
struct Opts {
    quick: bool,
    warmups: usize,
    rounds: usize,
    moat: PathBuf,
    bundle: Option<PathBuf>,
    busybox: PathBuf,
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
    };
    while let Some(a) = args.next_flag() {
        match a.as_str() {
            "--warmups" => opts.warmups = args.number(&a)?,
            "--rounds" => opts.rounds = args.positive(&a)?,
            "--moat" => opts.moat = args.value(&a)?.into(),
            "--bundle" => opts.bundle = Some(args.value(&a)?.into()),
            "--busybox" => opts.busybox = args.value(&a)?.into(),
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
        let report = run(&opts, &work);
        work.cleanup();
        report
    })
}

/// A private temporary directory (state, sub-id files, logs, the default
/// bundle), and the cgroup parents that did not exist before the bench.
struct Work {
    dir: PathBuf,
    new_parents: Vec<PathBuf>,
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
        let new_parents = cgroup_hierarchies()
            .into_iter()
            .map(|h| h.join(CGROUP_PARENT))
            .filter(|p| !p.exists())
            .collect();
        Ok(Work { dir, new_parents })
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
        for parent in &self.new_parents {
            if let Ok(children) = fs::read_dir(parent) {
                for c in children.flatten() {
                    if c.file_type().is_ok_and(|t| t.is_dir()) {
                        let _ = fs::remove_dir(c.path());
                    }
                }
            }
            if parent.exists() {
                if let Err(e) = fs::remove_dir(parent) {
                    eprintln!(
                        "launch_bench: warning: could not remove {}: {e}",
                        parent.display()
                    );
                }
            }
        }
        if let Err(e) = fs::remove_dir_all(&self.dir) {
            eprintln!(
                "launch_bench: warning: could not remove {}: {e}",
                self.dir.display()
            );
        }
    }
}

/// The root of every mounted cgroup hierarchy under `/sys/fs/cgroup`.
fn cgroup_hierarchies() -> Vec<PathBuf> {
    let root = Path::new("/sys/fs/cgroup");
    if root.join("cgroup.procs").exists() {
        return vec![root.to_path_buf()];
    }
    let mut v: Vec<PathBuf> = fs::read_dir(root)
        .map(|d| {
            d.flatten()
                .map(|e| e.path())
                .filter(|p| p.join("cgroup.procs").exists())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Floor,
    Moat,
    Crun,
    Runc,
}

impl Kind {
    fn label(self) -> &'static str {
        match self {
            Kind::Floor => "/bin/true",
            Kind::Moat => "moat run",
            Kind::Crun => "crun run",
            Kind::Runc => "runc run",
        }
    }

    fn program(self) -> Option<&'static str> {
        match self {
            Kind::Crun => Some("crun"),
            Kind::Runc => Some("runc"),
            _ => None,
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
    /// The launcher (the runtime's path for crun and runc).
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
    seq: u64,
}

impl Launcher<'_> {
    /// The command that runs `argv` under `v` (for crun and runc `argv` is
    /// in the bundle's `config.json` instead). Its stdin is an empty file
    /// of ours, never `/dev/null`: crun 1.8 `fchown`s the container's stdio
    /// to the container's root, which would hand the host's `/dev/null` to
    /// uid 100000.
    fn command(&mut self, v: &Variant, argv: &[&str]) -> Result<Command, String> {
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
                let name = v.kind.program().unwrap_or_default();
                let mut c = Command::new(&v.exe);
                c.arg("--root")
                    .arg(self.work.dir.join(format!("{name}-root")))
                    .arg("run")
                    .arg("--bundle")
                    .arg(&self.bundle)
                    .arg(format!("bench-{}-{}", std::process::id(), self.seq));
                c
            }
        };
        c.stdin(self.work.file("stdin", false)?);
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

/// Finds `name` on `PATH`.
fn which(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_else(|| "/usr/sbin:/usr/bin:/sbin:/bin".into());
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// moat's built-in profile resolved for this host and Docker's default
/// capabilities: what `moat run` compiles.
fn resolved_default() -> Result<resolve::Resolved, String> {
    let profile = builtin::default_profile().map_err(|e| e.to_string())?;
    let host = Host::detect()?;
    let target = resolve::Target {
        host,
        caps: CapSet::docker_default(),
    };
    Ok(resolve::resolve(&profile, builtin::SOURCE, &target))
}

/// A resolved profile as an OCI `linux.seccomp` object.
fn oci_seccomp(r: &resolve::Resolved) -> Result<Value, String> {
    let to_value = |v: Result<Value, serde_json::Error>| v.map_err(|e| e.to_string());
    let mut o = Map::new();
    o.insert(
        "defaultAction".into(),
        r.default_action.action.as_str().into(),
    );
    if let Some(e) = r.default_action.errno {
        o.insert("defaultErrnoRet".into(), e.into());
    }
    o.insert(
        "architectures".into(),
        r.architectures
            .iter()
            .map(|a| a.name())
            .collect::<Vec<_>>()
            .into(),
    );
    if !r.flags.is_empty() {
        o.insert("flags".into(), to_value(serde_json::to_value(&r.flags))?);
    }
    let mut syscalls = Vec::with_capacity(r.rules.len());
    for rule in &r.rules {
        let mut s = Map::new();
        s.insert("names".into(), rule.names.clone().into());
        s.insert("action".into(), rule.action.action.as_str().into());
        if let Some(e) = rule.action.errno {
            s.insert("errnoRet".into(), e.into());
        }
        if !rule.args.is_empty() {
            s.insert("args".into(), to_value(serde_json::to_value(&rule.args))?);
        }
        syscalls.push(Value::Object(s));
    }
    o.insert("syscalls".into(), syscalls.into());
    Ok(Value::Object(o))
}

/// Parses the OCI object back with moat's parser, resolves it again and
/// checks that the rules are the same as the ones it was written from.
fn check_round_trip(seccomp: &Value, original: &resolve::Resolved) -> Result<(), String> {
    let text = seccomp.to_string();
    let profile = parse::from_str(&text, Source::Builtin("oci-export"))
        .map_err(|e| format!("moat cannot parse the OCI profile it wrote: {e}"))?;
    let target = resolve::Target {
        host: Host::detect()?,
        caps: CapSet::docker_default(),
    };
    let again = resolve::resolve(&profile, Source::Builtin("oci-export"), &target);
    let key = |r: &resolve::Resolved| {
        (
            r.default_action,
            r.architectures.clone(),
            r.rules
                .iter()
                .map(|x| (x.names.clone(), x.action, x.args.clone()))
                .collect::<Vec<_>>(),
        )
    };
    if key(&again) != key(original) {
        return Err("the OCI profile does not resolve to the rules it was written from".into());
    }
    Ok(())
}

/// The bundle's `config.json` running `args`.
fn oci_config(args: &[&str], seccomp: &Value) -> Value {
    let caps: Vec<String> = CapSet::docker_default()
        .iter()
        .map(str::to_string)
        .collect();
    let id_map = json!([{ "containerID": 0, "hostID": HOST_ID, "size": ID_RANGE }]);
    json!({
        "ociVersion": "1.0.0",
        "process": {
            "terminal": false,
            "user": { "uid": 0, "gid": 0 },
            "args": args,
            "env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
            "cwd": "/",
            "capabilities": {
                "bounding": caps,
                "effective": caps,
                "permitted": caps,
                "inheritable": [],
                "ambient": []
            },
            "noNewPrivileges": true
        },
        "root": { "path": "rootfs", "readonly": true },
        "hostname": "bench",
        "mounts": [
            { "destination": "/proc", "type": "proc", "source": "proc" },
            { "destination": "/dev", "type": "tmpfs", "source": "tmpfs",
              "options": ["nosuid", "strictatime", "mode=755", "size=65536k"] },
            { "destination": "/dev/pts", "type": "devpts", "source": "devpts",
              "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620"] },
            { "destination": "/dev/shm", "type": "tmpfs", "source": "shm",
              "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"] },
            { "destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue",
              "options": ["nosuid", "noexec", "nodev"] },
            { "destination": "/sys", "type": "sysfs", "source": "sysfs",
              "options": ["nosuid", "noexec", "nodev", "ro"] },
            { "destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup",
              "options": ["nosuid", "noexec", "nodev", "relatime", "ro"] }
        ],
        "linux": {
            "uidMappings": id_map,
            "gidMappings": id_map,
            "namespaces": OCI_NAMESPACES.iter().map(|t| json!({ "type": t })).collect::<Vec<_>>(),
            "cgroupsPath": format!("/{CGROUP_PARENT}/oci-{}", std::process::id()),
            "resources": {
                "devices": [{ "allow": false, "access": "rwm" }],
                "pids": { "limit": PIDS_LIMIT }
            },
            "seccomp": seccomp,
            "maskedPaths": [
                "/proc/acpi", "/proc/asound", "/proc/kcore", "/proc/keys",
                "/proc/latency_stats", "/proc/timer_list", "/proc/timer_stats",
                "/proc/sched_debug", "/sys/firmware", "/proc/scsi"
            ],
            "readonlyPaths": [
                "/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"
            ]
        }
    })
}

fn write_config(bundle: &Path, args: &[&str], seccomp: &Value) -> Result<(), String> {
    let path = bundle.join("config.json");
    let text =
        serde_json::to_string_pretty(&oci_config(args, seccomp)).map_err(|e| e.to_string())?;
    fs::write(&path, text + "\n").map_err(|e| format!("{}: {e}", path.display()))
}

/// Makes `dir/rootfs` from a static busybox: `bin/busybox`, `bin/true`
/// linking to it, and the mount points the config uses.
fn build_rootfs(dir: &Path, busybox: &Path) -> Result<(), String> {
    let rootfs = dir.join("rootfs");
    let io = |what: &Path, e: std::io::Error| format!("{}: {e}", what.display());
    for d in ["bin", "proc", "dev", "sys"] {
        fs::create_dir_all(rootfs.join(d)).map_err(|e| io(&rootfs.join(d), e))?;
    }
    let target = rootfs.join("bin/busybox");
    fs::copy(busybox, &target).map_err(|e| io(busybox, e))?;
    symlink("busybox", rootfs.join("bin/true")).map_err(|e| io(&rootfs.join("bin/true"), e))
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

fn run(opts: &Opts, work: &Work) -> Result<String, String> {
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
        build_rootfs(&bundle, &opts.busybox)?;
    } else {
        bundle_problem = Some(format!(
            "no static busybox at {} for the bundle's rootfs (Debian: busybox-static)",
            opts.busybox.display()
        ));
    }
    let resolved = resolved_default()?;
    let seccomp = oci_seccomp(&resolved)?;
    check_round_trip(&seccomp, &resolved)?;

    let mut variants: Vec<Variant> = Vec::new();
    for kind in [Kind::Floor, Kind::Moat, Kind::Crun, Kind::Runc] {
        let (exe, skipped) = match kind.program() {
            None if kind == Kind::Moat => (opts.moat.clone(), None),
            None => (PathBuf::from("/bin/true"), None),
            Some(p) => match which(p) {
                Some(path) => (path, bundle_problem.clone()),
                None => (PathBuf::from(p), Some(format!("{p} is not installed"))),
            },
        };
        if let (Some(why), false) = (&skipped, opts.quick) {
            return Err(format!(
                "{}: {why} (scripts/bench-launch.sh installs what it needs; --quick skips it)",
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

    // Probes: which namespaces and cgroups each launcher gives its workload;
    // for crun and runc also the check that they accept the configuration.
    let mut launcher = Launcher {
        opts,
        work,
        bundle: bundle.clone(),
        seq: 0,
    };
    let own = Own::read();
    let probe_args = [
        "/bin/busybox",
        "sh",
        "-c",
        PROBE_SCRIPT,
        "sh",
        "/bin/busybox",
    ];
    if bundle_problem.is_none() {
        write_config(&bundle, &probe_args, &seccomp)?;
    }
    for v in variants.iter_mut() {
        if v.skipped.is_some() || v.kind == Kind::Floor || (v.kind == Kind::Moat && !have_busybox) {
            continue;
        }
        eprintln!("launch_bench: probing {}", v.kind.label());
        match launcher.probe(v, &own) {
            Ok(p) => v.probe = Some(p),
            Err(e) if opts.quick && v.kind != Kind::Moat => {
                let why = format!("it does not run here: {}", first_line(&e));
                eprintln!("launch_bench: skipping {}: {e}", v.kind.label());
                v.skipped = Some(why);
            }
            Err(e) => return Err(format!("{}: {e}", v.kind.label())),
        }
    }
    if bundle_problem.is_none() {
        write_config(&bundle, &["/bin/true"], &seccomp)?;
    }

    // Warm-ups, then the timed rounds, in rotating order.
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

    Ok(render(
        opts,
        work,
        &variants,
        &resolved,
        &seccomp,
        started.elapsed(),
    ))
}

fn first_line(s: &str) -> &str {
    s.lines().find(|l| !l.trim().is_empty()).unwrap_or(s).trim()
}

/// Median, min and max of the wall times, in ms.
fn stats(samples: &[Sample]) -> Stats {
    Stats::of(&samples.iter().map(|s| ms(s.wall)).collect::<Vec<_>>())
}

fn render(
    opts: &Opts,
    work: &Work,
    variants: &[Variant],
    resolved: &resolve::Resolved,
    seccomp: &Value,
    elapsed: Duration,
) -> String {
    let get = |k: Kind| {
        variants
            .iter()
            .find(|v| v.kind == k)
            .filter(|v| v.skipped.is_none())
    };
    let median = |k: Kind| get(k).map(|v| stats(&v.samples).median);
    let crun = median(Kind::Crun);
    let skip_reason = |k: Kind| {
        variants
            .iter()
            .find(|v| v.kind == k)
            .and_then(|v| v.skipped.clone())
            .unwrap_or_default()
    };

    let mut rows = Vec::new();
    for k in [Kind::Moat, Kind::Crun, Kind::Runc, Kind::Floor] {
        let label = k.label();
        let Some(v) = get(k) else {
            rows.push(Row::info(
                format!("{label}, median"),
                format!("skipped: {}", skip_reason(k)),
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
    for k in [Kind::Moat, Kind::Runc, Kind::Floor] {
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
    for k in [Kind::Moat, Kind::Crun, Kind::Runc] {
        let figure = format!(
            "Peak RSS of the {} process (`ru_maxrss`)",
            k.program().unwrap_or("moat")
        );
        match get(k) {
            Some(v) => {
                let max = v.samples.iter().map(|s| s.maxrss_kib).max().unwrap_or(0);
                rows.push(Row::info(figure, format!("{:.1} MiB", max as f64 / 1024.0)));
            }
            None => rows.push(Row::info(figure, format!("skipped: {}", skip_reason(k)))),
        }
    }

    let mut s = String::new();
    bench::write_table(&mut s, &rows);

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
                let _ = writeln!(
                    s,
                    "| {} | {} | {} | {} |",
                    v.kind.label(),
                    if p.new_namespaces.is_empty() {
                        "none".into()
                    } else {
                        p.new_namespaces.join(", ")
                    },
                    p.uid_map.join("; "),
                    p.cgroups
                        .iter()
                        .map(|c| format!("`{c}`"))
                        .collect::<Vec<_>>()
                        .join("<br>")
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

    bench::write_machine(&mut s, &machine(variants));

    let _ = writeln!(s, "\n### Conditions\n");
    let _ = writeln!(
        s,
        "- Mode: {}; harness build: {}; {} warm-up rounds, then {} timed rounds, each running \
         every variant once in rotating order; whole commands timed from outside (spawn to \
         `wait4`); {:.1} s in all.",
        bench::mode(opts.quick),
        bench::build(),
        opts.warmups,
        opts.rounds,
        elapsed.as_secs_f64()
    );
    let _ = writeln!(
        s,
        "- moat: `{} run --pids-limit {PIDS_LIMIT} --userns auto --cgroup-parent {CGROUP_PARENT} \
         -- /bin/true` (built-in default seccomp profile, Docker's default capabilities, \
         `no_new_privs`), sub-ids `moat:{HOST_ID}:{}` from `MOAT_SUBUID_FILE`/`MOAT_SUBGID_FILE`, \
         private `MOAT_STATE_DIR`.",
        opts.moat.display(),
        ID_RANGE * 100
    );
    let _ = writeln!(
        s,
        "- crun, runc: `<runtime> --root <private dir> run --bundle <bundle> <fresh id>`; the \
         bundle's rootfs is a static busybox with `bin/true` linked to it; `config.json` is \
         `crun spec --rootless` (namespaces {}; its mounts, masked and read-only paths, \
         read-only root) with uid/gid map 0:{HOST_ID}:{ID_RANGE}, `pids.limit` {PIDS_LIMIT}, \
         `cgroupsPath` under `/{CGROUP_PARENT}`, Docker's default capabilities, \
         `noNewPrivileges`, no rlimits, no terminal.",
        OCI_NAMESPACES.join(", ")
    );
    let n_args = resolved.rules.iter().filter(|r| !r.args.is_empty()).count();
    let _ = writeln!(
        s,
        "- Seccomp for crun and runc: moat's built-in profile resolved for this host ({}) and \
         Docker's default capabilities, as OCI `linux.seccomp`: default {}, {} rules \
         ({n_args} with argument conditions), {} bytes of JSON; parsed back by moat's parser it \
         resolves to the same rules.",
        resolved
            .architectures
            .iter()
            .map(|a| a.name())
            .collect::<Vec<_>>()
            .join(", "),
        resolved.default_action,
        resolved.rules.len(),
        seccomp.to_string().len()
    );
    let _ = writeln!(
        s,
        "- Peak RSS is `ru_maxrss` from `wait4` on the launcher's pid, the largest over the \
         timed runs. The kernel includes the peaks of the launcher's reaped children in it: \
         for moat the workload (a copy of moat until its `execve`), for runc `runc init` (a \
         re-execution of runc), for crun its own forks."
    );
    let _ = writeln!(s, "- Cgroup layout: {}.", cgroup_layout());
    let _ = writeln!(
        s,
        "- State directories (moat's, crun's and runc's `--root`) are private ones on {}; \
         their defaults (`/run/moat`, `/run/crun`, `/run/runc`) are on {}.",
        fs_type(&work.dir),
        fs_type(Path::new("/run"))
    );

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
        let text = if v.skipped.is_some() && which(name).is_none() {
            "not installed".to_string()
        } else {
            format!(
                "`{}` (Debian package {})",
                command_line(&v.exe.to_string_lossy(), &["--version"]),
                package_version(name)
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
