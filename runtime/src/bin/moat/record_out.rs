//! Writing what `moat run --record-profile` and `moat profile record`
//! recorded: the profile file, a fresh one or merged into the one there.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::ValueEnum;
use moat_common::{AUDIT_ARCH_I386, AUDIT_ARCH_X86_64};

use moat_runtime::caps::CapSet;
use moat_runtime::record::{write, Recorded};
use moat_runtime::seccomp::{self, ProfileRef};

use crate::output_file;

/// `--record-mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum RecordMode {
    /// Replace FILE with this recording.
    Overwrite,
    /// Add this recording to the syscalls FILE allows (a union), so that
    /// several runs (tests, traffic replays, replicas) make one profile.
    Merge,
}

/// Where and how to write a recording.
#[derive(Debug, Clone)]
pub struct RecordTarget {
    /// The profile file.
    pub path: PathBuf,
    /// Replace or merge.
    pub mode: RecordMode,
    /// The base profile (its argument rules are kept).
    pub base: ProfileRef,
    /// The capability set the base is resolved for.
    pub caps: CapSet,
    /// What was recorded, for the header.
    pub what: String,
    /// Over what span, for the header.
    pub span: String,
}

impl RecordTarget {
    /// Checks, before anything runs, that a merge target parses: a
    /// recording must not be lost to a bad file at the end.
    pub fn check(&self) -> Result<()> {
        if self.mode == RecordMode::Merge && self.path.exists() {
            seccomp::parse::from_file(&self.path)
                .with_context(|| "--record-mode merge needs a valid profile to merge into")?;
        }
        Ok(())
    }
}

/// Writes `recorded` to `target`; returns a one-line summary.
pub fn write_recording(target: &RecordTarget, recorded: &Recorded) -> Result<String> {
    if recorded.lost > 0 {
        bail!(moat_runtime::record::RecordError::Incomplete {
            lost: recorded.lost
        });
    }
    if !recorded.continuous {
        bail!("moatd stopped while the command ran, so some of its syscalls may not have been recorded: nothing was written to {}; run it again with moatd running", target.path.display());
    }
    if !recorded.started {
        bail!("the command never started (its execve did not succeed): nothing was recorded and {} was not written", target.path.display());
    }
    let (mut names, unnamed) = write::name_syscalls(&recorded.syscalls);
    let mut merged_from = String::new();
    if target.mode == RecordMode::Merge && target.path.exists() {
        let old = seccomp::parse::from_file(&target.path)?;
        for (name, arches) in write::per_arch_names(&old) {
            names.entry(name).or_default().extend(arches);
        }
        merged_from = format!(
            "; merged with the profile that was there ({})",
            old.comment.as_deref().unwrap_or("no header")
        );
    }
    let base = match target.base.load()? {
        Some((profile, source)) => {
            Some(seccomp::resolve_for_host(&profile, source, &target.caps)?.0)
        }
        None => None,
    };
    let per_arch = count_per_arch(&recorded.syscalls);
    let mut header = format!(
        "Recorded by moat {} at {} from {}: the syscalls it made ({per_arch}), {}; base profile {} (its argument rules kept, its other refusals kept as they were){merged_from}",
        env!("CARGO_PKG_VERSION"),
        jiff::Timestamp::now().strftime("%Y-%m-%dT%H:%M:%SZ"),
        target.what,
        target.span,
        base_label(&target.base),
    );
    if !unnamed.is_empty() {
        let list: Vec<String> = unnamed
            .iter()
            .map(|(a, n)| format!("{n} ({})", a.name()))
            .collect();
        header.push_str(&format!(
            "; numbers without a name in libseccomp {} (not in this profile, so refused): {}",
            seccomp::compile::libseccomp_version(),
            list.join(", ")
        ));
        eprintln!(
            "moat: warning: recorded syscall numbers libseccomp cannot name, which the profile therefore refuses: {}",
            list.join(", ")
        );
    }
    let profile = write::build_profile(&names, base.as_ref(), header);
    output_file::write(&target.path, write::to_json(&profile).as_bytes())?;
    Ok(format!(
        "moat: recorded {} syscalls ({per_arch}) into {}",
        names.len(),
        target.path.display()
    ))
}

fn count_per_arch(set: &std::collections::BTreeSet<(u32, u32)>) -> String {
    let count = |audit: u32, x32: bool| {
        set.iter()
            .filter(|(a, n)| *a == audit && (n & 0x4000_0000 != 0) == x32)
            .count()
    };
    let mut parts = vec![format!("x86_64: {}", count(AUDIT_ARCH_X86_64, false))];
    for (label, audit, x32) in [
        ("x86", AUDIT_ARCH_I386, false),
        ("x32", AUDIT_ARCH_X86_64, true),
    ] {
        let n = count(audit, x32);
        if n > 0 {
            parts.push(format!("{label}: {n}"));
        }
    }
    parts.join(", ")
}

fn base_label(p: &ProfileRef) -> String {
    match p {
        ProfileRef::Default => "`default`".into(),
        ProfileRef::Unconfined => "`unconfined`".into(),
        ProfileRef::File(f) => format!("{}", Path::new(f).display()),
    }
}
