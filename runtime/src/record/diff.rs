//! `moat profile diff A B`: what one profile allows that the other does not,
//! per architecture, argument rules included, both resolved for the same host
//! and capability set.

use std::collections::BTreeSet;

use libseccomp::{ScmpArch, ScmpSyscall};

use crate::seccomp::profile::{Action, Arch, ArgCondition, Operator};
use crate::seccomp::resolve::{ActionSpec, Resolved};

/// What a profile does with one syscall on one architecture.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Verdict {
    /// Allowed whatever its arguments.
    Allow,
    /// Refused (or otherwise not allowed) whatever its arguments.
    Refuse(String),
    /// Depends on the arguments: the rules, and the verdict otherwise.
    Conditional(String),
    /// The architecture is not in the profile: the filter refuses it all.
    NoArch,
}

impl Verdict {
    fn text(&self) -> String {
        match self {
            Verdict::Allow => "allows".into(),
            Verdict::Refuse(a) => format!("refuses ({a})"),
            Verdict::Conditional(c) => c.clone(),
            Verdict::NoArch => "refuses (architecture not in the profile)".into(),
        }
    }

    fn refuses_always(&self) -> bool {
        matches!(self, Verdict::Refuse(_) | Verdict::NoArch)
    }
}

/// The architectures a resolved profile's filter accepts on this host.
fn arches(r: &Resolved, native: Arch) -> BTreeSet<Arch> {
    let mut set: BTreeSet<Arch> = r.architectures.iter().copied().collect();
    set.insert(native);
    set
}

fn allows(a: &ActionSpec) -> bool {
    matches!(a.action, Action::Allow | Action::Log)
}

fn verdict(r: &Resolved, on: &BTreeSet<Arch>, arch: Arch, name: &str) -> Verdict {
    if !on.contains(&arch) {
        return Verdict::NoArch;
    }
    let rules: Vec<_> = r
        .rules
        .iter()
        .filter(|rule| rule.names.iter().any(|n| n == name))
        .collect();
    if let Some(plain) = rules.iter().find(|rule| rule.args.is_empty()) {
        return if allows(&plain.action) {
            Verdict::Allow
        } else {
            Verdict::Refuse(plain.action.to_string())
        };
    }
    if rules.is_empty() {
        return if allows(&r.default_action) {
            Verdict::Allow
        } else {
            Verdict::Refuse(r.default_action.to_string())
        };
    }
    let parts: Vec<String> = rules
        .iter()
        .map(|rule| {
            let conds: Vec<String> = rule.args.iter().map(condition).collect();
            let act = if allows(&rule.action) {
                "allows".to_string()
            } else {
                format!("refuses ({})", rule.action)
            };
            format!("{act} if {}", conds.join(" and "))
        })
        .collect();
    let otherwise = if allows(&r.default_action) {
        "allows".to_string()
    } else {
        format!("refuses ({})", r.default_action)
    };
    Verdict::Conditional(format!("{}; otherwise {otherwise}", parts.join("; ")))
}

fn condition(c: &ArgCondition) -> String {
    let arg = format!("arg{}", c.index);
    match c.op {
        Operator::MaskedEqual => format!("{arg} & {:#x} == {:#x}", c.value, c.value_two),
        op => {
            let sym = match op {
                Operator::NotEqual => "!=",
                Operator::Less => "<",
                Operator::LessOrEqual => "<=",
                Operator::Equal => "==",
                Operator::GreaterOrEqual => ">=",
                Operator::Greater => ">",
                Operator::MaskedEqual => unreachable!("handled above"),
            };
            format!("{arg} {sym} {:#x}", c.value)
        }
    }
}

fn scmp(arch: Arch) -> Option<ScmpArch> {
    arch.name().parse::<ScmpArch>().ok()
}

/// The difference between `a` and `b` (resolved for the same host, whose
/// native architecture is `native`), as lines of text; empty when they
/// decide every syscall alike.
pub fn diff(a: &Resolved, b: &Resolved, native: Arch) -> Vec<String> {
    let mut out = Vec::new();
    if a.default_action != b.default_action {
        out.push(format!(
            "default action: A {}, B {}",
            a.default_action, b.default_action
        ));
    }
    let (on_a, on_b) = (arches(a, native), arches(b, native));
    let names: BTreeSet<&str> = a
        .rules
        .iter()
        .chain(&b.rules)
        .flat_map(|r| r.names.iter().map(String::as_str))
        .collect();
    let mut all: Vec<Arch> = on_a.union(&on_b).copied().collect();
    // The native architecture first, then as the profiles list them.
    all.sort_by_key(|x| (*x != native, x.name()));
    for arch in all {
        let Some(sa) = scmp(arch) else { continue };
        let (mut only_a, mut only_b, mut differ) = (Vec::new(), Vec::new(), Vec::new());
        for name in &names {
            // Names this architecture does not have (libseccomp skips them);
            // multiplexed ones (i386 socket) have a negative number and stay.
            if ScmpSyscall::from_name_by_arch(name, sa).is_err() {
                continue;
            }
            let (va, vb) = (verdict(a, &on_a, arch, name), verdict(b, &on_b, arch, name));
            // Refused either way, once for want of the architecture: the
            // same for every caller.
            let no_arch = va == Verdict::NoArch || vb == Verdict::NoArch;
            if va == vb || (no_arch && va.refuses_always() && vb.refuses_always()) {
                continue;
            }
            if va == Verdict::Allow && vb.refuses_always() {
                only_a.push(*name);
            } else if vb == Verdict::Allow && va.refuses_always() {
                only_b.push(*name);
            } else {
                differ.push(format!(
                    "{}: {name}: A {}; B {}",
                    arch.name(),
                    va.text(),
                    vb.text()
                ));
            }
        }
        for (who, list) in [("A", &only_a), ("B", &only_b)] {
            if !list.is_empty() {
                out.push(format!(
                    "{}: only {who} allows ({}): {}",
                    arch.name(),
                    list.len(),
                    list.join(" ")
                ));
            }
        }
        out.extend(differ);
    }
    out
}
