//! The supervisor's side of starting a workload: a pty when moat has a
//! terminal, the pipes and cgroup descriptors moat's init needs, the
//! `clone3` of the init into its namespaces, and the wait for the command's
//! `execve` (or the report of the step that failed).

use std::ffi::CString;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;

use super::child::{ChildPlan, TtyPlan};
use super::clone::{self, Forked};
use super::error::LaunchError;
use super::failure::{Failure, Step};
use super::init::{self, InitFds, InitPlan};
use super::mounts::MountPlan;
use super::namespaces::{Isolation, Share};
use super::relay::Relay;
use super::supervise;
use super::tty::{Pty, RawMode, StdioTtys};
use crate::cgroup::{CgroupError, Operation, WorkloadCgroups};
use crate::seccomp::arch::Host;
use crate::userns::{self, UserNamespace};

/// A started workload: its command has passed `execve`.
pub struct Started {
    /// moat's init, in the host's PID namespace.
    pub init: i32,
    /// The signal mask to restore once supervision ends.
    pub old_mask: libc::sigset_t,
    /// Read end of the status pipe: the command's raw wait status.
    pub status: OwnedFd,
    /// The pty relay, when moat has a terminal.
    pub relay: Option<Relay>,
    /// moat's terminal in raw mode while the relay runs.
    pub raw: Option<RawMode>,
    /// Kept open while the workload runs: the init's sign that moat lives.
    pub _life: OwnedFd,
}

/// Starts moat's init, which starts the command.
pub fn spawn(
    command: &str,
    isolation: &Isolation,
    mut child: ChildPlan,
    cgroups: &WorkloadCgroups,
    ns: Option<&UserNamespace>,
    before_release: &mut dyn FnMut(i32) -> Result<(), LaunchError>,
) -> Result<Started, LaunchError> {
    let ttys = StdioTtys::detect();
    let pty = match ttys.reference() {
        Some(fd) => Some(Pty::open(fd).map_err(|e| LaunchError::os("opening a pty", e))?),
        None => None,
    };
    child.tty = pty.as_ref().map(|p| TtyPlan {
        slave: p.slave.as_raw_fd(),
        streams: ttys.0,
    });
    let mounts = MountPlan::new(isolation);
    let id_maps = ns.map(|ns| {
        [&ns.uid_map, &ns.gid_map]
            .map(|m| CString::new(userns::render_map(m)).expect("rendered maps have no NUL"))
    });
    let plan = InitPlan {
        mounts,
        pid_namespace: isolation.pid == Share::Private,
        id_maps,
        filter: Host::detect()
            .ok()
            .and_then(|h| h.native.audit_arch())
            .map(super::init_filter::program),
        child,
    };

    let pipe = || pipe().map_err(|e| LaunchError::os("creating a pipe", e));
    let (rep_r, rep_w) = pipe()?;
    let (status_r, status_w) = pipe()?;
    let (life_r, life_w) = pipe()?;
    let fds = InitFds {
        report: rep_w,
        status: status_w,
        life: life_r,
        cgroup_dir: cgroups.v2_fd()?,
        v2_procs: open_for_write(&cgroups.v2_dir().join("cgroup.procs"))?,
        pids_tasks: if cgroups.pids_on_v2() {
            None
        } else {
            Some(open_for_write(&cgroups.pids_dir().join("tasks"))?)
        },
    };

    // Blocked before the clone so a signal cannot slip between clone and
    // the supervisor loop; the init waits for them synchronously and the
    // command resets its mask before exec.
    let old_mask = supervise::block().map_err(|e| LaunchError::os("blocking signals", e))?;
    // SAFETY: `moat run` is single-threaded at this point (the seccomp
    // compiler's threads have been joined).
    let init = match unsafe { clone::clone3(isolation.init_clone_flags(), None) } {
        Ok(Forked::Child) => {
            drop((rep_r, status_r, life_w));
            init::run(&plan, fds)
        }
        Ok(Forked::Parent(pid)) => pid,
        Err(e) => {
            supervise::restore(&old_mask);
            return Err(LaunchError::os("clone3", e));
        }
    };
    // The supervisor keeps none of the workload's ends, so that the pty
    // master sees a hangup once the workload's processes are gone.
    drop(fds);
    let (master, slave) = match pty {
        Some(p) => (Some(p.master), Some(p.slave)),
        None => (None, None),
    };
    drop(slave);

    // The init releases the command only after a byte on the life pipe:
    // whatever must be recorded about a running workload is, first.
    if let Err(e) = before_release(init) {
        // SAFETY: killing and reaping our own child.
        unsafe { libc::kill(init, libc::SIGKILL) };
        let _ = supervise::wait_blocking(init);
        supervise::restore(&old_mask);
        return Err(e);
    }
    // SAFETY: writing one byte to our pipe.
    if unsafe { libc::write(life_w.as_raw_fd(), b"1".as_ptr().cast(), 1) } != 1 {
        let e = std::io::Error::last_os_error();
        // SAFETY: as above.
        unsafe { libc::kill(init, libc::SIGKILL) };
        let _ = supervise::wait_blocking(init);
        supervise::restore(&old_mask);
        return Err(LaunchError::os("releasing the workload", e));
    }

    // EOF: execve succeeded (the pipe is close-on-exec, and the init
    // closed its end). Otherwise a report.
    let mut buf = [0u8; Failure::SIZE];
    let n = read_full(&rep_r, &mut buf);
    if n > 0 {
        let _ = supervise::wait_blocking(init);
        supervise::restore(&old_mask);
        let failure = Failure::decode(&buf[..n]).unwrap_or(Failure::new(Step::Sync, libc::EIO));
        return Err(describe(command, failure, &plan, ns));
    }
    let relay = master.map(|m| {
        let input = ttys.0[0].then_some(0);
        Relay::new(m, input, ttys.output(), ttys.reference().unwrap_or(0))
    });
    let raw = match relay.is_some() && ttys.0[0] {
        true => RawMode::enter(0)
            .map_err(|e| log::warn!("cannot put the terminal in raw mode: {e}"))
            .ok(),
        false => None,
    };
    Ok(Started {
        init,
        old_mask,
        status: status_r,
        relay,
        raw,
        _life: life_w,
    })
}

/// The error for a failure the init or the command reported.
fn describe(command: &str, f: Failure, plan: &InitPlan, ns: Option<&UserNamespace>) -> LaunchError {
    let error = std::io::Error::from_raw_os_error(f.errno);
    match f.step {
        Step::Mounts => LaunchError::Isolation {
            what: format!("{} ({})", f.step.describe(), plan.mounts.describe(f.detail)),
            error,
        },
        Step::IdMaps => {
            let (file, map) = match (f.detail, ns) {
                (0, Some(ns)) => ("uid_map", userns::render_map(&ns.uid_map)),
                (_, Some(ns)) => ("gid_map", userns::render_map(&ns.gid_map)),
                _ => ("id map", String::new()),
            };
            LaunchError::Isolation {
                what: format!(
                    "writing the workload's {file} ({})",
                    map.trim().replace('\n', ", ")
                ),
                error,
            }
        }
        _ => LaunchError::Child {
            command: command.to_string(),
            failure: f,
        },
    }
}

/// Opens a cgroup file for writing. The kernel checks a v1 cgroup write
/// against the credentials of whoever opened the file, so the workload's
/// process can use a descriptor opened here after it entered its user
/// namespace.
fn open_for_write(path: &std::path::Path) -> Result<OwnedFd, LaunchError> {
    std::fs::OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_CLOEXEC)
        .open(path)
        .map(OwnedFd::from)
        .map_err(|e| CgroupError::io(Operation::Open, path, e).into())
}

/// Reads until `buf` is full or end of file; returns the count.
pub fn read_full(fd: &OwnedFd, buf: &mut [u8]) -> usize {
    let mut n = 0;
    while n < buf.len() {
        // SAFETY: reading into the unfilled tail of `buf`.
        let r = unsafe { libc::read(fd.as_raw_fd(), buf[n..].as_mut_ptr().cast(), buf.len() - n) };
        if r < 0 && std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted {
            continue;
        }
        if r <= 0 {
            break;
        }
        n += r as usize;
    }
    n
}

fn pipe() -> std::io::Result<(OwnedFd, OwnedFd)> {
    nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(std::io::Error::from)
}
