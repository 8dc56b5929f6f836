//! `moat profile record`: record a workload that is already running (a moat
//! workload or a Docker container) for a while, through moatd's kernel side.

use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use clap::{ArgGroup, Args};

use moat_runtime::caps::CapSet;
use moat_runtime::record::Recorder;
use moat_runtime::seccomp::ProfileRef;
use moat_runtime::state::{StateDir, DEFAULT_STATE_DIR};

use crate::record_out::{write_recording, RecordMode, RecordTarget};

use moat_common::V1_PIDS_ID_FLAG;

#[derive(Debug, Args)]
#[command(group(ArgGroup::new("target").required(true).args(["workload", "container"])))]
#[command(after_long_help = "\
A profile recorded from a running workload misses its start-up (everything it
did before the recording began): run the workload under `moat run
--record-profile` to record it whole, or merge (--record-mode merge) a
recording of its start into this one.

EXAMPLES:
  moat profile record --workload web --duration 60s --output web.json
  moat profile record --container 3f2a --duration 5m --output app.json --record-mode merge
  docker run --security-opt seccomp=app.json ...")]
pub struct RecordArgs {
    /// A running moat workload, by name (`moat ps`).
    #[arg(long, value_name = "NAME")]
    workload: Option<String>,
    /// A Docker container, by id or name (found with `docker inspect`,
    /// which honours DOCKER_HOST). A running one is recorded from now on;
    /// one created and not started yet (`docker create`; cgroupfs driver)
    /// is recorded from its start: moat makes its cgroup in advance and
    /// flags it, then `docker start` it while moat waits.
    #[arg(long, value_name = "ID")]
    container: Option<String>,
    /// How long to record: a number with ms, s, m or h (e.g. 30s).
    #[arg(long, value_name = "DUR")]
    duration: String,
    /// Where to write the profile.
    #[arg(long, short, value_name = "FILE")]
    output: PathBuf,
    /// `overwrite` FILE, or `merge` into the profile it holds (a union).
    #[arg(long, value_name = "overwrite|merge", default_value = "overwrite")]
    record_mode: RecordMode,
    /// The profile the workload runs under: its argument rules are kept in
    /// the recorded profile (`default` is moat's, equivalent to Docker's).
    #[arg(long, value_name = "default|PATH", default_value = "default")]
    seccomp_profile: String,
}

pub fn run(args: RecordArgs) -> Result<ExitCode> {
    let duration = parse_duration(&args.duration)?;
    let (key, what, from_start) = match (&args.workload, &args.container) {
        (Some(name), _) => (workload_key(name)?, format!("moat workload {name}"), None),
        (_, Some(id)) => match container_key(id)? {
            Container::Running(key) => (key, format!("Docker container {id}"), None),
            Container::Created(dir) => (
                inode(&dir)?,
                format!("Docker container {id} from its start"),
                Some(dir),
            ),
        },
        _ => bail!("give --workload or --container"),
    };
    let target = RecordTarget {
        path: args.output.clone(),
        mode: args.record_mode,
        base: ProfileRef::parse(&args.seccomp_profile),
        caps: CapSet::docker_default(),
        what: format!("{what} (`{}`)", crate::run_cmd::command_line()),
        span: if from_start.is_some() {
            format!(
                "the calls its seccomp filter saw, from the runtime's last steps before the exec of its command, for {}",
                args.duration
            )
        } else {
            format!(
                "its processes during {} from the start of the recording, so not its start-up",
                args.duration
            )
        },
    };
    target.check()?;
    let mut recorder = Recorder::open()?;
    if from_start.is_some() {
        recorder.arm(key)?;
        eprintln!(
            "moat: recording {what} for {}: start it now (docker start)",
            args.duration
        );
    } else {
        recorder.start_now(key)?;
        eprintln!(
            "moat: recording {what} for {}; a profile recorded from a running workload misses its start-up",
            args.duration
        );
    }
    std::thread::sleep(duration);
    recorder.finish()?;
    if let Some(dir) = &from_start {
        // Made here; gone already if the container ran and was removed.
        let _ = std::fs::remove_dir(dir);
    }
    let recorded = recorder
        .take_result()
        .context("the recording returned nothing")?;
    let summary = write_recording(&target, &recorded)?;
    eprintln!("{summary}");
    Ok(ExitCode::SUCCESS)
}

fn parse_duration(s: &str) -> Result<Duration> {
    let split = s
        .find(|c: char| !c.is_ascii_digit())
        .ok_or_else(|| anyhow!("invalid --duration {s:?}: give a unit (ms, s, m or h)"))?;
    let (n, unit) = s.split_at(split);
    let n: u64 = n
        .parse()
        .map_err(|_| anyhow!("invalid --duration {s:?}: expected a number and a unit, e.g. 30s"))?;
    let ms = match unit {
        "ms" => n,
        "s" => n.saturating_mul(1000),
        "m" => n.saturating_mul(60_000),
        "h" => n.saturating_mul(3_600_000),
        _ => bail!("invalid --duration {s:?}: unknown unit {unit:?} (ms, s, m or h)"),
    };
    if ms == 0 {
        bail!("invalid --duration {s:?}: must be more than 0");
    }
    Ok(Duration::from_millis(ms))
}

/// The v2 cgroup id of a running moat workload.
fn workload_key(name: &str) -> Result<u64> {
    let root = std::env::var_os("MOAT_STATE_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(DEFAULT_STATE_DIR));
    let record = StateDir::open(&root)?
        .record(name)?
        .ok_or_else(|| anyhow!("no workload named {name:?} is running (see `moat ps`)"))?;
    inode(&record.cgroup_v2)
}

fn inode(path: &Path) -> Result<u64> {
    Ok(std::fs::metadata(path)
        .with_context(|| format!("cannot stat the cgroup {}", path.display()))?
        .ino())
}

/// A container to record: running (its cgroup key), or created and not
/// started yet (the v2 cgroup its runtime will use, made here in advance so
/// that it can be flagged before anything runs in it).
enum Container {
    Running(u64),
    Created(PathBuf),
}

/// The v2 hierarchy: `/sys/fs/cgroup/unified` on hybrid hosts.
fn v2_root() -> &'static str {
    if Path::new("/sys/fs/cgroup/unified/cgroup.controllers").exists() {
        "/sys/fs/cgroup/unified"
    } else {
        "/sys/fs/cgroup"
    }
}

/// The cgroup key of a running Docker container: its v2 cgroup, or on a
/// hybrid host where Docker's cgroupfs driver placed it only in v1 cgroups,
/// its v1 pids cgroup (as moatd's kernel side keys it). A created container
/// (cgroupfs driver, default parent `docker`): its future v2 cgroup.
fn container_key(id: &str) -> Result<Container> {
    let out = std::process::Command::new("docker")
        .args([
            "inspect",
            "--format",
            "{{.State.Pid}} {{.State.Status}} {{.Id}} {{.HostConfig.CgroupParent}}",
            id,
        ])
        .output()
        .context("cannot run `docker inspect`")?;
    if !out.status.success() {
        bail!(
            "docker inspect {id}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let fields: Vec<&str> = text.split_whitespace().collect();
    let (pid, status, full_id) = match fields.as_slice() {
        [pid, status, full_id, ..] => (*pid, *status, *full_id),
        _ => bail!("docker inspect {id}: unexpected answer {text:?}"),
    };
    if status == "created" {
        let parent = fields.get(3).copied().unwrap_or("docker");
        let parent = parent.trim_matches('/');
        if parent.ends_with(".slice") {
            bail!(
                "container {id} uses the systemd cgroup driver ({parent}); record it once it runs"
            );
        }
        let dir = Path::new(v2_root()).join(parent).join(full_id);
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("cannot make the cgroup {}", dir.display()))?;
        return Ok(Container::Created(dir));
    }
    let pid: u32 = pid
        .parse()
        .map_err(|_| anyhow!("docker inspect {id}: no process id"))?;
    if pid == 0 {
        bail!("container {id} is not running ({status})");
    }
    let cgroups = std::fs::read_to_string(format!("/proc/{pid}/cgroup"))
        .with_context(|| format!("cannot read /proc/{pid}/cgroup"))?;
    let mut v2 = None;
    let mut pids = None;
    for line in cgroups.lines() {
        let mut parts = line.splitn(3, ':');
        let (_, controllers, path) = (parts.next(), parts.next(), parts.next());
        match (controllers, path) {
            (Some(""), Some(p)) => v2 = Some(p.to_string()),
            (Some(c), Some(p)) if c.split(',').any(|c| c == "pids") => pids = Some(p.to_string()),
            _ => {}
        }
    }
    if let Some(p) = v2.filter(|p| p != "/") {
        return Ok(Container::Running(inode(
            &Path::new(v2_root()).join(p.trim_start_matches('/')),
        )?));
    }
    match pids.filter(|p| p != "/") {
        Some(p) => Ok(Container::Running(
            V1_PIDS_ID_FLAG
                | inode(&Path::new("/sys/fs/cgroup/pids").join(p.trim_start_matches('/')))?,
        )),
        None => bail!("container {id} (pid {pid}) has no cgroup of its own to record"),
    }
}
