//! The backend: compiles a resolved profile to a classic BPF program with
//! libseccomp, following runc's conversion rules.

use std::io::{Read, Seek, SeekFrom};
use std::os::fd::AsFd;

use libseccomp::{
    ScmpAction, ScmpArch, ScmpArgCompare, ScmpCompareOp, ScmpFilterContext, ScmpSyscall,
};

use std::collections::BTreeSet;

use libseccomp::error::SeccompError;

use super::bpf::{Program, SockFilter};
use super::error::{CompileError, Source};
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
    /// Multi-architecture layout.
    pub layout: Layout,
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
    let mut warnings = Vec::new();
    check_errno(resolved.default_action, "defaultErrnoRet", &mut warnings);
    let needs_errno_patch = check_reserved_errno(resolved)?;
    let plan = plan_rules(resolved, opts, &mut warnings)?;
    let binary_tree = match opts.dispatch {
        Dispatch::Auto => plan.syscalls.len() >= BINARY_TREE_THRESHOLD,
        Dispatch::Linear => false,
        Dispatch::BinaryTree => true,
    };
    let extra = extra_arches(resolved)?;
    let default = to_scmp(resolved.default_action);
    let mut program = match opts.layout {
        Layout::Combined => {
            let mut ctx = Ctx::new(src, default, ScmpAction::KillThread, binary_tree)?;
            for (arch, field) in &extra {
                ctx.add_arch(*arch, field)?;
            }
            ctx.add_rules(&plan, None)?;
            ctx.export()?
        }
        Layout::PerArch => {
            let marker = unused_trace_data(resolved);
            let one = |arch: Option<&(ScmpArch, String)>| -> Result<Program, CompileError> {
                let mut ctx = Ctx::new(src, default, ScmpAction::Trace(marker), binary_tree)?;
                if let Some((arch, field)) = arch {
                    ctx.add_arch(*arch, field)?;
                    ctx.remove_native(field)?;
                }
                ctx.add_rules(&plan, arch.map(|(a, _)| *a))?;
                ctx.export()
            };
            // Each architecture is an independent libseccomp context, so
            // they compile in parallel; the native one on this thread.
            let parts = std::thread::scope(|scope| {
                let others: Vec<_> = extra
                    .iter()
                    .map(|a| scope.spawn(move || one(Some(a))))
                    .collect();
                let mut parts = vec![one(None)];
                parts.extend(
                    others
                        .into_iter()
                        .map(|h| h.join().unwrap_or_else(|p| std::panic::resume_unwind(p))),
                );
                parts.into_iter().collect::<Result<Vec<_>, _>>()
            })?;
            chain(parts, marker)
        }
    };
    if needs_errno_patch {
        patch_placeholder(&mut program);
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
        syscalls_in_filter: plan.syscalls.into_iter().collect(),
        redundant_rules: plan.redundant_rules,
    })
}

/// How multi-architecture filters are generated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Layout {
    /// One libseccomp filter per architecture, exported separately and
    /// chained: libseccomp's export time grows much faster than linearly
    /// with the number of architectures in one filter (15 ms for x86_64 +
    /// x86 + x32 against under 1 ms each), and the verdicts are identical.
    #[default]
    PerArch,
    /// One libseccomp filter holding every architecture.
    Combined,
}

/// The rules to add, with names resolved once for all architectures.
struct Plan {
    rules: Vec<PlannedRule>,
    syscalls: BTreeSet<String>,
    redundant_rules: usize,
}

struct PlannedRule {
    field: String,
    name: String,
    syscall: ScmpSyscall,
    action: ScmpAction,
    groups: Vec<Vec<ScmpArgCompare>>,
}

fn plan_rules(
    resolved: &Resolved,
    opts: Options,
    warnings: &mut Vec<Warning>,
) -> Result<Plan, CompileError> {
    let mut plan = Plan {
        rules: Vec::new(),
        syscalls: BTreeSet::new(),
        redundant_rules: 0,
    };
    for rule in &resolved.rules {
        let field = format!("syscalls[{}]", rule.index);
        if rule.action == resolved.default_action {
            // libseccomp refuses such rules, and they change nothing.
            plan.redundant_rules += 1;
            continue;
        }
        check_errno(rule.action, &format!("{field}.errnoRet"), warnings);
        let action = to_scmp(rule.action);
        let groups = condition_groups(&rule.args);
        for (n, name) in rule.names.iter().enumerate() {
            let name_field = format!("{field}.names[{n}]");
            let Ok(syscall) = ScmpSyscall::from_name(name) else {
                if opts.strict {
                    return Err(CompileError::UnknownSyscall {
                        source_name: resolved.source.clone(),
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
            plan.syscalls.insert(name.clone());
            plan.rules.push(PlannedRule {
                field: name_field,
                name: name.clone(),
                syscall,
                action,
                groups: groups.clone(),
            });
        }
    }
    Ok(plan)
}

/// One libseccomp filter context, with errors that name the profile field.
struct Ctx<'a> {
    ctx: ScmpFilterContext,
    src: &'a Source,
}

impl<'a> Ctx<'a> {
    fn err(&self, field: &str, what: String) -> impl FnOnce(SeccompError) -> CompileError {
        let (source_name, field) = (self.src.clone(), field.to_string());
        move |error| CompileError::Libseccomp {
            source_name,
            field,
            what,
            error,
        }
    }

    fn new(
        src: &'a Source,
        default: ScmpAction,
        bad_arch: ScmpAction,
        binary_tree: bool,
    ) -> Result<Ctx<'a>, CompileError> {
        let fail = |what: &str| {
            let (source_name, what) = (src.clone(), what.to_string());
            move |error| CompileError::Libseccomp {
                source_name,
                field: "defaultAction".into(),
                what,
                error,
            }
        };
        let mut ctx = ScmpFilterContext::new(default).map_err(fail("the default action"))?;
        // We set no_new_privs ourselves at the right point of the launch.
        ctx.set_ctl_nnp(false).map_err(fail("clearing NNP"))?;
        ctx.set_act_badarch(bad_arch)
            .map_err(fail("the bad-architecture action"))?;
        ctx.set_ctl_optimize(if binary_tree { 2 } else { 1 })
            .map_err(fail("the optimisation level"))?;
        Ok(Ctx { ctx, src })
    }

    fn add_arch(&mut self, arch: ScmpArch, field: &str) -> Result<(), CompileError> {
        let e = self.err(field, format!("architecture {arch:?}"));
        self.ctx.add_arch(arch).map(drop).map_err(e)
    }

    fn remove_native(&mut self, field: &str) -> Result<(), CompileError> {
        let e = self.err(field, "removing the native architecture".into());
        self.ctx
            .remove_arch(ScmpArch::native())
            .map(drop)
            .map_err(e)
    }

    /// Adds every planned rule. `arch` is the context's only architecture
    /// when it is not the native one: a syscall that does not exist there
    /// is left out, as libseccomp does in a multi-architecture filter.
    fn add_rules(&mut self, plan: &Plan, arch: Option<ScmpArch>) -> Result<(), CompileError> {
        for r in &plan.rules {
            let res = if r.groups.iter().all(Vec::is_empty) {
                self.ctx.add_rule(r.action, r.syscall).map(drop)
            } else {
                r.groups.iter().try_for_each(|g| {
                    self.ctx
                        .add_rule_conditional(r.action, r.syscall, g)
                        .map(drop)
                })
            };
            if let Err(error) = res {
                let exists_here = arch.is_none_or(|a| {
                    ScmpSyscall::from_name_by_arch(&r.name, a).is_ok_and(|s| i32::from(s) >= 0)
                });
                if exists_here {
                    return Err(self.err(&r.field, format!("the rule for {}", r.name))(
                        error,
                    ));
                }
            }
        }
        Ok(())
    }

    fn export(&self) -> Result<Program, CompileError> {
        export(&self.ctx).map_err(|reason| CompileError::Export {
            source_name: self.src.clone(),
            reason,
        })
    }
}

/// The architectures to filter besides the native one, without repeats.
fn extra_arches(resolved: &Resolved) -> Result<Vec<(ScmpArch, String)>, CompileError> {
    let native = ScmpArch::native();
    let mut out: Vec<(ScmpArch, String)> = Vec::new();
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
        if scmp != native && !out.iter().any(|(a, _)| *a == scmp) {
            out.push((scmp, field));
        }
    }
    Ok(out)
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

/// A TRACE data value no rule uses: per-architecture programs return
/// `TRACE(marker)` for a foreign architecture, and [`chain`] turns exactly
/// those returns into jumps to the next program.
fn unused_trace_data(resolved: &Resolved) -> u16 {
    let used: BTreeSet<u32> = std::iter::once(resolved.default_action)
        .chain(resolved.rules.iter().map(|r| r.action))
        .filter(|a| a.action == Action::Trace)
        .filter_map(|a| a.errno)
        .collect();
    (0..=u16::MAX)
        .rev()
        .find(|d| !used.contains(&u32::from(*d)))
        .unwrap_or(u16::MAX)
}

/// Concatenates per-architecture programs: in each but the last, the
/// bad-architecture return becomes a jump to the next program; in the last
/// it becomes libseccomp's default bad-architecture action (kill thread).
fn chain(parts: Vec<Program>, marker: u16) -> Program {
    const RET_K: u16 = 0x06;
    const JA: u16 = 0x05;
    const RET_TRACE: u32 = 0x7ff0_0000;
    const RET_KILL_THREAD: u32 = 0;
    let count = parts.len();
    let mut out = Vec::with_capacity(parts.iter().map(Program::len).sum());
    for (i, part) in parts.into_iter().enumerate() {
        let len = part.len();
        for (pc, mut insn) in part.0.into_iter().enumerate() {
            if insn.code == RET_K && insn.k == RET_TRACE | u32::from(marker) {
                if i + 1 < count {
                    // Jump forward to the first instruction after this part.
                    insn = SockFilter {
                        code: JA,
                        jt: 0,
                        jf: 0,
                        k: (len - pc - 1) as u32,
                    };
                } else {
                    insn.k = RET_KILL_THREAD;
                }
            }
            out.push(insn);
        }
    }
    Program(out)
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
