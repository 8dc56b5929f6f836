//! What the benchmark harnesses (`launch_bench`, `seccomp_bench`) share:
//! the command-line and exit-status conventions, the statistics, the rows
//! of the report's main table and its Markdown, and the description of the
//! machine. Keeping it in one place keeps their reports in one format, so
//! the `docs/benchmarks-*.md` pages and the quick-mode tests read both alike.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::str::FromStr;
use std::time::Duration;

/// Runs a harness: parses the arguments with `parse`, then `run`s it and
/// prints its report (Markdown) on stdout.
///
/// Exit status: 2 with the usage on stderr when the arguments are wrong
/// (`parse` returns an empty error for `--help`: the usage alone), 1 with
/// `program: error` on stderr when the run fails, 0 otherwise. Nothing is
/// printed on stdout unless the run succeeded, so a failed run never leaves
/// half a report in a `docs/` page.
pub fn main<O>(
    program: &str,
    usage: &str,
    parse: impl FnOnce(&mut Args) -> Result<O, String>,
    run: impl FnOnce(O) -> Result<String, String>,
) -> ExitCode {
    let opts = match parse(&mut Args::from_env()) {
        Ok(o) => o,
        Err(e) => {
            if !e.is_empty() {
                eprintln!("{program}: {e}");
            }
            eprintln!("{usage}");
            return ExitCode::from(2);
        }
    };
    match run(opts) {
        Ok(report) => {
            print!("{report}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{program}: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The command line, read flag by flag.
///
/// `--quick` may stand anywhere: it picks the defaults the other flags then
/// override, so it is looked for before the first flag is read
/// ([`Args::quick`]) and [`Args::next_flag`] passes over it.
pub struct Args {
    args: std::vec::IntoIter<String>,
    quick: bool,
}

impl Args {
    /// The arguments of this process, without the program name.
    pub fn from_env() -> Args {
        Args::new(std::env::args().skip(1).collect())
    }

    /// `args` as a command line, without the program name.
    pub fn new(args: Vec<String>) -> Args {
        let quick = args.iter().any(|a| a == "--quick");
        Args {
            args: args.into_iter(),
            quick,
        }
    }

    /// Whether `--quick` was given.
    pub fn quick(&self) -> bool {
        self.quick
    }

    /// The next flag other than `--quick`, or `None` at the end.
    pub fn next_flag(&mut self) -> Option<String> {
        self.args.by_ref().find(|a| a != "--quick")
    }

    /// The value that follows `flag`.
    pub fn value(&mut self, flag: &str) -> Result<String, String> {
        self.args
            .next()
            .ok_or_else(|| format!("{flag} needs a value"))
    }

    /// The path that follows `flag` (`--json`), refused at once when its
    /// directory does not exist, rather than after minutes of measuring.
    pub fn output_path(&mut self, flag: &str) -> Result<PathBuf, String> {
        let path = PathBuf::from(self.value(flag)?);
        let dir = match path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d,
            _ => Path::new("."),
        };
        if !dir.is_dir() {
            return Err(format!(
                "{flag} {}: the directory {} does not exist",
                path.display(),
                dir.display()
            ));
        }
        Ok(path)
    }

    /// The number that follows `flag`.
    pub fn number<T: FromStr>(&mut self, flag: &str) -> Result<T, String> {
        let v = self.value(flag)?;
        v.parse()
            .map_err(|_| format!("{flag} needs a number, not {v:?}"))
    }

    /// The number that follows `flag`, which must not be zero.
    pub fn positive<T: FromStr + Default + PartialEq>(&mut self, flag: &str) -> Result<T, String> {
        let n = self.number(flag)?;
        if n == T::default() {
            return Err(format!("{flag} must be positive"));
        }
        Ok(n)
    }
}

/// The error for a flag the harness does not know. It is empty for `-h`
/// and `--help`, which [`main`] answers with the usage alone.
pub fn unknown_flag(flag: &str) -> String {
    match flag {
        "-h" | "--help" => String::new(),
        other => format!("unknown argument {other:?}"),
    }
}

/// A duration in milliseconds, the unit of the reports' times.
pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// Median, min and max of a series of measurements.
#[derive(Debug, Clone, Copy)]
pub struct Stats {
    /// The middle value (the mean of the two middle ones for an even count).
    pub median: f64,
    /// The smallest value.
    pub min: f64,
    /// The largest value.
    pub max: f64,
}

impl Stats {
    /// The statistics of `xs`; all NaN when `xs` is empty, so that a
    /// missing series shows in the report rather than stopping it.
    pub fn of(xs: &[f64]) -> Stats {
        let mut v = xs.to_vec();
        v.sort_by(f64::total_cmp);
        let n = v.len();
        if n == 0 {
            return Stats {
                median: f64::NAN,
                min: f64::NAN,
                max: f64::NAN,
            };
        }
        let median = if n % 2 == 1 {
            v[n / 2]
        } else {
            (v[n / 2 - 1] + v[n / 2]) / 2.0
        };
        Stats {
            median,
            min: v[0],
            max: v[n - 1],
        }
    }
}

/// One line of a report's main table: `| Figure | Value | Goal | Met? |`.
pub struct Row {
    /// What was measured.
    pub figure: String,
    /// The measurement, with its unit.
    pub value: String,
    /// What the figure should be, or `—` when it has no goal.
    pub goal: String,
    /// [`yes_no`] of the goal, or `—` when there is none or it cannot be
    /// judged (a variant it depends on was skipped).
    pub met: String,
}

impl Row {
    /// A row without a goal.
    pub fn info(figure: impl Into<String>, value: impl Into<String>) -> Row {
        Row {
            figure: figure.into(),
            value: value.into(),
            goal: "—".into(),
            met: "—".into(),
        }
    }

    /// A row with a goal, met or not.
    pub fn with_goal(
        figure: impl Into<String>,
        value: impl Into<String>,
        goal: impl Into<String>,
        met: bool,
    ) -> Row {
        Row {
            goal: goal.into(),
            met: yes_no(met).into(),
            ..Row::info(figure, value)
        }
    }
}

/// The "Met?" cell: a missed goal is bold so that it stands out.
pub fn yes_no(ok: bool) -> &'static str {
    if ok {
        "yes"
    } else {
        "**no**"
    }
}

/// Appends the main table (header and `rows`) in Markdown.
pub fn write_table(out: &mut String, rows: &[Row]) {
    let _ = writeln!(out, "| Figure | Value | Goal | Met? |");
    let _ = writeln!(out, "|---|---|---|---|");
    for r in rows {
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} |",
            r.figure, r.value, r.goal, r.met
        );
    }
}

/// Appends the `### Machine` section: one `- name: value` item per entry,
/// [`machine`] first and then whatever the harness adds (its peers'
/// versions).
pub fn write_machine(out: &mut String, entries: &[(String, String)]) {
    let _ = writeln!(out, "\n### Machine\n");
    for (k, v) in entries {
        let _ = writeln!(out, "- {k}: {v}");
    }
}

/// Appends the `### Conditions` section: how the figures were made, one
/// item each.
pub fn write_conditions(out: &mut String, conditions: &[String]) {
    let _ = writeln!(out, "\n### Conditions\n");
    for c in conditions {
        let _ = writeln!(out, "- {c}");
    }
}

/// Appends the header of a per-round table: `| Workload | Variant |` and
/// one column per round.
pub fn write_round_header(out: &mut String, rounds: usize) {
    let _ = write!(out, "| Workload | Variant |");
    for r in 1..=rounds {
        let _ = write!(out, " R{r} |");
    }
    let _ = writeln!(out);
    let _ = writeln!(out, "|---|---|{}", "---|".repeat(rounds));
}

/// How the run was made, for the `Mode:` item of the conditions.
pub fn mode(quick: bool) -> &'static str {
    if quick {
        "`--quick` (smoke run: counts too small for the figures to mean much)"
    } else {
        "full"
    }
}

/// `debug` or `release`: the profile the harness was built in. The library
/// and the harness binaries are one package, so they share the profile and
/// this answers for the binary too.
pub fn build() -> &'static str {
    if cfg!(debug_assertions) {
        "debug"
    } else {
        "release"
    }
}

/// The machine the figures come from: the kernel (`uname -r`), the CPU
/// model, the online CPUs and the date (UTC).
pub fn machine() -> Vec<(String, String)> {
    // SAFETY: uname fills a zeroed struct of NUL-terminated arrays.
    let release = unsafe {
        let mut u: libc::utsname = std::mem::zeroed();
        if libc::uname(&mut u) == 0 {
            std::ffi::CStr::from_ptr(u.release.as_ptr())
                .to_string_lossy()
                .into_owned()
        } else {
            "(unknown)".into()
        }
    };
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, m)| m.trim().to_string())
        })
        .unwrap_or_else(|| "(unknown)".into());
    // The online CPUs, not the ones this process may use: `seccomp_bench`
    // has pinned itself to one by the time it writes the report.
    // SAFETY: sysconf takes an integer.
    let nproc = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) };
    vec![
        ("Kernel (`uname -r`)".into(), release),
        ("CPU".into(), cpu),
        ("Online CPUs (`nproc`)".into(), nproc.to_string()),
        ("Date".into(), utc_now()),
    ]
}

/// The current UTC time as `YYYY-MM-DD HH:MM:SS UTC` (what
/// `date -u '+%Y-%m-%d %H:%M:%S UTC'` prints, without running it).
pub fn utc_now() -> String {
    jiff::Timestamp::now()
        .strftime("%Y-%m-%d %H:%M:%S UTC")
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(a: &[&str]) -> Args {
        Args::new(a.iter().map(|s| s.to_string()).collect())
    }

    #[test]
    fn stats_of_odd_and_even_counts() {
        let s = Stats::of(&[3.0, 1.0, 2.0]);
        assert_eq!((s.median, s.min, s.max), (2.0, 1.0, 3.0));
        let s = Stats::of(&[4.0, 1.0, 2.0, 3.0]);
        assert_eq!((s.median, s.min, s.max), (2.5, 1.0, 4.0));
        assert!(Stats::of(&[]).median.is_nan());
    }

    #[test]
    fn quick_anywhere_and_flag_values() {
        let mut a = args(&["--rounds", "3", "--quick", "--name", "x"]);
        assert!(a.quick());
        assert_eq!(a.next_flag().as_deref(), Some("--rounds"));
        assert_eq!(a.positive::<usize>("--rounds"), Ok(3));
        assert_eq!(a.next_flag().as_deref(), Some("--name"));
        assert_eq!(a.value("--name").as_deref(), Ok("x"));
        assert_eq!(a.next_flag(), None);
        assert_eq!(a.value("--name"), Err("--name needs a value".to_string()));
    }

    #[test]
    fn bad_numbers_are_refused() {
        assert_eq!(
            args(&["x"]).number::<u64>("--calls"),
            Err("--calls needs a number, not \"x\"".to_string())
        );
        assert_eq!(
            args(&["0"]).positive::<u64>("--calls"),
            Err("--calls must be positive".to_string())
        );
        assert_eq!(unknown_flag("--help"), "");
        assert_eq!(unknown_flag("--x"), "unknown argument \"--x\"");
    }

    #[test]
    fn table_rows() {
        let mut s = String::new();
        write_table(
            &mut s,
            &[
                Row::info("a", "1 ms"),
                Row::with_goal("b", "2 ms", "< 5 ms", false),
            ],
        );
        assert_eq!(
            s,
            "| Figure | Value | Goal | Met? |\n|---|---|---|---|\n\
             | a | 1 ms | — | — |\n| b | 2 ms | < 5 ms | **no** |\n"
        );
    }

    #[test]
    fn utc_now_has_the_date_format() {
        let now = utc_now();
        assert_eq!(now.len(), "2024-01-01 00:00:00 UTC".len(), "{now}");
        assert!(now.ends_with(" UTC") && now.as_bytes()[4] == b'-', "{now}");
    }
}
