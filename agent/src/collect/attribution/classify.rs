//! Label decisions: which workload a cgroup path names.
//!
//! Only the places moat and Docker put their cgroups count, anchored at the root
//! of the hierarchy: anyone allowed to create a cgroup (a delegated subtree, a
//! container with its own cgroup namespace) can name one `docker-<64 hex>.scope`
//! or `docker/<64 hex>`, and must not be taken for that container by it.

use std::path::PathBuf;

use procfs::ProcessCGroups;

use super::{kubernetes, HOST};
use crate::config::WorkloadsConfig;

/// Where workloads' cgroups are, relative to each hierarchy's root: the rules
/// of [`classify`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CgroupParents {
    /// The moat parent: `/<moat>/<name>[/...]` is workload `<name>`.
    pub moat: String,
    /// Docker's cgroupfs driver's parent: `/<docker>/<64 hex>[/...]` is a
    /// container.
    pub docker: String,
    /// The slices of Docker's systemd driver:
    /// `/<slice>/docker-<64 hex>.scope[/...]` is a container.
    pub docker_scopes: Vec<String>,
    /// The kubelet's pod log folders, which name the pods of kubelet cgroups.
    pub pod_logs: PathBuf,
}

impl CgroupParents {
    /// The parents of `config`.
    pub fn from_config(config: &WorkloadsConfig) -> Self {
        Self {
            moat: config.moat_parent.clone(),
            docker: config.docker_parent.clone(),
            docker_scopes: config.docker_scope_parents.clone(),
            pod_logs: config.kubernetes_pod_logs.clone(),
        }
    }

    /// The default parents (`moat`, `docker`, `system.slice`).
    pub fn defaults() -> Self {
        Self::from_config(&WorkloadsConfig::default())
    }
}

/// The components of a `/`-separated path, without empty ones.
fn components(path: &str) -> Vec<&str> {
    path.split('/').filter(|p| !p.is_empty()).collect()
}

/// `parts` with `prefix`'s components removed from its start, if it starts
/// with them.
fn under<'a, 'b>(parts: &'a [&'b str], prefix: &str) -> Option<&'a [&'b str]> {
    let prefix = components(prefix);
    (parts.len() > prefix.len() && parts[..prefix.len()] == prefix[..])
        .then(|| &parts[prefix.len()..])
}

/// The label of a cgroup path relative to its hierarchy's root (`/`-separated,
/// starting with `/`), before the cap:
///
/// | path, first match wins | label |
/// | --- | --- |
/// | `/kubepods/...pod<uid>[/...]`, `/kubepods.slice/...-pod<uid>.slice[/...]` | `k8s:<namespace>/<pod>` (see [`kubernetes`]) |
/// | `/<docker>/<64 hex>[/...]` | `docker:<first 12 hex>` |
/// | `/<scope parent>/docker-<64 hex>.scope[/...]` | `docker:<first 12 hex>` |
/// | `/moat.slice[/moat-<x>.slice...]/moat-<name>.scope[/...]` | `<name>` |
/// | `/<moat>/<name>[/...]` | `<name>` |
/// | deepest component ending in `.service` or `.scope` | that component |
/// | anything else | `host` |
pub fn classify(path: &str, parents: &CgroupParents) -> String {
    let parts = components(path);
    if let Some(uid) = kubernetes::pod_uid(&parts) {
        return kubernetes::pod_label(&uid, &parents.pod_logs);
    }
    if let Some(rest) = under(&parts, &parents.docker) {
        if is_container_id(rest[0]) {
            return docker_label(rest[0]);
        }
    }
    for slice in &parents.docker_scopes {
        if let Some(id) = under(&parts, slice).and_then(|rest| {
            rest[0]
                .strip_prefix("docker-")
                .and_then(|r| r.strip_suffix(".scope"))
                .filter(|id| is_container_id(id))
        }) {
            return docker_label(id);
        }
    }
    if let Some(name) = moat_scope(&parts) {
        return name.to_owned();
    }
    if let Some(rest) = under(&parts, &parents.moat) {
        return rest[0].to_owned();
    }
    if let Some(unit) = parts
        .iter()
        .rev()
        .find(|p| p.ends_with(".service") || p.ends_with(".scope"))
    {
        return (*unit).to_owned();
    }
    HOST.to_owned()
}

/// The workload of `/moat.slice[/moat-<x>.slice...]/moat-<name>.scope[/...]`,
/// where `moat run`'s systemd cgroup manager puts workload `<name>` (see
/// `moat run --cgroup-parent`). Anchored at the root: only the system
/// manager makes cgroups there, so a scope of that name that anyone else
/// may make (in a user's own manager, in a delegated subtree) is not taken
/// for a workload.
fn moat_scope<'a>(parts: &[&'a str]) -> Option<&'a str> {
    use moat_api::defaults::{MOAT_SCOPE_PREFIX, MOAT_SLICE};
    let (first, rest) = parts.split_first()?;
    let mut slice = first
        .strip_suffix(".slice")
        .filter(|_| *first == MOAT_SLICE)?;
    for part in rest {
        if let Some(name) = part
            .strip_prefix(MOAT_SCOPE_PREFIX)
            .and_then(|p| p.strip_suffix(".scope"))
            .filter(|n| {
                !n.is_empty()
                    && n.bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b))
            })
        {
            return Some(name);
        }
        // A nested slice extends its parent's name: moat-ci.slice.
        slice = part
            .strip_suffix(".slice")
            .filter(|p| p.strip_prefix(slice).is_some_and(|r| r.starts_with('-')))?;
    }
    None
}

/// Whether `text` is a full Docker container id (64 hex digits).
pub(crate) fn is_container_id(text: &str) -> bool {
    text.len() == 64 && text.bytes().all(|b| b.is_ascii_hexdigit())
}

fn docker_label(id: &str) -> String {
    format!("docker:{}", &id[..12])
}

/// The workload named by the v1 lines of a task's `/proc/<pid>/cgroup` (`pids`
/// first, then `name=systemd`, then the others): the raw label and the v1 path.
pub fn classify_proc_cgroup(
    cgroups: &ProcessCGroups,
    parents: &CgroupParents,
) -> Option<(String, String)> {
    let mut lines: Vec<(u8, &str)> = cgroups
        .0
        .iter()
        .filter_map(|cgroup| {
            let controllers = &cgroup.controllers;
            let rank = if cgroup.hierarchy == 0 || controllers.is_empty() {
                return None; // the v2 line: already known by id
            } else if controllers.iter().any(|c| c == "pids") {
                0
            } else if controllers.iter().any(|c| c == "name=systemd") {
                1
            } else {
                2
            };
            Some((rank, cgroup.pathname.as_str()))
        })
        .collect();
    lines.sort_by_key(|(rank, _)| *rank);
    lines.into_iter().find_map(|(_, path)| {
        let raw = classify(path, parents);
        (raw != HOST).then(|| (raw, path.to_owned()))
    })
}
