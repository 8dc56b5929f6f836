//! Denials in secondary threads are counted exactly and attributed to the
//! thread's cgroup, with the thread's id in the audit records.

mod kernel_common;

use std::sync::{
    atomic::{AtomicI64, Ordering},
    Arc, Barrier,
};

use kernel_common::{denials_of, spawn_in, Filter, TestCgroup, ARCH_X86_64};
use moat_agent::{
    kernel::{AuditKind, DenialAction, KernelSource},
    kernel::{Kernel, KernelConfig},
};

const N: i64 = 3000;
const M: i64 = 2000;

fn filter() -> Filter {
    Filter::allow_except(
        r#"{"names": ["getppid"], "action": "SCMP_ACT_ERRNO", "errnoRet": 13},
           {"names": ["getpgrp"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1}"#,
    )
}

/// A burst large enough that every record of the test is delivered.
fn kernel() -> Kernel {
    Kernel::load(KernelConfig {
        audit_burst: 100_000,
        ..kernel_common::config()
    })
    .expect("loading the kernel side")
}

/// A thread calls getppid N times while the main thread calls getpgrp M times;
/// with `tsync`, the thread exists before the filter, which the main thread
/// installs on every thread.
fn run(tsync: bool, tag: &str) {
    let mut kernel = kernel();
    let mut reader = kernel.audit_reader().expect("audit reader");
    let filter = filter();
    let cgroup = TestCgroup::v2(tag);
    let mut child = spawn_in(&[&cgroup], |shared| {
        if !tsync {
            filter.install(false);
        }
        let barrier = Arc::new(Barrier::new(2));
        let tid = Arc::new(AtomicI64::new(0));
        let thread = {
            let (barrier, tid) = (barrier.clone(), tid.clone());
            std::thread::spawn(move || {
                tid.store(sys!(libc::SYS_gettid), Ordering::SeqCst);
                barrier.wait();
                (0..N)
                    .filter(|_| sys!(libc::SYS_getppid) == -i64::from(libc::EACCES))
                    .count() as i64
            })
        };
        if tsync {
            filter.install(true);
        }
        barrier.wait();
        let main = (0..M)
            .filter(|_| sys!(libc::SYS_getpgrp) == -i64::from(libc::EPERM))
            .count() as i64;
        let thread = thread.join().expect("thread");
        kernel_common::report(shared, 0, thread);
        kernel_common::report(shared, 1, main);
        kernel_common::report(shared, 2, tid.load(Ordering::SeqCst));
        0
    });
    child.wait_success();
    assert_eq!(child.value(0), N, "denials the thread saw");
    assert_eq!(child.value(1), M, "denials the main thread saw");
    let thread_tid = child.value(2) as u32;
    let pid = child.pid as u32;
    assert_ne!(thread_tid, pid);

    let snapshot = kernel.snapshot().expect("snapshot");
    assert_eq!(
        denials_of(&snapshot, cgroup.id()),
        vec![
            (
                libc::SYS_getppid as i32,
                DenialAction::Errno,
                13,
                ARCH_X86_64,
                N as u64
            ),
            (
                libc::SYS_getpgrp as i32,
                DenialAction::Errno,
                1,
                ARCH_X86_64,
                M as u64
            ),
        ]
    );

    let (mut from_thread, mut from_main) = (0, 0);
    while let Some(record) = reader.try_next() {
        if record.cgroup_id != cgroup.id() {
            continue;
        }
        assert_eq!(record.pid, pid);
        let AuditKind::SeccompDenied { syscall_nr, .. } = record.kind else {
            panic!("unexpected record {record:?}");
        };
        if i64::from(syscall_nr) == libc::SYS_getppid {
            assert_eq!(record.tid, thread_tid);
            from_thread += 1;
        } else {
            assert_eq!(record.tid, pid);
            from_main += 1;
        }
    }
    assert_eq!((from_thread, from_main), (N, M), "audit records by thread");
}

#[test]
fn denials_in_a_secondary_thread_are_attributed_exactly() {
    skip_unless_privileged!();
    run(false, "threads");
}

#[test]
fn denials_after_tsync_are_attributed_exactly() {
    skip_unless_privileged!();
    run(true, "tsync");
}
