//! The built-in `default` profile allows and denies exactly what Docker's
//! default profile does.
//!
//! Both profiles are compiled by the engine for the same target and the
//! two BPF programs are run side by side (with the interpreter in
//! `seccomp::bpf`) on every syscall number of every architecture the
//! filters accept, and on argument values that exercise the argument
//! filters: clone flags, socket families and types, personality values.
//! Docker's profile is read from `../shared/fixtures`; the test skips with
//! a message when that folder is absent.
//!
//! Compiled by moat, both profiles give the same verdicts for every value.
//! Compiled as Docker compiles it (libseccomp, all 64 bits of every
//! argument, socket rules mapped onto socketcall), Docker's profile differs
//! from moat's only where moat closes a bypass: values whose high 32 bits
//! are set on 32-bit arguments, and i386 socketcall(SYS_SOCKET). The last
//! test here pins that difference down.

use std::path::PathBuf;

use moat_runtime::caps::CapSet;
use moat_runtime::seccomp::arch::Host;
use moat_runtime::seccomp::bpf::Program;
use moat_runtime::seccomp::compile::{self, Dispatch, Options};
use moat_runtime::seccomp::profile::{Arch, KernelVersion, Profile};
use moat_runtime::seccomp::resolve::{self, Target};
use moat_runtime::seccomp::{builtin, parse, Source};

mod common;

use common::{compare, compare_with, X86_FAMILY};

fn docker_profile() -> Option<(Profile, Source)> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../shared/fixtures/moby-default-seccomp.json");
    if !path.exists() {
        eprintln!(
            "SKIP: {} not found; Docker's profile is needed to compare against",
            path.display()
        );
        return None;
    }
    Some((parse::from_file(&path).unwrap(), Source::File(path)))
}

fn program(p: &Profile, src: Source, target: &Target, dispatch: Dispatch) -> Program {
    compiled(p, src, target, dispatch, false)
}

fn compiled(
    p: &Profile,
    src: Source,
    target: &Target,
    dispatch: Dispatch,
    as_libseccomp: bool,
) -> Program {
    let resolved = resolve::resolve(p, src, target);
    compile::compile(
        &resolved,
        Options {
            dispatch,
            as_libseccomp,
            ..Default::default()
        },
    )
    .unwrap()
    .program
}

fn target(go_arch: &'static str, native: Arch, kernel: &str, caps: CapSet) -> Target {
    Target {
        host: Host {
            go_arch,
            native,
            kernel: KernelVersion::parse(kernel).unwrap(),
        },
        caps,
    }
}

fn assert_same_verdicts(t: &Target, arches: &[(Arch, i32)]) {
    let Some((docker, docker_src)) = docker_profile() else {
        return;
    };
    let ours = builtin::default_profile().unwrap();
    let a = program(&ours, builtin::SOURCE, t, Dispatch::Auto);
    let b = program(&docker, docker_src, t, Dispatch::Auto);
    let diffs = compare(&a, &b, arches);
    assert!(
        diffs.is_empty(),
        "{} verdicts differ for {} with caps {}; first ones:\n{}",
        diffs.len(),
        t.host.go_arch,
        t.caps,
        diffs[..diffs.len().min(20)].join("\n")
    );
}

fn this_host() -> Host {
    Host::detect().unwrap()
}

#[test]
fn same_verdicts_as_docker_on_this_host_with_docker_default_caps() {
    let host = this_host();
    let t = Target {
        host,
        caps: CapSet::docker_default(),
    };
    if t.host.native != Arch::X86_64 {
        eprintln!("SKIP: the exhaustive comparison is written for x86_64 hosts");
        return;
    }
    assert_same_verdicts(&t, &X86_FAMILY);
}

#[test]
fn same_verdicts_as_docker_on_this_host_with_cap_sys_admin() {
    let host = this_host();
    let caps = CapSet::docker_default()
        .with_changes(["CAP_SYS_ADMIN"], Vec::<&str>::new())
        .unwrap();
    if host.native != Arch::X86_64 {
        eprintln!("SKIP: the exhaustive comparison is written for x86_64 hosts");
        return;
    }
    assert_same_verdicts(&Target { host, caps }, &X86_FAMILY);
}

#[test]
fn same_verdicts_as_docker_for_other_capability_sets_and_kernels() {
    let sets = [
        CapSet::empty(),
        CapSet::all(),
        CapSet::docker_default()
            .with_changes(
                ["CAP_SYS_PTRACE", "CAP_BPF", "CAP_PERFMON", "CAP_SYS_NICE"],
                Vec::<&str>::new(),
            )
            .unwrap(),
    ];
    for caps in sets {
        for kernel in ["4.14", "5.8", "6.18"] {
            let t = target("amd64", Arch::X86_64, kernel, caps.clone());
            assert_same_verdicts(&t, &X86_FAMILY);
        }
    }
}

/// libseccomp can emit filters for foreign architectures of the same byte
/// order, so the arm64 resolution of both profiles is compared too.
#[test]
fn same_verdicts_as_docker_when_resolved_for_arm64() {
    for caps in [CapSet::docker_default(), CapSet::all()] {
        let t = target("arm64", Arch::Aarch64, "6.1", caps);
        assert_same_verdicts(&t, &[(Arch::Aarch64, 0), (Arch::Arm, 0)]);
    }
}

/// The binary tree is an optimisation only: it must not change a verdict.
#[test]
fn binary_tree_and_linear_programs_agree() {
    let t = Target {
        host: this_host(),
        caps: CapSet::docker_default(),
    };
    let ours = builtin::default_profile().unwrap();
    let tree = program(&ours, builtin::SOURCE, &t, Dispatch::BinaryTree);
    let linear = program(&ours, builtin::SOURCE, &t, Dispatch::Linear);
    assert_ne!(tree, linear, "the two dispatch strategies should differ");
    let arches = if t.host.native == Arch::X86_64 {
        X86_FAMILY.to_vec()
    } else {
        vec![(t.host.native, 0)]
    };
    let diffs = compare(&tree, &linear, &arches);
    assert!(
        diffs.is_empty(),
        "{}",
        diffs[..diffs.len().min(20)].join("\n")
    );
}

/// A sanity check that the comparison can fail: Docker's profile with one
/// rule changed must be told apart from ours.
#[test]
fn the_comparison_detects_a_single_changed_rule() {
    let Some((mut docker, src)) = docker_profile() else {
        return;
    };
    let rule = docker
        .syscalls
        .iter_mut()
        .find(|r| r.names.iter().any(|n| n == "getpid"))
        .expect("Docker allows getpid");
    rule.names.retain(|n| n != "getpid");
    let t = target("amd64", Arch::X86_64, "6.18", CapSet::docker_default());
    let ours = builtin::default_profile().unwrap();
    let a = program(&ours, builtin::SOURCE, &t, Dispatch::Auto);
    let b = program(&docker, src, &t, Dispatch::Auto);
    let diffs = compare(&a, &b, &[(Arch::X86_64, 0)]);
    assert!(!diffs.is_empty());
    assert!(diffs.iter().all(|d| d.contains("nr 39 ")), "{diffs:?}");
}

/// How moat's default profile differs from Docker's profile as Docker
/// compiles it (README, "Differences from Docker's profile"). Each diff is
/// one of three documented kinds, each kind occurs, and for every value
/// without high bits the two agree, apart from i386 socketcall(SYS_SOCKET).
#[test]
fn differs_from_dockers_own_compilation_only_where_moat_closes_a_bypass() {
    let Some((docker, src)) = docker_profile() else {
        return;
    };
    const SOCKET: i32 = 41;
    const PERSONALITY: i32 = 135;
    const I386_SOCKETCALL: i32 = 102;
    let t = target("amd64", Arch::X86_64, "6.18", CapSet::docker_default());
    let ours = program(
        &builtin::default_profile().unwrap(),
        builtin::SOURCE,
        &t,
        Dispatch::Auto,
    );
    let theirs = compiled(&docker, src, &t, Dispatch::Auto, true);
    let mut kinds = [0usize; 3];
    let diffs = compare_with(&ours, &theirs, &X86_FAMILY, |arch, nr, args, o, d| {
        let high = args[0] > u64::from(u32::MAX);
        let low = args[0] as u32;
        let kind = match (arch, nr) {
            // The kernel reads `int family`: AF_ALG and AF_VSOCK with
            // high bits set are refused by moat, allowed by Docker.
            (Arch::X86_64, SOCKET) if high && (low == 38 || low == 40) => 0,
            // `unsigned int persona`: an allowed persona with high bits set
            // is allowed by moat (the kernel sees it), refused by Docker.
            (Arch::X86_64, PERSONALITY)
                if high && [0, 8, 0x20000, 0x20008, 0xffff_ffff].contains(&low) =>
            {
                1
            }
            // socketcall(SYS_SOCKET) on i386: moat refuses it with ENOSYS,
            // since the family is behind a pointer; Docker allows it.
            (Arch::X86, I386_SOCKETCALL) if args[0] == 1 => 2,
            _ => {
                return Some(format!(
                    "undocumented: {} nr {nr} args {args:x?}: ours {o}, docker {d}",
                    arch.name()
                ))
            }
        };
        kinds[kind] += 1;
        None
    });
    assert!(
        diffs.is_empty(),
        "{}",
        diffs[..diffs.len().min(20)].join("\n")
    );
    assert!(
        kinds.iter().all(|&k| k > 0),
        "each documented kind occurs: {kinds:?}"
    );
}
