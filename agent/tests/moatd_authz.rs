//! `moatd` with `[authz]`, as an operator meets it: `--check-config` checks
//! the policy file too; a policy that does not load stops moatd before it
//! serves anything (exit 2, naming the file, the key and the reason); the
//! plugin's socket is refused when another moatd serves it, replaced when a
//! dead one left it, and removed at exit; a socket passed by systemd is
//! checked (bound where `authz.socket` says) and refused when the plugin is
//! disabled; the `moat_authz_*` families are served (text and OpenMetrics)
//! and pass `promtool check metrics`.
//!
//! The tests that start moatd load its eBPF programs: root only (`SKIP`
//! otherwise).

mod moatd_common;

use std::{
    os::unix::{fs::PermissionsExt as _, net::UnixListener},
    path::{Path, PathBuf},
    process::{Command, Output},
    time::Duration,
};

use moat_tests::authz::{post, spawn_with_listen_fd};
use moatd_common::{not_root, spawn_moatd, temp_dir};

const MOATD: &str = env!("CARGO_BIN_EXE_moatd");

/// A configuration with the plugin enabled on `socket` and `policy`.
fn config(dir: &Path, socket: &Path, policy: &Path, enabled: bool) -> PathBuf {
    let path = dir.join("moatd.toml");
    std::fs::write(
        &path,
        format!(
            "[audit]\nlog = \"{}\"\n[authz]\nenabled = {enabled}\nsocket = \"{}\"\npolicy = \"{}\"\n\
             docker_socket = \"{}\"\n",
            dir.join("audit.jsonl").display(),
            socket.display(),
            policy.display(),
            dir.join("docker.sock").display()
        ),
    )
    .unwrap();
    path
}

fn check_config(config: &Path) -> Output {
    Command::new(MOATD)
        .arg("--config")
        .arg(config)
        .arg("--check-config")
        .output()
        .unwrap()
}

#[test]
fn check_config_checks_the_policy_file() {
    let dir = temp_dir("authz-check");
    let socket = dir.path().join("moat.sock");
    let policy = dir.path().join("policy.toml");
    let cfg = config(dir.path(), &socket, &policy, true);

    // Missing: the baseline.
    let out = check_config(&cfg);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    assert!(
        stdout.contains("authorization policy: baseline (sha256 "),
        "{stdout}"
    );

    std::fs::write(
        &policy,
        "extends = \"baseline\"\n[[rule]]\nname = \"no-srv\"\ncheck = \"host-paths\"\n\
         paths = [\"/srv\"]\nmessage = \"not /srv\"\n",
    )
    .unwrap();
    let out = check_config(&cfg);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    assert!(
        stdout.contains(&format!(
            "authorization policy: {} (sha256 ",
            policy.display()
        )),
        "{stdout}"
    );

    std::fs::write(
        &policy,
        "[[rule]]\nname = \"x\"\ncheck = \"privilegd\"\nmessage = \"m\"\n",
    )
    .unwrap();
    let out = check_config(&cfg);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "moatd: authorization policy (authz.policy): {}:3:9: rule[0].check: unknown check \"privilegd\"",
            policy.display()
        )),
        "{stderr}"
    );

    std::fs::write(
        &policy,
        "[[rule]]\nname = \"x\"\ncheck = \"privileged\"\nmessage = \"m\"\n",
    )
    .unwrap();
    std::fs::set_permissions(&policy, std::fs::Permissions::from_mode(0o666)).unwrap();
    let out = check_config(&cfg);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("lets other users write it"), "{stderr}");

    // Disabled: the policy file is not the plugin's business.
    let cfg = config(dir.path(), &socket, &policy, false);
    assert!(check_config(&cfg).status.success());
}

#[test]
fn a_broken_policy_stops_moatd_before_it_serves() {
    let dir = temp_dir("authz-broken");
    let socket = dir.path().join("moat.sock");
    let policy = dir.path().join("policy.toml");
    std::fs::write(&policy, "[[rule]]\n").unwrap();
    let cfg = config(dir.path(), &socket, &policy, true);
    let out = Command::new(MOATD)
        .arg("--config")
        .arg(&cfg)
        .args(["--listen", "127.0.0.1:0"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "authorization policy (authz.policy): {}",
            policy.display()
        )),
        "{stderr}"
    );
    assert!(!socket.exists(), "nothing was served");
}

/// moatd with `cfg`, once it says it runs, and its `/metrics` address.
fn run_moatd(cfg: &Path) -> (std::process::Child, std::net::SocketAddr) {
    let (child, rx) = spawn_moatd(["--config", cfg.to_str().unwrap(), "--listen", "127.0.0.1:0"]);
    loop {
        let line = rx
            .recv_timeout(Duration::from_secs(30))
            .expect("moatd did not say it runs within 30 s");
        if line.contains(" running (pid ") {
            return (child, moatd_common::served_address(&line));
        }
    }
}

fn stop(mut child: std::process::Child) {
    // SAFETY: kill(2) on our own child's pid.
    unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
    let status = child.wait().unwrap();
    assert!(status.success(), "moatd exited with {status}");
}

#[test]
fn the_socket_is_replaced_when_stale_refused_when_live_and_removed_at_exit() {
    skip_if!(not_root());
    let dir = temp_dir("authz-socket");
    let socket = dir.path().join("moat.sock");
    let cfg = config(dir.path(), &socket, &dir.path().join("policy.toml"), true);

    // A socket left by a moatd that died.
    drop(UnixListener::bind(&socket).unwrap());
    let (first, addr) = run_moatd(&cfg);
    assert_eq!(
        post(&socket, "/Plugin.Activate", b"").unwrap(),
        (200, r#"{"Implements":["authz"]}"#.to_owned())
    );
    let mode = std::fs::metadata(&socket).unwrap().permissions().mode();
    assert_eq!(mode & 0o7777, 0o600);

    // A second moatd on the same socket.
    let out = Command::new(MOATD)
        .arg("--config")
        .arg(&cfg)
        .args(["--listen", "127.0.0.1:0"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("another process is serving this socket"),
        "{stderr}"
    );
    assert_eq!(post(&socket, "/Plugin.Activate", b"").unwrap().0, 200);

    // The plugin's families, in both formats, as Prometheus reads them.
    let text = moatd_common::get(addr, "/metrics").body;
    for family in [
        "# TYPE moat_authz_requests_total counter",
        "# TYPE moat_authz_request_duration_seconds histogram",
        "# TYPE moat_authz_policy_reloads_total counter",
        "# TYPE moat_authz_policy_info gauge",
    ] {
        assert!(text.contains(family), "no {family:?} in:\n{text}");
    }
    assert!(text.contains("moat_authz_request_duration_seconds_bucket{le=\"+Inf\"} 0"));
    assert!(text.contains("moat_authz_policy_info{mode=\"enforce\",source=\"baseline\",sha256=\""));
    promtool_check(&text);
    let om = moatd_common::request(
        addr,
        "GET",
        "/metrics",
        &[("Accept", "application/openmetrics-text; version=1.0.0")],
    )
    .unwrap()
    .body;
    assert!(om.contains("# TYPE moat_authz_request_duration_seconds histogram"));
    assert!(
        om.contains("moat_authz_request_duration_seconds_count 0"),
        "{om}"
    );
    assert!(om.ends_with("# EOF\n"));

    stop(first);
    assert!(!socket.exists(), "the socket is removed at exit");
}

#[test]
fn a_passed_socket_must_be_the_configured_one_and_the_plugin_enabled() {
    skip_if!(not_root());
    let dir = temp_dir("authz-fd");
    let configured = dir.path().join("moat.sock");
    let elsewhere = dir.path().join("elsewhere.sock");
    let held = UnixListener::bind(&elsewhere).unwrap();
    use std::os::fd::AsRawFd as _;

    let cfg = config(
        dir.path(),
        &configured,
        &dir.path().join("policy.toml"),
        true,
    );
    let child = spawn_with_listen_fd(
        Path::new(MOATD),
        ["--config", cfg.to_str().unwrap(), "--listen", "127.0.0.1:0"],
        held.as_raw_fd(),
    );
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "is bound to {}, but authz.socket is {}",
            elsewhere.display(),
            configured.display()
        )),
        "{stderr}"
    );

    let cfg = config(
        dir.path(),
        &elsewhere,
        &dir.path().join("policy.toml"),
        false,
    );
    let child = spawn_with_listen_fd(
        Path::new(MOATD),
        ["--config", cfg.to_str().unwrap(), "--listen", "127.0.0.1:0"],
        held.as_raw_fd(),
    );
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("systemd passed the authorization plugin's socket (moat-authz), but [authz] enabled is false"),
        "{stderr}"
    );
    assert!(elsewhere.exists(), "a passed socket is never removed");
}

/// `promtool check metrics` accepts the exposition (when installed).
fn promtool_check(body: &str) {
    use std::io::Write as _;
    let Ok(mut child) = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
    else {
        eprintln!("SKIP (promtool part): promtool is not installed (Debian package prometheus)");
        return;
    };
    child
        .stdin
        .take()
        .unwrap()
        .write_all(body.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success() && out.stdout.is_empty(),
        "promtool check metrics: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
