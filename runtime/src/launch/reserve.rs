//! The state record of a launch: written before anything it names exists,
//! removed only once all of that is gone.
//!
//! Under the state lock, [`reserve`] first reclaims what stale records name
//! (their `moat run` and workload are both gone), then decides the user
//! namespace against the running workloads' host ids
//! ([`crate::userns::overlap`]), checks the ids, and writes the new record
//! with the cgroup paths the launch is about to create. Whatever point a crash hits, the
//! record names everything that may exist; the next launch reclaims it, and
//! `moat ps` shows it meanwhile.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use super::{ids, profile_label, LaunchError, RunRequest};
use crate::cgroup::{self, Layout, PidsLimit};
use crate::state::{now_unix_ms, ExitRecord, ProcessRef, StateDir, StateLock, WorkloadRecord};
use crate::userns::{self, overlap, Holder, UserNamespace, UsernsSpec};

/// Reserves the workload's name, user namespace and cgroup paths: returns
/// the record written.
pub(super) fn reserve(
    req: &RunRequest,
    state: &StateDir,
    layout: &Layout,
    cgroup_dirs: (PathBuf, PathBuf),
    unit: Option<String>,
) -> Result<WorkloadRecord, LaunchError> {
    let lock = state.lock()?;
    lock.remove_temporaries()?;
    let (running, stale) = running_once_settled(&lock)?;
    // Records that could not be reclaimed still stand for what they name:
    // their ids stay taken, like a running workload's.
    let kept = reclaim_stale(&lock, layout, stale);
    let holders: Vec<Holder<'_>> = running
        .iter()
        .chain(&kept)
        .map(|r| Holder {
            name: &r.name,
            ns: r.userns.as_ref(),
            auto: r.userns_auto,
            uid: r.uid,
            gid: r.gid,
        })
        .collect();
    let ns = match &req.userns {
        UsernsSpec::Host => {
            overlap::check_host_ids(req.uid, req.gid, &holders)?;
            None
        }
        UsernsSpec::Maps(m) => {
            let ns = UserNamespace::from_maps(m.clone());
            overlap::check_explicit(&ns, &holders)?;
            Some(ns)
        }
        UsernsSpec::Auto => {
            let taken = overlap::taken(&holders);
            let ns = userns::allocate(&req.subuid, &req.subgid, &taken)?;
            ids::check(req.uid, req.gid, Some(&ns))?;
            Some(ns)
        }
    };
    let (cgroup_pids, cgroup_v2) = cgroup_dirs;
    let record = WorkloadRecord {
        name: req.name.clone(),
        supervisor: ProcessRef::of(std::process::id() as i32)?,
        pid: None,
        command: WorkloadRecord::command_for_record(&req.command),
        seccomp_profile: profile_label(&req.profile),
        userns: ns,
        userns_auto: matches!(req.userns, UsernsSpec::Auto),
        uid: req.uid,
        gid: req.gid,
        pids_limit: match req.pids_limit {
            PidsLimit::Max(n) => Some(n),
            _ => None,
        },
        pids_limit_text: req.pids_limit_text.clone(),
        cgroup_pids,
        cgroup_v2,
        unit,
        started_at_unix_ms: now_unix_ms(),
        namespaces: req
            .isolation
            .namespace_names(!matches!(req.userns, UsernsSpec::Host)),
    };
    lock.insert(&record)?;
    Ok(record)
}

/// How long a launch waits for the init of a killed `moat run` to finish
/// dying.
const DYING_GRACE: Duration = Duration::from_millis(500);

/// The records, split into `(running, stale)` as [`StateLock::running`]
/// does, once the workloads whose `moat run` is gone have finished dying.
///
/// moat's init never outlives its supervisor for long: it dies by
/// `PR_SET_PDEATHSIG`, or, when the supervisor died before the init had
/// set that (the init was not scheduled yet), it finds the life pipe hung
/// up and exits. But that takes a moment (the init must be scheduled, and
/// as a PID namespace's init it first kills and reaps every process of the
/// namespace: up to 70 ms measured here under load), during which the
/// record looks alive. A launch right after a `moat run` was killed would
/// leave that record for the next launch; it waits instead, at most
/// [`DYING_GRACE`], and says so if an init outlives that.
fn running_once_settled(
    lock: &StateLock<'_>,
) -> Result<(Vec<WorkloadRecord>, Vec<WorkloadRecord>), LaunchError> {
    let deadline = Instant::now() + DYING_GRACE;
    loop {
        let (running, stale) = lock.running()?;
        let dying: Vec<&str> = running
            .iter()
            .filter(|r| !r.supervisor.is_alive())
            .map(|r| r.name.as_str())
            .collect();
        if dying.is_empty() {
            return Ok((running, stale));
        }
        if Instant::now() >= deadline {
            log::warn!(
                "workloads {dying:?} still run {} ms after their moat run died; \
                 they are left for the next launch to reclaim",
                DYING_GRACE.as_millis()
            );
            return Ok((running, stale));
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Reclaims what each stale record names and removes the record; returns
/// the records that could not be reclaimed, which stay (each with a
/// warning saying why) so that the next launch tries again.
fn reclaim_stale(
    lock: &StateLock<'_>,
    layout: &Layout,
    stale: Vec<WorkloadRecord>,
) -> Vec<WorkloadRecord> {
    let mut kept = Vec::new();
    for rec in stale {
        let reclaimed = match &rec.unit {
            Some(unit) => super::placement::reclaim_scope(layout, &rec.name, unit, &rec.cgroup_v2),
            None => cgroup::reclaim(layout, &rec.name, &rec.cgroup_pids, &rec.cgroup_v2)
                .map_err(|e| e.to_string()),
        }
        .and_then(|()| lock.remove(&rec.name).map_err(|e| e.to_string()));
        match reclaimed {
            Ok(()) => log::info!("reclaimed stale workload {}", rec.name),
            Err(why) => {
                log::warn!(
                    "stale workload {:?} (its moat run is gone) could not be cleaned up: {why}; \
                     its record is kept and the next moat run tries again",
                    rec.name
                );
                kept.push(rec);
            }
        }
    }
    kept
}

/// Ends a reservation whose launch failed or whose workload ended, under
/// one lock: writes the exit record if there is one, then removes the
/// record if `all_gone` (nothing it names is left), or keeps it, with a
/// warning, so that the next launch reclaims what is left.
pub(super) fn release(state: &StateDir, name: &str, all_gone: bool, exit: Option<&ExitRecord>) {
    let lock = match state.lock() {
        Ok(lock) => lock,
        Err(e) => {
            log::warn!("could not record the end of workload {name:?}: {e}");
            return;
        }
    };
    if let Some(exit) = exit {
        if let Err(e) = lock.write_exit(exit) {
            log::warn!("could not record the exit: {e}");
        }
    }
    if !all_gone {
        log::warn!(
            "the record of workload {name:?} is kept because its cgroups could not be \
             removed; the next moat run reclaims them"
        );
    } else if let Err(e) = lock.remove(name) {
        log::warn!("could not remove the record of workload {name:?}: {e}");
    }
}
