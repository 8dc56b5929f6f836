//! What the state directory holds: one record per running workload and one
//! per finished one.

use std::path::PathBuf;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use super::process::ProcessRef;
use crate::userns::UserNamespace;

/// A running workload, as `root/workloads/<name>.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkloadRecord {
    /// The workload's name (also the file name).
    pub name: String,
    /// The `moat run` process.
    pub supervisor: ProcessRef,
    /// The workload, once started.
    pub pid: Option<ProcessRef>,
    /// The command and its arguments, cut to [`MAX_COMMAND_BYTES`] (see
    /// [`WorkloadRecord::command_for_record`]).
    pub command: Vec<String>,
    /// `default`, `unconfined` or a path.
    pub seccomp_profile: String,
    /// The applied user namespace, if any.
    pub userns: Option<UserNamespace>,
    /// Whether the user namespace was allocated by `--userns auto`.
    pub userns_auto: bool,
    /// The uid the workload runs as (inside its user namespace, if any).
    /// Records of older moat versions lack it and read as 0.
    #[serde(default)]
    pub uid: u32,
    /// The gid the workload runs as.
    #[serde(default)]
    pub gid: u32,
    /// The workload's own pids limit; `None` for no own limit or unlimited.
    pub pids_limit: Option<u64>,
    /// The pids limit as given: `64`, `unlimited`, `inherit`.
    pub pids_limit_text: String,
    /// The workload's pids cgroup (v1 hierarchy).
    pub cgroup_pids: PathBuf,
    /// The workload's cgroup in the unified (v2) hierarchy.
    pub cgroup_v2: PathBuf,
    /// The systemd scope unit (`moat-<name>.scope`) whose cgroup is
    /// `cgroup_v2`, when the systemd cgroup manager placed the workload;
    /// absent for cgroups moat made itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unit: Option<String>,
    /// When the workload was started, in ms after the Unix epoch.
    pub started_at_unix_ms: u64,
    /// The namespaces the workload has of its own, as `/proc/PID/ns` names
    /// them (`cgroup`, `ipc`, `mnt`, `pid`, `user`); empty in records
    /// written before moat recorded them.
    #[serde(default)]
    pub namespaces: Vec<String>,
}

/// How much of a command line a record keeps: enough to recognise it,
/// and small enough that a record stays below
/// [`MAX_RECORD_BYTES`](super::MAX_RECORD_BYTES) whatever the command.
pub const MAX_COMMAND_BYTES: usize = 16 * 1024;

impl WorkloadRecord {
    /// `command` as a record keeps it: whole if its arguments together
    /// hold at most [`MAX_COMMAND_BYTES`], otherwise cut there, with a
    /// last element saying how much was left out.
    pub fn command_for_record(command: &[String]) -> Vec<String> {
        let mut kept = Vec::new();
        let mut budget = MAX_COMMAND_BYTES;
        for (i, arg) in command.iter().enumerate() {
            if arg.len() <= budget {
                budget -= arg.len();
                kept.push(arg.clone());
                continue;
            }
            let mut cut = budget;
            while !arg.is_char_boundary(cut) {
                cut -= 1;
            }
            if cut > 0 {
                kept.push(arg[..cut].to_owned());
            }
            let rest: usize =
                arg.len() - cut + command[i + 1..].iter().map(String::len).sum::<usize>();
            kept.push(format!("[{rest} more bytes not recorded]"));
            break;
        }
        kept
    }

    /// Whether the supervisor or the workload still runs. A SIGKILLed
    /// supervisor leaves the workload running, and while it runs its user
    /// namespace range must stay reserved.
    pub fn is_alive(&self) -> bool {
        self.supervisor.is_alive() || self.pid.is_some_and(|p| p.is_alive())
    }
}

/// How a workload ended, as `root/exits/<name>.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExitRecord {
    /// The workload's name.
    pub name: String,
    /// The workload's pid, if it was started.
    pub pid: Option<i32>,
    /// Exit code (128 + signal when killed by one, as shells report it).
    pub exit_code: i32,
    /// The signal that killed it, if any.
    pub signal: Option<i32>,
    /// How often the pids limit refused a fork.
    pub pids_limit_hits: u64,
    /// Start, ms after the Unix epoch.
    pub started_at_unix_ms: u64,
    /// End, ms after the Unix epoch.
    pub ended_at_unix_ms: u64,
    /// Why the workload could not be run, if it could not.
    pub error: Option<String>,
}

/// Milliseconds after the Unix epoch, for the `*_unix_ms` fields.
pub fn now_unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}
