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

use crate::term::escape;
use anyhow::{bail, Context as _, Result};
use clap::Args;
use moat_api::{
    audit::AuditEvent,
    defaults::AUDIT_LOG as DEFAULT_AUDIT_LOG,
    time::{local_time, system_zone},
};

/// The longest line read as an event (moatd's are well under 4 KiB); longer
/// ones are skipped with a warning, without being held in memory.
const MAX_LINE: usize = 1 << 20;

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
                  current, limit, hits), fork burst (fork_burst: forks per second), user \
                  namespace creation (userns_created), and Docker API requests the \
                  authorization plugin denied (authz_denied) or, in audit mode, would have \
                  denied (authz_would_deny: rule, method, URI, endpoint, user, container, \
                  message). Events seen in the kernel are \
                  rate-limited per cgroup (moatd's audit.rate_limit), so under load the log is \
                  a sample of what happened; moatd's metrics (`moat stats`) count exactly.\n\n\
                  A line that is not a moat audit event is skipped with a warning on standard \
                  error naming its line number.\n\n\
                  Workload and process names are chosen by whoever runs the workload, and \
                  the requests of authz events by Docker's clients: every \
                  field is printed with control and bidirectional-formatting characters \
                  escaped (\\x1b, \\u{202e}; a backslash as \\\\), and --json lines have \
                  them as JSON \\u escapes (the same strings once decoded), so nothing in an \
                  event can act on the terminal.",
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

    /// Print the raw JSON lines as moatd wrote them (after filtering; any
    /// character that could act on a terminal as a JSON \u escape).
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
        overlong: false,
        line: 0,
        printer: Printer {
            out: BufWriter::new(stdout.lock()),
            json: args.json,
            workloads: args.workload,
            zone: system_zone(),
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
    /// The line being read is longer than [`MAX_LINE`]: skipped to its end.
    overlong: bool,
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
                if self.overlong {
                    self.overlong = false;
                    self.skip_overlong_line()?;
                } else if self.pending.is_empty() {
                    self.handle_line(&chunk[..newline])?;
                } else {
                    self.pending.extend_from_slice(&chunk[..newline]);
                    let line = std::mem::take(&mut self.pending);
                    self.handle_line(&line)?;
                }
                chunk = &chunk[newline + 1..];
            }
            self.keep_partial(chunk);
        }
    }

    /// Keeps the start of a line whose newline has not been read yet, unless
    /// the line is already longer than any audit event: then it is dropped as
    /// it comes (a log of one endless line must not take all memory).
    fn keep_partial(&mut self, chunk: &[u8]) {
        if self.overlong || self.pending.len() + chunk.len() > MAX_LINE {
            self.overlong = true;
            self.pending = Vec::new();
        } else {
            self.pending.extend_from_slice(chunk);
        }
    }

    fn skip_overlong_line(&mut self) -> Result<(), ReadError> {
        self.line += 1;
        self.printer.flush().map_err(ReadError::Output)?;
        eprintln!(
            "moat: warning: {}: line {}: skipping a line longer than {MAX_LINE} bytes",
            self.path.display(),
            self.line
        );
        Ok(())
    }

    fn finish_pending(&mut self) -> Result<(), ReadError> {
        if std::mem::take(&mut self.overlong) {
            return self.skip_overlong_line();
        }
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
            self.overlong = false;
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
        match AuditEvent::parse_line(raw) {
            Ok(event) => self.printer.print(raw, &event).map_err(ReadError::Output),
            Err(reason) => {
                self.printer.flush().map_err(ReadError::Output)?;
                eprintln!(
                    "moat: warning: {}: line {}: skipping malformed line: {}",
                    self.path.display(),
                    self.line,
                    escape(&reason.to_string())
                );
                Ok(())
            }
        }
    }
}

struct Printer<W: Write> {
    out: BufWriter<W>,
    json: bool,
    workloads: Vec<String>,
    zone: jiff::tz::TimeZone,
}

impl<W: Write> Printer<W> {
    fn print(&mut self, raw: &[u8], event: &AuditEvent) -> io::Result<()> {
        let workload = &event.workload.name;
        if !self.workloads.is_empty() && !self.workloads.iter().any(|w| w == workload) {
            return Ok(());
        }
        if self.json {
            // The same JSON, with nothing left raw that could act on a
            // terminal (moatd writes it so; an older one may not have).
            match std::str::from_utf8(raw) {
                Ok(text) => self
                    .out
                    .write_all(moat_api::text::escape_unsafe_in_json(text).as_bytes())?,
                Err(_) => self.out.write_all(raw)?,
            }
            self.out.write_all(b"\n")
        } else {
            writeln!(self.out, "{}", format_event(event, &self.zone))
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}

/// A value for `key=value`, escaped ([`escape`]), and quoted when it would
/// not read as one token.
fn token(value: &str) -> String {
    let value = escape(value);
    if value.is_empty()
        || value
            .chars()
            .any(|c| c.is_whitespace() || c == '"' || c == '=')
    {
        format!("\"{}\"", value.replace('"', "\\\""))
    } else {
        value.into_owned()
    }
}

/// One readable line: `TIME  WORKLOAD  ACTION  DETAILS`.
pub fn format_event(event: &AuditEvent, zone: &jiff::tz::TimeZone) -> String {
    // Every field goes through `escape`: all of them may come from a workload
    // (or from whoever wrote the file).
    let time = match event.timestamp.as_str() {
        "" => "-".to_owned(),
        ts => local_time(ts, zone).unwrap_or_else(|| escape(ts).into_owned()),
    };
    let or_dash = |text: &str| {
        if text.is_empty() {
            "-".to_owned()
        } else {
            escape(text).into_owned()
        }
    };
    let workload = or_dash(&event.workload.name);
    let action = or_dash(&event.event.action);
    let mut details: Vec<String> = Vec::new();
    let mut add = |key: &str, value: Option<String>| {
        if let Some(value) = value {
            details.push(format!("{key}={}", token(&value)));
        }
    };
    match action.as_str() {
        "seccomp_denied" => {
            if let Some(seccomp) = &event.seccomp {
                add("syscall", Some(seccomp.syscall.clone()));
                add("action", Some(seccomp.action.clone()));
                add("errno", seccomp.errno.clone());
                // The native architecture goes without saying; x32 or i386 calls
                // on x86_64 are worth pointing out.
                if seccomp.arch != std::env::consts::ARCH {
                    add("arch", Some(seccomp.arch.clone()));
                }
            }
        }
        "fork_failed" => add("errno", event.error.as_ref().map(|e| e.code.clone())),
        "pids_limit_reached" => {
            if let Some(pids) = &event.pids {
                add("current", Some(pids.current.to_string()));
                let limit = pids
                    .limit
                    .map_or_else(|| "max".to_owned(), |l| l.to_string());
                add("limit", Some(limit));
                add("hits", Some(pids.limit_hits.to_string()));
                add("new_hits", Some(pids.new_hits.to_string()));
            }
        }
        "fork_burst" => {
            if let Some(burst) = &event.fork_burst {
                add("rate", Some(format!("{}/s", burst.rate)));
                add("threshold", Some(format!("{}/s", burst.threshold)));
            }
        }
        "authz_denied" | "authz_would_deny" => {
            if let Some(authz) = &event.authz {
                add("rule", Some(authz.rule.clone()));
                add("method", Some(authz.method.clone()));
                add("uri", Some(authz.uri.clone()));
                add("endpoint", Some(authz.endpoint.clone()));
                if !authz.user.is_empty() {
                    add("user", Some(authz.user.clone()));
                }
                add("container", authz.container.clone());
                add("message", Some(authz.message.clone()));
            }
        }
        _ => {}
    }
    if let Some(process) = &event.process {
        add("pid", Some(process.pid.to_string()));
        if process.thread.id != process.pid {
            add("tid", Some(process.thread.id.to_string()));
        }
        add("comm", Some(process.name.clone()));
    }
    let mut line = format!("{time:<29}  {workload:<16}  {action:<18}");
    if !details.is_empty() {
        line.push_str("  ");
        line.push_str(&details.join(" "));
    }
    line.trim_end().to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens() {
        assert_eq!(token("curl"), "curl");
        assert_eq!(token("my prog"), "\"my prog\"");
        assert_eq!(token(""), "\"\"");
        assert_eq!(token("a\u{1b}]0;x\u{7}"), "a\\x1b]0;x\\x07");
        assert_eq!(token("say \"hi\""), "\"say \\\"hi\\\"\"");
        assert_eq!(
            token("/v1.41/containers/create"),
            "/v1.41/containers/create"
        );
    }

    #[test]
    fn no_field_reaches_the_terminal_raw() {
        let evil = "w\u{1b}[2J\u{9b}1m\u{202e}";
        let mut event = AuditEvent::new(
            moat_api::audit::AuditAction::SeccompDenied,
            format!("not a time {evil}"),
            evil,
            evil,
            Some(evil.to_owned()),
        );
        event.event.action = format!("seccomp_denied{evil}");
        event.process = Some(moat_api::audit::ProcessFields {
            pid: 1,
            thread: moat_api::audit::ThreadFields { id: 1 },
            name: evil.to_owned(),
            executable: Some(evil.to_owned()),
        });
        let line = format_event(&event, &jiff::tz::TimeZone::UTC);
        assert!(!line.chars().any(moat_api::text::is_unsafe), "{line:?}");
    }

    #[test]
    fn authz_events_read_escaped() {
        let line = r#"{"@timestamp":"","event":{"action":"authz_denied"},"workload":{"name":"docker\u001b[31m"},"authz":{"mode":"enforce","user":"ci\u202e","method":"POST","uri":"/v1.41/containers/create?name=\u001b]0;x\u0007","endpoint":"containers/create","rule":"privileged","message":"no (HostConfig.Privileged: true)","container":"0123456789ab"}}"#;
        let event = AuditEvent::parse_line(line.as_bytes()).unwrap();
        let text = format_event(&event, &jiff::tz::TimeZone::UTC);
        assert!(!text.chars().any(moat_api::text::is_unsafe), "{text:?}");
        assert!(text.contains(r"docker\x1b[31m"), "{text}");
        assert!(text.contains("authz_denied"), "{text}");
        assert!(text.contains("rule=privileged method=POST"), "{text}");
        assert!(
            text.contains(r#"uri="/v1.41/containers/create?name=\x1b]0;x\x07""#),
            "{text}"
        );
        assert!(
            text.contains("endpoint=containers/create user=ci\\u{202e} container=0123456789ab"),
            "{text}"
        );
        assert!(
            text.contains(r#"message="no (HostConfig.Privileged: true)""#),
            "{text}"
        );
    }

    #[test]
    fn malformed_lines() {
        assert!(AuditEvent::parse_line(b"{").is_err());
        assert!(AuditEvent::parse_line(b"[1]").is_err());
        assert!(AuditEvent::parse_line(br#"{"event":{}}"#).is_err());
        assert!(AuditEvent::parse_line(br#"{"event":{"action":"fork_burst"}}"#).is_ok());
    }
}
