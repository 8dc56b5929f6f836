//! PNG plots drawn by gnuplot: clustered bars over categories, or lines
//! over a numeric (log-scale) axis, both with min–max error bars.

use std::fmt::Write as _;
use std::path::Path;
use std::process::Command;

use moat_tests::results::{Plot, PlotKind, Series};

/// Draws `plot` into `png` with gnuplot.
pub fn render(plot: &Plot, png: &Path) -> Result<(), String> {
    if plot.series.iter().all(|s| s.points.is_empty()) {
        return Err(format!("plot {:?} has no points", plot.id));
    }
    let dir = tempfile::Builder::new()
        .prefix("moat-bench-report-")
        .tempdir()
        .map_err(|e| format!("a temporary directory for plot {:?}: {e}", plot.id))?;
    let data = dir.path().join("data");
    let script = dir.path().join("plot.gp");
    let result = (|| {
        let (table, commands) = match plot.kind {
            PlotKind::Bars => bars(&plot.series),
            PlotKind::Lines => lines(&plot.series),
        };
        std::fs::write(&data, table).map_err(|e| format!("{}: {e}", data.display()))?;
        let text = script_text(plot, png, &data, &commands);
        std::fs::write(&script, text).map_err(|e| format!("{}: {e}", script.display()))?;
        run_gnuplot(&script, &plot.id)
    })();
    result
}

fn run_gnuplot(script: &Path, id: &str) -> Result<(), String> {
    let out = Command::new("gnuplot").arg(script).output().map_err(|e| {
        format!(
            "cannot run gnuplot for plot {id:?}: {e} (install Debian's gnuplot-nox; \
             scripts/bench.sh does)"
        )
    })?;
    if !out.status.success() {
        return Err(format!(
            "gnuplot failed on plot {id:?} ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(())
}

/// The script: terminal, labels, then the plot commands.
fn script_text(plot: &Plot, png: &Path, data: &Path, commands: &[String]) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "set terminal pngcairo size 960,540 font 'sans,10'");
    let _ = writeln!(s, "set output {}", quote(&png.display().to_string()));
    let _ = writeln!(s, "set title {} noenhanced", quote(&plot.title));
    let _ = writeln!(s, "set xlabel {} noenhanced", quote(&plot.x_label));
    let _ = writeln!(s, "set ylabel {} noenhanced", quote(&plot.y_label));
    let _ = writeln!(s, "set datafile missing '?'");
    let _ = writeln!(s, "set key inside top left noenhanced box opaque");
    let _ = writeln!(s, "set grid ytics");
    let _ = writeln!(s, "set yrange [0:*]");
    match plot.kind {
        PlotKind::Bars => {
            let _ = writeln!(s, "set style data histogram");
            let _ = writeln!(s, "set style histogram errorbars gap 2 lw 1");
            let _ = writeln!(s, "set style fill solid 0.7 border -1");
            let _ = writeln!(s, "set xtics noenhanced");
        }
        PlotKind::Lines => {
            let _ = writeln!(s, "set logscale x");
            let _ = writeln!(s, "set offsets graph 0.05, graph 0.05, 0, 0");
        }
    }
    let data = quote(&data.display().to_string());
    let parts: Vec<String> = commands
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let file = if i == 0 { data.as_str() } else { "''" };
            format!("{file} {c}")
        })
        .collect();
    let _ = writeln!(s, "plot {}", parts.join(", \\\n     "));
    s
}

/// Bars: one row per category (the x values in first-seen order), three
/// columns (median, min, max) per series, `?` where a series lacks it.
fn bars(series: &[Series]) -> (String, Vec<String>) {
    let mut cats: Vec<&str> = Vec::new();
    for p in series.iter().flat_map(|s| &s.points) {
        if !cats.contains(&p.x.as_str()) {
            cats.push(&p.x);
        }
    }
    let mut table = String::new();
    for c in &cats {
        let _ = write!(table, "{}", data_string(c));
        for s in series {
            match s.points.iter().find(|p| p.x == *c) {
                Some(p) => {
                    let _ = write!(table, " {} {} {}", p.median, p.min, p.max);
                }
                None => table.push_str(" ? ? ?"),
            }
        }
        table.push('\n');
    }
    let commands = series
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let c = 2 + 3 * i;
            let xtic = if i == 0 { ":xtic(1)" } else { "" };
            format!(
                "using {}:{}:{}{xtic} title {} noenhanced",
                c,
                c + 1,
                c + 2,
                quote(&s.name)
            )
        })
        .collect();
    (table, commands)
}

/// Lines: one data block per series (`x median min max` rows, x numeric),
/// selected with `index`.
fn lines(series: &[Series]) -> (String, Vec<String>) {
    let mut table = String::new();
    for s in series {
        for p in &s.points {
            let _ = writeln!(table, "{} {} {} {}", p.x, p.median, p.min, p.max);
        }
        table.push_str("\n\n");
    }
    let commands = series
        .iter()
        .enumerate()
        .map(|(i, s)| {
            format!(
                "index {i} using 1:2:3:4 with yerrorlines lw 2 pt 7 title {} noenhanced",
                quote(&s.name)
            )
        })
        .collect();
    (table, commands)
}

/// A string column of a data file: gnuplot reads double-quoted strings
/// there, with no escapes, so an inner double quote becomes a single one.
fn data_string(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "'"))
}

/// A gnuplot string literal (single quotes: no escapes but `''`).
fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use moat_tests::results::Point;

    fn series(name: &str, xs: &[(&str, f64)]) -> Series {
        Series {
            name: name.into(),
            points: xs
                .iter()
                .map(|(x, y)| Point {
                    x: (*x).into(),
                    median: *y,
                    min: y - 1.0,
                    max: y + 1.0,
                })
                .collect(),
        }
    }

    #[test]
    fn bars_align_categories_across_series() {
        let (table, cmds) = bars(&[
            series("moatd", &[("getppid", 2.0), ("fork", 3.0)]),
            series("bpftrace", &[("fork", 5.0)]),
        ]);
        assert_eq!(table, "\"getppid\" 2 1 3 ? ? ?\n\"fork\" 3 2 4 5 4 6\n");
        assert_eq!(cmds[0], "using 2:3:4:xtic(1) title 'moatd' noenhanced");
        assert_eq!(cmds[1], "using 5:6:7 title 'bpftrace' noenhanced");
    }

    #[test]
    fn quotes_are_doubled() {
        assert_eq!(quote("it's"), "'it''s'");
    }

    /// gnuplot really draws a PNG from both kinds (skips, saying why,
    /// where gnuplot is not installed).
    #[test]
    fn gnuplot_draws_a_png_of_each_kind() {
        if Command::new("gnuplot").arg("--version").output().is_err() {
            eprintln!("SKIP: gnuplot is not installed (scripts/setup.sh installs gnuplot-nox)");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        for (kind, xs) in [
            (PlotKind::Bars, [("moat", 20.0), ("crun's", 27.0)]),
            (PlotKind::Lines, [("10", 0.6), ("1000", 9.2)]),
        ] {
            let plot = Plot {
                id: format!("{kind:?}"),
                title: "a 'title'".into(),
                x_label: "x".into(),
                y_label: "y".into(),
                kind,
                series: vec![series("s", &xs)],
            };
            let png = dir.path().join(format!("{kind:?}.png"));
            render(&plot, &png).unwrap();
            let bytes = std::fs::read(&png).unwrap();
            assert!(
                bytes.starts_with(b"\x89PNG\r\n\x1a\n"),
                "{kind:?} is not a PNG"
            );
            assert!(bytes.len() > 2000, "{kind:?} PNG is suspiciously small");
        }
    }
}
