//! Killing every process of a workload's cgroups.

use std::os::fd::{AsRawFd, OwnedFd};
use std::path::Path;
use std::thread;
use std::time::{Duration, Instant};

use super::error::{CgroupError, Operation};
use super::fs;
use super::workload::WorkloadCgroups;

/// How long [`WorkloadCgroups::kill_all`] waits for the processes to go.
pub const KILL_TIMEOUT: Duration = Duration::from_secs(5);

impl WorkloadCgroups {
    /// Kills every process of the workload and waits, at most
    /// [`KILL_TIMEOUT`], until none is left.
    ///
    /// Writes `1` to `cgroup.kill` of the identity cgroup, which kills the
    /// whole cgroup atomically, even a fork bomb that forks faster than
    /// anyone can list it. Then, until both cgroups' `cgroup.procs` are
    /// empty, SIGKILLs whatever they still list: this is all there is on
    /// kernels without `cgroup.kill` (before 5.14), and it catches
    /// processes that were only put into the v1 pids cgroup.
    ///
    /// Killed processes stay zombies, still counted in `pids.current`,
    /// until their parent reaps them; orphans are reaped by the nearest
    /// subreaper or PID 1.
    pub fn kill_all(&self) -> Result<(), CgroupError> {
        kill_dirs(&self.dirs())
    }
}

/// [`WorkloadCgroups::kill_all`] for the cgroup directories `dirs` (pids
/// first, then identity) and any cgroups below them: `cgroup.kill` (which
/// covers the subtree) is written where a directory has one, then members
/// are SIGKILLed until every `cgroup.procs` of the subtrees is empty or
/// [`KILL_TIMEOUT`] has passed. A v1 cgroup lists only its own members,
/// hence the walk.
pub(super) fn kill_dirs(dirs: &[&Path]) -> Result<(), CgroupError> {
    let start = Instant::now();
    for dir in dirs {
        let kill_file = dir.join("cgroup.kill");
        if kill_file.exists() {
            fs::write(&kill_file, "1")?;
        }
    }
    let mut pause = Duration::from_millis(1);
    let walk = || -> Result<Vec<std::path::PathBuf>, CgroupError> {
        let mut all = Vec::new();
        for top in dirs {
            all.extend(fs::subtree(top)?);
        }
        Ok(all)
    };
    // Listed again after each round in which something was still alive: a
    // dying process may have made a cgroup meanwhile.
    let mut all = walk()?;
    loop {
        let mut alive: Option<(std::path::PathBuf, Vec<i32>)> = None;
        for dir in &all {
            let procs = fs::read_procs(dir)?;
            if !procs.is_empty() {
                sigkill_members(dir, &procs)?;
                alive.get_or_insert((dir.clone(), procs));
            }
        }
        let Some((dir, remaining)) = alive else {
            return Ok(());
        };
        if start.elapsed() >= KILL_TIMEOUT {
            return Err(CgroupError::KillTimeout {
                path: dir,
                waited: start.elapsed(),
                remaining,
            });
        }
        thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(50));
        all = walk()?;
    }
}

/// SIGKILLs the processes `pids` listed in `dir`'s `cgroup.procs`, without
/// hitting an unrelated process that reused a pid after a member exited:
/// each pid is pinned with a pidfd first, and only signalled if the cgroup
/// still lists it afterwards. A pidfd keeps naming its process even if the
/// number is reused, so a pid still listed after the pidfd was opened is
/// either the member the pidfd names or a new member, and signalling a
/// pidfd whose process is gone does nothing.
pub(super) fn sigkill_members(dir: &Path, pids: &[i32]) -> Result<(), CgroupError> {
    let mut pinned = Vec::with_capacity(pids.len());
    for &pid in pids {
        // SAFETY: pidfd_open with integer arguments.
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
        if fd >= 0 {
            // SAFETY: the kernel just returned this descriptor to us.
            let fd = unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd as i32) };
            pinned.push((pid, Some(fd)));
            continue;
        }
        let e = std::io::Error::last_os_error();
        match e.raw_os_error() {
            Some(libc::ESRCH) => {} // already gone
            // Kernels before 5.3: fall back to kill(2) and its small race.
            Some(libc::ENOSYS) => pinned.push((pid, None)),
            _ => return Err(CgroupError::io(Operation::Kill { pid }, dir, e)),
        }
    }
    let still = fs::read_procs(dir)?;
    for (pid, fd) in pinned {
        if still.binary_search(&pid).is_err() {
            continue;
        }
        let rc = match &fd {
            // SAFETY: pidfd_send_signal on a pidfd we own, no siginfo.
            Some(fd) => unsafe {
                libc::syscall(
                    libc::SYS_pidfd_send_signal,
                    fd.as_raw_fd(),
                    libc::SIGKILL,
                    std::ptr::null::<libc::siginfo_t>(),
                    0,
                )
            },
            // SAFETY: kill with integer arguments.
            None => unsafe { libc::kill(pid, libc::SIGKILL) }.into(),
        };
        if rc != 0 {
            let e = std::io::Error::last_os_error();
            if e.raw_os_error() != Some(libc::ESRCH) {
                return Err(CgroupError::io(Operation::Kill { pid }, dir, e));
            }
        }
    }
    Ok(())
}
