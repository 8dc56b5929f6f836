//! The shipped unit file `agent/systemd/moatd.service` is valid for systemd
//! and stays hardened: `systemd-analyze verify` accepts it and
//! `systemd-analyze security --offline` rates its exposure at most 3.6 (what it
//! was when the unit gained `Type=notify`, the watchdog and its resource
//! limits: a change that weakens it fails here). It is a `Type=notify` service
//! with a watchdog and memory, CPU and task limits. The authorization plugin's
//! socket unit `moatd-authz.socket` verifies with it and agrees with moatd's
//! defaults. Skips when systemd-analyze is not installed.

use std::path::PathBuf;
use std::process::Command;

/// A copy of the unit (in a temporary directory, removed on drop) whose
/// `ExecStart` is the binary under test.
fn unit_with_binary() -> Option<(tempfile::TempDir, PathBuf)> {
    if Command::new("systemd-analyze")
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!("SKIP: systemd-analyze not installed (Debian package systemd)");
        return None;
    }
    let unit = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("systemd/moatd.service");
    let text = std::fs::read_to_string(&unit).unwrap();
    // verify checks that ExecStart exists; point it at the binary under test.
    let text = text.replace("/usr/local/bin/moatd", env!("CARGO_BIN_EXE_moatd"));
    let dir = tempfile::Builder::new()
        .prefix("moatd-unit-")
        .tempdir()
        .unwrap();
    let copy = dir.path().join("moatd.service");
    std::fs::write(&copy, text).unwrap();
    Some((dir, copy))
}

#[test]
fn unit_file_verifies_and_is_hardened() {
    let Some((_dir, unit)) = unit_with_binary() else {
        return;
    };
    let v = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&unit)
        .output()
        .unwrap();
    assert!(
        v.status.success() && v.stderr.is_empty(),
        "systemd-analyze verify: {}",
        String::from_utf8_lossy(&v.stderr)
    );
    let s = Command::new("systemd-analyze")
        .args(["security", "--offline=yes", "--threshold=40"])
        .arg(&unit)
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&s.stdout);
    assert!(s.status.success(), "exposure above 4.0:\n{out}");
    let level = out
        .lines()
        .find_map(|l| l.split("Overall exposure level for moatd.service: ").nth(1))
        .and_then(|r| r.split_whitespace().next())
        .and_then(|n| n.parse::<f64>().ok())
        .unwrap_or_else(|| panic!("no exposure level in:\n{out}"));
    assert!(level <= 3.6, "exposure {level} is above 3.6:\n{out}");
}

#[test]
fn unit_file_is_notify_with_watchdog_and_limits() {
    let unit = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("systemd/moatd.service");
    let text = std::fs::read_to_string(&unit).unwrap();
    let settings: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.starts_with('#') && l.contains('='))
        .collect();
    for expected in [
        "Type=notify",
        "NotifyAccess=main",
        "WatchdogSec=30s",
        "Restart=on-failure",
        "MemoryHigh=128M",
        "MemoryMax=256M",
        "CPUQuota=50%",
        "TasksMax=64",
    ] {
        assert!(
            settings.contains(&expected),
            "{} lacks {expected}",
            unit.display()
        );
    }
}

/// `moatd-authz.socket` verifies together with the service it activates,
/// and agrees with moatd: the path is `authz.socket`'s default, the
/// descriptor's name is the one moatd takes, only root may connect, and the
/// service inherits it (socket activation) rather than the socket being
/// stopped with it.
#[test]
fn socket_unit_verifies_and_matches_moatd() {
    let Some((dir, _unit)) = unit_with_binary() else {
        return;
    };
    let socket = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("systemd/moatd-authz.socket");
    let text = std::fs::read_to_string(&socket).unwrap();
    let copy = dir.path().join("moatd-authz.socket");
    std::fs::write(&copy, &text).unwrap();
    let v = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&copy)
        .arg(dir.path().join("moatd.service"))
        .output()
        .unwrap();
    assert!(
        v.status.success() && v.stderr.is_empty(),
        "systemd-analyze verify: {}",
        String::from_utf8_lossy(&v.stderr)
    );
    let setting = |key: &str| -> Vec<String> {
        text.lines()
            .filter_map(|l| l.trim().strip_prefix(&format!("{key}=")))
            .map(str::to_owned)
            .collect()
    };
    let default = moat_agent::config::AuthzConfig::default();
    assert_eq!(
        setting("ListenStream"),
        [default.socket.display().to_string()]
    );
    assert_eq!(
        setting("FileDescriptorName"),
        [moat_agent::authz::systemd::FD_NAME]
    );
    assert_eq!(setting("SocketMode"), ["0600"]);
    assert_eq!(setting("SocketUser"), ["root"]);
    assert_eq!(setting("Service"), ["moatd.service"]);
    assert_eq!(setting("Accept"), ["no"]);
    assert!(
        setting("PartOf").is_empty() && setting("BindsTo").is_empty(),
        "the socket must outlive a moatd restart"
    );

    let dropin =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("systemd/docker.service.d/moat-authz.conf");
    let dropin = std::fs::read_to_string(dropin).unwrap();
    for line in ["Requires=moatd-authz.socket", "After=moatd-authz.socket"] {
        assert!(dropin.lines().any(|l| l == line), "drop-in lacks {line}");
    }
}
