//! moat's init: the first process in the workload's namespaces, a forked
//! copy of moat that never runs code of the workload's.
//!
//! In a new PID namespace the first process is special: the kernel delivers
//! it only the signals it handles (so a command run there directly would
//! silently ignore the SIGTERM moat forwards) and every orphan of the
//! namespace becomes its child. Like `docker run --init`, bubblewrap or
//! catatonit, moat puts a small init there. It
//!
//! 1. builds the workload's mounts in its new mount namespace
//!    ([`super::mounts`]);
//! 2. forks the command's process straight into the workload's cgroup
//!    (`CLONE_INTO_CGROUP`, and in a new user and mount namespace when one
//!    is asked for) and writes its id maps while it waits; the process
//!    joins the v1 pids cgroup itself, first thing ([`child::run`]);
//! 3. protects itself before releasing it: not dumpable (nothing can
//!    ptrace it or open its `/proc` files without `CAP_SYS_PTRACE` in the
//!    host's user namespace), only `CAP_KILL` left, `no_new_privs`, and a
//!    seccomp allow-list of the few calls it still makes
//!    ([`super::init_filter`]);
//! 4. forwards the signals the supervisor forwards, reaps every child, and
//!    when the command's process ends writes its raw wait status to the
//!    supervisor and exits, which ends the namespace.
//!
//! The init itself is not in the workload's cgroups: it stays in moat's, so
//! that the workload's pids limit and counts are the command's alone.
//! Within the namespace it cannot be killed: the kernel ignores SIGKILL and
//! SIGSTOP sent to a namespace's init from inside it, and the init handles
//! no other signal sent by the workload than by forwarding it back.

use std::ffi::CString;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};

use super::child::{self, ChildPlan};
use super::clone::{self, Forked};
use super::failure::{errno, report_and_exit, Failure, Step};
use super::mounts::MountPlan;
use super::supervise;
use crate::seccomp::bpf::Program;
use crate::seccomp::load;

/// What the init does, prepared before the clone.
pub struct InitPlan {
    /// The workload's mounts.
    pub mounts: MountPlan,
    /// Whether the init is the first process of a new PID namespace.
    pub pid_namespace: bool,
    /// The uid_map and gid_map texts, when the workload gets a user
    /// namespace.
    pub id_maps: Option<[CString; 2]>,
    /// The init's own filter (none on architectures without a known
    /// `AUDIT_ARCH`).
    pub filter: Option<Program>,
    /// The command's process.
    pub child: ChildPlan,
}

/// Descriptors the init inherits from the supervisor.
pub struct InitFds {
    /// Write end of the failure report pipe (close-on-exec).
    pub report: OwnedFd,
    /// Write end of the status pipe: the command's raw wait status.
    pub status: OwnedFd,
    /// Read end of a pipe only the supervisor writes: hung up once the
    /// supervisor is gone.
    pub life: OwnedFd,
    /// `O_PATH` descriptor of the identity (v2) cgroup.
    pub cgroup_dir: OwnedFd,
    /// `cgroup.procs` of the v2 cgroup, opened for writing (used when the
    /// kernel lacks `CLONE_INTO_CGROUP`).
    pub v2_procs: OwnedFd,
    /// `tasks` of the v1 pids cgroup, when pids is on v1: the command's
    /// process writes `0` there to join it (see [`child::run`]).
    pub pids_tasks: Option<OwnedFd>,
}

/// `CAP_KILL`: the only capability the init keeps, to forward signals to a
/// command running as another user.
const CAP_KILL: u64 = 1 << 5;

/// Runs the init; never returns.
pub fn run(plan: &InitPlan, fds: InitFds) -> ! {
    let report = fds.report.as_raw_fd();
    let fail = |f: Failure| -> ! { report_and_exit(report, f) };

    // Killed with the supervisor; it was alive after this point if its end
    // of the life pipe is still open.
    // SAFETY: prctl with integer arguments.
    if unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) } != 0 {
        fail(Failure::new(Step::ParentDeath, errno()));
    }
    let mut life = libc::pollfd {
        fd: fds.life.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: poll on one local pollfd without waiting.
    let polled = unsafe { libc::poll(&mut life, 1, 0) };
    // Readable only means the go-ahead byte is already there (read below);
    // a hangup or error means the supervisor is gone.
    if polled < 0 || life.revents & (libc::POLLHUP | libc::POLLERR) != 0 {
        // SAFETY: leaving the forked process.
        unsafe { libc::_exit(125) }
    }
    // Out of moat's session: neither its terminal's signals nor its
    // hangup reach the init.
    // SAFETY: setsid has no arguments.
    unsafe { libc::setsid() };

    if let Err(m) = plan.mounts.apply() {
        fail(Failure {
            step: Step::Mounts,
            errno: m.errno,
            detail: m.index,
        });
    }
    if !plan.pid_namespace {
        // The command's orphans come here rather than to the supervisor.
        // SAFETY: prctl with integer arguments.
        unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
    }

    let (go_r, go_w) = match pipe() {
        Ok(p) => p,
        Err(e) => fail(Failure::new(Step::Fork, e)),
    };
    let flags = if plan.id_maps.is_some() {
        (libc::CLONE_NEWUSER | libc::CLONE_NEWNS) as u64
    } else {
        0
    };
    // SAFETY: the init is single-threaded (a fork of the single-threaded
    // supervisor).
    let forked = match unsafe { clone::clone3(flags, Some(fds.cgroup_dir.as_fd())) } {
        Ok(f) => Ok((f, true)),
        // Kernels before 5.7 lack CLONE_INTO_CGROUP: join before release.
        Err(e) if matches!(e.raw_os_error(), Some(libc::EINVAL | libc::E2BIG)) => {
            // SAFETY: as above.
            unsafe { clone::clone3(flags, None) }.map(|f| (f, false))
        }
        Err(e) => Err(e),
    };
    let (pid, in_v2) = match forked {
        Ok((Forked::Child, _)) => {
            drop(go_w);
            let join = fds.pids_tasks.as_ref().map(|f| f.as_raw_fd());
            child::run(&plan.child, go_r, report, join)
        }
        Ok((Forked::Parent(pid), in_v2)) => (pid, in_v2),
        Err(e) => fail(Failure::new(
            Step::Fork,
            e.raw_os_error().unwrap_or(libc::EIO),
        )),
    };
    drop(go_r);
    let abort = |f: Failure| -> ! {
        // SAFETY: killing our own child.
        unsafe { libc::kill(pid, libc::SIGKILL) };
        fail(f)
    };

    // Without CLONE_INTO_CGROUP the identity cgroup is joined by pid. (The
    // v1 pids cgroup the command's process joins itself.)
    if !in_v2 {
        if let Err(e) = write_all(fds.v2_procs.as_raw_fd(), pid.to_string().as_bytes()) {
            abort(Failure::new(Step::CgroupJoin, e));
        }
    }
    if let Some(maps) = &plan.id_maps {
        for (i, (name, text)) in ["uid_map", "gid_map"].iter().zip(maps).enumerate() {
            if let Err(e) = write_file(&format!("/proc/{pid}/{name}"), text.as_bytes()) {
                abort(Failure {
                    step: Step::IdMaps,
                    errno: e,
                    detail: i as u32,
                });
            }
        }
    }

    // The supervisor's go-ahead: it has recorded the init's pid, so a
    // `moat run` killed from here on leaves the workload visible. End of
    // file means it gave up or died; the command must not run.
    let mut byte = 0u8;
    let got = loop {
        // SAFETY: reading one byte into a local.
        let r = unsafe { libc::read(fds.life.as_raw_fd(), (&mut byte as *mut u8).cast(), 1) };
        if r < 0 && errno() == libc::EINTR {
            continue;
        }
        break r;
    };
    if got != 1 {
        abort(Failure::new(Step::Sync, libc::EPIPE));
    }

    let status = fds.status.as_raw_fd();
    let mut keep = [report, status, go_w.as_raw_fd()];
    keep.sort_unstable();
    super::fds::close_all_except(&keep);
    if let Err(e) = harden(plan.filter.as_ref()) {
        abort(Failure::new(Step::InitHarden, e));
    }
    // From here on only the filter's calls. The report pipe is the
    // command's alone now: it reaches end of file at its execve.
    // SAFETY: closing our copy; the OwnedFds are forgotten below.
    unsafe { libc::close(report) };
    std::mem::forget(fds);
    let go = go_w.as_raw_fd();
    // SAFETY: writing one byte to our pipe, then closing it.
    unsafe {
        libc::write(go, b"1".as_ptr().cast(), 1);
        libc::close(go);
    }
    std::mem::forget(go_w);
    wait_for(pid, status)
}

/// Not dumpable, only `CAP_KILL`, `no_new_privs`, the allow-list.
fn harden(filter: Option<&Program>) -> Result<(), i32> {
    // SAFETY: prctl with integer arguments.
    if unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0) } != 0 {
        return Err(errno());
    }
    // Dropping capabilities does not make the process dumpable again (only
    // a change of ids or a gain of capabilities would).
    child::set_caps(CAP_KILL)?;
    load::set_no_new_privs().map_err(|_| errno())?;
    if let Some(p) = filter {
        load::install(p, 0).map_err(|_| errno())?;
    }
    Ok(())
}

/// The init's loop: forward signals to `pid`, reap every child, and when
/// `pid` ends write its raw status to `status` and exit. Allocation-free:
/// the filter allows no memory mapping.
fn wait_for(pid: i32, status: libc::c_int) -> ! {
    let set = supervise::supervised_set();
    loop {
        // SAFETY: sigwaitinfo on a valid set of blocked signals.
        let sig = unsafe { libc::sigwaitinfo(&set, std::ptr::null_mut()) };
        if sig == libc::SIGCHLD {
            loop {
                let mut raw = 0;
                // SAFETY: reaping our children.
                let rc = unsafe { libc::waitpid(-1, &mut raw, libc::WNOHANG) };
                if rc <= 0 {
                    break;
                }
                if rc == pid && supervise::decode(raw).is_some() {
                    let bytes = raw.to_ne_bytes();
                    // SAFETY: writing a local buffer, then leaving; the
                    // kernel ends the namespace's other processes.
                    unsafe {
                        libc::write(status, bytes.as_ptr().cast(), bytes.len());
                        libc::_exit(0)
                    }
                }
            }
        } else if sig > 0 && sig != libc::SIGWINCH {
            // SAFETY: signalling our own child.
            unsafe { libc::kill(pid, sig) };
        }
    }
}

fn pipe() -> Result<(OwnedFd, OwnedFd), i32> {
    nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| e as i32)
}

fn write_all(fd: libc::c_int, data: &[u8]) -> Result<(), i32> {
    // SAFETY: writing a local buffer.
    let n = unsafe { libc::write(fd, data.as_ptr().cast(), data.len()) };
    if n != data.len() as isize {
        return Err(if n < 0 { errno() } else { libc::EIO });
    }
    Ok(())
}

fn write_file(path: &str, data: &[u8]) -> Result<(), i32> {
    use std::io::Write as _;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .open(path)
        .map_err(|e| e.raw_os_error().unwrap_or(libc::EIO))?;
    f.write_all(data)
        .map_err(|e| e.raw_os_error().unwrap_or(libc::EIO))
}
