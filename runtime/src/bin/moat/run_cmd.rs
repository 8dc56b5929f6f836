//! `moat run`: launch a workload under seccomp, a user namespace, a pids
//! limit and namespaces of its own.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{anyhow, Context, Result};
use clap::Args;

use moat_runtime::caps::CapSet;
use moat_runtime::cgroup::{CgroupConfig, CgroupManager, PidsLimit};
use moat_runtime::launch::namespaces::{Isolation, Share, Sysfs, SystemPaths};
use moat_runtime::launch::{self, RunRequest};
use moat_runtime::record::Recorder;

use crate::record_out::{write_recording, RecordTarget};
use moat_runtime::seccomp::{cache, ProfileRef};
use moat_runtime::state;
use moat_runtime::userns::UsernsSpec;

/// Exit code for a failure of moat itself (as `docker run`).
pub const EXIT_MOAT_FAILED: u8 = 125;

#[derive(Debug, Args)]
#[command(after_long_help = "\
EXIT STATUS:
  the command's own exit code, or 128+N if signal N killed it;
  125 if moat failed before the command started (nothing is left behind),
      including a refusal by the node policy (/etc/moat/policy.toml, see
      `moat policy check`; without that file nothing is refused),
  126 if the command cannot be executed, 127 if it was not found.

CONTAINMENT (the defaults, as Docker's):
  the command runs under moat's init in its own PID namespace (it sees and
  can signal or trace only its own processes), mount namespace (nothing it
  mounts reaches the host; a new /proc; /sys and every cgroup file system
  read-only; Docker's masked and read-only paths such as /proc/sys,
  /proc/sysrq-trigger, /proc/kcore, /sys/firmware), cgroup namespace and IPC
  namespace, in a session of its own. When moat's stdin, stdout or stderr
  is a terminal, those of the command are a new pty that moat relays (so
  the command cannot push keystrokes into moat's terminal); pipes and
  files pass through as they are. Only descriptors 0, 1, 2 (and
  --preserve-fds) are inherited, the environment is PATH, HOME, TERM and
  --env (or --env-host), and the session keyring is a new one.
  --pid, --cgroupns, --ipc, --system-paths and --sysfs relax each part.

EXAMPLES:
  moat run -- /bin/true
  moat run --pids-limit 64 --userns auto --name build -- make -j8
  moat run --seccomp-profile ./profile.json --cap-drop ALL --user 1000:1000 -- ./server")]
pub struct RunArgs {
    /// Name of the workload: unique among running workloads,
    /// [a-zA-Z0-9_.-], at most 64 characters [default: the command's name
    /// and a short random id]
    #[arg(long)]
    name: Option<String>,
    /// Seccomp profile: `default` (built in, equivalent to Docker's),
    /// `unconfined` (no filter), or a Docker/OCI profile file.
    #[arg(
        long,
        value_name = "default|unconfined|PATH",
        default_value = "default"
    )]
    seccomp_profile: String,
    /// Log every denial to the kernel audit log (SECCOMP_FILTER_FLAG_LOG).
    #[arg(long)]
    log_denials: bool,
    /// Maximum number of processes and threads of the workload; without it
    /// the workload has no limit of its own and the parent cgroup's applies
    /// (512 unless --parent-pids-max says otherwise).
    #[arg(long, value_name = "N|unlimited")]
    pids_limit: Option<String>,
    /// User namespace: `host` (none), `auto` (a 65536-id range of user
    /// moat's /etc/subuid and /etc/subgid entries, unique among running
    /// workloads), or CONTAINER_ID:HOST_ID:SIZE[,...].
    #[arg(long, value_name = "host|auto|MAP[,MAP...]", default_value = "host")]
    userns: String,
    /// User and group inside the workload, as decimal numbers (GID
    /// defaults to UID). 4294967295 ((uid_t)-1) is refused, and with a user
    /// namespace both must be mapped by it (`auto` maps 0-65535).
    #[arg(long, value_name = "UID[:GID]")]
    user: Option<String>,
    /// Add a capability to Docker's default set (e.g. NET_ADMIN; ALL).
    /// Repeatable. The set also decides which seccomp profile rules apply.
    #[arg(long, value_name = "CAP")]
    cap_add: Vec<String>,
    /// Drop a capability from the set (ALL drops every one). Repeatable.
    #[arg(long, value_name = "CAP|ALL")]
    cap_drop: Vec<String>,
    /// Set no_new_privs (the default): setuid binaries and file
    /// capabilities cannot raise privileges.
    #[arg(long, overrides_with = "allow_new_privileges")]
    no_new_privileges: bool,
    /// Do not set no_new_privs (the seccomp filter is still installed).
    #[arg(long)]
    allow_new_privileges: bool,
    /// Who makes the workload's cgroups: `systemd` (a transient scope
    /// unit moat-NAME.scope in a slice, made over D-Bus, as podman and
    /// runc's systemd driver do; the workload's own cgroup is its
    /// `payload`, next to a keeper process that holds the scope, so the
    /// scope's TasksMax is the limit plus one; `systemctl status` and
    /// `systemctl stop` act on it) or `cgroupfs` (moat writes the cgroup
    /// file system itself). [default: systemd where systemd is PID 1 and the
    /// pids controller is on cgroup v2, cgroupfs otherwise; under a unit
    /// with Delegate=yes, cgroupfs inside that unit's cgroup]
    #[arg(long, value_name = "systemd|cgroupfs")]
    cgroup_manager: Option<CgroupManager>,
    /// Where every workload goes: with cgroupfs the parent cgroup,
    /// relative to each hierarchy's root (or to the unit's cgroup under a
    /// unit with Delegate=yes) [default: moat]; with systemd the slice
    /// unit, where '-' nests (moat-ci.slice is inside moat.slice) [default:
    /// moat.slice].
    #[arg(long, value_name = "NAME")]
    cgroup_parent: Option<String>,
    /// The node-wide cap shared by every workload of the parent: pids.max
    /// of the parent cgroup (cgroupfs), or TasksMax= of the slice
    /// (systemd), when moat creates it; an existing one keeps its own.
    #[arg(long, value_name = "N", default_value_t = 512)]
    parent_pids_max: u64,
    /// Set an environment variable. Repeatable. Without --env-host the
    /// command's environment is only PATH (moat's), HOME (from /etc/passwd
    /// for --user, else /), TERM (moat's, if set) and these.
    #[arg(long, short, value_name = "K=V")]
    env: Vec<String>,
    /// Pass moat's whole environment to the command (then --env adds to
    /// it), as Podman's --env-host.
    #[arg(long)]
    env_host: bool,
    /// Pass descriptors 3 to 3+N-1, which moat must have inherited, to the
    /// command (as runc's --preserve-fds); every other descriptor beyond
    /// 0, 1 and 2 is closed.
    #[arg(long, value_name = "N", default_value_t = 0)]
    preserve_fds: u32,
    /// PID namespace: `private` (the command sees, signals and traces only
    /// its own processes, under moat's init) or `host` (it can see and
    /// signal every process of the host it has permission for, moat
    /// included).
    #[arg(long, value_name = "private|host", default_value = "private")]
    pid: Share,
    /// Cgroup namespace: `private` (its own cgroups are its root) or `host`.
    #[arg(long, value_name = "private|host", default_value = "private")]
    cgroupns: Share,
    /// IPC namespace (System V IPC, POSIX message queues) and /dev/shm:
    /// `private` (new ones) or `host`.
    #[arg(long, value_name = "private|host", default_value = "private")]
    ipc: Share,
    /// Docker's masked paths (/proc/kcore, /proc/keys, /proc/timer_list,
    /// /proc/sched_debug, /proc/acpi, /proc/scsi, /sys/firmware, ...) and
    /// read-only paths (/proc/sys, /proc/sysrq-trigger, /proc/irq,
    /// /proc/bus, /proc/fs): `masked`, or `unconfined` to leave them as the
    /// host has them (Docker's --security-opt systempaths=unconfined).
    #[arg(long, value_name = "masked|unconfined", default_value = "masked")]
    system_paths: SystemPaths,
    /// /sys and every cgroup file system: `ro`, or `rw` as the host has
    /// them (then a root command can leave its cgroups).
    #[arg(long, value_name = "ro|rw", default_value = "ro")]
    sysfs: Sysfs,
    /// Compile the seccomp profile even if the cache holds it, and do not
    /// store it there. The cache (MOAT_CACHE_DIR, default
    /// <state dir>/cache/seccomp, i.e. /run/moat/cache/seccomp) keeps
    /// compiled filters by a digest of everything that decides them
    /// (resolved profile, capabilities, kernel, libseccomp, moat's build),
    /// root-only, and checks each entry before use.
    #[arg(long)]
    no_cache: bool,
    /// Record every syscall the command and all its descendants make,
    /// from its execve until its last process exits, and write a
    /// least-privilege profile to FILE (Docker format: default
    /// SCMP_ACT_ERRNO, the architectures used, names grouped by the
    /// architectures they were made on, the argument rules of
    /// --seccomp-profile kept). The command still runs under
    /// --seccomp-profile, so recording never weakens it. Needs moatd
    /// running (its kernel side records; it pins the maps moat uses in
    /// MOAT_BPF_DIR, default /sys/fs/bpf/moat): without it moat refuses
    /// to run the command. Replay with --seccomp-profile FILE.
    #[arg(long, value_name = "FILE")]
    record_profile: Option<PathBuf>,
    /// With --record-profile: `overwrite` FILE, or `merge` this run's
    /// syscalls into the profile FILE holds (a union).
    #[arg(
        long,
        value_name = "overwrite|merge",
        default_value = "overwrite",
        requires = "record_profile"
    )]
    record_mode: crate::record_out::RecordMode,
    /// Working directory of the command [default: moat's, resolved by path
    /// in the command's mount namespace].
    #[arg(long, short, value_name = "DIR")]
    workdir: Option<PathBuf>,
    /// The command and its arguments.
    #[arg(required = true, last = true, value_name = "CMD")]
    command: Vec<String>,
}

pub fn run(args: RunArgs) -> ExitCode {
    let record = args.record_profile.clone().map(|path| RecordTarget {
        path,
        mode: args.record_mode,
        base: ProfileRef::parse(&args.seccomp_profile),
        caps: CapSet::docker_default(),
        what: format!("`{}`", command_line()),
        span: "it and all its descendants, from its execve until its last process exited".into(),
    });
    let req = match request(args) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("moat: error: {e:#}");
            return ExitCode::from(EXIT_MOAT_FAILED);
        }
    };
    // The node policy (/etc/moat/policy.toml), before anything exists.
    if let Err(e) = crate::policy_cmd::check_run(&req) {
        eprintln!("moat: error: {e:#}");
        return ExitCode::from(EXIT_MOAT_FAILED);
    }
    let Some(mut target) = record else {
        return finish(launch::run(&req));
    };
    target.caps = req.caps.clone();
    // Before anything runs: without moatd, or with a bad merge target, the
    // command does not run at all (never unrecorded).
    let mut recorder = match target.check().and_then(|()| Ok(Recorder::open()?)) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("moat: error: {e:#}");
            return ExitCode::from(EXIT_MOAT_FAILED);
        }
    };
    let result = launch::run_recorded(&req, Some(&mut recorder));
    if result.is_ok() {
        let written = recorder
            .take_result()
            .context("the recording returned nothing")
            .and_then(|recorded| write_recording(&target, &recorded));
        match written {
            Ok(summary) => eprintln!("{summary}"),
            Err(e) => {
                eprintln!("moat: error: {e:#}");
                return ExitCode::from(EXIT_MOAT_FAILED);
            }
        }
    }
    finish(result)
}

fn finish(result: Result<launch::Outcome, launch::LaunchError>) -> ExitCode {
    match result {
        Ok(outcome) => ExitCode::from(outcome.exit_code().clamp(0, 255) as u8),
        Err(e) => {
            eprintln!("moat: error: {}", moat_runtime::systemd::error_chain(&e));
            ExitCode::from(e.exit_code() as u8)
        }
    }
}

/// moat's own command line, quoted where a word needs it, for the header of
/// a recorded profile.
pub fn command_line() -> String {
    std::env::args()
        .map(|a| {
            if !a.is_empty()
                && a.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_./=:,@%+".contains(&b))
            {
                a
            } else {
                format!("'{}'", a.replace('\'', "'\\''"))
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

fn request(a: RunArgs) -> Result<RunRequest> {
    let name = match a.name {
        Some(n) => {
            state::validate_name(&n)?;
            n
        }
        None => state::generate_name(&a.command[0]),
    };
    let caps = CapSet::docker_default()
        .with_changes(&a.cap_add, &a.cap_drop)
        .context("invalid --cap-add/--cap-drop")?;
    let (pids_limit, pids_limit_text) = match &a.pids_limit {
        None => (PidsLimit::Inherit, "inherit".to_string()),
        Some(s) => (
            s.parse::<PidsLimit>()
                .map_err(|e| anyhow!("invalid --pids-limit {s:?}: {e}"))?,
            s.clone(),
        ),
    };
    let userns: UsernsSpec = a
        .userns
        .parse()
        .map_err(|e| anyhow!("invalid --userns {:?}: {e}", a.userns))?;
    let (uid, gid) = match &a.user {
        None => (0, 0),
        Some(u) => parse_user(u)?,
    };
    let env = a
        .env
        .iter()
        .map(|kv| {
            kv.split_once('=')
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .filter(|(k, _)| !k.is_empty())
                .ok_or_else(|| anyhow!("invalid --env {kv:?}: expected KEY=VALUE"))
        })
        .collect::<Result<Vec<_>>>()?;
    let (state_dir, subuid, subgid) = launch::default_paths();
    let state_dir = std::env::var_os("MOAT_STATE_DIR")
        .map(PathBuf::from)
        .unwrap_or(state_dir);
    let seccomp_cache = (!a.no_cache).then(|| {
        std::env::var_os("MOAT_CACHE_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| cache::default_dir(&state_dir))
    });
    Ok(RunRequest {
        name,
        profile: ProfileRef::parse(&a.seccomp_profile),
        log_denials: a.log_denials,
        pids_limit,
        pids_limit_text,
        userns,
        uid,
        gid,
        caps,
        no_new_privs: !a.allow_new_privileges || a.no_new_privileges,
        cgroup: CgroupConfig {
            parent: a
                .cgroup_parent
                .clone()
                .unwrap_or_else(|| CgroupConfig::default().parent),
            parent_pids_max: a.parent_pids_max,
            ..CgroupConfig::default()
        },
        cgroup_manager: a.cgroup_manager,
        cgroup_parent: a.cgroup_parent,
        env,
        env_host: a.env_host,
        isolation: Isolation {
            pid: a.pid,
            cgroup: a.cgroupns,
            ipc: a.ipc,
            system_paths: a.system_paths,
            sysfs: a.sysfs,
        },
        preserve_fds: a.preserve_fds,
        workdir: a.workdir,
        state_dir,
        seccomp_cache,
        subuid: std::env::var_os("MOAT_SUBUID_FILE")
            .map(PathBuf::from)
            .unwrap_or(subuid),
        subgid: std::env::var_os("MOAT_SUBGID_FILE")
            .map(PathBuf::from)
            .unwrap_or(subgid),
        command: a.command,
    })
}

/// Parses `UID[:GID]`: decimal numbers only (no sign, no spaces), GID
/// defaulting to UID. Which ids are usable (not -1, mapped in the user
/// namespace) the launcher checks.
fn parse_user(s: &str) -> Result<(u32, u32)> {
    let num = |p: &str| {
        if p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit()) {
            return Err(anyhow!(
                "invalid --user {s:?}: {p:?} is not a decimal number \
                 (expected UID[:GID], e.g. 1000 or 1000:1000)"
            ));
        }
        p.parse::<u32>().map_err(|_| {
            anyhow!(
                "invalid --user {s:?}: {p} does not fit in a 32-bit id (at most {})",
                u32::MAX - 1
            )
        })
    };
    match s.split_once(':') {
        Some((u, g)) => Ok((num(u)?, num(g)?)),
        None => {
            let u = num(s)?;
            Ok((u, u))
        }
    }
}
