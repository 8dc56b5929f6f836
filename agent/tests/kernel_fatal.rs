//! The `fatal` tier (`[tracing] denials = "fatal"`): TRAP and KILL counted
//! exactly from `signal_generate` and the exit tracepoint, ERRNO not counted,
//! a SIGSYS a process forges for itself not counted, and no program on the
//! syscall tracepoints.
//!
//! Every test in this binary loads the fatal tier only, so the links the
//! process holds are all of that tier.

mod kernel_common;

use std::time::Duration;

use kernel_common::{denials_of, named, spawn_in, Filter, TestCgroup, ARCH_X86_64};
use moat_agent::kernel::{
    DenialAction, DenialTier, Kernel, KernelConfig, KernelSource, Mechanism, MechanismChoice,
};

const TRAPS: i64 = 300;
const ERRNOS: i64 = 200;

fn fatal() -> Kernel {
    let kernel = Kernel::load(KernelConfig {
        denials: DenialTier::Fatal,
        mechanism: MechanismChoice::Auto,
        ..KernelConfig::default()
    })
    .expect("loading the kernel side, fatal tier");
    assert_eq!(kernel.tracing_mode().tier, DenialTier::Fatal);
    assert_eq!(kernel.tracing_mode().mechanism, Mechanism::Signal);
    kernel
}

/// getppid is trapped, getuid refused with EPERM, gettid killed (process).
fn mixed_filter() -> Filter {
    Filter::allow_except(
        r#"{"names": ["getppid"], "action": "SCMP_ACT_TRAP"},
           {"names": ["getuid"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1},
           {"names": ["gettid"], "action": "SCMP_ACT_KILL_PROCESS"}"#,
    )
}

#[test]
fn trap_and_kill_are_counted_exactly_and_errno_not_at_all() {
    skip_unless_privileged!();
    let kernel = fatal();
    let filter = mixed_filter();
    let cgroup = TestCgroup::v2("fatal-mixed");
    let mut child = spawn_in(&[&cgroup], |shared| {
        kernel_common::sigsys::install_handler();
        filter.install(false);
        let mut refused = 0;
        for _ in 0..ERRNOS {
            if sys!(libc::SYS_getuid) == -i64::from(libc::EPERM) {
                refused += 1;
            }
        }
        for _ in 0..TRAPS {
            sys!(libc::SYS_getppid);
        }
        kernel_common::report(shared, 0, kernel_common::sigsys::seen());
        kernel_common::report(shared, 1, refused);
        // The process dies here: one KILL.
        sys!(libc::SYS_gettid);
        0
    });
    let status = child.wait(Duration::from_secs(30));
    kernel_common::assert_killed_by_sigsys(status);
    assert_eq!(child.value(0), TRAPS, "SIGSYS signals the handler saw");
    assert_eq!(child.value(1), ERRNOS, "getuid calls refused with EPERM");
    let snapshot = kernel.snapshot().expect("snapshot");
    assert_eq!(
        denials_of(&snapshot, cgroup.id()),
        vec![
            (
                libc::SYS_getppid as i32,
                DenialAction::Trap,
                0,
                ARCH_X86_64,
                TRAPS as u64
            ),
            (
                libc::SYS_gettid as i32,
                DenialAction::Kill,
                0,
                ARCH_X86_64,
                1
            ),
        ],
        "TRAP and KILL exactly, and no ERRNO"
    );
}

/// A filtered process queues itself SIGSYS with `si_code == SYS_SECCOMP` and
/// the fields seccomp would fill in, with each syscall that allows it to self;
/// its handler sees them exactly as seccomp's, and none may be counted.
#[test]
fn a_sigsys_the_process_queues_itself_is_not_counted() {
    skip_unless_privileged!();
    let kernel = fatal();
    let before = named(&kernel.ignored_exits().expect("ignored"), "forged_sigsys");
    // A filter, so the task looks like one seccomp could trap.
    let filter = Filter::allow_except(r#"{"names": ["getppid"], "action": "SCMP_ACT_TRAP"}"#);
    let cgroup = TestCgroup::v2("fatal-forged");
    const EACH: i64 = 50;
    let mut child = spawn_in(&[&cgroup], |shared| {
        kernel_common::sigsys::install_handler();
        filter.install(false);
        // SAFETY: a zeroed siginfo with the sigsys fields set, as seccomp does.
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        info.si_signo = libc::SIGSYS;
        info.si_code = kernel_common::sigsys::SYS_SECCOMP;
        // _sigsys: call_addr at 16, syscall at 24, arch at 28 (x86-64).
        let raw = (&raw mut info).cast::<u8>();
        // SAFETY: within the 128-byte siginfo.
        unsafe {
            raw.add(24)
                .cast::<i32>()
                .write_unaligned(libc::SYS_getppid as i32);
            raw.add(28).cast::<u32>().write_unaligned(ARCH_X86_64);
        }
        let pid = sys!(libc::SYS_getpid);
        let tid = sys!(libc::SYS_gettid);
        let mut sent = 0;
        for _ in 0..EACH {
            if sys!(
                libc::SYS_rt_sigqueueinfo,
                pid,
                libc::SIGSYS,
                &raw const info
            ) == 0
            {
                sent += 1;
            }
            if sys!(
                libc::SYS_rt_tgsigqueueinfo,
                pid,
                tid,
                libc::SIGSYS,
                &raw const info
            ) == 0
            {
                sent += 1;
            }
        }
        kernel_common::report(shared, 0, sent);
        kernel_common::report(shared, 1, kernel_common::sigsys::seen());
        0
    });
    child.wait_success();
    assert_eq!(child.value(0), 2 * EACH, "signals queued");
    assert_eq!(
        child.value(1),
        2 * EACH,
        "forged signals the handler took for seccomp's"
    );
    let snapshot = kernel.snapshot().expect("snapshot");
    assert_eq!(denials_of(&snapshot, cgroup.id()), vec![]);
    let after = named(&kernel.ignored_exits().expect("ignored"), "forged_sigsys");
    assert!(
        after - before >= 2 * EACH as u64,
        "forged_sigsys went from {before} to {after}: the program did not see them"
    );
}

#[test]
fn no_program_is_attached_to_the_syscall_tracepoints() {
    skip_unless_privileged!();
    let kernel = fatal();
    let links = kernel_common::raw_tracepoint_links();
    assert!(
        links.iter().any(|name| name == "signal_generate"),
        "the fatal tier's link is visible: {links:?}"
    );
    assert!(
        !links
            .iter()
            .any(|name| name == "sys_enter" || name == "sys_exit" || name == "sched_switch"),
        "raw tracepoint links of this process: {links:?}"
    );
    // Nothing but raw tracepoints either (no fexit or other tracing link).
    let types = kernel_common::link_types();
    assert!(
        types.iter().all(|kind| kind == "raw_tracepoint"),
        "link types: {types:?}"
    );
    assert_eq!(kernel.program_ids().len(), kernel.attached_programs().len());
    assert!(!kernel
        .attached_programs()
        .iter()
        .any(|name| name.contains("sys_")));
}
