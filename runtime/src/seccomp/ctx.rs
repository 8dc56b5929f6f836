//! One libseccomp filter context, with errors that name the profile field,
//! and the export of its program.

use std::io::{Read, Seek, SeekFrom};
use std::os::fd::AsFd;

use libseccomp::error::SeccompError;
use libseccomp::{
    ScmpAction, ScmpArch, ScmpArgCompare, ScmpCompareOp, ScmpFilterContext, ScmpSyscall,
};

use super::args::{Atom, AtomOp};
use super::bpf::Program;
use super::error::{CompileError, Source};
use super::plan::Plan;

pub(super) struct Ctx<'a> {
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

    pub(super) fn new(
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

    pub(super) fn add_arch(&mut self, arch: ScmpArch, field: &str) -> Result<(), CompileError> {
        let e = self.err(field, format!("architecture {arch:?}"));
        self.ctx.add_arch(arch).map(drop).map_err(e)
    }

    pub(super) fn remove_native(&mut self, field: &str) -> Result<(), CompileError> {
        let e = self.err(field, "removing the native architecture".into());
        self.ctx
            .remove_arch(ScmpArch::native())
            .map(drop)
            .map_err(e)
    }

    /// Adds every planned rule. `arch` is the context's only architecture
    /// when it is not the native one: a syscall that does not exist there
    /// is left out, as libseccomp does in a multi-architecture filter.
    /// Marked comparisons get `marker` as their high word.
    pub(super) fn add_rules(
        &mut self,
        plan: &Plan,
        arch: Option<ScmpArch>,
        marker: u32,
    ) -> Result<(), CompileError> {
        for r in &plan.rules {
            let res = if r.groups.iter().all(Vec::is_empty) {
                self.ctx.add_rule(r.action, r.syscall).map(drop)
            } else {
                r.groups.iter().try_for_each(|g| {
                    let conds: Vec<ScmpArgCompare> = g.iter().map(|a| to_scmp(a, marker)).collect();
                    self.ctx
                        .add_rule_conditional(r.action, r.syscall, &conds)
                        .map(drop)
                })
            };
            if let Err(error) = res {
                let exists_here = arch.is_none_or(|a| {
                    ScmpSyscall::from_name_by_arch(&r.name, a).is_ok_and(|s| i32::from(s) >= 0)
                });
                if exists_here {
                    return Err(self.err(&r.field(), format!("the rule for {}", r.name))(
                        error,
                    ));
                }
            }
        }
        Ok(())
    }

    pub(super) fn export(&self) -> Result<Program, CompileError> {
        export(&self.ctx).map_err(|reason| CompileError::Export {
            source_name: self.src.clone(),
            reason,
        })
    }
}

fn to_scmp(a: &Atom, marker: u32) -> ScmpArgCompare {
    let datum = if a.marked {
        (u64::from(marker) << 32) | (a.datum & 0xffff_ffff)
    } else {
        a.datum
    };
    let op = match a.op {
        AtomOp::Eq => ScmpCompareOp::Equal,
        AtomOp::Ne => ScmpCompareOp::NotEqual,
        AtomOp::Lt => ScmpCompareOp::Less,
        AtomOp::Le => ScmpCompareOp::LessOrEqual,
        AtomOp::Gt => ScmpCompareOp::Greater,
        AtomOp::Ge => ScmpCompareOp::GreaterEqual,
        AtomOp::MaskedEq(m) => ScmpCompareOp::MaskedEqual(m),
    };
    ScmpArgCompare::new(a.index, op, datum)
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
