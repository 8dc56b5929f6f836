//! The Markdown report: the main table, the table of the namespaces and
//! cgroups the probes saw, and every timed run.

use std::fmt::Write as _;

use moat_tests::bench::{self, ms, Row, Stats};

use super::variants::{measured, skip_reason, stats, Kind, Variant};
use super::GOAL_RATIO;

/// The Markdown report: the main table, the namespace table, the machine,
/// the conditions and every timed run.
pub(super) fn render(
    variants: &[Variant],
    conditions: &[String],
    machine: &[(String, String)],
) -> String {
    let mut s = String::new();
    bench::write_table(&mut s, &rows(variants));
    write_namespaces(&mut s, variants);
    bench::write_machine(&mut s, machine);
    bench::write_conditions(&mut s, conditions);
    let _ = writeln!(s, "\n### Every timed run (ms, in round order)\n");
    for v in variants.iter().filter(|v| v.skipped.is_none()) {
        let runs: Vec<String> = v
            .samples
            .iter()
            .map(|x| format!("{:.1}", ms(x.wall)))
            .collect();
        let _ = writeln!(s, "- {}: {}", v.kind.label(), runs.join(", "));
    }
    s
}

/// The rows of the main table.
fn rows(variants: &[Variant]) -> Vec<Row> {
    let median = |k: Kind| measured(variants, k).map(|v| stats(&v.samples).median);
    let crun = median(Kind::Crun);
    let present = |k: Kind| variants.iter().any(|v| v.kind == k);
    let mut rows = Vec::new();
    for k in Kind::ALL.into_iter().filter(|&k| present(k)) {
        let label = k.label();
        let Some(v) = measured(variants, k) else {
            rows.push(Row::info(
                format!("{label}, median"),
                format!("skipped: {}", skip_reason(variants, k)),
            ));
            continue;
        };
        let Stats {
            median: med,
            min,
            max,
        } = stats(&v.samples);
        let mut row = Row::info(format!("{label}, median"), format!("{med:.2} ms"));
        if k == Kind::Moat {
            match crun {
                Some(c) => {
                    row.goal = format!("≤ {GOAL_RATIO}× crun median ({:.2} ms)", GOAL_RATIO * c);
                    row.met = bench::yes_no(med <= GOAL_RATIO * c).into();
                }
                None => row.goal = format!("≤ {GOAL_RATIO}× crun median (crun skipped)"),
            }
        }
        rows.push(row);
        rows.push(Row::info(format!("{label}, min"), format!("{min:.2} ms")));
        rows.push(Row::info(format!("{label}, max"), format!("{max:.2} ms")));
    }
    let ratios = [
        Kind::Moat,
        Kind::MoatCold,
        Kind::MoatOther,
        Kind::Runc,
        Kind::Bwrap,
        Kind::Floor,
    ];
    for k in ratios.into_iter().filter(|&k| present(k)) {
        let figure = format!("{} / crun run, median", k.label());
        let mut row = match (median(k), crun) {
            (Some(x), Some(c)) => Row::info(&figure, format!("{:.3}×", x / c)),
            _ => Row::info(&figure, "n/a (a variant was skipped)"),
        };
        if k == Kind::Moat {
            row.goal = format!("≤ {GOAL_RATIO:.3}×");
            if let (Some(x), Some(c)) = (median(k), crun) {
                row.met = bench::yes_no(x <= GOAL_RATIO * c).into();
            }
        }
        rows.push(row);
    }
    if let (Some(m), Some(o)) = (median(Kind::Moat), median(Kind::MoatOther)) {
        rows.push(Row::info(
            "moat run / moat run (--compare-moat), median",
            format!("{:.3}×", m / o),
        ));
    }
    for k in [Kind::Moat, Kind::MoatCold] {
        if let (Some(m), Some(f)) = (median(k), median(Kind::Floor)) {
            rows.push(Row::info(
                format!("{} − /bin/true, median (launch overhead)", k.label()),
                format!("{:.2} ms", m - f),
            ));
        }
    }
    for k in [Kind::Moat, Kind::Crun, Kind::Runc, Kind::Bwrap] {
        let figure = format!(
            "Peak RSS of the {} process (`ru_maxrss`)",
            k.program().unwrap_or("moat")
        );
        match measured(variants, k) {
            Some(v) => {
                let max = v.samples.iter().map(|s| s.maxrss_kib).max().unwrap_or(0);
                rows.push(Row::info(figure, format!("{:.1} MiB", max as f64 / 1024.0)));
            }
            None => rows.push(Row::info(
                figure,
                format!("skipped: {}", skip_reason(variants, k)),
            )),
        }
    }
    rows
}

/// Appends the table of namespaces and cgroups the probes saw.
fn write_namespaces(s: &mut String, variants: &[Variant]) {
    let _ = writeln!(
        s,
        "\n### Namespaces and cgroups of the workload (measured)\n"
    );
    let _ = writeln!(
        s,
        "Seen from inside by the probe (`/proc/self/ns/*` compared with the harness's own, \
         `/proc/self/cgroup` entries other than `/`, `/proc/self/uid_map`).\n"
    );
    let _ = writeln!(
        s,
        "| Launcher | New namespaces | uid map | Cgroups (hierarchy:controllers:path) |"
    );
    let _ = writeln!(s, "|---|---|---|---|");
    let _ = writeln!(s, "| /bin/true | none | host | the harness's |");
    for v in variants.iter().filter(|v| v.kind != Kind::Floor) {
        match (&v.probe, &v.skipped) {
            (Some(p), _) => {
                let cgroups = if p.new_namespaces.contains(&"cgroup") {
                    // Paths are relative to the namespace's root, which is
                    // the workload's own cgroup.
                    "its own, the root of its cgroup namespace".into()
                } else if p.cgroups.is_empty() {
                    "the harness's".into()
                } else {
                    p.cgroups
                        .iter()
                        .map(|c| format!("`{c}`"))
                        .collect::<Vec<_>>()
                        .join("<br>")
                };
                let _ = writeln!(
                    s,
                    "| {} | {} | {} | {cgroups} |",
                    v.kind.label(),
                    if p.new_namespaces.is_empty() {
                        "none".into()
                    } else {
                        p.new_namespaces.join(", ")
                    },
                    p.uid_map.join("; "),
                );
            }
            (None, Some(why)) => {
                let _ = writeln!(s, "| {} | skipped: {why} | | |", v.kind.label());
            }
            (None, None) => {
                let _ = writeln!(s, "| {} | not probed (no busybox) | | |", v.kind.label());
            }
        }
    }
}
