//! Part 1, compile time: timing everything a launch does to get a program
//! from a profile (the default profile whole, by stage, for the native
//! architecture only, with `Dispatch::Linear` and as one libseccomp filter;
//! the largest fixture profile in both layouts).

use std::path::{Path, PathBuf};
use std::time::Instant;

use moat_runtime::caps::CapSet;
use moat_runtime::seccomp::compile::{self, Dispatch, Layout};
use moat_runtime::seccomp::{builtin, compile_for_host, parse, resolve, Source};
use moat_tests::bench::{self, Row, Stats};

use super::{Config, COMPILE_GOAL_MS};

/// The compile times the JSON needs (ms, one per timed run).
pub(super) struct CompileFigures {
    /// The default profile as moat compiles it.
    pub(super) default: Vec<f64>,
    /// The default profile as one libseccomp filter (`Layout::Combined`).
    pub(super) default_combined: Vec<f64>,
    /// The largest fixture: its file name and the times of both layouts,
    /// or why it was not timed.
    pub(super) fixture: Result<(String, Vec<f64>, Vec<f64>), String>,
}

/// Times one whole compile of the profile `load` returns (parse included),
/// laid out as `layout`.
fn time_whole(
    cfg: Config,
    caps: &CapSet,
    source: &Source,
    layout: Layout,
    load: impl Fn() -> Result<moat_runtime::seccomp::profile::Profile, String>,
) -> Result<Vec<f64>, String> {
    let mut ms = time_compiles(cfg, 1, |t| {
        let profile = load()?;
        let opts = compile::Options {
            layout,
            ..options(Dispatch::Auto)
        };
        compile_for_host(&profile, source.clone(), caps, opts).map_err(|e| e.to_string())?;
        t[0] = Instant::now();
        Ok(())
    })?;
    Ok(ms.swap_remove(0))
}

/// Part 1: compile times of the default profile (whole, by stage, linear,
/// as one libseccomp filter) and of the largest fixture.
pub(super) fn compile_times(
    cfg: Config,
    caps: &CapSet,
    rows: &mut Vec<Row>,
    notes: &mut Vec<String>,
) -> Result<CompileFigures, String> {
    eprintln!(
        "compiling the default profile: {} warm-ups, {} timed runs",
        cfg.compile_warmup, cfg.compile_runs
    );
    let builtin_profile = || builtin::default_profile().map_err(|e| e.to_string());
    let whole = time_whole(
        cfg,
        caps,
        &builtin::SOURCE,
        Layout::PerArch,
        builtin_profile,
    )?;
    let s = Stats::of(&whole);
    rows.push(Row::with_goal(
        "Compile default profile, median",
        format!("{:.3} ms", s.median),
        format!("< {COMPILE_GOAL_MS} ms"),
        s.median < COMPILE_GOAL_MS,
    ));
    rows.push(Row::info(
        "Compile default profile, min",
        format!("{:.3} ms", s.min),
    ));
    rows.push(Row::info(
        "Compile default profile, max",
        format!("{:.3} ms", s.max),
    ));

    eprintln!("compiling the default profile stage by stage");
    let stages = time_compiles(cfg, 3, |t| {
        let profile = builtin::default_profile().map_err(|e| e.to_string())?;
        t[0] = Instant::now();
        let target = resolve::Target {
            host: moat_runtime::seccomp::arch::Host::detect()?,
            caps: caps.clone(),
        };
        let resolved = resolve::resolve(&profile, builtin::SOURCE, &target);
        t[1] = Instant::now();
        compile::compile(&resolved, options(Dispatch::Auto)).map_err(|e| e.to_string())?;
        t[2] = Instant::now();
        Ok(())
    })?;
    for (i, stage) in [
        "parse JSON",
        "detect host + resolve",
        "compile to BPF (libseccomp, export)",
    ]
    .iter()
    .enumerate()
    {
        rows.push(Row::info(
            format!("Compile default profile, stage: {stage}, median"),
            format!("{:.3} ms", Stats::of(&stages[i]).median),
        ));
    }

    eprintln!("compiling the default profile for the native architecture only");
    let mut native_len = 0;
    let native_only = time_compiles(cfg, 1, |t| {
        let profile = builtin::default_profile().map_err(|e| e.to_string())?;
        let host = moat_runtime::seccomp::arch::Host::detect()?;
        let native = host.native;
        let target = resolve::Target {
            host,
            caps: caps.clone(),
        };
        let mut resolved = resolve::resolve(&profile, builtin::SOURCE, &target);
        resolved.architectures.retain(|a| *a == native);
        let c = compile::compile(&resolved, options(Dispatch::Auto)).map_err(|e| e.to_string())?;
        native_len = c.program.len();
        t[0] = Instant::now();
        Ok(())
    })?;
    rows.push(Row::info(
        "Compile default profile, native architecture only (sub-architectures dropped), median",
        format!("{:.3} ms", Stats::of(&native_only[0]).median),
    ));
    notes.push(format!(
        "\"Native architecture only\" is not what moat runs: it drops the profile's \
         sub-architectures (on x86_64: x86 and x32) after resolving, to show what they \
         cost in libseccomp; its program is {native_len} insns."
    ));

    eprintln!("compiling the default profile with Dispatch::Linear");
    let lin = time_compiles(cfg, 1, |t| {
        let profile = builtin::default_profile().map_err(|e| e.to_string())?;
        compile_for_host(&profile, builtin::SOURCE, caps, options(Dispatch::Linear))
            .map_err(|e| e.to_string())?;
        t[0] = Instant::now();
        Ok(())
    })?;
    rows.push(Row::info(
        "Compile default profile with `Dispatch::Linear`, median",
        format!("{:.3} ms", Stats::of(&lin[0]).median),
    ));

    eprintln!("compiling the default profile as one libseccomp filter (Layout::Combined)");
    let combined = time_whole(
        cfg,
        caps,
        &builtin::SOURCE,
        Layout::Combined,
        builtin_profile,
    )?;
    rows.push(Row::info(
        "Compile default profile as one libseccomp filter (`Layout::Combined`), median",
        format!("{:.3} ms", Stats::of(&combined).median),
    ));
    notes.push(
        "`Layout::Combined` is libseccomp's own way with several architectures (one filter \
         holding them all, exported at once), as runc and crun use it; moat compiles one \
         filter per architecture and chains them (`Layout::PerArch`), with the same verdicts."
            .into(),
    );

    let fixture = time_fixture(cfg, caps, rows, notes)?;
    Ok(CompileFigures {
        default: whole,
        default_combined: combined,
        fixture,
    })
}

/// Times the largest fixture profile in both layouts; `Err` in the outer
/// result is a failure, in the inner one the reason it was not timed.
#[allow(clippy::type_complexity)]
fn time_fixture(
    cfg: Config,
    caps: &CapSet,
    rows: &mut Vec<Row>,
    notes: &mut Vec<String>,
) -> Result<Result<(String, Vec<f64>, Vec<f64>), String>, String> {
    let path = match largest_fixture(caps, notes) {
        Ok(p) => p,
        Err(why) => {
            eprintln!("no fixture profile to time ({why}); skipping");
            rows.push(Row::info("Compile largest fixture", "skipped (see notes)"));
            return Ok(Err(why));
        }
    };
    let name = file_name(&path);
    eprintln!(
        "compiling fixture {name}: {} warm-ups, {} timed runs per layout",
        cfg.compile_warmup, cfg.compile_runs
    );
    let source = Source::File(path.clone());
    let load = || parse::from_file(&path).map_err(|e| e.to_string());
    let per_arch = time_whole(cfg, caps, &source, Layout::PerArch, load)?;
    let combined = time_whole(cfg, caps, &source, Layout::Combined, load)?;
    let s = Stats::of(&per_arch);
    for (what, v) in [("median", s.median), ("min", s.min), ("max", s.max)] {
        rows.push(Row::info(
            format!("Compile fixture {name}, {what}"),
            format!("{v:.3} ms"),
        ));
    }
    rows.push(Row::info(
        format!("Compile fixture {name} as one libseccomp filter (`Layout::Combined`), median"),
        format!("{:.3} ms", Stats::of(&combined).median),
    ));
    Ok(Ok((name, per_arch, combined)))
}

pub(super) fn options(dispatch: Dispatch) -> compile::Options {
    compile::Options {
        dispatch,
        ..Default::default()
    }
}

fn file_name(p: &Path) -> String {
    p.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| p.display().to_string())
}

/// Runs `f` `compile_warmup` times untimed, then `compile_runs` times timed
/// one by one. `f` records `marks` instants (its last one is when it is
/// done); returns, per mark, the time in ms since the previous mark (the
/// first from the start of the run).
fn time_compiles(
    cfg: Config,
    marks: usize,
    mut f: impl FnMut(&mut [Instant]) -> Result<(), String>,
) -> Result<Vec<Vec<f64>>, String> {
    let mut t = vec![Instant::now(); marks];
    for _ in 0..cfg.compile_warmup {
        f(&mut t)?;
    }
    let mut ms = vec![Vec::with_capacity(cfg.compile_runs); marks];
    for _ in 0..cfg.compile_runs {
        let start = Instant::now();
        f(&mut t)?;
        let mut prev = start;
        for (i, at) in t.iter().enumerate() {
            ms[i].push(bench::ms(at.duration_since(prev)));
            prev = *at;
        }
    }
    Ok(ms)
}

/// The largest `.json` file in `../shared/fixtures` (by size) that parses
/// and compiles, or why there is none; why it is skipped or why larger
/// files were passed over also goes into `notes`.
fn largest_fixture(caps: &CapSet, notes: &mut Vec<String>) -> Result<PathBuf, String> {
    let skip = |notes: &mut Vec<String>, why: String| {
        notes.push(format!("Fixture timing skipped: {why}."));
        Err(why)
    };
    let Some(dir) = moat_tests::fixtures_dir() else {
        let missing = moat_tests::workspace_root().join("../shared/fixtures");
        return skip(notes, format!("{} does not exist", missing.display()));
    };
    let entries = match std::fs::read_dir(&dir) {
        Ok(e) => e,
        Err(e) => return skip(notes, format!("cannot list {}: {e}", dir.display())),
    };
    let mut files: Vec<(u64, PathBuf)> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .filter_map(|p| Some((std::fs::metadata(&p).ok()?.len(), p)))
        .collect();
    files.sort_by(|a, b| b.cmp(a));
    for (size, path) in files {
        let result = parse::from_file(&path)
            .map_err(|e| e.to_string())
            .and_then(|p| {
                compile_for_host(
                    &p,
                    Source::File(path.clone()),
                    caps,
                    options(Dispatch::Auto),
                )
                .map_err(|e| e.to_string())
            });
        match result {
            Ok((_, c)) => {
                notes.push(format!(
                    "Fixture timed: `{}` ({size} bytes, the largest that compiles; {} syscalls in \
                     the filter, `Auto` picks {}, {} insns).",
                    file_name(&path),
                    c.syscalls_in_filter.len(),
                    if c.binary_tree { "the tree" } else { "linear" },
                    c.program.len()
                ));
                return Ok(path);
            }
            Err(e) => notes.push(format!(
                "Fixture `{}` ({size} bytes) passed over: {}.",
                file_name(&path),
                e.lines().next().unwrap_or("error")
            )),
        }
    }
    skip(notes, format!("no profile in {} compiles", dir.display()))
}
