//! The seccomp engine against the real kernel: every filter is compiled by
//! moat, loaded into a forked child (never into the test process, since a
//! filter cannot be removed), and the child exercises raw syscalls and
//! reports what the kernel did.
//!
//! Children set `no_new_privs` before installing, so none of these tests
//! needs privilege. Results are reported as one number per syscall: the
//! return value, or minus the errno.

#![cfg(all(target_os = "linux", target_arch = "x86_64"))]

use std::ffi::c_void;
use std::path::Path;
use std::sync::atomic::{AtomicI32, AtomicI64, Ordering};

use moat_runtime::caps::CapSet;
use moat_runtime::seccomp::compile::{Compiled, Dispatch, Options};
use moat_runtime::seccomp::profile::Profile;
use moat_runtime::seccomp::{builtin, compile_for_host, load, parse, Source};
use moat_tests::fixtures_dir;
use moat_tests::fork::{self, Exit, Outcome, Report};

const SIGSYS: i32 = libc::SIGSYS;
const EPERM: i64 = libc::EPERM as i64;
const EACCES: i64 = libc::EACCES as i64;
const ENOSYS: i64 = libc::ENOSYS as i64;
const EINVAL: i64 = libc::EINVAL as i64;
const EBADF: i64 = libc::EBADF as i64;
const EAFNOSUPPORT: i64 = libc::EAFNOSUPPORT as i64;
/// The kernel caps the errno a filter returns at `MAX_ERRNO`.
const MAX_ERRNO: i64 = 4095;
/// `si_code` of a SIGSYS raised by seccomp.
const SYS_SECCOMP: i64 = 1;
/// `AUDIT_ARCH_X86_64`, the `si_arch` of a native syscall.
const AUDIT_ARCH_X86_64: i64 = 0xC000_003E;
/// The address families the built-in (and Docker's) default profile denies.
const AF_ALG: i64 = 38;
const AF_VSOCK: i64 = 40;
/// An invalid socket type (above `SOCK_MAX`): the kernel refuses it with
/// EINVAL before looking up the family, so a socket() that passes the
/// filter fails without loading modules or creating anything.
const BAD_SOCK_TYPE: i64 = 15;
/// The namespace flags Docker's clone rule masks (0x7E020000).
const NS_FLAGS: [(&str, i64); 7] = [
    ("CLONE_NEWNS", libc::CLONE_NEWNS as i64),
    ("CLONE_NEWCGROUP", libc::CLONE_NEWCGROUP as i64),
    ("CLONE_NEWUTS", libc::CLONE_NEWUTS as i64),
    ("CLONE_NEWIPC", libc::CLONE_NEWIPC as i64),
    ("CLONE_NEWUSER", libc::CLONE_NEWUSER as i64),
    ("CLONE_NEWPID", libc::CLONE_NEWPID as i64),
    ("CLONE_NEWNET", libc::CLONE_NEWNET as i64),
];

// ---------------------------------------------------------------------------
// Helpers

/// A raw syscall's result as one number: the return value, or minus the
/// errno. Arguments are passed as `c_long`, pointers included.
macro_rules! sys {
    ($nr:expr $(, $arg:expr)* $(,)?) => {{
        // SAFETY: every call site passes arguments valid for the syscall
        // (pointers to live buffers of the right size, or null).
        let ret = unsafe { libc::syscall($nr $(, $arg as libc::c_long)*) };
        if ret == -1 {
            -i64::from(std::io::Error::last_os_error().raw_os_error().unwrap_or(0))
        } else {
            ret as i64
        }
    }};
}

/// Resolves and compiles `profile` for this host and Docker's default
/// capabilities.
fn compile(profile: &Profile, source: Source, opts: Options) -> Compiled {
    let (_, compiled) = compile_for_host(profile, source, &CapSet::docker_default(), opts)
        .unwrap_or_else(|e| panic!("compiling: {e}"));
    compiled
}

/// Parses and compiles a profile written in the test.
fn compile_json(json: &str) -> Compiled {
    let source = Source::Builtin("test");
    let profile = parse::from_str(json, source.clone()).unwrap_or_else(|e| panic!("{e}"));
    compile(&profile, source, Options::default())
}

/// Compiles the built-in default profile with `dispatch`.
fn compile_default(dispatch: Dispatch) -> Compiled {
    let profile = builtin::default_profile().expect("built-in profile parses");
    let opts = Options {
        dispatch,
        ..Options::default()
    };
    compile(&profile, builtin::SOURCE, opts)
}

/// Installs `filter` into the calling thread, as a container runtime does.
fn install(filter: &Compiled) {
    load::set_no_new_privs().expect("setting no_new_privs");
    load::install(&filter.program, filter.flags).expect("installing the filter");
}

/// Runs `body` in a forked child after installing `filter` there.
fn confined(filter: &Compiled, body: impl FnOnce(&Report) -> i32) -> Outcome {
    fork::run(|r| {
        install(filter);
        body(r)
    })
}

/// Asserts a child ended as expected, naming a panic in the child.
#[track_caller]
fn assert_exit(o: &Outcome, want: Exit) {
    assert_eq!(
        o.exit,
        want,
        "child ended unexpectedly{} (values so far: {:?})",
        if o.exit == Exit::Code(fork::PANICKED) {
            ": it panicked, see stderr"
        } else {
            ""
        },
        o.values
    );
}

/// Raw `clone(flags, NULL, ...)`: a fork-like clone (no CLONE_VM, so the
/// new process runs on a copy of this stack). A new process exits at once;
/// returns the clone result and, when it succeeded, the new process's wait
/// status.
fn raw_clone(flags: i64) -> (i64, Option<i32>) {
    let ret = sys!(libc::SYS_clone, flags, 0, 0, 0, 0);
    if ret == 0 {
        // SAFETY: in the new process; leave immediately.
        unsafe { libc::_exit(0) }
    }
    if ret < 0 {
        return (ret, None);
    }
    let mut status = 0;
    let waited = sys!(libc::SYS_wait4, ret, &mut status as *mut i32, 0, 0);
    assert_eq!(waited, ret, "wait4 for the clone");
    (ret, Some(status))
}

/// A raw pthread. std's `JoinHandle::join` would panic when seccomp kills
/// the thread before it stored its result; `pthread_join` just returns
/// (the kernel still clears the thread id and wakes the joiner).
struct RawThread(libc::pthread_t);

impl RawThread {
    fn spawn(f: extern "C" fn(*mut c_void) -> *mut c_void) -> RawThread {
        let mut t: libc::pthread_t = 0;
        // SAFETY: `f` is a valid thread start routine and takes no argument.
        let rc = unsafe { libc::pthread_create(&mut t, std::ptr::null(), f, std::ptr::null_mut()) };
        assert_eq!(rc, 0, "pthread_create");
        RawThread(t)
    }

    fn join(self) {
        // SAFETY: a joinable thread created above, joined once.
        let rc = unsafe { libc::pthread_join(self.0, std::ptr::null_mut()) };
        assert_eq!(rc, 0, "pthread_join");
    }
}

/// The bytes of the current directory's path plus its NUL: what getcwd(2)
/// returns in a child that inherited our working directory.
fn getcwd_len() -> i64 {
    std::env::current_dir().unwrap().as_os_str().len() as i64 + 1
}

// ---------------------------------------------------------------------------
// 1. Errno actions

/// A deny-by-default profile: `default` is the defaultErrnoRet fragment.
fn errno_profile(default: &str) -> String {
    format!(
        r#"{{
          "defaultAction": "SCMP_ACT_ERRNO"{default},
          "syscalls": [
            {{"names": ["getpid", "pipe2", "write", "read", "exit_group", "exit"], "action": "SCMP_ACT_ALLOW"}},
            {{"names": ["getcwd"], "action": "SCMP_ACT_ERRNO", "errnoRet": 13}},
            {{"names": ["uname"], "action": "SCMP_ACT_ERRNO"}}
          ]
        }}"#
    )
}

/// Runs the errno probes under `filter`: getpid, getcwd (rule errno 13),
/// uname (rule without errno), getppid (default action), and a pipe
/// round trip.
fn errno_probes(filter: &Compiled) -> Outcome {
    confined(filter, |r| {
        r.push(sys!(libc::SYS_getpid));
        let mut buf = [0u8; 64];
        r.push(sys!(libc::SYS_getcwd, buf.as_mut_ptr(), buf.len()));
        // SAFETY: utsname is plain old data.
        let mut uts: libc::utsname = unsafe { std::mem::zeroed() };
        r.push(sys!(libc::SYS_uname, &mut uts as *mut libc::utsname));
        r.push(sys!(libc::SYS_getppid));
        let mut fds = [0i32; 2];
        r.push(sys!(libc::SYS_pipe2, fds.as_mut_ptr(), libc::O_CLOEXEC));
        r.push(sys!(libc::SYS_write, fds[1], b"moat".as_ptr(), 4));
        r.push(sys!(libc::SYS_read, fds[0], buf.as_mut_ptr(), buf.len()));
        r.push(i64::from(&buf[..4] == b"moat"));
        0
    })
}

/// Denied syscalls fail with the profile's errno: `defaultErrnoRet` for the
/// default action, a rule's `errnoRet`, and EPERM where the profile names
/// none; allowed ones run (getpid gives the pid, a pipe carries data).
#[test]
fn denied_syscalls_return_the_profiles_errno() {
    let o = errno_probes(&compile_json(&errno_profile(r#", "defaultErrnoRet": 38"#)));
    assert_exit(&o, Exit::Code(0));
    let pid = i64::from(o.pid);
    //                    getpid getcwd   uname   getppid pipe2 write read  data
    assert_eq!(o.values, [pid, -EACCES, -EPERM, -ENOSYS, 0, 4, 4, 1]);

    let o = errno_probes(&compile_json(&errno_profile("")));
    assert_exit(&o, Exit::Code(0));
    let pid = i64::from(o.pid);
    assert_eq!(o.values, [pid, -EACCES, -EPERM, -EPERM, 0, 4, 4, 1]);
}

/// errnos above the kernel's MAX_ERRNO (which libseccomp refuses) still
/// compile, and callers see MAX_ERRNO, as the kernel clamps them.
#[test]
fn errnos_above_max_errno_reach_callers_as_max_errno() {
    let filter = compile_json(
        r#"{
          "defaultAction": "SCMP_ACT_ALLOW",
          "syscalls": [
            {"names": ["getcwd"], "action": "SCMP_ACT_ERRNO", "errnoRet": 4095},
            {"names": ["getppid"], "action": "SCMP_ACT_ERRNO", "errnoRet": 5000},
            {"names": ["getpgrp"], "action": "SCMP_ACT_ERRNO", "errnoRet": 65535},
            {"names": ["getsid"], "action": "SCMP_ACT_ERRNO", "errnoRet": 4093}
          ]
        }"#,
    );
    assert_eq!(filter.warnings.len(), 2, "{:?}", filter.warnings);
    let o = confined(&filter, |r| {
        let mut buf = [0u8; 64];
        r.push(sys!(libc::SYS_getcwd, buf.as_mut_ptr(), buf.len()));
        r.push(sys!(libc::SYS_getppid));
        r.push(sys!(libc::SYS_getpgrp));
        r.push(sys!(libc::SYS_getsid, 0));
        0
    });
    assert_exit(&o, Exit::Code(0));
    assert_eq!(o.values, [-MAX_ERRNO, -MAX_ERRNO, -MAX_ERRNO, -4093]);

    let filter = compile_json(
        r#"{
          "defaultAction": "SCMP_ACT_ERRNO", "defaultErrnoRet": 5000,
          "syscalls": [{"names": ["exit_group", "exit"], "action": "SCMP_ACT_ALLOW"}]
        }"#,
    );
    let o = confined(&filter, |r| {
        r.push(sys!(libc::SYS_getppid));
        0
    });
    assert_exit(&o, Exit::Code(0));
    assert_eq!(o.values, [-MAX_ERRNO]);
}

/// SCMP_ACT_TRACE with no tracer attached: the kernel fails the syscall
/// with ENOSYS, whatever `errnoRet` says (that value is only the message
/// a tracer would read).
#[test]
fn trace_without_a_tracer_fails_with_enosys() {
    let filter = compile_json(
        r#"{
          "defaultAction": "SCMP_ACT_ALLOW",
          "syscalls": [{"names": ["getppid"], "action": "SCMP_ACT_TRACE", "errnoRet": 13}]
        }"#,
    );
    let o = confined(&filter, |r| {
        r.push(sys!(libc::SYS_getppid));
        0
    });
    assert_exit(&o, Exit::Code(0));
    assert_eq!(o.values, [-ENOSYS]);
}

// ---------------------------------------------------------------------------
// 2. Argument filters

/// With Docker's default capabilities (no CAP_SYS_ADMIN) the built-in
/// profile refuses every way to create a namespace, while a plain fork
/// works.
#[test]
fn default_profile_refuses_namespaces_but_allows_fork() {
    let filter = compile_default(Dispatch::Auto);
    let o = confined(&filter, |r| {
        // unshare and setns are allowed only with CAP_SYS_ADMIN. Unconfined,
        // setns(-1) would fail with EBADF.
        r.push(sys!(libc::SYS_unshare, libc::CLONE_NEWUSER));
        r.push(sys!(libc::SYS_setns, -1, 0));
        // clone is allowed when (flags & 0x7E020000) == 0.
        for (_, flag) in NS_FLAGS {
            r.push(raw_clone(flag | i64::from(libc::SIGCHLD)).0);
        }
        let (pid, status) = raw_clone(i64::from(libc::SIGCHLD));
        r.push(i64::from(pid > 0));
        r.push(i64::from(status.unwrap_or(-1)));
        // clone3 cannot be argument-filtered, so Docker answers ENOSYS and
        // libc falls back to clone. Unconfined, clone3(NULL, 0) is EINVAL.
        r.push(sys!(libc::SYS_clone3, 0, 0));
        0
    });
    assert_exit(&o, Exit::Code(0));
    let mut want = vec![-EPERM, -EPERM];
    want.extend(NS_FLAGS.iter().map(|_| -EPERM));
    want.extend([1, 0, -ENOSYS]);
    assert_eq!(o.values, want, "flags in order: {NS_FLAGS:?}");
}

/// The built-in profile denies socket() for AF_ALG (38) and AF_VSOCK (40)
/// only: its rules allow families `< 38`, `== 39` and `> 40`.
#[test]
fn default_profile_denies_af_alg_and_af_vsock_sockets() {
    let filter = compile_default(Dispatch::Auto);
    const SWEEP: std::ops::RangeInclusive<i64> = 0..=45;
    let o = confined(&filter, |r| {
        let fd = sys!(libc::SYS_socket, libc::AF_UNIX, libc::SOCK_STREAM, 0);
        r.push(i64::from(fd >= 0));
        r.push(sys!(libc::SYS_close, fd));
        r.push(sys!(libc::SYS_socket, libc::AF_VSOCK, libc::SOCK_STREAM, 0));
        r.push(sys!(
            libc::SYS_socket,
            libc::AF_ALG,
            libc::SOCK_SEQPACKET,
            0
        ));
        // Every family up to AF_MCTP (45) with an invalid type: EINVAL
        // means the filter let the call through.
        for family in SWEEP {
            r.push(sys!(libc::SYS_socket, family, BAD_SOCK_TYPE, 0));
        }
        // Beyond the kernel's families: allowed by `> 40`, refused by the
        // kernel.
        r.push(sys!(libc::SYS_socket, 1000, BAD_SOCK_TYPE, 0));
        0
    });
    assert_exit(&o, Exit::Code(0));
    assert_eq!(o.values[..4], [1, 0, -EPERM, -EPERM]);
    let sweep = &o.values[4..o.values.len() - 1];
    for (family, got) in SWEEP.zip(sweep) {
        let want = if family == AF_ALG || family == AF_VSOCK {
            -EPERM
        } else {
            -EINVAL
        };
        assert_eq!(*got, want, "socket({family}, {BAD_SOCK_TYPE}, 0)");
    }
    assert_eq!(sweep.len(), SWEEP.count());
    assert_eq!(o.values.last(), Some(&-EAFNOSUPPORT));
}

/// A profile whose only conditional rule allows lseek with `args`.
/// Unmatched calls fail with ENOSYS.
fn lseek_profile(args: &str) -> String {
    format!(
        r#"{{
          "defaultAction": "SCMP_ACT_ERRNO", "defaultErrnoRet": 38,
          "syscalls": [
            {{"names": ["exit_group", "exit"], "action": "SCMP_ACT_ALLOW"}},
            {{"names": ["lseek"], "action": "SCMP_ACT_ALLOW", "args": {args}}}
          ]
        }}"#
    )
}

/// lseek on fd -1 fails with EBADF before looking at its other arguments,
/// which makes arguments 1 and 2 free to probe a filter with.
const ALLOWED: i64 = -EBADF;
const DENIED: i64 = -ENOSYS;

/// Calls `lseek(-1, a1, a2)` for each probe under the profile built from
/// `args`; returns one verdict per probe.
fn lseek_verdicts(args: &str, probes: &[(u64, u64)]) -> Vec<i64> {
    let filter = compile_json(&lseek_profile(args));
    let o = confined(&filter, |r| {
        for &(a1, a2) in probes {
            r.push(sys!(libc::SYS_lseek, -1, a1, a2));
        }
        0
    });
    assert_exit(&o, Exit::Code(0));
    o.values
}

/// SCMP_CMP_MASKED_EQ: `value` is the mask, `valueTwo` the bits expected
/// under it; bits outside the mask do not matter.
#[test]
fn masked_eq_compares_only_the_masked_bits() {
    let args = r#"[{"index": 1, "value": 240, "valueTwo": 32, "op": "SCMP_CMP_MASKED_EQ"}]"#;
    let probes = [
        (0x20, 0),
        (0x25, 0),
        (0x120, 0),
        (0xF2F, 0),
        (0x30, 0),
        (0x00, 0),
        (0x10, 0),
    ];
    assert_eq!(
        lseek_verdicts(args, &probes),
        [ALLOWED, ALLOWED, ALLOWED, ALLOWED, DENIED, DENIED, DENIED]
    );
}

/// Every comparison operator, at and around its value.
#[test]
fn every_comparison_operator_at_its_boundary() {
    let probes = [(9, 0), (10, 0), (11, 0)];
    let (a, d) = (ALLOWED, DENIED);
    for (op, want) in [
        ("SCMP_CMP_NE", [a, d, a]),
        ("SCMP_CMP_LT", [a, d, d]),
        ("SCMP_CMP_LE", [a, a, d]),
        ("SCMP_CMP_EQ", [d, a, d]),
        ("SCMP_CMP_GE", [d, a, a]),
        ("SCMP_CMP_GT", [d, d, a]),
    ] {
        let args = format!(r#"[{{"index": 1, "value": 10, "op": "{op}"}}]"#);
        assert_eq!(lseek_verdicts(&args, &probes), want, "{op}");
    }
}

/// A 64-bit argument (lseek's `off_t offset`) is compared on all 64 bits.
#[test]
fn conditions_compare_all_64_bits() {
    let args = r#"[{"index": 1, "value": 4294967303, "op": "SCMP_CMP_EQ"}]"#; // 0x1_0000_0007
    let probes = [(0x1_0000_0007, 0), (7, 0), (0x2_0000_0007, 0)];
    assert_eq!(lseek_verdicts(args, &probes), [ALLOWED, DENIED, DENIED]);

    let args = r#"[{"index": 1, "value": 4294967295, "op": "SCMP_CMP_GT"}]"#; // 0xFFFF_FFFF
    let probes = [(0x1_0000_0000, 0), (0xFFFF_FFFF, 0), (u64::MAX, 0)];
    assert_eq!(lseek_verdicts(args, &probes), [ALLOWED, DENIED, ALLOWED]);
}

/// A 32-bit argument (lseek's `unsigned int whence`) is compared on the
/// 32 bits the kernel reads, with every operator: high bits in the
/// register change nothing. (Argument 1, `off_t offset`, is 64-bit: see
/// above.)
#[test]
fn every_operator_compares_a_32_bit_argument_on_its_low_word() {
    const HIGH: u64 = 1 << 32;
    let probes = [
        (0, 9),
        (0, 10),
        (0, 11),
        (0, 9 | HIGH),
        (0, 10 | HIGH),
        (0, 11 | HIGH),
    ];
    let (a, d) = (ALLOWED, DENIED);
    for (op, want) in [
        ("SCMP_CMP_NE", [a, d, a]),
        ("SCMP_CMP_LT", [a, d, d]),
        ("SCMP_CMP_LE", [a, a, d]),
        ("SCMP_CMP_EQ", [d, a, d]),
        ("SCMP_CMP_GE", [d, a, a]),
        ("SCMP_CMP_GT", [d, d, a]),
    ] {
        let args = format!(r#"[{{"index": 2, "value": 10, "op": "{op}"}}]"#);
        let got = lseek_verdicts(&args, &probes);
        assert_eq!(got[..3], want, "{op}");
        assert_eq!(got[3..], want, "{op} with high bits set");
    }
    let args = r#"[{"index": 2, "value": 255, "valueTwo": 10, "op": "SCMP_CMP_MASKED_EQ"}]"#;
    assert_eq!(lseek_verdicts(args, &probes), [d, a, d, d, a, d]);
}

/// Conditions on different arguments of one rule must all hold (AND).
#[test]
fn conditions_on_different_arguments_are_anded() {
    let args = r#"[{"index": 1, "value": 7, "op": "SCMP_CMP_EQ"},
                   {"index": 2, "value": 1, "op": "SCMP_CMP_EQ"}]"#;
    let probes = [(7, 1), (7, 0), (8, 1), (8, 0)];
    assert_eq!(
        lseek_verdicts(args, &probes),
        [ALLOWED, DENIED, DENIED, DENIED]
    );
}

/// runc's rule: when an argument index repeats in a rule, each condition
/// becomes a rule of its own, so any one of them allows the call; this
/// also turns conditions on other arguments of that rule into alternatives.
#[test]
fn conditions_repeating_an_argument_are_ored() {
    let args = r#"[{"index": 1, "value": 7, "op": "SCMP_CMP_EQ"},
                   {"index": 1, "value": 9, "op": "SCMP_CMP_EQ"}]"#;
    let probes = [(7, 0), (9, 0), (8, 0)];
    assert_eq!(lseek_verdicts(args, &probes), [ALLOWED, ALLOWED, DENIED]);

    let args = r#"[{"index": 1, "value": 7, "op": "SCMP_CMP_EQ"},
                   {"index": 1, "value": 9, "op": "SCMP_CMP_EQ"},
                   {"index": 2, "value": 1, "op": "SCMP_CMP_EQ"}]"#;
    let probes = [(7, 0), (8, 1), (8, 0)];
    assert_eq!(lseek_verdicts(args, &probes), [ALLOWED, ALLOWED, DENIED]);
}

// ---------------------------------------------------------------------------
// 3 and 4. Trap and kill actions

/// The SIGSYS fields of the x86_64 `siginfo_t` (the `_sigsys` member of
/// its union), which the libc crate does not expose.
#[repr(C)]
struct SigsysInfo {
    signo: i32,
    errno: i32,
    code: i32,
    _pad: i32,
    call_addr: *mut c_void,
    syscall: i32,
    arch: u32,
}

const _: () = {
    assert!(std::mem::offset_of!(SigsysInfo, call_addr) == 16);
    assert!(std::mem::offset_of!(SigsysInfo, syscall) == 24);
    assert!(std::mem::offset_of!(SigsysInfo, arch) == 28);
    assert!(std::mem::size_of::<SigsysInfo>() <= std::mem::size_of::<libc::siginfo_t>());
};

/// What the SIGSYS handler saw; per child process, as children are forked.
static SIGSYS_COUNT: AtomicI64 = AtomicI64::new(0);
static SIGSYS_SEEN: [AtomicI64; 5] = [const { AtomicI64::new(0) }; 5];

extern "C" fn on_sigsys(_sig: i32, info: *mut libc::siginfo_t, _ctx: *mut c_void) {
    // SAFETY: the kernel passes a valid siginfo_t, whose layout for SIGSYS
    // is `SigsysInfo`.
    let info = unsafe { &*(info as *const SigsysInfo) };
    let seen = [
        info.signo.into(),
        info.code.into(),
        info.syscall.into(),
        info.arch.into(),
        info.errno.into(),
    ];
    for (slot, v) in SIGSYS_SEEN.iter().zip(seen) {
        slot.store(v, Ordering::SeqCst);
    }
    SIGSYS_COUNT.fetch_add(1, Ordering::SeqCst);
}

/// Installs `on_sigsys` for SIGSYS with SA_SIGINFO.
fn handle_sigsys() {
    // SAFETY: a zeroed sigaction is valid; the handler is async-signal-safe
    // (atomics only).
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = on_sigsys as *const () as usize;
        sa.sa_flags = libc::SA_SIGINFO;
        libc::sigemptyset(&mut sa.sa_mask);
        assert_eq!(libc::sigaction(SIGSYS, &sa, std::ptr::null_mut()), 0);
    }
}

/// A profile that allows everything but `getppid`, which gets `action`.
fn getppid_profile(action: &str) -> Compiled {
    compile_json(&format!(
        r#"{{"defaultAction": "SCMP_ACT_ALLOW",
             "syscalls": [{{"names": ["getppid"], "action": "{action}"}}]}}"#
    ))
}

/// SCMP_ACT_TRAP raises SIGSYS with si_code SYS_SECCOMP, the syscall number
/// and the audit arch; the syscall does not run (its return register still
/// holds the syscall number when the handler returns).
#[test]
fn trap_raises_sigsys_with_the_syscall() {
    let filter = getppid_profile("SCMP_ACT_TRAP");
    let o = confined(&filter, |r| {
        handle_sigsys();
        r.push(sys!(libc::SYS_getppid));
        r.push(SIGSYS_COUNT.load(Ordering::SeqCst));
        for v in &SIGSYS_SEEN {
            r.push(v.load(Ordering::SeqCst));
        }
        0
    });
    assert_exit(&o, Exit::Code(0));
    let nr = libc::SYS_getppid;
    let want = [
        nr,                // return register: the call was skipped
        1,                 // handler runs
        SIGSYS.into(),     // si_signo
        SYS_SECCOMP,       // si_code
        nr,                // si_syscall
        AUDIT_ARCH_X86_64, // si_arch
        0,                 // si_errno: the trap's SECCOMP_RET_DATA
    ];
    assert_eq!(o.values, want);
}

/// Without a handler, the SIGSYS of SCMP_ACT_TRAP kills the process.
#[test]
fn trap_without_a_handler_kills_with_sigsys() {
    let filter = getppid_profile("SCMP_ACT_TRAP");
    let o = confined(&filter, |r| {
        r.push(1);
        sys!(libc::SYS_getppid);
        r.push(2);
        0
    });
    assert_exit(&o, Exit::Signal(SIGSYS));
    assert_eq!(o.values, [1], "died at the trapped call");
}

/// SCMP_ACT_KILL_PROCESS kills with SIGSYS, even a process that handles
/// SIGSYS.
#[test]
fn kill_process_kills_with_sigsys() {
    let filter = getppid_profile("SCMP_ACT_KILL_PROCESS");
    let o = confined(&filter, |r| {
        handle_sigsys();
        r.push(1);
        sys!(libc::SYS_getppid);
        r.push(2);
        0
    });
    assert_exit(&o, Exit::Signal(SIGSYS));
    assert_eq!(o.values, [1], "died at the killing call");
}

/// SCMP_ACT_KILL and SCMP_ACT_KILL_THREAD kill the calling thread; in a
/// single-threaded process that ends the process with SIGSYS.
#[test]
fn kill_thread_ends_a_single_threaded_process_with_sigsys() {
    for action in ["SCMP_ACT_KILL", "SCMP_ACT_KILL_THREAD"] {
        let filter = getppid_profile(action);
        let o = confined(&filter, |r| {
            r.push(1);
            sys!(libc::SYS_getppid);
            r.push(2);
            0
        });
        assert_exit(&o, Exit::Signal(SIGSYS));
        assert_eq!(o.values, [1], "{action}: died at the killing call");
    }
}

/// Set by a second thread once its getppid returned.
static THREAD_PAST_CALL: AtomicI64 = AtomicI64::new(0);

extern "C" fn call_getppid(_: *mut c_void) -> *mut c_void {
    sys!(libc::SYS_getppid);
    THREAD_PAST_CALL.store(1, Ordering::SeqCst);
    std::ptr::null_mut()
}

/// In a multi-threaded process SCMP_ACT_KILL ends only the calling thread;
/// SCMP_ACT_KILL_PROCESS ends them all.
#[test]
fn kill_thread_spares_the_other_threads_and_kill_process_does_not() {
    let body = |r: &Report| {
        RawThread::spawn(call_getppid).join();
        r.push(THREAD_PAST_CALL.load(Ordering::SeqCst));
        r.push(1); // the main thread survived
        0
    };
    let o = confined(&getppid_profile("SCMP_ACT_KILL"), body);
    assert_exit(&o, Exit::Code(0));
    assert_eq!(o.values, [0, 1], "[second thread went on, main survived]");

    let o = confined(&getppid_profile("SCMP_ACT_KILL_PROCESS"), body);
    assert_exit(&o, Exit::Signal(SIGSYS));
    assert!(o.values.is_empty(), "{:?}", o.values);
}

// ---------------------------------------------------------------------------
// 5. TSYNC

/// Read end of the pipe the second thread waits on.
static GO_FD: AtomicI32 = AtomicI32::new(-1);
/// The second thread's getcwd result.
static THREAD_GETCWD: AtomicI64 = AtomicI64::new(0);

extern "C" fn getcwd_when_told(_: *mut c_void) -> *mut c_void {
    let mut byte = 0u8;
    sys!(
        libc::SYS_read,
        GO_FD.load(Ordering::SeqCst),
        &mut byte as *mut u8,
        1
    );
    let mut buf = [0u8; 4096];
    let ret = sys!(libc::SYS_getcwd, buf.as_mut_ptr(), buf.len());
    THREAD_GETCWD.store(ret, Ordering::SeqCst);
    std::ptr::null_mut()
}

/// Installs `filter` in the main thread while a second thread already
/// runs, then lets the second thread call getcwd. Reports both threads'
/// getcwd results.
fn getcwd_in_two_threads(filter: &Compiled) -> Outcome {
    fork::run(|r| {
        let mut fds = [0i32; 2];
        assert_eq!(sys!(libc::SYS_pipe2, fds.as_mut_ptr(), libc::O_CLOEXEC), 0);
        GO_FD.store(fds[0], Ordering::SeqCst);
        let thread = RawThread::spawn(getcwd_when_told);
        install(filter);
        let mut buf = [0u8; 4096];
        r.push(sys!(libc::SYS_getcwd, buf.as_mut_ptr(), buf.len()));
        sys!(libc::SYS_write, fds[1], b"g".as_ptr(), 1);
        thread.join();
        r.push(THREAD_GETCWD.load(Ordering::SeqCst));
        0
    })
}

/// `SECCOMP_FILTER_FLAG_TSYNC` installs the filter in every thread of the
/// process: a thread started before the install is confined too, while
/// without the flag it is not.
#[test]
fn tsync_confines_threads_that_already_run() {
    const RULES: &str =
        r#""syscalls": [{"names": ["getcwd"], "action": "SCMP_ACT_ERRNO", "errnoRet": 13}]"#;
    let tsync = compile_json(&format!(
        r#"{{"defaultAction": "SCMP_ACT_ALLOW", "flags": ["SECCOMP_FILTER_FLAG_TSYNC"], {RULES}}}"#
    ));
    assert_eq!(tsync.flags, libc::SECCOMP_FILTER_FLAG_TSYNC as u32);
    let o = getcwd_in_two_threads(&tsync);
    assert_exit(&o, Exit::Code(0));
    assert_eq!(o.values, [-EACCES, -EACCES], "[main, second thread]");

    let plain = compile_json(&format!(
        r#"{{"defaultAction": "SCMP_ACT_ALLOW", {RULES}}}"#
    ));
    assert_eq!(plain.flags, 0);
    let o = getcwd_in_two_threads(&plain);
    assert_exit(&o, Exit::Code(0));
    assert_eq!(o.values, [-EACCES, getcwd_len()], "[main, second thread]");
}

// ---------------------------------------------------------------------------
// 6. Third-party profiles

/// What a profile's JSON says about a syscall it names in an unconditional
/// rule or not at all: `None` if allowed, else the errno.
fn verdict_in_json(profile: &serde_json::Value, name: &str) -> Option<i64> {
    let named = |rule: &serde_json::Value| {
        rule.get("name").and_then(|n| n.as_str()) == Some(name)
            || rule
                .get("names")
                .and_then(|n| n.as_array())
                .is_some_and(|ns| ns.iter().any(|n| n.as_str() == Some(name)))
    };
    let empty = |v: Option<&serde_json::Value>| match v {
        None | Some(serde_json::Value::Null) => true,
        Some(serde_json::Value::Array(a)) => a.is_empty(),
        Some(serde_json::Value::Object(o)) => o.is_empty(),
        Some(_) => false,
    };
    let rules: Vec<_> = profile["syscalls"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| named(r))
        .collect();
    for rule in &rules {
        assert!(
            empty(rule.get("args")) && empty(rule.get("includes")) && empty(rule.get("excludes")),
            "{name}: conditional rules are beyond this test"
        );
    }
    if rules.iter().any(|r| r["action"] == "SCMP_ACT_ALLOW") {
        return None;
    }
    assert!(rules.is_empty(), "{name}: only ALLOW rules are handled");
    assert_eq!(profile["defaultAction"], "SCMP_ACT_ERRNO");
    Some(
        profile
            .get("defaultErrnoRet")
            .and_then(|v| v.as_i64())
            .unwrap_or(EPERM),
    )
}

/// Loads one fixture into a child that writes one byte to a pipe and exits
/// with raw syscalls; checks the kernel's answers against the JSON.
fn load_fixture(path: &Path) {
    let text = std::fs::read_to_string(path).unwrap();
    let json: serde_json::Value = serde_json::from_str(&text).unwrap();
    let write = verdict_in_json(&json, "write");
    let exit_group = verdict_in_json(&json, "exit_group");
    let exit = verdict_in_json(&json, "exit");

    let profile = parse::from_file(path).unwrap_or_else(|e| panic!("{e}"));
    let filter = compile(&profile, Source::File(path.into()), Options::default());
    eprintln!(
        "{}: {} instructions, binary tree: {}, {} warnings",
        path.display(),
        filter.program.len(),
        filter.binary_tree,
        filter.warnings.len()
    );
    let o = fork::run(|r| {
        // The pipe is made before the filter, which may deny pipe2.
        let mut fds = [0i32; 2];
        assert_eq!(sys!(libc::SYS_pipe2, fds.as_mut_ptr(), libc::O_CLOEXEC), 0);
        install(&filter);
        r.push(sys!(libc::SYS_write, fds[1], b"m".as_ptr(), 1));
        r.push(sys!(libc::SYS_exit_group, 0));
        r.push(sys!(libc::SYS_exit, 0));
        fork::die_without_syscalls()
    });
    let name = path.display();
    let write_result = write.map_or(1, |e| -e);
    match (exit_group, exit) {
        (None, _) => {
            assert_exit(&o, Exit::Code(0));
            assert_eq!(o.values, [write_result], "{name}: [write]");
        }
        (Some(e1), None) => {
            assert_exit(&o, Exit::Code(0));
            assert_eq!(o.values, [write_result, -e1], "{name}: [write, exit_group]");
        }
        (Some(e1), Some(e2)) => {
            assert_exit(&o, Exit::Signal(libc::SIGILL));
            assert_eq!(
                o.values,
                [write_result, -e1, -e2],
                "{name}: [write, exit_group, exit]"
            );
        }
    }
}

/// Every profile in the shared fixtures parses, resolves, compiles and is
/// accepted by the kernel, and then write and exit behave as its JSON says
/// (Docker's and Podman's defaults allow them; Docker's small test
/// fixtures deny them with their default errno).
#[test]
fn every_fixture_loads_into_the_kernel() {
    let Some(dir) = fixtures_dir() else {
        eprintln!("SKIP: ../shared/fixtures not found");
        return;
    };
    let mut paths: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    paths.sort();
    assert!(!paths.is_empty(), "no *.json in {}", dir.display());
    for path in &paths {
        load_fixture(path);
    }
}

// ---------------------------------------------------------------------------
// 7. Dispatch strategies

/// The built-in profile compiled as a binary tree and as a linear chain:
/// both load, and the kernel gives the same answers.
#[test]
fn binary_tree_and_linear_programs_agree_in_the_kernel() {
    let tree = compile_default(Dispatch::BinaryTree);
    let linear = compile_default(Dispatch::Linear);
    assert!(tree.binary_tree && !linear.binary_tree);
    assert_ne!(
        tree.program, linear.program,
        "the two strategies give one program"
    );
    let probe = |r: &Report| {
        r.push(sys!(libc::SYS_getpid));
        r.push(sys!(libc::SYS_unshare, libc::CLONE_NEWUSER));
        r.push(sys!(libc::SYS_clone3, 0, 0));
        r.push(sys!(libc::SYS_socket, libc::AF_VSOCK, BAD_SOCK_TYPE, 0));
        r.push(sys!(libc::SYS_socket, libc::AF_UNIX, BAD_SOCK_TYPE, 0));
        r.push(sys!(libc::SYS_setns, -1, 0));
        // Past every syscall the kernel has: the default action.
        r.push(sys!(1000));
        0
    };
    let mut answers = Vec::new();
    for filter in [&tree, &linear] {
        let o = confined(filter, probe);
        assert_exit(&o, Exit::Code(0));
        let pid = i64::from(o.pid);
        assert_eq!(
            o.values,
            [pid, -EPERM, -ENOSYS, -EPERM, -EINVAL, -EPERM, -EPERM],
            "binary tree: {}",
            filter.binary_tree
        );
        answers.push(o.values[1..].to_vec());
    }
    assert_eq!(answers[0], answers[1]);
}

// ---------------------------------------------------------------------------
// 8. Architectures

/// The x32 ABI's flag in syscall numbers.
const X32_SYSCALL_BIT: i64 = 0x4000_0000;
/// i386 syscall numbers (arch/x86/entry/syscalls/syscall_32.tbl).
const I386_GETPID: i64 = 20;
const I386_UNSHARE: i64 = 310;
/// x32 unshare: the x86_64 number with the x32 bit.
const X32_UNSHARE: i64 = X32_SYSCALL_BIT | libc::SYS_unshare;

/// An i386 syscall through `int 0x80` (rbx is reserved by LLVM, hence the
/// exchange). Returns the raw result: the value or minus the errno.
fn int80(nr: i64, arg1: i64) -> i64 {
    let mut ret = nr;
    // SAFETY: the arguments are plain integers; the kernel clears r8-r11
    // on the compat entry path, so they are declared clobbered.
    unsafe {
        std::arch::asm!(
            "xchg {arg1}, rbx",
            "int 0x80",
            "xchg {arg1}, rbx",
            arg1 = inout(reg) arg1 => _,
            inout("rax") ret,
            out("r8") _, out("r9") _, out("r10") _, out("r11") _,
        );
    }
    ret
}

/// Whether this kernel runs i386 syscalls (IA32 emulation), tried in a
/// child since `int 0x80` is fatal without it.
fn ia32_emulation() -> bool {
    let o = fork::run(|r| {
        r.push(int80(I386_GETPID, 0));
        0
    });
    o.exit == Exit::Code(0) && o.values == [i64::from(o.pid)]
}

/// The built-in profile also filters the sub-architectures its `archMap`
/// lists for x86_64 (x32, and i386 when the kernel has IA32 emulation)
/// with the same rules; a profile listing no architecture accepts only
/// native syscalls, and any other kills the process (libseccomp's
/// bad-architecture action, as with runc).
#[test]
fn sub_architectures_are_filtered_and_others_killed() {
    let default = compile_default(Dispatch::Auto);
    let o = confined(&default, |r| {
        r.push(sys!(X32_UNSHARE, libc::CLONE_NEWUSER));
        0
    });
    assert_exit(&o, Exit::Code(0));
    assert_eq!(o.values, [-EPERM], "x32 unshare(CLONE_NEWUSER)");

    let native_only = getppid_profile("SCMP_ACT_ERRNO");
    let o = confined(&native_only, |r| {
        r.push(1);
        sys!(X32_UNSHARE, libc::CLONE_NEWUSER);
        r.push(2);
        0
    });
    assert_exit(&o, Exit::Signal(SIGSYS));
    assert_eq!(o.values, [1], "killed at the x32 call");

    if !ia32_emulation() {
        eprintln!("SKIP (i386 part): the kernel runs no i386 syscalls");
        return;
    }
    let o = confined(&default, |r| {
        r.push(int80(I386_GETPID, 0));
        r.push(int80(I386_UNSHARE, libc::CLONE_NEWUSER.into()));
        0
    });
    assert_exit(&o, Exit::Code(0));
    assert_eq!(
        o.values,
        [i64::from(o.pid), -EPERM],
        "i386 [getpid, unshare]"
    );

    let o = confined(&native_only, |r| {
        r.push(1);
        int80(I386_GETPID, 0);
        r.push(2);
        0
    });
    assert_exit(&o, Exit::Signal(SIGSYS));
    assert_eq!(o.values, [1], "killed at the i386 call");
}
