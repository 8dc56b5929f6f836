//! The run's figures as `moat_tests::results::Results` of harness
//! `launch`: what `--json PATH` writes for `bench_report` (section
//! `Launch`, plot `launch`).

use moat_tests::bench::ms;
use moat_tests::results::{Comparison, Goal, Peer, Plot, PlotKind, Point, Series, Value};

use super::variants::{measured, skip_reason, Kind, Sample, Variant};
use super::{GOAL_RATIO, SECTION};

fn rss_mib(s: &Sample) -> f64 {
    s.maxrss_kib as f64 / 1024.0
}

/// `f` of every timed run of `k`, or why there are none.
fn value(variants: &[Variant], k: Kind, f: fn(&Sample) -> f64) -> Value {
    match measured(variants, k) {
        Some(v) => Value::measured(&v.samples.iter().map(f).collect::<Vec<_>>()),
        None => Value::Skipped(skip_reason(variants, k)),
    }
}

/// The figure of the warm launch (the goal's).
pub(super) const WARM: &str = "launch /bin/true";
/// The figure of the cold launch.
pub(super) const COLD: &str = "launch /bin/true, empty seccomp cache";

/// The JSON figures: launch latency with the goal (the seccomp cache
/// filled), the cold launch (cache empty), moat against another build when
/// one was given, and peak RSS.
pub(super) fn comparisons(variants: &[Variant]) -> Vec<Comparison> {
    let wall = |s: &Sample| ms(s.wall);
    let peers = |kinds: &[Kind], f: fn(&Sample) -> f64| {
        kinds
            .iter()
            .map(|&k| Peer {
                name: k.peer().into(),
                value: value(variants, k, f),
            })
            .collect::<Vec<_>>()
    };
    let moat = value(variants, Kind::Moat, wall);
    let crun = value(variants, Kind::Crun, wall);
    let met = match (moat.median(), crun.median()) {
        (Some(m), Some(c)) => Some(m <= GOAL_RATIO * c),
        _ => None,
    };
    let others = [Kind::Crun, Kind::Runc, Kind::Bwrap, Kind::Floor];
    let mut out = vec![
        Comparison {
            note: Some(
                "moat's seccomp cache holds the filter (the warm-up rounds filled it), as on \
                 every launch after the first of a profile and capability set"
                    .into(),
            ),
            section: SECTION.into(),
            figure: WARM.into(),
            unit: "ms".into(),
            moat,
            peers: peers(&others, wall),
            baseline: Some("crun".into()),
            goal: Some(Goal {
                text: format!("≤ {GOAL_RATIO}× crun median"),
                met,
            }),
        },
        Comparison {
            note: Some(
                "the seccomp cache is emptied (untimed) before every run, so each one compiles \
                 the profile and stores it: the first launch of a profile, or after a reboot \
                 or an upgrade; the peers' columns are the same runs as in the row above"
                    .into(),
            ),
            section: SECTION.into(),
            figure: COLD.into(),
            unit: "ms".into(),
            moat: value(variants, Kind::MoatCold, wall),
            peers: peers(&others, wall),
            baseline: Some("crun".into()),
            goal: None,
        },
    ];
    if measured(variants, Kind::MoatOther).is_some() {
        out.push(Comparison {
            note: Some(
                "another moat binary (--compare-moat), warm, timed in the same rounds".into(),
            ),
            section: SECTION.into(),
            figure: "launch /bin/true, against another moat build".into(),
            unit: "ms".into(),
            moat: value(variants, Kind::Moat, wall),
            peers: peers(&[Kind::MoatOther, Kind::Crun], wall),
            baseline: Some(Kind::MoatOther.peer().into()),
            goal: None,
        });
    }
    out.push(Comparison {
        note: None,
        section: SECTION.into(),
        figure: "peak RSS of the launcher".into(),
        unit: "MiB".into(),
        moat: value(variants, Kind::Moat, rss_mib),
        peers: peers(&[Kind::Crun, Kind::Runc, Kind::Bwrap], rss_mib),
        baseline: Some("crun".into()),
        goal: None,
    });
    out
}

/// The `launch` plot: one bar per measured launcher.
pub(super) fn plot(variants: &[Variant]) -> Plot {
    let points = Kind::ALL
        .iter()
        .filter_map(|&k| measured(variants, k))
        .map(|v| {
            let xs: Vec<f64> = v.samples.iter().map(|s| ms(s.wall)).collect();
            Point::of(v.kind.peer(), &xs)
        })
        .collect();
    Plot {
        id: "launch".into(),
        title: "Launch latency of /bin/true".into(),
        x_label: "launcher".into(),
        y_label: "ms (median; bars: min to max)".into(),
        kind: PlotKind::Bars,
        series: vec![Series {
            name: "median latency".into(),
            points,
        }],
    }
}
