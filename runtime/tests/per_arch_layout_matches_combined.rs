//! moat compiles each architecture in its own libseccomp filter and chains
//! the programs (much faster to generate). This proves the chained program
//! gives exactly the verdicts of libseccomp's single multi-architecture
//! filter, for the built-in profile and every fixture profile, on every
//! syscall number of x86_64, i386 and x32 and on numbers of architectures
//! the filter does not cover.

mod common;

use std::path::PathBuf;

use common::{compare, compare_foreign, X86_FAMILY};
use moat_runtime::caps::CapSet;
use moat_runtime::seccomp::arch::Host;
use moat_runtime::seccomp::compile::{self, Dispatch, Layout, Options};
use moat_runtime::seccomp::profile::{Arch, Profile};
use moat_runtime::seccomp::resolve::{self, Target};
use moat_runtime::seccomp::{builtin, parse, Source};

fn profiles() -> Vec<(Profile, Source)> {
    let mut out = vec![(builtin::default_profile().unwrap(), builtin::SOURCE)];
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/fixtures");
    match std::fs::read_dir(&dir) {
        Ok(entries) => {
            for e in entries {
                let p = e.unwrap().path();
                if p.extension().is_some_and(|x| x == "json") {
                    out.push((parse::from_file(&p).unwrap(), Source::File(p)));
                }
            }
        }
        Err(_) => eprintln!(
            "SKIP (partly): {} not found; built-in profile only",
            dir.display()
        ),
    }
    out
}

#[test]
fn chained_per_arch_programs_match_one_libseccomp_filter() {
    let host = Host::detect().unwrap();
    if host.native != Arch::X86_64 {
        eprintln!("SKIP: written for x86_64 hosts");
        return;
    }
    for caps in [CapSet::docker_default(), CapSet::all()] {
        let target = Target {
            host: host.clone(),
            caps,
        };
        for (i, (profile, src)) in profiles().into_iter().enumerate() {
            let resolved = resolve::resolve(&profile, src.clone(), &target);
            // Both dispatch strategies for the built-in profile, the one moat
            // picks for the others: the chaining does not depend on it.
            let dispatches: &[Dispatch] = if i == 0 {
                &[Dispatch::Linear, Dispatch::BinaryTree]
            } else {
                &[Dispatch::Auto]
            };
            for &dispatch in dispatches {
                let build = |layout| {
                    compile::compile(
                        &resolved,
                        Options {
                            dispatch,
                            layout,
                            ..Default::default()
                        },
                    )
                    .unwrap()
                    .program
                };
                let chained = build(Layout::PerArch);
                let combined = build(Layout::Combined);
                let mut diffs = compare(&chained, &combined, &X86_FAMILY);
                // A foreign architecture gets the bad-architecture verdict.
                diffs.extend(compare_foreign(&chained, &combined, Arch::Aarch64));
                assert!(
                    diffs.is_empty(),
                    "{src} ({dispatch:?}): {} differences, first: {:?}",
                    diffs.len(),
                    &diffs[..diffs.len().min(10)]
                );
            }
        }
    }
}
