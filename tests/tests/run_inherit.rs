//! What a workload must not inherit from the operator who runs `moat run`:
//! open descriptors (only 0, 1, 2 and `--preserve-fds N` pass), the
//! environment (only PATH, HOME, TERM and `--env`, unless `--env-host`),
//! the session keyring, and a life of its own once the supervisor is
//! killed. Each test is written as the attack.

use std::os::fd::AsRawFd;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use moat_tests::binary;
use moat_tests::runenv::{err, out, RunEnv};

/// Makes `cmd` start with `file` open (without close-on-exec) on each of
/// `fds`, as a shell's `exec 7</etc/shadow` leaves it.
fn with_open_fds(cmd: &mut Command, file: &std::fs::File, fds: &[i32]) {
    let src = file.as_raw_fd();
    let fds = fds.to_vec();
    // SAFETY: dup2 is async-signal-safe.
    unsafe {
        cmd.pre_exec(move || {
            for &fd in &fds {
                if libc::dup2(src, fd) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
}

fn secret_file(env: &RunEnv) -> std::fs::File {
    let p = env.dir.join("shadow");
    std::fs::write(&p, "root:$6$secret-hash:19000::::::\n").unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
    std::fs::File::open(&p).unwrap()
}

/// Lists which of descriptors 3 to 12 the workload's shell has open.
const LIST_FDS: &str =
    "for fd in 3 4 5 6 7 8 9 10 11 12; do [ -e /proc/$$/fd/$fd ] && echo open:$fd; done; exit 0";

#[test]
fn inherited_descriptors_do_not_reach_the_workload() {
    let _g = moat_tests::cgroup_layout_lock(false);
    let Some(env) = RunEnv::new("fds") else {
        return;
    };
    let secret = secret_file(&env);
    let mut c = env.run_cmd(&[
        "--user", "65534", "--userns", "auto", "--", "sh", "-c", "cat <&7",
    ]);
    with_open_fds(&mut c, &secret, &[7]);
    let o = c.stdin(Stdio::null()).output().unwrap();
    assert!(
        !out(&o).contains("secret-hash"),
        "the workload read fd 7: {}",
        out(&o)
    );
    assert!(!o.status.success());

    let mut c = env.run_cmd(&["--", "sh", "-c", LIST_FDS]);
    with_open_fds(&mut c, &secret, &[3, 4, 9]);
    let o = c.stdin(Stdio::null()).output().unwrap();
    assert!(o.status.success(), "{}", err(&o));
    assert_eq!(out(&o), "", "descriptors beyond 2 reached the workload");
}

#[test]
fn preserve_fds_passes_exactly_what_it_says() {
    let _g = moat_tests::cgroup_layout_lock(false);
    let Some(env) = RunEnv::new("preserve") else {
        return;
    };
    let secret = secret_file(&env);
    let mut c = env.run_cmd(&[
        "--preserve-fds",
        "2",
        "--",
        "sh",
        "-c",
        &format!("cat <&4; {LIST_FDS}"),
    ]);
    with_open_fds(&mut c, &secret, &[3, 4, 5, 9]);
    let o = c.stdin(Stdio::null()).output().unwrap();
    assert!(o.status.success(), "{}", err(&o));
    assert_eq!(out(&o), "root:$6$secret-hash:19000::::::\nopen:3\nopen:4\n");

    // Descriptors moat did not inherit are refused before anything starts.
    let mut c = env.run_cmd(&["--name", "pf", "--preserve-fds", "3", "--", "true"]);
    with_open_fds(&mut c, &secret, &[3, 4]);
    let o = c.stdin(Stdio::null()).output().unwrap();
    assert_eq!(o.status.code(), Some(125));
    assert!(err(&o).contains("descriptor 5 is not open"), "{}", err(&o));
    assert!(!env.dir.join("state/workloads/pf.json").exists());
}

#[test]
fn the_operators_environment_does_not_reach_the_workload() {
    let _g = moat_tests::cgroup_layout_lock(false);
    let Some(env) = RunEnv::new("env") else {
        return;
    };
    let o = env
        .run_cmd(&["--env", "ASKED=yes", "--", "env"])
        .env("SSH_AUTH_SOCK", "/tmp/ssh-operator/agent.1")
        .env("OPERATOR_TOKEN", "hunter2")
        .env("TERM", "xterm-test")
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", err(&o));
    let mut vars: Vec<String> = out(&o)
        .lines()
        .map(|l| l.split('=').next().unwrap().to_string())
        .collect();
    vars.sort();
    assert_eq!(vars, ["ASKED", "HOME", "PATH", "TERM"], "{}", out(&o));
    assert!(out(&o).contains("HOME=/root\n"), "{}", out(&o));
    assert!(out(&o).contains("TERM=xterm-test\n"), "{}", out(&o));

    // --env-host passes it all.
    let o = env
        .run_cmd(&["--env-host", "--", "env"])
        .env("OPERATOR_TOKEN", "hunter2")
        .output()
        .unwrap();
    assert!(out(&o).contains("OPERATOR_TOKEN=hunter2\n"), "{}", out(&o));
}

#[test]
fn the_operators_session_keyring_does_not_reach_the_workload() {
    let _g = moat_tests::cgroup_layout_lock(false);
    let Some(env) = RunEnv::new("keys") else {
        return;
    };
    let hostile = binary("hostile");
    // moat runs in a session keyring holding the operator's key (the
    // default profile refuses keyctl, so the workload runs unconfined).
    let mut c = env.run_cmd(&[
        "--seccomp-profile",
        "unconfined",
        "--user",
        "65534",
        "--",
        hostile.to_str().unwrap(),
        "key",
        "moat-operator-key",
    ]);
    // SAFETY: keyctl and add_key are plain system calls.
    unsafe {
        c.pre_exec(|| {
            const KEYCTL_JOIN_SESSION_KEYRING: libc::c_long = 1;
            const KEY_SPEC_SESSION_KEYRING: libc::c_long = -3;
            if libc::syscall(
                libc::SYS_keyctl,
                KEYCTL_JOIN_SESSION_KEYRING,
                std::ptr::null::<u8>(),
            ) < 0
            {
                return Err(std::io::Error::last_os_error());
            }
            let payload = b"operator-secret";
            let id = libc::syscall(
                libc::SYS_add_key,
                c"user".as_ptr(),
                c"moat-operator-key".as_ptr(),
                payload.as_ptr(),
                payload.len(),
                KEY_SPEC_SESSION_KEYRING,
            );
            if id < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let o = c.stdin(Stdio::null()).output().unwrap();
    assert!(
        !out(&o).contains("operator-secret"),
        "the workload read the operator's key: {}",
        out(&o)
    );
    assert!(err(&o).contains("hostile: key"), "{}", err(&o));
}

/// The workload's processes (by exact command line) on the host.
fn running(cmdline: &str) -> Vec<i32> {
    let mut found = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        if let Ok(c) = std::fs::read(format!("/proc/{pid}/cmdline")) {
            if c.split(|b| *b == 0)
                .filter(|w| !w.is_empty())
                .map(|w| String::from_utf8_lossy(w).into_owned())
                .collect::<Vec<_>>()
                .join(" ")
                == cmdline
            {
                found.push(pid);
            }
        }
    }
    found
}

#[test]
fn a_killed_supervisor_leaves_no_workload_running() {
    let _g = moat_tests::cgroup_layout_lock(false);
    let Some(env) = RunEnv::new("orphan") else {
        return;
    };
    for (i, extra) in [vec![], vec!["--pid", "host"]].into_iter().enumerate() {
        let secs = (6000 + std::process::id() % 1000 + i as u32 * 1000).to_string();
        let marker = format!("sleep {secs}");
        let mut args = extra.clone();
        args.extend(["--", "sleep", &secs]);
        let mut moat = env.run_cmd(&args).stdin(Stdio::null()).spawn().unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while running(&marker).is_empty() {
            assert!(Instant::now() < deadline, "the workload did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        // The supervisor dies (OOM killer, kill -9 by an operator).
        moat.kill().unwrap();
        moat.wait().unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        let left = loop {
            let left = running(&marker);
            if left.is_empty() || Instant::now() > deadline {
                break left;
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        for pid in &left {
            // SAFETY: cleaning up after a failed check.
            unsafe { libc::kill(*pid, libc::SIGKILL) };
        }
        assert_eq!(
            left,
            Vec::<i32>::new(),
            "{extra:?}: the workload outlived its supervisor"
        );
    }
}

#[test]
fn the_working_directory_is_moats_by_path_or_the_root() {
    let _g = moat_tests::cgroup_layout_lock(false);
    let Some(env) = RunEnv::new("cwd") else {
        return;
    };
    let private = env.dir.join("private");
    std::fs::create_dir(&private).unwrap();
    std::fs::set_permissions(&private, std::fs::Permissions::from_mode(0o700)).unwrap();
    let pwd = |args: &[&str]| {
        let o = env.run_cmd(args).current_dir(&private).output().unwrap();
        assert!(o.status.success(), "{args:?}: {}", err(&o));
        out(&o)
    };
    assert_eq!(pwd(&["--", "pwd"]), format!("{}\n", private.display()));
    // A user who cannot reach moat's directory starts in /.
    assert_eq!(
        pwd(&["--userns", "auto", "--user", "1000", "--", "pwd"]),
        "/\n"
    );
}
