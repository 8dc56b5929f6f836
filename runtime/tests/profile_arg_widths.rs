//! Argument conditions compare the bits the kernel reads, on every
//! architecture moat compiles (x86_64, i386, x32, and arm64 when resolved
//! for it), checked by running the compiled programs in the interpreter.
//!
//! - every operator on a 32-bit argument (`int family` of socket), with
//!   register values whose high 32 bits are set;
//! - 64-bit arguments (`unsigned long` flags of unshare) keep 64-bit
//!   comparisons where the kernel reads 64 bits;
//! - 16-bit arguments (`umode_t`) compare 16 bits;
//! - Podman's NETLINK_AUDIT rule holds against high bits;
//! - i386 socketcall(SYS_SOCKET) is refused when socket is filtered.

use libseccomp::{ScmpArch, ScmpSyscall};

use moat_runtime::caps::CapSet;
use moat_runtime::seccomp::arch::Host;
use moat_runtime::seccomp::bpf::{Program, SeccompData, Verdict};
use moat_runtime::seccomp::compile::{self, Compiled, Options};
use moat_runtime::seccomp::profile::{Arch, KernelVersion};
use moat_runtime::seccomp::resolve::{self, Target};
use moat_runtime::seccomp::{parse, Source};

const ALLOW: Verdict = Verdict::Allow;
const EPERM: Verdict = Verdict::Errno(1);

fn target(go_arch: &'static str, native: Arch) -> Target {
    Target {
        host: Host {
            go_arch,
            native,
            kernel: KernelVersion {
                major: 6,
                minor: 18,
            },
        },
        caps: CapSet::docker_default(),
    }
}

fn build(json: &str, t: &Target, as_libseccomp: bool) -> Compiled {
    let src = Source::Builtin("test");
    let p = parse::from_str(json, src.clone()).unwrap_or_else(|e| panic!("{e}"));
    let opts = Options {
        as_libseccomp,
        ..Default::default()
    };
    compile::compile(&resolve::resolve(&p, src, t), opts).unwrap_or_else(|e| panic!("{e}"))
}

/// Every architecture of the filters below, with how to find a syscall's
/// number there.
const ARCHES: [(Arch, ScmpArch); 4] = [
    (Arch::X86_64, ScmpArch::X8664),
    (Arch::X86, ScmpArch::X86),
    (Arch::X32, ScmpArch::X32),
    (Arch::Aarch64, ScmpArch::Aarch64),
];

fn verdict(p: &Program, arch: Arch, scmp: ScmpArch, name: &str, args: [u64; 6]) -> Verdict {
    // libseccomp names i386's socket calls by their socketcall pseudo
    // numbers; the direct syscall is 359 (syscall_32.tbl).
    let nr = match (arch, name) {
        (Arch::X86, "socket") => 359,
        _ => i32::from(ScmpSyscall::from_name_by_arch(name, scmp).unwrap()),
    };
    let d = SeccompData {
        nr,
        arch: arch.audit_arch().unwrap(),
        instruction_pointer: 0,
        args,
    };
    Verdict::from_ret(p.evaluate(&d).unwrap())
}

fn profile_for(name: &str, index: u32, op: &str, value: u64, value_two: u64) -> String {
    format!(
        r#"{{"defaultAction": "SCMP_ACT_ERRNO", "defaultErrnoRet": 1,
            "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32", "SCMP_ARCH_AARCH64"],
            "syscalls": [{{"names": ["{name}"], "action": "SCMP_ACT_ALLOW",
              "args": [{{"index": {index}, "value": {value}, "valueTwo": {value_two}, "op": "{op}"}}]}}]}}"#
    )
}

const OPS: [&str; 7] = [
    "SCMP_CMP_EQ",
    "SCMP_CMP_NE",
    "SCMP_CMP_LT",
    "SCMP_CMP_LE",
    "SCMP_CMP_GT",
    "SCMP_CMP_GE",
    "SCMP_CMP_MASKED_EQ",
];

/// The condition on the value the kernel sees.
fn holds(op: &str, kv: u64, value: u64, value_two: u64) -> bool {
    match op {
        "SCMP_CMP_EQ" => kv == value,
        "SCMP_CMP_NE" => kv != value,
        "SCMP_CMP_LT" => kv < value,
        "SCMP_CMP_LE" => kv <= value,
        "SCMP_CMP_GT" => kv > value,
        "SCMP_CMP_GE" => kv >= value,
        _ => kv & value == value_two,
    }
}

/// Register values around `v`, with and without high bits.
fn probes(v: u64) -> Vec<u64> {
    let mut out = Vec::new();
    for low in [v.wrapping_sub(1), v, v + 1, 0, 0xffff_ffff, 0x8000_0000] {
        let low = low & 0xffff_ffff;
        out.extend([
            low,
            low | 1 << 32,
            low | 0xffff_ffff_0000_0000,
            low | 1 << 63,
        ]);
    }
    out
}

#[test]
fn every_operator_compares_a_32_bit_argument_on_its_low_word_on_every_arch() {
    let t = target("amd64", Arch::X86_64);
    let mut checked = 0;
    for op in OPS {
        // socket's `int family` is AF_VSOCK (40) whatever the high bits.
        let (value, value_two) = if op == "SCMP_CMP_MASKED_EQ" {
            (0xff, 40)
        } else {
            (40, 0)
        };
        let c = build(&profile_for("socket", 0, op, value, value_two), &t, false);
        for (arch, scmp) in ARCHES {
            for arg in probes(40) {
                let want = if holds(op, arg & 0xffff_ffff, value, value_two) {
                    ALLOW
                } else {
                    EPERM
                };
                let got = verdict(&c.program, arch, scmp, "socket", [arg, 1, 0, 0, 0, 0]);
                assert_eq!(got, want, "{op} 40 on {} with {arg:#x}", arch.name());
                checked += 1;
            }
        }
    }
    assert_eq!(checked, 7 * 4 * 24);
}

/// The attack itself, on x86_64: Docker's family rules compiled on 64 bits
/// let AF_VSOCK and AF_ALG through with a high bit set; moat's do not.
#[test]
fn socket_families_with_high_bits_are_refused_as_the_kernel_reads_them() {
    let json = r#"{"defaultAction": "SCMP_ACT_ERRNO", "defaultErrnoRet": 1, "syscalls": [
        {"names": ["socket"], "action": "SCMP_ACT_ALLOW", "args": [{"index": 0, "value": 38, "op": "SCMP_CMP_LT"}]},
        {"names": ["socket"], "action": "SCMP_ACT_ALLOW", "args": [{"index": 0, "value": 39, "op": "SCMP_CMP_EQ"}]},
        {"names": ["socket"], "action": "SCMP_ACT_ALLOW", "args": [{"index": 0, "value": 40, "op": "SCMP_CMP_GT"}]}]}"#;
    let t = target("amd64", Arch::X86_64);
    let (moat, docker) = (build(json, &t, false), build(json, &t, true));
    let x = |c: &Compiled, family| {
        verdict(
            &c.program,
            Arch::X86_64,
            ScmpArch::X8664,
            "socket",
            [family, 1, 0, 0, 0, 0],
        )
    };
    for family in [0x1_0000_0028, 0x1_0000_0026, 0xffff_ffff_0000_0028] {
        assert_eq!(
            x(&docker, family),
            ALLOW,
            "{family:#x} passes a 64-bit compare"
        );
        assert_eq!(x(&moat, family), EPERM, "{family:#x} is refused by moat");
    }
    for family in [1, 2, 10, 39, 41, 0x1_0000_0002] {
        assert_eq!(x(&moat, family), ALLOW, "{family:#x}");
    }
}

#[test]
fn sixty_four_bit_arguments_keep_64_bit_comparisons() {
    // unshare(unsigned long): the kernel reads all 64 bits on x86_64 and
    // arm64 (a flag above bit 31 makes it fail with EINVAL), 32 on i386.
    let t = target("amd64", Arch::X86_64);
    for op in OPS {
        let (value, value_two) = if op == "SCMP_CMP_MASKED_EQ" {
            (0x1_1000_0000, 0x1_0000_0000)
        } else {
            (0x1_1000_0000, 0)
        };
        let c = build(&profile_for("unshare", 0, op, value, value_two), &t, false);
        for arg in [
            0x1000_0000u64,
            0x1_1000_0000,
            0x2_1000_0000,
            0x1_0000_0000,
            0,
            u64::MAX,
        ] {
            for (arch, scmp) in [ARCHES[0], ARCHES[3]] {
                let want = if holds(op, arg, value, value_two) {
                    ALLOW
                } else {
                    EPERM
                };
                assert_eq!(
                    verdict(&c.program, arch, scmp, "unshare", [arg, 0, 0, 0, 0, 0]),
                    want,
                    "{op} on {} with {arg:#x}",
                    arch.name()
                );
            }
            // i386 passes 32-bit registers: the value 0x1_1000_0000 is
            // out of its reach, so the condition is decided on 32 bits.
            let want = if holds(op, arg & 0xffff_ffff, value, value_two) {
                ALLOW
            } else {
                EPERM
            };
            assert_eq!(
                verdict(
                    &c.program,
                    Arch::X86,
                    ScmpArch::X86,
                    "unshare",
                    [arg, 0, 0, 0, 0, 0]
                ),
                want,
                "{op} on i386 with {arg:#x}"
            );
        }
    }
}

#[test]
fn sixteen_bit_arguments_compare_16_bits() {
    // fchmod(unsigned int fd, umode_t mode): refuse setuid bits, with every
    // operator, whatever lies above bit 15.
    let t = target("amd64", Arch::X86_64);
    for op in OPS {
        let (value, value_two) = if op == "SCMP_CMP_MASKED_EQ" {
            (0o4000, 0o4000)
        } else {
            (0o4755, 0)
        };
        let c = build(&profile_for("fchmod", 1, op, value, value_two), &t, false);
        for low in [0o644u64, 0o4755, 0o4754, 0o4756, 0o7777, 0xffff, 0] {
            for high in [0u64, 0x1_0000, 0xffff_0000, 0xffff_ffff_ffff_0000] {
                let arg = low | high;
                let want = if holds(op, low, value, value_two) {
                    ALLOW
                } else {
                    EPERM
                };
                for (arch, scmp) in ARCHES {
                    assert_eq!(
                        verdict(&c.program, arch, scmp, "fchmod", [3, arg, 0, 0, 0, 0]),
                        want,
                        "{op} {value:#o} on {} with {arg:#x}",
                        arch.name()
                    );
                }
            }
        }
    }
}

/// Podman refuses NETLINK_AUDIT sockets without CAP_AUDIT_WRITE with
/// `family == 16 && protocol == 9 -> EPERM` and allows `protocol != 9` or
/// `family != 16`; on 64 bits a high bit in either argument slips past.
#[test]
fn podmans_netlink_audit_rule_holds_against_high_bits() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../shared/fixtures/podman-seccomp.json");
    if !path.exists() {
        eprintln!("SKIP: {} not found", path.display());
        return;
    }
    let p = parse::from_file(&path).unwrap();
    let mut t = target("amd64", Arch::X86_64);
    t.caps = CapSet::docker_default()
        .with_changes(Vec::<&str>::new(), ["CAP_AUDIT_WRITE"])
        .unwrap();
    let compiled = |as_libseccomp| {
        let opts = Options {
            as_libseccomp,
            ..Default::default()
        };
        compile::compile(&resolve::resolve(&p, Source::File(path.clone()), &t), opts).unwrap()
    };
    let (moat, podman) = (compiled(false), compiled(true));
    let x = |c: &Compiled, args| verdict(&c.program, Arch::X86_64, ScmpArch::X8664, "socket", args);
    let refused = x(&moat, [16, 3, 9, 0, 0, 0]);
    assert!(
        matches!(refused, Verdict::Errno(_)),
        "plain NETLINK_AUDIT: {refused}"
    );
    for args in [
        [16 | 1 << 32, 3, 9, 0, 0, 0],
        [16, 3, 9 | 1 << 32, 0, 0, 0],
        [16 | 1 << 32, 3, 9 | 1 << 32, 0, 0, 0],
    ] {
        assert_eq!(
            x(&podman, args),
            ALLOW,
            "{args:x?} slips past a 64-bit compare"
        );
        assert_eq!(x(&moat, args), refused, "{args:x?}");
    }
    assert_eq!(x(&moat, [16, 3, 0, 0, 0, 0]), ALLOW, "NETLINK_ROUTE");
}

#[test]
fn i386_socketcall_is_refused_for_the_filtered_socket_call_only() {
    let json = r#"{"defaultAction": "SCMP_ACT_ERRNO", "defaultErrnoRet": 1,
        "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86"],
        "syscalls": [
          {"names": ["socketcall", "bind", "getpid"], "action": "SCMP_ACT_ALLOW"},
          {"names": ["socket"], "action": "SCMP_ACT_ALLOW", "args": [{"index": 0, "value": 40, "op": "SCMP_CMP_NE"}]}]}"#;
    let t = target("amd64", Arch::X86_64);
    let (moat, docker) = (build(json, &t, false), build(json, &t, true));
    let call = |c: &Compiled, n| {
        let d = SeccompData {
            nr: 102,
            arch: Arch::X86.audit_arch().unwrap(),
            instruction_pointer: 0,
            args: [n, 0x1000, 0, 0, 0, 0],
        };
        Verdict::from_ret(c.program.evaluate(&d).unwrap())
    };
    assert_eq!(
        call(&docker, 1),
        ALLOW,
        "libseccomp lets SYS_SOCKET through"
    );
    assert_eq!(call(&moat, 1), Verdict::Errno(libc::ENOSYS as u16));
    assert_eq!(call(&moat, 2), ALLOW, "SYS_BIND");
    // The kernel reads the low 32 bits of i386 registers: still SYS_SOCKET.
    assert_eq!(
        call(&moat, 1 | 1 << 32),
        Verdict::Errno(libc::ENOSYS as u16)
    );
    let notes = moat.notes();
    assert_eq!(
        notes,
        ["on SCMP_ARCH_X86, socketcall(2) refuses socket with ENOSYS: the profile filters their arguments, which socketcall passes behind a pointer"]
    );
    // The direct i386 socket syscall is filtered by family.
    assert_eq!(
        verdict(
            &moat.program,
            Arch::X86,
            ScmpArch::X86,
            "socket",
            [40, 1, 0, 0, 0, 0]
        ),
        EPERM
    );
    assert_eq!(
        verdict(
            &moat.program,
            Arch::X86,
            ScmpArch::X86,
            "socket",
            [2, 1, 0, 0, 0, 0]
        ),
        ALLOW
    );
    // x86_64 has no socketcall: its number 102 (getuid) is untouched.
    let d = SeccompData {
        nr: 102,
        arch: Arch::X86_64.audit_arch().unwrap(),
        instruction_pointer: 0,
        args: [1, 0, 0, 0, 0, 0],
    };
    assert_eq!(Verdict::from_ret(moat.program.evaluate(&d).unwrap()), EPERM);
}

/// i386's `mmap` (number 90, old_mmap) takes a pointer to its arguments:
/// a rule on mmap's `prot` compared that pointer, which the caller picks.
/// With the rule filtering mmap's arguments it is refused with ENOSYS
/// (glibc maps memory through mmap2); x86_64's mmap is filtered as written.
#[test]
fn i386_old_mmap_is_refused_when_mmap_is_filtered_by_argument() {
    let json = r#"{"defaultAction": "SCMP_ACT_ALLOW",
        "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86"],
        "syscalls": [{"names": ["mmap"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1,
          "args": [{"index": 2, "value": 4, "valueTwo": 4, "op": "SCMP_CMP_MASKED_EQ"}]}]}"#;
    let t = target("amd64", Arch::X86_64);
    let (moat, libseccomp) = (build(json, &t, false), build(json, &t, true));
    let i386 = |c: &Compiled, nr, args| {
        let d = SeccompData {
            nr,
            arch: Arch::X86.audit_arch().unwrap(),
            instruction_pointer: 0,
            args,
        };
        Verdict::from_ret(c.program.evaluate(&d).unwrap())
    };
    // old_mmap(ptr): arg 2 is whatever the caller left in edx.
    assert_eq!(i386(&libseccomp, 90, [0x1000, 0, 0, 0, 0, 0]), ALLOW);
    assert_eq!(
        i386(&moat, 90, [0x1000, 0, 0, 0, 0, 0]),
        Verdict::Errno(libc::ENOSYS as u16)
    );
    assert_eq!(
        i386(&moat, 192, [0, 4096, 4, 0, 0, 0]),
        ALLOW,
        "mmap2 is another syscall"
    );
    let x = |prot| {
        verdict(
            &moat.program,
            Arch::X86_64,
            ScmpArch::X8664,
            "mmap",
            [0, 4096, prot, 0x22, 0, 0],
        )
    };
    assert_eq!(x(7), EPERM);
    assert_eq!(x(3), ALLOW);
    assert!(moat
        .notes()
        .iter()
        .any(|n| n.starts_with("on SCMP_ARCH_X86, mmap(2) is refused with ENOSYS")));
}
