//! Attribution: which workload a cgroup id, or a process, belongs to.
//!
//! The kernel side keys everything by the task's cgroup v2 id
//! (`bpf_get_current_cgroup_id()`), which is the inode number of the cgroup's
//! directory in the v2 hierarchy. [`Attributor`] resolves ids to paths by walking
//! that hierarchy (reading each directory's inode number), caches the result, and
//! walks again when it meets an id it does not know. A path then maps to a label:
//!
//! | path (relative to the hierarchy root), first match wins       | label                  |
//! | --- | --- |
//! | `/kubepods[/<qos>]/pod<uid>[/...]` (kubelet, cgroupfs driver)  | `k8s:<namespace>/<pod>`|
//! | `/kubepods.slice/...-pod<uid>.slice[/...]` (systemd driver)    | `k8s:<namespace>/<pod>`|
//! | `/<docker parent>/<64 hex>[/...]` (cgroupfs driver)            | `docker:<first 12 hex>`|
//! | `/<scope parent>/docker-<64 hex>.scope[/...]` (systemd driver) | `docker:<first 12 hex>`|
//! | `/moat.slice[/moat-<x>.slice...]/moat-<name>.scope[/...]`     | `<name>`               |
//! | `/<moat parent>/<name>[/...]`                                  | `<name>`               |
//! | deepest component ending in `.service` or `.scope`             | that component         |
//! | anything else, the root, an id that no longer resolves         | `host`                 |
//!
//! Every rule but the last is anchored at the root of the hierarchy, under `moat.slice` or the
//! parents configured (`workloads.moat_parent`, `workloads.docker_parent`,
//! `workloads.docker_scope_parents`): a cgroup named like a container anywhere
//! else is not one (see [`classify`]).
//!
//! ## Hybrid hosts
//!
//! On a hybrid host Docker's cgroupfs driver places containers only in v1 cgroups,
//! so their tasks have the v2 *root* cgroup id and aggregated counters keyed by it
//! cannot tell them from the host. Two ways out are supported:
//!
//! - an event that carries a pid (audit records) is attributed from the v1 lines
//!   of `/proc/<pid>/cgroup` when its v2 cgroup is the root
//!   ([`Attributor::attribute_task`]);
//! - a kernel-side key may name the task's v1 *pids* cgroup instead of its v2
//!   cgroup: such ids carry [`V1_PIDS_ID_FLAG`] and are resolved by walking the
//!   pids hierarchy (its cgroup ids are its directories' inode numbers too).
//!
//! ## Label cap
//!
//! Distinct label values are capped ([`LabelCap`]): past the cap new workloads are
//! labelled `other` and each is counted once in
//! `moat_workload_label_overflow_total`. A label, once given, is kept for the
//! agent's lifetime, so a counter never moves from one label to another.

mod classify;
mod hierarchy;
mod kubernetes;
mod labels;
mod watcher;

use std::{
    path::PathBuf,
    sync::Arc,
    time::{Duration, Instant},
};

pub(crate) use classify::is_container_id;
pub use classify::{classify, classify_proc_cgroup, CgroupParents};
use hierarchy::Hierarchy;
pub use labels::LabelCap;
pub use watcher::{CgroupWatcher, WatchEvent, WatchedDir};

use crate::config::WorkloadsConfig;
pub use crate::kernel::cgroups::CgroupLayout;

/// Set in a kernel-side cgroup key that names a cgroup of the v1 pids hierarchy
/// (its id, the directory's inode number, in the other bits) rather than a v2 one.
///
/// The programs key a task this way when its v2 cgroup is the v2 root and pids is
/// on v1 (see `Params::v1_pids_rekey` in `moat-common`). The kernel's id is the
/// pids cgroup's kernfs node id (`cgroup->kn->id`), which on 64-bit kernels is
/// the inode number of the cgroup's directory, the id this module's walk of the
/// pids hierarchy records (checked by the `moatd_docker` and
/// `moatd_attribution` tests).
pub use moat_common::V1_PIDS_ID_FLAG;

/// Label of everything that is not a recognised workload.
pub const HOST: &str = "host";
/// Label of workloads beyond the label cap.
pub const OTHER: &str = "other";

/// What an id or a task was attributed to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attribution {
    /// The workload label, after the cap (`host`, `other`, a name, `docker:...`).
    pub workload: Arc<str>,
    /// The cgroup path relative to its hierarchy's root, when known.
    pub cgroup_path: Option<Arc<str>>,
}

/// Resolves cgroup ids and tasks to workloads. See the module documentation.
#[derive(Debug)]
pub struct Attributor {
    parents: CgroupParents,
    v2: Hierarchy,
    pids: Option<Hierarchy>,
    min_rewalk: Duration,
    labels: LabelCap,
    proc_root: PathBuf,
}

impl Attributor {
    /// An attributor for `layout`, with the parents and cap of `config`.
    pub fn new(layout: &CgroupLayout, config: &WorkloadsConfig) -> Self {
        Self {
            parents: CgroupParents::from_config(config),
            v2: Hierarchy::new(layout.v2_mount.clone()),
            pids: layout.pids_mount.clone().map(Hierarchy::new),
            min_rewalk: Duration::from_millis(20),
            labels: LabelCap::new(config.max_labels),
            proc_root: PathBuf::from("/proc"),
        }
    }

    /// Reads processes from `proc_root` instead of `/proc` (for tests).
    pub fn with_proc_root(mut self, proc_root: PathBuf) -> Self {
        self.proc_root = proc_root;
        self
    }

    /// Lets a miss walk again at most every `interval` (default 20 ms, more for
    /// hierarchies that take long to walk; zero walks on every miss).
    pub fn with_min_rewalk(mut self, interval: Duration) -> Self {
        self.min_rewalk = interval;
        self
    }

    /// The v2 root cgroup's id, if its mount could be read.
    pub fn v2_root_id(&self) -> Option<u64> {
        self.v2.root_id
    }

    /// Walks every hierarchy now, so later lookups are hits.
    pub fn refresh(&mut self) {
        self.v2.walk(&self.parents);
        if let Some(pids) = &mut self.pids {
            pids.walk(&self.parents);
        }
    }

    /// The path (relative to its hierarchy's root) and raw label of a cgroup id,
    /// walking the hierarchy again on a miss; `None` for a dead or unknown id.
    fn resolve(&mut self, id: u64) -> Option<(Arc<str>, Arc<str>)> {
        let min_rewalk = self.min_rewalk;
        let (hierarchy, key) = if id & V1_PIDS_ID_FLAG != 0 {
            (self.pids.as_mut()?, id & !V1_PIDS_ID_FLAG)
        } else {
            (&mut self.v2, id)
        };
        if let Some(hit) = hierarchy.known.get(&key) {
            return Some(hit.clone());
        }
        if hierarchy.dead.contains(&key) {
            return None;
        }
        let looked_up = Instant::now();
        let spacing = walk_spacing(min_rewalk, hierarchy);
        let may_walk = hierarchy
            .last_walk
            .is_none_or(|last| last.elapsed() >= spacing);
        if !may_walk {
            return None;
        }
        hierarchy.walk(&self.parents);
        if let Some(hit) = hierarchy.known.get(&key) {
            return Some(hit.clone());
        }
        // The walk started after the lookup, so the id's directory is gone (or
        // never was in this hierarchy): it will not resolve later either.
        if hierarchy.last_walk.is_some_and(|walk| walk >= looked_up) {
            hierarchy.dead.insert(key);
        }
        None
    }

    /// How long a lookup of `id` would have to wait for its hierarchy to be
    /// walked again: `Some` only for an id neither known nor known gone while
    /// walks are spaced out (a lookup now would say `host`), `None` when a
    /// lookup now would find it, walk, or know it is gone.
    ///
    /// The collector holds the audit records of such ids for that long, so a
    /// new cgroup's first events are not attributed to `host` just because a
    /// walk for another new cgroup happened a moment before.
    pub fn walk_wait(&self, id: u64) -> Option<Duration> {
        let (hierarchy, key) = if id & V1_PIDS_ID_FLAG != 0 {
            (self.pids.as_ref()?, id & !V1_PIDS_ID_FLAG)
        } else {
            (&self.v2, id)
        };
        if hierarchy.known.contains_key(&key) || hierarchy.dead.contains(&key) {
            return None;
        }
        let since = hierarchy.last_walk?.elapsed();
        walk_spacing(self.min_rewalk, hierarchy)
            .checked_sub(since)
            .filter(|wait| !wait.is_zero())
    }

    /// The path of a cgroup id (relative to its hierarchy's root), if known
    /// or found by a walk.
    pub fn cgroup_path(&mut self, id: u64) -> Option<Arc<str>> {
        self.resolve(id).map(|(path, _)| path)
    }

    /// Attributes an aggregated counter keyed by a cgroup id.
    pub fn attribute_id(&mut self, id: u64) -> Attribution {
        match self.resolve(id) {
            Some((path, raw)) => Attribution {
                workload: self.labels.admit(&raw),
                cgroup_path: Some(path),
            },
            None => Attribution {
                workload: self.labels.admit(HOST),
                cgroup_path: None,
            },
        }
    }

    /// Attributes an event of task `pid` whose v2 cgroup id is `id`.
    ///
    /// When the id is the v2 root (a task placed only in v1 cgroups, as Docker's
    /// cgroupfs driver does on hybrid hosts) or does not resolve, the v1 lines of
    /// `/proc/<pid>/cgroup` are used, pids first. Best effort: a task that has
    /// already exited is attributed by its id alone.
    pub fn attribute_task(&mut self, pid: u32, id: u64) -> Attribution {
        let by_id = self.attribute_id(id);
        let ambiguous = by_id.cgroup_path.is_none() || Some(id) == self.v2.root_id;
        if !ambiguous || pid == 0 {
            return by_id;
        }
        let process = procfs::process::Process::new_with_root(self.proc_root.join(pid.to_string()));
        let Ok(cgroups) = process.and_then(|p| p.cgroups()) else {
            return by_id;
        };
        // A cgroup too new for the last walk: the task's v2 line names it.
        if by_id.cgroup_path.is_none() {
            if let Some(v2) = cgroups.0.iter().find(|c| c.hierarchy == 0) {
                let rel = v2.pathname.as_str();
                // In steps: the path may be longer than PATH_MAX.
                if self.v2.inode_of(rel) == Some(id) {
                    self.v2.learn(id, rel, &self.parents);
                    return self.attribute_id(id);
                }
            }
        }
        match classify_proc_cgroup(&cgroups, &self.parents) {
            Some((raw, path)) => Attribution {
                workload: self.labels.admit(&raw),
                cgroup_path: Some(Arc::from(path.as_str())),
            },
            None => by_id,
        }
    }

    /// Records that the directory `rel` (relative to the hierarchy's root) of the
    /// v2 hierarchy, or of the pids one with `pids`, has inode `id`.
    pub fn learn(&mut self, pids: bool, rel: &str, id: u64) {
        let hierarchy = if pids {
            match self.pids.as_mut() {
                Some(h) => h,
                None => return,
            }
        } else {
            &mut self.v2
        };
        hierarchy.learn(id, rel, &self.parents);
    }

    /// The directories whose new children are workloads: the moat and Docker
    /// parents (both drivers') and `moat.slice` (the scopes of `moat run`'s
    /// systemd cgroup manager) in each hierarchy, with whether they are in the pids one, and their
    /// path relative to the hierarchy's root.
    pub fn watched_dirs(&self) -> Vec<WatchedDir> {
        let mut dirs = Vec::new();
        let hierarchies = std::iter::once((false, &self.v2.mount))
            .chain(self.pids.iter().map(|h| (true, &h.mount)))
            .filter(|(pids, mount)| !*pids || **mount != self.v2.mount);
        for (pids, mount) in hierarchies {
            let slice = moat_api::defaults::MOAT_SLICE.to_owned();
            let parents = [&self.parents.moat, &self.parents.docker]
                .into_iter()
                .chain(&self.parents.docker_scopes)
                .chain(std::iter::once(&slice));
            for parent in parents {
                dirs.push(WatchedDir {
                    pids,
                    dir: mount.join(parent),
                    rel: format!("/{parent}"),
                    nested: *parent == slice,
                });
            }
        }
        dirs
    }

    /// Applies what the cgroup watcher saw; returns whether a workload's
    /// `pids.events` changed.
    pub fn apply(&mut self, event: WatchEvent) -> bool {
        match event {
            WatchEvent::Created { pids, rel, id } => {
                log::debug!("new cgroup {rel} (id {id})");
                self.learn(pids, &rel, id);
                false
            }
            WatchEvent::PidsChanged => true,
        }
    }

    /// Gives a raw label (from [`classify`]) its capped label.
    pub fn admit(&mut self, raw: &str) -> Arc<str> {
        self.labels.admit(raw)
    }

    /// Distinct workloads that were labelled `other`.
    pub fn label_overflow_total(&self) -> u64 {
        self.labels.overflow_total()
    }

    /// Where workloads' cgroups are.
    pub fn parents(&self) -> &CgroupParents {
        &self.parents
    }
}

#[cfg(test)]
mod tests;

/// How long after a walk of `hierarchy` a miss may walk it again: `min_rewalk`,
/// or ten times what the last walk took, so a big hierarchy cannot be walked
/// back to back (zero: on every miss).
fn walk_spacing(min_rewalk: Duration, hierarchy: &Hierarchy) -> Duration {
    if min_rewalk.is_zero() {
        Duration::ZERO
    } else {
        min_rewalk.max(hierarchy.last_walk_took * 10)
    }
}
