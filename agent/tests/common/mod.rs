//! Helpers shared by the agent's privileged integration tests.

use std::path::Path;

/// Why BPF programs cannot be loaded here, or `None` when the test should run.
///
/// Only "cannot possibly work" conditions count: not root, or a kernel without BTF
/// (which also means a kernel too old or too stripped for moat). Anything else,
/// such as the verifier refusing a program, is a real failure and must fail.
pub fn bpf_unavailable() -> Option<String> {
    if !nix::unistd::geteuid().is_root() {
        return Some("not root: loading eBPF programs needs root".to_owned());
    }
    let btf = Path::new("/sys/kernel/btf/vmlinux");
    if !btf.exists() {
        return Some(format!("BPF unavailable: {} is missing", btf.display()));
    }
    None
}

/// Returns early from the calling test, saying why, when BPF is unavailable.
#[macro_export]
macro_rules! skip_without_bpf {
    () => {
        if let Some(reason) = common::bpf_unavailable() {
            eprintln!("SKIP: {reason}");
            return;
        }
    };
}
