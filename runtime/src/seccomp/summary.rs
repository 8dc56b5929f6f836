//! What a compiled profile does on this host, for `moat profile check`.
//!
//! Counts come from running the compiled program (see [`super::bpf`]) on
//! every syscall number of the native architecture, so they describe the
//! filter the kernel would get, not the JSON.

use std::collections::BTreeSet;

use super::arch::Host;
use super::bpf::{SeccompData, Verdict};
use super::compile::Compiled;
use super::resolve::Resolved;

/// Highest syscall number probed: above every current architecture's table.
const MAX_PROBED_NR: i32 = 1024;

/// A per-host summary of a profile.
#[derive(Debug, Clone)]
pub struct Summary {
    /// The default verdict, as text.
    pub default_action: String,
    /// Architectures the filter accepts.
    pub architectures: Vec<String>,
    /// Native syscalls allowed whatever their arguments.
    pub allowed: Vec<String>,
    /// Native syscalls refused whatever their arguments, with the verdict.
    pub denied: Vec<(String, Verdict)>,
    /// Syscalls whose verdict depends on their arguments.
    pub argument_filtered: Vec<String>,
    /// Rules that apply on this host.
    pub rules_applied: usize,
    /// Rules skipped by includes/excludes on this host.
    pub rules_skipped: usize,
    /// Program length in instructions.
    pub instructions: usize,
    /// Whether the program uses a binary tree.
    pub binary_tree: bool,
}

/// Summarises `compiled` (from `resolved`) for `host`.
pub fn summarize(resolved: &Resolved, compiled: &Compiled, host: &Host) -> Summary {
    let arg_filtered: BTreeSet<&str> = resolved
        .rules
        .iter()
        .filter(|r| !r.args.is_empty() && r.action != resolved.default_action)
        .flat_map(|r| r.names.iter().map(String::as_str))
        .filter(|n| compiled.syscalls_in_filter.iter().any(|s| s == n))
        .collect();
    let native = libseccomp::ScmpArch::native();
    let audit = host.native.audit_arch().unwrap_or(0);
    let (mut allowed, mut denied) = (Vec::new(), Vec::new());
    for nr in 0..MAX_PROBED_NR {
        let Ok(name) = libseccomp::ScmpSyscall::from(nr).get_name_by_arch(native) else {
            continue;
        };
        if arg_filtered.contains(name.as_str()) {
            continue;
        }
        let data = SeccompData {
            nr,
            arch: audit,
            ..Default::default()
        };
        match compiled.program.evaluate(&data).map(Verdict::from_ret) {
            Ok(Verdict::Allow | Verdict::Log) => allowed.push(name),
            Ok(v) => denied.push((name, v)),
            Err(_) => denied.push((name, Verdict::KillProcess)),
        }
    }
    Summary {
        default_action: resolved.default_action.to_string(),
        architectures: resolved.architectures.iter().map(|a| a.name()).collect(),
        allowed,
        denied,
        argument_filtered: arg_filtered.into_iter().map(str::to_string).collect(),
        rules_applied: resolved.rules.len(),
        rules_skipped: resolved.skipped.len(),
        instructions: compiled.program.len(),
        binary_tree: compiled.binary_tree,
    }
}
