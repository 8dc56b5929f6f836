//! `moat profile ...` driven as a user drives it: the built binary, real
//! files, exit codes and the exact error lines.

use std::path::PathBuf;
use std::process::{Command, Output};

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
