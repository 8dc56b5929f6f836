//! Turning a recorded set into a Docker-format profile that moat, Docker and
//! Podman accept: default `SCMP_ACT_ERRNO` (EPERM), the architectures used,
//! names sorted and grouped by the architectures they were made on, and the
//! base profile's argument rules kept for the syscalls that have them.

use std::collections::{BTreeMap, BTreeSet};

use libseccomp::{ScmpArch, ScmpSyscall};
use moat_common::{AUDIT_ARCH_I386, AUDIT_ARCH_X86_64};

use crate::seccomp::profile::{Action, Arch, Profile, SyscallRule};
use crate::seccomp::resolve::{Resolved, Rule};

/// Bit 30 of an x32 syscall number.
const X32_BIT: u32 = 0x4000_0000;
/// The start of every rule comment the writer makes; [`per_arch_names`]
/// reads the architectures back from it (for `--record-mode merge`).
pub const RECORDED_ON: &str = "recorded on ";
/// errno of the written default action.
const EPERM: u32 = libc::EPERM as u32;

/// The recorded syscalls by name: for each, the architectures it was made on.
pub type NamesByArch = BTreeMap<String, BTreeSet<Arch>>;

/// Names the recorded numbers per architecture. Numbers libseccomp has no
/// name for (newer than the linked libseccomp, or not syscalls at all) are
/// returned apart: a Docker profile can only name syscalls.
pub fn name_syscalls(set: &BTreeSet<(u32, u32)>) -> (NamesByArch, Vec<(Arch, u32)>) {
    let mut names = NamesByArch::new();
    let mut unnamed = Vec::new();
    for &(audit, nr) in set {
        let arch = match audit {
            AUDIT_ARCH_X86_64 if nr & X32_BIT != 0 => Arch::X32,
            AUDIT_ARCH_X86_64 => Arch::X86_64,
            AUDIT_ARCH_I386 => Arch::X86,
            _ => continue,
        };
        let scmp = match arch {
            Arch::X32 => ScmpArch::X32,
            Arch::X86 => ScmpArch::X86,
            _ => ScmpArch::X8664,
        };
        match ScmpSyscall::from(nr as i32).get_name_by_arch(scmp) {
            Ok(name) => {
                names.entry(name).or_default().insert(arch);
            }
            Err(_) => unnamed.push((arch, nr)),
        }
    }
    (names, unnamed)
}

/// The recorded names of an existing profile, for a merge: the names of
/// its allowing rules, on the architectures its `recorded on` comments
/// say, else on every architecture it lists.
pub fn per_arch_names(profile: &Profile) -> NamesByArch {
    let mut all: BTreeSet<Arch> = profile.architectures.iter().copied().collect();
    if all.is_empty() {
        all.insert(Arch::X86_64);
    }
    let mut names = NamesByArch::new();
    for rule in &profile.syscalls {
        if !matches!(rule.action, Action::Allow | Action::Log) {
            continue;
        }
        let arches = rule
            .comment
            .as_deref()
            .and_then(|c| c.rfind(RECORDED_ON).map(|i| &c[i + RECORDED_ON.len()..]))
            .map(|list| {
                list.split(", ")
                    .filter_map(|a| serde_json::from_value(serde_json::json!(a)).ok())
                    .collect::<BTreeSet<Arch>>()
            })
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| all.clone());
        for name in rule.all_names() {
            names
                .entry(name.to_string())
                .or_default()
                .extend(arches.iter().copied());
        }
    }
    names
}

/// Builds the profile for `names`, keeping `base`'s argument rules for the
/// names that have them and its refusals that differ from the new default
/// (Docker's `clone3` → ENOSYS, which glibc needs to fall back to `clone`).
pub fn build_profile(names: &NamesByArch, base: Option<&Resolved>, header: String) -> Profile {
    let mut arches: BTreeSet<Arch> = names.values().flatten().copied().collect();
    arches.insert(Arch::X86_64);
    let mut arches: Vec<Arch> = arches.into_iter().collect();
    arches.sort_by_key(|a| rank(*a));
    let base_rules: &[Rule] = base.map_or(&[], |b| &b.rules);
    let allows = |r: &Rule| matches!(r.action.action, Action::Allow | Action::Log);
    let with_args: BTreeSet<&str> = names
        .keys()
        .map(String::as_str)
        .filter(|name| {
            let rules: Vec<&Rule> = base_rules
                .iter()
                .filter(|r| r.names.iter().any(|n| n == name))
                .collect();
            let plain_allow = rules.iter().any(|r| allows(r) && r.args.is_empty());
            !plain_allow && rules.iter().any(|r| !r.args.is_empty())
        })
        .collect();

    let mut syscalls = Vec::new();
    // Plain allows, grouped by the architectures each name was made on.
    let mut groups: BTreeMap<Vec<Arch>, Vec<String>> = BTreeMap::new();
    for (name, on) in names {
        if !with_args.contains(name.as_str()) {
            let mut key: Vec<Arch> = on.iter().copied().collect();
            key.sort_by_key(|a| rank(*a));
            groups.entry(key).or_default().push(name.clone());
        }
    }
    // The group made on every architecture first, then by size.
    let mut groups: Vec<(Vec<Arch>, Vec<String>)> = groups.into_iter().collect();
    groups.sort_by(|a, b| {
        let ranks = |g: &[Arch]| g.iter().map(|a| rank(*a)).collect::<Vec<_>>();
        b.0.len()
            .cmp(&a.0.len())
            .then(ranks(&a.0).cmp(&ranks(&b.0)))
    });
    for (on, list) in groups {
        syscalls.push(rule(
            list,
            Action::Allow,
            None,
            Vec::new(),
            comment_for(&on),
        ));
    }
    // The base profile's argument rules, name by name.
    for name in &with_args {
        for r in base_rules
            .iter()
            .filter(|r| r.names.iter().any(|n| n == name))
        {
            if r.args.is_empty() && allows(r) {
                continue;
            }
            let on: Vec<Arch> = names[*name].iter().copied().collect();
            syscalls.push(rule(
                vec![name.to_string()],
                r.action.action,
                r.action.errno,
                r.args.clone(),
                format!("argument rule of the base profile; {}", comment_for(&on)),
            ));
        }
    }
    // The base's own refusals that the new default would change.
    for r in base_rules {
        let kept: Vec<String> = r
            .names
            .iter()
            .filter(|n| !names.contains_key(*n))
            .cloned()
            .collect();
        let same_as_default = r.action.action == Action::Errno && r.action.errno == Some(EPERM);
        if kept.is_empty() || allows(r) || !r.args.is_empty() || same_as_default {
            continue;
        }
        syscalls.push(rule(
            kept,
            r.action.action,
            r.action.errno,
            Vec::new(),
            "refused as the base profile refuses it (not recorded)".into(),
        ));
    }
    Profile {
        comment: Some(header),
        default_action: Action::Errno,
        default_errno_ret: Some(EPERM),
        default_errno: None,
        architectures: arches,
        arch_map: Vec::new(),
        flags: Vec::new(),
        listener_path: None,
        listener_metadata: None,
        syscalls,
    }
}

/// x86_64 first, then i386, then x32.
fn rank(a: Arch) -> u8 {
    match a {
        Arch::X86_64 => 0,
        Arch::X86 => 1,
        Arch::X32 => 2,
        _ => 3,
    }
}

fn comment_for(on: &[Arch]) -> String {
    let mut on = on.to_vec();
    on.sort_by_key(|a| rank(*a));
    let list: Vec<String> = on.iter().map(|a| a.name()).collect();
    format!("{RECORDED_ON}{}", list.join(", "))
}

fn rule(
    mut names: Vec<String>,
    action: Action,
    errno: Option<u32>,
    args: Vec<crate::seccomp::profile::ArgCondition>,
    comment: String,
) -> SyscallRule {
    names.sort();
    SyscallRule {
        name: None,
        names,
        action,
        errno_ret: if action.takes_errno() { errno } else { None },
        errno: None,
        args,
        includes: Default::default(),
        excludes: Default::default(),
        comment: Some(comment),
    }
}

/// The profile as written: pretty JSON and a final newline.
pub fn to_json(profile: &Profile) -> String {
    let mut s = serde_json::to_string_pretty(profile).unwrap_or_default();
    s.push('\n');
    s
}
