//! A recording of one cgroup through the maps moatd pins: flag the cgroup,
//! and once its last process is gone, take the set it made and clear it.
//!
//! Every change of the recorded cgroups happens under an exclusive `flock`
//! on the pin directory, after which the gate (how many recordings exist,
//! per key kind) is recomputed from the map itself: concurrent `moat`
//! processes never lose each other's updates, and a gate left high by a
//! killed `moat` is corrected by the next one (a recording whose cgroup is
//! gone is not counted; its entries stay until a recording of the same key
//! starts, which clears them).
//!
//! The syscalls are recorded by moatd's pairing `sys_enter` program when
//! moatd attaches it; otherwise (the `fexit` mechanism, the `fatal` tier)
//! `moat` attaches the record-only program moatd pinned beside the maps,
//! for as long as the recording lasts: the link is `moat`'s descriptor
//! (inherited by its forked init, which the kernel kills when `moat` dies),
//! so it goes when `moat` does, however it ends.

use std::collections::BTreeSet;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use moat_common::{
    record_state, RecordKey, RecordState, RECORD_CGROUPS_ENTRIES, RECORD_CGROUPS_MAP,
    RECORD_ENTER_PIN, RECORD_GATE_MAP, RECORD_GATE_V1, RECORD_GATE_V2, RECORD_SYSCALLS_ENTRIES,
    RECORD_SYSCALLS_MAP, SCHED_EXEC_PROGRAM, SYS_ENTER_PROGRAM, V1_PIDS_ID_FLAG,
};

use super::alive::cgroup_exists;
use super::bpf::{map_users, PinnedMap, PinnedProgram, BPF_ANY};
use super::RecordError;

/// `MOAT_BPF_DIR`, else where moatd pins by default.
pub fn pin_dir() -> PathBuf {
    std::env::var_os("MOAT_BPF_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(moat_common::RECORD_PIN_DIR))
}

/// The three recording maps of a running moatd.
#[derive(Debug)]
pub struct RecordMaps {
    dir: PathBuf,
    gate: PinnedMap,
    cgroups: PinnedMap,
    syscalls: PinnedMap,
    /// The links of moatd's `sched_process_exec` program (attached in every
    /// tier; it starts armed recordings) when the maps were opened.
    agent_links: Vec<u32>,
    /// The links of moatd's pairing `sys_enter` program (which records)
    /// when the maps were opened; empty when `moat` attached its own.
    enter_links: Vec<u32>,
    /// The record-only program's link `moat` attached (none while moatd's
    /// pairing records).
    own_link: Option<OwnedFd>,
}

/// What a recording saw.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Recorded {
    /// (`AUDIT_ARCH_*`, syscall number) pairs, sorted.
    pub syscalls: BTreeSet<(u32, u32)>,
    /// Syscalls that could not be recorded (the kernel's map was full).
    pub lost: u64,
    /// Whether moatd's program recorded without a break (the same link
    /// from start to end).
    pub continuous: bool,
    /// Whether the recording got past its start (an armed recording whose
    /// command never executed saw nothing of it).
    pub started: bool,
}

impl RecordMaps {
    /// Opens the maps pinned in `dir` and checks that a running moatd uses
    /// them.
    pub fn open(dir: &Path) -> Result<RecordMaps, RecordError> {
        let open = |name: &str, key: usize, value: usize| {
            let path = dir.join(name);
            PinnedMap::open(&path, key, value).map_err(|source| {
                if source.kind() == std::io::ErrorKind::NotFound {
                    RecordError::NoAgent {
                        dir: dir.to_path_buf(),
                        reason: format!("{} does not exist", path.display()),
                    }
                } else {
                    RecordError::Map { path, source }
                }
            })
        };
        let mut maps = RecordMaps {
            dir: dir.to_path_buf(),
            gate: open(RECORD_GATE_MAP, 4, 4)?,
            cgroups: open(RECORD_CGROUPS_MAP, 8, std::mem::size_of::<RecordState>())?,
            syscalls: open(RECORD_SYSCALLS_MAP, std::mem::size_of::<RecordKey>(), 1)?,
            agent_links: Vec::new(),
            enter_links: Vec::new(),
            own_link: None,
        };
        maps.agent_links = maps.agent_links_now()?;
        if maps.agent_links.is_empty() {
            return Err(RecordError::NoAgent {
                dir: dir.to_path_buf(),
                reason:
                    "its maps are pinned there but no attached program uses them (moatd stopped)"
                        .into(),
            });
        }
        maps.enter_links = maps.enter_links_now()?;
        if maps.enter_links.is_empty() {
            maps.own_link = Some(maps.attach_record_program()?);
        }
        Ok(maps)
    }

    /// Detaches the record-only program, if `moat` attached it: once the
    /// recording is taken, nothing has to run on `sys_enter` any more.
    pub fn release(&mut self) {
        self.own_link = None;
    }

    /// Attaches moatd's pinned record-only program to `sys_enter`.
    fn attach_record_program(&self) -> Result<OwnedFd, RecordError> {
        let path = self.dir.join(RECORD_ENTER_PIN);
        let program = PinnedProgram::open(&path, self.syscalls.id).map_err(|source| {
            if source.kind() == std::io::ErrorKind::NotFound {
                RecordError::NoAgent {
                    dir: self.dir.clone(),
                    reason: format!(
                        "moatd does not attach its sys_enter program (its [tracing] mode) and {} does not exist (a moatd older than this moat)",
                        path.display()
                    ),
                }
            } else {
                RecordError::Attach {
                    path: path.clone(),
                    source,
                }
            }
        })?;
        let (link, _id) = program
            .attach("sys_enter")
            .map_err(|source| RecordError::Attach { path, source })?;
        Ok(link)
    }

    /// The links of moatd's `sched_process_exec` program now.
    fn agent_links_now(&self) -> Result<Vec<u32>, RecordError> {
        let users = map_users(self.cgroups.id).map_err(|e| self.err(RECORD_CGROUPS_MAP, e))?;
        Ok(users
            .into_iter()
            .filter(|u| u.program == SCHED_EXEC_PROGRAM)
            .map(|u| u.link)
            .collect())
    }

    /// The links of moatd's pairing `sys_enter` program that record now:
    /// only an older moatd's does (not those of the record-only program,
    /// which other `moat` processes may hold).
    fn enter_links_now(&self) -> Result<Vec<u32>, RecordError> {
        let users = map_users(self.syscalls.id).map_err(|e| self.err(RECORD_SYSCALLS_MAP, e))?;
        Ok(users
            .into_iter()
            .filter(|u| u.program == SYS_ENTER_PROGRAM)
            .map(|u| u.link)
            .collect())
    }

    /// Whether what was recording when the maps were opened still is: the
    /// same moatd (its `sched_process_exec` link, which starts an armed
    /// recording), and the same `sys_enter` link (moatd's, or `moat`'s
    /// own, which lives as long as this). If moatd stopped meanwhile, even
    /// if another has started since, syscalls may have gone unrecorded.
    pub fn still_recording(&self) -> Result<bool, RecordError> {
        let agent = self.agent_links_now()?;
        if !self.agent_links.iter().any(|l| agent.contains(l)) {
            return Ok(false);
        }
        if self.own_link.is_some() {
            return Ok(true);
        }
        let enter = self.enter_links_now()?;
        Ok(self.enter_links.iter().any(|l| enter.contains(l)))
    }

    /// Starts recording the cgroup `key` (a v2 cgroup id, or
    /// `V1_PIDS_ID_FLAG | id`) in `state` (`record_state::ARMED` before
    /// the workload runs, `RECORDING` for a running one). Refuses a cgroup
    /// that is recorded already.
    pub fn start(&self, key: u64, state: u32) -> Result<(), RecordError> {
        let _lock = self.lock()?;
        if self
            .cgroups
            .lookup::<u64, RecordState>(&key)
            .map_err(|e| self.err(RECORD_CGROUPS_MAP, e))?
            .is_some()
        {
            return Err(RecordError::Busy { cgroup: key });
        }
        // Leftovers of an earlier recording under the same key (cgroup ids
        // are not reused, but a v1 id of a killed recorder may be).
        self.clear_syscalls(key)?;
        let value = RecordState {
            state,
            ..Default::default()
        };
        self.cgroups
            .update(&key, &value, BPF_ANY)
            .map_err(|e| self.err(RECORD_CGROUPS_MAP, e))?;
        self.recount_gate()
    }

    /// Ends the recording of `key`: takes its set and removes every trace
    /// of it from the maps.
    pub fn finish(&self, key: u64) -> Result<Recorded, RecordError> {
        let _lock = self.lock()?;
        let state: Option<RecordState> = self
            .cgroups
            .lookup(&key)
            .map_err(|e| self.err(RECORD_CGROUPS_MAP, e))?;
        let continuous = self.still_recording()?;
        let mut recorded = Recorded {
            continuous,
            lost: state.map_or(0, |s| s.lost),
            started: state.is_some_and(|s| s.state == record_state::RECORDING),
            ..Default::default()
        };
        for k in self.keys_of(key)? {
            recorded.syscalls.insert((k.arch, k.nr));
        }
        self.clear_syscalls(key)?;
        self.cgroups
            .delete(&key)
            .map_err(|e| self.err(RECORD_CGROUPS_MAP, e))?;
        self.recount_gate()?;
        Ok(recorded)
    }

    /// Removes the flag of `key` without reading anything (a launch that
    /// failed).
    pub fn abandon(&self, key: u64) {
        if let Ok(_lock) = self.lock() {
            let _ = self.clear_syscalls(key);
            let _ = self.cgroups.delete(&key);
            let _ = self.recount_gate();
        }
    }

    fn keys_of(&self, key: u64) -> Result<Vec<RecordKey>, RecordError> {
        let all: Vec<RecordKey> = self
            .syscalls
            .keys(4 * RECORD_SYSCALLS_ENTRIES as usize)
            .map_err(|e| self.err(RECORD_SYSCALLS_MAP, e))?;
        Ok(all.into_iter().filter(|k| k.cgroup_id == key).collect())
    }

    fn clear_syscalls(&self, key: u64) -> Result<(), RecordError> {
        for k in self.keys_of(key)? {
            self.syscalls
                .delete(&k)
                .map_err(|e| self.err(RECORD_SYSCALLS_MAP, e))?;
        }
        Ok(())
    }

    fn recount_gate(&self) -> Result<(), RecordError> {
        let keys: BTreeSet<u64> = self
            .cgroups
            .keys::<u64>(4 * RECORD_CGROUPS_ENTRIES as usize)
            .map_err(|e| self.err(RECORD_CGROUPS_MAP, e))?
            .into_iter()
            .collect();
        // Recordings whose cgroup is gone (a `moat` killed before it could
        // finish) need no gate: no task can be in them any more.
        let live: Vec<u64> = keys.into_iter().filter(|k| cgroup_exists(*k)).collect();
        let v1 = live.iter().filter(|k| *k & V1_PIDS_ID_FLAG != 0).count() as u32;
        let v2 = live.len() as u32 - v1;
        for (index, count) in [(RECORD_GATE_V2, v2), (RECORD_GATE_V1, v1)] {
            self.gate
                .update(&index, &count, BPF_ANY)
                .map_err(|e| self.err(RECORD_GATE_MAP, e))?;
        }
        Ok(())
    }

    fn lock(&self) -> Result<std::fs::File, RecordError> {
        let dir = std::fs::File::open(&self.dir).map_err(|source| RecordError::Map {
            path: self.dir.clone(),
            source,
        })?;
        // SAFETY: flock on a descriptor we own; released when it closes.
        if unsafe { libc::flock(dir.as_raw_fd(), libc::LOCK_EX) } != 0 {
            return Err(RecordError::Map {
                path: self.dir.clone(),
                source: std::io::Error::last_os_error(),
            });
        }
        Ok(dir)
    }

    fn err(&self, map: &str, source: std::io::Error) -> RecordError {
        RecordError::Map {
            path: self.dir.join(map),
            source,
        }
    }
}
