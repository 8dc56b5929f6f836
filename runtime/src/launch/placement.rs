//! Where a workload's cgroups come from, and the choice: moat makes them
//! (`cgroupfs`), or systemd does, as a transient scope unit
//! `moat-<name>.scope` in `moat.slice` (`systemd`, the default where
//! systemd is PID 1, as podman chooses).
//!
//! With systemd the scope only exists once a process is in it, so the
//! command is forked first, waiting in moat's own cgroup; the supervisor
//! then asks systemd (`StartTransientUnit` with the command's pid,
//! `TasksMax`, `Delegate=yes`), waits for the job, checks that the command
//! is in the scope and that the scope's `pids.max` is the limit asked for,
//! takes the scope's ownership lock, records the workload and only then
//! releases the command. So the limit holds before the command runs
//! anything, and whatever fails, killing the init ends the command, the
//! scope empties and systemd removes it.
//!
//! `moat run` started by a unit that delegates its cgroup (`Delegate=yes`)
//! keeps its workloads inside that unit instead: its own processes move
//! to the leaf `supervisor` and the workloads' cgroups go to
//! `<unit>/<--cgroup-parent>/<name>`, made by moat.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

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

/// Decides where the workload's cgroups go (see the module documentation).
pub(super) fn decide(req: &RunRequest, layout: &Layout) -> Result<Plan, LaunchError> {
    match req.cgroup_manager {
        Some(CgroupManager::Cgroupfs) => Ok(Plan::Cgroupfs(req.cgroup.clone())),
        Some(CgroupManager::Systemd) => {
            if !systemd::booted() {
                return Err(LaunchError::Unsupported {
                    what: "--cgroup-manager systemd: systemd is not running as PID 1 here \
                           (/run/systemd/system does not exist); use --cgroup-manager cgroupfs"
                        .into(),
                });
            }
            let sd = connect()?;
            ScopePlacer::new(req, layout, sd).map(|s| Plan::Scope(Box::new(s)))
        }
        None => {
            if !systemd::booted() {
                return Ok(Plan::Cgroupfs(req.cgroup.clone()));
            }
            if !matches!(layout.pids, PidsLocation::V2 { .. }) {
                log::info!(
                    "systemd runs on a hybrid cgroup layout (pids on cgroup v1): moat makes \
                     its cgroups itself"
                );
                return Ok(Plan::Cgroupfs(req.cgroup.clone()));
            }
            let mut sd = connect()?;
            if let Some(rel) = delegated_unit(&mut sd)? {
                let unit_dir = layout.v2_mount.join(&rel);
                cgroup::move_into_leaf(&unit_dir)?;
                return Ok(Plan::Cgroupfs(CgroupConfig {
                    parent: format!("{rel}/{}", req.cgroup.parent),
                    ..req.cgroup.clone()
                }));
            }
            ScopePlacer::new(req, layout, sd).map(|s| Plan::Scope(Box::new(s)))
        }
    }
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

/// When moat runs at the top of a unit that delegates its cgroup (or in
/// the leaf it moves to there), the unit's cgroup relative to the root.
fn delegated_unit(sd: &mut Systemd) -> Result<Option<String>, LaunchError> {
    let own = v2_cgroup_of("self").map_err(|e| LaunchError::os("reading /proc/self/cgroup", e))?;
    let parts: Vec<&str> = own.split('/').filter(|p| !p.is_empty()).collect();
    let slices = parts.iter().take_while(|p| p.ends_with(".slice")).count();
    let (Some(unit), rest) = (parts.get(slices), parts.get(slices + 1..).unwrap_or(&[])) else {
        return Ok(None);
    };
    let interface = if unit.ends_with(".service") {
        "org.freedesktop.systemd1.Service"
    } else if unit.ends_with(".scope") {
        "org.freedesktop.systemd1.Scope"
    } else {
        return Ok(None);
    };
    // Below the unit's top, the subtree is whoever made it: only the leaf
    // moat itself moves to counts as moat's.
    if !(rest.is_empty() || rest == [cgroup::SUPERVISOR_LEAF]) {
        return Ok(None);
    }
    let what = format!("reading Delegate= of {unit}");
    let path = sd
        .unit_of_pid(std::process::id())
        .map_err(|e| systemd_error(what.clone(), e))?;
    let delegate = sd
        .property(&path, interface, "Delegate")
        .map_err(|e| systemd_error(what, e))?;
    if delegate == Value::Bool(true) {
        return Ok(Some(parts[..=slices].join("/")));
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

/// Puts a forked, waiting command into its systemd scope.
pub(super) struct ScopePlacer {
    sd: Systemd,
    name: String,
    description: String,
    slice: String,
    /// `moat-<name>.scope`.
    pub(super) unit: String,
    /// Its cgroup.
    pub(super) dir: PathBuf,
    limit: PidsLimit,
    parent_pids_max: u64,
    layout: Layout,
    /// Whether systemd made the scope (so that a failure must see it gone).
    started: bool,
    placed: Option<WorkloadCgroups>,
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
            name: req.name.clone(),
            description,
            slice,
            unit: systemd::scope_name(&req.name),
            dir,
            limit: req.pids_limit,
            parent_pids_max: req.cgroup.parent_pids_max,
            layout: layout.clone(),
            started: false,
            placed: None,
        })
    }

    /// Makes the slice a transient unit carrying `TasksMax` =
    /// `--parent-pids-max` when it is not there yet; an existing slice (a
    /// unit file of the administrator's, or one made by an earlier run)
    /// keeps its settings.
    pub(super) fn ensure_slice(&mut self) -> Result<(), LaunchError> {
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

    /// Starts the scope with the command `pid` in it and checks the
    /// result: the command in the scope's cgroup, the scope's `pids.max`
    /// the limit asked for, and the ownership lock taken.
    pub(super) fn place(&mut self, pid: i32) -> Result<(), LaunchError> {
        let tasks_max = match self.limit {
            PidsLimit::Max(n) => n,
            // No limit of the scope's own, as with cgroupfs (systemd would
            // otherwise apply its DefaultTasksMax): the slice's applies.
            PidsLimit::Inherit | PidsLimit::Unlimited => u64::MAX,
        };
        let props = vec![
            ("Description", Value::Str(self.description.clone())),
            ("Slice", Value::Str(self.slice.clone())),
            (
                "PIDs",
                Value::Array("u".into(), vec![Value::U32(pid as u32)]),
            ),
            ("Delegate", Value::Bool(true)),
            ("TasksMax", Value::U64(tasks_max)),
            ("CollectMode", Value::Str("inactive-or-failed".into())),
        ];
        match self.sd.start_transient(&self.unit, props) {
            Ok(()) => self.started = true,
            Err(e) => {
                // A refused call made nothing (e.g. a unit of that name
                // exists: it is not ours to touch); a failed job did.
                self.started = e.remote_name().is_none();
                let hint = match e.remote_name() {
                    Some("org.freedesktop.systemd1.UnitExists") => {
                        " (a unit of that name exists and is not this workload's: choose \
                         another --name)"
                    }
                    _ => "",
                };
                return Err(systemd_error(
                    format!("starting the workload's scope {}{hint}", self.unit),
                    e,
                ));
            }
        }
        let want = format!(
            "/{}",
            self.dir
                .strip_prefix(&self.layout.v2_mount)
                .unwrap_or(&self.dir)
                .display()
        );
        let got = v2_cgroup_of(&pid.to_string())
            .map_err(|e| LaunchError::os(format!("reading /proc/{pid}/cgroup"), e))?;
        if got != want {
            return Err(LaunchError::Unsupported {
                what: format!(
                    "systemd started {} but the command (pid {pid}) is in {got}, not in {want}",
                    self.unit
                ),
            });
        }
        let max_file = self.dir.join("pids.max");
        let max = std::fs::read_to_string(&max_file)
            .map_err(|e| CgroupError::io(cgroup::Operation::Read, &max_file, e))?;
        let max = max.trim();
        let expected = match self.limit {
            PidsLimit::Max(n) => n.to_string(),
            _ => "max".to_owned(),
        };
        if max != expected {
            return Err(LaunchError::Unsupported {
                what: format!(
                    "{} has pids.max {max:?}, not the limit asked for ({expected}); \
                     the workload is not started without it",
                    max_file.display()
                ),
            });
        }
        self.placed = Some(WorkloadCgroups::adopt_scope(
            &self.layout,
            &self.name,
            &self.dir,
        )?);
        Ok(())
    }

    /// The placed scope's cgroups, once [`ScopePlacer::place`] succeeded.
    pub(super) fn take(&mut self) -> Option<WorkloadCgroups> {
        self.placed.take()
    }

    /// After a failed launch: makes sure the scope systemd made (if it made
    /// one) is gone. Its command was killed with moat's init, so the scope
    /// empties and systemd removes it; if not, it is stopped. Returns
    /// whether nothing is left.
    pub(super) fn abandon(mut self) -> bool {
        self.placed = None;
        if !self.started {
            return true;
        }
        end_scope(&mut Some(self.sd), &self.unit, &self.dir)
            .map_err(|e| log::warn!("{e}"))
            .is_ok()
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
    sd.stop_unit(unit).map_err(|e| systemd::error_chain(&e))?;
    sd.reset_failed(unit)
        .map_err(|e| systemd::error_chain(&e))?;
    if wait_gone(dir, cgroup::KILL_TIMEOUT) {
        Ok(())
    } else {
        Err(format!(
            "{} is still there after stopping {unit}",
            dir.display()
        ))
    }
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

/// Reclaims the scope a stale record names: refused (touching nothing)
/// unless it is the record's own scope ([`cgroup::check_recorded_scope`])
/// and no live moat process holds its lock; then the unit is stopped and
/// its failed state reset, and the cgroup must be gone.
pub(super) fn reclaim_scope(
    layout: &Layout,
    name: &str,
    unit: &str,
    dir: &Path,
) -> Result<(), String> {
    cgroup::check_recorded_scope(layout, name, unit, dir).map_err(|e| e.to_string())?;
    if cgroup::scope_in_use(dir).map_err(|e| e.to_string())? {
        return Err(format!(
            "{}: it belongs to a running workload (a moat process holds its lock)",
            dir.display()
        ));
    }
    if !dir.exists() {
        return Ok(());
    }
    let mut sd = Systemd::connect().map_err(|e| systemd::error_chain(&e))?;
    sd.stop_unit(unit).map_err(|e| systemd::error_chain(&e))?;
    sd.reset_failed(unit)
        .map_err(|e| systemd::error_chain(&e))?;
    if wait_gone(dir, cgroup::KILL_TIMEOUT) {
        log::info!("stopped {unit} of stale workload {name}");
        Ok(())
    } else {
        Err(format!(
            "{} is still there after stopping {unit}",
            dir.display()
        ))
    }
}
