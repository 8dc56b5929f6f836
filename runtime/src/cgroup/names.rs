//! Which names a workload's and its parent's cgroups may have, and the
//! directories they stand for.

use std::path::{Component, Path, PathBuf};

use super::config::CgroupConfig;
use super::error::CgroupError;

/// The longest workload or parent component name accepted (`NAME_MAX`).
pub(super) const MAX_NAME_LEN: usize = 255;

/// Checks that `name` can be one cgroup directory name. The character set
/// is narrow on purpose: names end up in `/proc/<pid>/cgroup`, log lines and
/// metrics labels, where `/`, spaces, newlines or `:` would be ambiguous.
pub(super) fn check_name(name: &str) -> Result<(), &'static str> {
    if name.is_empty() {
        return Err("it is empty");
    }
    if name.len() > MAX_NAME_LEN {
        return Err("it is longer than 255 bytes");
    }
    if name.starts_with('.') {
        return Err("it starts with '.'");
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"-_.@+".contains(&b))
    {
        return Err("only ASCII letters, digits and - _ . @ + are allowed");
    }
    Ok(())
}

pub(super) fn validate_name(name: &str) -> Result<(), CgroupError> {
    check_name(name).map_err(|reason| CgroupError::InvalidName {
        name: name.to_owned(),
        reason,
    })
}

/// Checks `cfg.parent` and returns it as a relative path.
pub(super) fn parent_path(cfg: &CgroupConfig) -> Result<PathBuf, CgroupError> {
    let invalid = |reason: String| CgroupError::InvalidConfig {
        field: "parent",
        reason,
    };
    if cfg.parent.starts_with('/') {
        return Err(invalid(format!(
            "{:?} must be relative to each hierarchy's root, e.g. \"moat\"",
            cfg.parent
        )));
    }
    for part in cfg.parent.split('/') {
        check_name(part)
            .map_err(|r| invalid(format!("{:?}: component {part:?}: {r}", cfg.parent)))?;
    }
    Ok(PathBuf::from(&cfg.parent))
}

/// The directories `mount/a`, `mount/a/b`, ... for a relative `parent`.
pub(super) fn levels(mount: &Path, parent: &Path) -> Vec<PathBuf> {
    let mut dir = mount.to_owned();
    parent
        .components()
        .filter_map(|c| match c {
            Component::Normal(part) => {
                dir.push(part);
                Some(dir.clone())
            }
            _ => None,
        })
        .collect()
}
