//! `moat events`: the audit events moatd writes, one readable line per event,
//! or the raw JSON lines, optionally filtered by workload and followed as the
//! log grows and rotates.

use std::fs::File;
use std::io::{self, BufWriter, Read as _, Seek as _, SeekFrom, Write};
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::{bail, Context as _, Result};
use clap::Args;
use serde_json::Value;

/// moatd's default audit log (its `audit.log` setting).
pub const DEFAULT_AUDIT_LOG: &str = "/var/log/moat/audit.jsonl";

/// How often `--follow` looks for new lines, rotation and truncation.
const POLL_INTERVAL: Duration = Duration::from_millis(200);

#[derive(Debug, Args)]
#[command(
    about = "Print moatd's audit events: seccomp denials, failed forks, pids limits, ...",
    long_about = "Print the audit events moatd writes, one line per event: the local time \
                  (RFC 3339, to the millisecond), the workload, the action and its details.\n\n\
                  moatd appends one JSON object per line to its audit log (default \
                  /var/log/moat/audit.jsonl, its audit.log setting or --audit-log flag) for \
                  every seccomp denial (seccomp_denied: syscall, action, errno, pid, comm), \
                  failed fork (fork_failed: errno), pids limit refusal (pids_limit_reached: \
                  current, limit, hits), fork burst (fork_burst: forks per second) and user \
                  namespace creation (userns_created). Events seen in the kernel are \
                  rate-limited per cgroup (moatd's audit.rate_limit), so under load the log is \
                  a sample of what happened; moatd's metrics (`moat stats`) count exactly.\n\n\
                  A line that is not a moat audit event is skipped with a warning on standard \
                  error naming its line number.",
    after_help = "Output columns:\n  \
                  TIME  WORKLOAD  ACTION  DETAILS (key=value; values with spaces are quoted)\n\n\
                  Environment:\n  \
                  MOAT_AUDIT_LOG  the audit log to read when --file is not given\n\n\
                  Exit status:\n  \
                  0  the log was read (with --follow: stopped by SIGINT or SIGTERM)\n  \
                  1  the log does not exist or cannot be read\n  \
                  2  invalid command line\n\n\
                  Examples:\n  \
                  moat events\n  \
                  moat events --follow --workload build\n  \
                  moat events --json | jq 'select(.seccomp.syscall == \"mount\")'\n  \
                  moat events --file ./audit.jsonl.1"
)]
pub struct EventsArgs {
    /// Print the events already in the log, then keep printing new ones as they
    /// are appended (the log is checked every 200 ms; when it is rotated or
    /// truncated, the new file is read from its start) until SIGINT or SIGTERM.
    #[arg(long, short = 'f')]
    follow: bool,

    /// Only events of this workload (`workload.name`: a moat workload's name,
    /// `docker:<id>`, a systemd unit, `host`). Repeatable: events of any of them.
    #[arg(long, value_name = "NAME")]
    workload: Vec<String>,

    /// Print the raw JSON lines, exactly as moatd wrote them (after filtering).
    #[arg(long)]
    json: bool,

    /// The audit log to read [default: $MOAT_AUDIT_LOG, else
    /// /var/log/moat/audit.jsonl].
    #[arg(long, value_name = "PATH")]
    file: Option<PathBuf>,
}

pub fn run(args: EventsArgs) -> Result<ExitCode> {
    let path = args
        .file
        .clone()
        .or_else(|| {
            std::env::var_os("MOAT_AUDIT_LOG")
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
        })
        .unwrap_or_else(|| PathBuf::from(DEFAULT_AUDIT_LOG));
    init_local_time();
    let file = open_log(&path)?;
    if args.follow {
        install_stop_handler()?;
    }
    let stdout = io::stdout();
    let mut reader = LogReader {
        path: &path,
        file,
        pos: 0,
        pending: Vec::new(),
        line: 0,
        printer: Printer {
            out: BufWriter::new(stdout.lock()),
            json: args.json,
            workloads: args.workload,
        },
    };
    match reader.run(args.follow) {
        Ok(()) => Ok(ExitCode::SUCCESS),
        // The reader went away (`moat events | head`): not an error.
        Err(ReadError::Output(err)) if err.kind() == io::ErrorKind::BrokenPipe => {
            Ok(ExitCode::SUCCESS)
        }
        Err(ReadError::Output(err)) => Err(err).context("writing to standard output"),
        Err(ReadError::Log(err)) => Err(err),
    }
}

/// Opens the log, with an error that says where the log comes from when it is missing.
fn open_log(path: &Path) -> Result<File> {
    match File::open(path) {
        Ok(file) => Ok(file),
        Err(err) if err.kind() == io::ErrorKind::NotFound => bail!(
            "{}: no such file. moatd writes its audit events there once it runs (the \
             audit.log setting of /etc/moat/moatd.toml or its --audit-log flag; default \
             {DEFAULT_AUDIT_LOG}); start moatd, or read another file with --file PATH \
             (or MOAT_AUDIT_LOG)",
            path.display()
        ),
        Err(err) if err.kind() == io::ErrorKind::PermissionDenied => bail!(
            "{}: permission denied: the audit log is readable by root; run as root or \
             read a copy with --file PATH",
            path.display()
        ),
        Err(err) => Err(err).with_context(|| format!("{}: cannot open", path.display())),
    }
}

static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_stop_signal(_: libc::c_int) {
    STOP.store(true, Ordering::SeqCst);
}

/// Makes SIGINT and SIGTERM set a flag that [`stop_requested`] reads, so long-running
/// commands (`events --follow`, `stats`) can stop cleanly with exit status 0.
pub fn install_stop_handler() -> Result<()> {
    use nix::sys::signal::{sigaction, SaFlags, SigAction, SigHandler, SigSet, Signal};
    let action = SigAction::new(
        SigHandler::Handler(on_stop_signal),
        SaFlags::SA_RESTART,
        SigSet::empty(),
    );
    for signal in [Signal::SIGINT, Signal::SIGTERM] {
        // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
        unsafe { sigaction(signal, &action) }
            .with_context(|| format!("installing the {signal} handler"))?;
    }
    Ok(())
}

/// Whether SIGINT or SIGTERM arrived since [`install_stop_handler`].
pub fn stop_requested() -> bool {
    STOP.load(Ordering::SeqCst)
}

/// Sleeps for `total`, waking early when a stop was requested.
pub fn sleep_unless_stopped(total: Duration) {
    let step = Duration::from_millis(20);
    let start = std::time::Instant::now();
    while !stop_requested() {
        let elapsed = start.elapsed();
        if elapsed >= total {
            break;
        }
        std::thread::sleep(step.min(total - elapsed));
    }
}

enum ReadError {
    /// Writing the output failed.
    Output(io::Error),
    /// Reading the log failed.
    Log(anyhow::Error),
}

/// Reads the log from the start, line by line, following it if asked.
struct LogReader<'a, W: Write> {
    path: &'a Path,
    file: File,
    /// Bytes of the current file consumed (complete lines and `pending`).
    pos: u64,
    /// The start of a line whose newline has not been read yet.
    pending: Vec<u8>,
    /// Number of the last line handled, 1-based.
    line: u64,
    printer: Printer<W>,
}

impl<W: Write> LogReader<'_, W> {
    fn run(&mut self, follow: bool) -> Result<(), ReadError> {
        self.read_available()?;
        if !follow {
            // A last line without a newline is still a line when nothing follows.
            self.finish_pending()?;
            return self.printer.flush().map_err(ReadError::Output);
        }
        loop {
            self.printer.flush().map_err(ReadError::Output)?;
            sleep_unless_stopped(POLL_INTERVAL);
            if stop_requested() {
                return self.printer.flush().map_err(ReadError::Output);
            }
            self.read_available()?;
            self.check_rotation()?;
        }
    }

    /// Handles every complete line appended since the last call.
    fn read_available(&mut self) -> Result<(), ReadError> {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = match self.file.read(&mut buf) {
                Ok(0) => return Ok(()),
                Ok(n) => n,
                Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
                Err(err) => {
                    return Err(ReadError::Log(
                        anyhow::Error::new(err)
                            .context(format!("{}: cannot read", self.path.display())),
                    ))
                }
            };
            self.pos += n as u64;
            let mut chunk = &buf[..n];
            while let Some(newline) = chunk.iter().position(|&b| b == b'\n') {
                if self.pending.is_empty() {
                    self.handle_line(&chunk[..newline])?;
                } else {
                    self.pending.extend_from_slice(&chunk[..newline]);
                    let line = std::mem::take(&mut self.pending);
                    self.handle_line(&line)?;
                }
                chunk = &chunk[newline + 1..];
            }
            self.pending.extend_from_slice(chunk);
        }
    }

    fn finish_pending(&mut self) -> Result<(), ReadError> {
        if !self.pending.is_empty() {
            let line = std::mem::take(&mut self.pending);
            self.handle_line(&line)?;
        }
        Ok(())
    }

    /// With `--follow`: a file replaced at our path (rotation) is read from its start
    /// once the old one is drained; a file that shrank (truncation) is read again
    /// from its start.
    fn check_rotation(&mut self) -> Result<(), ReadError> {
        let current = self.file.metadata().ok();
        let at_path = match std::fs::metadata(self.path) {
            Ok(meta) => meta,
            // Rotated away and not recreated yet: keep reading the old file.
            Err(_) => return Ok(()),
        };
        let replaced = current
            .as_ref()
            .is_none_or(|m| (m.dev(), m.ino()) != (at_path.dev(), at_path.ino()));
        if replaced {
            let new_file = match File::open(self.path) {
                Ok(file) => file,
                // It vanished again, or is not readable yet: try at the next poll.
                Err(_) => return Ok(()),
            };
            // Whatever the writer appended to the old file before it switched.
            self.read_available()?;
            self.finish_pending()?;
            self.note(&format!(
                "{} was replaced (rotated); reading the new file from its start",
                self.path.display()
            ))?;
            self.file = new_file;
            self.pos = 0;
            self.line = 0;
            return self.read_available();
        }
        if current.is_some_and(|m| m.len() < self.pos) {
            self.note(&format!(
                "{} was truncated; reading it from its start",
                self.path.display()
            ))?;
            self.file.seek(SeekFrom::Start(0)).map_err(|err| {
                ReadError::Log(
                    anyhow::Error::new(err)
                        .context(format!("{}: cannot seek", self.path.display())),
                )
            })?;
            self.pos = 0;
            self.line = 0;
            self.pending.clear();
            return self.read_available();
        }
        Ok(())
    }

    fn note(&mut self, text: &str) -> Result<(), ReadError> {
        self.printer.flush().map_err(ReadError::Output)?;
        eprintln!("moat: note: {text}");
        Ok(())
    }

    fn handle_line(&mut self, raw: &[u8]) -> Result<(), ReadError> {
        self.line += 1;
        let raw = raw.strip_suffix(b"\r").unwrap_or(raw);
        if raw.iter().all(u8::is_ascii_whitespace) {
            return Ok(());
        }
        match parse_event(raw) {
            Ok(event) => self.printer.print(raw, &event).map_err(ReadError::Output),
            Err(reason) => {
                self.printer.flush().map_err(ReadError::Output)?;
                eprintln!(
                    "moat: warning: {}: line {}: skipping malformed line: {reason}",
                    self.path.display(),
                    self.line
                );
                Ok(())
            }
        }
    }
}

/// Parses one line: a JSON object with a string `event.action`.
fn parse_event(raw: &[u8]) -> Result<Value, String> {
    let value: Value =
        serde_json::from_slice(raw).map_err(|err| format!("invalid JSON ({err})"))?;
    if !value.is_object() {
        return Err("not a JSON object".to_owned());
    }
    if value
        .pointer("/event/action")
        .and_then(Value::as_str)
        .is_none()
    {
        return Err("not a moat audit event (no event.action)".to_owned());
    }
    Ok(value)
}

struct Printer<W: Write> {
    out: BufWriter<W>,
    json: bool,
    workloads: Vec<String>,
}

impl<W: Write> Printer<W> {
    fn print(&mut self, raw: &[u8], event: &Value) -> io::Result<()> {
        let workload = str_at(event, "/workload/name");
        if !self.workloads.is_empty()
            && !self.workloads.iter().any(|w| Some(w.as_str()) == workload)
        {
            return Ok(());
        }
        if self.json {
            self.out.write_all(raw)?;
            self.out.write_all(b"\n")
        } else {
            writeln!(self.out, "{}", format_event(event))
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}

fn str_at<'v>(event: &'v Value, pointer: &str) -> Option<&'v str> {
    event.pointer(pointer).and_then(Value::as_str)
}

/// A scalar as text: strings as they are, numbers and booleans as JSON.
fn text_at(event: &Value, pointer: &str) -> Option<String> {
    match event.pointer(pointer)? {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// A value for `key=value`: quoted when it would not read as one token.
fn token(value: &str) -> String {
    if value.is_empty()
        || value
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || c == '"' || c == '=')
    {
        format!("{value:?}")
    } else {
        value.to_owned()
    }
}

/// One readable line: `TIME  WORKLOAD  ACTION  DETAILS`.
pub fn format_event(event: &Value) -> String {
    let time = match str_at(event, "/@timestamp") {
        Some(ts) => local_time(ts).unwrap_or_else(|| ts.to_owned()),
        None => "-".to_owned(),
    };
    let workload = str_at(event, "/workload/name").unwrap_or("-");
    let action = str_at(event, "/event/action").unwrap_or("-");
    let mut details: Vec<String> = Vec::new();
    let mut add = |key: &str, value: Option<String>| {
        if let Some(value) = value {
            details.push(format!("{key}={}", token(&value)));
        }
    };
    match action {
        "seccomp_denied" => {
            add("syscall", text_at(event, "/seccomp/syscall"));
            add("action", text_at(event, "/seccomp/action"));
            add("errno", text_at(event, "/seccomp/errno"));
            if let Some(arch) = text_at(event, "/seccomp/arch") {
                // The native architecture goes without saying; x32 or i386 calls
                // on x86_64 are worth pointing out.
                if arch != std::env::consts::ARCH {
                    add("arch", Some(arch));
                }
            }
        }
        "fork_failed" => add("errno", text_at(event, "/error/code")),
        "pids_limit_reached" => {
            add("current", text_at(event, "/pids/current"));
            let limit = match event.pointer("/pids/limit") {
                Some(Value::Null) => Some("max".to_owned()),
                _ => text_at(event, "/pids/limit"),
            };
            add("limit", limit);
            add("hits", text_at(event, "/pids/limit_hits"));
            add("new_hits", text_at(event, "/pids/new_hits"));
        }
        "fork_burst" => {
            add("rate", text_at(event, "/fork_burst/rate").map(|r| r + "/s"));
            add(
                "threshold",
                text_at(event, "/fork_burst/threshold").map(|t| t + "/s"),
            );
        }
        _ => {}
    }
    if let Some(pid) = text_at(event, "/process/pid") {
        let tid = text_at(event, "/process/thread/id");
        add("pid", Some(pid.clone()));
        if tid.as_ref().is_some_and(|tid| *tid != pid) {
            add("tid", tid);
        }
        add("comm", text_at(event, "/process/name"));
    }
    let mut line = format!("{time:<29}  {workload:<16}  {action:<18}");
    if !details.is_empty() {
        line.push_str("  ");
        line.push_str(&details.join(" "));
    }
    line.trim_end().to_owned()
}

extern "C" {
    fn tzset();
}

/// Reads `TZ` / `/etc/localtime` once, before [`local_time`] is used.
fn init_local_time() {
    // SAFETY: tzset only initialises libc's time zone state; we are single-threaded here.
    unsafe { tzset() };
}

/// An RFC 3339 timestamp as local time, to the millisecond, with the local offset:
/// `2026-05-20T12:11:12.123+02:00`. `None` if it does not parse.
pub fn local_time(timestamp: &str) -> Option<String> {
    let (secs, nanos) = parse_rfc3339(timestamp)?;
    // time_t is 32 bits on some targets.
    #[allow(clippy::useless_conversion)]
    let time: libc::time_t = secs.try_into().ok()?;
    // SAFETY: tm is plain data; localtime_r fills it and returns it, or null.
    let mut tm: libc::tm = unsafe { std::mem::zeroed() };
    if unsafe { libc::localtime_r(&time, &mut tm) }.is_null() {
        return None;
    }
    let offset = tm.tm_gmtoff;
    let sign = if offset < 0 { '-' } else { '+' };
    let offset = offset.abs();
    Some(format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}{sign}{:02}:{:02}",
        i64::from(tm.tm_year) + 1900,
        tm.tm_mon + 1,
        tm.tm_mday,
        tm.tm_hour,
        tm.tm_min,
        tm.tm_sec,
        nanos / 1_000_000,
        offset / 3600,
        offset / 60 % 60
    ))
}

/// Seconds since the Unix epoch and nanoseconds of `YYYY-MM-DDTHH:MM:SS[.frac](Z|±HH:MM)`.
fn parse_rfc3339(text: &str) -> Option<(i64, u32)> {
    let b = text.as_bytes();
    let num = |range: std::ops::Range<usize>| -> Option<i64> {
        let digits = b.get(range)?;
        if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
            return None;
        }
        std::str::from_utf8(digits).ok()?.parse().ok()
    };
    let sep = |i: usize, allowed: &[u8]| b.get(i).is_some_and(|c| allowed.contains(c));
    if !(sep(4, b"-") && sep(7, b"-") && sep(10, b"Tt ") && sep(13, b":") && sep(16, b":")) {
        return None;
    }
    let (year, month, day) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (hour, minute, second) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&month)
        || !(1..=31).contains(&day)
        || hour > 23
        || minute > 59
        || second > 60
    {
        return None;
    }
    let mut i = 19;
    let mut nanos: u32 = 0;
    if b.get(i) == Some(&b'.') {
        i += 1;
        let start = i;
        while b.get(i).is_some_and(u8::is_ascii_digit) {
            if i - start < 9 {
                nanos = nanos * 10 + u32::from(b[i] - b'0');
            }
            i += 1;
        }
        if i == start {
            return None;
        }
        for _ in (i - start)..9 {
            nanos *= 10;
        }
    }
    let offset = match b.get(i)? {
        b'Z' | b'z' if i + 1 == b.len() => 0,
        &c @ (b'+' | b'-') if b.len() == i + 6 && b[i + 3] == b':' => {
            let minutes = num(i + 1..i + 3)? * 60 + num(i + 4..i + 6)?;
            if c == b'-' {
                -minutes * 60
            } else {
                minutes * 60
            }
        }
        _ => return None,
    };
    let days = days_from_civil(year, month, day);
    Some((
        days * 86_400 + hour * 3600 + minute * 60 + second - offset,
        nanos,
    ))
}

/// Howard Hinnant's civil-to-days: days since 1970-01-01 of a proleptic Gregorian date.
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339() {
        assert_eq!(parse_rfc3339("1970-01-01T00:00:00Z"), Some((0, 0)));
        assert_eq!(
            parse_rfc3339("2026-05-20T10:11:12.123456789Z"),
            Some((1_779_271_872, 123_456_789))
        );
        assert_eq!(
            parse_rfc3339("2026-05-20T12:11:12.5+02:00"),
            Some((1_779_271_872, 500_000_000))
        );
        assert_eq!(parse_rfc3339("2026-05-20T10:11:12"), None);
        assert_eq!(parse_rfc3339("2026-13-20T10:11:12Z"), None);
        assert_eq!(parse_rfc3339("yesterday"), None);
    }

    #[test]
    fn tokens() {
        assert_eq!(token("curl"), "curl");
        assert_eq!(token("my prog"), "\"my prog\"");
        assert_eq!(token(""), "\"\"");
    }

    #[test]
    fn malformed_lines() {
        assert!(parse_event(b"{").is_err());
        assert!(parse_event(b"[1]").is_err());
        assert!(parse_event(br#"{"event":{}}"#).is_err());
        assert!(parse_event(br#"{"event":{"action":"fork_burst"}}"#).is_ok());
    }
}
