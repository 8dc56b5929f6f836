//! Attacks on seccomp profiles from inside `moat run`, on the real kernel:
//! a workload passes register values that a filter and the kernel read
//! differently. Each succeeded before moat compared arguments on the bits
//! the kernel reads and refused socketcall(2) for filtered socket calls.
//!
//! The workload is `syscall_probe` (tests/src/bin), which makes one raw
//! syscall and prints its result (or minus the errno).

use std::process::Command;

use moat_tests::binary;
use moat_tests::moatd::{pids_on_v1, pids_on_v2, CgroupParent, TempDir};

const EPERM: i64 = libc::EPERM as i64;
const ENOSYS: i64 = libc::ENOSYS as i64;
const EINVAL: i64 = libc::EINVAL as i64;
const AF_UNIX: u64 = 1;
const AF_NETLINK: u64 = 16;
const AF_ALG: u64 = 38;
const AF_VSOCK: u64 = 40;
const SOCK_STREAM: u64 = 1;
const SOCK_RAW: u64 = 3;
const SOCK_SEQPACKET: u64 = 5;
const NETLINK_AUDIT: u64 = 9;
const HIGH: u64 = 1 << 32;

struct Env {
    dir: TempDir,
    parent: CgroupParent,
}

impl Env {
    fn new(tag: &str) -> Option<Env> {
        if !moat_tests::is_root() {
            eprintln!("SKIP: moat run needs root");
            return None;
        }
        if !pids_on_v1() && !pids_on_v2() {
            eprintln!("SKIP: no pids cgroup controller on this machine");
            return None;
        }
        Some(Env {
            dir: TempDir::new(&format!("bypass-{tag}")),
            parent: CgroupParent(format!("moat-t-bypass-{tag}-{}", std::process::id())),
        })
    }

    /// The probe's result under `moat run ARGS -- syscall_probe PROBE...`.
    fn probe(&self, moat_args: &[&str], probe: &[String]) -> i64 {
        let out = Command::new(binary("moat"))
            .env("MOAT_STATE_DIR", self.dir.join("state"))
            .args(["run", "--cgroup-parent", &self.parent.0])
            .args(moat_args)
            .arg("--")
            .arg(binary("syscall_probe"))
            .args(probe)
            .output()
            .expect("run moat");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "moat run {moat_args:?} -- {probe:?}: {:?}\n{stdout}{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        stdout
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("probe printed {stdout:?}"))
    }
}

fn args(call: &str, v: [u64; 3]) -> Vec<String> {
    std::iter::once(call.to_string())
        .chain(v.iter().map(|x| format!("{x:#x}")))
        .collect()
}

/// Unconfined, the probe's socket calls reach the kernel: AF_VSOCK opens.
fn vsock_exists(env: &Env) -> bool {
    env.probe(
        &["--seccomp-profile", "unconfined"],
        &args("socket", [AF_VSOCK, SOCK_STREAM, 0]),
    ) >= 0
}

/// The default profile (Docker's) refuses AF_VSOCK and AF_ALG; the kernel
/// reads `int family`, so 0x1_0000_0028 is AF_VSOCK. Before the fix the
/// 64-bit comparison let it through and the socket opened.
#[test]
fn default_profile_refuses_vsock_and_alg_with_high_bits_set() {
    let Some(env) = Env::new("high") else { return };
    if !vsock_exists(&env) {
        eprintln!("SKIP: this kernel has no AF_VSOCK sockets to attack");
        return;
    }
    let probe = |v| env.probe(&[], &args("socket", v));
    assert_eq!(probe([AF_VSOCK, SOCK_STREAM, 0]), -EPERM, "plain AF_VSOCK");
    assert_eq!(
        probe([AF_VSOCK | HIGH, SOCK_STREAM, 0]),
        -EPERM,
        "AF_VSOCK | 1 << 32"
    );
    assert_eq!(
        probe([AF_VSOCK | 0xffff_ffff_0000_0000, SOCK_STREAM, 0]),
        -EPERM,
        "AF_VSOCK with all high bits"
    );
    // AF_ALG may be missing from the kernel (EAFNOSUPPORT once past the
    // filter); the filter must refuse it first, with EPERM, either way.
    assert_eq!(
        probe([AF_ALG | HIGH, SOCK_SEQPACKET, 0]),
        -EPERM,
        "AF_ALG | 1 << 32"
    );
    assert!(
        probe([AF_UNIX | HIGH, SOCK_STREAM, 0]) >= 0,
        "AF_UNIX with high bits opens"
    );
}

/// Whether the kernel runs i386 syscalls (`int 0x80`) for this process.
fn ia32_emulation() -> bool {
    let out = Command::new(binary("syscall_probe"))
        .args(args("i386-socketcall", [AF_UNIX, SOCK_STREAM, 0]))
        .output()
        .expect("run syscall_probe");
    out.status.success()
        && String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse::<i64>()
            .is_ok_and(|r| r >= 0)
}

/// On i386, socketcall(SYS_SOCKET, args) passes the family behind a
/// pointer; libseccomp turned the family rules into "socketcall(SYS_SOCKET)
/// allowed", so `int 0x80` opened AF_VSOCK under the default profile.
#[test]
fn default_profile_refuses_i386_socketcall_socket() {
    let Some(env) = Env::new("i386") else { return };
    if !ia32_emulation() {
        eprintln!("SKIP: this kernel runs no i386 syscalls (no IA32 emulation)");
        return;
    }
    if !vsock_exists(&env) {
        eprintln!("SKIP: this kernel has no AF_VSOCK sockets to attack");
        return;
    }
    let probe = |v| env.probe(&[], &args("i386-socketcall", v));
    assert_eq!(
        probe([AF_VSOCK, SOCK_STREAM, 0]),
        -ENOSYS,
        "i386 socketcall AF_VSOCK"
    );
    assert_eq!(
        probe([AF_UNIX, SOCK_STREAM, 0]),
        -ENOSYS,
        "every family: the filter cannot tell"
    );
    let unconfined = ["--seccomp-profile", "unconfined"];
    let opened = env.probe(
        &unconfined,
        &args("i386-socketcall", [AF_VSOCK, SOCK_STREAM, 0]),
    );
    assert!(
        opened >= 0,
        "unconfined, the same call opens AF_VSOCK: {opened}"
    );
}

/// Podman's profile refuses NETLINK_AUDIT sockets to a workload without
/// CAP_AUDIT_WRITE (EINVAL) with `family == 16 && protocol == 9`, and allows
/// `family != 16` and `protocol != 9`: a high bit in either argument made
/// the 64-bit comparisons allow it.
#[test]
fn podman_profile_refuses_netlink_audit_with_high_bits_set() {
    let Some(env) = Env::new("podman") else {
        return;
    };
    let Some(fixtures) = moat_tests::fixtures_dir() else {
        eprintln!("SKIP: ../shared/fixtures not found (Podman's profile)");
        return;
    };
    let profile = fixtures.join("podman-seccomp.json");
    let profile = profile.to_str().unwrap();
    let opts = ["--seccomp-profile", profile, "--cap-drop", "AUDIT_WRITE"];
    let probe = |v| env.probe(&opts, &args("socket", v));
    assert_eq!(
        probe([AF_NETLINK, SOCK_RAW, NETLINK_AUDIT]),
        -EINVAL,
        "plain"
    );
    for v in [
        [AF_NETLINK | HIGH, SOCK_RAW, NETLINK_AUDIT],
        [AF_NETLINK, SOCK_RAW, NETLINK_AUDIT | HIGH],
        [AF_NETLINK | HIGH, SOCK_RAW, NETLINK_AUDIT | HIGH],
    ] {
        assert_eq!(probe(v), -EINVAL, "{v:x?}");
    }
    assert!(
        probe([AF_NETLINK | HIGH, SOCK_RAW, 0]) >= 0,
        "NETLINK_ROUTE opens"
    );
}
