//! Genuine syscall errors are never counted as denials: they reach `sys_enter`, so
//! their exits are paired, whatever they return, with or without a seccomp filter.

mod kernel_common;

use std::{ffi::CString, fs, os::unix::fs::PermissionsExt as _};

use kernel_common::{denials_of, spawn_in, Filter, TestCgroup, ARCH_X86_64};
use moat_agent::{
    kernel::Kernel,
    kernel::{DenialAction, KernelSource},
};

const N: i64 = 5000;
/// Denied calls made by the confined variant, to show the filter is active.
const DENIED: i64 = 7;
const NOBODY: i64 = 65534;

/// As nobody: `setuid(0)` (EPERM), `open` of a root-only file (EACCES) and
/// `kill(1, 0)` (EPERM), N times each; then, if confined, `getppid` DENIED times.
fn genuine_errors(filter: Option<Filter>, tag: &str) {
    let kernel = Kernel::load(kernel_common::config()).expect("loading the kernel side");
    // A file in the (world-traversable) temporary directory, removed on drop.
    let secret_file = tempfile::Builder::new()
        .prefix(&format!("moat-ktest-{tag}-"))
        .tempfile()
        .expect("creating the root-only file");
    let secret = secret_file.path().to_owned();
    fs::write(&secret, "secret").expect("writing the root-only file");
    fs::set_permissions(&secret, fs::Permissions::from_mode(0o600)).expect("chmod 0600");
    let path = CString::new(secret.to_str().expect("utf-8 path")).expect("no NUL");
    let cgroup = TestCgroup::v2(tag);

    let mut child = spawn_in(&[&cgroup], |shared| {
        if let Some(filter) = &filter {
            filter.install(false);
        }
        assert_eq!(sys!(libc::SYS_setresuid, NOBODY, NOBODY, NOBODY), 0);
        let (mut eperm, mut eacces, mut ekill) = (0, 0, 0);
        for _ in 0..N {
            if sys!(libc::SYS_setuid, 0) == -i64::from(libc::EPERM) {
                eperm += 1;
            }
            if sys!(libc::SYS_open, path.as_ptr(), libc::O_RDONLY) == -i64::from(libc::EACCES) {
                eacces += 1;
            }
            if sys!(libc::SYS_kill, 1, 0) == -i64::from(libc::EPERM) {
                ekill += 1;
            }
        }
        if filter.is_some() {
            for _ in 0..DENIED {
                sys!(libc::SYS_getppid);
            }
        }
        kernel_common::report(shared, 0, eperm);
        kernel_common::report(shared, 1, eacces);
        kernel_common::report(shared, 2, ekill);
        0
    });
    child.wait_success();
    assert_eq!(child.value(0), N, "setuid(0) calls failing with EPERM");
    assert_eq!(child.value(1), N, "open calls failing with EACCES");
    assert_eq!(child.value(2), N, "kill(1, 0) calls failing with EPERM");

    let snapshot = kernel.snapshot().expect("snapshot");
    let want = if filter.is_some() {
        vec![(
            libc::SYS_getppid as i32,
            DenialAction::Errno,
            13,
            ARCH_X86_64,
            DENIED as u64,
        )]
    } else {
        vec![]
    };
    assert_eq!(denials_of(&snapshot, cgroup.id()), want);
}

/// `cgroup` has no denials, and (under the pairing, which sees those exits
/// and leaves them out; fexit never sees them) at least `min` unpaired exits
/// were ignored for `reason` (node-wide).
#[track_caller]
fn assert_ignored_not_counted(kernel: &Kernel, cgroup: &TestCgroup, reason: &str, min: u64) {
    let snapshot = kernel.snapshot().expect("snapshot");
    assert_eq!(denials_of(&snapshot, cgroup.id()), vec![]);
    if kernel.tracing_mode().mechanism == moat_agent::kernel::Mechanism::Pairing {
        let ignored = kernel.ignored_exits().expect("ignored exits");
        assert!(kernel_common::named(&ignored, reason) >= min, "{ignored:?}");
    }
}

#[test]
fn genuine_errors_unconfined_are_not_denials() {
    skip_unless_privileged!();
    genuine_errors(None, "unconfined");
}

#[test]
fn genuine_errors_under_a_filter_are_not_denials() {
    skip_unless_privileged!();
    let filter = Filter::allow_except(
        r#"{"names": ["getppid"], "action": "SCMP_ACT_ERRNO", "errnoRet": 13}"#,
    );
    genuine_errors(Some(filter), "confined");
}

use moat_runtime::launch::clone::CloneArgs;

/// A new task's first return (0 from fork/clone) has no `sys_enter`. Here it gets
/// the pid of a process that was seen making syscalls (so its slot says "outside a
/// syscall"), through clone3's `set_tid`: that first return must still not count.
#[test]
fn a_new_task_reusing_a_pid_is_not_a_denial() {
    skip_unless_privileged!();
    let kernel = Kernel::load(kernel_common::config()).expect("loading the kernel side");
    let cgroup = TestCgroup::v2("reuse");
    // Under a filter: a task without one is never classified at all.
    let filter = Filter::allow_except(r#"{"names": ["getpgrp"], "action": "SCMP_ACT_ERRNO"}"#);
    let mut child = spawn_in(&[&cgroup], |shared| {
        filter.install(false);
        // SAFETY: the new process makes a few syscalls and exits.
        let first = unsafe { libc::fork() };
        if first == 0 {
            for _ in 0..3 {
                sys!(libc::SYS_getppid);
            }
            // SAFETY: leave at once.
            unsafe { libc::_exit(0) };
        }
        // SAFETY: reaping our own child frees its pid.
        unsafe { libc::waitpid(first, std::ptr::null_mut(), 0) };
        let tid: libc::pid_t = first;
        let args = CloneArgs {
            exit_signal: libc::SIGCHLD as u64,
            set_tid: &tid as *const libc::pid_t as u64,
            set_tid_size: 1,
            ..CloneArgs::default()
        };
        let size = std::mem::size_of::<CloneArgs>();
        let second = sys!(libc::SYS_clone3, &args as *const CloneArgs, size);
        if second == 0 {
            // SAFETY: leave at once.
            unsafe { libc::_exit(0) };
        }
        if second > 0 {
            // SAFETY: reaping our own child.
            unsafe { libc::waitpid(second as libc::pid_t, std::ptr::null_mut(), 0) };
        }
        kernel_common::report(shared, 0, i64::from(first));
        kernel_common::report(shared, 1, second);
        0
    });
    child.wait_success();
    assert_eq!(child.value(1), child.value(0), "clone3 reused the pid");
    assert_ignored_not_counted(&kernel, &cgroup, "new_task", 1);
}

/// Runs a tracee that makes EMULATED `getppid` calls under `PTRACE_SYSEMU` (how
/// UML and gVisor's ptrace platform run a process): each is skipped after the entry
/// stop, without `sys_enter`, and returns -ENOSYS, just like a seccomp ERRNO. At
/// its `exit_group` (skipped too) the tracer either kills the tracee or detaches
/// (then glibc's `_exit` falls back to `exit`, which runs).
///
/// With `threaded`, the tracee first starts a thread and joins it: a thread
/// that was not alone at its last check is never in the pairing's no-filter
/// state, so its exits are examined.
#[cfg(target_arch = "x86_64")]
fn sysemu_tracee(
    filter: Option<Filter>,
    detach: bool,
    threaded: bool,
    tag: &str,
) -> (TestCgroup, Kernel) {
    const PTRACE_SYSEMU: libc::c_uint = 31;
    let kernel = Kernel::load(kernel_common::config()).expect("loading the kernel side");
    let cgroup = TestCgroup::v2(tag);
    let mut child = spawn_in(&[&cgroup], |shared| {
        // SAFETY: the tracee stops itself, makes EMULATED syscalls and exits.
        let tracee = unsafe { libc::fork() };
        if tracee == 0 {
            if let Some(filter) = &filter {
                filter.install(false);
            }
            if threaded {
                std::thread::spawn(|| ())
                    .join()
                    .expect("joining the thread");
            }
            // SAFETY: integer arguments only; the child stops for its tracer.
            unsafe {
                libc::ptrace(libc::PTRACE_TRACEME, 0, 0, 0);
                libc::raise(libc::SIGSTOP);
                for _ in 0..EMULATED {
                    libc::syscall(libc::SYS_getppid);
                }
                libc::_exit(0);
            }
        }
        let mut status = 0;
        let mut stops = 0;
        // SAFETY: tracing our own child.
        unsafe {
            libc::waitpid(tracee, &mut status, 0);
            loop {
                libc::ptrace(PTRACE_SYSEMU, tracee, 0, 0);
                libc::waitpid(tracee, &mut status, 0);
                if !libc::WIFSTOPPED(status) {
                    break;
                }
                stops += 1;
                let mut regs: libc::user_regs_struct = std::mem::zeroed();
                libc::ptrace(libc::PTRACE_GETREGS, tracee, 0, &mut regs);
                if regs.orig_rax == libc::SYS_exit_group as u64 {
                    if detach {
                        libc::ptrace(libc::PTRACE_DETACH, tracee, 0, 0);
                    } else {
                        libc::kill(tracee, libc::SIGKILL);
                    }
                    libc::waitpid(tracee, &mut status, 0);
                    break;
                }
            }
        }
        kernel_common::report(shared, 0, stops);
        0
    });
    child.wait_success();
    assert!(
        child.value(0) > EMULATED,
        "syscall stops: {}",
        child.value(0)
    );
    (cgroup, kernel)
}

#[cfg(target_arch = "x86_64")]
const EMULATED: i64 = 10;

/// A traced task's unpaired exits never count (the tracer may have skipped the
/// syscall), even when it has a filter.
#[test]
#[cfg(target_arch = "x86_64")]
fn syscalls_skipped_by_a_tracer_are_not_denials() {
    skip_unless_privileged!();
    let filter = Filter::allow_except(r#"{"names": ["getpgrp"], "action": "SCMP_ACT_ERRNO"}"#);
    let (cgroup, kernel) = sysemu_tracee(Some(filter), false, false, "sysemu");
    assert_ignored_not_counted(&kernel, &cgroup, "ptraced", EMULATED as u64);
}

/// A tracer that detaches at the entry stop leaves the skipped syscall to return
/// untraced: without a filter it cannot be a seccomp denial, and is not counted.
/// The tracee's thread is not alone at its last check, so the pairing examines
/// the exit and finds no filter.
#[test]
#[cfg(target_arch = "x86_64")]
fn a_syscall_skipped_before_the_tracer_detached_is_not_a_denial() {
    skip_unless_privileged!();
    let (cgroup, kernel) = sysemu_tracee(None, true, true, "detach");
    assert_ignored_not_counted(&kernel, &cgroup, "no_filter", 1);
}

/// The same with a single-threaded tracee, which the pairing has in its
/// no-filter state: its exits are not examined at all, and nothing is counted.
#[test]
#[cfg(target_arch = "x86_64")]
fn a_skipped_syscall_of_a_thread_in_the_no_filter_state_is_not_a_denial() {
    skip_unless_privileged!();
    let (cgroup, kernel) = sysemu_tracee(None, true, false, "detach-alone");
    assert_ignored_not_counted(&kernel, &cgroup, "no_filter", 0);
}
