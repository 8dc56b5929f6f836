//! User namespace creation through unshare, clone and clone3 is counted once
//! each; a refused unshare is not.

mod kernel_common;

use kernel_common::{events_of, spawn_in, TestCgroup};
use moat_agent::{
    kernel::Kernel,
    kernel::{KernelSource, ProcessEventKind as Kind},
};

use moat_runtime::launch::clone::CloneArgs;

/// Waits for a fork-like child that exits at once; returns whether it exited 0.
fn reap(pid: i64) -> bool {
    let mut status = 0;
    // SAFETY: waiting for our own child.
    unsafe { libc::waitpid(pid as libc::pid_t, &mut status, 0) };
    libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0
}

#[test]
fn user_namespaces_are_counted_once_per_creation() {
    skip_unless_privileged!();
    let kernel = Kernel::load(kernel_common::config()).expect("loading the kernel side");
    let cgroup = TestCgroup::v2("userns");
    let newuser = libc::CLONE_NEWUSER as i64;
    let mut child = spawn_in(&[&cgroup], |shared| {
        // clone(CLONE_NEWUSER | SIGCHLD): fork-like, the new process exits at once.
        let pid = sys!(
            libc::SYS_clone,
            newuser | i64::from(libc::SIGCHLD),
            0,
            0,
            0,
            0
        );
        if pid == 0 {
            // SAFETY: leave the new process immediately.
            unsafe { libc::_exit(0) };
        }
        kernel_common::report(shared, 0, i64::from(pid > 0 && reap(pid)));

        let args = CloneArgs {
            flags: newuser as u64,
            exit_signal: libc::SIGCHLD as u64,
            ..CloneArgs::default()
        };
        let size = std::mem::size_of::<CloneArgs>();
        let pid = sys!(libc::SYS_clone3, &args as *const CloneArgs, size);
        if pid == 0 {
            // SAFETY: as above.
            unsafe { libc::_exit(0) };
        }
        kernel_common::report(shared, 1, i64::from(pid > 0 && reap(pid)));

        // Refused while another thread exists: EINVAL, no namespace.
        let refused = std::thread::scope(|scope| {
            let (tx, rx) = std::sync::mpsc::channel::<()>();
            scope.spawn(move || {
                let _ = rx.recv();
            });
            let ret = sys!(libc::SYS_unshare, newuser);
            drop(tx);
            ret
        });
        kernel_common::report(shared, 2, refused);
        // Not a user namespace.
        kernel_common::report(shared, 3, sys!(libc::SYS_unshare, libc::CLONE_NEWUTS));
        // Single-threaded again (once the joined thread has left the thread group,
        // which is a little after join returns): succeeds.
        while std::fs::read_dir("/proc/self/task").map_or(0, |d| d.count()) > 1 {
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        kernel_common::report(shared, 4, sys!(libc::SYS_unshare, newuser));
        0
    });
    child.wait_success();
    assert_eq!(child.value(0), 1, "clone(CLONE_NEWUSER) child ran");
    assert_eq!(child.value(1), 1, "clone3(CLONE_NEWUSER) child ran");
    assert_eq!(
        child.value(2),
        -i64::from(libc::EINVAL),
        "unshare with two threads"
    );
    assert_eq!(child.value(3), 0, "unshare(CLONE_NEWUTS)");
    assert_eq!(child.value(4), 0, "unshare(CLONE_NEWUSER)");

    let snapshot = kernel.snapshot().expect("snapshot");
    let id = cgroup.id();
    assert_eq!(events_of(&snapshot, id, Kind::UsernsCreated, None), 3);
    assert_eq!(events_of(&snapshot, id, Kind::ForkProcess, None), 2);
    assert_eq!(events_of(&snapshot, id, Kind::ForkThread, None), 1);
    assert_eq!(events_of(&snapshot, id, Kind::ForkFailed, None), 0);
}

/// A user namespace made by `clone3(CLONE_NEWUSER | CLONE_INTO_CGROUP)` belongs
/// to the child, born in another cgroup than its parent (as `moat run
/// --userns auto` makes its workloads): it is counted in the child's cgroup,
/// and not in the parent's (which used to get it, `comm` and all).
#[test]
fn a_user_namespace_cloned_into_another_cgroup_is_counted_in_the_childs() {
    skip_unless_privileged!();
    let kernel = Kernel::load(kernel_common::config()).expect("loading the kernel side");
    let parent_cgroup = TestCgroup::v2("userns-parent");
    let child_cgroup = TestCgroup::v2("userns-child");
    let target = std::fs::File::open(&child_cgroup.path).unwrap();
    let target_fd = std::os::fd::AsRawFd::as_raw_fd(&target);
    const CLONE_INTO_CGROUP: u64 = 0x2_0000_0000;
    let mut child = spawn_in(&[&parent_cgroup], move |shared| {
        let args = CloneArgs {
            flags: libc::CLONE_NEWUSER as u64 | CLONE_INTO_CGROUP,
            exit_signal: libc::SIGCHLD as u64,
            cgroup: target_fd as u64,
            ..CloneArgs::default()
        };
        let size = std::mem::size_of::<CloneArgs>();
        let pid = sys!(libc::SYS_clone3, &args as *const CloneArgs, size);
        if pid == 0 {
            // SAFETY: leave the new process immediately.
            unsafe { libc::_exit(0) };
        }
        kernel_common::report(shared, 0, i64::from(pid > 0 && reap(pid)));
        0
    });
    child.wait_success();
    drop(target);
    assert_eq!(child.value(0), 1, "clone3 into the other cgroup ran");
    let snapshot = kernel.snapshot().expect("snapshot");
    assert_eq!(
        events_of(&snapshot, child_cgroup.id(), Kind::UsernsCreated, None),
        1,
        "in the child's cgroup"
    );
    assert_eq!(
        events_of(&snapshot, parent_cgroup.id(), Kind::UsernsCreated, None),
        0,
        "in the parent's cgroup"
    );
    // The fork itself is the parent's.
    assert_eq!(
        events_of(&snapshot, parent_cgroup.id(), Kind::ForkProcess, None),
        1
    );
}
