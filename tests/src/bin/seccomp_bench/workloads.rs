//! The timed loops (workloads), what their first call returned, and the
//! forked child that runs them under an in-process filter: it installs the
//! filter, runs the loops and writes one line `ns_per_call first_ret
//! first_errno` per workload to the parent (the lines `--loop` prints).

use std::fmt::Write as _;
use std::io::{Read, Write};
use std::os::fd::OwnedFd;
use std::time::Instant;

use moat_runtime::seccomp::load;

use super::variants::{How, Variant};
use super::Config;

/// A timed loop.
pub(super) struct Workload {
    pub(super) label: &'static str,
    /// The plot's x value.
    pub(super) short: &'static str,
    pub(super) what: &'static str,
    pub(super) unit: &'static str,
    socket: bool,
    body: fn() -> libc::c_long,
    /// The syscall the filter decides on (for the static analysis).
    pub(super) syscall: &'static str,
    pub(super) nr: libc::c_long,
    pub(super) args: [u64; 6],
}

pub(super) const WORKLOADS: [Workload; 3] = [
    Workload {
        label: "getppid (allowed)",
        short: "getppid",
        what: "`getppid()`",
        unit: "call",
        socket: false,
        body: call_getppid,
        syscall: "getppid",
        nr: libc::SYS_getppid,
        args: [0; 6],
    },
    Workload {
        label: "socket+close (arg-filtered)",
        short: "socket+close",
        what: "`socket(AF_UNIX, SOCK_DGRAM, 0)` (then closed)",
        unit: "iter",
        socket: true,
        body: call_socket_close,
        syscall: "socket",
        nr: libc::SYS_socket,
        args: [libc::AF_UNIX as u64, libc::SOCK_DGRAM as u64, 0, 0, 0, 0],
    },
    Workload {
        label: "mount (denied)",
        short: "mount",
        what: "`mount(NULL, NULL, NULL, 0, NULL)`",
        unit: "call",
        socket: false,
        body: call_mount,
        syscall: "mount",
        nr: libc::SYS_mount,
        args: [0; 6],
    },
];

/// Returns the result of `syscall` and sets errno as libc does.
fn call_getppid() -> libc::c_long {
    // SAFETY: no arguments.
    unsafe { libc::syscall(libc::SYS_getppid) }
}

fn call_socket_close() -> libc::c_long {
    // Arguments are passed as full longs: seccomp sees whole registers.
    // SAFETY: integer arguments only; the fd is ours to close.
    unsafe {
        let fd = libc::syscall(
            libc::SYS_socket,
            libc::AF_UNIX as libc::c_long,
            libc::SOCK_DGRAM as libc::c_long,
            0 as libc::c_long,
        );
        if fd >= 0 {
            libc::syscall(libc::SYS_close, fd);
        }
        fd
    }
}

fn call_mount() -> libc::c_long {
    let null: libc::c_long = 0;
    // SAFETY: NULL pointers, which the kernel refuses (or the filter first).
    unsafe { libc::syscall(libc::SYS_mount, null, null, null, null, null) }
}

/// What the first call of a workload returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Outcome {
    pub(super) ret: i64,
    pub(super) errno: i32,
}

impl Outcome {
    /// Whether both succeeded, or both failed with the same errno (a
    /// successful `getppid` returns a different pid under each launch).
    pub(super) fn same_kind(&self, other: &Outcome) -> bool {
        (self.ret >= 0 && other.ret >= 0) || self == other
    }
}

impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.ret < 0 {
            write!(f, "-1 {}", errno_name(self.errno))
        } else {
            write!(f, "{} (success)", self.ret)
        }
    }
}

fn errno_name(e: i32) -> String {
    match e {
        libc::EPERM => "EPERM".into(),
        libc::EFAULT => "EFAULT".into(),
        libc::EINVAL => "EINVAL".into(),
        libc::EACCES => "EACCES".into(),
        libc::ENOENT => "ENOENT".into(),
        libc::EAFNOSUPPORT => "EAFNOSUPPORT".into(),
        e => format!("errno {e}"),
    }
}

/// One workload's result from a child.
pub(super) struct ChildResult {
    pub(super) ns_per_call: f64,
    pub(super) ret: i64,
    pub(super) errno: i32,
}

/// Forks a child that installs `v`'s filter and runs every workload;
/// returns its results in `WORKLOADS` order.
pub(super) fn run_child(v: &Variant, cfg: Config) -> Result<Vec<ChildResult>, String> {
    let (rd, wr) = nix::unistd::pipe().map_err(|e| format!("pipe: {e}"))?;
    // SAFETY: this program never starts a thread, so the child may do
    // anything the parent could; it leaves with _exit and never returns.
    match unsafe { nix::unistd::fork() }.map_err(|e| format!("fork: {e}"))? {
        nix::unistd::ForkResult::Child => {
            drop(rd);
            let code =
                std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| child_main(v, cfg, wr)))
                    .unwrap_or(101);
            // SAFETY: leaving the child without running the parent's code.
            unsafe { libc::_exit(code) }
        }
        nix::unistd::ForkResult::Parent { child } => {
            drop(wr);
            let mut text = String::new();
            let read = std::fs::File::from(rd).read_to_string(&mut text);
            let status =
                nix::sys::wait::waitpid(child, None).map_err(|e| format!("waitpid: {e}"))?;
            read.map_err(|e| format!("reading from the {} child: {e}", v.name))?;
            if status != nix::sys::wait::WaitStatus::Exited(child, 0) {
                return Err(format!(
                    "the {} child failed ({status:?}): {}",
                    v.name,
                    text.trim()
                ));
            }
            parse_child_output(&text)
                .ok_or_else(|| format!("the {} child sent unreadable results: {text:?}", v.name))
        }
    }
}

pub(super) fn parse_child_output(text: &str) -> Option<Vec<ChildResult>> {
    let out: Vec<ChildResult> = text
        .lines()
        .map(|l| {
            let mut f = l.split_whitespace();
            Some(ChildResult {
                ns_per_call: f.next()?.parse().ok()?,
                ret: f.next()?.parse().ok()?,
                errno: f.next()?.parse().ok()?,
            })
        })
        .collect::<Option<_>>()?;
    (out.len() == WORKLOADS.len()).then_some(out)
}

/// The child: install the filter, time every workload, write one line
/// `ns_per_call first_ret first_errno` per workload. Returns the exit code.
fn child_main(v: &Variant, cfg: Config, wr: OwnedFd) -> i32 {
    let mut out = std::fs::File::from(wr);
    if let How::Fork {
        program: Some(program),
        flags,
    } = &v.how
    {
        if !nix::unistd::geteuid().is_root() {
            if let Err(e) = load::set_no_new_privs() {
                let _ = writeln!(out, "no_new_privs: {e}");
                return 1;
            }
        }
        if let Err(e) = load::install(program, *flags) {
            let _ = writeln!(out, "installing the filter: {e}");
            return 1;
        }
    }
    let all: Vec<usize> = (0..WORKLOADS.len()).collect();
    match out.write_all(loop_report(&all, cfg).as_bytes()) {
        Ok(()) => 0,
        Err(_) => 1,
    }
}

/// Runs the timed loops of `workloads` (indices into [`WORKLOADS`]) in this
/// process, under whatever filter it has: one line `ns_per_call first_ret
/// first_errno` each.
pub(super) fn loop_report(workloads: &[usize], cfg: Config) -> String {
    let mut report = String::new();
    for &i in workloads {
        let w = &WORKLOADS[i];
        let n = if w.socket {
            cfg.socket_calls
        } else {
            cfg.calls
        };
        // The first call's result, errno cleared first so a stale value
        // cannot show.
        // SAFETY: errno is thread-local.
        unsafe { *libc::__errno_location() = 0 };
        let ret = (w.body)();
        let errno = if ret < 0 {
            std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
        } else {
            0
        };
        for _ in 0..n / 10 {
            std::hint::black_box((w.body)());
        }
        let t = Instant::now();
        for _ in 0..n {
            std::hint::black_box((w.body)());
        }
        let ns = t.elapsed().as_nanos() as f64 / n as f64;
        let _ = writeln!(report, "{ns} {ret} {errno}");
    }
    report
}

/// Refuses results that show the measurement is not what it claims: the
/// allowed calls succeed (`getppid` is 0 in a new pid namespace, whose
/// parent is outside it) and, under a filter, `mount` fails with `EPERM`.
pub(super) fn check_outcomes(
    variants: &[Variant],
    outcomes: &[Vec<Option<Outcome>>],
) -> Result<(), String> {
    for (v, var) in variants.iter().enumerate() {
        for (w, wl) in WORKLOADS.iter().enumerate() {
            let Some(o) = outcomes[v][w] else {
                continue;
            };
            let ok = match w {
                0 if matches!(var.how, How::Fork { .. }) => o.ret > 0,
                0 | 1 => o.ret >= 0,
                _ if var.filtered() => o.ret < 0 && o.errno == libc::EPERM,
                _ => o.ret < 0,
            };
            if !ok {
                return Err(format!(
                    "{} under {}: unexpected first result {o}",
                    wl.what, var.name
                ));
            }
        }
    }
    Ok(())
}
