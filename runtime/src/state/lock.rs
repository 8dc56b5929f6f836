//! The state lock and the changes made under it.

use std::fs::File;

use nix::fcntl::Flock;

use super::error::StateError;
use super::file::{read_record, remove_if_exists, write_atomic};
use super::name::validate_name;
use super::record::{ExitRecord, WorkloadRecord};
use super::{sort_by_start, StateDir};

/// Holds the state lock; every modification goes through it.
#[derive(Debug)]
pub struct StateLock<'a> {
    pub(super) dir: &'a StateDir,
    pub(super) _file: Flock<File>,
}

impl StateLock<'_> {
    /// Running records; stale ones (not alive) are removed from the
    /// directory and returned separately so the caller can clean their
    /// cgroups. Returns `(running, stale)`. A record that cannot be parsed
    /// is treated as stale: it is removed, with a warning naming the file
    /// (it cannot be returned, having no readable content).
    pub fn running(&self) -> Result<(Vec<WorkloadRecord>, Vec<WorkloadRecord>), StateError> {
        let mut running = Vec::new();
        let mut stale = Vec::new();
        for (path, rec) in self.dir.scan()? {
            match rec {
                Ok(r) if r.is_alive() => running.push(r),
                Ok(r) => {
                    remove_if_exists(&path)?;
                    stale.push(r);
                }
                Err(e) => {
                    log::warn!("{e}; removing it");
                    remove_if_exists(&path)?;
                }
            }
        }
        sort_by_start(&mut running);
        Ok((running, stale))
    }

    /// Adds a record; error [`StateError::NameTaken`] if a live record with
    /// this name exists (a stale or corrupt one is replaced).
    pub fn insert(&self, rec: &WorkloadRecord) -> Result<(), StateError> {
        validate_name(&rec.name)?;
        let path = self.dir.workload_path(&rec.name);
        match read_record(&path, &rec.name) {
            Ok(Some(old)) if old.is_alive() => {
                return Err(StateError::NameTaken {
                    name: rec.name.clone(),
                    supervisor_pid: old.supervisor.pid,
                    workload_pid: old.pid.map(|p| p.pid),
                })
            }
            Ok(_) => {}
            Err(e) => log::warn!("{e}; replacing it"),
        }
        write_atomic(&path, rec)
    }

    /// Replaces the record of `rec.name` (writes it if it is missing).
    pub fn update(&self, rec: &WorkloadRecord) -> Result<(), StateError> {
        validate_name(&rec.name)?;
        write_atomic(&self.dir.workload_path(&rec.name), rec)
    }

    /// Removes the record of `name`; removing a missing record is not an
    /// error (the workload may have been cleaned up as stale already).
    pub fn remove(&self, name: &str) -> Result<(), StateError> {
        validate_name(name)?;
        remove_if_exists(&self.dir.workload_path(name))
    }

    /// Writes the exit record of `rec.name`, replacing an older one.
    pub fn write_exit(&self, rec: &ExitRecord) -> Result<(), StateError> {
        validate_name(&rec.name)?;
        write_atomic(&self.dir.exit_path(&rec.name), rec)
    }
}
