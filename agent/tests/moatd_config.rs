//! moatd refuses a bad configuration at start, with the file, the key and the
//! reason on one line, and exits 2; the example configuration is accepted.
//! Unprivileged: the configuration is checked before anything needs root.

mod moatd_common;

use std::{path::Path, process::Command};

use moatd_common::temp_dir;

/// Runs moatd with `args`; returns its exit code and stderr.
fn moatd(args: &[&str]) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_moatd"))
        .args(args)
        .output()
        .expect("running moatd");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Writes `text` as a config file and runs `moatd --config FILE --check-config`
/// and plain `moatd --config FILE` (which must fail the same way before loading
/// anything).
fn refused(name: &str, text: &str) -> String {
    let tmp = temp_dir(&format!("config-{name}"));
    let dir = tmp.path();
    let file = dir.join("moatd.toml");
    std::fs::write(&file, text).unwrap();
    let path = file.to_str().unwrap();
    let (code, stderr) = moatd(&["--config", path, "--check-config"]);
    assert_eq!(code, 2, "{stderr}");
    let (code_run, stderr_run) = moatd(&["--config", path]);
    assert_eq!(code_run, 2, "{stderr_run}");
    assert_eq!(stderr_run, stderr);
    let line = stderr.trim_end().to_owned();
    assert_eq!(line.lines().count(), 1, "one line: {line}");
    line.replace(path, "FILE")
}

#[test]
fn wrong_type_names_file_key_and_reason() {
    assert_eq!(
        refused("type", "[audit]\nrate_limit = \"x\"\n"),
        "moatd: FILE: audit.rate_limit: invalid type: string \"x\", expected u32"
    );
    assert_eq!(
        refused("negative", "[workloads]\nmax_labels = -1\n"),
        "moatd: FILE: workloads.max_labels: invalid value: integer `-1`, expected usize"
    );
}

#[test]
fn unknown_keys_are_refused_with_a_suggestion() {
    assert_eq!(
        refused("typo", "[audit]\nfork_burst_treshold = 10\n"),
        "moatd: FILE: audit.fork_burst_treshold: unknown key; did you mean \
         `fork_burst_threshold`? (known keys here: log, rate_limit, rate_burst, fork_burst_threshold)"
    );
    assert_eq!(
        refused("section", "[metrics]\nlisten = \"127.0.0.1:1\"\n"),
        "moatd: FILE: metrics: unknown key (known keys here: http, audit, workloads, kernel, authz)"
    );
    assert!(
        refused("misplaced", "listen = \"127.0.0.1:1\"\n").starts_with(
            "moatd: FILE: listen: unknown key; did you mean `listen` in section `[http]`?"
        )
    );
}

/// A repeated key or table would silently override the first (a typo or an
/// attack in a daemon's policy): the toml crate refuses both, with the line.
#[test]
fn duplicate_keys_and_tables_are_refused() {
    assert_eq!(
        refused("dupkey", "[audit]\nrate_limit = 5\nrate_limit = 6\n"),
        "moatd: FILE:3:1: duplicate key"
    );
    assert_eq!(
        refused(
            "duptable",
            "[audit]\nrate_limit = 5\n[audit]\nrate_burst = 6\n"
        ),
        "moatd: FILE:3:2: duplicate key"
    );
}

#[test]
fn invalid_values_are_refused() {
    assert_eq!(
        refused("listen", "[http]\nlisten = \"localhost\"\n"),
        "moatd: FILE: http.listen: invalid socket address syntax"
    );
    assert_eq!(
        refused("parent", "[workloads]\nmoat_parent = \"../x\"\n"),
        "moatd: FILE: workloads.moat_parent: \"../x\": empty, `.` or `..` component"
    );
    let syntax = refused("syntax", "[audit]\nlog = \n");
    assert!(syntax.starts_with("moatd: FILE:2:"), "{syntax}");
}

#[test]
fn an_explicit_config_must_exist() {
    let (code, stderr) = moatd(&["--config", "/nonexistent/moatd.toml", "--check-config"]);
    assert_eq!(code, 2);
    assert_eq!(
        stderr.trim_end(),
        "moatd: /nonexistent/moatd.toml: no such file"
    );
}

#[test]
fn the_example_is_valid_and_flags_override_it() {
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("moatd.example.toml");
    let out = Command::new(env!("CARGO_BIN_EXE_moatd"))
        .args(["--config", example.to_str().unwrap(), "--check-config"])
        .args(["--listen", "127.0.0.1:9999", "--audit-log", "-"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let shown = String::from_utf8_lossy(&out.stdout);
    assert!(shown.contains("127.0.0.1:9999"), "{shown}");
    assert!(shown.contains("Stdout"), "{shown}");
    // A bad flag value is a usage error.
    let (code, stderr) = moatd(&["--listen", "nowhere", "--check-config"]);
    assert_eq!(code, 2, "{stderr}");
}

#[test]
fn help_documents_every_flag_and_signal() {
    let out = Command::new(env!("CARGO_BIN_EXE_moatd"))
        .arg("--help")
        .output()
        .unwrap();
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    for needle in [
        "--config",
        "--listen",
        "--audit-log",
        "--check-config",
        "--log",
        "SIGHUP",
        "SIGTERM",
        "/etc/moat/moatd.toml",
        "127.0.0.1:9740",
        "/var/log/moat/audit.jsonl",
        "Exit status",
    ] {
        assert!(help.contains(needle), "--help lacks {needle}:\n{help}");
    }
}

#[test]
fn a_config_that_is_not_a_small_regular_file_is_refused_at_once() {
    let tmp = temp_dir("config-special");
    let fifo = tmp.path().join("moatd.toml");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o644)).unwrap();
    let big = tmp.path().join("big.toml");
    std::fs::write(&big, format!("# {}\n", "x".repeat(2 << 20))).unwrap();
    for (path, reason) in [
        (fifo.to_str().unwrap(), "not a regular file"),
        ("/dev/zero", "not a regular file"),
        (big.to_str().unwrap(), "larger than 1048576 bytes"),
    ] {
        let started = std::time::Instant::now();
        let (code, stderr) = moatd(&["--config", path, "--check-config"]);
        assert!(
            started.elapsed() < std::time::Duration::from_secs(5),
            "{path}"
        );
        assert_eq!(code, 2, "{path}: {stderr}");
        assert!(
            stderr
                .trim_end()
                .starts_with(&format!("moatd: {path}: {reason}")),
            "{stderr}"
        );
    }
}
