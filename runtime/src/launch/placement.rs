//! Where a workload's cgroups come from, and the choice: moat makes them
//! (`cgroupfs`), or systemd does, as a transient scope unit
//! `moat-<name>.scope` in `moat.slice` (`systemd`, the default where
//! systemd is PID 1, as podman chooses).
//!
//! A scope needs a process to exist and systemd removes its cgroup as soon
//! as the last one leaves, so moat forks a keeper ([`super::keeper`]) and
//! asks systemd for the scope with it (`StartTransientUnit`: the keeper's
//! pid, `Delegate=yes`, `TasksMax`), waits for the job, checks that the
//! keeper is in the scope, moves it to the scope's leaf `supervisor`, and
//! makes the workload's own cgroup `payload` next to it with the pids
//! limit, as with cgroupfs (the layout systemd-nspawn and podman's split
//! mode use). From there the launch is the cgroupfs one: the command is
//! born in `payload` (`CLONE_INTO_CGROUP`), limited before it runs
//! anything; its counters are read after it ends, while the keeper still
//! holds the scope; then moat removes `payload`, releases the keeper and
//! systemd removes the scope. Whatever fails, killing the keeper empties
//! the scope and systemd removes it.
//!
//! `moat run` started by a unit that delegates its cgroup (`Delegate=yes`)
//! keeps its workloads inside that unit instead: its own processes move
//! to the leaf `supervisor` and the workloads' cgroups go to
//! `<unit>/<--cgroup-parent>/<name>`, made by moat.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::keeper::Keeper;
use super::{LaunchError, RunRequest};
use crate::cgroup::{
    self, CgroupConfig, CgroupError, CgroupManager, Layout, PidsLimit, PidsLocation,
    WorkloadCgroups,
};
use crate::systemd::{self, Systemd, SystemdError, Value};

/// How the workload's cgroups will be made.
pub(super) enum Plan {
    /// moat makes them, under `cfg.parent` (which may be inside a
    /// delegated unit).
    Cgroupfs(CgroupConfig),
    /// systemd makes the scope.
    Scope(Box<ScopePlacer>),
}

fn systemd_error(what: impl Into<String>, error: SystemdError) -> LaunchError {
    LaunchError::Systemd {
        what: what.into(),
        error,
    }
}

/// Which manager the facts of this machine call for, before asking
/// systemd anything.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Choice {
    /// moat makes the cgroups.
    Cgroupfs,
    /// A systemd scope, as asked.
    Systemd,
    /// The default under systemd: a scope, unless moat runs in a unit
    /// that delegates its cgroup.
    SystemdUnlessDelegated,
}

/// The choice for `requested` (`--cgroup-manager`), whether systemd is PID
/// 1 and whether pids is on the unified hierarchy: `systemd` asked for
/// without systemd is an error; the default is systemd's where it can be.
fn choose(
    requested: Option<CgroupManager>,
    booted: bool,
    pids_on_v2: bool,
) -> Result<Choice, LaunchError> {
    match (requested, booted) {
        (Some(CgroupManager::Cgroupfs), _) => Ok(Choice::Cgroupfs),
        (Some(CgroupManager::Systemd), false) => Err(LaunchError::Unsupported {
            what: "--cgroup-manager systemd: systemd is not running as PID 1 here \
                   (/run/systemd/system does not exist); use --cgroup-manager cgroupfs"
                .into(),
        }),
        (Some(CgroupManager::Systemd), true) => Ok(Choice::Systemd),
        (None, false) => Ok(Choice::Cgroupfs),
        (None, true) if !pids_on_v2 => {
            log::info!(
                "systemd runs on a hybrid cgroup layout (pids on cgroup v1): moat makes its \
                 cgroups itself"
            );
            Ok(Choice::Cgroupfs)
        }
        (None, true) => Ok(Choice::SystemdUnlessDelegated),
    }
}

/// Decides where the workload's cgroups go (see the module documentation).
pub(super) fn decide(req: &RunRequest, layout: &Layout) -> Result<Plan, LaunchError> {
    let pids_on_v2 = matches!(layout.pids, PidsLocation::V2 { .. });
    let choice = choose(req.cgroup_manager, systemd::booted(), pids_on_v2)?;
    if choice == Choice::Cgroupfs {
        return Ok(Plan::Cgroupfs(req.cgroup.clone()));
    }
    let mut sd = connect()?;
    if choice == Choice::SystemdUnlessDelegated {
        if let Some(rel) = delegated_unit(&mut sd)? {
            cgroup::move_into_leaf(&layout.v2_mount.join(&rel))?;
            return Ok(Plan::Cgroupfs(CgroupConfig {
                parent: format!("{rel}/{}", req.cgroup.parent),
                ..req.cgroup.clone()
            }));
        }
    }
    ScopePlacer::new(req, layout, sd).map(|s| Plan::Scope(Box::new(s)))
}

fn connect() -> Result<Systemd, LaunchError> {
    Systemd::connect().map_err(|e| systemd_error("the systemd cgroup manager", e))
}

/// The v2 cgroup of process `pid` (`self` for moat), relative to the
/// hierarchy's root: the `0::` line of `/proc/<pid>/cgroup`.
fn v2_cgroup_of(pid: &str) -> std::io::Result<String> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/cgroup"))?;
    text.lines()
        .find_map(|l| l.strip_prefix("0::"))
        .map(str::to_owned)
        .ok_or_else(|| std::io::Error::other(format!("/proc/{pid}/cgroup has no cgroup v2 line")))
}

/// The unit a v2 cgroup path `own` belongs to, when that path is the
/// unit's own cgroup or the leaf moat moves to in it: the unit's name and
/// its cgroup (relative, without the leading `/`). Below the unit's top,
/// the subtree is whoever made it, so nothing else counts.
fn unit_of(own: &str) -> Option<(&str, String)> {
    let parts: Vec<&str> = own.split('/').filter(|p| !p.is_empty()).collect();
    let slices = parts.iter().take_while(|p| p.ends_with(".slice")).count();
    let unit = *parts.get(slices)?;
    if !(unit.ends_with(".service") || unit.ends_with(".scope")) {
        return None;
    }
    let rest = &parts[slices + 1..];
    if !(rest.is_empty() || rest == [cgroup::SUPERVISOR_LEAF]) {
        return None;
    }
    Some((unit, parts[..=slices].join("/")))
}

/// When moat runs in a unit that delegates its cgroup ([`unit_of`] its
/// own cgroup, `Delegate=yes`), that unit's cgroup.
fn delegated_unit(sd: &mut Systemd) -> Result<Option<String>, LaunchError> {
    let own = v2_cgroup_of("self").map_err(|e| LaunchError::os("reading /proc/self/cgroup", e))?;
    let Some((unit, rel)) = unit_of(&own) else {
        return Ok(None);
    };
    let interface = if unit.ends_with(".service") {
        "org.freedesktop.systemd1.Service"
    } else {
        "org.freedesktop.systemd1.Scope"
    };
    let what = format!("reading Delegate= of {unit}");
    let path = sd
        .unit_of_pid(std::process::id())
        .map_err(|e| systemd_error(what.clone(), e))?;
    let delegate = sd
        .property(&path, interface, "Delegate")
        .map_err(|e| systemd_error(what, e))?;
    if delegate == Value::Bool(true) {
        return Ok(Some(rel));
    }
    if unit.ends_with(".service") {
        log::info!(
            "moat run runs in {unit}, which does not delegate its cgroup: the workload gets a \
             scope of its own in the workload slice; to keep workloads inside {unit}, add \
             Delegate=yes to its [Service] section"
        );
    }
    Ok(None)
}

/// Makes a workload's systemd scope and its cgroup in it.
pub(super) struct ScopePlacer {
    sd: Systemd,
    description: String,
    slice: String,
    /// `moat-<name>.scope`.
    pub(super) unit: String,
    /// The scope's cgroup.
    pub(super) dir: PathBuf,
    limit: PidsLimit,
    parent_pids_max: u64,
    layout: Layout,
}

/// A started scope: its keeper holds it until [`Scope::end`].
pub(super) struct Scope {
    sd: Option<Systemd>,
    unit: String,
    dir: PathBuf,
    keeper: Option<Keeper>,
}

impl ScopePlacer {
    fn new(req: &RunRequest, layout: &Layout, sd: Systemd) -> Result<Self, LaunchError> {
        let slice = req
            .cgroup_parent
            .clone()
            .unwrap_or_else(|| moat_api::defaults::MOAT_SLICE.to_owned());
        let dir = cgroup::scope_dir(layout, &slice, &req.name)?;
        let mut description = format!("moat workload {}: {}", req.name, req.command.join(" "));
        if description.len() > 200 {
            let mut cut = 200;
            while !description.is_char_boundary(cut) {
                cut -= 1;
            }
            description.truncate(cut);
            description.push_str("...");
        }
        Ok(ScopePlacer {
            sd,
            description,
            slice,
            unit: systemd::scope_name(&req.name),
            dir,
            limit: req.pids_limit,
            parent_pids_max: req.cgroup.parent_pids_max,
            layout: layout.clone(),
        })
    }

    /// The workload's own cgroup in the scope (recorded before it exists).
    pub(super) fn payload(&self) -> PathBuf {
        self.dir.join(cgroup::SCOPE_PAYLOAD)
    }

    /// Makes the slice a transient unit carrying `TasksMax` =
    /// `--parent-pids-max` when it is not there yet; an existing slice (a
    /// unit file of the administrator's, or one made by an earlier run)
    /// keeps its settings.
    fn ensure_slice(&mut self) -> Result<(), LaunchError> {
        if self.parent_pids_max == 0 {
            return Err(CgroupError::InvalidConfig {
                field: "parent_pids_max",
                reason: "0 would forbid every fork in every workload".to_owned(),
            }
            .into());
        }
        let props = vec![
            ("Description", Value::Str("moat workloads".into())),
            ("TasksMax", Value::U64(self.parent_pids_max)),
        ];
        match self.sd.start_transient(&self.slice, props) {
            Ok(()) => Ok(()),
            Err(e) if e.remote_name() == Some("org.freedesktop.systemd1.UnitExists") => Ok(()),
            Err(e) => Err(systemd_error(format!("making the slice {}", self.slice), e)),
        }
    }

    /// Starts the scope with a keeper in it, moves the keeper to the
    /// scope's leaf `supervisor` and makes the workload's cgroup
    /// `payload` with its pids limit, as [`WorkloadCgroups::create`] makes
    /// a cgroupfs workload's. On failure, returns whether nothing is left.
    pub(super) fn start(mut self) -> Result<(WorkloadCgroups, Scope), Box<(LaunchError, bool)>> {
        self.ensure_slice().map_err(|e| Box::new((e, true)))?;
        let keeper = Keeper::spawn()
            .map_err(|e| Box::new((LaunchError::os("forking the scope's keeper", e), true)))?;
        let tasks_max = match self.limit {
            // The workload's limit is its own cgroup's; the scope's allows
            // for the keeper as well.
            PidsLimit::Max(n) => n.saturating_add(1),
            // As with cgroupfs, no limit of the scope's own (systemd would
            // otherwise apply its DefaultTasksMax): the slice's applies.
            PidsLimit::Inherit | PidsLimit::Unlimited => u64::MAX,
        };
        let props = vec![
            ("Description", Value::Str(self.description.clone())),
            ("Slice", Value::Str(self.slice.clone())),
            (
                "PIDs",
                Value::Array("u".into(), vec![Value::U32(keeper.pid as u32)]),
            ),
            ("Delegate", Value::Bool(true)),
            ("TasksMax", Value::U64(tasks_max)),
            ("CollectMode", Value::Str("inactive-or-failed".into())),
        ];
        let mut scope = Scope {
            sd: None,
            unit: self.unit.clone(),
            dir: self.dir.clone(),
            keeper: Some(keeper),
        };
        if let Err(e) = self.sd.start_transient(&self.unit, props) {
            // A refused call made nothing (e.g. a unit of that name exists:
            // it is not ours to touch); a failed job did.
            let made = e.remote_name().is_none();
            let hint = match e.remote_name() {
                Some("org.freedesktop.systemd1.UnitExists") => {
                    " (a unit of that name exists and is not this workload's: choose another \
                     --name)"
                }
                _ => "",
            };
            let error = systemd_error(
                format!("starting the workload's scope {}{hint}", self.unit),
                e,
            );
            scope.sd = Some(self.sd);
            return Err(Box::new((error, scope.abandon(made))));
        }
        scope.sd = Some(self.sd);
        match place(&self.layout, &self.dir, self.limit, scope.keeper_pid()) {
            Ok(cgroups) => {
                // Not kept open while the workload runs: systemd sends every
                // signal to every connection of its private socket, and
                // would queue them for a reader that never reads. The rare
                // stop at the end connects again.
                scope.sd = None;
                Ok((cgroups, scope))
            }
            Err(e) => Err(Box::new((e, scope.abandon(true)))),
        }
    }
}

/// The steps after systemd started the scope: the keeper in the scope,
/// moved to the leaf; the workload's cgroup made.
fn place(
    layout: &Layout,
    dir: &Path,
    limit: PidsLimit,
    keeper: i32,
) -> Result<WorkloadCgroups, LaunchError> {
    let rel = dir.strip_prefix(&layout.v2_mount).unwrap_or(dir);
    let want = format!("/{}", rel.display());
    let got = v2_cgroup_of(&keeper.to_string())
        .map_err(|e| LaunchError::os(format!("reading /proc/{keeper}/cgroup"), e))?;
    if got != want {
        return Err(LaunchError::Unsupported {
            what: format!(
                "systemd started the scope, but its keeper (pid {keeper}) is in {got}, not {want}"
            ),
        });
    }
    cgroup::move_into_leaf(dir)?;
    let cfg = CgroupConfig {
        parent: rel.display().to_string(),
        ..CgroupConfig::default()
    };
    Ok(WorkloadCgroups::create(
        layout,
        &cfg,
        cgroup::SCOPE_PAYLOAD,
        limit,
    )?)
}

impl Scope {
    fn keeper_pid(&self) -> i32 {
        self.keeper.as_ref().map_or(0, |k| k.pid)
    }

    /// After a failed start: kills the keeper and, if systemd `made` the
    /// scope, waits for it to be gone. Returns whether nothing is left.
    fn abandon(mut self, made: bool) -> bool {
        if let Some(k) = self.keeper.take() {
            k.kill();
        }
        !made || self.end().map_err(|e| log::warn!("{e}")).is_ok()
    }

    /// Lets the keeper go, once the workload's counters are read: the
    /// scope empties when the workload has, and systemd removes it.
    pub(super) fn release_keeper(&mut self) {
        if let Some(k) = self.keeper.take() {
            k.release();
        }
    }

    /// Releases the keeper if it still runs and waits until systemd has
    /// removed the scope; after [`cgroup::KILL_TIMEOUT`], stops the unit
    /// and waits again.
    pub(super) fn end(mut self) -> Result<(), String> {
        self.release_keeper();
        end_scope(&mut self.sd, &self.unit, &self.dir)
    }
}

/// Waits for systemd to remove the scope's cgroup `dir` once the workload
/// is gone (it does as soon as the scope is empty); after
/// [`cgroup::KILL_TIMEOUT`], stops the unit over D-Bus (connecting if
/// `sd` is `None`) and waits again.
pub(super) fn end_scope(sd: &mut Option<Systemd>, unit: &str, dir: &Path) -> Result<(), String> {
    if wait_gone(dir, cgroup::KILL_TIMEOUT) {
        return Ok(());
    }
    log::info!(
        "{} is still there {} s after its workload ended: stopping {unit}",
        dir.display(),
        cgroup::KILL_TIMEOUT.as_secs()
    );
    let sd = match sd {
        Some(sd) => sd,
        None => sd.insert(Systemd::connect().map_err(|e| systemd::error_chain(&e))?),
    };
    stop_and_check(sd, unit, dir)
}

/// Stops `unit` (killing what is in it), forgets its failed state and
/// waits for its cgroup `dir` to be gone. A unit systemd no longer knows
/// whose empty cgroup is left (systemd could not remove it while a process
/// was still being reaped) is cleared by moat.
fn stop_and_check(sd: &mut Systemd, unit: &str, dir: &Path) -> Result<(), String> {
    let loaded = sd.stop_unit(unit).map_err(|e| systemd::error_chain(&e))?;
    sd.reset_failed(unit)
        .map_err(|e| systemd::error_chain(&e))?;
    if wait_gone(dir, cgroup::KILL_TIMEOUT) {
        return Ok(());
    }
    if !loaded {
        cgroup::remove_empty_scope(dir).map_err(|e| e.to_string())?;
        return Ok(());
    }
    Err(format!(
        "{} is still there after stopping {unit}",
        dir.display()
    ))
}

fn wait_gone(dir: &Path, timeout: Duration) -> bool {
    let start = Instant::now();
    let mut pause = Duration::from_millis(1);
    while dir.exists() {
        if start.elapsed() >= timeout {
            return false;
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(50));
    }
    true
}

/// Reclaims the scope a stale record names (its workload cgroup
/// `payload` is recorded): refused (touching nothing) unless it is the
/// record's own scope ([`cgroup::check_recorded_scope`]) and no live moat
/// process holds the workload cgroup's lock; then the unit is stopped
/// (which kills what is left in it) and its failed state reset, and its
/// cgroup must be gone.
pub(super) fn reclaim_scope(
    layout: &Layout,
    name: &str,
    unit: &str,
    payload: &Path,
) -> Result<(), String> {
    cgroup::check_recorded_scope(layout, name, unit, payload).map_err(|e| e.to_string())?;
    if cgroup::scope_in_use(payload).map_err(|e| e.to_string())? {
        return Err(format!(
            "{}: it belongs to a running workload (a moat process holds its lock)",
            payload.display()
        ));
    }
    let dir = payload.parent().unwrap_or(payload);
    if !dir.exists() {
        return Ok(());
    }
    let mut sd = Systemd::connect().map_err(|e| systemd::error_chain(&e))?;
    stop_and_check(&mut sd, unit, dir)?;
    log::info!("stopped {unit} of stale workload {name}");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_is_systemds_only_where_systemd_runs_on_cgroup_v2() {
        use CgroupManager::{Cgroupfs, Systemd};
        assert_eq!(choose(None, false, true).unwrap(), Choice::Cgroupfs);
        assert_eq!(choose(None, false, false).unwrap(), Choice::Cgroupfs);
        assert_eq!(choose(None, true, false).unwrap(), Choice::Cgroupfs);
        assert_eq!(
            choose(None, true, true).unwrap(),
            Choice::SystemdUnlessDelegated
        );
        for booted in [false, true] {
            assert_eq!(
                choose(Some(Cgroupfs), booted, true).unwrap(),
                Choice::Cgroupfs
            );
        }
        assert_eq!(choose(Some(Systemd), true, true).unwrap(), Choice::Systemd);
        let e = choose(Some(Systemd), false, true).unwrap_err();
        assert_eq!(e.exit_code(), 125);
        assert!(
            e.to_string()
                .contains("systemd is not running as PID 1 here (/run/systemd/system"),
            "{e}"
        );
    }

    #[test]
    fn a_unit_counts_from_its_own_cgroup_or_moats_leaf_in_it() {
        assert_eq!(
            unit_of("/system.slice/build.service"),
            Some(("build.service", "system.slice/build.service".to_owned()))
        );
        assert_eq!(
            unit_of("/system.slice/build.service/supervisor"),
            Some(("build.service", "system.slice/build.service".to_owned()))
        );
        assert_eq!(
            unit_of("/user.slice/user-0.slice/session-3.scope"),
            Some((
                "session-3.scope",
                "user.slice/user-0.slice/session-3.scope".to_owned()
            ))
        );
        assert_eq!(
            unit_of("/init.scope"),
            Some(("init.scope", "init.scope".to_owned()))
        );
        // Below a unit's top, in a subtree someone else made, or no unit.
        for own in [
            "/system.slice/build.service/worker",
            "/user.slice/user-1000.slice/user@1000.service/app.slice/x.service",
            "/moat/web",
            "/system.slice",
            "/",
            "",
        ] {
            assert_eq!(unit_of(own), None, "{own}");
        }
    }
}
