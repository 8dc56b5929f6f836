#![allow(dead_code)] // each test crate uses a different part of this module
//! Shared by the profile tests: running two BPF programs side by side on
//! every syscall number and on argument values that cross every argument
//! filter in the profiles under test.

use moat_runtime::seccomp::bpf::{Program, SeccompData, Verdict};
use moat_runtime::seccomp::profile::Arch;

/// x32 syscall numbers carry this bit.
pub const X32_SYSCALL_BIT: i32 = 0x4000_0000;
/// Syscall numbers probed per architecture: above every current table.
pub const MAX_NR: i32 = 1024;

/// The architectures an x86_64 filter covers, with their number bits.
pub const X86_FAMILY: [(Arch, i32); 3] = [
    (Arch::X86_64, 0),
    (Arch::X86, 0),
    (Arch::X32, X32_SYSCALL_BIT),
];

/// Values that cross every argument filter in Docker's profile: each
/// single bit (clone flags), the address families, the personality values
/// Docker allows and their neighbours, and all of these with high bits set.
pub fn interesting_values() -> Vec<u64> {
    let mut v: Vec<u64> = (0..64).map(|b| 1u64 << b).collect();
    v.extend(0..=64); // address families, socket types, small flags
    v.extend([
        0x0008,      // PER_LINUX32
        0x20000,     // UNAME26
        0x20008,     // PER_LINUX32 | UNAME26
        0xffff_ffff, // personality query
        0x0011,      // SIGCHLD
        0x7e02_0000, // all namespace flags
        0x7e02_0011,
        0x003d_0f00, // pthread_create's clone flags
        0x0100_0011, // fork()'s clone flags
        0x1_0000_0000,
        0xffff_ffff_ffff_ffff,
        0x8000_0000_0000_0011,
    ]);
    // The filtered values with high bits the kernel does not read (an
    // `int family` of 0x1_0000_0028 is AF_VSOCK).
    for low in [
        0,
        8,
        38,
        39,
        40,
        41,
        0x20000,
        0x20008,
        0xffff_ffff,
        0x7e02_0000,
    ] {
        v.extend([low | 1 << 32, low | 0xffff_ffff_0000_0000]);
    }
    v.sort_unstable();
    v.dedup();
    v
}

/// Compares the two programs' verdicts for every syscall of `arches`,
/// returning the mismatches as readable lines.
pub fn compare(ours: &Program, docker: &Program, arches: &[(Arch, i32)]) -> Vec<String> {
    compare_with(ours, docker, arches, |arch, nr, args, o, k| {
        Some(format!(
            "{} nr {nr} args {args:x?}: ours {o}, docker {k}",
            arch.name()
        ))
    })
}

/// Like [`compare`], with `explain` deciding what to report for each
/// mismatch (`None`: an expected difference).
pub fn compare_with(
    ours: &Program,
    docker: &Program,
    arches: &[(Arch, i32)],
    mut explain: impl FnMut(Arch, i32, [u64; 6], Verdict, Verdict) -> Option<String>,
) -> Vec<String> {
    let values = interesting_values();
    let mut diffs = Vec::new();
    for &(arch, nr_bits) in arches {
        let audit = arch.audit_arch().expect("audit arch known");
        for nr in 0..MAX_NR {
            let mut inputs = vec![[0u64; 6]];
            for &v in &values {
                // Every argument filter in Docker's profile is on argument 0
                // or 1 (clone flags are argument 1 on s390 only).
                for i in 0..2 {
                    let mut a = [0u64; 6];
                    a[i] = v;
                    inputs.push(a);
                }
            }
            for args in inputs {
                let d = SeccompData {
                    nr: nr | nr_bits,
                    arch: audit,
                    instruction_pointer: 0,
                    args,
                };
                let o = Verdict::from_ret(ours.evaluate(&d).unwrap());
                let k = Verdict::from_ret(docker.evaluate(&d).unwrap());
                if o != k {
                    diffs.extend(explain(arch, nr, args, o, k));
                }
            }
        }
    }
    diffs
}

/// Compares the verdicts for every syscall number of an architecture the
/// filters do not cover (arguments do not matter there).
pub fn compare_foreign(a: &Program, b: &Program, arch: Arch) -> Vec<String> {
    let audit = arch.audit_arch().expect("audit arch known");
    (0..MAX_NR)
        .filter_map(|nr| {
            let d = SeccompData {
                nr,
                arch: audit,
                ..Default::default()
            };
            let (x, y) = (
                Verdict::from_ret(a.evaluate(&d).unwrap()),
                Verdict::from_ret(b.evaluate(&d).unwrap()),
            );
            (x != y).then(|| format!("{} nr {nr}: {x} vs {y}", arch.name()))
        })
        .collect()
}
