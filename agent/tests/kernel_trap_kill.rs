//! TRAP and KILL denials: the kernel's count equals what the workload saw.
//!
//! TRAP: a SIGSYS handler in the workload counts the signals it receives (with
//! `si_code == SYS_SECCOMP`), and the kernel count must equal it. KILL: every
//! flavour ends exactly one thread, and counts exactly one kill: KILL_PROCESS,
//! KILL_THREAD in a single-threaded process (both go through `sys_exit` with the
//! registers rolled back), and KILL_THREAD in a multi-threaded process, which exits
//! from the syscall entry path without reaching `sys_exit` at all.

mod kernel_common;

use std::{
    sync::atomic::{AtomicI64, Ordering},
    time::Duration,
};

use kernel_common::{denials_of, spawn_in, Filter, TestCgroup};
use moat_agent::{
    kernel::Kernel,
    kernel::{DenialAction, KernelSource},
};

const N: i64 = 1000;

fn getppid_filter(action: &str) -> Filter {
    Filter::allow_except(&format!(
        r#"{{"names": ["getppid"], "action": "{action}"}}"#
    ))
}

fn kernel() -> Kernel {
    Kernel::load(kernel_common::config()).expect("loading the kernel side")
}

#[test]
fn trap_count_equals_the_handlers_count() {
    skip_unless_privileged!();
    let kernel = kernel();
    let filter = getppid_filter("SCMP_ACT_TRAP");
    let cgroup = TestCgroup::v2("trap");
    let mut child = spawn_in(&[&cgroup], |shared| {
        kernel_common::sigsys::install_handler();
        filter.install(false);
        for _ in 0..N {
            sys!(libc::SYS_getppid);
        }
        kernel_common::report(shared, 0, kernel_common::sigsys::seen());
        0
    });
    child.wait_success();
    let handled = child.value(0);
    assert_eq!(handled, N, "SIGSYS signals the handler saw");
    let snapshot = kernel.snapshot().expect("snapshot");
    assert_eq!(
        denials_of(&snapshot, cgroup.id()),
        kernel_common::only_getppid(DenialAction::Trap, 0, handled as u64)
    );
}

/// Runs `body` in a child of its own cgroup under a filter that kills on
/// `getppid` with `action`; returns the cgroup, the wait status and what the child
/// reported.
fn killed_child(
    action: &str,
    tag: &str,
    body: impl FnOnce(&kernel_common::Shared) -> i32,
) -> (TestCgroup, i32, i64) {
    let filter = getppid_filter(action);
    let cgroup = TestCgroup::v2(tag);
    let mut child = spawn_in(&[&cgroup], |shared| {
        filter.install(false);
        body(shared)
    });
    let status = child.wait(Duration::from_secs(30));
    let reported = child.value(0);
    (cgroup, status, reported)
}

fn assert_one_kill(kernel: &Kernel, cgroup: &TestCgroup) {
    let snapshot = kernel.snapshot().expect("snapshot");
    assert_eq!(
        denials_of(&snapshot, cgroup.id()),
        kernel_common::only_getppid(DenialAction::Kill, 0, 1)
    );
}

#[test]
fn kill_process_counts_one_kill() {
    skip_unless_privileged!();
    let kernel = kernel();
    let (cgroup, status, _) = killed_child("SCMP_ACT_KILL_PROCESS", "killproc", |_| {
        // A second thread, blocked, dies with the process and is not a kill.
        std::thread::spawn(|| std::thread::sleep(Duration::from_secs(60)));
        sys!(libc::SYS_getppid);
        0
    });
    kernel_common::assert_killed_by_sigsys(status);
    assert_one_kill(&kernel, &cgroup);
}

#[test]
fn kill_thread_of_a_single_threaded_process_counts_one_kill() {
    skip_unless_privileged!();
    let kernel = kernel();
    let (cgroup, status, _) = killed_child("SCMP_ACT_KILL_THREAD", "killlast", |_| {
        sys!(libc::SYS_getppid);
        0
    });
    kernel_common::assert_killed_by_sigsys(status);
    assert_one_kill(&kernel, &cgroup);
}

#[test]
fn kill_thread_in_a_multithreaded_process_counts_one_kill() {
    skip_unless_privileged!();
    let kernel = kernel();
    let (cgroup, status, survived) = killed_child("SCMP_ACT_KILL_THREAD", "killthread", |shared| {
        // The thread dies inside getppid; the process lives on. (Not joined:
        // the thread never finishes its closure; wait for its tid to vanish.)
        let tid = std::sync::Arc::new(AtomicI64::new(0));
        let victim_tid = tid.clone();
        let victim = std::thread::spawn(move || {
            victim_tid.store(sys!(libc::SYS_gettid), Ordering::SeqCst);
            sys!(libc::SYS_getppid);
        });
        let pid = sys!(libc::SYS_getpid);
        loop {
            let tid = tid.load(Ordering::SeqCst);
            if tid != 0 && sys!(libc::SYS_tgkill, pid, tid, 0) == -i64::from(libc::ESRCH) {
                break;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        drop(victim);
        kernel_common::report(shared, 0, 1);
        0
    });
    assert!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "wait status {status:#x}"
    );
    assert_eq!(survived, 1, "the main thread outlived the killed one");
    assert_one_kill(&kernel, &cgroup);
}
