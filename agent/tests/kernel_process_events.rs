//! Process events per cgroup: forks (process and thread), execs, exits and failed
//! forks, counted exactly for a workload whose every fork is known.

mod kernel_common;

use std::{ffi::CString, fs, path::Path, time::Duration};

use kernel_common::{events_of, spawn_in, TestCgroup};
use moat_agent::{
    kernel::Kernel,
    kernel::{KernelSnapshot, KernelSource, ProcessEventKind as Kind},
};

const N: i64 = 12;
const M: i64 = 7;

fn kernel() -> Kernel {
    Kernel::load(kernel_common::config()).expect("loading the kernel side")
}

/// `vfork` and, in the child, `exit(0)` at once: written in assembly because the
/// child borrows the parent's stack and must not call or return through it.
#[cfg(target_arch = "x86_64")]
fn vfork_and_exit() -> i64 {
    let ret: i64;
    // SAFETY: raw vfork; the child only issues exit(0) from registers.
    unsafe {
        std::arch::asm!(
            "syscall",
            "test rax, rax",
            "jnz 2f",
            "mov eax, 60",
            "xor edi, edi",
            "syscall",
            "2:",
            inlateout("rax") libc::SYS_vfork => ret,
            out("rcx") _, out("rdi") _, out("r11") _,
        );
    }
    ret
}

fn all_of(snapshot: &KernelSnapshot, cgroup: u64) -> Vec<(Kind, u16, u64)> {
    let mut v: Vec<_> = snapshot
        .process_events
        .iter()
        .filter(|e| e.cgroup_id == cgroup && e.count > 0)
        .map(|e| (e.kind, e.errno, e.count))
        .collect();
    v.sort();
    v
}

/// N fork+exec of /bin/true, one vfork, M threads and one clone refused with
/// EINVAL: every event counted exactly once, in the workload's cgroup.
#[test]
fn forks_threads_execs_and_exits_are_counted_exactly() {
    skip_unless_privileged!();
    let kernel = kernel();
    let cgroup = TestCgroup::v2("procs");
    let program = CString::new("/bin/true").expect("no NUL");
    let argv = [program.as_ptr(), std::ptr::null()];
    let mut child = spawn_in(&[&cgroup], |shared| {
        let mut ok = 0;
        for _ in 0..N {
            // SAFETY: the child only execs or exits.
            let pid = unsafe { libc::fork() };
            if pid == 0 {
                // SAFETY: NUL-terminated program and argument vector that
                // outlive the call; the child leaves with _exit if exec fails.
                unsafe {
                    libc::execv(program.as_ptr(), argv.as_ptr());
                    libc::_exit(127);
                }
            }
            let mut status = 0;
            // SAFETY: waiting for our own child.
            unsafe { libc::waitpid(pid, &mut status, 0) };
            if libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0 {
                ok += 1;
            }
        }
        kernel_common::report(shared, 0, ok);
        let vforked = vfork_and_exit();
        let mut status = 0;
        // SAFETY: waiting for our own child.
        unsafe { libc::waitpid(vforked as libc::pid_t, &mut status, 0) };
        kernel_common::report(shared, 1, vforked);
        for _ in 0..M {
            std::thread::spawn(|| ()).join().expect("thread");
        }
        // CLONE_THREAD without CLONE_SIGHAND is refused before anything is created.
        let refused = sys!(libc::SYS_clone, libc::CLONE_THREAD, 0, 0, 0, 0);
        kernel_common::report(shared, 2, refused);
        0
    });
    child.wait_success();
    assert_eq!(child.value(0), N, "/bin/true runs that succeeded");
    assert!(child.value(1) > 0, "vfork: {}", child.value(1));
    assert_eq!(child.value(2), -i64::from(libc::EINVAL));

    let snapshot = kernel.snapshot().expect("snapshot");
    let n = N as u64;
    let m = M as u64;
    assert_eq!(
        all_of(&snapshot, cgroup.id()),
        vec![
            (Kind::ForkProcess, 0, n + 1),
            (Kind::ForkThread, 0, m),
            (Kind::Exec, 0, n),
            // Every /bin/true, the vfork child and the workload itself; not threads.
            (Kind::Exit, 0, n + 2),
            (Kind::ForkFailed, libc::EINVAL as u16, 1),
        ]
    );
}

/// A non-leader thread execs while the leader runs in user space: the exec
/// returns under the leader's pid (the kernel swaps them), which must neither
/// look like an unpaired exit (a false denial) nor lose the exec.
#[test]
fn exec_from_a_secondary_thread_is_one_exec_and_no_denial() {
    skip_unless_privileged!();
    let kernel = kernel();
    let cgroup = TestCgroup::v2("threadexec");
    let program = CString::new("/bin/true").expect("no NUL");
    let argv = [program.as_ptr(), std::ptr::null()];
    let (program_ptr, argv_ptr) = (program.as_ptr() as usize, argv.as_ptr() as usize);
    // Under a filter: a task without one is never classified at all.
    let filter = kernel_common::Filter::allow_except(
        r#"{"names": ["getpgrp"], "action": "SCMP_ACT_ERRNO"}"#,
    );
    let mut child = spawn_in(&[&cgroup], |_| {
        filter.install(false);
        let spin = std::sync::atomic::AtomicBool::new(true);
        std::thread::scope(|scope| {
            scope.spawn(|| {
                // SAFETY: pointers to a NUL-terminated path and a NULL-terminated
                // argv that outlive the call (exec replaces the process).
                unsafe {
                    libc::execv(
                        program_ptr as *const libc::c_char,
                        argv_ptr as *const *const libc::c_char,
                    );
                }
                spin.store(false, std::sync::atomic::Ordering::SeqCst);
            });
            // The leader stays in user space, outside any syscall, until the
            // exec kills it.
            while spin.load(std::sync::atomic::Ordering::SeqCst) {
                std::hint::spin_loop();
            }
        });
        1
    });
    child.wait_success();
    let snapshot = kernel.snapshot().expect("snapshot");
    assert_eq!(kernel_common::denials_of(&snapshot, cgroup.id()), vec![]);
    assert_eq!(
        all_of(&snapshot, cgroup.id()),
        vec![
            (Kind::ForkThread, 0, 1),
            (Kind::Exec, 0, 1),
            (Kind::Exit, 0, 1)
        ]
    );
}

/// A fork bomb against a pids limit (cgroup v1 `pids` on hybrid hosts, the
/// v2 cgroup's own `pids.max` on v2-only hosts): every fork the pids
/// controller refuses is counted with EAGAIN.
#[test]
fn a_fork_bomb_under_a_pids_limit_counts_eagain() {
    skip_unless_privileged!();
    const LIMIT: u32 = 20;
    const ATTEMPTS: usize = 60;
    let v1 = Path::new("/sys/fs/cgroup/pids/cgroup.procs").exists();
    let cgroup = TestCgroup::v2("bomb");
    let pids = if v1 {
        Some(TestCgroup::v1_pids("bomb", LIMIT))
    } else if cgroup.path.join("pids.max").exists() {
        fs::write(cgroup.path.join("pids.max"), LIMIT.to_string()).expect("setting pids.max");
        None
    } else {
        eprintln!(
            "SKIP: no pids controller: no v1 pids hierarchy, and pids is not enabled in the \
             v2 root's cgroup.subtree_control"
        );
        return;
    };
    let kernel = kernel();
    let groups: Vec<&TestCgroup> = pids.iter().chain([&cgroup]).collect();
    let mut child = spawn_in(&groups, |shared| {
        let mut children = Vec::with_capacity(ATTEMPTS);
        let (mut eagain, mut other) = (0, 0);
        for _ in 0..ATTEMPTS {
            // SAFETY: the new process only sleeps until killed.
            let pid = unsafe { libc::fork() };
            match pid {
                0 => loop {
                    // SAFETY: pause(2).
                    unsafe { libc::pause() };
                },
                -1 => {
                    if std::io::Error::last_os_error().raw_os_error() == Some(libc::EAGAIN) {
                        eagain += 1;
                    } else {
                        other += 1;
                    }
                }
                pid => children.push(pid),
            }
        }
        kernel_common::report(shared, 0, eagain);
        kernel_common::report(shared, 1, other);
        kernel_common::report(shared, 2, children.len() as i64);
        for &pid in &children {
            // SAFETY: killing and reaping our own children.
            unsafe {
                libc::kill(pid, libc::SIGKILL);
                libc::waitpid(pid, std::ptr::null_mut(), 0);
            }
        }
        0
    });
    child.wait_success();
    let eagain = child.value(0);
    assert_eq!(child.value(1), 0, "forks failing with another errno");
    assert_eq!(child.value(2), i64::from(LIMIT) - 1, "forks that succeeded");
    assert_eq!(eagain, ATTEMPTS as i64 - i64::from(LIMIT) + 1);
    std::thread::sleep(Duration::from_millis(10));
    let snapshot = kernel.snapshot().expect("snapshot");
    assert_eq!(
        events_of(
            &snapshot,
            cgroup.id(),
            Kind::ForkFailed,
            Some(libc::EAGAIN as u16)
        ),
        eagain as u64
    );
    assert_eq!(
        events_of(&snapshot, cgroup.id(), Kind::ForkFailed, None),
        eagain as u64,
        "no fork failure with another errno"
    );
    assert_eq!(
        events_of(&snapshot, cgroup.id(), Kind::ForkProcess, None),
        u64::from(LIMIT) - 1
    );
}
