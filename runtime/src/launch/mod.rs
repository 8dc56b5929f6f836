//! `moat run`: launching a workload under seccomp, a user namespace and a
//! pids limit, fail-closed.
//!
//! The order follows runc and crun:
//! 1. everything that can be checked is checked before any process exists
//!    (profile compiled, name reserved, id range allocated, cgroups made);
//! 2. `clone3` puts the child straight into its v2 cgroup (and a new user
//!    namespace); it waits while the parent joins it to the pids cgroup and
//!    writes its id maps;
//! 3. the child sets ids, capabilities, `no_new_privs`, and installs the
//!    seccomp filter as the last step before `execve` ([`child`]).
//!
//! Any failure before `execve` undoes every earlier step, so a workload never
//! runs with less protection than asked for and nothing is left behind.

pub mod child;
pub mod clone;
mod error;
pub mod ids;
mod reserve;
pub mod supervise;

use std::ffi::CString;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

pub use error::LaunchError;
pub use supervise::Outcome;

use crate::caps::CapSet;
use crate::cgroup::{self, CgroupConfig, PidsLimit, WorkloadCgroups};
use crate::seccomp::profile::Action;
use crate::seccomp::{self, compile, ProfileRef};
use crate::state::{self, ExitRecord, ProcessRef, StateDir};
use crate::userns::{self, UserNamespace, UsernsSpec};

/// Everything `moat run` was asked to do.
#[derive(Debug, Clone)]
pub struct RunRequest {
    /// Workload name (validated).
    pub name: String,
    /// The command and its arguments.
    pub command: Vec<String>,
    /// Seccomp profile.
    pub profile: ProfileRef,
    /// Set `SECCOMP_FILTER_FLAG_LOG` on the filter.
    pub log_denials: bool,
    /// The workload's own pids limit.
    pub pids_limit: PidsLimit,
    /// The pids limit as the user wrote it, for the state record.
    pub pids_limit_text: String,
    /// User namespace.
    pub userns: UsernsSpec,
    /// uid and gid inside.
    pub uid: u32,
    /// gid inside.
    pub gid: u32,
    /// Capabilities kept (also decide which profile rules apply).
    pub caps: CapSet,
    /// Set `no_new_privs` before the filter.
    pub no_new_privs: bool,
    /// Where the cgroups go.
    pub cgroup: CgroupConfig,
    /// Extra environment variables (added to moat's own environment).
    pub env: Vec<(String, String)>,
    /// Working directory.
    pub workdir: Option<PathBuf>,
    /// The state directory.
    pub state_dir: PathBuf,
    /// `/etc/subuid` (for `--userns auto`).
    pub subuid: PathBuf,
    /// `/etc/subgid`.
    pub subgid: PathBuf,
}

/// Launches the workload, waits for it and cleans up after it.
pub fn run(req: &RunRequest) -> Result<Outcome, LaunchError> {
    // 0. The ids, as far as they can be checked without the state: an
    // `auto` map is only known once allocated, under the lock.
    match &req.userns {
        UsernsSpec::Host => ids::check(req.uid, req.gid, None)?,
        UsernsSpec::Maps(m) => {
            userns::validate_maps(m)?;
            ids::check(req.uid, req.gid, Some(&UserNamespace::from_maps(m.clone())))?
        }
        UsernsSpec::Auto => ids::check(req.uid, req.gid, None)?,
    }
    // 1. Compile the filter first: no state to undo if the profile is bad.
    let seccomp = match req.profile.load()? {
        None => None,
        Some((profile, source)) => {
            let (resolved, compiled) = seccomp::compile_for_host(
                &profile,
                source.clone(),
                &req.caps,
                compile::Options::default(),
            )?;
            // Without a listener the kernel fails notified syscalls with
            // ENOSYS: refuse rather than run with a policy nobody enforces.
            let notifies = resolved.default_action.action == Action::Notify
                || resolved
                    .rules
                    .iter()
                    .any(|r| r.action.action == Action::Notify);
            if notifies {
                return Err(LaunchError::Unsupported {
                    what: format!(
                        "{source}: SCMP_ACT_NOTIFY needs a user-space listener, which moat run does not provide yet; use another action"
                    ),
                });
            }
            for w in &compiled.warnings {
                log::debug!("seccomp: {w}");
            }
            let log_flag = if req.log_denials {
                libc::SECCOMP_FILTER_FLAG_LOG as u32
            } else {
                0
            };
            Some((compiled.program, compiled.flags | log_flag))
        }
    };
    let plan_base = prepare_exec(req)?;

    // 2. Reserve the name, the id range and the cgroup paths under the
    // state lock: the record names everything before any of it exists.
    let state = StateDir::open(&req.state_dir)?;
    let layout = cgroup::detect(&req.cgroup)?;
    let cgroup_dirs = WorkloadCgroups::paths(&layout, &req.cgroup, &req.name)?;
    let mut record = reserve::reserve(req, &state, &layout, cgroup_dirs)?;

    // 3. Cgroups. A failed create removes what it made, unless it says
    // otherwise; what it found there already is not ours.
    let cgroups = match WorkloadCgroups::create(&layout, &req.cgroup, &req.name, req.pids_limit) {
        Ok(c) => c,
        Err(e) => {
            let all_gone = !matches!(e, cgroup::CgroupError::RollbackIncomplete { .. });
            reserve::release(&state, &req.name, all_gone, None);
            return Err(e.into());
        }
    };

    let plan = child::ChildPlan {
        seccomp,
        ..plan_base
    };
    if let Err(e) = supervise::become_subreaper() {
        log::warn!("cannot become the workload's subreaper ({e}); its orphans go to init");
    }
    // The workload's pid is recorded before it is released: once it runs,
    // a killed `moat run` must leave it visible (and its ids taken).
    let ns = record.userns.clone();
    let mut record_pid = |pid: i32| -> Result<(), LaunchError> {
        record.pid = Some(ProcessRef::of(pid)?);
        state.lock()?.update(&record)?;
        Ok(())
    };
    let started = match spawn(req, &plan, &cgroups, ns.as_ref(), &mut record_pid) {
        Ok(s) => s,
        Err(e) => {
            let _ = cgroups.kill_all();
            let all_gone = cgroups.remove().is_ok();
            reserve::release(&state, &req.name, all_gone, None);
            return Err(e);
        }
    };
    let (pid, old_mask) = started;

    // 4. Supervise until the workload ends, then clean up.
    let outcome =
        supervise::supervise(pid).map_err(|e| LaunchError::os("waiting for the workload", e));
    supervise::restore(&old_mask);
    let hits = cgroups.limit_hits().unwrap_or(0);
    if let Err(e) = cgroups.kill_all() {
        log::warn!("could not stop the workload's remaining processes: {e}");
    }
    supervise::reap_orphans(std::time::Duration::from_secs(2));
    let removed = cgroups.remove();
    if let Err(e) = &removed {
        log::warn!("could not remove the workload's cgroups: {e}");
    }
    let exit = ExitRecord {
        name: req.name.clone(),
        pid: Some(pid),
        exit_code: outcome.as_ref().map(|o| o.exit_code()).unwrap_or(125),
        signal: match outcome {
            Ok(Outcome::Signaled(s)) => Some(s),
            _ => None,
        },
        pids_limit_hits: hits,
        started_at_unix_ms: record.started_at_unix_ms,
        ended_at_unix_ms: now_ms(),
        error: outcome.as_ref().err().map(|e| e.to_string()),
    };
    reserve::release(&state, &req.name, removed.is_ok(), Some(&exit));
    outcome
}

/// Clones the child, places it and releases it; returns once `execve`
/// succeeded (with the child's pid and the signal mask to restore).
fn spawn(
    req: &RunRequest,
    plan: &child::ChildPlan,
    cgroups: &WorkloadCgroups,
    ns: Option<&UserNamespace>,
    before_release: &mut dyn FnMut(i32) -> Result<(), LaunchError>,
) -> Result<(i32, libc::sigset_t), LaunchError> {
    let (go_r, go_w) = pipe().map_err(|e| LaunchError::os("creating a pipe", e))?;
    let (rep_r, rep_w) = pipe().map_err(|e| LaunchError::os("creating a pipe", e))?;
    let cg_fd = cgroups.v2_fd()?;
    let flags = if ns.is_some() {
        libc::CLONE_NEWUSER as u64
    } else {
        0
    };
    // Blocked before the clone so a signal cannot slip between clone and
    // the supervisor loop; the child resets its mask before exec.
    let old_mask = supervise::block().map_err(|e| LaunchError::os("blocking signals", e))?;
    // SAFETY: `moat run` is single-threaded at this point (the seccomp
    // compiler's threads have been joined).
    let forked = match unsafe { clone::clone3(flags, Some(cg_fd.as_fd())) } {
        Ok(f) => Ok((f, true)),
        // Kernels before 5.7 lack CLONE_INTO_CGROUP: join before release.
        Err(e) if matches!(e.raw_os_error(), Some(libc::EINVAL | libc::E2BIG)) => {
            // SAFETY: as above.
            unsafe { clone::clone3(flags, None) }.map(|f| (f, false))
        }
        Err(e) => Err(e),
    };
    let (forked, in_cgroup) = match forked {
        Ok(f) => f,
        Err(e) => {
            supervise::restore(&old_mask);
            return Err(LaunchError::os("clone3", e));
        }
    };
    let pid = match forked {
        clone::Forked::Child => {
            drop(go_w);
            drop(rep_r);
            child::run(plan, go_r, rep_w)
        }
        clone::Forked::Parent(pid) => pid,
    };
    drop(go_r);
    drop(rep_w);
    let abort = |e: LaunchError| {
        // SAFETY: killing and reaping our own child.
        unsafe { libc::kill(pid, libc::SIGKILL) };
        let _ = supervise::wait_blocking(pid);
        supervise::restore(&old_mask);
        e
    };
    let placed = if in_cgroup {
        cgroups.join_pids_only(pid)
    } else {
        cgroups.join(pid)
    };
    if let Err(e) = placed {
        return Err(abort(e.into()));
    }
    if let Some(ns) = ns {
        if let Err(e) = write_id_maps(pid, ns) {
            return Err(abort(e));
        }
    }
    if let Err(e) = before_release(pid) {
        return Err(abort(e));
    }
    // Release the child.
    // SAFETY: writing one byte to our pipe.
    if unsafe { libc::write(go_w.as_raw_fd(), b"1".as_ptr().cast(), 1) } != 1 {
        return Err(abort(LaunchError::os(
            "releasing the workload",
            std::io::Error::last_os_error(),
        )));
    }
    drop(go_w);
    // EOF: execve succeeded (the pipe is close-on-exec). Otherwise a report.
    let mut buf = [0u8; 16];
    let n = read_full(&rep_r, &mut buf);
    if n > 0 {
        let _ = supervise::wait_blocking(pid);
        supervise::restore(&old_mask);
        let failure = child::Failure::decode(&buf[..n]).unwrap_or(child::Failure {
            step: child::Step::Sync,
            errno: libc::EIO,
        });
        return Err(LaunchError::Child {
            command: req.command.first().cloned().unwrap_or_default(),
            failure,
        });
    }
    Ok((pid, old_mask))
}

fn read_full(fd: &OwnedFd, buf: &mut [u8]) -> usize {
    let mut n = 0;
    while n < buf.len() {
        // SAFETY: reading into the unfilled tail of `buf`.
        let r = unsafe { libc::read(fd.as_raw_fd(), buf[n..].as_mut_ptr().cast(), buf.len() - n) };
        if r < 0 && std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted {
            continue;
        }
        if r <= 0 {
            break;
        }
        n += r as usize;
    }
    n
}

fn pipe() -> std::io::Result<(OwnedFd, OwnedFd)> {
    nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(std::io::Error::from)
}

/// The parent writes the maps (as root in the parent namespace any mapping
/// is allowed, so setgroups need not be denied).
fn write_id_maps(pid: i32, ns: &UserNamespace) -> Result<(), LaunchError> {
    for (file, map) in [("uid_map", &ns.uid_map), ("gid_map", &ns.gid_map)] {
        let path = format!("/proc/{pid}/{file}");
        let text = userns::render_map(map);
        std::fs::write(&path, &text).map_err(|e| {
            LaunchError::os(
                format!("writing {path} ({})", text.trim().replace('\n', ", ")),
                e,
            )
        })?;
    }
    Ok(())
}

fn prepare_exec(req: &RunRequest) -> Result<child::ChildPlan, LaunchError> {
    let cstr = |s: &[u8], what: &str| {
        CString::new(s).map_err(|_| {
            LaunchError::os(
                format!("{what} contains a NUL byte"),
                std::io::Error::from(std::io::ErrorKind::InvalidInput),
            )
        })
    };
    let Some(program) = req.command.first() else {
        return Err(LaunchError::os(
            "no command given",
            std::io::Error::from(std::io::ErrorKind::InvalidInput),
        ));
    };
    let mut env: Vec<(String, String)> = std::env::vars_os()
        .map(|(k, v)| {
            (
                k.to_string_lossy().into_owned(),
                v.to_string_lossy().into_owned(),
            )
        })
        .filter(|(k, _)| !req.env.iter().any(|(k2, _)| k2 == k))
        .collect();
    env.extend(req.env.iter().cloned());
    let path_var = env
        .iter()
        .find(|(k, _)| k == "PATH")
        .map(|(_, v)| v.clone())
        .unwrap_or_else(|| "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into());
    let candidates: Vec<PathBuf> = if program.contains('/') {
        vec![PathBuf::from(program)]
    } else {
        std::env::split_paths(&path_var)
            .filter(|d| !d.as_os_str().is_empty())
            .map(|d| d.join(program))
            .collect()
    };
    Ok(child::ChildPlan {
        exec_candidates: candidates
            .iter()
            .map(|p| cstr(p.as_os_str().as_bytes(), "the command path"))
            .collect::<Result<_, _>>()?,
        argv: req
            .command
            .iter()
            .map(|a| cstr(a.as_bytes(), "an argument"))
            .collect::<Result<_, _>>()?,
        env: env
            .iter()
            .map(|(k, v)| cstr(format!("{k}={v}").as_bytes(), "an environment variable"))
            .collect::<Result<_, _>>()?,
        workdir: req
            .workdir
            .as_ref()
            .map(|d| cstr(d.as_os_str().as_bytes(), "the working directory"))
            .transpose()?,
        uid: req.uid,
        gid: req.gid,
        caps: req.caps.mask(),
        last_cap: last_cap(),
        no_new_privs: req.no_new_privs,
        seccomp: None,
    })
}

fn last_cap() -> u32 {
    std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(crate::caps::ALL_CAPS.len() as u32 - 1)
}

fn profile_label(p: &ProfileRef) -> String {
    match p {
        ProfileRef::Default => "default".into(),
        ProfileRef::Unconfined => "unconfined".into(),
        ProfileRef::File(f) => f.display().to_string(),
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Default state and sub-id locations.
pub fn default_paths() -> (PathBuf, PathBuf, PathBuf) {
    (
        PathBuf::from(state::DEFAULT_STATE_DIR),
        Path::new("/etc/subuid").to_path_buf(),
        Path::new("/etc/subgid").to_path_buf(),
    )
}
