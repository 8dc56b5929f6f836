//! The state lock and the changes made under it.

use std::fs::File;

use nix::fcntl::Flock;

use super::error::StateError;
use super::file::{read_record, write_json};
use super::name::validate_name;
use super::record::{ExitRecord, WorkloadRecord};
use super::{record_file, sort_by_start, StateDir};

/// Holds the state lock; every modification goes through it.
#[derive(Debug)]
pub struct StateLock<'a> {
    pub(super) dir: &'a StateDir,
    pub(super) _file: Flock<File>,
    /// Sync what is written (when this boot's id is unknown, see
    /// `boot.rs`).
    pub(super) durable: bool,
}

impl StateLock<'_> {
    /// Every record, split into `(running, stale)`: a stale record's
    /// supervisor and workload are both gone. Nothing is removed: the
    /// caller reclaims what a stale record names and then removes it with
    /// [`StateLock::remove`], so that a crash meanwhile loses nothing.
    ///
    /// A record that cannot be used (not a regular file, too large, not a
    /// record of its name) is an error naming it: it may stand for a
    /// running workload whose ids and cgroups moat must not hand out again.
    pub fn running(&self) -> Result<(Vec<WorkloadRecord>, Vec<WorkloadRecord>), StateError> {
        let mut running = Vec::new();
        let mut stale = Vec::new();
        for rec in self.dir.scan()? {
            let rec = rec?;
            if rec.is_alive() {
                running.push(rec);
            } else {
                stale.push(rec);
            }
        }
        sort_by_start(&mut running);
        sort_by_start(&mut stale);
        Ok((running, stale))
    }

    /// Removes the temporary files that a writer killed between creating
    /// and renaming one left behind.
    pub fn remove_temporaries(&self) -> Result<(), StateError> {
        self.dir.workloads.remove_temporaries()?;
        self.dir.exits.remove_temporaries()
    }

    /// Adds a record. The name must be free: error
    /// [`StateError::NameTaken`] if a live workload has it, and
    /// [`StateError::StaleName`] if a stale record still holds it (reclaim
    /// and remove that one first: replacing it would forget what it names).
    pub fn insert(&self, rec: &WorkloadRecord) -> Result<(), StateError> {
        validate_name(&rec.name)?;
        if let Some(old) = read_record(&self.dir.workloads, &rec.name)? {
            return Err(if old.is_alive() {
                StateError::NameTaken {
                    name: rec.name.clone(),
                    supervisor_pid: old.supervisor.pid,
                    workload_pid: old.pid.map(|p| p.pid),
                }
            } else {
                StateError::StaleName {
                    name: rec.name.clone(),
                    file: self.dir.workloads.path().join(record_file(&rec.name)),
                }
            });
        }
        write_json(
            &self.dir.workloads,
            &record_file(&rec.name),
            rec,
            self.durable,
        )
    }

    /// Replaces the record of `rec.name` (writes it if it is missing).
    pub fn update(&self, rec: &WorkloadRecord) -> Result<(), StateError> {
        validate_name(&rec.name)?;
        write_json(
            &self.dir.workloads,
            &record_file(&rec.name),
            rec,
            self.durable,
        )
    }

    /// Removes the record of `name`; removing a missing record is not an
    /// error (the workload may have been cleaned up as stale already).
    pub fn remove(&self, name: &str) -> Result<(), StateError> {
        validate_name(name)?;
        self.dir.workloads.remove(&record_file(name))
    }

    /// Writes the exit record of `rec.name`, replacing an older one.
    pub fn write_exit(&self, rec: &ExitRecord) -> Result<(), StateError> {
        validate_name(&rec.name)?;
        write_json(&self.dir.exits, &record_file(&rec.name), rec, self.durable)
    }
}
