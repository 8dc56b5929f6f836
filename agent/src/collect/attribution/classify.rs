//! Label decisions: which workload a cgroup path names.

use procfs::ProcessCGroups;

use super::HOST;

/// The label of a cgroup path relative to its hierarchy's root (`/`-separated,
/// starting with `/`), before the cap.
pub fn classify(path: &str, moat_parent: &str, docker_parent: &str) -> String {
    let parts: Vec<&str> = path.split('/').filter(|p| !p.is_empty()).collect();
    // Container ids first: they are the most specific.
    let docker: Vec<&str> = docker_parent.split('/').filter(|p| !p.is_empty()).collect();
    for (i, part) in parts.iter().enumerate() {
        if let Some(id) = part
            .strip_prefix("docker-")
            .and_then(|rest| rest.strip_suffix(".scope"))
            .filter(|id| is_container_id(id))
        {
            return docker_label(id);
        }
        if is_container_id(part) && i >= docker.len() && parts[i - docker.len()..i] == docker[..] {
            return docker_label(part);
        }
    }
    if let Some(name) = moat_scope(&parts) {
        return name.to_owned();
    }
    let parent: Vec<&str> = moat_parent.split('/').filter(|p| !p.is_empty()).collect();
    if parts.len() > parent.len() && parts[..parent.len()] == parent[..] {
        return parts[parent.len()].to_owned();
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
    moat_parent: &str,
    docker_parent: &str,
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
        let raw = classify(path, moat_parent, docker_parent);
        (raw != HOST).then(|| (raw, path.to_owned()))
    })
}
