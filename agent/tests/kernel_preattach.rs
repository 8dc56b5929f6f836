//! Threads that were already inside a syscall when the programs attached return
//! from it without a `sys_enter`: that exit must not count, whether the syscall
//! returns normally or with an error. Their later denials count exactly.

mod kernel_common;

use std::{
    fs,
    time::{Duration, Instant},
};

use kernel_common::{denials_of, named, spawn_in, Filter, TestCgroup, ARCH_X86_64};
use moat_agent::{
    kernel::Kernel,
    kernel::{DenialAction, KernelSource, Mechanism},
};

const K: i64 = 25;

extern "C" fn on_usr1(_: libc::c_int) {}

/// The syscall `pid` is blocked in, from /proc/<pid>/syscall, once it blocks.
fn wait_blocked_in(pid: libc::pid_t, nr: i64) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let text = fs::read_to_string(format!("/proc/{pid}/syscall")).unwrap_or_default();
        let state = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let sleeping = state
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('S'));
        if sleeping && text.split_whitespace().next() == Some(&nr.to_string()) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{pid} never blocked in syscall {nr}: {text}"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn a_thread_blocked_before_attach_gives_no_denial() {
    skip_unless_privileged!();
    let filter = Filter::allow_except(
        r#"{"names": ["getppid"], "action": "SCMP_ACT_ERRNO", "errnoRet": 13}"#,
    );
    let mut fds = [0; 2];
    // SAFETY: pipe with a valid array.
    assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
    let read_fd = fds[0];

    // Blocked in read(2) on a pipe; a signal without SA_RESTART makes it fail
    // with EINTR after the programs attach.
    let interrupted_cg = TestCgroup::v2("eintr");
    let mut interrupted = spawn_in(&[&interrupted_cg], |shared| {
        // SAFETY: a handler that does nothing, without SA_RESTART.
        unsafe {
            let mut action: libc::sigaction = std::mem::zeroed();
            action.sa_sigaction = on_usr1 as *const () as usize;
            libc::sigemptyset(&mut action.sa_mask);
            libc::sigaction(libc::SIGUSR1, &action, std::ptr::null_mut());
        }
        filter.install(false);
        let mut byte = 0u8;
        let ret = sys!(libc::SYS_read, read_fd, &mut byte as *mut u8, 1);
        kernel_common::report(shared, 0, ret);
        let denied = (0..K).filter(|_| sys!(libc::SYS_getppid) == -13).count();
        kernel_common::report(shared, 1, denied as i64);
        0
    });
    // Blocked in a read(2) that returns normally (one byte) once the
    // programs are attached: the byte is written only then, so the order
    // holds however long loading takes (seconds under emulation).
    let mut wake = [0; 2];
    // SAFETY: pipe with a valid array.
    assert_eq!(unsafe { libc::pipe(wake.as_mut_ptr()) }, 0);
    let wake_fd = wake[0];
    let sleeper_cg = TestCgroup::v2("sleep");
    let mut sleeper = spawn_in(&[&sleeper_cg], |shared| {
        filter.install(false);
        let mut byte = 0u8;
        let ret = sys!(libc::SYS_read, wake_fd, &mut byte as *mut u8, 1);
        kernel_common::report(shared, 0, ret);
        let denied = (0..K).filter(|_| sys!(libc::SYS_getppid) == -13).count();
        kernel_common::report(shared, 1, denied as i64);
        0
    });
    wait_blocked_in(interrupted.pid, libc::SYS_read);
    wait_blocked_in(sleeper.pid, libc::SYS_read);

    let kernel = Kernel::load(kernel_common::config()).expect("loading the kernel side");
    // SAFETY: signalling our own child; writing one byte to our own pipe.
    unsafe {
        libc::kill(interrupted.pid, libc::SIGUSR1);
        assert_eq!(libc::write(wake[1], [1u8].as_ptr().cast(), 1), 1);
    }
    interrupted.wait_success();
    sleeper.wait_success();
    assert_eq!(interrupted.value(0), -i64::from(libc::EINTR), "read result");
    assert_eq!(sleeper.value(0), 1, "read result");
    assert_eq!(interrupted.value(1), K);
    assert_eq!(sleeper.value(1), K);

    let snapshot = kernel.snapshot().expect("snapshot");
    let want = vec![(
        libc::SYS_getppid as i32,
        DenialAction::Errno,
        13,
        ARCH_X86_64,
        K as u64,
    )];
    assert_eq!(
        denials_of(&snapshot, interrupted_cg.id()),
        want,
        "EINTR child"
    );
    assert_eq!(
        denials_of(&snapshot, sleeper_cg.id()),
        want,
        "sleeping child"
    );
    // The pairing's own bookkeeping: it saw those exits and left them out.
    // (Under fexit there is no syscall exit to see, and nothing to leave out.)
    if kernel.tracing_mode().mechanism == Mechanism::Pairing {
        let ignored = kernel.ignored_exits().expect("ignored exits");
        assert!(named(&ignored, "unknown_thread") >= 2, "{ignored:?}");
    }
    // SAFETY: closing our own descriptors.
    unsafe {
        for fd in fds.into_iter().chain(wake) {
            libc::close(fd);
        }
    }
}
