//! The backend: compiles a resolved profile to a classic BPF program with
//! libseccomp, following runc's conversion rules, except where those let a
//! workload past a condition: argument conditions are compared on the bits
//! the kernel reads ([`super::args`]), and socket calls filtered by argument
//! are refused through `socketcall(2)` ([`super::mux`]).

use std::collections::BTreeSet;

use libseccomp::{ScmpAction, ScmpArch};

use super::bpf::Program;
use super::ctx::Ctx;
use super::error::CompileError;
use super::fixup;
use super::mux::{self, Refusal};
use super::plan::{self, Plan};
use super::profile::{Action, Arch, Flag};
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
    /// Multi-architecture layout.
    pub layout: Layout,
    /// Compile argument conditions on all 64 bits and let libseccomp map
    /// socket rules onto `socketcall(2)`, as runc and Docker do. Only for
    /// comparing with them: it reopens the bypasses the README describes.
    pub as_libseccomp: bool,
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
    /// Multiplexed calls refused because the profile filters their
    /// arguments, by architecture.
    pub refused_multiplexed: Vec<Refusal>,
}

impl Compiled {
    /// Facts about the filter worth telling (not problems).
    pub fn notes(&self) -> Vec<String> {
        let mut out = Vec::new();
        for r in &self.refused_multiplexed {
            for name in &r.indirect {
                out.push(format!(
                    "on {}, {name}(2) is refused with ENOSYS: it takes its arguments behind a pointer there, and the profile filters them",
                    r.arch.name()
                ));
            }
            for (mux, calls) in [("socketcall", &r.socket), ("ipc", &r.ipc)] {
                if !calls.is_empty() {
                    out.push(format!(
                        "on {}, {mux}(2) refuses {} with ENOSYS: the profile filters their arguments, which {mux} passes behind a pointer",
                        r.arch.name(),
                        calls.join(", ")
                    ));
                }
            }
        }
        out
    }
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
    let mut warnings = Vec::new();
    check_errno(resolved.default_action, "defaultErrnoRet", &mut warnings);
    for r in &resolved.rules {
        if r.action != resolved.default_action {
            check_errno(
                r.action,
                &format!("syscalls[{}].errnoRet", r.index),
                &mut warnings,
            );
        }
    }
    let needs_errno_patch = check_reserved_errno(resolved)?;
    let (named, redundant_rules) = plan::names(resolved, opts, &mut warnings)?;
    let native = ScmpArch::native();
    let mut arches = vec![(native, from_scmp(native, src)?, "(host)".to_string())];
    arches.extend(extra_arches(resolved)?);
    if !opts.as_libseccomp {
        let moat_arches: Vec<Arch> = arches.iter().map(|a| a.1).collect();
        warnings.extend(plan::condition_warnings(resolved, &named, &moat_arches));
    }
    let plans = arches
        .iter()
        .map(|(_, arch, _)| plan::for_arch(resolved, &named, *arch, !opts.as_libseccomp))
        .collect::<Result<Vec<Plan>, _>>()?;
    let syscalls: BTreeSet<String> = plans
        .iter()
        .flat_map(|p| p.syscalls.iter().cloned())
        .collect();
    let binary_tree = match opts.dispatch {
        Dispatch::Auto => syscalls.len() >= BINARY_TREE_THRESHOLD,
        Dispatch::Linear => false,
        Dispatch::BinaryTree => true,
    };
    let marker = fixup::choose_marker(resolved);
    let default = to_scmp_action(resolved.default_action);
    let mut program = match opts.layout {
        Layout::Combined => {
            check_same_plans(resolved, &arches, &plans)?;
            let mut ctx = Ctx::new(src, default, ScmpAction::KillThread, binary_tree)?;
            for (scmp, _, field) in &arches[1..] {
                ctx.add_arch(*scmp, field)?;
            }
            ctx.add_rules(&plans[0], None, marker)?;
            ctx.export()?
        }
        Layout::PerArch => {
            let trace_marker = fixup::unused_trace_data(resolved);
            let one = |i: usize| -> Result<Program, CompileError> {
                let mut ctx = Ctx::new(src, default, ScmpAction::Trace(trace_marker), binary_tree)?;
                let (scmp, _, field) = &arches[i];
                if i > 0 {
                    ctx.add_arch(*scmp, field)?;
                    ctx.remove_native(field)?;
                }
                ctx.add_rules(&plans[i], (i > 0).then_some(*scmp), marker)?;
                ctx.export()
            };
            // Each architecture is an independent libseccomp context, so
            // they compile in parallel; the native one on this thread.
            let parts = std::thread::scope(|scope| {
                let one = &one;
                let others: Vec<_> = (1..arches.len())
                    .map(|i| scope.spawn(move || one(i)))
                    .collect();
                let mut parts = vec![one(0)];
                parts.extend(
                    others
                        .into_iter()
                        .map(|h| h.join().unwrap_or_else(|p| std::panic::resume_unwind(p))),
                );
                parts.into_iter().collect::<Result<Vec<_>, _>>()
            })?;
            fixup::chain(parts, trace_marker)
        }
    };
    fixup::ignore_marked_high_words(&mut program, marker).map_err(|reason| {
        CompileError::Export {
            source_name: src.clone(),
            reason,
        }
    })?;
    if needs_errno_patch {
        fixup::patch_errno(&mut program, ERRNO_PLACEHOLDER, KERNEL_MAX_ERRNO);
    }
    let mut refused_multiplexed = Vec::new();
    if !opts.as_libseccomp {
        let views: Vec<(Arch, ScmpArch, &Plan)> = arches
            .iter()
            .zip(&plans)
            .map(|((scmp, arch, _), p)| (*arch, *scmp, p))
            .collect();
        let (prefix, refusals) =
            mux::prefix(&views).map_err(|reason| CompileError::Unsupported {
                source_name: src.clone(),
                field: "syscalls".into(),
                reason,
            })?;
        refused_multiplexed = refusals;
        if !prefix.is_empty() {
            program = Program(prefix.0.into_iter().chain(program.0).collect());
        }
    }
    if program.len() > super::bpf::MAX_INSNS {
        return Err(CompileError::Unsupported {
            source_name: src.clone(),
            field: "syscalls".into(),
            reason: format!(
                "the compiled program has {} instructions; the kernel accepts at most {}",
                program.len(),
                super::bpf::MAX_INSNS
            ),
        });
    }
    let flags = resolved.flags.iter().fold(0, |m, f: &Flag| m | f.bits());
    Ok(Compiled {
        program,
        flags,
        binary_tree,
        warnings,
        syscalls_in_filter: syscalls.into_iter().collect(),
        redundant_rules,
        refused_multiplexed,
    })
}

/// How multi-architecture filters are generated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Layout {
    /// One libseccomp filter per architecture, exported separately and
    /// chained: libseccomp's export time grows much faster than linearly
    /// with the number of architectures in one filter (15 ms for x86_64 +
    /// x86 + x32 against under 1 ms each), and the verdicts are identical.
    /// Each architecture's conditions are lowered for its own ABI.
    #[default]
    PerArch,
    /// One libseccomp filter holding every architecture. The rules are the
    /// native architecture's; a profile whose conditions lower differently
    /// on another of its architectures (a value above 32 bits on an
    /// argument that i386 reads as 32 bits) is refused in this layout.
    Combined,
}

/// In one multi-architecture filter every architecture gets the same
/// rules: refuse when lowering made them differ (marks aside, which only
/// matter where high words are compared).
fn check_same_plans(
    resolved: &Resolved,
    arches: &[(ScmpArch, Arch, String)],
    plans: &[Plan],
) -> Result<(), CompileError> {
    let key = |p: &Plan| -> Vec<_> {
        p.rules
            .iter()
            .map(|r| {
                let groups: Vec<Vec<_>> = r
                    .groups
                    .iter()
                    .map(|g| {
                        g.iter()
                            .map(|a| super::args::Atom {
                                marked: false,
                                ..*a
                            })
                            .collect()
                    })
                    .collect();
                (r.name.clone(), r.spec, groups)
            })
            .collect()
    };
    let native = key(&plans[0]);
    for (i, p) in plans.iter().enumerate().skip(1) {
        if key(p) != native {
            return Err(CompileError::Unsupported {
                source_name: resolved.source.clone(),
                field: arches[i].2.clone(),
                reason: format!(
                    "argument conditions compile differently on {} than on the native architecture; use the per-architecture layout",
                    arches[i].1.name()
                ),
            });
        }
    }
    Ok(())
}

/// The architectures to filter besides the native one, without repeats.
fn extra_arches(resolved: &Resolved) -> Result<Vec<(ScmpArch, Arch, String)>, CompileError> {
    let native = ScmpArch::native();
    let mut out: Vec<(ScmpArch, Arch, String)> = Vec::new();
    for (i, arch) in resolved.architectures.iter().enumerate() {
        let field = format!("architectures[{i}]");
        let scmp = to_scmp_arch(*arch).ok_or_else(|| CompileError::Unsupported {
            source_name: resolved.source.clone(),
            field: field.clone(),
            reason: format!(
                "architecture {} is not supported by libseccomp {}",
                arch.name(),
                libseccomp_version()
            ),
        })?;
        if scmp != native && !out.iter().any(|(a, _, _)| *a == scmp) {
            out.push((scmp, *arch, field));
        }
    }
    Ok(out)
}

fn from_scmp(scmp: ScmpArch, src: &super::Source) -> Result<Arch, CompileError> {
    super::arch::ALL_ARCHES
        .iter()
        .copied()
        .find(|a| to_scmp_arch(*a) == Some(scmp))
        .ok_or_else(|| CompileError::Unsupported {
            source_name: src.clone(),
            field: "(host)".into(),
            reason: format!("libseccomp's native architecture {scmp:?} is unknown to moat"),
        })
}

/// Refuses the errno moat reserves for its MAX_ERRNO patch and tells
/// whether the patch is needed.
fn check_reserved_errno(resolved: &Resolved) -> Result<bool, CompileError> {
    let errnos = std::iter::once(resolved.default_action)
        .chain(resolved.rules.iter().map(|r| r.action))
        .filter(|a| a.action == Action::Errno)
        .filter_map(|a| a.errno);
    let mut needs_patch = false;
    for e in errnos {
        if e == ERRNO_PLACEHOLDER {
            return Err(CompileError::Unsupported {
                source_name: resolved.source.clone(),
                field: "errnoRet".into(),
                reason: format!("errno {ERRNO_PLACEHOLDER} is reserved by moat; use {KERNEL_MAX_ERRNO}, which the kernel returns for any larger value"),
            });
        }
        needs_patch |= e >= KERNEL_MAX_ERRNO;
    }
    Ok(needs_patch)
}

pub(super) fn to_scmp_action(a: ActionSpec) -> ScmpAction {
    // Validation keeps errnos within 16 bits, so the casts cannot truncate.
    let errno = a.errno.unwrap_or(0);
    match a.action {
        Action::Kill | Action::KillThread => ScmpAction::KillThread,
        Action::KillProcess => ScmpAction::KillProcess,
        Action::Trap => ScmpAction::Trap,
        // The kernel clamps errnos to MAX_ERRNO but libseccomp refuses
        // values >= MAX_ERRNO: such rules carry a placeholder that is
        // patched to MAX_ERRNO after export.
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

/// The linked libseccomp's version, for messages.
pub fn libseccomp_version() -> String {
    libseccomp::ScmpVersion::current()
        .map(|v| format!("{}.{}.{}", v.major, v.minor, v.micro))
        .unwrap_or_else(|_| "(unknown version)".into())
}
