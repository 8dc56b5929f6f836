//! The Markdown of `BENCHMARKS.md`: a summary of the goals, one table per
//! section (moat, each peer, the ratio, the goal and its verdict), the
//! plots, how each harness measured, and the machine.

use std::fmt::Write as _;

use moat_tests::results::{Comparison, Results, Value, SECTIONS};

/// The whole report. `images` are (id, title, link) of the rendered plots.
pub fn render(results: &[Results], images: &[(String, String, String)], command: &str) -> String {
    let mut s = String::new();
    let date = machine(results)
        .into_iter()
        .find(|(k, _)| k == "Date")
        .map(|(_, v)| v)
        .unwrap_or_else(moat_tests::bench::utc_now);
    let _ = writeln!(s, "# moat benchmarks\n");
    let _ = writeln!(
        s,
        "Generated on {date} by `{command}` (as root). Run that command from the repository \
         root to reproduce: it installs what it needs, runs every harness, restores the \
         machine, and rewrites this file and its plots.\n"
    );
    if results.iter().any(|r| r.quick) {
        let _ = writeln!(
            s,
            "**Quick run**: smoke-test counts, the figures below mean little.\n"
        );
    }
    let all: Vec<&Comparison> = SECTIONS
        .iter()
        .flat_map(|sec| {
            results
                .iter()
                .flat_map(|r| &r.comparisons)
                .filter(move |c| c.section == *sec)
        })
        .collect();
    summary(&mut s, &all);
    for sec in SECTIONS {
        let rows: Vec<&Comparison> = all.iter().copied().filter(|c| c.section == sec).collect();
        if !rows.is_empty() {
            section(&mut s, sec, &rows);
        }
    }
    if !images.is_empty() {
        let _ = writeln!(s, "## Plots\n");
        for (_, title, link) in images {
            let _ = writeln!(s, "![{title}]({link})\n");
        }
    }
    let _ = writeln!(s, "## Method\n");
    for r in results {
        let _ = writeln!(s, "### `{}_bench`\n", r.harness);
        for c in &r.conditions {
            let _ = writeln!(s, "- {c}");
        }
        let _ = writeln!(s);
    }
    let _ = writeln!(s, "## Machine\n");
    for (k, v) in machine(results) {
        let _ = writeln!(s, "- {k}: {v}");
    }
    s
}

/// Every figure that has a goal: one line each, so a reader sees at once
/// what is met and what is not.
fn summary(s: &mut String, rows: &[&Comparison]) {
    let _ = writeln!(s, "## Goals\n");
    let _ = writeln!(s, "| Section | Figure | moat | Goal | Met? |");
    let _ = writeln!(s, "|---|---|---|---|---|");
    for c in rows {
        if let Some(g) = &c.goal {
            let _ = writeln!(
                s,
                "| {} | {} | {} | {} | {} |",
                c.section,
                c.figure,
                with_unit(&c.moat, &c.unit),
                g.text,
                verdict(g.met)
            );
        }
    }
    let _ = writeln!(s);
}

/// One section's table, then the reasons for every skipped value.
fn section(s: &mut String, name: &str, rows: &[&Comparison]) {
    let mut peers: Vec<&str> = Vec::new();
    for c in rows {
        for p in &c.peers {
            if !peers.contains(&p.name.as_str()) {
                peers.push(&p.name);
            }
        }
    }
    let _ = writeln!(s, "## {name}\n");
    let _ = writeln!(
        s,
        "Values are median (min–max) over repeated runs, or exact counts.\n"
    );
    let _ = write!(s, "| Figure | moat |");
    for p in &peers {
        let _ = write!(s, " {p} |");
    }
    let _ = writeln!(s, " Ratio | Goal | Met? |");
    let _ = writeln!(s, "|---|---|{}---|---|---|", "---|".repeat(peers.len()));
    let mut notes = Vec::new();
    for c in rows {
        let _ = write!(s, "| {} ({}) | {} |", c.figure, c.unit, cell(&c.moat));
        if let Value::Skipped(why) = &c.moat {
            notes.push(format!("moat, {}: {why}", c.figure));
        }
        for p in &peers {
            match c.peer(p) {
                Some(v) => {
                    let _ = write!(s, " {} |", cell(v));
                    if let Value::Skipped(why) = v {
                        notes.push(format!("{p}, {}: {why}", c.figure));
                    }
                }
                None => s.push_str(" — |"),
            }
        }
        let (goal, met) = match &c.goal {
            Some(g) => (g.text.as_str(), verdict(g.met)),
            None => ("—", "—"),
        };
        let _ = writeln!(s, " {} | {goal} | {met} |", ratio(c));
    }
    let _ = writeln!(s);
    let explained: Vec<String> = rows
        .iter()
        .filter_map(|c| Some(format!("- {}: {}.", c.figure, c.note.as_deref()?)))
        .collect();
    if !explained.is_empty() {
        let _ = writeln!(s, "Notes:\n\n{}\n", explained.join("\n"));
    }
    if !notes.is_empty() {
        let _ = writeln!(s, "Skipped:\n");
        for n in notes {
            let _ = writeln!(s, "- {n}");
        }
        let _ = writeln!(s);
    }
}

/// moat's median over the baseline's, e.g. `0.781× crun`.
fn ratio(c: &Comparison) -> String {
    let Some(base) = &c.baseline else {
        return "—".into();
    };
    let b = c.peer(base).and_then(Value::median);
    match (c.moat.median(), b) {
        (Some(m), Some(b)) if b != 0.0 => format!("{:.3}× {base}", m / b),
        _ => format!("n/a ({base} not measured)"),
    }
}

/// A table cell: `21.1 (19.8–25.0)`, an exact number, or `skipped`.
fn cell(v: &Value) -> String {
    match v {
        Value::Measured {
            median, min, max, ..
        } => format!("{} ({}–{})", num(*median), num(*min), num(*max)),
        Value::Exact(x) => exact(*x),
        Value::Skipped(_) => "skipped".into(),
    }
}

/// The median with its unit, for the summary.
fn with_unit(v: &Value, unit: &str) -> String {
    match v {
        Value::Measured { median, .. } => format!("{} {unit}", num(*median)),
        Value::Exact(x) => format!("{} {unit}", exact(*x)),
        Value::Skipped(_) => "skipped".into(),
    }
}

/// An exact value: a count as an integer, anything else as [`num`].
fn exact(x: f64) -> String {
    if x.is_finite() && x.fract() == 0.0 && x.abs() < 1e15 {
        format!("{x:.0}")
    } else {
        num(x)
    }
}

/// A measured number with as many decimals as its size deserves: three
/// significant digits or more.
fn num(x: f64) -> String {
    if !x.is_finite() {
        return "n/a".into();
    }
    let a = x.abs();
    if a >= 100.0 {
        format!("{x:.1}")
    } else if a >= 1.0 {
        format!("{x:.2}")
    } else {
        format!("{x:.3}")
    }
}

fn verdict(met: Option<bool>) -> &'static str {
    match met {
        Some(true) => "yes",
        Some(false) => "**no**",
        None => "n/a",
    }
}

/// The machine entries of all harnesses, each key once (the first value:
/// the harnesses ran on the same machine minutes apart).
fn machine(results: &[Results]) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = Vec::new();
    for (k, v) in results.iter().flat_map(|r| &r.machine) {
        if !out.iter().any(|(x, _)| x == k) {
            out.push((k.clone(), v.clone()));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use moat_tests::results::{Goal, Peer};

    fn launch() -> Results {
        let mut r = Results::new("launch", false);
        r.machine
            .push(("Date".into(), "2026-11-30 04:00:00 UTC".into()));
        r.conditions.push("every run timed from outside".into());
        r.comparisons.push(Comparison {
            note: None,
            section: "Launch".into(),
            figure: "launch /bin/true".into(),
            unit: "ms".into(),
            moat: Value::measured(&[20.0, 21.0, 22.0]),
            peers: vec![
                Peer {
                    name: "crun".into(),
                    value: Value::measured(&[25.0, 26.0, 27.0]),
                },
                Peer {
                    name: "bwrap".into(),
                    value: Value::Skipped("bwrap is not installed".into()),
                },
            ],
            baseline: Some("crun".into()),
            goal: Some(Goal {
                text: "≤ crun median".into(),
                met: Some(true),
            }),
        });
        r
    }

    #[test]
    fn a_row_shows_moat_each_peer_the_ratio_and_the_verdict() {
        let md = render(&[launch()], &[], "scripts/bench.sh");
        assert!(
            md.contains("| launch /bin/true (ms) | 21.00 (20.00–22.00) | 26.00 (25.00–27.00) | skipped | 0.808× crun | ≤ crun median | yes |"),
            "{md}"
        );
        assert!(
            md.contains("- bwrap, launch /bin/true: bwrap is not installed"),
            "{md}"
        );
        assert!(md.contains("| Launch | launch /bin/true | 21.00 ms | ≤ crun median | yes |"));
        assert!(md.contains("Generated on 2026-11-30 04:00:00 UTC by `scripts/bench.sh`"));
        assert!(!md.contains("Quick run"));
    }

    #[test]
    fn a_missed_goal_stands_out_and_a_quick_run_says_so() {
        let mut r = launch();
        r.quick = true;
        r.comparisons[0].goal.as_mut().unwrap().met = Some(false);
        let md = render(&[r], &[], "scripts/bench.sh --quick");
        assert!(md.contains("| ≤ crun median | **no** |"), "{md}");
        assert!(md.contains("**Quick run**"));
    }

    #[test]
    fn a_note_is_printed_under_its_section() {
        let mut r = launch();
        r.comparisons[0].note = Some("crun forks twice".into());
        let md = render(&[r], &[], "x");
        assert!(
            md.contains("Notes:\n\n- launch /bin/true: crun forks twice.\n"),
            "{md}"
        );
    }

    #[test]
    fn a_row_without_a_goal_is_in_its_section_only() {
        // launch_bench's cold launch: its own row beside the same peers,
        // with a ratio but no goal, so not in the summary.
        let mut r = launch();
        let mut cold = r.comparisons[0].clone();
        cold.figure = "launch /bin/true, empty seccomp cache".into();
        cold.moat = Value::measured(&[24.0, 26.0, 28.0]);
        cold.goal = None;
        r.comparisons.push(cold);
        let md = render(&[r], &[], "x");
        assert!(
            md.contains("| launch /bin/true, empty seccomp cache (ms) | 26.00 (24.00–28.00) | 26.00 (25.00–27.00) | skipped | 1.000× crun | — | — |"),
            "{md}"
        );
        let goals = &md[md.find("## Goals").unwrap()..md.find("## Launch").unwrap()];
        assert!(!goals.contains("empty seccomp cache"), "{goals}");
    }

    #[test]
    fn ratio_says_when_its_baseline_is_missing() {
        let mut r = launch();
        r.comparisons[0].baseline = Some("bwrap".into());
        let md = render(&[r], &[], "x");
        assert!(md.contains("n/a (bwrap not measured)"), "{md}");
    }

    #[test]
    fn numbers_get_sensible_precision() {
        assert_eq!(exact(1_000_000.0), "1000000");
        assert_eq!(exact(2.5), "2.50");
        assert_eq!(num(21.0), "21.00");
        assert_eq!(num(176.34), "176.3");
        assert_eq!(num(21.114), "21.11");
        assert_eq!(num(0.8567), "0.857");
        assert_eq!(num(f64::NAN), "n/a");
    }
}
