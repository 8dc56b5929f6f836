//! The run's figures as `moat_tests::results::Results` of harness
//! `seccomp`: what `--json PATH` writes for `bench_report` (sections
//! `Filter cost` and `Profile compile time`, plot `filter-cost`).

use moat_tests::results::{Comparison, Goal, Peer, Plot, PlotKind, Point, Series, Value};

use super::compile_time::CompileFigures;
use super::variants::{CRUN, MOAT_RUN};
use super::workloads::WORKLOADS;
use super::{Measured, COMPILE_GOAL_MS, CRUN_V, MOAT, NO_FILTER, SINGLE_FILTER, TREE};

/// The report section of the per-syscall figures.
const FILTER_COST: &str = "Filter cost";
/// The report section of the compile figures.
const COMPILE_TIME: &str = "Profile compile time";

/// A variant's samples for workload `w`, or why there are none.
fn value(m: &Measured, v: usize, w: usize) -> Value {
    match &m.variants[v].skipped {
        Some(why) => Value::Skipped(why.clone()),
        None => Value::measured(&m.samples[v][w]),
    }
}

/// The JSON's per-syscall figures: `moat run` beside no filter and crun.
pub(super) fn filter_comparisons(m: &Measured) -> Vec<Comparison> {
    WORKLOADS
        .iter()
        .enumerate()
        .map(|(w, wl)| Comparison {
            note: None,
            section: FILTER_COST.into(),
            figure: wl.label.into(),
            unit: format!("ns/{}", wl.unit),
            moat: value(m, MOAT, w),
            peers: vec![
                Peer {
                    name: "no filter".into(),
                    value: value(m, NO_FILTER, w),
                },
                Peer {
                    name: CRUN.into(),
                    value: value(m, CRUN_V, w),
                },
            ],
            // Without a filter, mount runs the kernel's own error path: a
            // ratio to it is no filter overhead. crun runs the same filter.
            baseline: Some(if wl.syscall == "mount" {
                CRUN.into()
            } else {
                "no filter".into()
            }),
            goal: None,
        })
        .collect()
}

/// The JSON's compile figures: moat's layout beside libseccomp's own.
pub(super) fn compile_comparisons(c: &CompileFigures) -> Vec<Comparison> {
    let single = |xs: &[f64]| Peer {
        name: SINGLE_FILTER.into(),
        value: Value::measured(xs),
    };
    let default = Value::measured(&c.default);
    let met = default.median().map(|m| m < COMPILE_GOAL_MS);
    let (fixture, fixture_peer) = match &c.fixture {
        Ok((_, per_arch, combined)) => (Value::measured(per_arch), single(combined)),
        Err(why) => (
            Value::Skipped(why.clone()),
            Peer {
                name: SINGLE_FILTER.into(),
                value: Value::Skipped(why.clone()),
            },
        ),
    };
    vec![
        Comparison {
            note: None,
            section: COMPILE_TIME.into(),
            figure: "compile the default profile".into(),
            unit: "ms".into(),
            moat: default,
            peers: vec![single(&c.default_combined)],
            baseline: Some(SINGLE_FILTER.into()),
            goal: Some(Goal {
                text: format!("< {COMPILE_GOAL_MS} ms"),
                met,
            }),
        },
        Comparison {
            note: None,
            section: COMPILE_TIME.into(),
            figure: "compile the largest fixture profile".into(),
            unit: "ms".into(),
            moat: fixture,
            peers: vec![fixture_peer],
            baseline: Some(SINGLE_FILTER.into()),
            goal: None,
        },
    ]
}

/// The `filter-cost` plot: a bar per system call and variant.
pub(super) fn filter_plot(m: &Measured) -> Plot {
    let series = [
        (NO_FILTER, "no filter"),
        (TREE, "moat filter (in-process)"),
        (MOAT, MOAT_RUN),
        (CRUN_V, CRUN),
    ]
    .iter()
    .filter(|(v, _)| m.variants[*v].skipped.is_none())
    .map(|&(v, name)| Series {
        name: name.into(),
        points: WORKLOADS
            .iter()
            .enumerate()
            .map(|(w, wl)| Point::of(wl.short, &m.samples[v][w]))
            .collect(),
    })
    .collect();
    Plot {
        id: "filter-cost".into(),
        title: "Cost of a system call under the default seccomp profile".into(),
        x_label: "system call".into(),
        y_label: "ns per call (socket+close: per pair)".into(),
        kind: PlotKind::Bars,
        series,
    }
}
