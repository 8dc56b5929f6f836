//! The authorization plugin in front of a real dockerd 20.10
//! (`--authorization-plugin`) and a real moatd, enforcing the built-in
//! baseline:
//!
//! 1. every baseline rule: the Docker CLI request is denied with the
//!    plugin's message (`authorization denied by plugin NAME: ... [rule:
//!    RULE]`), and the command without the offending option runs;
//! 2. raw API requests that fooled plugins or dockerd before (folded,
//!    duplicate and U+017F keys, chunked bodies, `Content-Length: 0`, other
//!    content types, path spellings, query strings, absolute-form targets):
//!    none creates a container;
//! 3. containers created before the plugin was enabled: `docker start` and
//!    `docker restart` of the privileged one are denied after the plugin
//!    inspected it; the plain one starts;
//! 4. a controlled sequence of requests moves `moat_authz_requests_total`
//!    by exactly what was asked (and the inspects moatd made), and every
//!    denial is one `authz_denied` audit event, readable with `moat events`.
//!
//! One dockerd serves all of it (its runtime is printed per phase). Skipped
//! (`SKIP: <reason>`) when not root or when docker.io or busybox is missing.

use std::path::Path;
use std::process::Command;
use std::time::Instant;

use moat_tests::authz::{authz_requests, sample, PluginMoatd, PluginSetup};
use moat_tests::dockerd::{Dockerd, IMAGE};
use moat_tests::{binary, dockerd};

/// `docker ARGS` must fail with the plugin's denial naming `rule`.
fn denied(d: &Dockerd, plugin: &str, args: &[&str], rule: &str) {
    let out = d.docker(args);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "docker {args:?} was not denied");
    assert!(
        err.contains(&format!("authorization denied by plugin {plugin}: "))
            && err.contains(&format!("[rule: {rule}]")),
        "docker {args:?}: expected a denial by rule {rule}, got: {err}"
    );
}

/// `docker run --rm --network none EXTRA IMAGE true`.
fn run_args<'a>(extra: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec!["run", "--rm", "--network", "none"];
    args.extend_from_slice(extra);
    args.extend_from_slice(&[IMAGE, "true"]);
    args
}

/// A baseline case of `docker run`: the offending options and the rule,
/// and the same command with a harmless value instead (`None`: without the
/// option, i.e. the plain run).
type RunCase = (Vec<String>, &'static str, Option<Vec<String>>);

fn run_cases(ok_dir: &str) -> Vec<RunCase> {
    let v = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    vec![
        (v(&["--privileged"]), "privileged", None),
        (
            v(&["--security-opt", "seccomp=unconfined"]),
            "seccomp-unconfined",
            Some(v(&["--security-opt", "no-new-privileges"])),
        ),
        // The colon forms dockerd still accepts (deprecated spellings).
        (
            v(&["--security-opt", "seccomp:unconfined"]),
            "seccomp-unconfined",
            None,
        ),
        (
            v(&["--security-opt", "apparmor=unconfined"]),
            "apparmor-unconfined",
            None,
        ),
        (
            v(&["--security-opt", "apparmor:unconfined"]),
            "apparmor-unconfined",
            None,
        ),
        (
            v(&["--security-opt", "label=disable"]),
            "selinux-disabled",
            None,
        ),
        (
            v(&["--security-opt", "systempaths=unconfined"]),
            "systempaths-unconfined",
            None,
        ),
        (
            v(&["--cap-add", "ALL"]),
            "capabilities",
            Some(v(&["--cap-add", "CHOWN"])),
        ),
        (
            v(&["--cap-add", "sys_admin"]),
            "capabilities",
            Some(v(&["--cap-drop", "ALL"])),
        ),
        (
            v(&["-v", "/etc:/x"]),
            "host-paths",
            Some(v(&["-v", &format!("{ok_dir}:/x")])),
        ),
        (
            v(&["--mount", "type=bind,src=/,dst=/host"]),
            "host-paths",
            Some(v(&[
                "--mount",
                &format!("type=bind,src={ok_dir},dst=/host"),
            ])),
        ),
        (
            v(&["-v", "/run/docker.sock:/var/run/docker.sock"]),
            "host-paths",
            None,
        ),
        (
            v(&[
                "--mount",
                "type=volume,dst=/x,volume-opt=type=none,volume-opt=o=bind,volume-opt=device=/etc",
            ]),
            "host-paths",
            Some(v(&["--mount", "type=volume,dst=/x"])),
        ),
        (v(&["--pid", "host"]), "host-namespaces", None),
        (v(&["--ipc", "host"]), "host-namespaces", None),
        (v(&["--uts", "host"]), "host-namespaces", None),
        (v(&["--cgroupns", "host"]), "host-namespaces", None),
        (v(&["--userns", "host"]), "host-userns", None),
        (v(&["--device", "/dev/null"]), "host-devices", None),
        (
            v(&["--device-cgroup-rule", "a *:* rwm"]),
            "host-devices",
            None,
        ),
        (
            v(&["--pids-limit", "-1"]),
            "pids-unlimited",
            Some(v(&["--pids-limit", "100"])),
        ),
    ]
}

fn phase(started: &mut Instant, what: &str) {
    eprintln!("phase {what}: {:.1} s", started.elapsed().as_secs_f64());
    *started = Instant::now();
}

#[test]
fn the_plugin_enforces_the_baseline_on_a_real_dockerd() {
    if let Some(reason) = dockerd::unavailable() {
        eprintln!("SKIP: {reason}");
        return;
    }
    let total = Instant::now();
    let mut clock = Instant::now();
    let mut d = Dockerd::new("az");

    // 0. Without the plugin: the image, and two containers created before
    // the node had a policy.
    d.start(&[]).expect("dockerd without the plugin");
    d.import_busybox();
    let legacy_priv = d.docker_ok(&[
        "create",
        "--name",
        "legacy-priv",
        "--network",
        "none",
        "--privileged",
        IMAGE,
        "true",
    ]);
    d.docker_ok(&[
        "create",
        "--name",
        "legacy-plain",
        "--network",
        "none",
        IMAGE,
        "true",
    ]);
    d.stop();
    phase(
        &mut clock,
        "0 (dockerd without the plugin, image, legacy containers)",
    );

    // The plugin, then dockerd asking it.
    let setup = PluginSetup::new(d.dir(), d.socket());
    let plugin = setup.name.clone();
    let moatd = PluginMoatd::start(&binary("moatd"), &setup, None).expect("moatd");
    d.start(&[&plugin]).expect("dockerd with the plugin");
    phase(&mut clock, "start (moatd, dockerd with the plugin)");

    // 1. Every baseline rule through the CLI.
    let ok_dir = d.dir().join("bind-ok");
    std::fs::create_dir_all(&ok_dir).unwrap();
    let ok_dir = ok_dir.display().to_string();
    d.docker_ok(&run_args(&[]));
    for (extra, rule, counterpart) in run_cases(&ok_dir) {
        let extra: Vec<&str> = extra.iter().map(String::as_str).collect();
        denied(&d, &plugin, &run_args(&extra), rule);
        if let Some(ok) = counterpart {
            let ok: Vec<&str> = ok.iter().map(String::as_str).collect();
            d.docker_ok(&run_args(&ok));
        }
    }
    denied(
        &d,
        &plugin,
        &["run", "--rm", "--network", "host", IMAGE, "true"],
        "host-namespaces",
    );
    // update, exec
    d.docker_ok(&[
        "run",
        "-d",
        "--name",
        "ex",
        "--stop-timeout",
        "1",
        "--network",
        "none",
        IMAGE,
        "sleep",
        "300",
    ]);
    denied(
        &d,
        &plugin,
        &["update", "--pids-limit", "-1", "ex"],
        "pids-unlimited",
    );
    d.docker_ok(&["update", "--pids-limit", "200", "ex"]);
    denied(
        &d,
        &plugin,
        &["exec", "--privileged", "ex", "true"],
        "privileged",
    );
    d.docker_ok(&["exec", "ex", "true"]);
    // volumes
    denied(
        &d,
        &plugin,
        &[
            "volume",
            "create",
            "--opt",
            "type=none",
            "--opt",
            "o=bind",
            "--opt",
            "device=/etc",
            "vbad",
        ],
        "host-paths",
    );
    d.docker_ok(&["volume", "create", "vok"]);
    // plugins: disabling this very plugin would take it out of the chain
    denied(&d, &plugin, &["plugin", "disable", &plugin], "plugins");
    denied(&d, &plugin, &["plugin", "enable", "other"], "plugins");
    denied(&d, &plugin, &["plugin", "rm", "other"], "plugins");
    denied(
        &d,
        &plugin,
        &["plugin", "set", "other", "DEBUG=1"],
        "plugins",
    );
    denied(
        &d,
        &plugin,
        &[
            "plugin",
            "install",
            "--grant-all-permissions",
            "vieux/sshfs",
        ],
        "plugins",
    );
    d.docker_ok(&["plugin", "ls"]);
    // swarm
    denied(
        &d,
        &plugin,
        &["swarm", "join", "--token", "SWMTKN-1-x", "127.0.0.1:2377"],
        "swarm-join",
    );
    denied(
        &d,
        &plugin,
        &[
            "service",
            "create",
            "--no-resolve-image",
            "--mount",
            "type=bind,src=/,dst=/host",
            IMAGE,
            "true",
        ],
        "host-paths",
    );
    let out = d.docker(&["service", "create", "--no-resolve-image", IMAGE, "true"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !err.contains("authorization denied") && err.contains("not a swarm manager"),
        "a plain service reaches the daemon: {err}"
    );
    // build (the classic builder: parameters in the query)
    let ctx = d.dir().join("build");
    std::fs::create_dir_all(&ctx).unwrap();
    std::fs::write(
        ctx.join("Dockerfile"),
        format!("FROM {IMAGE}\nCMD [\"true\"]\n"),
    )
    .unwrap();
    let ctx = ctx.display().to_string();
    denied(
        &d,
        &plugin,
        &["build", "--network", "host", "-t", "moat-built", &ctx],
        "host-namespaces",
    );
    d.docker_ok(&["build", "-q", "-t", "moat-built", &ctx]);
    phase(&mut clock, "1 (every baseline rule through the CLI)");

    // 2. Raw requests.
    raw_requests(&d, &plugin);
    phase(&mut clock, "2 (raw API requests)");

    // 3. Containers created before the plugin.
    denied(&d, &plugin, &["start", "legacy-priv"], "privileged");
    denied(&d, &plugin, &["restart", "legacy-priv"], "privileged");
    let state = d.docker_ok(&["inspect", "-f", "{{.State.Status}}", "legacy-priv"]);
    assert_eq!(state, "created", "the privileged container never ran");
    d.docker_ok(&["start", "legacy-plain"]);
    phase(&mut clock, "3 (the start-time inspect)");

    // 4. Exact counts and audit events.
    exact_counts(&d, &moatd, &legacy_priv);
    audit_events(&setup.audit_log(), &legacy_priv);
    phase(&mut clock, "4 (exact counts, audit events)");

    drop(d);
    drop(moatd);
    assert!(!setup.socket.exists(), "moatd removed its socket");
    eprintln!("total: {:.1} s", total.elapsed().as_secs_f64());
}

/// Raw API requests, each of which once got a privileged or unconfined
/// container created on 20.10 (see /work/shared/DOCKER-AUTHZ.md): none
/// creates anything now.
fn raw_requests(d: &Dockerd, plugin: &str) {
    let before = d.all_containers();
    let privileged = br#"{"Image":"moat-test-bb","Cmd":["true"],"HostConfig":{"Privileged":true}}"#;
    let request = |method: &str, target: &str, headers: &[&str], body: &[u8]| {
        let mut r = format!("{method} {target} HTTP/1.1\r\nHost: docker\r\nConnection: close\r\n");
        for h in headers {
            r.push_str(h);
            r.push_str("\r\n");
        }
        r.push_str("\r\n");
        let mut r = r.into_bytes();
        r.extend_from_slice(body);
        r
    };
    let json = "Content-Type: application/json";
    let len = |b: &[u8]| format!("Content-Length: {}", b.len());
    let chunked = |b: &[u8]| {
        let mut out = format!("{:x}\r\n", b.len()).into_bytes();
        out.extend_from_slice(b);
        out.extend_from_slice(b"\r\n0\r\n\r\n");
        out
    };
    let lower = br#"{"image":"moat-test-bb","cmd":["true"],"hostconfig":{"privileged":true}}"#;
    let dup = br#"{"Image":"moat-test-bb","Cmd":["true"],"HostConfig":{"Privileged":false,"Privileged":true}}"#;
    let long_s = "{\"Image\":\"moat-test-bb\",\"Cmd\":[\"true\"],\"HostConfig\":{\"\u{17F}ecurityOpt\":[\"seccomp=unconfined\"]}}".as_bytes();
    let top = br#"{"Image":"moat-test-bb","Cmd":["true"],"Privileged":true}"#;
    let cases: Vec<(&str, Vec<u8>)> = vec![
        (
            "lower-case keys",
            request(
                "POST",
                "/v1.41/containers/create",
                &[json, &len(lower)],
                lower,
            ),
        ),
        (
            "duplicate keys",
            request("POST", "/v1.41/containers/create", &[json, &len(dup)], dup),
        ),
        (
            "a key with U+017F",
            request(
                "POST",
                "/v1.41/containers/create",
                &[json, &len(long_s)],
                long_s,
            ),
        ),
        (
            "a deprecated top-level field",
            request("POST", "/v1.41/containers/create", &[json, &len(top)], top),
        ),
        (
            "a chunked body",
            request(
                "POST",
                "/v1.41/containers/create",
                &[json, "Transfer-Encoding: chunked"],
                &chunked(privileged),
            ),
        ),
        (
            "Content-Length: 0 with a body",
            request(
                "POST",
                "/v1.41/containers/create",
                &[json, "Content-Length: 0"],
                privileged,
            ),
        ),
        (
            "text/plain",
            request(
                "POST",
                "/v1.41/containers/create",
                &["Content-Type: text/plain", &len(privileged)],
                privileged,
            ),
        ),
        (
            "no Content-Type",
            request(
                "POST",
                "/v1.41/containers/create",
                &[&len(privileged)],
                privileged,
            ),
        ),
        (
            "application/json; charset=utf-8",
            request(
                "POST",
                "/v1.41/containers/create",
                &[
                    "Content-Type: application/json; charset=utf-8",
                    &len(privileged),
                ],
                privileged,
            ),
        ),
        (
            "%2F in the path",
            request(
                "POST",
                "/v1.41/containers%2Fcreate",
                &[json, &len(privileged)],
                privileged,
            ),
        ),
        (
            "// in the path",
            request(
                "POST",
                "//containers/create",
                &[json, &len(privileged)],
                privileged,
            ),
        ),
        (
            "no version prefix",
            request(
                "POST",
                "/containers/create",
                &[json, &len(privileged)],
                privileged,
            ),
        ),
        (
            "a query string",
            request(
                "POST",
                "/v1.41/containers/create?name=q&x=%2F",
                &[json, &len(privileged)],
                privileged,
            ),
        ),
        (
            "absolute form",
            request(
                "POST",
                "http://docker/v1.41/containers/create",
                &[json, &len(privileged)],
                privileged,
            ),
        ),
        (
            "an old API version",
            request(
                "POST",
                "/v1.23/containers/create",
                &[json, &len(privileged)],
                privileged,
            ),
        ),
    ];
    for (name, bytes) in &cases {
        let r = d
            .raw_request(bytes)
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        eprintln!("raw {name}: {} {}", r.status, r.text().trim());
        assert!(
            r.status == 403 || r.status == 301,
            "{name}: {} {}",
            r.status,
            r.text()
        );
        if r.status == 403 {
            assert!(
                r.text()
                    .contains(&format!("authorization denied by plugin {plugin}: ")),
                "{name}: {}",
                r.text()
            );
        }
    }
    assert_eq!(
        d.all_containers(),
        before,
        "a raw request created a container"
    );

    // A pre-1.24 start applies a HostConfig body: judged as a create.
    let start = request(
        "POST",
        "/v1.23/containers/legacy-plain/start",
        &[json, &len(br#"{"Privileged":true}"#)],
        br#"{"Privileged":true}"#,
    );
    let r = d.raw_request(&start).unwrap();
    assert_eq!(r.status, 403, "{}", r.text());
    assert!(r.text().contains("[rule: privileged]"), "{}", r.text());

    // The control: the same request, harmless, creates a container.
    let plain = br#"{"Image":"moat-test-bb","Cmd":["true"],"HostConfig":{"NetworkMode":"none"}}"#;
    let r = d.call("POST", "/v1.41/containers/create", Some(plain));
    assert_eq!(r.status, 201, "{}", r.text());
    let id: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    let id = id["Id"].as_str().unwrap().to_owned();
    let r = d.call("DELETE", &format!("/v1.41/containers/{id}"), None);
    assert_eq!(r.status, 204, "{}", r.text());
}

/// A controlled sequence of requests and the exact change of every
/// `moat_authz_requests_total` series it causes.
fn exact_counts(d: &Dockerd, moatd: &PluginMoatd, legacy_priv: &str) {
    let before_text = moatd.metrics();
    let before = authz_requests(&before_text);
    let plain = br#"{"Image":"moat-test-bb","Cmd":["true"],"HostConfig":{"NetworkMode":"none"}}"#;
    let privileged = br#"{"Image":"moat-test-bb","Cmd":["true"],"HostConfig":{"Privileged":true}}"#;
    let lower = br#"{"Image":"moat-test-bb","Cmd":["true"],"hostconfig":{"privileged":true}}"#;
    let status = |method: &str, path: &str, body: Option<&[u8]>| d.call(method, path, body).status;
    assert_eq!(
        status("POST", "/v1.41/containers/create?name=m1", Some(plain)),
        201
    );
    assert_eq!(
        status("POST", "/v1.41/containers/create", Some(privileged)),
        403
    );
    assert_eq!(status("POST", "/containers/create", Some(lower)), 403);
    assert_eq!(status("POST", "/v1.41/containers/m1/start", None), 204);
    assert_eq!(
        status("POST", "/v1.41/containers/legacy-priv/start", None),
        403
    );
    assert_eq!(
        status(
            "POST",
            "/v1.41/containers/m1/update",
            Some(br#"{"PidsLimit":-1}"#)
        ),
        403
    );
    assert_eq!(status("GET", "/v1.41/containers/m1/json", None), 200);
    assert_eq!(status("DELETE", "/v1.41/containers/m1?force=1", None), 204);
    assert_eq!(status("GET", "/v1.41/info", None), 200);
    assert_eq!(status("POST", "/v1.41/plugins/other/disable", None), 403);
    // Install and upgrade: the CLI asks the registry for the privileges
    // first (no registry here), so they are sent raw, as a client would.
    assert_eq!(
        status(
            "POST",
            "/v1.41/plugins/pull?remote=evil/plugin",
            Some(b"[]")
        ),
        403
    );
    assert_eq!(
        status(
            "POST",
            "/v1.41/plugins/other/upgrade?remote=evil/plugin",
            Some(b"[]")
        ),
        403
    );
    let after_text = moatd.metrics();
    let after = authz_requests(&after_text);
    let expected: &[((&str, &str), f64)] = &[
        (("allow", "containers/create"), 1.0),
        (("deny", "containers/create"), 2.0),
        (("allow", "containers/{id}/start"), 1.0),
        (("deny", "containers/{id}/start"), 1.0),
        // GET m1/json, and moatd's own inspect at each start.
        (("allow", "containers/{id}/json"), 3.0),
        (("deny", "containers/{id}/update"), 1.0),
        (("allow", "other"), 2.0),
        (("deny", "plugins/{name}/disable"), 1.0),
        (("deny", "plugins/pull"), 1.0),
        (("deny", "plugins/{name}/upgrade"), 1.0),
    ];
    assert_eq!(after.len(), before.len());
    for (key, value) in &after {
        let want = expected
            .iter()
            .find(|((dec, ep), _)| key.0 == *dec && key.1 == *ep)
            .map_or(0.0, |(_, n)| *n);
        let got = value - before.get(key).copied().unwrap_or(0.0);
        assert_eq!(got, want, "moat_authz_requests_total{key:?}");
    }
    let count = "moat_authz_request_duration_seconds_count";
    assert_eq!(
        sample(&after_text, count) - sample(&before_text, count),
        14.0
    );
    let denials = "moat_audit_events_total{action=\"authz_denied\"}";
    // The writer counts what it wrote: give it a moment.
    let mut written = 0.0;
    for _ in 0..50 {
        written = sample(&moatd.metrics(), denials) - sample(&before_text, denials);
        if written >= 7.0 {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert_eq!(written, 7.0, "authz_denied events of the sequence");
    let _ = legacy_priv;
}

/// The denial of `legacy-priv`'s start is in the audit log with the rule,
/// the URI and the container, and `moat events` prints it readably.
fn audit_events(log: &Path, legacy_priv: &str) {
    let text = std::fs::read_to_string(log).unwrap();
    let events: Vec<serde_json::Value> = text
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .filter(|e: &serde_json::Value| e["event"]["action"] == "authz_denied")
        .collect();
    assert!(events.len() > 30, "{} authz_denied events", events.len());
    let start = events
        .iter()
        .find(|e| e["authz"]["uri"] == "/v1.41/containers/legacy-priv/start")
        .expect("the denied start of legacy-priv");
    assert_eq!(start["authz"]["rule"], "privileged");
    assert_eq!(start["authz"]["method"], "POST");
    assert_eq!(start["authz"]["endpoint"], "containers/{id}/start");
    assert_eq!(start["authz"]["mode"], "enforce");
    assert_eq!(start["authz"]["container"], legacy_priv);
    assert_eq!(
        start["workload"]["name"],
        format!("docker:{}", &legacy_priv[..12])
    );
    let out = Command::new(binary("moat"))
        .args(["events", "--file"])
        .arg(log)
        .output()
        .unwrap();
    let printed = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success());
    assert!(
        printed.lines().any(|l| l.contains("authz_denied")
            && l.contains("rule=privileged")
            && l.contains("uri=/v1.41/containers/legacy-priv/start")),
        "{printed}"
    );
}
