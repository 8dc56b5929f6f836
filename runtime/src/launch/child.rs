//! What the child does between `clone3` and `execve`, in the order runc and
//! crun use: wait for the parent to finish placing it (cgroups, id maps),
//! then groups and ids, capabilities, `no_new_privs`, and the seccomp filter
//! as the very last step before `execve`.
//!
//! Everything here is prepared by the parent ([`ChildPlan`]) so the child
//! only makes system calls. A failure is reported to the parent as a
//! fixed-size [`Failure`] on a close-on-exec pipe: an empty read there means
//! `execve` succeeded.

use std::ffi::{c_char, CString};
use std::os::fd::{AsRawFd, OwnedFd};

use crate::seccomp::bpf::Program;
use crate::seccomp::load;

/// The steps of the child's set-up, for error messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub enum Step {
    /// Waiting for the parent's go-ahead.
    Sync = 1,
    /// Resetting the signal mask and dispositions.
    Signals,
    /// Dropping capabilities from the bounding set.
    CapBounding,
    /// `setgroups`.
    Setgroups,
    /// `setresgid`.
    Setgid,
    /// `setresuid`.
    Setuid,
    /// `capset`.
    Capset,
    /// `chdir` into the working directory.
    Chdir,
    /// `prctl(PR_SET_NO_NEW_PRIVS)`.
    NoNewPrivs,
    /// Installing the seccomp filter.
    Seccomp,
    /// `execve`.
    Exec,
}

impl Step {
    fn from_u32(v: u32) -> Option<Step> {
        use Step::*;
        [
            Sync,
            Signals,
            CapBounding,
            Setgroups,
            Setgid,
            Setuid,
            Capset,
            Chdir,
            NoNewPrivs,
            Seccomp,
            Exec,
        ]
        .into_iter()
        .find(|s| *s as u32 == v)
    }

    /// What the step does, for messages.
    pub fn describe(self) -> &'static str {
        match self {
            Step::Sync => "waiting for the parent",
            Step::Signals => "resetting signals",
            Step::CapBounding => "dropping capabilities from the bounding set",
            Step::Setgroups => "setgroups",
            Step::Setgid => "setting the group id",
            Step::Setuid => "setting the user id",
            Step::Capset => "setting capabilities",
            Step::Chdir => "changing to the working directory",
            Step::NoNewPrivs => "setting no_new_privs",
            Step::Seccomp => "installing the seccomp filter",
            Step::Exec => "executing the command",
        }
    }
}

/// A child's report of the step that failed and its errno.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Failure {
    /// The step.
    pub step: Step,
    /// The errno it failed with.
    pub errno: i32,
}

impl Failure {
    const SIZE: usize = 8;

    fn encode(self) -> [u8; Self::SIZE] {
        let mut b = [0u8; Self::SIZE];
        b[..4].copy_from_slice(&(self.step as u32).to_ne_bytes());
        b[4..].copy_from_slice(&self.errno.to_ne_bytes());
        b
    }

    /// Decodes a report; `None` for a short or unknown one.
    pub fn decode(b: &[u8]) -> Option<Failure> {
        if b.len() != Self::SIZE {
            return None;
        }
        let step = Step::from_u32(u32::from_ne_bytes(b[..4].try_into().ok()?))?;
        let errno = i32::from_ne_bytes(b[4..].try_into().ok()?);
        Some(Failure { step, errno })
    }
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
}

/// Runs in the child: never returns.
///
/// `go` is the read end of the parent's go-ahead pipe, `report` the write
/// end of the close-on-exec failure pipe.
pub fn run(plan: &ChildPlan, go: OwnedFd, report: OwnedFd) -> ! {
    let argv = ptrs(&plan.argv);
    let envp = ptrs(&plan.env);
    let fail = |step: Step, errno: i32| -> ! {
        let msg = Failure { step, errno }.encode();
        // SAFETY: writing a stack buffer to a pipe we own.
        unsafe { libc::write(report.as_raw_fd(), msg.as_ptr().cast(), msg.len()) };
        let code = if step == Step::Exec {
            if errno == libc::ENOENT {
                127
            } else {
                126
            }
        } else {
            125
        };
        // SAFETY: leaving the forked child without running the parent's
        // destructors or atexit handlers.
        unsafe { libc::_exit(code) }
    };
    let errno = || {
        std::io::Error::last_os_error()
            .raw_os_error()
            .unwrap_or(libc::EIO)
    };

    // The parent writes one byte once cgroups and id maps are in place; EOF
    // means it gave up, and the child must not run anything.
    let mut byte = 0u8;
    // SAFETY: reading one byte into a stack variable.
    let n = unsafe { libc::read(go.as_raw_fd(), (&mut byte as *mut u8).cast(), 1) };
    if n != 1 {
        // SAFETY: see above.
        unsafe { libc::_exit(125) }
    }
    drop(go);

    if reset_signals().is_err() {
        fail(Step::Signals, errno());
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
        // SAFETY: a valid C string.
        if unsafe { libc::chdir(dir.as_ptr()) } != 0 {
            fail(Step::Chdir, errno());
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

fn set_caps(mask: u64) -> Result<(), i32> {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_round_trip() {
        let f = Failure {
            step: Step::Seccomp,
            errno: libc::EINVAL,
        };
        assert_eq!(Failure::decode(&f.encode()), Some(f));
        assert_eq!(Failure::decode(&[1, 2, 3]), None);
        assert_eq!(Failure::decode(&[99, 0, 0, 0, 0, 0, 0, 0]), None);
    }
}
