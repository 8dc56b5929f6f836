//! Attaching the programs of the configured tier and mechanism (see
//! [`super::tracing`]), after the scheduler and cgroup programs every tier
//! uses.

use std::{
    path::Path,
    sync::atomic::{AtomicU32, Ordering},
};

use aya::{
    programs::{links::FdLink, FEntry, FExit, ProgramError, RawTracePoint},
    Ebpf,
};
use moat_common::{
    FATAL_PROGRAMS, FEXIT_EVENT_PROGRAMS, KERNEL_PROGRAMS, RECORD_ENTER_PIN, RECORD_ENTER_PROGRAM,
    SECCOMP_EXIT_PROGRAM, SECCOMP_FUNCTION, SIGNAL_GENERATE_PROGRAM,
};

use super::{
    config::KernelConfig,
    error::{Error, Result},
    pins::LINK_PREFIX,
    tracing::{DenialTier, Mechanism, MechanismChoice, TracingMode},
};

/// The scheduler and cgroup programs: the first entries of [`KERNEL_PROGRAMS`]
/// (the rest are the `sys_enter`/`sys_exit` pair).
const COMMON_PROGRAMS: usize = 4;

/// Every program moatd may attach, in attach order (only one tier's and
/// mechanism's are attached at a time).
pub(super) fn all_programs() -> Vec<&'static str> {
    let mut names: Vec<&'static str> = KERNEL_PROGRAMS[..COMMON_PROGRAMS]
        .iter()
        .map(|(name, _)| *name)
        .collect();
    names.extend(FATAL_PROGRAMS.iter().map(|(name, _)| *name));
    names.push(SECCOMP_EXIT_PROGRAM);
    names.extend(FEXIT_EVENT_PROGRAMS.iter().map(|(name, _, _)| *name));
    names.extend(
        KERNEL_PROGRAMS[COMMON_PROGRAMS..]
            .iter()
            .map(|(name, _)| *name),
    );
    names
}

/// The mode of a pinned program set found attached, or None when it is not
/// one `attach_programs` makes for `config` (then it is replaced).
pub(super) fn adopted_mode(
    attached: &[&'static str],
    config: &KernelConfig,
) -> Option<TracingMode> {
    let has = |name: &str| attached.contains(&name);
    if !KERNEL_PROGRAMS[..COMMON_PROGRAMS]
        .iter()
        .all(|(name, _)| has(name))
    {
        return None;
    }
    let fexit =
        has(SECCOMP_EXIT_PROGRAM) && FEXIT_EVENT_PROGRAMS.iter().all(|(name, _, _)| has(name));
    let pairing = KERNEL_PROGRAMS[COMMON_PROGRAMS..]
        .iter()
        .all(|(name, _)| has(name));
    let signal = has(SIGNAL_GENERATE_PROGRAM);
    match (config.denials, config.mechanism, fexit, pairing, signal) {
        (DenialTier::Fatal, _, false, false, true) => {
            Some(mode(DenialTier::Fatal, Mechanism::Signal, None))
        }
        (DenialTier::All, MechanismChoice::Fexit | MechanismChoice::Auto, true, false, false) => {
            Some(mode(DenialTier::All, Mechanism::Fexit, None))
        }
        (DenialTier::All, MechanismChoice::Pairing, false, true, false) => {
            Some(mode(DenialTier::All, Mechanism::Pairing, None))
        }
        (DenialTier::All, MechanismChoice::Auto, false, true, false) => Some(mode(
            DenialTier::All,
            Mechanism::Pairing,
            Some("chosen when the pinned programs were loaded; that moatd logged why".to_owned()),
        )),
        _ => None,
    }
}

/// Attaches every program `config` asks for, in order, pinning their links in
/// `pin_dir` when given; returns the mode chosen and the names of the programs
/// attached.
pub(super) fn attach_programs(
    ebpf: &mut Ebpf,
    config: &KernelConfig,
    pin_dir: Option<&Path>,
) -> Result<(TracingMode, Vec<&'static str>)> {
    let mut attached = Vec::new();
    // The scheduler programs (which mark new tasks and follow exec) come first,
    // so that sys_exit (when attached) never meets a slot they could not have
    // written yet.
    for (name, tracepoint) in &KERNEL_PROGRAMS[..COMMON_PROGRAMS] {
        attach(ebpf, name, tracepoint, pin_dir)?;
        attached.push(*name);
    }
    let mode = match (config.denials, config.mechanism) {
        (DenialTier::Fatal, _) => {
            for (name, tracepoint) in FATAL_PROGRAMS {
                attach(ebpf, name, tracepoint, pin_dir)?;
                attached.push(name);
            }
            mode(DenialTier::Fatal, Mechanism::Signal, None)
        }
        (DenialTier::All, MechanismChoice::Pairing) => {
            attach_pairing(ebpf, &mut attached, pin_dir)?;
            mode(DenialTier::All, Mechanism::Pairing, None)
        }
        (DenialTier::All, MechanismChoice::Fexit) => {
            attach_fexit(ebpf, &mut attached, pin_dir)
                .map_err(|source| Error::FexitUnavailable { source })?;
            mode(DenialTier::All, Mechanism::Fexit, None)
        }
        (DenialTier::All, MechanismChoice::Auto) => {
            match attach_fexit(ebpf, &mut attached, pin_dir) {
                Ok(()) => mode(DenialTier::All, Mechanism::Fexit, None),
                Err(err) => {
                    attach_pairing(ebpf, &mut attached, pin_dir)?;
                    mode(DenialTier::All, Mechanism::Pairing, Some(error_chain(&err)))
                }
            }
        }
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

/// `sched_switch` (which writes the per-CPU cache back) before `sys_enter`
/// (its first writer), and `sys_enter` before `sys_exit`.
fn attach_pairing(
    ebpf: &mut Ebpf,
    attached: &mut Vec<&'static str>,
    pin_dir: Option<&Path>,
) -> Result<()> {
    for (name, tracepoint) in &KERNEL_PROGRAMS[COMMON_PROGRAMS..] {
        attach(ebpf, name, tracepoint, pin_dir)?;
        attached.push(*name);
    }
    Ok(())
}

/// Loads and attaches the fexit mechanism's programs: the refusals, then the
/// process events the pairing would otherwise count. The kernel refuses the
/// first where tracing programs are not allowed (EPERM here), which is the
/// probe `auto` relies on; on any failure the ones already attached are
/// detached again (and unpinned), so a fallback never leaves half of them
/// running.
fn attach_fexit(
    ebpf: &mut Ebpf,
    attached: &mut Vec<&'static str>,
    pin_dir: Option<&Path>,
) -> std::result::Result<(), ProgramError> {
    let btf = aya::Btf::from_sys_fs().map_err(ProgramError::Btf)?;
    let mut done: Vec<(&'static str, bool)> = Vec::new();
    let result = (|| {
        attach_tracing(
            ebpf,
            &btf,
            SECCOMP_EXIT_PROGRAM,
            SECCOMP_FUNCTION,
            false,
            pin_dir,
        )?;
        done.push((SECCOMP_EXIT_PROGRAM, false));
        for (name, function, entry) in FEXIT_EVENT_PROGRAMS {
            attach_tracing(ebpf, &btf, name, function, entry, pin_dir)?;
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
                if let Some(dir) = pin_dir {
                    // The pin is the link's last reference: removing it detaches.
                    let _ = std::fs::remove_file(dir.join(format!("{LINK_PREFIX}{name}")));
                }
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
    pin_dir: Option<&Path>,
) -> std::result::Result<(), ProgramError> {
    let program = ebpf.program_mut(name).ok_or(ProgramError::NotLoaded)?;
    let link: Option<FdLink> = if entry {
        let program: &mut FEntry = program.try_into()?;
        program.load(function, btf)?;
        let id = program.attach()?;
        pin_dir
            .map(|_| program.take_link(id).map(FdLink::from))
            .transpose()?
    } else {
        let program: &mut FExit = program.try_into()?;
        program.load(function, btf)?;
        let id = program.attach()?;
        pin_dir
            .map(|_| program.take_link(id).map(FdLink::from))
            .transpose()?
    };
    if let (Some(link), Some(dir)) = (link, pin_dir) {
        pin_link(link, name, dir)
            .map_err(|err| ProgramError::IOError(std::io::Error::other(error_chain(&err))))?;
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
pub(super) fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(inner) = source {
        text.push_str(": ");
        text.push_str(&inner.to_string());
        source = inner.source();
    }
    text
}

/// Loads the raw tracepoint program `name` and attaches it to `tracepoint`;
/// with `pin_dir`, pins its link there.
pub(super) fn attach(
    ebpf: &mut Ebpf,
    name: &'static str,
    tracepoint: &'static str,
    pin_dir: Option<&Path>,
) -> Result<()> {
    let program = load_raw_tracepoint(ebpf, name)?;
    // The link is owned by the program, so it lives as long as the `Ebpf`,
    // unless it is pinned.
    let id = program.attach(tracepoint).map_err(|source| Error::Attach {
        name,
        tracepoint,
        source,
    })?;
    if let Some(dir) = pin_dir {
        let link = program.take_link(id).map_err(|source| Error::PinLink {
            name,
            path: dir.to_path_buf(),
            source: Box::new(source),
        })?;
        pin_link(FdLink::from(link), name, dir)?;
    }
    log::debug!("attached eBPF program {name} to raw tracepoint {tracepoint}");
    Ok(())
}

/// Pins `link` as `link-<name>` in `dir`; the pin keeps the program
/// attached once the descriptor is closed.
pub(super) fn pin_link(link: FdLink, name: &'static str, dir: &Path) -> Result<()> {
    let path = dir.join(format!("{}{name}", LINK_PREFIX));
    link.pin(&path).map_err(|source| Error::PinLink {
        name,
        path,
        source: Box::new(source),
    })?;
    Ok(())
}

/// Loads the record-only `sys_enter` program and pins it in `dir`, next to
/// the recording maps, without attaching it: `moat` attaches it while it
/// records, in every tier and mechanism, so that nothing runs for recording
/// on `sys_enter` while nobody records. Pinned under a unique name and renamed over the pin of
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

#[cfg(test)]
mod tests {
    use super::*;
    use moat_common::{SCHED_SWITCH_PROGRAM, SYS_ENTER_PROGRAM, SYS_EXIT_PROGRAM};

    fn set(extra: &[&'static str]) -> Vec<&'static str> {
        let mut names: Vec<&'static str> = KERNEL_PROGRAMS[..COMMON_PROGRAMS]
            .iter()
            .map(|(name, _)| *name)
            .collect();
        names.extend_from_slice(extra);
        names
    }

    fn config(denials: DenialTier, mechanism: MechanismChoice) -> KernelConfig {
        KernelConfig {
            denials,
            mechanism,
            ..KernelConfig::default()
        }
    }

    #[test]
    fn a_pinned_set_is_adopted_only_as_the_configuration_would_attach_it() {
        let pairing = set(&[SCHED_SWITCH_PROGRAM, SYS_ENTER_PROGRAM, SYS_EXIT_PROGRAM]);
        let auto = adopted_mode(&pairing, &config(DenialTier::All, MechanismChoice::Auto)).unwrap();
        assert_eq!(auto.mechanism, Mechanism::Pairing);
        assert!(auto.fallback.is_some());
        let forced =
            adopted_mode(&pairing, &config(DenialTier::All, MechanismChoice::Pairing)).unwrap();
        assert_eq!(
            (forced.mechanism, forced.fallback),
            (Mechanism::Pairing, None)
        );
        // A forced fexit is not a pairing, whatever is pinned.
        assert!(adopted_mode(&pairing, &config(DenialTier::All, MechanismChoice::Fexit)).is_none());

        let mut fexit_names = vec![SECCOMP_EXIT_PROGRAM];
        fexit_names.extend(FEXIT_EVENT_PROGRAMS.iter().map(|(name, _, _)| *name));
        let fexit = set(&fexit_names);
        let mode = adopted_mode(&fexit, &config(DenialTier::All, MechanismChoice::Auto)).unwrap();
        assert_eq!(mode.mechanism, Mechanism::Fexit);
        // Half of the fexit programs: not adopted.
        assert!(
            adopted_mode(&fexit[..6], &config(DenialTier::All, MechanismChoice::Auto)).is_none()
        );

        let fatal = set(&[SIGNAL_GENERATE_PROGRAM]);
        let mode = adopted_mode(&fatal, &config(DenialTier::Fatal, MechanismChoice::Auto)).unwrap();
        assert_eq!(mode.mechanism, Mechanism::Signal);
        assert!(adopted_mode(&fatal, &config(DenialTier::All, MechanismChoice::Auto)).is_none());

        // A scheduler program missing: not adopted.
        assert!(adopted_mode(
            &pairing[1..],
            &config(DenialTier::All, MechanismChoice::Auto)
        )
        .is_none());
        // The pairing without its write-back (an older set): not adopted.
        let no_switch = set(&[SYS_ENTER_PROGRAM, SYS_EXIT_PROGRAM]);
        assert!(
            adopted_mode(&no_switch, &config(DenialTier::All, MechanismChoice::Auto)).is_none()
        );
        // Two mechanisms at once: not adopted.
        let both = set(&[
            SCHED_SWITCH_PROGRAM,
            SYS_ENTER_PROGRAM,
            SYS_EXIT_PROGRAM,
            SIGNAL_GENERATE_PROGRAM,
        ]);
        assert!(adopted_mode(&both, &config(DenialTier::Fatal, MechanismChoice::Auto)).is_none());
    }

    #[test]
    fn every_program_is_known_once_in_attach_order() {
        let names = all_programs();
        let mut unique = names.clone();
        unique.sort_unstable();
        unique.dedup();
        assert_eq!(unique.len(), names.len());
        assert_eq!(
            names.len(),
            KERNEL_PROGRAMS.len() + FATAL_PROGRAMS.len() + 1 + FEXIT_EVENT_PROGRAMS.len()
        );
        assert_eq!(names.last(), Some(&SYS_EXIT_PROGRAM));
    }
}
