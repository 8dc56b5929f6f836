//! Attaching the programs of the configured tier and mechanism (see
//! [`super::tracing`]), after the scheduler and cgroup programs every tier
//! uses.

use aya::{programs::FExit, Ebpf};
use moat_common::{FATAL_PROGRAMS, KERNEL_PROGRAMS, SECCOMP_EXIT_PROGRAM, SECCOMP_FUNCTION};

use super::{
    config::KernelConfig,
    error::{Error, Result},
    loader::attach,
    tracing::{DenialTier, Mechanism, MechanismChoice, TracingMode},
};

/// The scheduler and cgroup programs: the first entries of [`KERNEL_PROGRAMS`]
/// (the rest are the `sys_enter`/`sys_exit` pair).
const COMMON_PROGRAMS: usize = 4;

/// Attaches every program `config` asks for, in order; returns the mode chosen
/// and the names of the programs attached.
pub(super) fn attach_programs(
    ebpf: &mut Ebpf,
    config: &KernelConfig,
) -> Result<(TracingMode, Vec<&'static str>)> {
    let mut attached = Vec::new();
    // The scheduler programs (which mark new tasks and follow exec) come first,
    // so that sys_exit (when attached) never meets a slot they could not have
    // written yet.
    for (name, tracepoint) in &KERNEL_PROGRAMS[..COMMON_PROGRAMS] {
        attach(ebpf, name, tracepoint)?;
        attached.push(*name);
    }
    let mode = match (config.denials, config.mechanism) {
        (DenialTier::Fatal, _) => {
            for (name, tracepoint) in FATAL_PROGRAMS {
                attach(ebpf, name, tracepoint)?;
                attached.push(name);
            }
            mode(DenialTier::Fatal, Mechanism::Signal, None)
        }
        (DenialTier::All, MechanismChoice::Pairing) => {
            attach_pairing(ebpf, &mut attached)?;
            mode(DenialTier::All, Mechanism::Pairing, None)
        }
        (DenialTier::All, MechanismChoice::Fexit) => {
            attach_fexit(ebpf).map_err(|source| Error::FexitUnavailable {
                function: SECCOMP_FUNCTION,
                source,
            })?;
            attached.push(SECCOMP_EXIT_PROGRAM);
            mode(DenialTier::All, Mechanism::Fexit, None)
        }
        (DenialTier::All, MechanismChoice::Auto) => match attach_fexit(ebpf) {
            Ok(()) => {
                attached.push(SECCOMP_EXIT_PROGRAM);
                mode(DenialTier::All, Mechanism::Fexit, None)
            }
            Err(err) => {
                attach_pairing(ebpf, &mut attached)?;
                mode(DenialTier::All, Mechanism::Pairing, Some(error_chain(&err)))
            }
        },
    };
    Ok((mode, attached))
}

fn mode(tier: DenialTier, mechanism: Mechanism, fallback: Option<String>) -> TracingMode {
    TracingMode {
        tier,
        mechanism,
        fallback,
    }
}

/// `sys_enter` before `sys_exit`.
fn attach_pairing(ebpf: &mut Ebpf, attached: &mut Vec<&'static str>) -> Result<()> {
    for (name, tracepoint) in &KERNEL_PROGRAMS[COMMON_PROGRAMS..] {
        attach(ebpf, name, tracepoint)?;
        attached.push(*name);
    }
    Ok(())
}

/// Loads and attaches the fexit program; the kernel refuses it where tracing
/// programs are not allowed (EPERM here), which is the probe `auto` relies on.
fn attach_fexit(ebpf: &mut Ebpf) -> std::result::Result<(), aya::programs::ProgramError> {
    let btf = aya::Btf::from_sys_fs().map_err(aya::programs::ProgramError::Btf)?;
    let program: &mut FExit = ebpf
        .program_mut(SECCOMP_EXIT_PROGRAM)
        .ok_or(aya::programs::ProgramError::NotLoaded)?
        .try_into()?;
    program.load(SECCOMP_FUNCTION, &btf)?;
    program.attach()?;
    log::debug!("attached eBPF program {SECCOMP_EXIT_PROGRAM} as fexit on {SECCOMP_FUNCTION}");
    Ok(())
}

/// An error and its sources on one line.
fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(inner) = source {
        text.push_str(": ");
        text.push_str(&inner.to_string());
        source = inner.source();
    }
    text
}
