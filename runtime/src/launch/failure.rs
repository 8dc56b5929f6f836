//! What moat's processes inside the workload's namespaces report when a
//! set-up step fails: the step, its errno and a detail (which mount, which
//! id map), as a fixed-size message on a close-on-exec pipe. An empty read
//! on that pipe means `execve` succeeded.

/// The steps of the set-up, in the order they run, for error messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub enum Step {
    /// Waiting for the go-ahead.
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
    /// Building the workload's view of the file systems (detail: which
    /// mount operation, see [`super::mounts::MountPlan::describe`]).
    Mounts,
    /// moat's init forking the workload.
    Fork,
    /// Moving the workload into its pids cgroup (v1) or identity cgroup.
    CgroupJoin,
    /// Writing the workload's id maps (detail 0: uid_map, 1: gid_map).
    IdMaps,
    /// moat's init protecting itself (not dumpable, capabilities, filter).
    InitHarden,
    /// A new session and the terminal as controlling terminal and stdio.
    Session,
    /// Joining a new session keyring.
    Keyring,
    /// Marking inherited descriptors close-on-exec.
    Fds,
    /// A new cgroup namespace rooted at the workload's cgroups.
    CgroupNs,
    /// `prctl(PR_SET_PDEATHSIG)`, or the parent was already gone.
    ParentDeath,
}

impl Step {
    const ALL: [Step; 21] = [
        Step::Sync,
        Step::Signals,
        Step::CapBounding,
        Step::Setgroups,
        Step::Setgid,
        Step::Setuid,
        Step::Capset,
        Step::Chdir,
        Step::NoNewPrivs,
        Step::Seccomp,
        Step::Exec,
        Step::Mounts,
        Step::Fork,
        Step::CgroupJoin,
        Step::IdMaps,
        Step::InitHarden,
        Step::Session,
        Step::Keyring,
        Step::Fds,
        Step::CgroupNs,
        Step::ParentDeath,
    ];

    fn from_u32(v: u32) -> Option<Step> {
        Step::ALL.into_iter().find(|s| *s as u32 == v)
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
            Step::Mounts => "setting up the workload's mounts",
            Step::Fork => "starting the command under moat's init",
            Step::CgroupJoin => "moving the command into its cgroups",
            Step::IdMaps => "writing the user namespace's id maps",
            Step::InitHarden => "protecting moat's init",
            Step::Session => "giving the command its own session and terminal",
            Step::Keyring => "joining a new session keyring",
            Step::Fds => "closing inherited descriptors",
            Step::CgroupNs => "creating the cgroup namespace",
            Step::ParentDeath => "setting the parent-death signal",
        }
    }
}

/// A report of the step that failed, its errno and a step-specific detail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Failure {
    /// The step.
    pub step: Step,
    /// The errno it failed with.
    pub errno: i32,
    /// Which part of the step (an index into the step's list), else 0.
    pub detail: u32,
}

impl Failure {
    /// Size of the encoded form.
    pub const SIZE: usize = 12;

    /// A failure without a detail.
    pub fn new(step: Step, errno: i32) -> Failure {
        Failure {
            step,
            errno,
            detail: 0,
        }
    }

    /// The fixed-size wire form.
    pub fn encode(self) -> [u8; Self::SIZE] {
        let mut b = [0u8; Self::SIZE];
        b[..4].copy_from_slice(&(self.step as u32).to_ne_bytes());
        b[4..8].copy_from_slice(&self.errno.to_ne_bytes());
        b[8..].copy_from_slice(&self.detail.to_ne_bytes());
        b
    }

    /// Decodes a report; `None` for a short or unknown one.
    pub fn decode(b: &[u8]) -> Option<Failure> {
        if b.len() != Self::SIZE {
            return None;
        }
        let word = |i: usize| b[i..i + 4].try_into().ok();
        let step = Step::from_u32(u32::from_ne_bytes(word(0)?))?;
        let errno = i32::from_ne_bytes(word(4)?);
        let detail = u32::from_ne_bytes(word(8)?);
        Some(Failure {
            step,
            errno,
            detail,
        })
    }

    /// The exit code of the process that reports it: 127 command not found,
    /// 126 not executable, 125 anything else.
    pub fn exit_code(self) -> i32 {
        match (self.step, self.errno) {
            (Step::Exec, libc::ENOENT) => 127,
            (Step::Exec, _) => 126,
            _ => 125,
        }
    }
}

/// The current thread's errno (EIO if there is none).
pub fn errno() -> i32 {
    std::io::Error::last_os_error()
        .raw_os_error()
        .unwrap_or(libc::EIO)
}

/// Writes `failure` to the report descriptor and leaves the process with
/// the matching exit code, without running destructors (this runs in a
/// forked copy of moat).
pub fn report_and_exit(report: libc::c_int, failure: Failure) -> ! {
    let msg = failure.encode();
    // SAFETY: writing a stack buffer to a descriptor we own.
    unsafe { libc::write(report, msg.as_ptr().cast(), msg.len()) };
    // SAFETY: leaving the forked process without the parent's destructors
    // or atexit handlers.
    unsafe { libc::_exit(failure.exit_code()) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_round_trip() {
        for step in Step::ALL {
            let f = Failure {
                step,
                errno: libc::EINVAL,
                detail: 7,
            };
            assert_eq!(Failure::decode(&f.encode()), Some(f));
        }
        assert_eq!(Failure::decode(&[1, 2, 3]), None);
        let mut unknown = [0u8; Failure::SIZE];
        unknown[0] = 99;
        assert_eq!(Failure::decode(&unknown), None);
    }

    #[test]
    fn exit_codes_follow_docker() {
        assert_eq!(Failure::new(Step::Exec, libc::ENOENT).exit_code(), 127);
        assert_eq!(Failure::new(Step::Exec, libc::EACCES).exit_code(), 126);
        assert_eq!(Failure::new(Step::Mounts, libc::ENOENT).exit_code(), 125);
    }
}
