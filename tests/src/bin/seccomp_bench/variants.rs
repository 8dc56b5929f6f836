//! Part 2, per-syscall cost: the variants (which filter the loops run under
//! and how they are started), the interleaved rounds that time them, and
//! their rows of the report's main table.

use std::time::Instant;

use moat_runtime::seccomp::bpf::Program;
use moat_tests::bench::{Row, Stats};

use super::analysis::analyse;
use super::outside::Outside;
use super::workloads::{check_outcomes, run_child, ChildResult, Outcome, WORKLOADS};
use super::{first_line, Config};

/// The rows of the main table for the per-syscall costs: every variant's
/// median, the ratios and differences, and the static analysis.
pub(super) fn per_syscall_rows(
    variants: &[Variant],
    samples: &[Vec<Vec<f64>>],
    rows: &mut Vec<Row>,
) {
    let native = moat_runtime::seccomp::arch::Host::detect()
        .ok()
        .and_then(|h| h.native.audit_arch());
    let median = |v: usize, w: usize| {
        (variants[v].skipped.is_none() && !samples[v][w].is_empty())
            .then(|| Stats::of(&samples[v][w]).median)
    };
    let (none, tr, lin, mr, cr) = (0, 1, 2, 3, 4);
    for (w, wl) in WORKLOADS.iter().enumerate() {
        for (v, var) in variants.iter().enumerate() {
            let value = match (median(v, w), &var.skipped) {
                (Some(m), _) => format!("{m:.1} ns/{}", wl.unit),
                (None, Some(why)) => format!("skipped: {why}"),
                (None, None) => "skipped".into(),
            };
            rows.push(Row::info(format!("{}, {}", wl.label, var.name), value));
        }
        let skipped = || "n/a (a variant was skipped)".to_string();
        let ratio = |a: usize, b: usize| match (median(a, w), median(b, w)) {
            (Some(x), Some(y)) => format!("{:.3}×", x / y),
            _ => skipped(),
        };
        let delta = |a: usize, b: usize| match (median(a, w), median(b, w)) {
            (Some(x), Some(y)) => format!("{:+.1} ns", x - y),
            _ => skipped(),
        };
        for (what, value) in [
            ("tree / no filter", ratio(tr, none)),
            ("linear / no filter", ratio(lin, none)),
            ("linear / tree", ratio(lin, tr)),
            ("moat run / no filter", ratio(mr, none)),
            ("crun / no filter", ratio(cr, none)),
            ("moat run / crun", ratio(mr, cr)),
            ("tree − no filter", delta(tr, none)),
            ("linear − no filter", delta(lin, none)),
            ("linear − tree", delta(lin, tr)),
            ("moat run − crun", delta(mr, cr)),
        ] {
            rows.push(Row::info(format!("{}: {what}", wl.label), value));
        }
        for v in [tr, lin] {
            let Some(program) = variants[v].program() else {
                continue;
            };
            let (value, cached) = match native.map(|arch| analyse(program, wl, arch)) {
                Some(Ok(a)) => (format!("{} insns", a.executed), a.cached),
                Some(Err(e)) => (format!("n/a ({e})"), false),
                None => ("n/a (unknown native arch)".into(), false),
            };
            rows.push(Row::info(
                format!(
                    "{}: BPF insns run for `{}`, {}",
                    wl.label, wl.syscall, variants[v].name
                ),
                if cached {
                    format!("{value} (skipped: kernel action cache)")
                } else {
                    value
                },
            ));
        }
    }
}

/// Part 2: runs the interleaved rounds (plus one discarded warm-up round).
/// Returns `samples[variant][workload]` (ns per call, one per round) and
/// the first call's outcome per variant and workload (`None` for a skipped
/// variant). A crun that fails in the warm-up round is skipped from then
/// on; any other failure stops the bench.
#[allow(clippy::type_complexity)]
pub(super) fn syscall_costs(
    cfg: Config,
    variants: &mut [Variant],
    outside: &Outside,
    started: Instant,
) -> Result<(Vec<Vec<Vec<f64>>>, Vec<Vec<Option<Outcome>>>), String> {
    let mut samples = vec![vec![Vec::new(); WORKLOADS.len()]; variants.len()];
    let mut outcomes: Vec<Vec<Option<Outcome>>> = vec![vec![None; WORKLOADS.len()]; variants.len()];
    for round in 0..=cfg.rounds {
        for k in 0..variants.len() {
            let v = (round + k) % variants.len();
            if variants[v].skipped.is_some() {
                continue;
            }
            eprintln!(
                "{}: {} ({:.1} s elapsed)",
                if round == 0 {
                    "warm-up round (discarded)".to_string()
                } else {
                    format!("round {round}/{}", cfg.rounds)
                },
                variants[v].name,
                started.elapsed().as_secs_f64()
            );
            let results = match run_variant(&variants[v], cfg, outside) {
                Ok(r) => r,
                Err(e) if round == 0 && matches!(variants[v].how, How::Crun) => {
                    eprintln!("skipping crun: {e}");
                    variants[v].skipped = Some(format!("crun refused to run: {}", first_line(&e)));
                    continue;
                }
                Err(e) => return Err(e),
            };
            for (w, r) in results.into_iter().enumerate() {
                let first = Outcome {
                    ret: r.ret,
                    errno: r.errno,
                };
                match outcomes[v][w] {
                    Some(o) if !o.same_kind(&first) => {
                        return Err(format!(
                            "{} under {}: first call gave {first} in one round, {o} in another",
                            WORKLOADS[w].label, variants[v].name
                        ))
                    }
                    _ => outcomes[v][w] = Some(first),
                }
                if round > 0 {
                    samples[v][w].push(r.ns_per_call);
                }
            }
        }
    }
    check_outcomes(variants, &outcomes)?;
    Ok((samples, outcomes))
}

/// Runs every workload once under `v`.
fn run_variant(v: &Variant, cfg: Config, outside: &Outside) -> Result<Vec<ChildResult>, String> {
    match &v.how {
        How::Fork { .. } => run_child(v, cfg),
        How::MoatRun => outside.run(v.name, outside.moat_command()?),
        How::Crun => outside.run(v.name, outside.crun_command()?),
    }
}

/// The name of the `moat run` variant.
pub(super) const MOAT_RUN: &str = "moat run";
/// The name of the crun variant.
pub(super) const CRUN: &str = "crun";

/// A filter configuration whose loops are timed, or why it is skipped.
pub(super) struct Variant {
    pub(super) name: &'static str,
    pub(super) how: How,
    pub(super) skipped: Option<String>,
}

/// How a [`Variant`]'s loops are run.
pub(super) enum How {
    /// In a forked child of this process that installs `program` (none:
    /// no filter) itself.
    Fork {
        program: Option<Program>,
        flags: u32,
    },
    /// As a `moat run` workload (`--loop all`).
    MoatRun,
    /// In a crun container (`--loop all`).
    Crun,
}

impl Variant {
    pub(super) fn fork(name: &'static str, program: Option<Program>, flags: u32) -> Variant {
        Variant {
            name,
            how: How::Fork { program, flags },
            skipped: None,
        }
    }

    /// The program a forked variant installs.
    fn program(&self) -> Option<&Program> {
        match &self.how {
            How::Fork { program, .. } => program.as_ref(),
            _ => None,
        }
    }

    /// Whether the loops run under a seccomp filter.
    pub(super) fn filtered(&self) -> bool {
        !matches!(self.how, How::Fork { program: None, .. })
    }
}
