//! `moat profile ...` driven as a user drives it: the built binary, real
//! files, exit codes and the exact error lines.

use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use moat_tests::moatd::TempDir;
use moat_tests::{binary, fixtures_dir, which};

fn moat(args: &[&str]) -> Output {
    Command::new(binary("moat"))
        .args(args)
        .output()
        .expect("run moat")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Writes `text` to `name` in `dir`; returns its path.
fn write(dir: &TempDir, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

#[test]
fn check_summarises_the_builtin_profile() {
    let o = moat(&["profile", "check", "default"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    assert!(
        out.contains("default action:     SCMP_ACT_ERRNO(EPERM)"),
        "{out}"
    );
    let line = |key: &str| {
        out.lines()
            .find(|l| l.starts_with(key))
            .unwrap_or_else(|| panic!("no {key} line in {out}"))
            .to_string()
    };
    let count = |key: &str| -> usize {
        line(key)
            .split_whitespace()
            .nth(2)
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("bad {key} line"))
    };
    assert!(count("allowed syscalls:") > 250);
    assert!(count("denied syscalls:") > 20);
    if std::env::consts::ARCH == "x86_64" {
        assert!(line("architectures:").contains("SCMP_ARCH_X86_64, SCMP_ARCH_X86, SCMP_ARCH_X32"));
        assert!(line("argument-filtered:").contains("clone, personality, socket"));
    }
}

#[test]
fn check_lists_denied_syscalls_and_capabilities_change_the_result() {
    let plain = stdout(&moat(&["profile", "check", "default", "--verbose"]));
    assert!(plain.contains("denied: mount -> errno(EPERM)"), "{plain}");
    assert!(plain.contains("denied: clone3 -> errno(ENOSYS)"), "{plain}");
    let admin = stdout(&moat(&[
        "profile",
        "check",
        "default",
        "--verbose",
        "--cap-add",
        "SYS_ADMIN",
    ]));
    assert!(!admin.contains("denied: mount ->"), "{admin}");
    assert!(admin.contains("allowed: ") && admin.contains(" mount "));
}

#[test]
fn show_prints_the_builtin_profile_which_checks_clean() {
    let o = moat(&["profile", "show", "default"]);
    assert!(o.status.success());
    let json: serde_json::Value = serde_json::from_slice(&o.stdout).expect("JSON");
    assert_eq!(json["defaultAction"], "SCMP_ACT_ERRNO");
    let dir = TempDir::new("show");
    let f = write(&dir, "default.json", &stdout(&o));
    let a = moat(&["profile", "compile", "default", "-o", "-"]);
    let b = moat(&["profile", "compile", f.to_str().unwrap(), "-o", "-"]);
    assert!(a.status.success() && b.status.success());
    assert_eq!(
        a.stdout, b.stdout,
        "shown JSON compiles to the same program"
    );
    let o = moat(&["profile", "show", "strict"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("no built-in profile named \"strict\""));
}

#[test]
fn compile_writes_native_sock_filter_arrays() {
    let dir = TempDir::new("compile");
    let out = dir.join("default.bpf");
    let o = moat(&[
        "profile",
        "compile",
        "default",
        "--output",
        out.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let bytes = std::fs::read(&out).unwrap();
    assert_eq!(bytes.len() % 8, 0);
    let prog = moat_runtime::seccomp::bpf::Program::from_bytes(&bytes).unwrap();
    // The last instruction of a libseccomp program is a return.
    assert_eq!(prog.0.last().unwrap().code, 0x06);
    let admin = dir.join("admin.bpf");
    let o = moat(&[
        "profile",
        "compile",
        "default",
        "-o",
        admin.to_str().unwrap(),
        "--cap-add",
        "CAP_SYS_ADMIN",
    ]);
    assert!(o.status.success());
    assert_ne!(std::fs::read(&admin).unwrap(), bytes);
    let tree = moat(&[
        "profile",
        "compile",
        "default",
        "-o",
        "-",
        "--dispatch",
        "tree",
    ]);
    let linear = moat(&[
        "profile",
        "compile",
        "default",
        "-o",
        "-",
        "--dispatch",
        "linear",
    ]);
    assert_ne!(tree.stdout, linear.stdout);
}

/// `-o` naming something other than a regular file (a FIFO here, as
/// `/dev/null` or `/proc/self/fd/N` would be) is written in place: the
/// bytes reach the reader and the FIFO is still a FIFO, not replaced by a
/// regular file.
#[test]
fn compile_writes_into_a_fifo_without_replacing_it() {
    use std::os::unix::fs::FileTypeExt;
    let dir = TempDir::new("compile-fifo");
    let fifo = dir.join("program.fifo");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    let reader = {
        let fifo = fifo.clone();
        std::thread::spawn(move || std::fs::read(fifo).unwrap())
    };
    let o = moat(&[
        "profile",
        "compile",
        "default",
        "-o",
        fifo.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    // Checked before joining: a replaced FIFO would leave the reader
    // blocked in open(2) forever.
    assert!(
        std::fs::symlink_metadata(&fifo)
            .unwrap()
            .file_type()
            .is_fifo(),
        "the FIFO was replaced"
    );
    let got = reader.join().unwrap();
    let expected = moat(&["profile", "compile", "default", "-o", "-"]).stdout;
    assert_eq!(got, expected, "the FIFO's reader got other bytes");
    assert_eq!(
        std::fs::read_dir(dir.path()).unwrap().count(),
        1,
        "a temporary file stayed"
    );
}

/// bubblewrap reads exactly this format from `--seccomp FD`; running a
/// command under it proves the bytes are a program the kernel accepts and
/// that it confines: `unshare --user` is refused by the default profile.
#[test]
fn bwrap_runs_a_command_under_the_compiled_program() {
    let Some(bwrap) = which("bwrap") else {
        eprintln!("SKIP: bwrap not installed (scripts/setup.sh installs bubblewrap)");
        return;
    };
    if !moat_tests::is_root() {
        eprintln!("SKIP: bwrap with --ro-bind needs root or unprivileged user namespaces");
        return;
    }
    let dir = TempDir::new("bwrap");
    let out = dir.join("default.bpf");
    assert!(
        moat(&["profile", "compile", "default", "-o", out.to_str().unwrap()])
            .status
            .success()
    );
    let run = |cmd: &str| {
        Command::new("sh")
            .arg("-c")
            .arg(format!(
                "exec {} --ro-bind / / --dev /dev --seccomp 3 -- /bin/sh -c '{cmd}' 3< {}",
                bwrap.display(),
                out.display()
            ))
            .output()
            .unwrap()
    };
    let ok = run("echo confined; grep ^Seccomp: /proc/self/status");
    assert!(ok.status.success(), "{}", stderr(&ok));
    assert_eq!(stdout(&ok), "confined\nSeccomp:\t2\n");
    let denied = run("unshare --user true");
    assert!(!denied.status.success());
    assert!(
        stderr(&denied).contains("Operation not permitted"),
        "{}",
        stderr(&denied)
    );
}

/// Each malformed profile gets one line naming the file, the field and the
/// reason, and exit code 1.
#[test]
fn bad_profiles_get_one_line_errors() {
    let dir = TempDir::new("bad");
    let cases: &[(&str, &str, &str)] = &[
        ("json.json", "{\n \"defaultAction\": \"SCMP_ACT_ERRNO\",\n}", "invalid JSON at line 3, column 1: trailing comma"),
        ("action.json", r#"{"defaultAction":"SCMP_ACT_ERRNO","syscalls":[{"names":["read"],"action":"SCMP_ACT_PERMIT"}]}"#, "syscalls[0].action: unknown variant `SCMP_ACT_PERMIT`"),
        ("op.json", r#"{"defaultAction":"SCMP_ACT_ERRNO","syscalls":[{"names":["read"],"action":"SCMP_ACT_ALLOW","args":[{"index":0,"value":1,"op":"SCMP_CMP_LIKE"}]}]}"#, "syscalls[0].args[0].op: unknown variant `SCMP_CMP_LIKE`"),
        ("index.json", r#"{"defaultAction":"SCMP_ACT_ERRNO","syscalls":[{"names":["read"],"action":"SCMP_ACT_ALLOW","args":[{"index":7,"value":1,"op":"SCMP_CMP_EQ"}]}]}"#, "syscalls[0].args[0].index: argument index 7 is out of range"),
        ("arch.json", r#"{"defaultAction":"SCMP_ACT_ERRNO","architectures":["SCMP_ARCH_X86_64"],"archMap":[{"architecture":"SCMP_ARCH_X86_64"}]}"#, "archMap: both 'architectures' and 'archMap' are given"),
        ("errno.json", r#"{"defaultAction":"SCMP_ACT_ERRNO","syscalls":[{"names":["read"],"action":"SCMP_ACT_ALLOW","errnoRet":1}]}"#, "syscalls[0].errnoRet: errno 1 given for SCMP_ACT_ALLOW"),
        ("field.json", r#"{"defaultAction":"SCMP_ACT_ERRNO","defaultErrnoRett":1}"#, "defaultErrnoRett: unknown field \"defaultErrnoRett\"; did you mean \"defaultErrnoRet\"?"),
        ("names.json", r#"{"defaultAction":"SCMP_ACT_ERRNO","syscalls":[{"names":[],"action":"SCMP_ACT_ALLOW"}]}"#, "syscalls[0].names: no syscall names"),
        // serde_json keeps the last of two equal keys: an allow-all profile.
        ("dup.json", r#"{"defaultAction":"SCMP_ACT_ERRNO","defaultAction":"SCMP_ACT_ALLOW"}"#, "defaultAction: duplicate key (line 1); each key may appear once per object"),
        ("dup2.json", "{\"defaultAction\":\"SCMP_ACT_ERRNO\",\"syscalls\":[{\"names\":[\"a\"],\"action\":\"SCMP_ACT_ALLOW\"},\n{\"names\":[\"b\"],\"action\":\"SCMP_ACT_ERRNO\",\"action\":\"SCMP_ACT_ALLOW\"}]}", "syscalls[1].action: duplicate key (line 2)"),
    ];
    for (file, text, want) in cases {
        let path = write(&dir, file, text);
        for cmd in ["check", "compile"] {
            let mut args = vec!["profile", cmd, path.to_str().unwrap()];
            let out = dir.join("out.bpf");
            if cmd == "compile" {
                args.extend(["-o", out.to_str().unwrap()]);
            }
            let o = moat(&args);
            assert_eq!(o.status.code(), Some(1), "{file}: {}", stderr(&o));
            let err = stderr(&o);
            let expected = format!("moat: error: {}: {want}", path.display());
            assert!(
                err.starts_with(&expected),
                "{file}:\n got {err:?}\nwant {expected:?}"
            );
            assert_eq!(err.lines().count(), 1, "one line: {err:?}");
            assert!(!out.exists(), "nothing written on error");
            assert!(o.stdout.is_empty());
        }
    }
}

#[test]
fn missing_file_and_bad_capability_are_clear_errors() {
    let o = moat(&["profile", "check", "/nonexistent/p.json"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o)
        .starts_with("moat: error: /nonexistent/p.json: cannot read profile: No such file"));
    let o = moat(&["profile", "check", "default", "--cap-add", "SYS_ADMN"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("unknown capability \"SYS_ADMN\" (did you mean CAP_SYS_ADMIN?)"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn strict_mode_refuses_unknown_syscalls() {
    let dir = TempDir::new("strict");
    let p = write(
        &dir,
        "p.json",
        r#"{"defaultAction":"SCMP_ACT_ERRNO","syscalls":[{"names":["read","frobnicate"],"action":"SCMP_ACT_ALLOW"}]}"#,
    );
    let lax = moat(&["profile", "check", p.to_str().unwrap()]);
    assert!(lax.status.success());
    assert!(
        stdout(&lax).contains("warning: syscalls[0].names[1]: syscall \"frobnicate\" is unknown")
    );
    let strict = moat(&["profile", "check", "--strict", p.to_str().unwrap()]);
    assert_eq!(strict.status.code(), Some(1));
    assert!(stderr(&strict).contains(": syscalls[0].names[1]: unknown syscall \"frobnicate\""));
}

#[test]
fn every_fixture_profile_checks() {
    let Some(dir) = fixtures_dir() else {
        eprintln!("SKIP: ../shared/fixtures not found");
        return;
    };
    let mut seen = 0;
    for e in std::fs::read_dir(&dir).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "json") {
            let o = moat(&["profile", "check", p.to_str().unwrap()]);
            assert!(o.status.success(), "{}: {}", p.display(), stderr(&o));
            seen += 1;
        }
    }
    assert!(seen >= 5, "expected the five fixture profiles, saw {seen}");
}

#[test]
fn help_documents_every_subcommand() {
    let o = moat(&["profile", "--help"]);
    let h = stdout(&o);
    for sub in ["check", "compile", "show"] {
        assert!(h.contains(sub), "{h}");
    }
    let o = moat(&["profile", "compile", "--help"]);
    let h = stdout(&o);
    for flag in [
        "--output",
        "--cap-add",
        "--cap-drop",
        "--strict",
        "--dispatch",
    ] {
        assert!(h.contains(flag), "{h}");
    }
}

/// Runs `moat ARGS` with `stdin` fed in, killing it after `limit`; returns
/// the output, the CPU time it used (user + system: unlike wall time, not
/// inflated by other tests running at the same time) and its peak RSS in
/// KiB, both from wait4.
fn timed(args: &[&str], stdin: Option<&[u8]>, limit: Duration) -> (Output, Duration, i64) {
    use std::io::{Read, Write};
    use std::os::unix::process::ExitStatusExt;
    let start = Instant::now();
    // Reaped by the wait4 loop below, which also reads its resource usage.
    #[allow(clippy::zombie_processes)]
    let mut child = Command::new(binary("moat"))
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run moat");
    if let Some(data) = stdin {
        let mut w = child.stdin.take().unwrap();
        let data = data.to_vec();
        std::thread::spawn(move || {
            let _ = w.write_all(&data);
        });
    }
    let (mut out, mut err) = (child.stdout.take().unwrap(), child.stderr.take().unwrap());
    let reader = std::thread::spawn(move || {
        let (mut o, mut e) = (Vec::new(), Vec::new());
        let _ = out.read_to_end(&mut o);
        let _ = err.read_to_end(&mut e);
        (o, e)
    });
    let pid = child.id() as libc::pid_t;
    let mut status = 0;
    // SAFETY: rusage is plain data; all zeroes is a valid value.
    let mut usage = unsafe { std::mem::zeroed::<libc::rusage>() };
    loop {
        // SAFETY: wait4 on our own child with valid out-pointers.
        let r = unsafe { libc::wait4(pid, &mut status, libc::WNOHANG, &mut usage) };
        if r == pid {
            break;
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            panic!("moat {args:?} still running after {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    let cpu = tv(usage.ru_utime) + tv(usage.ru_stime);
    let (stdout, stderr) = reader.join().unwrap();
    let o = Output {
        status: std::process::ExitStatus::from_raw(status),
        stdout,
        stderr,
    };
    (o, cpu, usage.ru_maxrss)
}

/// `/dev/zero` was read until memory ran out, a FIFO without a writer hung
/// moat, and a path was the only way to give a profile: now a profile is a
/// regular file of at most 16 MiB, or standard input when the path is `-`.
#[test]
fn profile_files_are_read_with_bounds() {
    let dir = TempDir::new("bounds");
    let fifo = dir.join("fifo.json");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    let big = dir.join("big.json");
    std::fs::File::create(&big)
        .unwrap()
        .set_len((16 << 20) + 1)
        .unwrap();
    let out = dir.join("out.bpf");
    let cases = [
        (
            "/dev/zero".to_string(),
            "not a regular file (a character device)".to_string(),
        ),
        (
            fifo.display().to_string(),
            "not a regular file (a FIFO)".to_string(),
        ),
        (
            dir.path().display().to_string(),
            "not a regular file (a directory)".to_string(),
        ),
        (
            big.display().to_string(),
            "profile is 16777217 bytes; the limit is 16777216 bytes (16 MiB)".to_string(),
        ),
    ];
    for (path, want) in &cases {
        for args in [
            vec!["profile", "check", path.as_str()],
            vec![
                "profile",
                "compile",
                path.as_str(),
                "-o",
                out.to_str().unwrap(),
            ],
        ] {
            let (o, took, rss) = timed(&args, None, Duration::from_secs(10));
            assert_eq!(o.status.code(), Some(1), "{args:?}: {}", stderr(&o));
            assert_eq!(
                stderr(&o),
                format!("moat: error: {path}: {want}; a profile must be a regular file, or `-` for standard input\n")
                    .replace("; the limit is 16777216 bytes (16 MiB); a profile must be a regular file, or `-` for standard input", "; the limit is 16777216 bytes (16 MiB)"),
                "{args:?}"
            );
            assert!(took < Duration::from_secs(5), "{args:?} took {took:?}");
            assert!(rss < 100 << 10, "{args:?} used {rss} KiB");
            assert!(!out.exists());
        }
    }
}

#[test]
fn standard_input_is_read_only_for_dash_and_within_the_cap() {
    let profile = br#"{"defaultAction":"SCMP_ACT_ERRNO","syscalls":[{"names":["read"],"action":"SCMP_ACT_ALLOW"}]}"#;
    let (o, _, _) = timed(
        &["profile", "check", "-"],
        Some(profile),
        Duration::from_secs(30),
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stdout(&o).starts_with("profile:            <standard input>\n"),
        "{}",
        stdout(&o)
    );
    // A pipe named by path is not a regular file: stdin only as `-`.
    let (o, _, _) = timed(
        &["profile", "check", "/dev/stdin"],
        Some(profile),
        Duration::from_secs(30),
    );
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("/dev/stdin: not a regular file (a FIFO)"),
        "{}",
        stderr(&o)
    );
    let endless = vec![b' '; (16 << 20) + 10];
    let (o, _, rss) = timed(
        &["profile", "check", "-"],
        Some(&endless),
        Duration::from_secs(30),
    );
    assert_eq!(
        stderr(&o),
        "moat: error: <standard input>: profile is larger than the limit of 16777216 bytes (16 MiB)\n"
    );
    assert!(rss < 100 << 10, "used {rss} KiB");
}

/// A rule naming `read` 1,000,000 times (8 MB) did not finish in 120 s and
/// took 400 MB: libseccomp's rule insertion is quadratic in repeats. It is
/// handed each name once now.
#[test]
fn a_million_repeated_names_check_in_linear_time() {
    let dir = TempDir::new("repeats");
    let names = vec!["\"read\""; 1_000_000].join(",");
    let text = format!(
        r#"{{"defaultAction":"SCMP_ACT_ERRNO","syscalls":[{{"names":[{names}],"action":"SCMP_ACT_ALLOW"}}]}}"#
    );
    let p = write(&dir, "p.json", &text);
    let (o, took, rss) = timed(
        &["profile", "check", p.to_str().unwrap()],
        None,
        Duration::from_secs(60),
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stdout(&o).contains("allowed syscalls:   1\n"),
        "{}",
        stdout(&o)
    );
    eprintln!(
        "1,000,000 repeated names: {took:?} of CPU, peak RSS {} MiB",
        rss >> 10
    );
    assert!(took < Duration::from_secs(5), "took {took:?} of CPU");
    assert!(rss < 300 << 10, "peak RSS {rss} KiB");
}

/// Distinct conditions are not repeats: libseccomp takes seconds per
/// thousands of them on one syscall (10,000 took 16 s), and no filter with
/// more than 4096 rules fits the kernel. Such a profile is refused at once.
#[test]
fn too_many_distinct_rules_are_refused_quickly() {
    let dir = TempDir::new("distinct");
    let rules: Vec<String> = (0..10_000)
        .map(|i| format!(r#"{{"names":["read"],"action":"SCMP_ACT_ALLOW","args":[{{"index":0,"value":{i},"op":"SCMP_CMP_EQ"}}]}}"#))
        .collect();
    let text = format!(
        r#"{{"defaultAction":"SCMP_ACT_ERRNO","syscalls":[{}]}}"#,
        rules.join(",")
    );
    let p = write(&dir, "p.json", &text);
    let (o, took, _) = timed(
        &["profile", "check", p.to_str().unwrap()],
        None,
        Duration::from_secs(60),
    );
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).starts_with(&format!(
            "moat: error: {}: syscalls[4096]: the profile needs more than 4096 distinct rules on SCMP_ARCH_X86_64",
            p.display()
        )),
        "{}",
        stderr(&o)
    );
    assert!(took < Duration::from_secs(5), "took {took:?}");
}

/// `moat profile check` says when a condition compares bits the kernel
/// never reads, compares a pointer, and which multiplexed calls it refuses.
#[test]
fn check_warns_about_conditions_the_kernel_reads_differently() {
    if std::env::consts::ARCH != "x86_64" {
        eprintln!("SKIP: the warnings name x86_64 prototypes");
        return;
    }
    let dir = TempDir::new("widths");
    let p = write(
        &dir,
        "p.json",
        r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[
          {"names":["socket"],"action":"SCMP_ACT_ERRNO","args":[{"index":0,"value":4294967336,"op":"SCMP_CMP_EQ"}]},
          {"names":["ioctl"],"action":"SCMP_ACT_ERRNO","args":[{"index":1,"value":21522,"op":"SCMP_CMP_EQ"}]},
          {"names":["openat"],"action":"SCMP_ACT_ERRNO","args":[{"index":1,"value":4096,"op":"SCMP_CMP_EQ"}]}]}"#,
    );
    let o = moat(&["profile", "check", p.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    assert!(out.contains("warnings:           2\n"), "{out}");
    assert!(out.contains(
        "  warning: syscalls[0].args[0]: argument 0 of socket is 32 bits wide, so the value 0x100000028 has bits above them set, which the kernel never sees: this condition never holds\n"
    ), "{out}");
    assert!(out.contains(
        "  warning: syscalls[2].args[0]: argument 1 of openat is a pointer: the filter compares the address, never the data it points to\n"
    ), "{out}");
    let o = moat(&["profile", "check", "default"]);
    assert!(stdout(&o).contains(
        "  note: on SCMP_ARCH_X86, socketcall(2) refuses socket with ENOSYS: the profile filters their arguments, which socketcall passes behind a pointer\n"
    ), "{}", stdout(&o));
}

/// `moat run --seccomp-profile` reads its file the same way, and fails
/// before starting anything (exit 125, no workload record).
#[test]
fn run_reads_its_profile_with_the_same_bounds() {
    if !moat_tests::is_root() {
        eprintln!("SKIP: moat run needs root");
        return;
    }
    let dir = TempDir::new("run-bounds");
    let fifo = dir.join("fifo.json");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    let state = dir.join("state");
    for (path, want) in [
        ("/dev/zero", "/dev/zero: not a regular file (a character device)".to_string()),
        (fifo.to_str().unwrap(), format!("{}: not a regular file (a FIFO)", fifo.display())),
        ("-", "<standard input>: cannot read profile: a profile cannot be read from standard input here; give a file".to_string()),
    ] {
        let mut child = Command::new(binary("moat"))
            .env("MOAT_STATE_DIR", &state)
            .args(["run", "--cgroup-parent", &format!("moat-t-rb-{}", std::process::id())])
            .args(["--seccomp-profile", path, "--", "true"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let start = Instant::now();
        while child.try_wait().unwrap().is_none() {
            assert!(start.elapsed() < Duration::from_secs(10), "{path}: moat run hangs");
            std::thread::sleep(Duration::from_millis(10));
        }
        let o = child.wait_with_output().unwrap();
        assert_eq!(o.status.code(), Some(125), "{path}");
        assert!(stderr(&o).starts_with(&format!("moat: error: {want}")), "{path}: {}", stderr(&o));
        let records = std::fs::read_dir(state.join("workloads")).map(|d| d.count()).unwrap_or(0);
        assert_eq!(records, 0, "{path}: a workload record was left");
    }
}
