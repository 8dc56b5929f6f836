//! `moat run`: launching a workload under seccomp, a user namespace, a
//! pids limit and its own namespaces, fail-closed.
//!
//! The order follows runc and crun:
//! 1. everything that can be checked is checked before any process exists
//!    (descriptors to pass, profile compiled, name reserved, id range
//!    allocated, cgroups made);
//! 2. `clone3` starts moat's init in new PID, mount and IPC namespaces
//!    ([`init`]); it builds the workload's mounts ([`mounts`]) and forks the
//!    command's process straight into its v2 cgroup (and a new user
//!    namespace), which joins the v1 pids cgroup itself and waits while the
//!    init writes its id maps;
//! 3. the command's process takes its cgroup namespace, session and
//!    terminal, sets ids, capabilities, `no_new_privs`, and installs the
//!    seccomp filter as the last step before `execve` ([`child`]).
//!
//! Any failure before `execve` undoes every earlier step, so a workload never
//! runs with less protection than asked for and nothing is left behind.
//! While it runs, the supervisor (this process, outside every namespace of
//! the workload, where it can neither see nor signal it) relays its pty
//! ([`tty`], [`relay`]) and forwards signals ([`supervise`]).

pub mod child;
pub mod clone;
mod error;
pub mod failure;
pub mod fds;
pub mod ids;
pub mod init;
pub mod init_filter;
mod keeper;
pub mod mounts;
pub mod namespaces;
mod placement;
pub mod plan;
pub mod relay;
mod reserve;
mod spawn;
pub mod supervise;
pub mod tty;

use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

pub use error::LaunchError;
pub use supervise::Outcome;

use crate::caps::CapSet;
use crate::cgroup::{self, CgroupConfig, CgroupManager, PidsLimit, WorkloadCgroups};
use crate::seccomp::profile::Action;
use crate::seccomp::{self, cache, compile, ProfileRef};
use crate::state::{self, ExitRecord, ProcessRef, StateDir};
use crate::userns::{self, UserNamespace, UsernsSpec};
pub use namespaces::Isolation;
use placement::Plan;

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
    /// Where the cgroups go with the cgroupfs manager.
    pub cgroup: CgroupConfig,
    /// `--cgroup-manager`; `None` chooses (systemd where it is PID 1).
    pub cgroup_manager: Option<CgroupManager>,
    /// `--cgroup-parent` as given: the parent cgroup (cgroupfs) or the
    /// slice (systemd, default `moat.slice`).
    pub cgroup_parent: Option<String>,
    /// Extra environment variables.
    pub env: Vec<(String, String)>,
    /// Pass moat's whole environment (`--env-host`), not only PATH, HOME
    /// and TERM.
    pub env_host: bool,
    /// Namespaces and file-system protections.
    pub isolation: Isolation,
    /// `--preserve-fds`: descriptors 3 to 3+N-1 reach the workload.
    pub preserve_fds: u32,
    /// Working directory.
    pub workdir: Option<PathBuf>,
    /// The state directory.
    pub state_dir: PathBuf,
    /// Where compiled seccomp filters are cached ([`cache`]); `None`
    /// compiles without a cache (`--no-cache`).
    pub seccomp_cache: Option<PathBuf>,
    /// `/etc/subuid` (for `--userns auto`).
    pub subuid: PathBuf,
    /// `/etc/subgid`.
    pub subgid: PathBuf,
}

/// Launches the workload, waits for it and cleans up after it.
pub fn run(req: &RunRequest) -> Result<Outcome, LaunchError> {
    run_recorded(req, None)
}

/// [`run`], recording the workload's syscalls with `recorder`: its cgroup
/// is flagged after it is made and before the command's process exists,
/// and the set is taken once every process in it is gone
/// ([`crate::record::Recorder::take_result`]).
pub fn run_recorded(
    req: &RunRequest,
    mut recorder: Option<&mut crate::record::Recorder>,
) -> Result<Outcome, LaunchError> {
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
    // 1. Before moat opens anything that stays open: the descriptors to
    //    pass must be ones moat inherited.
    fds::check_preserved(req.preserve_fds)?;
    // Compile the filter first: no state to undo if the profile is bad.
    let seccomp = match req.profile.load()? {
        None => None,
        Some((profile, source)) => {
            let (resolved, host) = seccomp::resolve_for_host(&profile, source.clone(), &req.caps)?;
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
            let log_flag = if req.log_denials {
                libc::SECCOMP_FILTER_FLAG_LOG as u32
            } else {
                0
            };
            let (filter, _) = cache::compile_cached(
                &resolved,
                &req.caps,
                &host,
                compile::Options::default(),
                log_flag,
                req.seccomp_cache.as_deref(),
            )?;
            Some((filter.program, filter.flags))
        }
    };
    let plan_base = plan::prepare_exec(req)?;

    // 2. Reserve the name, the id range and the cgroup paths under the
    // state lock: the record names everything before any of it exists.
    let state = StateDir::open(&req.state_dir)?;
    let layout = cgroup::detect(&req.cgroup)?;
    let plan = placement::decide(req, &layout)?;
    let (cgroup_dirs, unit) = match &plan {
        Plan::Cgroupfs(cfg) => (WorkloadCgroups::paths(&layout, cfg, &req.name)?, None),
        Plan::Scope(s) => ((s.payload(), s.payload()), Some(s.unit.clone())),
    };
    let mut record = reserve::reserve(req, &state, &layout, cgroup_dirs, unit)?;

    // 3. Cgroups. A failed create removes what it made, unless it says
    // otherwise; what it found there already is not ours. With systemd,
    // the scope and the workload's cgroup in it.
    let (cgroups, mut scope) = match plan {
        Plan::Cgroupfs(cfg) => {
            match WorkloadCgroups::create(&layout, &cfg, &req.name, req.pids_limit) {
                Ok(c) => (c, None),
                Err(e) => {
                    let all_gone = !matches!(e, cgroup::CgroupError::RollbackIncomplete { .. });
                    reserve::release(&state, &req.name, all_gone, None);
                    return Err(e.into());
                }
            }
        }
        Plan::Scope(s) => match s.start() {
            Ok((c, scope)) => (c, Some(scope)),
            Err(failed) => {
                let (e, all_gone) = *failed;
                reserve::release(&state, &req.name, all_gone, None);
                return Err(e);
            }
        },
    };

    // Recording: flag the cgroup before anything runs in it.
    if let Some(rec) = recorder.as_deref_mut() {
        let armed = cgroups
            .v2_id()
            .map_err(LaunchError::from)
            .and_then(|id| rec.arm(id).map_err(LaunchError::from));
        if let Err(e) = armed {
            let mut all_gone = cgroups.remove().is_ok();
            if let Some(scope) = scope.take() {
                all_gone &= scope.end().map_err(|e| log::warn!("{e}")).is_ok();
            }
            reserve::release(&state, &req.name, all_gone, None);
            return Err(e);
        }
    }

    let plan = child::ChildPlan {
        seccomp,
        ..plan_base
    };
    if let Err(e) = supervise::become_subreaper() {
        log::warn!("cannot become the workload's subreaper ({e}); its orphans go to init");
    }
    // moat's init's pid is recorded before the command is released: once
    // it runs, a killed `moat run` must leave it visible (and its ids taken).
    let command = req.command.first().cloned().unwrap_or_default();
    let ns = record.userns.clone();
    let mut record_pid = |pid: i32| -> Result<(), LaunchError> {
        record.pid = Some(ProcessRef::of(pid)?);
        state.lock()?.update(&record)?;
        Ok(())
    };
    let started = spawn::spawn(
        &command,
        &req.isolation,
        plan,
        &cgroups,
        ns.as_ref(),
        &mut record_pid,
    );
    let mut started = match started {
        Ok(s) => s,
        Err(e) => {
            let _ = cgroups.kill_all();
            let mut all_gone = cgroups.remove().is_ok();
            if let Some(scope) = scope.take() {
                all_gone &= scope.end().map_err(|e| log::warn!("{e}")).is_ok();
            }
            reserve::release(&state, &req.name, all_gone, None);
            return Err(e);
        }
    };
    let init = started.init;

    // 4. Supervise until the workload ends, then clean up.
    let init_status = supervise::supervise(init, started.relay.as_mut())
        .map_err(|e| LaunchError::os("waiting for the workload", e));
    supervise::restore(&started.old_mask);
    // The command's status as the init reported it; without a report (the
    // init itself was killed), the init's own.
    let mut raw = [0u8; 4];
    let outcome = init_status.and_then(|init_raw| {
        let raw = match spawn::read_full(&started.status, &mut raw) {
            4 => i32::from_ne_bytes(raw),
            _ => init_raw,
        };
        supervise::decode(raw).ok_or_else(|| {
            LaunchError::os(
                "waiting for the workload",
                std::io::Error::other(format!("unexpected wait status {raw:#x}")),
            )
        })
    });
    let hits = cgroups.limit_hits().unwrap_or(0);
    if let Err(e) = cgroups.kill_all() {
        log::warn!("could not stop the workload's remaining processes: {e}");
    }
    // The counters are read: the scope may go once the workload has.
    if let Some(scope) = scope.as_mut() {
        scope.release_keeper();
    }
    if let Some(relay) = started.relay.as_mut() {
        relay.drain(std::time::Duration::from_secs(1));
    }
    drop(started.raw.take());
    supervise::reap_orphans(std::time::Duration::from_secs(2));
    let mut removed = cgroups.remove().map_err(|e| e.to_string());
    if let Some(scope) = scope {
        removed = removed.and(scope.end());
    }
    if let Err(e) = &removed {
        log::warn!("could not remove the workload's cgroups: {e}");
    }
    // Every process of the cgroup is gone: the set is complete.
    let outcome = match recorder.map(|r| r.finish()) {
        Some(Err(e)) => Err(LaunchError::from(e)),
        _ => outcome,
    };
    let exit = ExitRecord {
        name: req.name.clone(),
        pid: Some(init),
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
