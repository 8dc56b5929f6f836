//! What the command's process does between its fork (by moat's init) and
//! `execve`, in the order runc and crun use: join the v1 pids cgroup, wait
//! until the init has placed it (id maps), take a cgroup namespace rooted there, a session of
//! its own (with the pty as controlling terminal), a new session keyring,
//! reset signals, mark inherited descriptors close-on-exec, then groups and
//! ids, capabilities, the parent-death signal, `no_new_privs`, and the
//! seccomp filter as the very last step before `execve`.
//!
//! Everything here is prepared before the clone ([`ChildPlan`]) so the child
//! only makes system calls. A failure is reported as a [`Failure`] on a
//! close-on-exec pipe: an empty read there means `execve` succeeded.

use std::ffi::{c_char, CString};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};

use super::failure::{errno, report_and_exit};
pub use super::failure::{Failure, Step};
use crate::seccomp::bpf::Program;
use crate::seccomp::load;

/// The workload's terminal: the pty slave and which standard streams it
/// becomes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TtyPlan {
    /// The slave descriptor (inherited from the supervisor).
    pub slave: RawFd,
    /// Which of 0, 1, 2 are the terminal (the others pass through).
    pub streams: [bool; 3],
}

/// Everything the child needs, prepared before the clone.
pub struct ChildPlan {
    /// Paths to try for `execve`, in order (a PATH search done ahead).
    pub exec_candidates: Vec<CString>,
    /// `argv`, owned.
    pub argv: Vec<CString>,
    /// `envp`, owned.
    pub env: Vec<CString>,
    /// Working directory.
    pub workdir: Option<CString>,
    /// When changing to `workdir` fails, use `/` instead (for moat's own
    /// working directory, which the command's user may not reach).
    pub workdir_fallback: bool,
    /// User and group ids inside.
    pub uid: u32,
    /// Group id inside.
    pub gid: u32,
    /// Capability mask (kernel numbering) the workload keeps.
    pub caps: u64,
    /// Highest capability number this kernel knows.
    pub last_cap: u32,
    /// Whether to set `no_new_privs`.
    pub no_new_privs: bool,
    /// The seccomp program and its flags.
    pub seccomp: Option<(Program, u32)>,
    /// Take a new cgroup namespace (rooted at the workload's cgroups).
    pub cgroup_namespace: bool,
    /// The pty, when moat has a terminal.
    pub tty: Option<TtyPlan>,
    /// `--preserve-fds`: descriptors 3 to 3+N-1 stay open.
    pub preserve_fds: u32,
}

/// Runs in the child: never returns.
///
/// `go` is the read end of the init's go-ahead pipe, `report` the write end
/// of the close-on-exec failure pipe, `join` the v1 pids cgroup's `tasks`
/// file (opened for writing by the supervisor), when pids is on v1.
pub fn run(plan: &ChildPlan, go: OwnedFd, report: RawFd, join: Option<RawFd>) -> ! {
    let argv = ptrs(&plan.argv);
    let envp = ptrs(&plan.env);
    let fail = |step: Step, errno: i32| -> ! { report_and_exit(report, Failure::new(step, errno)) };
    // SAFETY: getppid has no arguments.
    let parent = unsafe { libc::getppid() };

    // The pids limit applies before anything else runs here. Writing `0`
    // to `tasks` moves the calling thread alone, which the kernel does
    // without its global cgroup_threadgroup_rwsem (commit 9a3284fad42f,
    // "cgroup: Optimize single thread migration", Linux 5.5): a write of a
    // pid to `cgroup.procs` takes that lock for writing, which after an
    // idle period waits for an RCU grace period (7-22 ms on this kind of
    // host). This process has a single thread, so the thread is the whole
    // process. Older kernels take the lock either way.
    if let Some(fd) = join {
        // SAFETY: writing one byte of a static string to our descriptor.
        let n = unsafe { libc::write(fd, b"0".as_ptr().cast(), 1) };
        if n != 1 {
            fail(Step::CgroupJoin, if n < 0 { errno() } else { libc::EIO });
        }
        // SAFETY: closing our copy; nothing else here uses it.
        unsafe { libc::close(fd) };
    }

    // The init writes one byte once cgroups and id maps are in place; EOF
    // means it gave up, and the child must not run anything.
    let mut byte = 0u8;
    // SAFETY: reading one byte into a stack variable.
    let n = unsafe { libc::read(go.as_raw_fd(), (&mut byte as *mut u8).cast(), 1) };
    if n != 1 {
        // SAFETY: leaving the forked child.
        unsafe { libc::_exit(125) }
    }
    drop(go);

    // Now that it is in its cgroups, they become the namespace's root.
    // SAFETY: unshare with an integer flag.
    if plan.cgroup_namespace && unsafe { libc::unshare(libc::CLONE_NEWCGROUP) } != 0 {
        fail(Step::CgroupNs, errno());
    }
    if let Err(e) = new_session(plan.tty) {
        fail(Step::Session, e);
    }
    if let Err(e) = new_session_keyring() {
        fail(Step::Keyring, e);
    }
    if reset_signals().is_err() {
        fail(Step::Signals, errno());
    }
    // Nothing is opened after this point.
    if let Err(e) = super::fds::seal(super::fds::first_closed(plan.preserve_fds)) {
        fail(Step::Fds, e);
    }
    // Without no_new_privs an unprivileged task may not install a filter,
    // so it goes in while we still hold CAP_SYS_ADMIN (as runc does); the
    // profile must then allow the remaining set-up calls.
    if !plan.no_new_privs {
        install_seccomp(plan).unwrap_or_else(|e| fail(Step::Seccomp, e));
    }
    for cap in 0..=plan.last_cap {
        if plan.caps & (1u64 << cap) == 0 {
            // SAFETY: prctl with integer arguments.
            if unsafe { libc::prctl(libc::PR_CAPBSET_DROP, cap as libc::c_ulong, 0, 0, 0) } != 0 {
                fail(Step::CapBounding, errno());
            }
        }
    }
    // SAFETY: plain system calls with integer or null arguments.
    unsafe {
        if libc::setgroups(0, std::ptr::null()) != 0 {
            fail(Step::Setgroups, errno());
        }
        if libc::setresgid(plan.gid, plan.gid, plan.gid) != 0 {
            fail(Step::Setgid, errno());
        }
        if libc::setresuid(plan.uid, plan.uid, plan.uid) != 0 {
            fail(Step::Setuid, errno());
        }
    }
    // Checked, not trusted: -1 means "unchanged" to these calls, and with
    // the filter already in (--allow-new-privileges) a profile can make
    // them return 0 without doing anything.
    if let Err(step) = ids_are(plan.uid, plan.gid) {
        fail(step, libc::EPERM);
    }
    // A non-root user lost every capability at setresuid, as under Docker;
    // the bounding set above still limits what setuid binaries can gain.
    if let Err(e) = set_caps(if plan.uid == 0 { plan.caps } else { 0 }) {
        fail(Step::Capset, e);
    }
    if let Some(dir) = &plan.workdir {
        // SAFETY: valid C strings.
        let moved = unsafe {
            libc::chdir(dir.as_ptr()) == 0
                || (plan.workdir_fallback && libc::chdir(c"/".as_ptr()) == 0)
        };
        if !moved {
            fail(Step::Chdir, errno());
        }
    }
    // Set after the id changes, which clear it. Should the init (and with
    // it the supervisor) be gone already, the command must not start.
    // SAFETY: prctl with integer arguments; getppid has none.
    unsafe {
        if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) != 0 {
            fail(Step::ParentDeath, errno());
        }
        if libc::getppid() != parent {
            fail(Step::ParentDeath, libc::ESRCH);
        }
    }
    if plan.no_new_privs {
        if let Err(e) = load::set_no_new_privs() {
            fail(Step::NoNewPrivs, io_errno(&e));
        }
        install_seccomp(plan).unwrap_or_else(|e| fail(Step::Seccomp, e));
    }
    // ENOENT only if every candidate is missing; any other error (EACCES,
    // ENOEXEC) means the command exists but cannot run.
    let mut last = libc::ENOENT;
    for path in &plan.exec_candidates {
        // SAFETY: null-terminated arrays of valid C strings that outlive the call.
        unsafe { libc::execve(path.as_ptr(), argv.as_ptr(), envp.as_ptr()) };
        let e = errno();
        if e != libc::ENOENT && e != libc::ENOTDIR {
            last = e;
        }
    }
    fail(Step::Exec, last)
}

/// Whether the process now has exactly the real, effective and saved
/// `uid` and `gid` and no supplementary groups; the step whose result is
/// wrong otherwise. The out-values start as -1, which they must not end as,
/// so a call that "succeeds" without writing them fails the check too.
fn ids_are(uid: u32, gid: u32) -> Result<(), Step> {
    // -1 is never a real id (the parent refuses it before the clone).
    if gid == u32::MAX {
        return Err(Step::Setgid);
    }
    if uid == u32::MAX {
        return Err(Step::Setuid);
    }
    let (mut r, mut e, mut s) = (u32::MAX, u32::MAX, u32::MAX);
    // SAFETY: getresgid/getresuid write three ids to valid pointers;
    // getgroups(0, NULL) only counts.
    unsafe {
        if libc::getgroups(0, std::ptr::null_mut()) != 0 {
            return Err(Step::Setgroups);
        }
        if libc::getresgid(&mut r, &mut e, &mut s) != 0 || [r, e, s] != [gid; 3] {
            return Err(Step::Setgid);
        }
        (r, e, s) = (u32::MAX, u32::MAX, u32::MAX);
        if libc::getresuid(&mut r, &mut e, &mut s) != 0 || [r, e, s] != [uid; 3] {
            return Err(Step::Setuid);
        }
    }
    Ok(())
}

/// A session of the command's own, so that no terminal of moat's is its
/// controlling terminal (TIOCSTI needs that); with a pty, the slave becomes
/// its controlling terminal and the standard streams that were terminals.
fn new_session(tty: Option<TtyPlan>) -> Result<(), i32> {
    // SAFETY: setsid, ioctl and dup2 with integer arguments.
    unsafe {
        if libc::setsid() < 0 {
            return Err(errno());
        }
        let Some(t) = tty else { return Ok(()) };
        if libc::ioctl(t.slave, libc::TIOCSCTTY, 0) != 0 {
            return Err(errno());
        }
        for fd in 0..3 {
            if t.streams[fd as usize] && libc::dup2(t.slave, fd) < 0 {
                return Err(errno());
            }
        }
    }
    Ok(())
}

/// A new anonymous session keyring, so that the keys of the operator's
/// session (moat's) are not the workload's. Kernels without keys have no
/// keyring to leak.
fn new_session_keyring() -> Result<(), i32> {
    const KEYCTL_JOIN_SESSION_KEYRING: libc::c_long = 1;
    // SAFETY: keyctl with a null name joins a new anonymous keyring.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_keyctl,
            KEYCTL_JOIN_SESSION_KEYRING,
            std::ptr::null::<c_char>(),
        )
    };
    match (rc, errno()) {
        (r, _) if r >= 0 => Ok(()),
        (_, libc::ENOSYS) => Ok(()),
        (_, e) => Err(e),
    }
}

fn ptrs(v: &[CString]) -> Vec<*const c_char> {
    v.iter()
        .map(|s| s.as_ptr())
        .chain(std::iter::once(std::ptr::null()))
        .collect()
}

fn io_errno(e: &crate::seccomp::LoadError) -> i32 {
    match e {
        crate::seccomp::LoadError::NoNewPrivs(io) => io.raw_os_error().unwrap_or(libc::EIO),
        crate::seccomp::LoadError::Install { error, .. } => {
            error.raw_os_error().unwrap_or(libc::EIO)
        }
        crate::seccomp::LoadError::Tsync { .. } => libc::EAGAIN,
    }
}

fn install_seccomp(plan: &ChildPlan) -> Result<(), i32> {
    match &plan.seccomp {
        Some((program, flags)) => load::install(program, *flags).map_err(|e| io_errno(&e)),
        None => Ok(()),
    }
}

/// The parent blocks the signals it forwards and Rust ignores SIGPIPE; both
/// would be inherited across `execve`.
fn reset_signals() -> Result<(), ()> {
    // SAFETY: sigset and sigaction calls on local, initialised structures.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        if libc::sigprocmask(libc::SIG_SETMASK, &set, std::ptr::null_mut()) != 0 {
            return Err(());
        }
        for sig in 1..libc::SIGRTMIN() {
            if sig != libc::SIGKILL && sig != libc::SIGSTOP {
                libc::signal(sig, libc::SIG_DFL);
            }
        }
    }
    Ok(())
}

#[repr(C)]
struct CapHeader {
    version: u32,
    pid: i32,
}

#[repr(C)]
#[derive(Clone, Copy)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

/// Sets the effective and permitted capabilities to `mask` (none
/// inheritable, no ambient ones).
pub(super) fn set_caps(mask: u64) -> Result<(), i32> {
    const VERSION_3: u32 = 0x2008_0522;
    let header = CapHeader {
        version: VERSION_3,
        pid: 0,
    };
    // Inheritable stays empty (CVE-2022-24769): root's execve gets the
    // bounding set anyway, and nothing should pass to non-root programs.
    let half = |m: u64| CapData {
        effective: m as u32,
        permitted: m as u32,
        inheritable: 0,
    };
    let data = [half(mask), half(mask >> 32)];
    // SAFETY: capset with a v3 header and two data words, as the ABI says.
    let rc = unsafe { libc::syscall(libc::SYS_capset, &header, data.as_ptr()) };
    if rc != 0 {
        return Err(std::io::Error::last_os_error()
            .raw_os_error()
            .unwrap_or(libc::EIO));
    }
    // Ambient capabilities would survive execve for a non-root user.
    // SAFETY: prctl with integer arguments.
    unsafe {
        libc::prctl(
            libc::PR_CAP_AMBIENT,
            libc::PR_CAP_AMBIENT_CLEAR_ALL,
            0,
            0,
            0,
        )
    };
    Ok(())
}
