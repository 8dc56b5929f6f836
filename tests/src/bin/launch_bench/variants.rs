//! The variants: the launchers measured (or why one is skipped), what a
//! timed run records, and the look-ups of a variant's figures that the
//! report and the JSON share.

use std::path::PathBuf;
use std::time::Duration;

use moat_tests::bench::{ms, Stats};
use moat_tests::oci;

use super::probe::Probe;
use super::Opts;

#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    Floor,
    /// moat with its seccomp cache filled (by the warm-up rounds).
    Moat,
    /// moat with an empty seccomp cache before every run.
    MoatCold,
    /// Another moat binary (`--compare-moat`), its cache filled too.
    MoatOther,
    Crun,
    Runc,
    Bwrap,
}

impl Kind {
    /// Every variant, in the order of the report's rows.
    pub(super) const ALL: [Kind; 7] = [
        Kind::Moat,
        Kind::MoatCold,
        Kind::MoatOther,
        Kind::Crun,
        Kind::Runc,
        Kind::Bwrap,
        Kind::Floor,
    ];

    /// The name in the Markdown report.
    pub(super) fn label(self) -> &'static str {
        match self {
            Kind::Floor => "/bin/true",
            Kind::Moat => "moat run",
            Kind::MoatCold => "moat run (cold cache)",
            Kind::MoatOther => "moat run (--compare-moat)",
            Kind::Crun => "crun run",
            Kind::Runc => "runc run",
            Kind::Bwrap => "bwrap",
        }
    }

    /// The name in the JSON results (a peer's column, a plot's x value).
    pub(super) fn peer(self) -> &'static str {
        match self {
            Kind::Floor => "/bin/true",
            Kind::Moat => "moat",
            Kind::MoatCold => "moat (cold cache)",
            Kind::MoatOther => "moat (--compare-moat)",
            Kind::Crun => "crun",
            Kind::Runc => "runc",
            Kind::Bwrap => "bwrap",
        }
    }

    /// Whether this is a moat binary.
    pub(super) fn is_moat(self) -> bool {
        matches!(self, Kind::Moat | Kind::MoatCold | Kind::MoatOther)
    }

    /// The peer program found on `PATH`.
    pub(super) fn program(self) -> Option<&'static str> {
        match self {
            Kind::Crun => Some("crun"),
            Kind::Runc => Some("runc"),
            Kind::Bwrap => Some("bwrap"),
            _ => None,
        }
    }

    /// The Debian package of the peer program.
    pub(super) fn package(self) -> Option<&'static str> {
        match self {
            Kind::Bwrap => Some("bubblewrap"),
            k => k.program(),
        }
    }
}

/// One timed run.
#[derive(Clone, Copy)]
pub(super) struct Sample {
    pub(super) wall: Duration,
    /// `ru_maxrss` in KiB.
    pub(super) maxrss_kib: i64,
}

/// A variant to measure, or why it is skipped.
pub(super) struct Variant {
    pub(super) kind: Kind,
    /// The launcher (the peer program's path for crun, runc and bwrap).
    pub(super) exe: PathBuf,
    pub(super) skipped: Option<String>,
    pub(super) probe: Option<Probe>,
    pub(super) samples: Vec<Sample>,
}

/// Every variant, with the reason a peer is skipped. Outside `--quick` a
/// missing peer is an error. The other moat is a variant only when
/// `--compare-moat` names it.
pub(super) fn find_variants(
    opts: &Opts,
    bundle_problem: Option<&str>,
) -> Result<Vec<Variant>, String> {
    let mut variants = Vec::new();
    for kind in Kind::ALL {
        let (exe, skipped) = match kind.program() {
            None if kind == Kind::MoatOther => match &opts.compare_moat {
                Some(m) => (m.clone(), None),
                None => continue,
            },
            None if kind.is_moat() => (opts.moat.clone(), None),
            None => (PathBuf::from("/bin/true"), None),
            Some(p) => match oci::which(p) {
                Some(path) if kind == Kind::Bwrap => (path, None),
                Some(path) => (path, bundle_problem.map(str::to_string)),
                None => (
                    PathBuf::from(p),
                    Some(format!(
                        "{p} is not installed (Debian: {})",
                        kind.package().unwrap_or(p)
                    )),
                ),
            },
        };
        if let (Some(why), false) = (&skipped, opts.quick) {
            return Err(format!(
                "{}: {why} (scripts/setup.sh installs what it needs; --quick skips it)",
                kind.label()
            ));
        }
        if let Some(why) = &skipped {
            eprintln!("launch_bench: skipping {}: {why}", kind.label());
        }
        variants.push(Variant {
            kind,
            exe,
            skipped,
            probe: None,
            samples: Vec::new(),
        });
    }
    Ok(variants)
}

/// Median, min and max of the wall times, in ms.
pub(super) fn stats(samples: &[Sample]) -> Stats {
    Stats::of(&samples.iter().map(|s| ms(s.wall)).collect::<Vec<_>>())
}

fn find(variants: &[Variant], k: Kind) -> Option<&Variant> {
    variants.iter().find(|v| v.kind == k)
}

/// The variant `k` when it was measured.
pub(super) fn measured(variants: &[Variant], k: Kind) -> Option<&Variant> {
    find(variants, k).filter(|v| v.skipped.is_none())
}

pub(super) fn skip_reason(variants: &[Variant], k: Kind) -> String {
    find(variants, k)
        .and_then(|v| v.skipped.clone())
        .unwrap_or_else(|| "not measured".into())
}
