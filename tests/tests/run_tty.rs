//! `moat run` on a terminal: the workload must not reach moat's terminal
//! (TIOCSTI injection, the CVE-2017-5226 class), and interactive use must
//! still work through the pty moat gives it.
//!
//! Each test plays the terminal: it opens a real pty, runs `moat run` with
//! the slave as its standard streams and controlling terminal (as a login
//! shell would), types into the master and reads the screen from it.

use std::process::{Child, Command, ExitStatus};
use std::time::{Duration, Instant};

use moat_tests::binary;
use moat_tests::pty::{Pty, Screen};
use moat_tests::runenv::RunEnv;

const TIMEOUT: Duration = Duration::from_secs(20);

fn wait(child: &mut Child, timeout: Duration) -> ExitStatus {
    let start = Instant::now();
    loop {
        if let Some(s) = child.try_wait().unwrap() {
            return s;
        }
        if start.elapsed() > timeout {
            let _ = child.kill();
            panic!("moat run did not end within {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Runs `moat run ARGS` on a new terminal of `rows` x `cols`.
fn on_terminal(env: &RunEnv, args: &[&str], rows: u16, cols: u16) -> (Pty, Screen, Child) {
    let pty = Pty::open(rows, cols);
    let screen = Screen::start(std::os::fd::AsRawFd::as_raw_fd(&pty.master));
    let mut cmd: Command = env.run_cmd(args);
    pty.attach(&mut cmd);
    let child = cmd.spawn().expect("spawn moat");
    (pty, screen, child)
}

/// The attack: the workload pushes a command line into the input of its
/// terminal through fds 0, 1, 2 and /dev/tty. Whatever lands in the input
/// queue of the terminal `moat run` was started from would be read and run
/// by the operator's shell (as root) once moat exits.
fn injection_is_contained(tag: &str, extra: &[&str]) {
    let _g = moat_tests::cgroup_layout_lock(false);
    let Some(env) = RunEnv::new(tag) else { return };
    let hostile = binary("hostile");
    let mut args = extra.to_vec();
    let payload = "echo INJECTED-BY-WORKLOAD\n";
    args.extend(["--", hostile.to_str().unwrap(), "tiocsti", payload]);
    let (pty, screen, mut child) = on_terminal(&env, &args, 24, 80);
    let status = wait(&mut child, TIMEOUT);
    // The workload ran and tried every way in.
    screen.wait_for("hostile: tiocsti fd0=", TIMEOUT);
    let tried = screen.text();
    assert!(tried.contains("tty="), "{tried:?}");
    let pending = String::from_utf8_lossy(&pty.pending_input()).into_owned();
    assert_eq!(
        pending, "",
        "the workload injected input into moat's terminal (moat exited {status:?}); screen: {tried:?}"
    );
}

#[test]
fn tiocsti_cannot_reach_moats_terminal_with_default_flags() {
    injection_is_contained("tiocsti", &[]);
}

#[test]
fn tiocsti_cannot_reach_moats_terminal_from_an_unprivileged_user_namespace() {
    injection_is_contained(
        "tiocsti-userns",
        &["--userns", "auto", "--cap-drop", "ALL", "--user", "65534"],
    );
}

#[test]
fn input_output_window_size_and_exit_code_pass_through_the_pty() {
    let _g = moat_tests::cgroup_layout_lock(false);
    let Some(env) = RunEnv::new("tty-io") else {
        return;
    };
    let (pty, screen, mut child) = on_terminal(
        &env,
        &[
            "--",
            "sh",
            "-c",
            "test -t 0 && test -t 1 && test -t 2 && echo is-a-tty; stty size; read line; echo \"got:$line\"; exit 7",
        ],
        33,
        101,
    );
    let before = pty.termios();
    screen.wait_for("is-a-tty", TIMEOUT);
    screen.wait_for("33 101", TIMEOUT);
    pty.write(b"hello moat\r");
    screen.wait_for("got:hello moat", TIMEOUT);
    assert_eq!(wait(&mut child, TIMEOUT).code(), Some(7));
    // moat's terminal is as it was (moat had it in raw mode meanwhile).
    let after = pty.termios();
    assert_eq!(
        (after.c_iflag, after.c_oflag, after.c_lflag, after.c_cflag),
        (
            before.c_iflag,
            before.c_oflag,
            before.c_lflag,
            before.c_cflag
        )
    );
    assert_eq!(pty.pending_input(), b"");
}

#[test]
fn resize_and_ctrl_c_reach_the_workload() {
    let _g = moat_tests::cgroup_layout_lock(false);
    let Some(env) = RunEnv::new("tty-winch") else {
        return;
    };
    let (pty, screen, mut child) = on_terminal(
        &env,
        &[
            "--",
            "sh",
            "-c",
            "trap 'echo size:$(stty size)' WINCH; echo ready; while :; do sleep 0.05; done",
        ],
        24,
        80,
    );
    // Output on the screen means the relay runs, so moat's terminal is in
    // raw mode: what is typed from here on is the workload's pty's input.
    screen.wait_for("ready", TIMEOUT);
    pty.set_size(40, 120);
    screen.wait_for("size:40 120", TIMEOUT);
    // ^C as the terminal sends it: the pty's line discipline makes it a
    // SIGINT for the workload's foreground process group.
    pty.write(b"\x03");
    let status = wait(&mut child, TIMEOUT);
    assert_eq!(status.code(), Some(128 + libc::SIGINT), "{status:?}");

    // A command that only sleeps is interrupted too (`exec`: the sleep
    // itself, with no handler), and EOF (^D) ends a reader.
    let (pty, screen, mut child) = on_terminal(
        &env,
        &["--", "sh", "-c", "echo ready; exec sleep 30"],
        24,
        80,
    );
    screen.wait_for("ready", TIMEOUT);
    pty.write(b"\x03");
    let status = wait(&mut child, TIMEOUT);
    assert_eq!(status.code(), Some(128 + libc::SIGINT), "{status:?}");
    let (pty, screen, mut child) = on_terminal(
        &env,
        &["--", "sh", "-c", "echo ready; cat; echo cat-done"],
        24,
        80,
    );
    screen.wait_for("ready", TIMEOUT);
    pty.write(b"abc\r\x04");
    screen.wait_for("cat-done", TIMEOUT);
    let status = wait(&mut child, TIMEOUT);
    assert_eq!(status.code(), Some(0), "{status:?}");
}

#[test]
fn job_control_works_inside() {
    let _g = moat_tests::cgroup_layout_lock(false);
    let Some(env) = RunEnv::new("tty-job") else {
        return;
    };
    let (pty, screen, mut child) = on_terminal(&env, &["--", "sh", "-i"], 24, 80);
    // The interactive shell owns the pty: it runs a job in the foreground,
    // ^Z stops it (the kernel stops the foreground group), and the shell
    // gets the terminal back.
    //
    // ^Z also flushes the pty's input queue, so it must come only once the
    // job runs: the job announces itself (the shell has made its process
    // group the foreground one before it runs it), with output that the
    // echo of the typed line does not contain.
    pty.write(b"sh -c 'echo job-$((6 * 7)); exec sleep 30'\r");
    screen.wait_for("job-42", TIMEOUT);
    pty.write(b"\x1a");
    screen.wait_for("Stopped", TIMEOUT);
    pty.write(b"kill -9 %1\r");
    std::thread::sleep(Duration::from_millis(500));
    pty.write(b"echo back-at-prompt; exit 9\r");
    screen.wait_for("back-at-prompt", TIMEOUT);
    // dash refuses the first exit while it still lists the stopped job.
    std::thread::sleep(Duration::from_millis(500));
    if child.try_wait().unwrap().is_none() && screen.text().contains("stopped jobs") {
        pty.write(b"exit 9\r");
    }
    assert_eq!(wait(&mut child, TIMEOUT).code(), Some(9));
}
