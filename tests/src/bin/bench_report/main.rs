//! `bench_report`: assembles `BENCHMARKS.md` and its PNG plots from the
//! results that the benchmark harnesses wrote with `--json`
//! (`launch_bench`, `seccomp_bench`, `agent_bench`).
//!
//! `scripts/bench.sh` runs the harnesses and then this program; run it by
//! hand to re-render a report from kept JSON files. It lays out what the
//! harnesses measured and judged; it computes nothing but the ratio column
//! (moat's median over the named baseline's median), so a verdict in the
//! report is always the harness's own.
//!
//! Plots are drawn by gnuplot (Debian's `gnuplot-nox`, `pngcairo` terminal).

mod markdown;
mod plot;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use moat_tests::bench::{self, Args};
use moat_tests::results::Results;

const USAGE: &str = "\
usage: bench_report --markdown PATH --plots DIR [--command CMD]
                    [--machine KEY=VALUE]... RESULTS.json...

  --markdown PATH  the report to write (BENCHMARKS.md)
  --plots DIR      where the PNG plots go (created if missing); the report
                   links them by their path relative to the report
  --command CMD    the command that produced the results, quoted in the
                   report so a reader can reproduce it (default
                   scripts/bench.sh)
  --machine KEY=VALUE
                   one more line of the report's machine description (the
                   commit measured, the memory, the CPU mitigations)
  --quick          accepted for symmetry with the harnesses; a quick run is
                   recognised from the results themselves
  RESULTS.json     files written by launch_bench, seccomp_bench and
                   agent_bench with --json, in any order

Writes the report and the plots, and prints the report's path.";

/// Command-line options.
struct Opts {
    markdown: PathBuf,
    plots: PathBuf,
    command: String,
    machine: Vec<(String, String)>,
    inputs: Vec<PathBuf>,
}

fn parse_args(args: &mut Args) -> Result<Opts, String> {
    let mut markdown = None;
    let mut plots = None;
    let mut command = "scripts/bench.sh".to_string();
    let mut machine = Vec::new();
    let mut inputs = Vec::new();
    while let Some(a) = args.next_flag() {
        match a.as_str() {
            "--markdown" => markdown = Some(PathBuf::from(args.value(&a)?)),
            "--plots" => plots = Some(PathBuf::from(args.value(&a)?)),
            "--command" => command = args.value(&a)?,
            "--machine" => {
                let v = args.value(&a)?;
                let (k, v) = v
                    .split_once('=')
                    .ok_or_else(|| format!("--machine needs KEY=VALUE, not {v:?}"))?;
                machine.push((k.to_string(), v.to_string()));
            }
            flag if flag.starts_with('-') => return Err(bench::unknown_flag(flag)),
            file => inputs.push(PathBuf::from(file)),
        }
    }
    if inputs.is_empty() {
        return Err("no RESULTS.json given".into());
    }
    Ok(Opts {
        markdown: markdown.ok_or("--markdown PATH is required")?,
        plots: plots.ok_or("--plots DIR is required")?,
        command,
        machine,
        inputs,
    })
}

fn main() -> ExitCode {
    bench::main("bench_report", USAGE, parse_args, run)
}

fn run(opts: Opts) -> Result<String, String> {
    let mut results = opts
        .inputs
        .iter()
        .map(|p| Results::read(p))
        .collect::<Result<Vec<_>, _>>()?;
    // The report lists each machine key once, first value first: the
    // command's own lines go after the harnesses' date, kernel and CPU.
    if let Some(first) = results.first_mut() {
        first.machine.extend(opts.machine.iter().cloned());
    }
    std::fs::create_dir_all(&opts.plots)
        .map_err(|e| format!("cannot create {}: {e}", opts.plots.display()))?;
    let mut images = Vec::new();
    for r in &results {
        for p in &r.plots {
            let png = opts.plots.join(format!("{}.png", p.id));
            plot::render(p, &png)?;
            images.push((
                p.id.clone(),
                p.title.clone(),
                relative_to(&png, &opts.markdown),
            ));
        }
    }
    let text = markdown::render(&results, &images, &opts.command);
    std::fs::write(&opts.markdown, text)
        .map_err(|e| format!("cannot write {}: {e}", opts.markdown.display()))?;
    Ok(format!("{}\n", opts.markdown.display()))
}

/// `target` as a path relative to the directory of `report`, for a
/// Markdown link; `target` itself when they share no prefix.
fn relative_to(target: &Path, report: &Path) -> String {
    let abs = |p: &Path| {
        std::path::absolute(p)
            .unwrap_or_else(|_| p.to_path_buf())
            .components()
            .map(|c| c.as_os_str().to_os_string())
            .collect::<Vec<_>>()
    };
    let t = abs(target);
    let base = abs(report.parent().unwrap_or(Path::new(".")));
    let common = t.iter().zip(&base).take_while(|(a, b)| a == b).count();
    if common == 0 {
        return target.display().to_string();
    }
    let mut rel = PathBuf::new();
    for _ in common..base.len() {
        rel.push("..");
    }
    for c in &t[common..] {
        rel.push(c);
    }
    rel.display().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn images_are_linked_relative_to_the_report() {
        assert_eq!(
            relative_to(
                Path::new("/r/docs/bench/launch.png"),
                Path::new("/r/BENCHMARKS.md")
            ),
            "docs/bench/launch.png"
        );
        assert_eq!(
            relative_to(Path::new("/r/img/a.png"), Path::new("/r/docs/B.md")),
            "../img/a.png"
        );
    }
}
