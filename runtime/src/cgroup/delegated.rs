//! Workloads inside a systemd unit that delegates its cgroup
//! (`Delegate=yes`): moat manages the unit's subtree itself.

use std::path::Path;

use super::error::{CgroupError, Operation};
use super::fs;

/// The leaf a delegated unit's own processes move to, as systemd asks of
/// delegated managers (and as podman's `--cgroups=split` does): a cgroup
/// with processes of its own cannot enable controllers for its children.
pub const SUPERVISOR_LEAF: &str = "supervisor";

/// Moves every process of the delegated cgroup `unit_dir` into its leaf
/// [`SUPERVISOR_LEAF`] (made if missing), until none is left directly in
/// `unit_dir`. A process that forks meanwhile is caught on the next round.
pub fn move_into_leaf(unit_dir: &Path) -> Result<(), CgroupError> {
    let leaf = unit_dir.join(SUPERVISOR_LEAF);
    let procs_file = leaf.join("cgroup.procs");
    for _ in 0..16 {
        let procs = fs::read_procs(unit_dir)?;
        if procs.is_empty() {
            return Ok(());
        }
        fs::create_dir(&leaf)?;
        for pid in procs {
            match fs::write(&procs_file, &pid.to_string()) {
                Ok(()) => {}
                // Gone since it was listed.
                Err(CgroupError::Io { error, .. }) if error.raw_os_error() == Some(libc::ESRCH) => {
                }
                Err(e) => return Err(e),
            }
        }
    }
    let left = fs::read_procs(unit_dir)?;
    if left.is_empty() {
        return Ok(());
    }
    Err(CgroupError::io(
        Operation::Write {
            value: format!("{left:?}"),
        },
        &procs_file,
        std::io::Error::other("processes of the unit keep appearing in its top cgroup"),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_unit_cgroup_needs_no_leaf() {
        let t = tempfile::tempdir().unwrap();
        std::fs::write(t.path().join("cgroup.procs"), "").unwrap();
        move_into_leaf(t.path()).unwrap();
        assert!(!t.path().join(SUPERVISOR_LEAF).exists());
    }
}
