//! `hostile`: what a hostile workload does that no standard tool does in
//! one line, for the attack tests of `moat run` (each prints what happened
//! and exits 0 only if the attack worked).
//!
//! ```text
//! hostile tiocsti TEXT     push TEXT into the input of the terminal on fds
//!                          0, 1, 2 and /dev/tty (ioctl TIOCSTI); exit 0 if
//!                          any push succeeded
//! hostile ptrace PID       attach to PID with ptrace; exit 0 if attached
//! hostile key DESC         find the "user" key DESC in the session keyring
//!                          and print its payload; exit 0 if found
//! ```

use std::ffi::CString;
use std::process::ExitCode;

fn errno_name() -> String {
    let e = std::io::Error::last_os_error();
    match e.raw_os_error() {
        Some(libc::EPERM) => "EPERM".into(),
        Some(libc::EIO) => "EIO".into(),
        Some(libc::ENOTTY) => "ENOTTY".into(),
        Some(libc::ENXIO) => "ENXIO".into(),
        Some(libc::ESRCH) => "ESRCH".into(),
        Some(libc::ENOKEY) => "ENOKEY".into(),
        Some(libc::EBADF) => "EBADF".into(),
        _ => e.to_string(),
    }
}

/// Pushes `text` into the terminal `fd`; "ok" or the errno.
fn push(fd: libc::c_int, text: &[u8]) -> String {
    for b in text {
        // SAFETY: TIOCSTI reads one byte from a valid pointer.
        if unsafe { libc::ioctl(fd, libc::TIOCSTI, b as *const u8) } != 0 {
            return errno_name();
        }
    }
    "ok".into()
}

fn tiocsti(text: &str) -> ExitCode {
    let mut report = Vec::new();
    for fd in 0..3 {
        report.push(format!("fd{fd}={}", push(fd, text.as_bytes())));
    }
    // SAFETY: opening a constant path; closed below.
    let tty = unsafe { libc::open(c"/dev/tty".as_ptr(), libc::O_RDWR | libc::O_NOCTTY) };
    if tty < 0 {
        report.push(format!("tty={}", errno_name()));
    } else {
        report.push(format!("tty={}", push(tty, text.as_bytes())));
        // SAFETY: our descriptor.
        unsafe { libc::close(tty) };
    }
    let line = report.join(" ");
    eprintln!("hostile: tiocsti {line}");
    if report.iter().any(|r| r.ends_with("=ok")) {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

fn ptrace(pid: &str) -> ExitCode {
    let Ok(pid) = pid.parse::<libc::pid_t>() else {
        eprintln!("hostile: ptrace: bad pid {pid:?}");
        return ExitCode::from(2);
    };
    // SAFETY: PTRACE_ATTACH with integer arguments.
    let rc = unsafe { libc::ptrace(libc::PTRACE_ATTACH, pid, 0, 0) };
    if rc != 0 {
        eprintln!("hostile: ptrace {pid}: {}", errno_name());
        return ExitCode::FAILURE;
    }
    let mut status = 0;
    // SAFETY: waiting for the tracee's stop, then letting it go.
    unsafe {
        libc::waitpid(pid, &mut status, libc::__WALL);
        libc::ptrace(libc::PTRACE_DETACH, pid, 0, 0);
    }
    eprintln!("hostile: ptrace {pid}: attached");
    ExitCode::SUCCESS
}

fn key(desc: &str) -> ExitCode {
    const KEYCTL_READ: libc::c_long = 11;
    const KEYCTL_SEARCH: libc::c_long = 10;
    const KEY_SPEC_SESSION_KEYRING: libc::c_long = -3;
    let desc = CString::new(desc).expect("no NUL");
    // SAFETY: keyctl with valid C strings.
    let id = unsafe {
        libc::syscall(
            libc::SYS_keyctl,
            KEYCTL_SEARCH,
            KEY_SPEC_SESSION_KEYRING,
            c"user".as_ptr(),
            desc.as_ptr(),
            0,
        )
    };
    if id < 0 {
        eprintln!("hostile: key {desc:?}: {}", errno_name());
        return ExitCode::FAILURE;
    }
    let mut buf = [0u8; 256];
    // SAFETY: reading the payload into a local buffer.
    let n = unsafe {
        libc::syscall(
            libc::SYS_keyctl,
            KEYCTL_READ,
            id,
            buf.as_mut_ptr(),
            buf.len(),
        )
    };
    if n < 0 {
        eprintln!("hostile: key {desc:?} read: {}", errno_name());
        return ExitCode::FAILURE;
    }
    let n = (n as usize).min(buf.len());
    println!("{}", String::from_utf8_lossy(&buf[..n]));
    ExitCode::SUCCESS
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .as_slice()
    {
        ["tiocsti", text] => tiocsti(text),
        ["ptrace", pid] => ptrace(pid),
        ["key", desc] => key(desc),
        _ => {
            eprintln!("usage: hostile tiocsti TEXT | ptrace PID | key DESC");
            ExitCode::from(2)
        }
    }
}
