//! Planning: the resolved rules as the libseccomp rules for one
//! architecture, with each syscall name resolved once, each argument
//! condition lowered on the bits the kernel reads there (see
//! [`super::args`]), and repeats dropped.
//!
//! Work is linear in the size of the profile: a name repeated a million
//! times in a rule, or a rule repeated, is handed to libseccomp once
//! (libseccomp's own rule insertion is quadratic in repeats).

use std::collections::{BTreeSet, HashSet};

use libseccomp::{ScmpAction, ScmpSyscall};

use super::args::{self, Atom, Lowered};
use super::compile::{libseccomp_version, to_scmp_action, Options, Warning};
use super::error::CompileError;
use super::profile::{Arch, ArgCondition};
use super::resolve::{ActionSpec, Resolved};
use super::width;

/// Most libseccomp rules (one per alternative of each syscall's rule) moat
/// hands libseccomp for one architecture. libseccomp's insertion time
/// grows with the square of the rules on one syscall (8,000 distinct
/// conditions on `read` took 2.3 s to add, 10,000 took 16 s to compile),
/// and a filter of more rules would not fit the kernel's 4096
/// instructions anyway. Docker's default profile needs about 400.
pub const MAX_RULES_PER_ARCH: usize = 4096;

/// A syscall name of a rule, resolved by libseccomp.
pub(super) struct Named<'a> {
    /// Index in `resolved.rules`.
    pub rule: usize,
    /// Index of the rule in the profile's `syscalls[]`.
    pub profile_index: usize,
    /// Index of the name in the rule's `names[]` (its first occurrence).
    pub name_index: usize,
    pub name: &'a str,
    pub syscall: ScmpSyscall,
}

/// Every (rule, name) pair that goes into the filter, in profile order,
/// without repeated names within a rule; unknown names are warned about
/// (or refused in strict mode); rules that repeat the default are counted.
pub(super) fn names<'a>(
    resolved: &'a Resolved,
    opts: Options,
    warnings: &mut Vec<Warning>,
) -> Result<(Vec<Named<'a>>, usize), CompileError> {
    let mut out = Vec::new();
    let mut redundant = 0;
    for (ri, rule) in resolved.rules.iter().enumerate() {
        if rule.action == resolved.default_action {
            // libseccomp refuses such rules, and they change nothing.
            redundant += 1;
            continue;
        }
        let mut seen = HashSet::new();
        for (n, name) in rule.names.iter().enumerate() {
            if !seen.insert(name.as_str()) {
                continue;
            }
            let Ok(syscall) = ScmpSyscall::from_name(name) else {
                let field = format!("syscalls[{}].names[{n}]", rule.index);
                if opts.strict {
                    return Err(CompileError::UnknownSyscall {
                        source_name: resolved.source.clone(),
                        field,
                        name: name.clone(),
                    });
                }
                warnings.push(Warning {
                    field,
                    message: format!(
                        "syscall {name:?} is unknown to libseccomp {}; rule skipped (as Docker does)",
                        libseccomp_version()
                    ),
                });
                continue;
            };
            out.push(Named {
                rule: ri,
                profile_index: rule.index,
                name_index: n,
                name,
                syscall,
            });
        }
    }
    Ok((out, redundant))
}

/// The libseccomp rules for one architecture.
pub(super) struct Plan {
    pub rules: Vec<PlannedRule>,
    /// Names of the syscalls with at least one rule.
    pub syscalls: BTreeSet<String>,
}

pub(super) struct PlannedRule {
    pub profile_index: usize,
    pub name_index: usize,
    pub name: String,
    pub syscall: ScmpSyscall,
    pub action: ScmpAction,
    pub spec: ActionSpec,
    /// Alternatives (ORed) of comparisons (ANDed); `[[]]` is unconditional.
    pub groups: Vec<Vec<Atom>>,
    /// Whether the profile gave the rule argument conditions.
    pub conditional: bool,
}

impl PlannedRule {
    /// The JSON path of the name, for messages.
    pub fn field(&self) -> String {
        format!(
            "syscalls[{}].names[{}]",
            self.profile_index, self.name_index
        )
    }
}

/// Lowers every named rule's conditions for `arch` (unless `lower` is
/// false: then they are compared on 64 bits as written) and drops repeats.
pub(super) fn for_arch(
    resolved: &Resolved,
    named: &[Named<'_>],
    arch: Arch,
    lower: bool,
) -> Result<Plan, CompileError> {
    let sees_high = width::filter_sees_high_bits(arch);
    let mut plan = Plan {
        rules: Vec::new(),
        syscalls: BTreeSet::new(),
    };
    let mut added: HashSet<(i32, ActionSpec, Vec<Vec<Atom>>)> = HashSet::new();
    let mut additions = 0usize;
    for n in named {
        let rule = &resolved.rules[n.rule];
        let lowered: Vec<(u32, Lowered)> = rule
            .args
            .iter()
            .map(|c| {
                let bits = lower
                    .then(|| width::kernel_bits(arch, n.name, c.index))
                    .flatten();
                (c.index, args::lower(c, bits, sees_high))
            })
            .collect();
        let groups = args::alternatives(&lowered).map_err(|count| CompileError::Unsupported {
            source_name: resolved.source.clone(),
            field: format!("syscalls[{}].args", n.profile_index),
            reason: format!(
                "the conditions of this rule expand to {count} comparisons for {}; at most {} are supported",
                n.name,
                args::MAX_ALTERNATIVES
            ),
        })?;
        if groups.is_empty() {
            continue; // the conditions never hold for any value the kernel sees
        }
        plan.syscalls.insert(n.name.to_string());
        if !added.insert((i32::from(n.syscall), rule.action, groups.clone())) {
            continue;
        }
        additions += groups.len();
        if additions > MAX_RULES_PER_ARCH {
            return Err(CompileError::Unsupported {
                source_name: resolved.source.clone(),
                field: format!("syscalls[{}]", n.profile_index),
                reason: format!(
                    "the profile needs more than {MAX_RULES_PER_ARCH} distinct rules on {} (counting each alternative of a condition); \
                     such a filter cannot fit the kernel's {} instructions",
                    arch.name(),
                    super::bpf::MAX_INSNS
                ),
            });
        }
        plan.rules.push(PlannedRule {
            profile_index: n.profile_index,
            name_index: n.name_index,
            name: n.name.to_string(),
            syscall: n.syscall,
            action: to_scmp_action(rule.action),
            spec: rule.action,
            groups,
            conditional: !rule.args.is_empty(),
        });
    }
    Ok(plan)
}

/// Warnings about argument conditions, for the filter's `arches` (native
/// first): values the kernel never sees, comparisons of pointers, and
/// 64-bit arguments on x32, where libseccomp compares only 32 bits.
pub(super) fn condition_warnings(
    resolved: &Resolved,
    named: &[Named<'_>],
    arches: &[Arch],
) -> Vec<Warning> {
    let Some(&native) = arches.first() else {
        return Vec::new();
    };
    let has_x32 = arches.contains(&Arch::X32);
    let mut out = Vec::new();
    for n in named {
        for (j, c) in resolved.rules[n.rule].args.iter().enumerate() {
            let field = format!("syscalls[{}].args[{j}]", n.profile_index);
            let mut warn = |message: String| {
                out.push(Warning {
                    field: field.clone(),
                    message,
                })
            };
            let arg = format!("argument {} of {}", c.index, n.name);
            let bits = width::kernel_bits(native, n.name, c.index);
            if let Some(msg) = unseen_value(c, bits) {
                warn(format!(
                    "{arg} is {} bits wide, so {msg}",
                    bits.unwrap_or(64)
                ));
            }
            let kind = width::kind(n.name, c.index);
            let null_check = c.value == 0
                && matches!(
                    c.op,
                    super::profile::Operator::Equal | super::profile::Operator::NotEqual
                );
            if kind == Some(width::Kind::Ptr) && !null_check {
                warn(format!(
                    "{arg} is a pointer: the filter compares the address, never the data it points to"
                ));
            }
            if has_x32 && kind == Some(width::Kind::W64) {
                warn(format!(
                    "on SCMP_ARCH_X32, libseccomp compares only the low 32 bits of {arg}, which the kernel reads as 64 bits"
                ));
            }
        }
    }
    out
}

/// For a condition on an argument of `bits` bits, why its value can never
/// reach the kernel, if that is so.
fn unseen_value(c: &ArgCondition, bits: Option<u32>) -> Option<String> {
    let n = bits.filter(|n| *n < 64)?;
    let max = (1u64 << n) - 1;
    let (value, what) = match c.op {
        super::profile::Operator::MaskedEqual => (c.value_two, "valueTwo"),
        _ => (c.value, "value"),
    };
    if value <= max {
        return None;
    }
    let verdict = match args::lower(c, Some(n), true) {
        Lowered::Always => "this condition always holds",
        Lowered::Never => "this condition never holds",
        Lowered::AnyOf(_) => return None,
    };
    Some(format!(
        "the {what} {value:#x} has bits above them set, which the kernel never sees: {verdict}"
    ))
}
