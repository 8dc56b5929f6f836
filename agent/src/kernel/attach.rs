//! Attaching the programs of the configured tier and mechanism (see
//! [`super::tracing`]), after the scheduler and cgroup programs every tier
//! uses.

use std::path::Path;
use std::sync::atomic::{AtomicU32, Ordering};

use aya::{
    programs::{FEntry, FExit, ProgramError, RawTracePoint},
    Ebpf,
};
use moat_common::{
    FATAL_PROGRAMS, FEXIT_EVENT_PROGRAMS, KERNEL_PROGRAMS, RECORD_ENTER_PIN, RECORD_ENTER_PROGRAM,
    SECCOMP_EXIT_PROGRAM, SECCOMP_FUNCTION,
};

use super::{
    config::KernelConfig,
    error::{Error, Result},
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
            attach_fexit(ebpf, &mut attached)
                .map_err(|source| Error::FexitUnavailable { source })?;
            mode(DenialTier::All, Mechanism::Fexit, None)
        }
        (DenialTier::All, MechanismChoice::Auto) => match attach_fexit(ebpf, &mut attached) {
            Ok(()) => mode(DenialTier::All, Mechanism::Fexit, None),
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

/// Loads and attaches the fexit mechanism's programs: the refusals, then the
/// process events the pairing would otherwise count. The kernel refuses the
/// first where tracing programs are not allowed (EPERM here), which is the
/// probe `auto` relies on; on any failure the ones already attached are
/// detached again, so a fallback never leaves half of them running.
fn attach_fexit(
    ebpf: &mut Ebpf,
    attached: &mut Vec<&'static str>,
) -> std::result::Result<(), ProgramError> {
    let btf = aya::Btf::from_sys_fs().map_err(ProgramError::Btf)?;
    let mut done: Vec<(&'static str, bool)> = Vec::new();
    let result = (|| {
        attach_tracing(ebpf, &btf, SECCOMP_EXIT_PROGRAM, SECCOMP_FUNCTION, false)?;
        done.push((SECCOMP_EXIT_PROGRAM, false));
        for (name, function, entry) in FEXIT_EVENT_PROGRAMS {
            attach_tracing(ebpf, &btf, name, function, entry)?;
            done.push((name, entry));
        }
        Ok(())
    })();
    match result {
        Ok(()) => {
            attached.extend(done.iter().map(|(name, _)| *name));
            Ok(())
        }
        Err(err) => {
            for (name, entry) in done {
                unload(ebpf, name, entry);
            }
            Err(err)
        }
    }
}

fn attach_tracing(
    ebpf: &mut Ebpf,
    btf: &aya::Btf,
    name: &'static str,
    function: &'static str,
    entry: bool,
) -> std::result::Result<(), ProgramError> {
    let program = ebpf.program_mut(name).ok_or(ProgramError::NotLoaded)?;
    if entry {
        let program: &mut FEntry = program.try_into()?;
        program.load(function, btf)?;
        program.attach()?;
    } else {
        let program: &mut FExit = program.try_into()?;
        program.load(function, btf)?;
        program.attach()?;
    }
    log::debug!(
        "attached eBPF program {name} as {} on {function}",
        if entry { "fentry" } else { "fexit" }
    );
    Ok(())
}

fn unload(ebpf: &mut Ebpf, name: &'static str, entry: bool) {
    let Some(program) = ebpf.program_mut(name) else {
        return;
    };
    let result = if entry {
        <&mut FEntry>::try_from(program).map(|p| p.unload())
    } else {
        <&mut FExit>::try_from(program).map(|p| p.unload())
    };
    if !matches!(result, Ok(Ok(()))) {
        log::warn!("detaching eBPF program {name} after a failed fexit attach failed");
    }
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

/// Loads the raw tracepoint program `name` and attaches it to `tracepoint`.
pub(super) fn attach(ebpf: &mut Ebpf, name: &'static str, tracepoint: &'static str) -> Result<()> {
    let program = load_raw_tracepoint(ebpf, name)?;
    // The link is owned by the program, so it lives as long as the `Ebpf`.
    program.attach(tracepoint).map_err(|source| Error::Attach {
        name,
        tracepoint,
        source,
    })?;
    log::debug!("attached eBPF program {name} to raw tracepoint {tracepoint}");
    Ok(())
}

/// Loads the record-only `sys_enter` program and pins it in `dir`, next to
/// the recording maps, without attaching it: `moat` attaches it while it
/// records on a node where the pairing's `sys_enter` (which records itself)
/// is not attached, so that in every tier nothing runs on `sys_enter` while
/// nobody records. Pinned under a unique name and renamed over the pin of
/// an earlier moatd, so a `moat` starting meanwhile always finds one.
pub(super) fn pin_record_program(ebpf: &mut Ebpf, dir: &Path) -> Result<()> {
    /// Makes the temporary names of loads in one process (tests) unique.
    static SEQUENCE: AtomicU32 = AtomicU32::new(0);
    let name = RECORD_ENTER_PROGRAM;
    let program = load_raw_tracepoint(ebpf, name)?;
    let path = dir.join(RECORD_ENTER_PIN);
    // bpffs refuses dots in names.
    let temporary = dir.join(format!(
        "{RECORD_ENTER_PIN}_new_{}_{}",
        std::process::id(),
        SEQUENCE.fetch_add(1, Ordering::Relaxed)
    ));
    let pin_error = |source| Error::PinProgram {
        path: path.clone(),
        source,
    };
    program
        .pin(&temporary)
        .map_err(|e| pin_error(std::io::Error::other(e)))?;
    if let Err(e) = std::fs::rename(&temporary, &path) {
        let _ = std::fs::remove_file(&temporary);
        return Err(pin_error(e));
    }
    log::debug!("pinned eBPF program {name} at {}", path.display());
    Ok(())
}

/// Loads the raw tracepoint program `name` into the kernel.
fn load_raw_tracepoint<'a>(
    ebpf: &'a mut Ebpf,
    name: &'static str,
) -> Result<&'a mut RawTracePoint> {
    let program: &mut RawTracePoint = ebpf
        .program_mut(name)
        .ok_or(Error::MissingProgram { name })?
        .try_into()
        .map_err(|source| Error::ProgramType {
            name,
            expected: "raw tracepoint",
            source,
        })?;
    program
        .load()
        .map_err(|source| Error::LoadProgram { name, source })?;
    Ok(program)
}
