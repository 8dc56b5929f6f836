//! moatd starts, runs, and on SIGTERM or SIGINT exits 0 promptly, reporting forks.

mod common;

use std::{
    io::{BufRead as _, BufReader},
    process::{Child, Command, Stdio},
    sync::mpsc,
    thread,
    time::{Duration, Instant},
};

use nix::{
    sys::signal::{kill, Signal},
    unistd::Pid,
};

/// How long moatd may take to load its programs and say it is running.
const STARTUP: Duration = Duration::from_secs(30);
/// How long moatd may take to exit after the signal.
const SHUTDOWN: Duration = Duration::from_secs(5);

#[test]
fn moatd_exits_zero_on_sigterm() {
    skip_without_bpf!();
    stops_cleanly_on(Signal::SIGTERM);
}

#[test]
fn moatd_exits_zero_on_sigint() {
    skip_without_bpf!();
    stops_cleanly_on(Signal::SIGINT);
}

fn stops_cleanly_on(signal: Signal) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_moatd"))
        .args(["--log", "info"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawning moatd");
    let lines = stderr_lines(&mut child);

    let mut seen = Vec::new();
    let started = Instant::now();
    loop {
        let remaining = STARTUP.saturating_sub(started.elapsed());
        match lines.recv_timeout(remaining) {
            Ok(line) => {
                let running = line.contains("running");
                seen.push(line);
                if running {
                    break;
                }
            }
            Err(_) => {
                let _ = child.kill();
                let status = child.wait().expect("reaping moatd");
                panic!(
                    "moatd did not report running within {STARTUP:?} ({status}); stderr: {seen:#?}"
                );
            }
        }
    }

    kill(Pid::from_raw(child.id() as i32), signal).expect("signalling moatd");
    let signalled = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("polling moatd") {
            break status;
        }
        if signalled.elapsed() > SHUTDOWN {
            let _ = child.kill();
            let _ = child.wait();
            panic!("moatd still running {SHUTDOWN:?} after {signal}");
        }
        thread::sleep(Duration::from_millis(20));
    };
    seen.extend(lines.iter());

    assert!(
        status.success(),
        "moatd exited with {status} after {signal}; stderr: {seen:#?}"
    );
    let name = signal.as_str();
    assert!(
        seen.iter()
            .any(|l| l.contains(&format!("received {name}")) && l.contains("forks")),
        "moatd did not log the fork count on {name}; stderr: {seen:#?}"
    );
}

/// Forwards moatd's stderr line by line, so the test can wait with a timeout.
fn stderr_lines(child: &mut Child) -> mpsc::Receiver<String> {
    let stderr = child.stderr.take().expect("piped stderr");
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}
