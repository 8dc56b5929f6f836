//! The authorization plugin's life next to a real dockerd 20.10 and a real
//! moatd:
//!
//! 1. moatd stopped (it removes the socket it bound): Docker requests fail
//!    closed, with the daemon's "plugin NAME failed with error" once its
//!    retries (about 15 s) are spent; a request that arrives while moatd is
//!    down succeeds if moatd is back within them, and moatd restarted
//!    serves again;
//! 2. socket activation: the socket held the way systemd holds it
//!    (`LISTEN_FDS`), moatd started with it serves; moatd stopped leaves it
//!    in place, a request then waits in its backlog (nothing proceeds) and
//!    is answered by the next moatd;
//! 3. SIGHUP reloads the policy: a valid new file is in force for the next
//!    request; a broken one is logged and counted, and the policy in force
//!    (not the baseline) stays;
//! 4. audit mode allows what the policy denies and records an
//!    `authz_would_deny` event with the rule.
//!
//! Skipped (`SKIP: <reason>`) when not root or when docker.io or busybox is
//! missing.

use std::process::Command;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use moat_tests::authz::{sample, HeldSocket, PluginMoatd, PluginSetup};
use moat_tests::dockerd::{Dockerd, Raw, IMAGE};
use moat_tests::{binary, dockerd};

/// `GET /v1.41/containers/json` in a thread: the answer and how long it took.
fn list_in_background(d: &Dockerd) -> mpsc::Receiver<(Raw, Duration)> {
    let request =
        b"GET /v1.41/containers/json HTTP/1.1\r\nHost: d\r\nConnection: close\r\n\r\n".to_vec();
    let socket = d.socket().to_owned();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let started = Instant::now();
        let mut s = std::os::unix::net::UnixStream::connect(&socket).unwrap();
        use std::io::{Read as _, Write as _};
        s.write_all(&request).unwrap();
        let mut raw = Vec::new();
        s.read_to_end(&mut raw).unwrap();
        let text = String::from_utf8_lossy(&raw).into_owned();
        let status = text
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        let body = text.split_once("\r\n\r\n").map_or("", |(_, b)| b);
        let _ = tx.send((
            Raw {
                status,
                body: body.as_bytes().to_vec(),
            },
            started.elapsed(),
        ));
    });
    rx
}

fn phase(clock: &mut Instant, what: &str) {
    eprintln!("phase {what}: {:.1} s", clock.elapsed().as_secs_f64());
    *clock = Instant::now();
}

fn sha256(path: &std::path::Path) -> String {
    let out = Command::new("sha256sum").arg(path).output().unwrap();
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .to_owned()
}

#[test]
fn stop_restart_socket_activation_reload_and_audit_mode() {
    if let Some(reason) = dockerd::unavailable() {
        eprintln!("SKIP: {reason}");
        return;
    }
    let total = Instant::now();
    let mut clock = Instant::now();
    let moatd_bin = binary("moatd");
    let mut d = Dockerd::new("azl");
    d.start(&[]).expect("dockerd");
    d.import_busybox();
    d.stop();
    let mut setup = PluginSetup::new(d.dir(), d.socket());
    let plugin = setup.name.clone();
    let mut moatd = PluginMoatd::start(&moatd_bin, &setup, None).expect("moatd");
    d.start(&[&plugin]).expect("dockerd with the plugin");
    assert_eq!(d.call("GET", "/v1.41/containers/json", None).status, 200);
    phase(&mut clock, "start");

    // 1. moatd stopped: fails closed; restarted: serves.
    moatd.stop();
    assert!(!setup.socket.exists(), "moatd removed the socket it bound");
    let r = d.call("GET", "/v1.41/containers/json", None);
    eprintln!("with moatd stopped: {} {}", r.status, r.text().trim());
    assert_ne!(r.status, 200);
    assert!(
        r.text()
            .contains(&format!("plugin {plugin} failed with error")),
        "{}",
        r.text()
    );
    let waiting = list_in_background(&d);
    std::thread::sleep(Duration::from_millis(1500));
    let mut moatd = PluginMoatd::start(&moatd_bin, &setup, None).expect("moatd again");
    let (r, took) = waiting.recv_timeout(Duration::from_secs(30)).unwrap();
    eprintln!(
        "a request made while moatd was down: {} after {took:?}",
        r.status
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(d.call("GET", "/v1.41/containers/json", None).status, 200);
    phase(&mut clock, "1 (stopped: fails closed; restarted: serves)");

    // 2. Socket activation.
    moatd.stop();
    let held = HeldSocket::bind(&setup.socket);
    let mut moatd = PluginMoatd::start(&moatd_bin, &setup, Some(&held)).expect("moatd with fd");
    assert!(
        moatd.log().contains("socket passed by systemd"),
        "{}",
        moatd.log()
    );
    assert_eq!(d.call("GET", "/v1.41/containers/json", None).status, 200);
    moatd.stop();
    assert!(setup.socket.exists(), "the passed socket outlives moatd");
    let waiting = list_in_background(&d);
    std::thread::sleep(Duration::from_secs(2));
    assert!(
        waiting.try_recv().is_err(),
        "a request proceeded while no moatd ran"
    );
    let mut moatd = PluginMoatd::start(&moatd_bin, &setup, Some(&held)).expect("moatd with fd");
    let (r, took) = waiting.recv_timeout(Duration::from_secs(30)).unwrap();
    eprintln!(
        "a request queued in the held socket: {} after {took:?}",
        r.status
    );
    assert_eq!(r.status, 200, "{}", r.text());
    denied_create(&d, &plugin);
    phase(&mut clock, "2 (socket activation)");

    // 3. Reloads: a valid file applies; a broken one keeps the policy in
    // force (here the valid file, not the baseline).
    std::fs::write(
        &setup.policy,
        "extends = \"baseline\"\n\n[[exception]]\nrule = \"privileged\"\nreason = \"test\"\n",
    )
    .unwrap();
    let line = moatd.sighup();
    assert!(line.contains("authorization policy reloaded"), "{line}");
    let valid_sha = sha256(&setup.policy);
    let id = d.docker_ok(&["create", "--privileged", "--network", "none", IMAGE, "true"]);
    d.docker_ok(&["rm", &id]);
    std::fs::write(
        &setup.policy,
        "extends = \"baseline\"\n\n[[exception]]\nrule = \"privilegd\"\n",
    )
    .unwrap();
    let line = moatd.sighup();
    assert!(
        line.contains("not reloaded") && line.contains("privilegd"),
        "{line}"
    );
    let id = d.docker_ok(&["create", "--privileged", "--network", "none", IMAGE, "true"]);
    d.docker_ok(&["rm", &id]);
    let metrics = moatd.metrics();
    assert_eq!(
        sample(
            &metrics,
            "moat_authz_policy_reloads_total{result=\"success\"}"
        ),
        1.0
    );
    assert_eq!(
        sample(
            &metrics,
            "moat_authz_policy_reloads_total{result=\"failure\"}"
        ),
        1.0
    );
    let info = format!(
        "moat_authz_policy_info{{mode=\"enforce\",source=\"{}\",sha256=\"{valid_sha}\"}}",
        setup.policy.display()
    );
    assert_eq!(sample(&metrics, &info), 1.0, "{metrics}");
    phase(&mut clock, "3 (reloads)");

    // 4. Audit mode: allowed, and recorded.
    moatd.stop();
    std::fs::remove_file(&setup.policy).unwrap();
    setup.mode = "audit";
    let moatd = PluginMoatd::start(&moatd_bin, &setup, Some(&held)).expect("moatd, audit mode");
    let id = d.docker_ok(&["create", "--privileged", "--network", "none", IMAGE, "true"]);
    d.docker_ok(&["rm", &id]);
    d.docker_ok(&[
        "run",
        "--rm",
        "--network",
        "none",
        "--pids-limit",
        "-1",
        IMAGE,
        "true",
    ]);
    let metrics = moatd.metrics();
    assert_eq!(
        sample(
            &metrics,
            "moat_authz_requests_total{decision=\"would_deny\",endpoint=\"containers/create\"}"
        ),
        2.0
    );
    assert_eq!(
        sample(
            &metrics,
            "moat_authz_requests_total{decision=\"deny\",endpoint=\"containers/create\"}"
        ),
        0.0
    );
    let deadline = Instant::now() + Duration::from_secs(5);
    let rules = loop {
        let text = std::fs::read_to_string(setup.audit_log()).unwrap_or_default();
        let rules: Vec<String> = text
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter(|e| e["event"]["action"] == "authz_would_deny")
            .map(|e| e["authz"]["rule"].as_str().unwrap_or("").to_owned())
            .collect();
        if rules.len() >= 2 || Instant::now() > deadline {
            break rules;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(rules, ["privileged", "pids-unlimited"]);
    phase(&mut clock, "4 (audit mode)");

    drop(moatd);
    drop(d);
    drop(held);
    eprintln!("total: {:.1} s", total.elapsed().as_secs_f64());
}

/// A privileged create is denied by the plugin (enforce mode, baseline).
fn denied_create(d: &Dockerd, plugin: &str) {
    let out = d.docker(&["create", "--privileged", "--network", "none", IMAGE, "true"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success()
            && err.contains(&format!("authorization denied by plugin {plugin}: "))
            && err.contains("[rule: privileged]"),
        "{err}"
    );
}
