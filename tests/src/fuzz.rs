//! Entry points of the fuzz targets (`tests/fuzz`), shared with the test
//! that replays the committed crash inputs (`tests/tests/fuzz_regressions.rs`),
//! so a regression input runs through exactly the code the fuzzer ran.
//!
//! Each entry point takes arbitrary bytes and must return normally: a
//! panic, an abort or a hang is a bug. Errors for bad input are expected
//! and ignored. To add a target, write `pub fn NAME(data: &[u8])` here, list
//! it in [`TARGETS`], and add `tests/fuzz/fuzz_targets/NAME.rs` with its
//! `[[bin]]` entry (see `tests/fuzz/README.md`).

use std::path::Path;

use moat_runtime::caps::CapSet;
use moat_runtime::seccomp::arch::Host;
use moat_runtime::seccomp::bpf::{SeccompData, Verdict};
use moat_runtime::seccomp::compile::{self, Options};
use moat_runtime::seccomp::profile::{Arch, KernelVersion};
use moat_runtime::seccomp::resolve::{self, Target};
use moat_runtime::seccomp::{parse, CompileError, Source};

/// A fuzz target's entry point.
pub type Entry = fn(&[u8]);

/// Every fuzz target: its name (the directory of its seeds and regression
/// inputs) and its entry point.
pub const TARGETS: &[(&str, Entry)] = &[
    ("profile", profile),
    ("moatd_config", moatd_config),
    ("authz_request", authz_request),
    ("audit_reader", audit_reader),
    ("exposition_reader", exposition_reader),
];

pub use crate::fuzz_api::{audit_reader, exposition_reader};

/// A seccomp profile (Docker or OCI format, or an OCI config.json) parsed,
/// resolved for x86_64 with Docker's capabilities and with all of them, and
/// compiled; the program must then run to a verdict on sample syscalls of
/// every architecture of the x86 family. An internal compiler error
/// (`CompileError::Export`, which covers moat's own rewrites) is a bug too.
pub fn profile(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let source = Source::Builtin("fuzz");
    let Ok(p) = parse::from_str(text, source.clone()) else {
        return;
    };
    let host = Host {
        go_arch: "amd64",
        native: Arch::X86_64,
        kernel: KernelVersion {
            major: 6,
            minor: 18,
        },
    };
    for caps in [CapSet::docker_default(), CapSet::all()] {
        let target = Target {
            host: host.clone(),
            caps,
        };
        let resolved = resolve::resolve(&p, source.clone(), &target);
        let compiled = match compile::compile(&resolved, Options::default()) {
            Ok(c) => c,
            Err(e @ CompileError::Export { .. }) => panic!("internal compiler error: {e}"),
            Err(_) => continue,
        };
        for (arch, nr_bits) in [
            (0xc000_003e_u32, 0),
            (0x4000_0003, 0),
            (0xc000_003e, 0x4000_0000),
        ] {
            for nr in [0, 1, 41, 56, 102, 359, 435] {
                for arg in [0, 40, 0x1_0000_0028, u64::MAX] {
                    let d = SeccompData {
                        nr: nr | nr_bits,
                        arch,
                        instruction_pointer: 0,
                        args: [arg, arg, 1, 0, 0, 0],
                    };
                    let ret = compiled
                        .program
                        .evaluate(&d)
                        .unwrap_or_else(|e| panic!("compiled program does not run: {e}"));
                    let _ = Verdict::from_ret(ret);
                }
            }
        }
    }
}

/// moatd's configuration (TOML) parsed and validated as `moatd --config`
/// does, and turned into the kernel settings.
pub fn moatd_config(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(config) = moat_agent::config::Config::parse(text, Path::new("fuzz.toml")) {
        let _ = config.kernel_config();
    }
}

/// The Docker authorization decoders (`AuthZReq`, the bodies the policy
/// reads, `docker inspect` output, request URIs) with the policy crate's
/// invariants: no panic, every decision consistent, an unparsable body
/// denied.
pub fn authz_request(data: &[u8]) {
    moat_policy::fuzzing::check(data);
}
