//! Naming a process so that a recycled pid is not mistaken for it.

use std::fs;
use std::io;

use serde::{Deserialize, Serialize};

use super::error::StateError;

/// A process named so that a recycled pid is not mistaken for it: the pid
/// and its start time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ProcessRef {
    /// Process id (in the initial pid namespace).
    pub pid: i32,
    /// Field 22 of `/proc/PID/stat`: clock ticks after boot at which the
    /// process started.
    pub start_time: u64,
}

impl ProcessRef {
    /// Identifies the running process `pid`.
    pub fn of(pid: i32) -> Result<ProcessRef, StateError> {
        let (_, start_time) = read_stat(pid)?;
        Ok(ProcessRef { pid, start_time })
    }

    /// Whether this very process still runs: the pid exists, has the same
    /// start time (so it was not reused) and is not a zombie (a killed
    /// process whose parent has not reaped it is gone for our purposes).
    pub fn is_alive(&self) -> bool {
        match read_stat(self.pid) {
            Ok((state, start_time)) => {
                start_time == self.start_time && !matches!(state, 'Z' | 'X' | 'x')
            }
            Err(_) => false,
        }
    }
}

/// Reads the state letter and start time of `pid`.
pub(super) fn read_stat(pid: i32) -> Result<(char, u64), StateError> {
    if pid <= 0 {
        return Err(StateError::Proc {
            pid,
            reason: "not a process id".to_string(),
        });
    }
    let text = fs::read_to_string(format!("/proc/{pid}/stat")).map_err(|e| StateError::Proc {
        pid,
        reason: if e.kind() == io::ErrorKind::NotFound {
            "no such process".to_string()
        } else {
            e.to_string()
        },
    })?;
    parse_stat(&text).map_err(|reason| StateError::Proc { pid, reason })
}

/// Parses the state (field 3) and start time (field 22) of a
/// `/proc/PID/stat` line.
pub(super) fn parse_stat(text: &str) -> Result<(char, u64), String> {
    // Field 2 is the command name in parentheses, and may itself contain
    // spaces and parentheses; it ends at the last ')'.
    let after = text
        .rfind(')')
        .map(|i| &text[i + 1..])
        .ok_or_else(|| "no ')' after the command name".to_string())?;
    let fields: Vec<&str> = after.split_whitespace().collect();
    // fields[0] is field 3 (state), so field 22 is fields[19].
    let state = fields
        .first()
        .and_then(|s| s.chars().next())
        .ok_or_else(|| "no state field".to_string())?;
    let start = fields
        .get(19)
        .ok_or_else(|| format!("{} fields, start time (field 22) missing", fields.len() + 2))?;
    let start_time = start
        .parse::<u64>()
        .map_err(|_| format!("start time (field 22) {start:?} is not a number"))?;
    Ok((state, start_time))
}
