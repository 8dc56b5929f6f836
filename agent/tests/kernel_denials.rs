//! Seccomp ERRNO denials are counted exactly, per cgroup, syscall, errno and arch,
//! and reported as audit records.
//!
//! Each workload is a child forked from the test, placed in its own v2 cgroup,
//! that installs a filter compiled by moat's engine and calls denied syscalls a
//! known number of times.

mod kernel_common;

use std::{
    fs,
    time::{Duration, Instant},
};

use kernel_common::{
    denials_of, named, spawn_in, Child, Filter, TestCgroup, ARCH_I386, ARCH_X86_64,
};
use moat_agent::{
    kernel::Kernel,
    kernel::{AuditKind, DenialAction, KernelSource},
};

const N: i64 = 1000;

#[test]
fn errno_denials_are_counted_exactly() {
    skip_unless_privileged!();
    let mut kernel = Kernel::load(kernel_common::config()).expect("loading the kernel side");
    let mut reader = kernel.audit_reader().expect("audit reader");
    let filter = Filter::allow_except(
        r#"{"names": ["getppid"], "action": "SCMP_ACT_ERRNO", "errnoRet": 13},
           {"names": ["getpgrp"], "action": "SCMP_ACT_ERRNO"}"#,
    );
    let cgroup = TestCgroup::v2("errno");
    let started = Instant::now();

    let mut child = Child::fork(|shared| {
        filter.install(false);
        let mut eacces = 0;
        let mut eperm = 0;
        for _ in 0..N {
            if sys!(libc::SYS_getppid) == -i64::from(libc::EACCES) {
                eacces += 1;
            }
            if sys!(libc::SYS_getpgrp) == -i64::from(libc::EPERM) {
                eperm += 1;
            }
        }
        kernel_common::report(shared, 0, eacces);
        kernel_common::report(shared, 1, eperm);
        0
    });
    cgroup.add(child.pid);
    let comm = fs::read_to_string(format!("/proc/{}/comm", child.pid))
        .expect("reading the child's comm")
        .trim_end()
        .to_owned();
    child.start();
    child.wait_success();
    let elapsed = started.elapsed();
    assert_eq!(child.value(0), N, "getppid calls that failed with EACCES");
    assert_eq!(child.value(1), N, "getpgrp calls that failed with EPERM");

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
                N as u64
            ),
        ]
    );

    // Audit records: the burst, then the rate, and each names the child.
    let mut records = Vec::new();
    while let Some(record) = reader.try_next() {
        if record.cgroup_id == cgroup.id() {
            records.push(record);
        }
    }
    let config = kernel_common::config();
    let budget = u64::from(config.audit_burst)
        + (elapsed.as_secs_f64() * f64::from(config.audit_rate_per_sec)).ceil() as u64
        + 1;
    let delivered = records.len() as u64;
    assert!(
        delivered >= u64::from(config.audit_burst) && delivered <= budget,
        "{delivered} records delivered for {} denials in {elapsed:?} (budget {budget})",
        2 * N
    );
    for record in &records {
        assert_eq!(record.pid, child.pid as u32);
        assert_eq!(record.tid, child.pid as u32);
        assert_eq!(record.comm, comm);
        match record.kind {
            AuditKind::SeccompDenied {
                arch,
                syscall_nr,
                action,
                errno,
            } => {
                assert_eq!(arch, ARCH_X86_64);
                assert_eq!(action, DenialAction::Errno);
                let want = if i64::from(syscall_nr) == libc::SYS_getppid {
                    13
                } else {
                    assert_eq!(i64::from(syscall_nr), libc::SYS_getpgrp);
                    1
                };
                assert_eq!(errno, want);
            }
            other => panic!("unexpected record {other:?}"),
        }
    }
    // Records are in submission order on one CPU at a time: boot times never go back
    // by more than a cross-CPU skew.
    assert!(records
        .windows(2)
        .all(|w| w[1].boot_ns + 1_000_000 >= w[0].boot_ns));
    let dropped = named(&snapshot.audit_dropped, "rate_limited");
    assert!(
        dropped >= 2 * N as u64 - delivered,
        "{dropped} rate-limited drops for {} undelivered records",
        2 * N as u64 - delivered
    );
    assert_eq!(named(&snapshot.map_full, "denials"), 0);
}

/// The i386 `getppid`, through `int 0x80` from this 64-bit process.
#[cfg(target_arch = "x86_64")]
fn i386_getppid() -> i32 {
    kernel_common::i386::syscall3(I386_GETPPID, 0, 0, 0) as i32
}

#[cfg(target_arch = "x86_64")]
const I386_GETPPID: i64 = kernel_common::i386::GETPPID;

/// A 32-bit syscall refused by the same profile is counted under `AUDIT_ARCH_I386`
/// with the i386 number; under a native-only filter it is killed (libseccomp's
/// bad-arch action), which counts as one kill under i386.
#[test]
#[cfg(target_arch = "x86_64")]
fn compat_syscalls_are_counted_under_i386() {
    skip_unless_privileged!();
    let kernel = Kernel::load(kernel_common::config()).expect("loading the kernel side");
    let rule = r#"{"names": ["getppid"], "action": "SCMP_ACT_ERRNO", "errnoRet": 13}"#;
    let filter = Filter::allow_except(rule);
    let cgroup = TestCgroup::v2("compat");
    let mut child = spawn_in(&[&cgroup], |shared| {
        filter.install(false);
        let denied = (0..N).filter(|_| i386_getppid() == -libc::EACCES).count();
        kernel_common::report(shared, 0, denied as i64);
        0
    });
    child.wait_success();
    assert_eq!(
        child.value(0),
        N,
        "int 0x80 getppid calls refused with EACCES"
    );
    let snapshot = kernel.snapshot().expect("snapshot");
    assert_eq!(
        denials_of(&snapshot, cgroup.id()),
        vec![(
            I386_GETPPID as i32,
            DenialAction::Errno,
            13,
            ARCH_I386,
            N as u64
        )]
    );

    let native_only = Filter::native_only_allow_except(rule);
    let killed = TestCgroup::v2("badarch");
    let mut child = spawn_in(&[&killed], |_| {
        native_only.install(false);
        i386_getppid();
        0
    });
    let status = child.wait(Duration::from_secs(30));
    kernel_common::assert_killed_by_sigsys(status);
    let snapshot = kernel.snapshot().expect("snapshot");
    assert_eq!(
        denials_of(&snapshot, killed.id()),
        vec![(I386_GETPPID as i32, DenialAction::Kill, 0, ARCH_I386, 1)]
    );
}

/// The counts of a second load start from zero and do not disturb the first.
#[test]
fn two_loads_count_independently() {
    skip_unless_privileged!();
    let first = Kernel::load(kernel_common::config()).expect("first load");
    let filter = Filter::allow_except(
        r#"{"names": ["getppid"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1}"#,
    );
    let cgroup = TestCgroup::v2("twice");
    let run = |times: i64| {
        let mut child = spawn_in(&[&cgroup], |_| {
            filter.install(false);
            for _ in 0..times {
                sys!(libc::SYS_getppid);
            }
            0
        });
        child.wait_success();
    };
    run(10);
    let second = Kernel::load(kernel_common::config()).expect("second load");
    run(5);
    let count = |kernel: &Kernel| {
        denials_of(&kernel.snapshot().expect("snapshot"), cgroup.id())
            .iter()
            .map(|d| d.4)
            .sum::<u64>()
    };
    assert_eq!(count(&first), 15);
    assert_eq!(count(&second), 5);
    drop(second);
    run(1);
    assert_eq!(count(&first), 16);
    // Let a moment pass to be sure nothing is pending.
    std::thread::sleep(Duration::from_millis(10));
    assert_eq!(count(&first), 16);
}
