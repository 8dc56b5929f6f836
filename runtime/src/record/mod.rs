//! Recording a least-privilege seccomp profile from what a workload really
//! does (`moat run --record-profile`, `moat profile record`).
//!
//! A `sys_enter` program records every (arch, syscall number) that the
//! tasks of a flagged cgroup, and of the cgroups below it, make (see
//! `ebpf/moat-ebpf/src/record.rs`): moatd's pairing program where moatd
//! attaches it, else the record-only program moatd pins, which `moat`
//! attaches for the length of the recording. moatd pins the maps and that
//! program under `MOAT_BPF_DIR` (default `/sys/fs/bpf/moat`). `moat` flags the workload's cgroup through
//! them ([`session`], raw `bpf(2)` in [`bpf`]) before the workload's first
//! process runs, reads the set once the last one has exited, and writes the
//! profile ([`write`]). [`merge`] and [`diff`] work on the written files.

mod alive;
pub mod bpf;
pub mod diff;
pub mod session;
pub mod write;

use std::path::PathBuf;

pub use session::{pin_dir, RecordMaps, Recorded};

/// What can go wrong while recording.
#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    /// moatd's recording maps are not there, or no running moatd uses them.
    #[error(
        "recording needs moatd running (the kernel side records the syscalls): {reason} in {}; start moatd (or set MOAT_BPF_DIR to the directory it pins its maps in)",
        dir.display()
    )]
    NoAgent {
        /// The pin directory looked in.
        dir: PathBuf,
        /// What was found there.
        reason: String,
    },
    /// A `bpf(2)` command on a pinned map failed.
    #[error("{}: bpf map operation failed", path.display())]
    Map {
        /// The map's pin.
        path: PathBuf,
        /// What the kernel said.
        #[source]
        source: std::io::Error,
    },
    /// moatd's record-only program cannot be opened or attached.
    #[error("{}: attaching moatd's record-only program to sys_enter failed", path.display())]
    Attach {
        /// The program's pin.
        path: PathBuf,
        /// What the kernel said.
        #[source]
        source: std::io::Error,
    },
    /// The cgroup is being recorded already.
    #[error("cgroup {cgroup:#x} is being recorded already")]
    Busy {
        /// Its key.
        cgroup: u64,
    },
    /// The kernel could not record everything.
    #[error(
        "the recording is incomplete: {lost} syscalls could not be recorded (the kernel's map of {} entries is full); nothing was written",
        moat_common::RECORD_SYSCALLS_ENTRIES
    )]
    Incomplete {
        /// Syscalls not recorded.
        lost: u64,
    },
}

/// A recording in progress: the maps and the cgroup key it flagged.
#[derive(Debug)]
pub struct Recorder {
    maps: RecordMaps,
    key: Option<u64>,
    result: Option<Recorded>,
}

impl Recorder {
    /// Opens moatd's maps (fails, naming what to do, without a running moatd).
    pub fn open() -> Result<Recorder, RecordError> {
        Ok(Recorder {
            maps: RecordMaps::open(&pin_dir())?,
            key: None,
            result: None,
        })
    }

    /// Flags cgroup `key` before its first process runs: armed until the
    /// first exec in it.
    pub fn arm(&mut self, key: u64) -> Result<(), RecordError> {
        self.maps.start(key, moat_common::record_state::ARMED)?;
        self.key = Some(key);
        Ok(())
    }

    /// Flags cgroup `key` of a running workload: everything from now on.
    pub fn start_now(&mut self, key: u64) -> Result<(), RecordError> {
        self.maps.start(key, moat_common::record_state::RECORDING)?;
        self.key = Some(key);
        Ok(())
    }

    /// Takes the set once the last process is gone, and clears the maps.
    pub fn finish(&mut self) -> Result<(), RecordError> {
        if let Some(key) = self.key.take() {
            self.result = Some(self.maps.finish(key)?);
        }
        self.maps.release();
        Ok(())
    }

    /// Clears the flag without reading (a launch that failed).
    pub fn abandon(&mut self) {
        if let Some(key) = self.key.take() {
            self.maps.abandon(key);
        }
        self.maps.release();
    }

    /// The set [`Recorder::finish`] took.
    pub fn take_result(&mut self) -> Option<Recorded> {
        self.result.take()
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        self.abandon();
    }
}

#[cfg(test)]
mod tests;
