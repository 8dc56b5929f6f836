//! The backend: compiles a resolved profile to a classic BPF program with
//! libseccomp, following runc's conversion rules.

use std::io::{Read, Seek, SeekFrom};
use std::os::fd::AsFd;

use libseccomp::{
    ScmpAction, ScmpArch, ScmpArgCompare, ScmpCompareOp, ScmpFilterContext, ScmpSyscall,
};

use super::bpf::Program;
use super::error::CompileError;
use super::profile::{Action, Arch, ArgCondition, Flag, Operator};
use super::resolve::{ActionSpec, Resolved};

/// How syscall numbers are dispatched in the generated program.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Dispatch {
    /// A binary tree when the filter has enough syscalls for it to pay off,
    /// a linear chain otherwise.
    #[default]
    Auto,
    /// Always a linear chain of comparisons (libseccomp's level 1).
    Linear,
    /// Always a binary tree (libseccomp's level 2).
    BinaryTree,
}

/// Below this many distinct syscalls a linear chain is as fast as a tree:
/// the tree's fixed cost of range checks is not repaid.
pub const BINARY_TREE_THRESHOLD: usize = 32;

/// Compiler options.
#[derive(Debug, Clone, Copy, Default)]
pub struct Options {
    /// Refuse syscall names libseccomp does not know instead of skipping them.
    pub strict: bool,
    /// Dispatch strategy.
    pub dispatch: Dispatch,
}

/// Something the user should know that did not stop compilation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Warning {
    /// JSON path of the field concerned.
    pub field: String,
    /// What happened.
    pub message: String,
}

impl std::fmt::Display for Warning {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

/// The compiled filter and what is needed to install it.
#[derive(Debug, Clone)]
pub struct Compiled {
    /// The BPF program.
    pub program: Program,
    /// `SECCOMP_FILTER_FLAG_*` bits to install it with.
    pub flags: u32,
    /// Whether the program dispatches with a binary tree.
    pub binary_tree: bool,
    /// Non-fatal problems (unknown syscalls, clamped errnos).
    pub warnings: Vec<Warning>,
    /// Names of the syscalls that have at least one rule in the filter.
    pub syscalls_in_filter: Vec<String>,
    /// Rules dropped because they repeat the default action.
    pub redundant_rules: usize,
}

/// Errno values above this are clamped by the kernel (`MAX_ERRNO`).
const KERNEL_MAX_ERRNO: u32 = 4095;

/// Stands in for MAX_ERRNO in rules libseccomp would refuse. It is above
/// every errno Linux defines, and a profile that uses it itself is refused
/// so the patch cannot hit a genuine rule.
const ERRNO_PLACEHOLDER: u32 = KERNEL_MAX_ERRNO - 1;

/// Compiles `resolved` to a BPF program.
pub fn compile(resolved: &Resolved, opts: Options) -> Result<Compiled, CompileError> {
    let src = &resolved.source;
    let lib_err = |field: &str, what: String| {
        let src = src.clone();
        let field = field.to_string();
        move |error| CompileError::Libseccomp {
            source_name: src,
            field,
            what,
            error,
        }
    };
    let mut warnings = Vec::new();
    let default = to_scmp(resolved.default_action);
    let mut ctx = ScmpFilterContext::new(default)
        .map_err(lib_err("defaultAction", "the default action".into()))?;
    // We set no_new_privs ourselves at the right point of the launch.
    ctx.set_ctl_nnp(false).map_err(lib_err(
        "defaultAction",
        "clearing the NNP attribute".into(),
    ))?;
    for (i, arch) in resolved.architectures.iter().enumerate() {
        let field = format!("architectures[{i}]");
        let scmp = to_scmp_arch(*arch).ok_or_else(|| CompileError::Unsupported {
            source_name: src.clone(),
            field: field.clone(),
            reason: format!(
                "architecture {} is not supported by libseccomp {}",
                arch.name(),
                libseccomp_version()
            ),
        })?;
        ctx.add_arch(scmp)
            .map_err(lib_err(&field, format!("architecture {}", arch.name())))?;
    }
    check_errno(resolved.default_action, "defaultErrnoRet", &mut warnings);
    let clamps = std::iter::once(resolved.default_action)
        .chain(resolved.rules.iter().map(|r| r.action))
        .filter(|a| a.action == Action::Errno)
        .filter_map(|a| a.errno);
    let mut needs_patch = false;
    for e in clamps {
        if e == ERRNO_PLACEHOLDER {
            return Err(CompileError::Unsupported {
                source_name: src.clone(),
                field: "errnoRet".into(),
                reason: format!("errno {ERRNO_PLACEHOLDER} is reserved by moat; use {KERNEL_MAX_ERRNO}, which the kernel returns for any larger value"),
            });
        }
        needs_patch |= e >= KERNEL_MAX_ERRNO;
    }

    let mut redundant_rules = 0;
    let mut syscalls = std::collections::BTreeSet::new();
    for rule in &resolved.rules {
        let field = format!("syscalls[{}]", rule.index);
        if rule.action == resolved.default_action {
            // libseccomp refuses such rules, and they change nothing.
            redundant_rules += 1;
            continue;
        }
        check_errno(rule.action, &format!("{field}.errnoRet"), &mut warnings);
        let action = to_scmp(rule.action);
        let groups = condition_groups(&rule.args);
        for (n, name) in rule.names.iter().enumerate() {
            let name_field = format!("{field}.names[{n}]");
            let Ok(sys) = ScmpSyscall::from_name(name) else {
                if opts.strict {
                    return Err(CompileError::UnknownSyscall {
                        source_name: src.clone(),
                        field: name_field,
                        name: name.clone(),
                    });
                }
                warnings.push(Warning {
                    field: name_field,
                    message: format!(
                        "syscall {name:?} is unknown to libseccomp {}; rule skipped (as Docker does)",
                        libseccomp_version()
                    ),
                });
                continue;
            };
            syscalls.insert(name.clone());
            for group in &groups {
                let res = if group.is_empty() {
                    ctx.add_rule(action, sys)
                } else {
                    ctx.add_rule_conditional(action, sys, group)
                };
                res.map_err(lib_err(&name_field, format!("the rule for {name}")))?;
            }
        }
    }

    let binary_tree = match opts.dispatch {
        Dispatch::Auto => syscalls.len() >= BINARY_TREE_THRESHOLD,
        Dispatch::Linear => false,
        Dispatch::BinaryTree => true,
    };
    ctx.set_ctl_optimize(if binary_tree { 2 } else { 1 })
        .map_err(lib_err("(top level)", "the optimisation level".into()))?;

    let mut program = export(&ctx).map_err(|reason| CompileError::Export {
        source_name: src.clone(),
        reason,
    })?;
    if needs_patch {
        patch_placeholder(&mut program);
    }
    let flags = resolved.flags.iter().fold(0, |m, f: &Flag| m | f.bits());
    Ok(Compiled {
        program,
        flags,
        binary_tree,
        warnings,
        syscalls_in_filter: syscalls.into_iter().collect(),
        redundant_rules,
    })
}

/// runc's rule: conditions on different arguments are ANDed in one rule;
/// if any argument index repeats, every condition becomes a rule of its
/// own (ORed), since libseccomp cannot AND two conditions on one argument.
fn condition_groups(args: &[ArgCondition]) -> Vec<Vec<ScmpArgCompare>> {
    let conds: Vec<ScmpArgCompare> = args.iter().map(to_scmp_cond).collect();
    let mut seen = [0u8; 6];
    for a in args {
        seen[a.index as usize] += 1;
    }
    if seen.iter().any(|&c| c > 1) {
        conds.into_iter().map(|c| vec![c]).collect()
    } else {
        vec![conds]
    }
}

fn to_scmp_cond(a: &ArgCondition) -> ScmpArgCompare {
    let (op, datum) = match a.op {
        Operator::NotEqual => (ScmpCompareOp::NotEqual, a.value),
        Operator::Less => (ScmpCompareOp::Less, a.value),
        Operator::LessOrEqual => (ScmpCompareOp::LessOrEqual, a.value),
        Operator::Equal => (ScmpCompareOp::Equal, a.value),
        Operator::GreaterOrEqual => (ScmpCompareOp::GreaterEqual, a.value),
        Operator::Greater => (ScmpCompareOp::Greater, a.value),
        // Docker's JSON: `value` is the mask, `valueTwo` the expected bits.
        Operator::MaskedEqual => (ScmpCompareOp::MaskedEqual(a.value), a.value_two),
    };
    ScmpArgCompare::new(a.index, op, datum)
}

fn to_scmp(a: ActionSpec) -> ScmpAction {
    // Validation keeps errnos within 16 bits, so the casts cannot truncate.
    let errno = a.errno.unwrap_or(0);
    match a.action {
        Action::Kill | Action::KillThread => ScmpAction::KillThread,
        Action::KillProcess => ScmpAction::KillProcess,
        Action::Trap => ScmpAction::Trap,
        // The kernel clamps errnos to MAX_ERRNO but libseccomp refuses
        // values >= MAX_ERRNO: such rules carry a placeholder that is
        // patched to MAX_ERRNO after export (see `ClampedErrno`).
        Action::Errno if errno >= KERNEL_MAX_ERRNO => ScmpAction::Errno(ERRNO_PLACEHOLDER as i32),
        Action::Errno => ScmpAction::Errno(errno as i32),
        Action::Trace => ScmpAction::Trace(errno as u16),
        Action::Allow => ScmpAction::Allow,
        Action::Log => ScmpAction::Log,
        Action::Notify => ScmpAction::Notify,
    }
}

fn to_scmp_arch(a: Arch) -> Option<ScmpArch> {
    a.name().parse::<ScmpArch>().ok()
}

fn check_errno(a: ActionSpec, field: &str, warnings: &mut Vec<Warning>) {
    if a.action != Action::Errno {
        return;
    }
    if let Some(e) = a.errno.filter(|e| *e > KERNEL_MAX_ERRNO) {
        warnings.push(Warning {
            field: field.to_string(),
            message: format!("errno {e} is above the kernel's MAX_ERRNO; compiled as {KERNEL_MAX_ERRNO}, which is what callers would see"),
        });
    }
}

/// Rewrites `return ERRNO(placeholder)` to `return ERRNO(MAX_ERRNO)`.
fn patch_placeholder(program: &mut Program) {
    const RET_K: u16 = 0x06;
    const RET_ERRNO: u32 = 0x0005_0000;
    for insn in program.0.iter_mut() {
        if insn.code == RET_K && insn.k == RET_ERRNO | ERRNO_PLACEHOLDER {
            insn.k = RET_ERRNO | KERNEL_MAX_ERRNO;
        }
    }
}

/// The linked libseccomp's version, for messages.
pub fn libseccomp_version() -> String {
    libseccomp::ScmpVersion::current()
        .map(|v| format!("{}.{}.{}", v.major, v.minor, v.micro))
        .unwrap_or_else(|_| "(unknown version)".into())
}

/// libseccomp 2.5 can only export to a file descriptor; a memfd keeps it
/// off disk.
fn export(ctx: &ScmpFilterContext) -> Result<Program, String> {
    let fd = nix::sys::memfd::memfd_create(c"moat-seccomp", nix::sys::memfd::MFdFlags::MFD_CLOEXEC)
        .map_err(|e| format!("memfd_create: {e}"))?;
    let mut file = std::fs::File::from(fd);
    ctx.export_bpf(file.as_fd())
        .map_err(|e| format!("seccomp_export_bpf: {e}"))?;
    let mut bytes = Vec::new();
    file.seek(SeekFrom::Start(0))
        .and_then(|_| file.read_to_end(&mut bytes))
        .map_err(|e| format!("reading the exported program: {e}"))?;
    Program::from_bytes(&bytes).map_err(|e| e.to_string())
}
